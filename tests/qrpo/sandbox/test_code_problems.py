"""The shipped code task: schema, determinism, and every reference solution checked in the sandbox."""

import importlib.util
import json
from pathlib import Path

from qrpo.sandbox import Sandbox, SandboxLimits, parse_case, parse_entry_point

ROOT = Path(__file__).resolve().parents[3]
PROBLEMS = ROOT / "data" / "code" / "problems.jsonl"
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


def _rows():
    return [json.loads(line) for line in PROBLEMS.read_text().splitlines()]


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


def test_the_generator_reproduces_the_shipped_file():
    spec = importlib.util.spec_from_file_location("make_problems", ROOT / "data" / "code" / "make_problems.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_rows() == _rows()


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
