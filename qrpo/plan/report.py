"""The plan as text: one table of steps (tokens, device-hours, wall time, disk), and for a sweep what reuse saves."""

from __future__ import annotations

from collections import OrderedDict

from qrpo.plan.cost import JobPlan, Priced, SweepPlan, size, totals


def count(x: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def params(x: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.4g}{unit}"
    return f"{x:.0f}"


def hours(h: float) -> str:
    if h == 0:
        return "0"
    if h >= 100:
        return f"{h:,.0f}"
    if h >= 1:
        return f"{h:.1f}"
    return f"{h:.2g}"


def wall(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        return "<1 s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if minutes < 10 else f"{minutes} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _work(p: Priced) -> str:
    if p.step.work == "none":
        return "-"
    if p.mfu is None:
        return f"{p.step.work} (measured)"
    return f"{p.step.work} @ {100 * p.mfu:.1f}%"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def _header(job: JobPlan) -> list[str]:
    dev, plan, policy, reward = job.device, job.plan, job.policy, job.reward
    lines = [f"  policy   {params(policy.params)} parameters, {params(policy.flop_params)} multiply each token ({policy.source})"]
    if reward is None:
        lines.append("  reward   not a model on the device (not priced)")
    else:
        lines.append(f"  reward   {params(reward.params)} parameters, {params(reward.flop_params)} multiply each token ({reward.source})")
    lines += [("  data     " if i == 0 else "           ") + note for i, note in enumerate(job.shapes.notes)]
    spread = (f"each step over all {plan.num_gpus}" if plan.spread == "cluster" else
              f"each step on the devices its config gives it, at most {plan.num_gpus // plan.nodes} (one node)")
    lines.append(f"  cluster  {plan.num_gpus} x {dev.key} ({dev.name}) in {plan.nodes} node(s): dense peak bf16 {dev.peak['bf16'] / 1e12:.4g} / "
                 f"fp32 {dev.peak['fp32'] / 1e12:.4g} TFLOP/s per device; {spread} (plan.spread={plan.spread})")
    return lines


def _unit(job: JobPlan) -> str:
    return "CPU-h" if job.device.key == "cpu" else "GPU-h"


def steps_table(priced: list[tuple[Priced, int]], unit: str, jobs: int = 1) -> list[str]:
    """One row per step; in a sweep, steps of one name are summed and `runs` says how often they run."""
    groups: OrderedDict[str, list[tuple[Priced, int]]] = OrderedDict()
    for p, users in priced:
        groups.setdefault(p.step.name, []).append((p, users))
    head = ["step", "detail", "rows", "tokens", "prec", "work @ MFU", "tok/s/device", unit, "wall", "disk"]
    if jobs > 1:
        head.insert(1, "runs")
    rows = [head]
    for name, members in groups.items():
        first = members[0][0]
        ps = [p for p, _ in members]
        tps = [p.tokens_per_s for p in ps if p.tokens_per_s]
        row = [name, first.step.detail if len(members) == 1 else "", f"{sum(p.step.rows for p in ps):,}", count(sum(p.step.tokens for p in ps)),
               first.step.precision, _work(first), f"{sum(tps) / len(tps):,.0f}" if tps else "-",
               hours(sum(p.device_hours for p in ps)), wall(sum(p.wall_s for p in ps)), size(sum(p.step.disk for p in ps))]
        if jobs > 1:
            users = sum(n for _, n in members)
            row.insert(1, f"{len(members)} for {users} job(s)" if users != len(members) else f"{len(members)}")
        rows.append(row)
    total = totals([p for p, _ in priced])
    last = ["total", "", "", "", "", "", "", hours(total.device_hours), wall(total.wall_s), size(total.disk)]
    if jobs > 1:
        last.insert(1, "")
    rows.append(last)
    right = {2, 3, 6, 7, 8, 9} if jobs == 1 else {3, 4, 7, 8, 9, 10}
    return _table(rows, right)


def format_plan(sweep: SweepPlan) -> str:
    job = sweep.jobs[0]
    unit = _unit(job)
    if len(sweep.jobs) == 1:
        lines = [f"qrpo-plan: {job.method} on {job.label or 'the composed config'}"] + _header(job) + [""]
        lines += steps_table([(p, 1) for p in sweep.without_reuse()], unit)
    else:
        lines = [f"qrpo-plan: a sweep of {len(sweep.jobs)} jobs, train prompts sampled and scored once at K+M = {sweep.largest}"]
        lines += _header(job) + ["", "  each job as a run of its own (its own K+M, nothing shared):"]
        rows = [["job", "method", unit, "wall"]]
        for alone in sweep.alone:
            t = totals([p for p in (_price_job(alone))])
            rows.append([alone.label or "(no overrides)", alone.method, hours(t.device_hours), wall(t.wall_s)])
        lines += _table(rows, {2, 3}) + ["", "  the sweep as it runs (each shared artifact once: samples, scores, reference log-probs):"]
        shared = sweep.with_reuse()
        lines += steps_table(shared, unit, len(sweep.jobs))
        before, after = totals(sweep.without_reuse()), totals([p for p, _ in shared])
        saved = before.device_hours - after.device_hours
        lines += ["", f"  without reuse {hours(before.device_hours)} {unit} ({wall(before.wall_s)} wall, {size(before.disk)} on disk), "
                      f"with reuse {hours(after.device_hours)} {unit} ({wall(after.wall_s)} wall, {size(after.disk)}): "
                      f"reuse saves {hours(saved)} {unit} ({100 * saved / before.device_hours if before.device_hours else 0:.0f}%)"]
    notes = list(dict.fromkeys(note for j in sweep.jobs for note in j.notes))
    if notes:
        lines += [""] + [f"  note: {note}" for note in notes]
    lines += ["", "  FLOPs = 2N per token forward (sampling: generated + each prompt once), 6N training (8N checkpointed, 4N LoRA); "
                  "time = FLOPs / (peak x MFU), + weight loads; sources: qrpo/plan/throughput.yaml"]
    return "\n".join(lines)


def _price_job(job: JobPlan) -> list[Priced]:
    from qrpo.plan.cost import price

    return [price(step, job.device) for step in job.steps]
