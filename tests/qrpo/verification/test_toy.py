"""qrpo.verification.toy: on an enumerable problem, QRPO trained with the library's loss reaches the exact
KL-regularised optimum, estimated quantiles approach it as M grows, DPO reaches its own optimum,
and the CLI prints the documented JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qrpo.verification import toy

ALL_TRANSFORMS = ["identity", "log", "square", "sqrt", "normal_icdf", "scaled_normal_icdf"]
NONLINEAR = ["log", "square", "sqrt", "normal_icdf", "scaled_normal_icdf"]


@pytest.fixture(scope="module")
def report():
    """A reduced run (fewer steps than the CLI default, same problem): ~17 s on one core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return toy.run(transforms=ALL_TRANSFORMS, ms=(1, 50), steps=800, dpo_steps=2000, dpo_batch_size=2048, seed=0)
    finally:
        torch.set_num_threads(threads)


# --- the enumeration itself ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    return toy.make_problem(prompts=2, vocab=3, length=3, ref_scale=0.5, generator=torch.Generator().manual_seed(3))


def test_sequence_logps_is_the_sum_of_per_token_log_softmax(problem):
    """Completion (2, 0, 1) of prompt 1: root node 0 emits 2, node 1 + 2 = 3 emits 0, node
    1 + 3 + (2*3 + 0) = 10 emits 1."""
    index = 2 * 9 + 0 * 3 + 1
    assert problem.tokens[index].tolist() == [2, 0, 1]
    assert problem.nodes[index].tolist() == [0, 3, 10]
    logp = torch.log_softmax(problem.ref_logits[1], dim=-1)
    expected = logp[0, 2] + logp[3, 0] + logp[10, 1]
    assert problem.ref_logps[1, index].item() == pytest.approx(expected.item(), rel=1e-14)


def test_reference_policy_is_a_distribution_over_all_completions(problem):
    assert problem.ref_logps.shape == (2, 27)
    torch.testing.assert_close(problem.ref_logps.exp().sum(1), torch.ones(2, dtype=torch.float64))
    assert len(set(map(tuple, problem.tokens.tolist()))) == 27  # every completion exactly once


def test_midpoint_quantiles_average_one_half_under_the_reference_policy(problem):
    """sum_i p_i (sum_{j below i} p_j + p_i/2) = (sum_i p_i)^2 / 2 = 1/2 exactly; each q lies in its
    own interval [F(r-), F(r)], strictly inside (0, 1), and the order follows the reward."""
    q = toy.midpoint_quantiles(problem.ref_logps, problem.rewards)
    p = problem.ref_logps.exp()
    torch.testing.assert_close((p * q).sum(1), torch.full((2,), 0.5, dtype=torch.float64))
    assert ((q > 0) & (q < 1)).all()
    for prompt in range(2):
        order = problem.rewards[prompt].argsort()
        assert (q[prompt, order].diff() > 0).all()
        below = torch.stack([p[prompt][problem.rewards[prompt] < r].sum() for r in problem.rewards[prompt]])
        torch.testing.assert_close(q[prompt], below + p[prompt] / 2)


def test_exact_normaliser_equals_the_closed_form_for_log_at_beta_one(problem):
    """f = log, beta = 1: exp(f(q)) = q, so Z(x) = E_ref[q] = 1/2 = Z_log(1) = 1/(1+1) with no
    discretisation at all (the midpoint rule is exact for a linear integrand)."""
    q = toy.midpoint_quantiles(problem.ref_logps, problem.rewards)
    optimum, log_z = toy.tilted(problem.ref_logps, torch.log(q))
    torch.testing.assert_close(log_z, torch.full((2,), math.log(0.5), dtype=torch.float64))
    torch.testing.assert_close(optimum.exp().sum(1), torch.ones(2, dtype=torch.float64))


def test_kl_is_zero_for_equal_policies_and_positive_otherwise(problem):
    other = torch.log_softmax(problem.ref_logps + problem.rewards, dim=1)
    assert toy.kl(problem.ref_logps, problem.ref_logps).abs().max().item() < 1e-15
    assert (toy.kl(problem.ref_logps, other) > 0).all()


# --- training reaches the optimum -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TRANSFORMS)
def test_exact_quantile_training_reaches_the_closed_form_optimum(report, name):
    entry = report["transforms"][name]
    assert entry["kl_ref_to_optimum"] > 0.5  # the optimum is far from where training starts
    assert entry["kl_to_optimum"] <= 0.01
    assert entry["kl_from_optimum"] <= 0.01
    assert entry["kl_to_optimum"] <= 0.01 * entry["kl_ref_to_optimum"]
    assert entry["log_partition_gap"] < 0.05


@pytest.mark.parametrize("name", NONLINEAR)
def test_estimated_quantiles_approach_the_optimum_as_m_grows_for_nonlinear_transforms(report, name):
    estimated = report["transforms"][name]["estimated"]
    assert estimated["50"]["kl_to_optimum"] < 0.2 * estimated["1"]["kl_to_optimum"]
    assert estimated["50"]["kl_to_optimum"] < 0.1 * report["transforms"][name]["kl_ref_to_optimum"]


def test_estimated_identity_quantiles_are_unbiased_so_large_m_is_close_to_exact(report):
    entry = report["transforms"]["identity"]
    assert entry["estimated"]["50"]["kl_to_optimum"] <= 0.02
    assert entry["estimated"]["1"]["kl_to_optimum"] < 0.2 * entry["kl_ref_to_optimum"]  # noisy, but unbiased


def test_dpo_reaches_its_own_optimum(report):
    dpo = report["dpo"]
    assert dpo["kl_ref_to_optimum"] > 0.5
    assert dpo["kl_to_optimum"] <= 0.05
    assert dpo["kl_from_optimum"] <= 0.05
    assert dpo["kl_to_optimum"] <= 0.03 * dpo["kl_ref_to_optimum"]


# --- CLI -----------------------------------------------------------------------------------------------------


def test_cli_prints_the_documented_json():
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "qrpo.verification.toy", "--json", "--steps", "10", "--dpo-steps", "10",
               "--dpo-batch-size", "32", "--batch-size", "16", "--beta", "log=0.3"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert set(report) == {"transforms", "dpo", "config"}
    assert list(report["transforms"]) == ALL_TRANSFORMS
    for name, entry in report["transforms"].items():
        for key in ("beta", "kl_to_optimum", "kl_from_optimum", "kl_ref_to_optimum", "log_partition_gap"):
            assert math.isfinite(entry[key]), (name, key)
        assert set(entry["estimated"]) == {"1", "3", "10", "50"}
        for m in entry["estimated"].values():
            assert math.isfinite(m["kl_to_optimum"]) and math.isfinite(m["kl_from_optimum"])
    assert report["transforms"]["log"]["beta"] == 0.3
    assert report["transforms"]["scaled_normal_icdf"]["params"] == {"mu": 0.5, "sigma": 0.2}
    assert {"beta", "kl_to_optimum", "kl_from_optimum", "kl_ref_to_optimum"} <= set(report["dpo"])
    assert report["config"]["steps"] == 10 and report["config"]["ms"] == [1, 3, 10, 50]


def test_cli_table_output_names_every_transform(capsys):
    threads = torch.get_num_threads()
    try:
        assert toy.main(["--steps", "2", "--dpo-steps", "2", "--ms", "2", "--transforms", "identity,normal_icdf"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "identity" in out and "normal_icdf" in out and "DPO" in out and "M=2" in out
    with pytest.raises(SystemExit):
        toy.main(["--transforms", "cubic"])
