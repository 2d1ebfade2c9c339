"""`qrpo-plan` end to end, without loading a model or writing anything: a 2 x 2 sweep's reuse counted step by
step, bad input as one line with exit status 2, the calibration rows of benchmarks/README.md within 25% of the
measured step times, and the README's printed example."""

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from flows.plan import build, main
from qrpo.plan import format_plan, price, totals

REPO = Path(__file__).resolve().parents[2]
P, E, LP = 16, 8, 30  # experiment=smoke, with its prompt counts and length given (no data read)
SMOKE = ["experiment=smoke", f"plan.train_prompts={P}", f"plan.eval_prompts={E}", f"plan.prompt_tokens={LP}", "plan.precision=fp32"]
K = 3  # experiment=smoke's candidates per prompt


def test_a_2x2_sweep_samples_and_scores_once_and_shares_reference_logps_per_m():
    sweep = build([*SMOKE, "algorithm.beta=0.1,0.3", "sampler.num_ref_samples=2,4"], multirun=True)
    assert [job.label for job in sweep.jobs] == [  # Hydra's BasicSweeper order
        "algorithm.beta=0.1 sampler.num_ref_samples=2", "algorithm.beta=0.1 sampler.num_ref_samples=4",
        "algorithm.beta=0.3 sampler.num_ref_samples=2", "algorithm.beta=0.3 sampler.num_ref_samples=4"]
    assert sweep.largest == K + 4
    alone = [{s.name: s for s in job.steps} for job in sweep.alone]
    assert [job["sample train"].rows for job in alone] == [P * (K + 2), P * (K + 4), P * (K + 2), P * (K + 4)]
    shared = defaultdict(list)
    for priced, users in sweep.with_reuse():
        shared[priced.step.name].append((priced.step.rows, users))
    # sampled and scored once, at the largest K + M, for all four jobs; the eval reference once
    assert shared["sample train"] == [(P * (K + 4), 4)] and shared["score train"] == [(P * (K + 4), 4)]
    assert shared["sample eval reference"] == [(E * 4, 4)] and shared["score eval reference"] == [(E * 4, 4)]
    # reference log-probs once per training table: one per M (QRPO leave-one-out: K + M examples per prompt), two jobs each
    assert shared["reference log-probs"] == [(P * (K + 2), 2), (P * (K + 4), 2)]
    for name in ("train", "sample policy (eval)", "score policy samples", "eval log-probs"):
        assert [users for _, users in shared[name]] == [1, 1, 1, 1], name
    # the totals: every job alone, against each artifact once
    dev = sweep.device
    each = lambda job, name: price(job[name], dev).device_hours  # noqa: E731
    without = sum(price(step, dev).device_hours for job in alone for step in job.values())
    per_job = sum(each(job, n) for job in alone for n in ("train", "sample policy (eval)", "score policy samples", "eval log-probs"))
    once = (each(alone[1], "sample train") + each(alone[1], "score train") + each(alone[0], "sample eval reference")
            + each(alone[0], "score eval reference") + each(alone[0], "reference log-probs") + each(alone[1], "reference log-probs"))
    assert totals(sweep.without_reuse()).device_hours == pytest.approx(without)
    assert totals([p for p, _ in sweep.with_reuse()]).device_hours == pytest.approx(once + per_job)
    text = format_plan(sweep)
    assert "a sweep of 4 jobs, train prompts sampled and scored once at K+M = 7" in text and "reuse saves" in text


def test_a_preset_grid_and_a_comparison_expand_as_the_pipeline_runs_them():
    sweep = build([*SMOKE, "sweep=cpu_qrpo"], multirun=True)  # hydra.sweeper.params of the preset: beta x M
    assert len(sweep.jobs) == 6 and sweep.largest == K + 4
    compare = build([*SMOKE, "compare=ref_scaling"])  # its arms, as experiment=compare runs them
    assert [job.label.split()[-1] for job in compare.jobs] == [f"run_name=qrpo-M{m}" for m in (1, 2, 4, 8, 16)]
    assert compare.largest == K + 16


