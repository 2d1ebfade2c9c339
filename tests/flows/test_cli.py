"""Bad input: one clear line on stderr, exit status 2, and nothing written. At least one wrong type,
out-of-range value or unknown choice per config group, checked when the config is composed."""

import re
import subprocess
import sys

import pytest

from flows.cli import run


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["algorithm.betta=1"], "algorithm.betta"),
        (["algorithm.beta=-1"], "beta must be a positive"),
        (["algorithm.beta=0"], "beta must be a positive"),
        (["algorithm=nope"], "Available options in 'algorithm'"),
        (["dataset.prompt_column=instruction"], "has no column 'instruction'"),
        (["dataset.path=/no/such/file.jsonl"], "does not exist"),
        (["model=pretrained", "model.path=/no/such/model"], "is not a readable folder"),
        (["sampler.num_train_samples=1"], "num_train_samples must be >= 2"),
        (["quantiles.ties=random"], "quantiles.ties='random' is not one of le, lt, mid"),
        (["train.learning_rate=-1"], "train.learning_rate must be a positive number"),
        (["regime=pointwise", "algorithm=dpo"], "algorithm dpo needs preference pairs, but regime=pointwise gives single completions"),
        (["regime=triples"], "Available options in 'regime'"),
        (["regime=best_worst", "regime.leave_one_out=true"], "leave_one_out=true only applies to regime=pointwise"),
        (["train.mixed_precision=fp8"], "train.mixed_precision='fp8' is not one of auto, bf16, fp32"),
        (["precision=fp16"], "precision='fp16' is not one of auto, bf16, fp32"),
        (["sampler.precision=half"], "sampler.precision='half' is not one of auto, bf16, fp32"),
        (["distributed=ddp", "distributed.topology=horovod"], "distributed.topology='horovod' is not one of"),
        # algorithm: arguments are checked against the class's annotations; _target_ must import
        (["algorithm.beta=abc"], "algorithm.beta must be a number or null; got 'abc'"),
        (["algorithm=dpo", "algorithm.beta=abc"], "algorithm.beta must be a number; got 'abc'"),
        (["+algorithm.bta=0.1"], "unknown key algorithm.bta; valid keys: beta, transform, loss_type, kl_budget, target_quantile"),
        (["algorithm=dpo", "+algorithm.gamma=1"], "unknown key algorithm.gamma; valid keys: beta"),
        (["algorithm.transform=scaled_normal_icdf", "+algorithm.muu=1"], "unknown key algorithm.muu; valid keys: beta, transform, loss_type, kl_budget, target_quantile, mu, sigma"),
        (["algorithm._target_=qrpo.objective.algorithms.Nope"], "algorithm._target_='qrpo.objective.algorithms.Nope': qrpo.objective.algorithms has no attribute 'Nope'"),
        # dataset
        (["dataset.eval_fraction=abc"], "dataset.eval_fraction must be a number; got 'abc'"),
        (["dataset.max_train_prompts=-1"], "dataset.max_train_prompts / dataset.max_eval_prompts must be >= 0"),
        (["dataset.train_split=5"], "dataset.train_split must be a string; got 5; if you mean the text, quote it: dataset.train_split='5'"),
        (["dataset.keep_columns=[1,2]"], "dataset.keep_columns must be a list of strings; got [1, 2]"),
        # distributed
        (["distributed.use_cpu=abc"], "distributed.use_cpu must be true or false; got 'abc'"),
        (["distributed.num_processes=0"], "distributed.num_processes must be an integer >= 1; got 0"),
        (["distributed.accelerate=abc"], "distributed.accelerate must be a mapping (key: value); got 'abc'"),
        # eval (and its alpaca_eval sub-section)
        (["eval.lc_fit_on=x"], "eval.lc_fit_on='x' is not one of reference, all"),
        (["eval.split_seed=abc"], "eval.split_seed must be an integer; got 'abc'"),
        (["eval.samples_per_prompt=-1"], "eval.samples_per_prompt must be a positive number; got -1"),
        (["eval.alpaca_eval.max_instances=abc"], "eval.alpaca_eval.max_instances must be an integer; got 'abc'"),
        (["eval.alpaca_eval.enabled=maybe"], "eval.alpaca_eval.enabled must be true or false; got 'maybe'"),
        # model
        (["model.source=ftp"], "model.source='ftp' is not one of gguf, pretrained, config"),
        (["model=tiny", "model.seed=abc"], "model.seed must be an integer; got 'abc'"),
        (["model=tiny", "+model.architecture.hidden_sze=64"], "model.architecture has no field 'hidden_sze'"),
        (["model=tiny", "model.architecture.num_hidden_layers=0"], "model.architecture.num_hidden_layers must be a positive integer; got 0"),
        (["model=tiny", "model.architecture.num_attention_heads=5"], "not a multiple of the number of attention heads (5)"),
        (["model=tiny", "model.architecture.hidden_size=big"], "Field 'hidden_size' expected int, got str (value: 'big')"),
        # regime
        (["regime.seed=abc"], "regime.seed must be an integer; got 'abc'"),
        (["regime.leave_one_out=abc"], "regime.leave_one_out must be true or false; got 'abc'"),
        # reward
        (["reward.kind=nope"], "reward.kind='nope' is not one of vader, sequence_classifier"),
        (["reward=tiny_classifier", "reward.batch_size=abc"], "reward.batch_size must be an integer; got 'abc'"),
        (["reward=tiny_classifier", "reward.batch_size=-1"], "reward.batch_size must be a positive number; got -1"),
        (["reward.name=[1,2]"], "reward.name must be a string; got [1, 2]"),
        (["reward._target_=no_such_package.make"], "reward._target_='no_such_package.make': no module 'no_such_package'"),
        (["reward=judge", "reward.kind=vader"], "reward._target_='qrpo.rewards.judge.JudgeReward.from_config' builds reward.kind=judge, not vader"),
        (["model._target_=qrpo.models.nope"], "model._target_='qrpo.models.nope': qrpo.models has no attribute 'nope'"),
        (["sampler._target_=no_such_package.Sampler"], "sampler._target_='no_such_package.Sampler': no module"),
        # sampler
        (["sampler.num_ref_samples=two"], "sampler.num_ref_samples must be an integer; got 'two'"),
        (["sampler.num_ref_samples=-1"], "sampler.num_ref_samples must be a positive number; got -1"),
        (["sampler.backend=tgi"], "sampler.backend='tgi' is not one of hf, vllm, openai"),
        (["sampler.temperature=hot"], "sampler.temperature must be a number; got 'hot'"),
        (["sampler.drop_truncated=1"], "sampler.drop_truncated must be true or false; got 1"),
        (["sampler.min_samples_per_prompt=abc"], "sampler.min_samples_per_prompt must be an integer; got 'abc'"),
        # train
        (["train.epochs=abc"], "train.epochs must be an integer; got 'abc'"),
        (["train.epochs=1.5"], "train.epochs must be an integer; got 1.5"),
        (["train.epochs=-1"], "train.epochs must be a positive number; got -1"),
        (["train.group_by_length=yes"], "train.group_by_length must be true or false; got 'yes'"),
        # quantiles, sweep presets, top-level keys
        (["quantiles.ties=5"], "quantiles.ties must be a string; got 5"),
        (["sweep=nope"], "Available options in 'sweep'"),
        (["mlflow_experiment=[1]"], "mlflow_experiment must be a string; got [1]"),
        (["artifact_root=5"], "artifact_root must be a string or null; got 5"),
        # dispatch (heavy steps on another work pool, flows/step.py)
        (["dispatch.steps=[train,nope]"], "dispatch.steps: 'nope' is not one of sample, score, ref_logps, train, eval_logps"),
        (["dispatch.steps=train"], "dispatch.steps must be a list of strings; got 'train'"),
        (["dispatch.pool=5"], "dispatch.pool must be a string or null; got 5"),
        (["dispatch.pool=[gpu]"], "dispatch.pool must be a string or null; got ['gpu']"),
        (["experiment=compare", "compare.baseline=nope"], "compare.baseline='nope' is not one of the arms: qrpo-identity-b0.1, qrpo-identity-b0.3,"),
        (["experiment=compare", "compare.pairs=some"], "compare.pairs='some' is not one of baseline, all"),
        (["+dispatch.queue=fast"], "unknown key(s) dispatch.queue; known: pool, steps"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(qrpo_home, capsys, overrides, expected):
    with pytest.raises(SystemExit) as exit_info:
        run(overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert expected in err
    assert not qrpo_home.exists(), "bad input must not create artifacts or an MLflow store"


def test_cli_entry_point_reports_unknown_key_in_one_line(qrpo_home):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from flows.cli import main; sys.argv[0]='qrpo-pipeline'; main()", "algorithm.beta=-3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: algorithm (qrpo.objective.algorithms.QRPO): beta must be a positive finite number; got -3.0"]


@pytest.mark.parametrize("override, expected, not_loaded", [
    # a value of a section is checked before regime=auto is resolved (it imports the algorithm's class, and torch with
    # it); the algorithm's own arguments are typed by that class's signature, so torch loads for them; nothing heavier
    ("sampler.temperature=abc", "sampler.temperature must be a number; got 'abc'", ["torch", "transformers", "prefect", "mlflow", "pyarrow"]),
    ("algorithm.beta=abc", "algorithm.beta must be a number or null; got 'abc'", ["transformers", "prefect", "mlflow"]),
    ("dataset.prompt_column=instruction", "has no column 'instruction'", ["transformers", "prefect", "mlflow"]),
])
def test_a_bad_override_is_answered_before_the_heavy_libraries_load(qrpo_home, override, expected, not_loaded):
    # the error comes in seconds, not after transformers, Prefect and MLflow have loaded (~10 s on 2 cores)
    code = ("import sys; from flows.cli import main; sys.argv[1:] = [sys.argv.pop()]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{not_loaded!r} and '.' not in m))")
    proc = subprocess.run([sys.executable, "-c", code, override], capture_output=True, text=True, timeout=120)
    assert expected in proc.stderr
    assert proc.stdout.strip() == "2 []", f"loaded before the error: {proc.stdout.strip()}"


@pytest.mark.parametrize("overrides, expected", [
    (["train.epochs=abc"], "train.epochs must be an integer; got 'abc'"),
    (["reward.kind=nope"], "reward.kind='nope' is not one of"),
])
def test_a_deployment_run_validates_with_the_same_function_before_any_work(qrpo_home, overrides, expected):
    """A Prefect deployment run calls the flow with the overrides as its parameter: the flow composes and
    validates them itself (flows.validate.validate, as the CLI and every --multirun job do) before it
    starts an MLflow run or writes an artifact."""
    from flows.pipeline import qrpo_pipeline
    from qrpo.errors import InputError

    with pytest.raises(InputError, match=re.escape(expected)):
        qrpo_pipeline.fn(overrides)
    assert not qrpo_home.exists()


@pytest.mark.slow
def test_a_cli_run_composes_and_validates_its_config_once(qrpo_home, prefect_server, monkeypatch):
    """The front door checks the config and the flow runs that same config: one compose, one validation,
    through `flows.validate.load_config` (a deployment run, entering at the flow, also does it once)."""
    import flows.validate as front_door

    composed, validated = [], []
    compose, validate = front_door.compose_config, front_door.validate
    monkeypatch.setattr(front_door, "compose_config", lambda overrides, **kw: composed.append(list(overrides)) or compose(overrides, **kw))
    monkeypatch.setattr(front_door, "validate", lambda config: validated.append(1) or validate(config))
    summary = run(["experiment=smoke"])
    assert composed == [["experiment=smoke"]] and len(validated) == 1
    assert summary["metrics"]["reward_mean"] == summary["metrics"]["reward_mean"]  # the flow ran to its report
    assert not front_door._handed, "a handed-over config was left behind"


def test_a_dataset_is_read_once_and_read_again_when_its_bytes_change(qrpo_home, tmp_path):
    """Validation reads the prompt file (columns, JSON) unless the store has the `load_dataset` artifact of exactly
    these bytes and this dataset config: then it was read and checked when that artifact was made, and an identical
    re-run skips `datasets` (and transformers, which only loading a model or sampling imports). A changed file is
    read and checked again."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Say something kind, number {i}.", "split": "{s}"}}\n'
                               for i, s in enumerate(["train"] * 6 + ["eval"] * 4)))
    overrides = [f"dataset.path={prompts}", "dataset.split_column=split", "dataset.id_column=null"]  # the default model (GGUF)
    code = ("import sys, json; from flows.validate import load_config\n"
            "from qrpo.errors import InputError\n"
            "try:\n    config, sections = load_config(sys.argv[1:])\nexcept InputError as e:\n    print(json.dumps(str(e))); raise SystemExit(2)\n"
            "print(json.dumps(sorted(m for m in ('datasets', 'transformers', 'matplotlib') if m in sys.modules)))")
    build = ("import sys; from flows.validate import load_config; from qrpo import data; from qrpo.store.artifacts import ArtifactStore\n"
             "config, sections = load_config(sys.argv[1:]); d = sections.dataset\n"
             "ArtifactStore(config['artifact_root']).get_or_build('load_dataset', data.LOAD_DATASET_VERSION, data.load_dataset_request(d), {},"
             " lambda out, _: data.load_dataset(d, out))")

    def python(source):
        return subprocess.run([sys.executable, "-c", source, *overrides], capture_output=True, text=True, timeout=300)

    first = python(code)
    assert first.returncode == 0 and first.stdout.split("\n")[-2] == '["datasets"]', first.stderr[-2000:]
    assert python(build).returncode == 0
    again = python(code)
    assert again.returncode == 0 and again.stdout.split("\n")[-2] == "[]", again.stderr[-2000:]
    with prompts.open("a") as f:
        f.write("{not json\n")
    changed = python(code)
    assert changed.returncode == 2 and "prompts.jsonl:11 is not valid JSON" in changed.stdout, changed.stdout + changed.stderr[-2000:]
