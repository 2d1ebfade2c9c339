"""The code reward (`kind: code_tests`): the fraction of a problem's unit tests that the completion passes.

The paper's second task (LeetCode; reward = fraction of tests passed). Each sample's prompt row
carries LeetCodeDataset's `entry_point` ("Solution().method" or a function name) and
`input_output` (a list of {"input": "a = 1, b = 2", "output": "3"}, or that list as a JSON string),
kept in the prompt table by `dataset.keep_columns`. The program is extracted from the completion
(`extract_code`), prefixed with the usual LeetCode imports, and every test case runs in its own
sandboxed process (qrpo/sandbox); the parent compares returned values with the expected ones.

Code extraction rule (explicit, so that a reader can predict the reward of any completion):
  1. fenced blocks are ``` ... ``` pairs; blocks tagged `python`, `py` or `python3` (any case) are
     preferred, and untagged or otherwise tagged blocks are used only when no Python block exists;
  2. of those, the LAST block is taken (`code_block: last`, the answer after any drafts) or the
     FIRST (`code_block: first`);
  3. an opening fence never closed (a completion cut by max_new_tokens) runs to the end of the text;
  4. with no fence at all, the whole completion is the program.
Then `IMPORTS` (typing's List/Optional/..., collections, heapq, bisect, math, itertools, functools,
...) is prepended, as LeetCodeDataset's prompt preamble provides them; the sandbox also defines
ListNode / TreeNode and list_node / tree_node.
"""

from __future__ import annotations

import json
import re

import numpy as np

from qrpo.errors import InputError
from qrpo.rewards.base import RewardModel
from qrpo.sandbox.harness import IMPORTS
from qrpo.sandbox.runner import Sandbox, SandboxLimits, parse_case, parse_entry_point

CODE_BLOCKS = ("last", "first")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_PYTHON_TAGS = {"python", "py", "python3"}


def extract_code(completion: str, block: str = "last") -> str:
    """The program in a completion, by the rule in the module docstring."""
    if block not in CODE_BLOCKS:
        raise InputError(f"reward.code_block={block!r} is not one of {', '.join(CODE_BLOCKS)}")
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(completion)]
    if not blocks:
        return completion
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    chosen = python or [body for _, body in blocks]
    return chosen[-1] if block == "last" else chosen[0]


def program_from_completion(completion: str, block: str = "last") -> str:
    """The extracted program with the LeetCode imports in front."""
    return IMPORTS + "\n" + extract_code(completion, block)


def _test_cases(row: dict, max_tests: int):
    where = f"prompt {row.get('prompt_id', '?')!r}"
    missing = [c for c in ("entry_point", "input_output") if row.get(c) in (None, "")]
    if missing:
        raise InputError(f"reward.kind=code_tests needs the prompt columns entry_point and input_output; {where} lacks "
                         f"{', '.join(missing)}: add them to dataset.keep_columns (see conf/dataset/code_demo.yaml)")
    tests = row["input_output"]
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: input_output is not JSON ({err.msg})") from None
    if not isinstance(tests, list) or not tests:
        raise InputError(f"{where}: input_output must be a non-empty list of {{\"input\", \"output\"}} cases")
    tests = tests[:max_tests] if max_tests else tests
    return parse_entry_point(row["entry_point"]), [parse_case(t, f"{where} test {i}") for i, t in enumerate(tests)]


class CodeTestsReward(RewardModel):
    """Fraction of the prompt row's test cases passed by the completion's program, in [0, 1]."""

    kind = "code_tests"
    yields_pass_rates = True

    def __init__(self, sandbox: Sandbox, code_block: str = "last", max_tests: int = 0):
        if code_block not in CODE_BLOCKS:
            raise InputError(f"reward.code_block={code_block!r} is not one of {', '.join(CODE_BLOCKS)}")
        self.sandbox, self.code_block, self.max_tests = sandbox, code_block, max_tests

    @classmethod
    def from_config(cls, cfg) -> "CodeTestsReward":
        limits = SandboxLimits(wall_seconds=cfg.wall_seconds, cpu_seconds=cfg.cpu_seconds, memory_mb=cfg.memory_mb)
        sandbox = Sandbox(limits, max_workers=cfg.max_workers or None, allow_unsandboxed=cfg.allow_unsandboxed)
        return cls(sandbox, cfg.code_block, cfg.max_tests)

    def score(self, prompts, completions):
        raise InputError("reward.kind=code_tests scores against each prompt's tests: call score_rows / score_samples "
                         "with prompt rows that carry entry_point and input_output")

    def score_rows(self, rows, completions):
        parsed: dict = {}
        jobs = []
        for row, completion in zip(rows, completions):
            key = row.get("prompt_id", id(row))
            if key not in parsed:
                parsed[key] = _test_cases(row, self.max_tests)
            entry_point, cases = parsed[key]
            jobs.append((program_from_completion(completion, self.code_block), entry_point, cases))
        results = self.sandbox.run_many(jobs, progress=True)
        return np.array([r.fraction for r in results], dtype=np.float64)
