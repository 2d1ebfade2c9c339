"""Compare MLflow runs: the per-sweep table logged to a sweep's parent run, and `qrpo-compare`, the
paper-style results table (method x model x dataset) from any set of runs.

    qrpo-compare                                   # every finished run of the `qrpo` experiment
    qrpo-compare --parent-run <run id>             # one sweep: every child, then the best of each method
    qrpo-compare --experiment qrpo --filter "tags.model = 'smollm2-135m'" --out results/
    qrpo-compare --tracking-uri sqlite:////data/qrpo/mlflow.db

Runs are read by metric name, so a metric a run did not log is a blank cell, never an error:
eval/reward_mean (reward), eval/reward_lc_mean (length-controlled reward), eval/kl_k3 (KL), eval/win_rate_vs_ref,
eval/alpaca_eval_lc_win_rate and eval/alpaca_eval_win_rate (AlpacaEval LC / WR), eval/leetcode_pass_rate (LeetCode).
For each (method, model, dataset) the best configuration is the one with the highest selection-half reward
eval_selection/reward_mean (`qrpo.evaluation.select_run`); its reporting-half numbers fill the cell. A run
without a finite eval_selection/reward_mean takes no part in the choice (its reporting-half numbers would
bias the pick upwards): it is excluded and named on a line under the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import flows  # noqa: F401  (offline defaults before MLflow loads)
from qrpo.errors import InputError

# (column, where it comes from): "metric:<name>", "param:<name>", "tag:<name>"
SWEEP_COLUMNS = [
    ("run", "name"), ("method", "method"), ("beta", "param:algorithm.beta"), ("lr", "param:train.learning_rate"),
    ("M", "param:sampler.num_ref_samples"), ("K", "param:sampler.num_train_samples"),
    ("reward", "metric:eval/reward_mean"), ("gain", "metric:eval/reward_gain"),
    ("gain_ci_low", "metric:eval/reward_gain_ci_low"), ("gain_ci_high", "metric:eval/reward_gain_ci_high"),
    ("lc_reward", "metric:eval/reward_lc_mean"), ("kl", "metric:eval/kl_k3"),
    ("win_rate", "metric:eval/win_rate_vs_ref"), ("quantile", "metric:eval/quantile_mean"),
    ("quantile_se", "metric:eval/quantile_mean_se"), ("status", "status"), ("run_id", "run_id"),
]
RESULT_COLUMNS = [
    ("reward", "metric:eval/reward_mean"), ("lc_reward", "metric:eval/reward_lc_mean"), ("kl", "metric:eval/kl_k3"),
    ("alpaca_lc", "metric:eval/alpaca_eval_lc_win_rate"), ("alpaca_wr", "metric:eval/alpaca_eval_win_rate"),
    ("pass_rate", "metric:eval/leetcode_pass_rate"),
]
DIFF_COLUMNS = ["diff_vs_baseline", "diff_ci_low", "diff_ci_high", "diff_p_holm", "mde"]  # arm vs the baseline arm (reward)
# the same for the length-controlled reward and the reference quantile (per_prompt.csv's reward_lc, ref_quantile)
PAIRED_METRICS = {"reward": "", "reward_lc": "lc_", "ref_quantile": "quantile_"}
OTHER_DIFF_COLUMNS = [f"{prefix}{c}" for prefix in ("lc_", "quantile_") for c in DIFF_COLUMNS[:4]]
SWEEP_TABLE_COLUMNS = ["run", "method", "beta", "lr", "M", "K", "reward", "gain", "gain_ci_low", "gain_ci_high", "lc_reward",
                       "kl", "win_rate", "quantile", *DIFF_COLUMNS, *OTHER_DIFF_COLUMNS, "status"]  # SWEEP_COLUMNS as printed (no run_id, quantile_se)
SELECTION = "reward_mean"  # chosen on the selection half only (qrpo/evaluation/selection.py)
SELECTION_METRIC = f"eval_selection/{SELECTION}"


def field(run, source: str) -> Any:
    """One value of an MLflow run by source name; None when the run does not have it."""
    if source == "name":
        return run.info.run_name
    if source == "method":  # "qrpo-log", "dpo": the algorithm, with QRPO's transform (older runs: the algorithm)
        return run.data.tags.get("method") or run.data.tags.get("algorithm")
    if source == "status":
        return run.info.status
    if source == "run_id":
        return run.info.run_id
    kind, name = source.split(":", 1)
    values = {"metric": run.data.metrics, "param": run.data.params, "tag": run.data.tags}[kind]
    value = values.get(name)
    if kind == "param" and value is not None:
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def rows_of(runs: Iterable, columns=SWEEP_COLUMNS) -> list[dict[str, Any]]:
    return [{column: field(run, source) for column, source in columns} for run in runs]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or (list(rows[0]) if rows else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or (list(rows[0]) if rows else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return out.getvalue()


def format_comparison(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """The comparison as printed after experiment=compare and after a sweep: one row per run, the gain with
    its 95% interval, KL (k3)."""
    return ("comparison (held-out reporting half; gain = reward - reference reward, 95% interval):\n"
            + to_markdown(rows, columns or SWEEP_TABLE_COLUMNS))


def _sort_key(value: Any) -> tuple:
    return (value is None, str(type(value)), value if value is not None else 0)


def plot_sweep(rows: list[dict[str, Any]], folder: Path, readings: dict | None = None) -> list[Path]:
    """reward_vs_kl.png (each method's points, its reward-KL frontier and, given `equal_kl` readings, its reward
    at the common KL with the bootstrap interval) and reward_vs_M.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("reward") is not None]
    methods = sorted({str(r.get("method")) for r in done})
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        points = sorted((r["kl"], r["reward"]) for r in done if str(r.get("method")) == method and r.get("kl") is not None)
        if not points:
            continue
        ax.scatter(*zip(*points), label=method, alpha=0.7)
        frontier, best = [], -math.inf  # the upper-left envelope: the best reward reached within each KL budget
        for kl, reward in points:
            if reward > best:
                frontier.append((kl, reward))
                best = reward
        line, = ax.plot(*zip(*frontier), linewidth=1)
        reading = (readings or {}).get("methods", {}).get(method)
        if reading:
            value = reading["reward_at_kl"]
            ax.errorbar([readings["kl"]], [value], yerr=[[value - reading["ci_low"]], [reading["ci_high"] - value]],
                        marker="D", color=line.get_color(), capsize=3, markerfacecolor="none")
    if readings and readings.get("methods"):
        ax.axvline(readings["kl"], color="grey", linewidth=0.8, linestyle=":", label=f"equal KL {readings['kl']:.3g}")
    ax.set_xlabel("KL(pi || pi_ref)  (k3, nats per completion)")
    ax.set_ylabel("held-out reward")
    ax.set_title("reward vs KL frontier per method")
    ax.legend() if methods else None
    fig.tight_layout()
    paths.append(folder / "reward_vs_kl.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # reward and mean reference quantile against M, the best run of each (method, M) by reward, with its 95%
    # interval: the reward's from the gain's (the reference reward is the same for every arm), the quantile's +-1.96 se
    fig, (ax, qax) = plt.subplots(1, 2, figsize=(10, 4))
    all_ms = sorted({r["M"] for r in done if r.get("M") is not None})
    for method in methods:
        best: dict[Any, dict[str, Any]] = {}
        for r in done:
            if str(r.get("method")) == method and r.get("M") is not None and (r["M"] not in best or r["reward"] > best[r["M"]]["reward"]):
                best[r["M"]] = r
        if not best:
            continue
        ms = sorted(best)
        runs = [best[m] for m in ms]
        label = f"{method} (best over the other knobs)"
        ax.errorbar(ms, [r["reward"] for r in runs], yerr=_interval(runs, "reward"), marker="o", capsize=3, label=label)
        if any(r.get("quantile") is not None for r in runs):
            q = [r.get("quantile") if r.get("quantile") is not None else math.nan for r in runs]
            qax.errorbar(ms, q, yerr=_interval(runs, "quantile"), marker="o", capsize=3, label=label)
    for axis, name in ((ax, "held-out reward"), (qax, "mean reference quantile of the policy's samples")):
        if all_ms:  # M is a count: ticks at the values swept, never fractions
            axis.set_xticks(all_ms, [f"{m:g}" for m in all_ms])
        axis.set_xlabel("M (reference samples per prompt)")
        axis.set_ylabel(name)
    qax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")  # pi_ref's own samples: 1/2
    ax.set_title("reward vs M (95% interval)")
    qax.set_title("quantile vs M (95% interval)")
    ax.legend() if methods else None
    fig.tight_layout()
    paths.append(folder / "reward_vs_M.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _interval(runs: list[dict[str, Any]], column: str) -> list[list[float]]:
    """[[below], [above]] error-bar lengths of each run's 95% interval of `column` ("reward": the gain's interval
    moved to the reward; "quantile": +-1.96 se); 0 where a run did not log it."""
    below, above = [], []
    for r in runs:
        if column == "reward" and None not in (r.get("gain"), r.get("gain_ci_low"), r.get("gain_ci_high")):
            below.append(r["gain"] - r["gain_ci_low"])
            above.append(r["gain_ci_high"] - r["gain"])
        elif column == "quantile" and r.get("quantile_se") is not None:
            below.append(1.96 * r["quantile_se"])
            above.append(1.96 * r["quantile_se"])
        else:
            below.append(0.0)
            above.append(0.0)
    return [below, above]


def choose_baseline(runs: list):
    """The arm the others are paired against: the best DPO arm by the selection-half reward, else the best
    arm of any method (None when no run logged a selection-half reward)."""
    candidates = [r for r in runs if selectable(r)]
    dpo = [r for r in candidates if (field(r, "method") or "").startswith("dpo")]
    pool = dpo or candidates
    return max(pool, key=lambda r: r.data.metrics[SELECTION_METRIC]) if pool else None


def per_prompt_results(client, runs: list) -> dict[str, dict[str, dict]]:
    """{run_id: {column: {prompt_id: value}}} from each finished run's report/per_prompt.csv, each file
    downloaded and read once (runs from before it existed have none and get no paired or equal-KL numbers)."""
    from qrpo.evaluation import paired

    results = {}
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        try:
            path = client.download_artifacts(run.info.run_id, "report/per_prompt.csv")
        except Exception:
            continue
        results[run.info.run_id] = paired.read_per_prompt_columns(path)
    return results


def equal_kl(runs: list, results: dict[str, dict[str, dict]]) -> dict:
    """Each method's reward at one common KL along its own runs' frontier (qrpo.evaluation.frontier.reward_at_kl:
    {"kl", "methods": {...}}); no methods when no method has two runs or their KL ranges do not overlap."""
    from qrpo.evaluation import frontier

    methods: dict[str, list] = {}
    for run in runs:
        columns = results.get(run.info.run_id, {})
        if "reward" in columns and "kl_k3" in columns:  # files without per-prompt KL take no part
            methods.setdefault(field(run, "method") or "?", []).append((columns["reward"], columns["kl_k3"]))
    try:
        return frontier.reward_at_kl(methods)
    except InputError:
        return {"kl": None, "methods": {}}


def add_arm_differences(client, runs: list, rows: list[dict[str, Any]], baseline_name: str | None = None,
                        results: dict[str, dict[str, dict]] | None = None) -> str:
    """Fill DIFF_COLUMNS of `rows` (matched by run_id): each finished run's per-prompt reporting-half
    reward (its report/per_prompt.csv) paired with the baseline arm's on the same prompts (the run named
    `baseline_name`, compare.baseline, else `choose_baseline`), Holm-adjusted across the table
    (qrpo.evaluation.paired); and OTHER_DIFF_COLUMNS, the same for the length-controlled reward (lc_...) and
    the reference quantile (quantile_...), each metric Holm-adjusted over its own comparisons. Returns the
    line saying against which arm, and the power line; empty when fewer than two runs left per-prompt results."""
    from qrpo.evaluation import paired

    results = per_prompt_results(client, runs) if results is None else results
    per_prompt = {run_id: columns["reward"] for run_id, columns in results.items()}
    with_results = [r for r in runs if r.info.run_id in per_prompt]
    named = [r for r in with_results if r.info.run_name == baseline_name]
    baseline = named[0] if named else choose_baseline(with_results)
    if baseline is None or len(per_prompt) < 2:
        return ""
    differences = {r["arm"]: r for r in paired.compare_arms(per_prompt, baseline.info.run_id)}
    for row in rows:
        row.update({c: differences[row["run_id"]][c] for c in DIFF_COLUMNS} if row["run_id"] in differences else {})
    for metric, prefix in PAIRED_METRICS.items():
        if not prefix:
            continue
        values = {run_id: columns[metric] for run_id, columns in results.items() if metric in columns}
        if baseline.info.run_id not in values or len(values) < 2:  # per_prompt.csv files from before the column
            continue
        found = {r["arm"]: r for r in paired.compare_arms(values, baseline.info.run_id)}
        for row in rows:
            if row["run_id"] in found:
                row.update({f"{prefix}{c}": found[row["run_id"]][c] for c in DIFF_COLUMNS[:4]})
    why = "compare.baseline" if named else f"best by {SELECTION_METRIC}"
    return (f"paired differences (reward, per prompt, reporting half) vs the baseline arm {baseline.info.run_name} "
            f"({field(baseline, 'method')}, {why}); p Holm-adjusted over {len(differences)} comparison(s)\n"
            + paired.power_line(list(differences.values())))


PAIR_COLUMNS = ["arm", "baseline", "diff_vs_baseline", "diff_ci_low", "diff_ci_high", "diff_p_holm", "mde", "num_prompts"]


def sweep_comparison(client, children: list, baseline: str | None = None, pairs: str = "baseline"):
    """A sweep's table: one row per child (SWEEP_COLUMNS), its arm-against-baseline columns filled, the note
    under it (baseline, power, reward at equal KL) and, for pairs="all", every pair of arms. Used by the sweep's
    parent run and by `qrpo-compare --parent-run`. Returns (rows, note, pair_rows, equal-KL readings)."""
    from qrpo.evaluation import frontier

    rows = rows_of(children)
    results = per_prompt_results(client, children)
    readings = equal_kl(children, results)
    notes = [add_arm_differences(client, children, rows, baseline, results), frontier.reward_at_kl_lines(readings)]
    pair_rows = all_pairs(children, results) if pairs == "all" else []
    return rows, "\n".join(n for n in notes if n), pair_rows, readings


def all_pairs(runs: list, results: dict[str, dict[str, dict]]) -> list[dict[str, Any]]:
    """compare.pairs=all: every pair of runs with per-prompt results (by run name, in start order),
    arm - baseline paired on their shared prompts, Holm-adjusted over all the pairs."""
    from qrpo.evaluation import paired

    ordered = sorted((r for r in runs if r.info.run_id in results), key=lambda r: r.info.start_time)
    arms = {r.info.run_name: results[r.info.run_id]["reward"] for r in ordered}
    return paired.compare_arms(arms, baseline=None) if len(arms) >= 2 else []


def selectable(run) -> bool:
    """Whether the run logged a finite selection-half reward, the only number a selection may use."""
    value = run.data.metrics.get(SELECTION_METRIC)
    return isinstance(value, (int, float)) and math.isfinite(value)


def identity(run) -> tuple[str, str, str]:
    """What one results row stands for: (method, model, dataset). Runs of different models are never
    folded into one row, whatever else they share."""
    tags = run.data.tags
    return field(run, "method") or "?", tags.get("model", "?"), tags.get("dataset", "?")


def results_table(runs: Iterable) -> list[dict[str, Any]]:
    """One row per (method, model, dataset): the best configuration by the selection-half reward, with its
    numbers. Runs without it (`excluded_from_selection`) take no part; a group with none of them has no row."""
    from qrpo.evaluation.selection import select_run

    groups: dict[tuple[str, str, str], list] = {}
    for run in runs:
        if selectable(run):
            groups.setdefault(identity(run), []).append(run)
    rows = []
    for (method, model, dataset), members in sorted(groups.items()):
        run = members[select_run([m.data.metrics for m in members], SELECTION)[0]]
        row = {"method": method, "model": model, "dataset": dataset}
        row.update({column: field(run, source) for column, source in RESULT_COLUMNS})
        row.update({"beta": field(run, "param:algorithm.beta"), "lr": field(run, "param:train.learning_rate"),
                    "M": field(run, "param:sampler.num_ref_samples"), "selected_by": SELECTION_METRIC, "run_id": run.info.run_id})
        rows.append(row)
    return rows


def excluded_from_selection(runs: Iterable) -> list:
    """The runs `results_table` leaves out: no finite selection-half reward."""
    return [run for run in runs if not selectable(run)]


def excluded_line(runs: list) -> str:
    """One line naming the excluded runs and why (empty when none)."""
    if not runs:
        return ""
    names = ", ".join(f"{run.info.run_id} ({run.info.run_name}, {'/'.join(identity(run))})" for run in runs)
    return (f"excluded from selection: {len(runs)} run(s) without a finite {SELECTION_METRIC} "
            f"(selection uses the selection half only, never the reporting-half eval/ numbers): {names}")


def find_runs(client, experiment: str | None, parent_run: str | None, filter_string: str | None) -> list:
    """Finished runs of an experiment (or of a parent run's experiment), filtered by MLflow's search syntax."""
    if parent_run:
        try:
            experiment_ids = [client.get_run(parent_run).info.experiment_id]
        except Exception:
            raise InputError(f"--parent-run {parent_run}: no such run in {client.tracking_uri}") from None
    else:
        found = client.get_experiment_by_name(experiment or "qrpo")
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise InputError(f"--experiment {experiment!r}: no such MLflow experiment in {client.tracking_uri} (have: {names})")
        experiment_ids = [found.experiment_id]
    clauses = ["attributes.status = 'FINISHED'"]
    if parent_run:
        clauses.append(f"tags.mlflow.parentRunId = '{parent_run}'")
    if filter_string:
        clauses.append(filter_string)  # MLflow's search syntax: clauses joined with AND
    runs, token = [], None
    try:
        while True:
            page = client.search_runs(experiment_ids, " and ".join(clauses), max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    except Exception as err:
        raise InputError(f"--filter {filter_string!r}: {str(err).splitlines()[0]}") from None
    return [r for r in runs if "qrpo.sweep" not in r.data.tags]  # a sweep's parent is not a result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qrpo-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default=None, help="MLflow experiment name (default: qrpo)")
    parser.add_argument("--parent-run", default=None, help="only the children of this sweep parent run")
    parser.add_argument("--filter", default=None, help="MLflow search filter, e.g. \"tags.dataset = 'chat_demo'\"")
    parser.add_argument("--out", default=None, help="folder for results.md and results.csv (default: print only)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite under $QRPO_HOME")
    parser.add_argument("--baseline", default=None, help="with --parent-run: the arm (run name) every other arm is "
                        "paired with (default: the sweep's compare.baseline, else the best DPO arm by the selection half)")
    parser.add_argument("--pairs", choices=("baseline", "all"), default=None,
                        help="with --parent-run: all = also every pair of arms, Holm-adjusted over all pairs "
                        "(default: as the sweep was run, compare.pairs)")
    args = parser.parse_args(argv)
    from mlflow.tracking import MlflowClient

    from qrpo.store.tracking import tracking_uri

    try:
        client = MlflowClient(args.tracking_uri or tracking_uri())
        runs = find_runs(client, args.experiment, args.parent_run, args.filter)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows, excluded = results_table(runs), excluded_line(excluded_from_selection(runs))
    sweep = ""
    if args.parent_run:  # the sweep itself, every finished child, before the best of each (method, model, dataset)
        children = sorted(runs, key=lambda r: r.info.start_time)
        names = [r.info.run_name for r in children]
        logged = client.get_run(args.parent_run).data.params  # the sweep's own compare.baseline / compare.pairs
        args.baseline = args.baseline or logged.get("compare.baseline")
        args.pairs = args.pairs or logged.get("compare.pairs", "baseline")
        if args.baseline is not None and args.baseline not in names:
            print(f"error: --baseline {args.baseline!r} is not one of the sweep's runs: {', '.join(names)}", file=sys.stderr)
            return 2
        child_rows, note, pair_rows, _ = sweep_comparison(client, children, args.baseline, args.pairs)
        pairs_table = (f"every pair of arms (Holm over all pairs):\n{to_markdown(pair_rows, PAIR_COLUMNS)}" if pair_rows else "")
        sweep = (f"sweep {args.parent_run}: {len(children)} finished run(s)\n" + format_comparison(child_rows)
                 + "".join(f"{n}\n" for n in (note, pairs_table) if n)
                 + f"\nbest per (method, model, dataset), selected by {SELECTION_METRIC}:\n")
    if not rows:
        print(f"error: no finished run with a finite {SELECTION_METRIC} matches; check --experiment / --parent-run / --filter"
              + (f"; {excluded}" if excluded else ""), file=sys.stderr)
        return 2
    markdown = to_markdown(rows) + (f"\n{excluded}\n" if excluded else "")
    print(sweep + markdown, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(markdown)
        (out / "results.csv").write_text(to_csv(rows))
        print(f"written: {out / 'results.md'}, {out / 'results.csv'}")
    return 0


def cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