@pytest.mark.parametrize("args, expected", [
    (["plan.gpu=tpu"], "plan.gpu='tpu' is not in the throughput table (qrpo/plan/throughput.yaml); one of: cpu, h100, h200, a100, l40s"),
    (["plan.num_gpus=0"], "plan.num_gpus must be a positive number; got 0"),
    (["plan.precision=fp8"], "plan.precision='fp8' is not one of bf16, fp32"),
    (["algorithm.beta=0.1,0.3"], "algorithm.beta=0.1,0.3 is a sweep: add --multirun (-m)"),
    (["--bogus"], "unknown option --bogus"),
    (["--multirun", "sweep=nope"], "Could not find 'sweep/nope'"),
    (["model=pretrained", "model.path=some-org/unknown-model"], "set plan.params, e.g. plan.params=8.03e9"),
    (["reward=skywork", "reward.path=some-org/unknown-rm", "reward.name=x"], "set plan.reward_params"),
    (["dataset.path=some-org/not-cached"], "set plan.train_prompts, plan.eval_prompts"),
    (["--multirun", "plan.gpu=h100,a100"], "plan.* differs between the sweep's jobs"),
])
def test_bad_input_is_one_line_and_exit_status_2(args, expected, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


def test_the_console_command_exits_2_with_one_line():
    done = subprocess.run([sys.executable, "-m", "flows.plan", "plan.gpu=tpu"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: plan.gpu='tpu'"), done.stderr


# benchmarks/README.md, "qrpo-plan on this machine kind": its rows, by the plan's step names
CALIBRATION = {"train sampling": "sample train", "eval reference sampling": "sample eval reference",
               "reference log-probs": "reference log-probs", "training": "train", "policy sampling": "sample policy (eval)",
               "eval log-probs": "eval log-probs"}


def calibration_rows() -> list[list[str]]:
    text = (REPO / "benchmarks" / "README.md").read_text()
    section = text.split("## `qrpo-plan` on this machine kind", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    return [row for row in rows if row[0].split(" (")[0] in CALIBRATION]


def seconds(cell: str) -> float:
    return float(re.sub(r"[^\d.]", "", cell.replace(" s", "")))


def test_the_default_on_this_machine_kind_is_predicted_within_25_percent():
    rows = calibration_rows()
    assert len(rows) == len(CALIBRATION)
    predicted = {precision: {p.step.name: p.wall_s for p in build([f"plan.precision={precision}"]).without_reuse()}
                 for precision in ("bf16", "fp32")}
    for row in rows:
        step = CALIBRATION[row[0].split(" (")[0]]
        for precision, (measured, documented, ratio) in (("bf16", row[1:4]), ("fp32", row[4:7])):
            now = predicted[precision][step]
            assert seconds(documented) == pytest.approx(now, abs=0.051), (row[0], precision, "the README's prediction is not what the code predicts")
            assert float(ratio.rstrip(" †")) == pytest.approx(now / seconds(measured), abs=0.0051), (row[0], precision)
            if "†" not in measured:  # † marks the fp32 sampling of the previous sampler: not comparable
                assert 0.75 <= now / seconds(measured) <= 1.25, (row[0], precision, now, measured)


def test_the_readme_prints_what_the_command_prints():
    text = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```\n(\$ qrpo-plan .*?)```", text, re.S)]
    assert blocks, "README.md has no '$ qrpo-plan ...' example"
    for block in blocks:
        lines = block.splitlines()
        command = []
        while True:
            line = lines.pop(0)
            command.append(line.removeprefix("$ ").rstrip("\\").strip())
            if not line.endswith("\\"):
                break
        args = " ".join(command).split()[1:]
        multirun = "--multirun" in args
        printed = format_plan(build([a for a in args if a != "--multirun"], multirun))
        assert "\n".join(lines).rstrip() == printed.rstrip(), "README.md's qrpo-plan output is stale: re-run the command"
