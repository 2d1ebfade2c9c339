import json
import subprocess
import sys

import pytest

from qrpo.errors import InputError
from qrpo.sandbox import Sandbox, SandboxLimits, TestCase, parse_case, parse_entry_point, same_value
from qrpo.sandbox import runner

TWO_SUM = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""
CASES = [{"input": "nums = [2, 7, 11, 15], target = 9", "output": "[0, 1]"},
         {"input": "nums = [3, 2, 4], target = 6", "output": "[1, 2]"},
         {"input": "nums = [3, 3], target = 6", "output": "[0, 1]"}]


def test_judge_compares_values_strictly_in_the_parent():
    assert same_value(True, True) and not same_value(1, True) and not same_value(True, 1)
    assert same_value(0.1 + 0.2, 0.3) and same_value(2, 2.0) and not same_value(2, 3)
    assert same_value((1, 2), [1, 2]) and not same_value([1, 2], [2, 1]) and not same_value("1", 1)
    assert same_value({"a": [1]}, {"a": (1,)}) and not same_value({"a": 1}, {"a": 1, "b": 2})
    assert same_value({1, 2}, {2, 1}) and not same_value(None, 0) and not same_value([1], [1, 1])


def test_entry_point_and_case_validation_name_the_problem():
    assert parse_entry_point("Solution().twoSum") == "Solution().twoSum"
    assert parse_entry_point("Solution.twoSum") == "Solution.twoSum" and parse_entry_point("f") == "f"
    for bad in ("", "a.b.c", "Solution().", "1abc", "os.system('x')"):
        with pytest.raises(InputError, match="entry point"):
            parse_entry_point(bad)
    with pytest.raises(InputError, match="t.jsonl:3: input"):
        parse_case({"input": "1, 2", "output": "3"}, "t.jsonl:3")
    with pytest.raises(InputError, match="not a Python literal"):
        parse_case({"input": "a = 1", "output": "__import__('os')"}, "t")
    with pytest.raises(InputError, match="two strings"):
        parse_case({"input": "a = 1"}, "t")


def test_all_three_entry_point_forms_and_the_leetcode_preamble_work():
    sandbox = Sandbox(SandboxLimits(wall_seconds=5))
    cases = [parse_case(c, "t") for c in CASES]
    for entry in ("Solution().twoSum", "Solution.twoSum"):
        assert sandbox.run(TWO_SUM, entry, cases).passed == 3
    program = "def rev(head: Optional[ListNode]) -> Optional[ListNode]:\n    return list_node(reversed(to_list(head)))\n" \
              "def to_list(h):\n    out = []\n    while h: out.append(h.val); h = h.next\n    return out\n"
    result = sandbox.run(program, "rev", [TestCase("head = list_node([1, 2, 3])", "[3, 2, 1]"), TestCase("head = [4, 5]", "[5, 4]")])
    assert result.passed == 2, result.cases  # a list passed for an Optional[ListNode] parameter becomes a linked list
    tree = "class Solution:\n    def depth(self, root: Optional[TreeNode]) -> int:\n" \
           "        return 0 if root is None else 1 + max(self.depth(root.left), self.depth(root.right))\n" \
           "    def mirror(self, root: Optional[TreeNode]) -> Optional[TreeNode]:\n" \
           "        if root: root.left, root.right = self.mirror(root.right), self.mirror(root.left)\n        return root\n"
    assert sandbox.run(tree, "Solution().depth", [TestCase("root = [3, 9, 20, None, None, 15, 7]", "3")]).passed == 1
    result = sandbox.run(tree, "Solution().mirror", [TestCase("root = [1, 2, 3, None, 4]", "[1, 3, 2, None, None, 4]")])
    assert result.passed == 1, result.cases


def test_partial_credit_is_per_case_and_errors_in_one_case_do_not_leak_into_others():
    program = "def f(x):\n    if x == 2:\n        raise ValueError('boom')\n    if x == 3:\n        import os; os._exit(0)\n    return x * x\n"
    result = Sandbox(SandboxLimits(wall_seconds=5)).run(program, "f", [TestCase(f"x = {x}", str(x * x)) for x in range(5)])
    assert [c.status for c in result.cases] == ["passed", "passed", "error", "no_result", "passed"]
    assert result.fraction == 3 / 5 and "boom" in result.cases[2].error


def test_a_syntax_error_or_missing_entry_point_scores_zero_with_the_reason():
    sandbox = Sandbox(SandboxLimits(wall_seconds=5))
    assert "SyntaxError" in sandbox.run("def f(:\n", "f", [TestCase("", "1")]).cases[0].error
    assert "KeyError" in sandbox.run("def g():\n    return 1\n", "f", [TestCase("", "1")]).cases[0].error


def test_without_namespaces_the_sandbox_refuses_unless_the_user_opts_out(monkeypatch):
    runner.namespaces_problem.cache_clear()
    monkeypatch.setattr(runner, "bwrap_path", lambda: "/bin/false")  # a bubblewrap that cannot start anything
    try:
        with pytest.raises(InputError, match="allow_unsandboxed"):
            Sandbox()
        sandbox = Sandbox(SandboxLimits(wall_seconds=5), allow_unsandboxed=True)
        assert not sandbox.isolated
        assert sandbox.run(TWO_SUM, "Solution().twoSum", [parse_case(c, "t") for c in CASES]).passed == 3
    finally:
        runner.namespaces_problem.cache_clear()


def _cli(tmp_path, program, entry, lines, *extra):
    (tmp_path / "p.py").write_text(program)
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    return subprocess.run([sys.executable, "-m", "qrpo.sandbox", "--program", str(tmp_path / "p.py"), "--entry-point", entry,
                           "--tests", str(tmp_path / "t.jsonl"), *extra], capture_output=True, text=True, timeout=120)


def test_cli_prints_one_json_object_last_and_exits_zero_for_a_failing_program(tmp_path):
    proc = _cli(tmp_path, TWO_SUM, "Solution.twoSum", [json.dumps(c) for c in CASES])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["passed"], summary["total"], summary["isolated"]) == (3, 3, True)
    wrong = TWO_SUM.replace("return [seen[target - x], i]", "return [i, seen[target - x]]")
    proc = _cli(tmp_path, wrong, "Solution().twoSum", [json.dumps(c) for c in CASES])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and (summary["passed"], summary["total"]) == (0, 3)
    assert [c["status"] for c in summary["cases"]] == ["wrong_answer"] * 3


def test_cli_bad_input_is_one_error_line_and_nonzero_exit(tmp_path):
    proc = _cli(tmp_path, TWO_SUM, "Solution.twoSum", [json.dumps(CASES[0]), "{not json"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "t.jsonl:2 is not valid JSON" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "qrpo.sandbox", "--program", str(tmp_path / "missing.py"), "--entry-point", "f",
                           "--tests", str(tmp_path / "t.jsonl")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "missing.py" in proc.stderr and "does not exist" in proc.stderr
