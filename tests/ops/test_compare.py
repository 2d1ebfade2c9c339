"""`qrpo-compare` on a real MLflow SQLite store holding runs logged here."""

import csv
import io

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from flows.compare import main


def log_run(client, experiment_id, *, algorithm, dataset, beta, metrics, parent=None, status="FINISHED", model="smollm2"):
    tags = {"algorithm": algorithm, "dataset": dataset, "model": model}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, tags=tags)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param("algorithm.beta", str(beta)), Param("train.learning_rate", "1e-05"),
                             Param("sampler.num_ref_samples", "4")])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield _fill(uri, tmp_path)


def _fill(uri, tmp_path):
    client = MlflowClient(uri)
    exp = client.create_experiment("paper", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"qrpo.sweep": "true"}).info.run_id
    ids = {
        # QRPO on chat: the selection half prefers beta=0.3 although its test-half reward is lower
        "qrpo_a": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=0.1, parent=parent, metrics={
            "eval_selection/reward_mean": 0.20, "eval/reward_mean": 0.50, "eval/kl_k3": 0.3, "eval/reward_lc_mean": 0.45}),
        "qrpo_b": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=0.3, parent=parent, metrics={
            "eval_selection/reward_mean": 0.40, "eval/reward_mean": 0.35, "eval/kl_k3": 0.1, "eval/reward_lc_mean": 0.33}),
        "dpo_chat": log_run(client, exp, algorithm="dpo", dataset="chat", beta=0.1, metrics={
            "eval_selection/reward_mean": 0.28, "eval/reward_mean": 0.30, "eval/kl_k3": 0.5,
            "eval/alpaca_eval_lc_win_rate": 0.21, "eval/alpaca_eval_win_rate": 0.19}),
        # DPO on chat without selection-half metrics: its reporting-half reward is the group's highest, but
        # choosing on it would bias the reported number upwards, so it is excluded from selection and named
        "dpo_no_selection": log_run(client, exp, algorithm="dpo", dataset="chat", beta=0.3, metrics={
            "eval/reward_mean": 0.90, "eval/kl_k3": 0.9, "eval/alpaca_eval_lc_win_rate": 0.60}),
        "dpo_code": log_run(client, exp, algorithm="dpo", dataset="code", beta=0.1, metrics={
            "eval_selection/reward_mean": 0.12, "eval/reward_mean": 0.10, "eval/kl_k3": 0.2, "eval/leetcode_pass_rate": 0.25}),
        # a (method, dataset) with no selection-half metrics at all: no row, never one picked on eval/ numbers
        "simpo_no_selection": log_run(client, exp, algorithm="simpo", dataset="chat", beta=2.5, metrics={
            "eval/reward_mean": 0.70, "eval/kl_k3": 0.4}),
        # the same method and data on another model: a row of its own, never folded into smollm2's
        "qrpo_other_model": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=0.1, model="tiny", metrics={
            "eval_selection/reward_mean": 0.90, "eval/reward_mean": 0.95, "eval/kl_k3": 0.2}),
        "qrpo_failed": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=1.0, status="FAILED", metrics={
            "eval_selection/reward_mean": 9.0, "eval/reward_mean": 9.0}),
    }
    return uri, client, parent, ids


