"""`make mutate`: mutation testing (mutmut) of the code whose numbers users trust, scored per unit.

    .venv/bin/python tests/mutation_score.py run                 # every unit (mutmut run, then the table)
    .venv/bin/python tests/mutation_score.py run losses optimum  # some units
    .venv/bin/python tests/mutation_score.py report              # the table of the last run (mutants/)

mutmut copies the project into `mutants/`, plants one small bug (a mutant) at a time in the functions a
unit names, and runs the tests that cover that function (the files in `[tool.mutmut]` of pyproject.toml,
slow and gpu tests excluded). A mutant is killed when a test fails or it hangs past mutmut's timeout
(a planted infinite loop, counted as killed); it survives when every covering test passes, or when no
test covers it. Score = killed / all mutants of the unit. The goal is >= 90% per unit; docs/testing.md
records the scores and why each remaining survivor is equivalent (no test could tell it apart).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]
M = "ǁ"  # mutmut's separator in a method's key: xǁClassǁmethod

# unit -> mutmut key patterns (fnmatch) of the functions it covers
UNITS: dict[str, list[str]] = {
    "quantiles": ["qrpo.objective.quantiles.*"],
    "transforms": ["qrpo.objective.transforms.*"],
    "losses": ["qrpo.objective.losses.*"],
    "algorithms": ["qrpo.objective.algorithms.*"],
    "optimum": ["qrpo.objective.optimum.*"],
    "training data (regimes)": ["qrpo.data.regimes.*"],
    "trainer batching": ["qrpo.training.batching.*"],
    "evaluation metrics": ["qrpo.evaluation.metrics.*"],
    "evaluation selection": ["qrpo.evaluation.selection.*"],
    "sampler seeding": ["qrpo.sampling.base.x_row_seed*", "qrpo.sampling.gumbel.x_gumbel*", "qrpo.sampling.gumbel.x_row_generators*",
                        f"qrpo.sampling.gumbel.x{M}GumbelNoise{M}*"],
}
GOAL = 0.90


def _matches(key: str, patterns: list[str]) -> bool:
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), key) for p in patterns)


def results() -> dict[str, str]:
    """mutant key -> status, from the last run."""
    out = subprocess.run(MUTMUT + ["results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)


def table(units: list[str]) -> tuple[str, bool]:
    status = results()
    lines = ["| unit | mutants | killed | timeout | survived | no tests | score |", "|---|---:|---:|---:|---:|---:|---:|"]
    ok = True
    for unit in units:
        mine = {k: v for k, v in status.items() if _matches(k.rsplit("__mutmut_", 1)[0], [p.rstrip("*") + "*" for p in UNITS[unit]])}
        counts = {s: sum(v == s for v in mine.values()) for s in ("killed", "timeout", "survived", "no tests", "not checked")}
        other = len(mine) - sum(counts.values())  # suspicious, segfault, ...: not killed by a test
        total = len(mine)
        score = (counts["killed"] + counts["timeout"]) / total if total else 0.0
        ok &= total > 0 and score >= GOAL and not counts["not checked"]
        unchecked = f" ({counts['not checked']} not run)" if counts["not checked"] else ""
        lines.append(f"| {unit} | {total} | {counts['killed']} | {counts['timeout']} | {counts['survived'] + other} | "
                     f"{counts['no tests']} | {score:.1%}{unchecked} |")
    return "\n".join(lines), ok


def main(argv: list[str]) -> int:
    command, names = (argv[0] if argv else "run"), argv[1:]
    units = [u for u in UNITS if not names or any(n.lower() in u for n in names)]
    if not units:
        print(f"no unit matches {names}; units: {', '.join(UNITS)}", file=sys.stderr)
        return 2
    if command == "run":
        patterns = [p for u in units for p in UNITS[u]]
        # one OpenMP thread: mutmut forks each mutant's run from a process that has used torch, and a
        # forked child of a multi-threaded OpenMP runtime crashes (counted as a survivor, not a kill)
        run = subprocess.run(MUTMUT + ["run", *patterns], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if run.returncode:
            return run.returncode
    elif command != "report":
        print(f"unknown command {command!r}: run or report", file=sys.stderr)
        return 2
    text, ok = table(units)
    print(text)
    print(f"goal: >= {GOAL:.0%} killed in every unit: {'met' if ok else 'NOT met'}; survivors: `mutmut results`, one: `mutmut show KEY`")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
