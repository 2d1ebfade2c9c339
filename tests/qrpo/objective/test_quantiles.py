"""qrpo.objective.quantiles: vectorised empirical quantiles against a naive Python loop, every tie policy,
every input layout (torch, NumPy [N, M], Arrow list columns, ragged rows), clamping, and errors."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
import torch

from qrpo.objective.quantiles import TIE_POLICIES, clamp_quantiles, quantile_rewards, quantile_table


def naive_quantile(r: float, refs: list[float], ties: str) -> float:
    """The definition, one comparison at a time."""
    beaten = 0.0
    for ref in refs:
        if ref < r:
            beaten += 1.0
        elif ref == r:
            beaten += {"le": 1.0, "lt": 0.0, "mid": 0.5}[ties]
    return beaten / len(refs)


def _data(kind: str, rows: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        return rng.standard_normal(rows), rng.standard_normal((rows, m))
    # discrete rewards 0..3 (pass counts, say): ties everywhere
    return rng.integers(0, 4, rows).astype(np.float64), rng.integers(0, 4, (rows, m)).astype(np.float64)


def _ragged(rows: int, seed: int, kind: str) -> tuple[np.ndarray, list[list[float]]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 8, rows)
    if kind == "continuous":
        return rng.standard_normal(rows), [list(rng.standard_normal(k)) for k in lengths]
    return rng.integers(0, 4, rows).astype(np.float64), [list(rng.integers(0, 4, k).astype(float)) for k in lengths]


KINDS = ["continuous", "discrete"]


@pytest.mark.parametrize("ties", TIE_POLICIES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantile_rewards_matches_naive_loop(kind, ties):
    rewards, refs = _data(kind, rows=300, m=7, seed=1)
    expected = [naive_quantile(r, list(row), ties) for r, row in zip(rewards, refs)]
    got = quantile_rewards(torch.tensor(rewards), torch.tensor(refs), ties=ties)
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("ties", TIE_POLICIES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantile_table_numpy_2d_matches_naive_loop(kind, ties):
    rewards, refs = _data(kind, rows=300, m=7, seed=2)
    expected = [naive_quantile(r, list(row), ties) for r, row in zip(rewards, refs)]
    got = quantile_table(rewards, refs, ties=ties)
    assert got.dtype == np.float64 and got.shape == (300,)
    np.testing.assert_array_equal(got, expected)
    # float32 storage (the benchmark's layout) gives the same counts
    np.testing.assert_array_equal(quantile_table(rewards.astype(np.float32), refs.astype(np.float32), ties), expected)


@pytest.mark.parametrize("ties", TIE_POLICIES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantile_table_arrow_list_columns_match_naive_loop(kind, ties):
    rewards, refs = _data(kind, rows=200, m=5, seed=3)
    expected = [naive_quantile(r, list(row), ties) for r, row in zip(rewards, refs)]
    columns = {
        "list": pa.array(refs.tolist(), type=pa.list_(pa.float64())),
        "large_list": pa.array(refs.tolist(), type=pa.large_list(pa.float64())),
        "fixed_size_list": pa.FixedSizeListArray.from_arrays(pa.array(refs.reshape(-1)), 5),
        "chunked": pa.chunked_array([refs[:77].tolist(), refs[77:].tolist()], type=pa.list_(pa.float64())),
    }
    for layout, column in columns.items():
        np.testing.assert_array_equal(quantile_table(pa.array(rewards), column, ties=ties), expected, err_msg=layout)


@pytest.mark.parametrize("ties", TIE_POLICIES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantile_table_ragged_arrow_rows_match_naive_loop(kind, ties):
    rewards, refs = _ragged(rows=250, seed=4, kind=kind)
    expected = [naive_quantile(r, row, ties) for r, row in zip(rewards, refs)]
    column = pa.array(refs, type=pa.list_(pa.float64()))
    np.testing.assert_array_equal(quantile_table(rewards, column, ties=ties), expected)
    # a sliced column keeps its row boundaries (Arrow offsets do not start at 0)
    np.testing.assert_array_equal(quantile_table(rewards[50:], column.slice(50), ties=ties), expected[50:])


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_quantile_table_chunking_does_not_change_results(ties):
    rewards, refs = _data("discrete", rows=100, m=6, seed=5)
    np.testing.assert_array_equal(
        quantile_table(rewards, refs, ties, chunk_rows=7), quantile_table(rewards, refs, ties, chunk_rows=1 << 20)
    )
    r_ragged, refs_ragged = _ragged(rows=100, seed=6, kind="discrete")
    column = pa.array(refs_ragged)
    np.testing.assert_array_equal(
        quantile_table(r_ragged, column, ties, chunk_rows=3), quantile_table(r_ragged, column, ties, chunk_rows=1000)
    )


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_torch_and_table_entry_points_agree(ties):
    rewards, refs = _data("discrete", rows=500, m=9, seed=7)
    from_torch = quantile_rewards(torch.tensor(rewards), torch.tensor(refs), ties=ties).numpy()
    np.testing.assert_array_equal(from_torch, quantile_table(rewards, refs, ties=ties))
    np.testing.assert_array_equal(from_torch, quantile_table(rewards, pa.array(refs.tolist()), ties=ties))


def test_hand_worked_tie_policies():
    """r = 2 among refs [1, 2, 2, 3]: one strictly below, two ties.
    le = (1 + 2)/4 = 3/4, lt = 1/4, mid = (1 + 2/2)/4 = 1/2."""
    r, refs = torch.tensor([2.0]), torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    assert quantile_rewards(r, refs, "le").item() == 0.75
    assert quantile_rewards(r, refs, "lt").item() == 0.25
    assert quantile_rewards(r, refs, "mid").item() == 0.5
    # every reference tied: le -> 1, lt -> 0, mid -> 1/2
    all_tied = torch.full((1, 3), 2.0)
    assert [quantile_rewards(r, all_tied, t).item() for t in ("le", "lt", "mid")] == [1.0, 0.0, 0.5]


def test_mid_rank_is_exactly_unbiased_for_the_midpoint_quantile_of_a_discrete_reward():
    """Reward values 0..3 with P = (1/8, 1/2, 1/4, 1/8) under pi_ref; for r = 1 the midpoint quantile
    is F(1-) + P(1)/2 = 1/8 + 1/4 = 3/8. Enumerate all 4^3 reference sets of size M = 3 with their
    probabilities, in exact rational arithmetic: E[q_hat_mid] = 3/8, while E[q_hat_le] = F(1) = 5/8."""
    probs = [Fraction(1, 8), Fraction(1, 2), Fraction(1, 4), Fraction(1, 8)]
    sets = list(itertools.product(range(4), repeat=3))
    q = {t: quantile_rewards(torch.ones(len(sets)), torch.tensor(sets, dtype=torch.float64), t) for t in ("mid", "le")}
    weights = [probs[a] * probs[b] * probs[c] for a, b, c in sets]
    expectation = {t: sum(w * Fraction(v).limit_denominator(6) for w, v in zip(weights, q[t].tolist())) for t in q}
    assert expectation["mid"] == Fraction(3, 8)
    assert expectation["le"] == Fraction(5, 8)


def test_quantile_rewards_output_dtype_and_no_gradient():
    rewards = torch.tensor([0.5, 1.5], dtype=torch.float32, requires_grad=True)
    refs = torch.tensor([[0.0, 1.0], [1.0, 2.0]], dtype=torch.float32, requires_grad=True)
    q = quantile_rewards(rewards, refs)
    assert q.dtype == torch.float32 and not q.requires_grad
    assert q.tolist() == [0.5, 0.5]
    integer_q = quantile_rewards(torch.tensor([1, 3]), torch.tensor([[0, 2], [3, 3]]), "lt")
    assert integer_q.dtype == torch.float32 and integer_q.tolist() == [0.5, 0.0]


def test_clamp_quantiles_moves_only_the_end_points_half_a_step_inside():
    """M = 4: grid {0, 1/4, 1/2, 3/4, 1} -> {1/8, 1/4, 1/2, 3/4, 7/8}."""
    grid = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert clamp_quantiles(grid, 4).tolist() == [0.125, 0.25, 0.5, 0.75, 0.875]
    # M = 2: {0, 1/2, 1} -> {1/4, 1/2, 3/4}: three distinct values survive
    assert clamp_quantiles(torch.tensor([0.0, 0.5, 1.0]), 2).tolist() == [0.25, 0.5, 0.75]
    # M = 1: a single reference carries no signal for open-interval transforms, everything -> 1/2
    assert clamp_quantiles(torch.tensor([0.0, 1.0]), 1).tolist() == [0.5, 0.5]


def test_clamp_quantiles_can_leave_either_end_alone():
    grid = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert clamp_quantiles(grid, 4, high=False).tolist() == [0.125, 0.5, 1.0]
    assert clamp_quantiles(grid, 4, low=False).tolist() == [0.0, 0.5, 0.875]


def test_clamp_quantiles_accepts_a_per_row_reference_count():
    q = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert clamp_quantiles(q, torch.tensor([2, 4, 10])).tolist() == [0.25, 0.875, 0.05]
    assert clamp_quantiles(q, 10).dtype == torch.float64


def test_empty_table_gives_empty_result():
    assert quantile_table(np.zeros(0), np.zeros((0, 4))).shape == (0,)


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rewards_are_refused_with_the_row(bad):
    rewards = torch.tensor([0.1, 0.2, bad])
    refs = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"rewards has non-finite values.*first at row 2"):
        quantile_rewards(rewards, refs)
    with pytest.raises(ValueError, match=r"rewards has non-finite values.*first at row 2"):
        quantile_table(rewards.numpy(), refs.numpy())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_reference_rewards_are_refused_with_the_row(bad):
    refs = np.zeros((4, 3))
    refs[3, 1] = bad
    with pytest.raises(ValueError, match=r"ref_rewards has non-finite values.*row 3"):
        quantile_rewards(torch.zeros(4), torch.tensor(refs))
    with pytest.raises(ValueError, match=r"ref_rewards has non-finite values.*row 3"):
        quantile_table(np.zeros(4), refs)
    ragged = pa.array([[0.0], [1.0, 2.0], [bad, 0.0], [3.0]])
    with pytest.raises(ValueError, match=r"ref_rewards has non-finite values.*row 2"):
        quantile_table(np.zeros(4), ragged)


def test_empty_reference_set_is_refused():
    with pytest.raises(ValueError, match=r"M = 0"):
        quantile_rewards(torch.zeros(3), torch.zeros(3, 0))
    with pytest.raises(ValueError, match=r"no reference rewards, first at row 0"):
        quantile_table(np.zeros(3), np.zeros((3, 0)))
    with pytest.raises(ValueError, match=r"1 row\(s\) have no reference rewards, first at row 1"):
        quantile_table(np.zeros(3), pa.array([[1.0], [], [2.0]]))


def test_shape_mismatches_are_refused():
    with pytest.raises(ValueError, match=r"expected rewards \[B\] and ref_rewards \[B, M\]"):
        quantile_rewards(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"expected rewards \[B\] and ref_rewards \[B, M\]"):
        quantile_rewards(torch.zeros(3, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"expected rewards \[B\] and ref_rewards \[B, M\]"):
        quantile_rewards(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="rewards has 3 rows but ref_rewards has 4"):
        quantile_table(np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="rewards must be 1-D"):
        quantile_table(np.zeros((3, 1)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="must be 2-D"):
        quantile_table(np.zeros(3), np.zeros((3, 2, 2)))


def test_arrow_columns_that_are_not_float_lists_or_have_nulls_are_refused():
    with pytest.raises(ValueError, match="must be a list of floats"):
        quantile_table(np.zeros(2), pa.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"1 null row\(s\)"):
        quantile_table(np.zeros(2), pa.array([[1.0], None]))


def test_unknown_tie_policy_lists_the_choices():
    with pytest.raises(ValueError, match="unknown tie policy 'average'; choose one of le, lt, mid"):
        quantile_rewards(torch.zeros(1), torch.zeros(1, 1), ties="average")
    with pytest.raises(ValueError, match="unknown tie policy 'average'; choose one of le, lt, mid"):
        quantile_table(np.zeros(1), np.zeros((1, 1)), ties="average")


def test_error_messages_in_full():
    with pytest.raises(ValueError) as err:
        quantile_table(np.array([0.0, np.nan, np.inf]), np.zeros((3, 1)))
    assert str(err.value) == ("rewards has non-finite values (NaN or inf) in 2 row(s), first at row 1; "
                              "re-score those completions or drop them before building quantiles")
    refs = torch.zeros(3, 2)
    refs[1, 0] = refs[1, 1] = refs[2, 1] = float("nan")  # two bad values in row 1 count as one row
    with pytest.raises(ValueError) as err:
        quantile_rewards(torch.zeros(3), refs)
    assert str(err.value).startswith("ref_rewards has non-finite values (NaN or inf) in 2 row(s), first at row 1; ")
    with pytest.raises(ValueError) as err:
        quantile_rewards(torch.zeros(3), torch.zeros(3, 0))
    assert str(err.value) == "ref_rewards has no reference completions (M = 0); sample at least one per prompt"


# --- inputs that are not float arrays -----------------------------------------------------------------


def test_integer_rewards_and_reference_rewards_are_taken_as_numbers():
    refs = [[1, 2, 3], [0, 0, 5]]
    expected = [2 / 3, 2 / 3]
    assert quantile_table(np.array([2, 0]), np.array(refs)).tolist() == expected
    assert quantile_table([2, 0], refs).tolist() == expected
    assert quantile_table(np.array([2, 0]), pa.array(refs, type=pa.list_(pa.int64()))).tolist() == expected
    assert quantile_table(np.array([2, 0]), pa.array([[1, 2, 3], [0, 5]])).tolist() == [2 / 3, 1 / 2]  # ragged ints


def test_decimal_arrow_reference_rewards_are_converted_to_floats():
    from decimal import Decimal

    refs = pa.array([[Decimal("0.5"), Decimal("1.5")], [Decimal("2.0")]], type=pa.list_(pa.decimal128(4, 2)))
    assert quantile_table(np.array([1.0, 3.0]), refs).tolist() == [0.5, 1.0]


def test_missing_values_inside_rows_are_refused_as_non_finite_not_crashed_on():
    """None inside a list (an unscored reference completion) becomes NaN and gets the usual error."""
    with pytest.raises(ValueError, match=r"ref_rewards has non-finite values \(NaN or inf\), first in row 1"):
        quantile_table(np.zeros(2), pa.array([[1.0, 2.0], [3.0, None]]))
    with pytest.raises(ValueError, match=r"ref_rewards has non-finite values \(NaN or inf\), first in row 0"):
        quantile_table(np.zeros(2), [[1.0, None], [3.0, 4.0]])
    with pytest.raises(ValueError, match=r"rewards has non-finite values \(NaN or inf\) in 1 row\(s\), first at row 1"):
        quantile_table([1.0, None], np.zeros((2, 2)))


def test_clamp_moves_a_cpu_reference_count_to_the_quantiles_device():
    """The trainer's quantiles live on the policy's device; a per-row count may come from the CPU
    table. The meta device stands in for a GPU here (tests/gpu covers cuda)."""
    q = torch.zeros(3, device="meta")
    out = clamp_quantiles(q, torch.tensor([2.0, 4.0, 8.0]))
    assert out.device.type == "meta" and out.shape == (3,)