def rows_of(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_compare_picks_the_best_config_by_the_selection_half_and_leaves_missing_metrics_blank(store, tmp_path, capsys):
    _, _, _, ids = store
    assert main(["--experiment", "paper", "--out", str(tmp_path / "out")]) == 0
    rows = {(r["method"], r["model"], r["dataset"]): r for r in rows_of((tmp_path / "out" / "results.csv").read_text())}
    assert set(rows) == {("qrpo", "smollm2", "chat"), ("qrpo", "tiny", "chat"), ("dpo", "smollm2", "chat"),
                         ("dpo", "smollm2", "code")}, "simpo has no selection-half run: no row; each model its own row"
    assert rows[("qrpo", "tiny", "chat")]["run_id"] == ids["qrpo_other_model"]
    rows = {(method, dataset): row for (method, model, dataset), row in rows.items() if model == "smollm2"}
    qrpo = rows[("qrpo", "chat")]
    assert qrpo["run_id"] == ids["qrpo_b"] and float(qrpo["beta"]) == 0.3, "chosen by eval_selection, not the test half"
    assert float(qrpo["reward"]) == 0.35 and float(qrpo["lc_reward"]) == 0.33
    assert qrpo["pass_rate"] == "" and qrpo["alpaca_lc"] == ""
    dpo = rows[("dpo", "chat")]
    assert dpo["run_id"] == ids["dpo_chat"], "a run without eval_selection/ metrics is never chosen on its eval/ numbers"
    assert float(dpo["reward"]) == 0.30 and float(dpo["alpaca_lc"]) == 0.21
    assert float(rows[("dpo", "code")]["pass_rate"]) == 0.25
    assert {r["selected_by"] for r in rows.values()} == {"eval_selection/reward_mean"}
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown == capsys.readouterr().out.split("written:")[0]
    table, note = markdown.split("\n\n")
    assert table.startswith("| method | model | dataset | reward | lc_reward | kl |") and table.count("\n") == 5
    excluded = [line for line in note.splitlines() if line.startswith("excluded from selection:")]
    assert len(excluded) == 1 and "2 run(s) without a finite eval_selection/reward_mean" in excluded[0]
    assert ids["dpo_no_selection"] in excluded[0] and ids["simpo_no_selection"] in excluded[0]
    assert "dpo/smollm2/chat" in excluded[0] and "simpo/smollm2/chat" in excluded[0]
    assert not any(ids[k] in excluded[0] for k in ("qrpo_a", "qrpo_b", "dpo_chat", "dpo_code")), "only the runs left out"


def test_compare_with_only_unselectable_runs_is_an_error_naming_them(store, capsys):
    _, _, _, ids = store
    assert main(["--experiment", "paper", "--filter", "tags.algorithm = 'simpo'"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: no finished run with a finite eval_selection/reward_mean") and "\n" not in err.strip()
    assert "excluded from selection: 1 run(s)" in err and ids["simpo_no_selection"] in err


def test_compare_filters_by_parent_run_and_by_tag(store, tmp_path, capsys):
    _, client, parent, ids = store
    assert main(["--parent-run", parent, "--out", str(tmp_path / "p")]) == 0
    rows = rows_of((tmp_path / "p" / "results.csv").read_text())
    assert [(r["method"], r["run_id"]) for r in rows] == [("qrpo", ids["qrpo_b"])]
    printed = capsys.readouterr().out  # the sweep itself first: both finished children, then the best one
    sweep, best = printed.split("best per (method, model, dataset)")
    assert sweep.startswith(f"sweep {parent}: 2 finished run(s)\ncomparison (held-out reporting half")
    children = [line for line in sweep.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [client.get_run(ids[key]).info.run_name for key in ("qrpo_a", "qrpo_b")]
    assert [row.split(" | ")[0] for row in children] == [f"| {name}" for name in names], "one row per child, in start order"
    assert best.count("\n| qrpo | smollm2 | chat |") == 1
    assert main(["--experiment", "paper", "--filter", "tags.dataset = 'code'", "--out", str(tmp_path / "t")]) == 0
    assert [r["run_id"] for r in rows_of((tmp_path / "t" / "results.csv").read_text())] == [ids["dpo_code"]]


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "no such MLflow experiment"),
    (["--parent-run", "0123456789abcdef"], "no such run"),
    (["--experiment", "paper", "--filter", "tags.dataset == "], "--filter"),
    (["--experiment", "paper", "--filter", "tags.dataset = 'none'"], "no finished run"),
])
def test_compare_bad_input_is_one_line_and_exit_2(store, capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_reward_vs_m_ticks_are_the_integer_ms_swept(tmp_path, monkeypatch):
    """M counts reference samples: the plot's ticks are the values swept (1, 2, 4, 16), no fractions."""
    import matplotlib.pyplot as plt

    from flows.compare import plot_sweep

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to read their axes
    rows = [{"method": method, "M": m, "reward": 0.1 * m, "kl": 0.01 * m} for method in ("qrpo-identity", "qrpo-log") for m in (1, 2, 4, 16)]
    paths = plot_sweep(rows, tmp_path)
    assert [p.name for p in paths] == ["reward_vs_kl.png", "reward_vs_M.png"] and all(p.stat().st_size for p in paths)
    axis = figures[1].axes[0]
    assert list(axis.get_xticks()) == [1, 2, 4, 16]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["1", "2", "4", "16"]


def test_reward_vs_m_draws_each_arms_interval_and_the_best_run_per_m(tmp_path, monkeypatch):
    """reward_vs_M.png: per M the run with the highest reward, its reward bar = the gain's 95% interval moved to
    the reward (asymmetric as logged), the quantile panel's bar = +-1.96 se."""
    import matplotlib.pyplot as plt

    from flows.compare import plot_sweep

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [{"method": "qrpo-identity", "M": m, "reward": 0.3 + 0.01 * m, "gain": 0.01 * m, "gain_ci_low": 0.01 * m - 0.05,
             "gain_ci_high": 0.01 * m + 0.08, "kl": 0.1, "quantile": 0.5 + 0.01 * m, "quantile_se": 0.02} for m in (1, 4)]
    rows.append({**rows[0], "reward": 0.2, "gain_ci_low": -1.0})  # a worse run at M = 1: not drawn
    plot_sweep(rows, tmp_path)
    reward_axis, quantile_axis = figures[1].axes
    (line, caps, (bars,)), = [c.lines for c in reward_axis.containers]
    assert list(line.get_xdata()) == [1, 4] and np.allclose(line.get_ydata(), [0.31, 0.34])
    segments = bars.get_segments()
    assert np.allclose([s[0][1] for s in segments], [0.26, 0.29]) and np.allclose([s[1][1] for s in segments], [0.39, 0.42])
    (qline, _, (qbars,)), = [c.lines for c in quantile_axis.containers]
    assert np.allclose(qline.get_ydata(), [0.51, 0.54])
    assert np.allclose([s[1][1] - s[0][1] for s in qbars.get_segments()], 2 * 1.96 * 0.02)


def test_reward_vs_kl_marks_each_methods_reward_at_the_common_kl(tmp_path, monkeypatch):
    """Given the equal-KL readings, reward_vs_kl.png has a dotted line at the common KL and each method's reading
    there with its bootstrap interval; without readings, neither."""
    import matplotlib.pyplot as plt

    from flows.compare import plot_sweep

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [{"method": m, "M": 4, "reward": r, "kl": k} for m, r, k in
            [("qrpo", 0.3, 0.1), ("qrpo", 0.4, 0.5), ("dpo", 0.32, 0.05), ("dpo", 0.35, 0.3)]]
    readings = {"kl": 0.2, "num_prompts": 24, "methods": {"qrpo": {"reward_at_kl": 0.325, "ci_low": 0.3, "ci_high": 0.36, "num_runs": 2},
                                                          "dpo": {"reward_at_kl": 0.338, "ci_low": 0.31, "ci_high": 0.37, "num_runs": 2}}}
    plot_sweep(rows, tmp_path, readings)
    axis = figures[0].axes[0]
    marks = {}
    for container in axis.containers:
        line, _, (bars,) = container.lines
        (x,), (y,) = line.get_xdata(), line.get_ydata()
        (low, high), = [(seg[0][1], seg[1][1]) for seg in bars.get_segments()]
        marks[round(y, 3)] = (x, round(low, 3), round(high, 3))
    assert marks == {0.325: (0.2, 0.3, 0.36), 0.338: (0.2, 0.31, 0.37)}
    assert any(list(l.get_xdata()) == [0.2, 0.2] for l in axis.lines), "the common KL as a vertical line"
    figures.clear()
    plot_sweep(rows, tmp_path)
    assert not figures[0].axes[0].containers


def test_arm_differences_pair_each_run_with_the_best_dpo_arm_on_the_same_prompts(tmp_path):
    """Per-prompt rewards logged as each run's report/per_prompt.csv; the baseline is the best DPO arm by the
    selection half even where a QRPO arm scores higher there, and a run without the file gets no cells."""
    from flows.compare import DIFF_COLUMNS, OTHER_DIFF_COLUMNS, SWEEP_COLUMNS, add_arm_differences, rows_of
    from qrpo.evaluation import paired

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("arms", artifact_location=(tmp_path / "art").as_uri())
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(20)]
    base = rng.normal(0, 1, 20)
    logged, logged_lc, logged_q = {}, {}, {}
    for name, algorithm, selection, shift in [("dpo_a", "dpo", 0.2, 0.0), ("dpo_b", "dpo", 0.3, 0.01),
                                              ("qrpo", "qrpo", 0.9, 0.2), ("old", "qrpo", 0.5, None)]:
        run_id = log_run(client, exp, algorithm=algorithm, dataset="chat", beta=0.1, metrics={"eval_selection/reward_mean": selection})
        client.set_tag(run_id, "mlflow.runName", name)
        if shift is not None:  # "old" stands for a run from before per_prompt.csv existed
            values = base + shift + rng.normal(0, 0.05, 20)
            lc, q = values - 0.3 * shift + rng.normal(0, 0.05, 20), 0.5 + shift + rng.normal(0, 0.1, 20)
            logged[run_id], logged_lc[run_id], logged_q[run_id] = (dict(zip(prompts, v)) for v in (values, lc, q))
            folder = tmp_path / name
            folder.mkdir()
            paired.write_per_prompt([{"prompt_id": p, "reward": v, "reward_lc": w, "ref_quantile": x}
                                     for p, v, w, x in zip(prompts, values, lc, q)], folder / "per_prompt.csv")
            client.log_artifacts(run_id, str(folder), "report")
    runs = client.search_runs([exp])
    rows = rows_of(runs, SWEEP_COLUMNS)
    note = add_arm_differences(client, runs, rows)
    by_name = {r["run"]: r for r in rows}
    baseline = by_name["dpo_b"]["run_id"]
    assert note.startswith("paired differences (reward, per prompt, reporting half) vs the baseline arm dpo_b (dpo, ")
    expected = {r["arm"]: r for r in paired.compare_arms(logged, baseline)}
    for name in ("dpo_a", "qrpo"):
        assert {c: by_name[name][c] for c in DIFF_COLUMNS} == {c: expected[by_name[name]["run_id"]][c] for c in DIFF_COLUMNS}
    assert by_name["qrpo"]["diff_ci_low"] > 0 and by_name["qrpo"]["diff_p_holm"] < 0.05
    # the length-controlled reward and the reference quantile, each paired and Holm-adjusted on its own
    for prefix, values in (("lc_", logged_lc), ("quantile_", logged_q)):
        own = {r["arm"]: r for r in paired.compare_arms(values, baseline)}
        for name in ("dpo_a", "qrpo"):
            assert {c: by_name[name][prefix + c] for c in DIFF_COLUMNS[:4]} == {c: own[by_name[name]["run_id"]][c] for c in DIFF_COLUMNS[:4]}
    assert by_name["qrpo"]["lc_diff_vs_baseline"] != by_name["qrpo"]["diff_vs_baseline"]
    assert not any(c in by_name["old"] for c in OTHER_DIFF_COLUMNS)
    assert not any(c in by_name["dpo_b"] for c in DIFF_COLUMNS) and not any(c in by_name["old"] for c in DIFF_COLUMNS)
    assert "p Holm-adjusted over 2 comparison(s)\npower: this comparison detects differences >= " in note
    # compare.baseline names the arm instead (here the weaker DPO arm): the others are paired with it
    rows = rows_of(runs, SWEEP_COLUMNS)
    note = add_arm_differences(client, runs, rows, baseline_name="dpo_a")
    assert "vs the baseline arm dpo_a (dpo, compare.baseline)" in note
    expected = {r["arm"]: r for r in paired.compare_arms(logged, by_name["dpo_a"]["run_id"])}
    assert [r.get("diff_vs_baseline") for r in rows if r["run"] in ("dpo_b", "qrpo")] == [
        expected[r["run_id"]]["diff_vs_baseline"] for r in rows if r["run"] in ("dpo_b", "qrpo")]


def test_compare_parent_run_prints_the_arm_differences_paired_as_the_sweep_was(tmp_path, monkeypatch, capsys):
    """`qrpo-compare --parent-run` fills the diff columns and prints the power line like the sweep itself: paired
    with the parent's logged compare.baseline unless --baseline names another arm; --pairs all adds every pair."""
    from flows.compare import DIFF_COLUMNS
    from qrpo.evaluation import paired

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("qrpo", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"qrpo.sweep": "true"}).info.run_id
    client.log_param(parent, "compare.baseline", "m1")
    rng = np.random.default_rng(1)
    prompts, base = [f"p{i}" for i in range(16)], rng.normal(0, 1, 16)
    values = {}
    for name, shift in (("m1", 0.0), ("m4", 0.02), ("m16", 0.3)):
        run_id = log_run(client, exp, algorithm="qrpo", dataset="chat", beta=0.1, parent=parent,
                         metrics={"eval_selection/reward_mean": 0.5 - shift, "eval/reward_mean": 0.4 + shift})
        client.set_tag(run_id, "mlflow.runName", name)
        values[name] = base + shift + rng.normal(0, 0.05, 16)
        folder = tmp_path / name
        folder.mkdir()
        paired.write_per_prompt([{"prompt_id": p, "reward": v} for p, v in zip(prompts, values[name])], folder / "per_prompt.csv")
        client.log_artifacts(run_id, str(folder), "report")

    def printed_rows(out):
        header, *rows = [line.split(" | ") for line in out.split("\n\nbest per")[0].splitlines() if line.startswith("| ") and "---" not in line]
        return {row[0][2:]: dict(zip([h.strip("| ") for h in header], row)) for row in rows}

    assert main(["--parent-run", parent]) == 0
    out = capsys.readouterr().out
    rows = printed_rows(out)
    expected = {r["arm"]: r for r in paired.compare_arms({k: dict(zip(prompts, v)) for k, v in values.items()}, "m1")}
    assert rows["m1"]["diff_vs_baseline"] == "" and rows["m16"]["diff_vs_baseline"] == f"{expected['m16']['diff_vs_baseline']:.4g}"
    assert all(rows["m4"][c] == f"{expected['m4'][c]:.4g}" for c in DIFF_COLUMNS)
    assert "vs the baseline arm m1 (qrpo, compare.baseline); p Holm-adjusted over 2 comparison(s)\npower: " in out
    assert main(["--parent-run", parent, "--baseline", "m16", "--pairs", "all"]) == 0
    out = capsys.readouterr().out
    assert printed_rows(out.split("every pair of arms")[0])["m16"]["diff_vs_baseline"] == ""
    assert "vs the baseline arm m16" in out and "every pair of arms (Holm over all pairs):\n| arm | baseline |" in out
    assert main(["--parent-run", parent, "--baseline", "m2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --baseline 'm2' is not one of the sweep's runs: m1, m4, m16"


def test_equal_kl_note_reads_each_methods_frontier_from_the_runs_per_prompt_files(tmp_path):
    from flows.compare import equal_kl, per_prompt_results
    from qrpo.evaluation import frontier, paired

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("kl", artifact_location=(tmp_path / "art").as_uri())
    prompts = [f"p{i}" for i in range(12)]
    rng = np.random.default_rng(3)
    expected = {}
    for i, (algorithm, reward, kl) in enumerate([("qrpo", 0.1, 0.1), ("qrpo", 0.3, 0.5), ("dpo", 0.0, 0.2), ("dpo", 0.4, 0.6)]):
        run_id = log_run(client, exp, algorithm=algorithm, dataset="chat", beta=0.1, metrics={})
        rewards, kls = reward + rng.normal(0, 0.1, 12), kl + rng.uniform(-0.01, 0.01, 12)
        expected.setdefault(algorithm, []).append((dict(zip(prompts, rewards)), dict(zip(prompts, kls))))
        (tmp_path / str(i)).mkdir()
        paired.write_per_prompt([{"prompt_id": p, "reward": r, "ref_quantile": 0.5, "kl_k3": k} for p, r, k in zip(prompts, rewards, kls)],
                                tmp_path / str(i) / "per_prompt.csv")
        client.log_artifacts(run_id, str(tmp_path / str(i)), "report")
    runs = client.search_runs([exp])
    note = frontier.reward_at_kl_lines(equal_kl(runs, per_prompt_results(client, runs)))
    assert note == frontier.reward_at_kl_lines(frontier.reward_at_kl(expected))
    assert note.startswith("reward at equal KL (k3 = ") and "\n  dpo: " in note and "\n  qrpo: " in note
