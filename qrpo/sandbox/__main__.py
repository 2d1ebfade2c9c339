"""Check a solution against test cases in the sandbox.

    python -m qrpo.sandbox --program solution.py --entry-point Solution.twoSum --tests tests.jsonl

The tests file is JSON Lines in LeetCodeDataset's `input_output` form, one case a line:
{"input": "nums = [2, 7], target = 9", "output": "[0, 1]"} (keyword arguments as Python source, the
expected return value as a Python literal). Prints per-case lines on stderr and ONE JSON object
last on stdout: {"passed": P, "total": T, "fraction": P/T, "cases": [...]}. Exit status 0 whenever
the program could be scored (a failing program is a score); 2 with one error line for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qrpo.errors import InputError
from qrpo.sandbox.runner import Sandbox, SandboxLimits, parse_case, parse_entry_point


def read_tests(path: Path) -> list:
    if not path.is_file():
        raise InputError(f"--tests {str(path)!r} does not exist; give a JSON Lines file of {{\"input\": ..., \"output\": ...}} cases")
    cases = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{line_no} is not valid JSON ({err.msg}); one test case per line") from None
        cases.append(parse_case(case, f"{path}:{line_no}"))
    if not cases:
        raise InputError(f"{path} holds no test cases")
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qrpo.sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", required=True, type=Path, help="Python file with the solution")
    parser.add_argument("--entry-point", required=True, help="function name, Solution.method or Solution().method")
    parser.add_argument("--tests", required=True, type=Path, help="JSON Lines test cases")
    parser.add_argument("--wall-seconds", type=float, default=SandboxLimits.wall_seconds)
    parser.add_argument("--cpu-seconds", type=int, default=SandboxLimits.cpu_seconds)
    parser.add_argument("--memory-mb", type=int, default=SandboxLimits.memory_mb)
    parser.add_argument("--workers", type=int, default=None, help="parallel cases (default: one per core)")
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="where namespaces are not permitted, run WITHOUT isolation (trusted code only)")
    args = parser.parse_args(argv)
    try:
        if not args.program.is_file():
            raise InputError(f"--program {str(args.program)!r} does not exist")
        program = args.program.read_text()
        entry_point = parse_entry_point(args.entry_point)
        cases = read_tests(args.tests)
        limits = SandboxLimits(wall_seconds=args.wall_seconds, cpu_seconds=args.cpu_seconds, memory_mb=args.memory_mb)
        sandbox = Sandbox(limits, max_workers=args.workers, allow_unsandboxed=args.allow_unsandboxed)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = sandbox.run(program, entry_point, cases)
    for i, case in enumerate(result.cases, 1):
        print(f"case {i}: {case.status}" + (f" ({case.error})" if case.error else ""), file=sys.stderr)
    summary = result.to_json()
    summary["isolated"] = sandbox.isolated
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
