"""Bad input: one clear line on stderr, exit status 2, and nothing written."""

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
        (["train.mixed_precision=fp8"], "train.mixed_precision='fp8' is not one of auto, bf16, no"),
        (["distributed=ddp", "distributed.topology=horovod"], "distributed.topology='horovod' is not one of"),
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
    assert lines == ["error: algorithm (qrpo.algorithms.QRPO): beta must be a positive finite number; got -3.0"]
