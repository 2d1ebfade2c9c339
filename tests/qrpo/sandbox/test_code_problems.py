"""The shipped code task (both tiers): schema, determinism, and every reference solution checked in the sandbox."""

import importlib.util
import json
from pathlib import Path

from qrpo.sandbox import Sandbox, SandboxLimits, parse_case, parse_entry_point

ROOT = Path(__file__).resolve().parents[3]
PROBLEMS = ROOT / "data" / "code" / "problems.jsonl"
EASY = ROOT / "data" / "code" / "problems_easy.jsonl"
COLUMNS = {"task_id", "question_id", "difficulty", "problem_description", "starter_code", "entry_point",
           "input_output", "completion", "query", "split"}

# A generated wrong variant of each reference: same code, but the answer is nudged so it must differ.
MUTATION = """

def _nudge(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "?"
    if isinstance(v, list):
        return v[:-1] if v else [0]
    return 0

_reference = getattr(Solution, "{method}")
setattr(Solution, "{method}", lambda self, *a, **k: _nudge(_reference(self, *a, **k)))
"""
# The same nudge for the easy tier's plain functions (entry_point = the function's name).
FUNCTION_MUTATION = MUTATION.split("_reference =")[0] + """
_reference = {name}
{name} = lambda *a, **k: _nudge(_reference(*a, **k))
"""


def _rows(path=PROBLEMS):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _generator():
    spec = importlib.util.spec_from_file_location("make_problems", ROOT / "data" / "code" / "make_problems.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_problems_follow_the_leetcode_dataset_schema_with_enough_tests_and_both_splits():
    rows = _rows()
    assert len(rows) >= 40 and len({r["task_id"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) == COLUMNS, row["task_id"]
        assert len(row["input_output"]) >= 5, row["task_id"]
        assert row["entry_point"].startswith("Solution().") and parse_entry_point(row["entry_point"])
        assert row["starter_code"] in row["query"].replace("```python\n", "") or row["starter_code"].rstrip() in row["query"]
        assert row["split"] in ("train", "eval") and row["difficulty"] in ("Easy", "Medium", "Hard")
        for i, case in enumerate(row["input_output"]):
            parse_case(case, f"{row['task_id']}[{i}]")
    splits = [r["split"] for r in rows]
    assert splits.count("eval") >= 8 and splits.count("train") >= 30
    assert {r["difficulty"] for r in rows if r["split"] == "eval"} == {"Easy", "Medium", "Hard"}


def test_the_easy_tier_follows_the_same_schema_with_plain_function_entry_points_in_both_splits():
    rows = _rows(EASY)
    assert len(rows) >= 30 and len({r["task_id"] for r in rows}) == len(rows)
    assert not {r["task_id"] for r in rows} & {r["task_id"] for r in _rows()}
    assert not {r["question_id"] for r in rows} & {r["question_id"] for r in _rows()}
    for row in rows:
        assert set(row) == COLUMNS, row["task_id"]
        assert row["difficulty"] == "Easy" and row["split"] in ("train", "eval")
        assert len(row["input_output"]) >= 5, row["task_id"]
        assert row["entry_point"].isidentifier() and parse_entry_point(row["entry_point"]) == row["entry_point"]
        assert row["starter_code"].startswith(f"def {row['entry_point']}(") and row["starter_code"].rstrip() in row["query"]
        assert row["completion"].startswith(row["starter_code"].rstrip())
        for i, case in enumerate(row["input_output"]):
            parse_case(case, f"{row['task_id']}[{i}]")
    splits = [r["split"] for r in rows]
    assert splits.count("eval") >= 8 and splits.count("train") >= 16


def test_the_generator_reproduces_both_shipped_files_byte_for_byte():
    module = _generator()
    assert module.build_rows() == _rows()
    assert module.render(module.build_rows()) == PROBLEMS.read_text()
    assert module.render(module.build_easy_rows()) == EASY.read_text()


def test_every_reference_scores_one_and_a_mutated_variant_of_each_scores_less():
    rows = _rows()
    jobs = []
    for row in rows:
        cases = [parse_case(c, row["task_id"]) for c in row["input_output"]]
        method = row["entry_point"].split(".", 1)[1]
        jobs.append((row["completion"], row["entry_point"], cases))
        # the nudge changes every answer, so two cases are enough to show the mutant loses credit
        jobs.append((row["completion"] + MUTATION.format(method=method), row["entry_point"], cases[:2]))
    results = Sandbox(SandboxLimits(wall_seconds=10, cpu_seconds=10)).run_many(jobs)
    for row, reference, mutant in zip(rows, results[0::2], results[1::2]):
        assert reference.fraction == 1.0, (row["task_id"], [c for c in reference.cases if not c.passed])
        assert mutant.fraction < 1.0, row["task_id"]


def test_every_easy_reference_scores_one_and_a_mutated_variant_of_each_scores_nothing():
    rows = _rows(EASY)
    jobs = []
    for row in rows:
        cases = [parse_case(c, row["task_id"]) for c in row["input_output"]]
        jobs.append((row["completion"], row["entry_point"], cases))
        jobs.append((row["completion"] + FUNCTION_MUTATION.format(name=row["entry_point"]), row["entry_point"], cases))
    results = Sandbox(SandboxLimits(wall_seconds=10, cpu_seconds=10)).run_many(jobs)
    for row, reference, mutant in zip(rows, results[0::2], results[1::2]):
        assert reference.fraction == 1.0, (row["task_id"], [c for c in reference.cases if not c.passed])
        assert mutant.fraction == 0.0, row["task_id"]  # the nudge changes every answer
