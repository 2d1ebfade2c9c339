"""Enumerable toy problem: QRPO (and DPO) trained with the library's losses reach the exact optimum.

Run:  python -m qrpo.verification.toy            (table)
      python -m qrpo.verification.toy --json     (one JSON object on stdout)

The problem, the exact target, the midpoint quantile, what estimated quantiles do to each transform and the
figures it prints: docs/mathematics.md, "The exact check"."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import torch

from qrpo.objective.losses import dpo_loss, qrpo_loss, qrpo_loss_from_quantiles
from qrpo.objective.transforms import Transform, get_transform

# beta per built-in transform: pi* far from pi_ref (KL(pi_ref || pi*) >~ 0.5 nats), small log_partition_gap.
DEFAULT_BETAS = {
    "identity": 0.1,
    "log": 0.5,
    "square": 0.1,
    "sqrt": 0.1,
    "normal_icdf": 0.7,
    "scaled_normal_icdf": 0.14,
}
SCALED_NORMAL_PARAMS = {"mu": 0.5, "sigma": 0.2}
DEFAULT_MS = (1, 3, 10, 50)


@dataclass
class Problem:
    tokens: torch.Tensor  # [N, L] every completion, as token ids
    nodes: torch.Tensor  # [N, L] index of the prefix node that emits each token
    ref_logits: torch.Tensor  # [P, K, V] pi_ref's logits per prompt and prefix node
    ref_logps: torch.Tensor  # [P, N] log pi_ref(y|x)
    rewards: torch.Tensor  # [P, N] r(x, y), continuous


def make_problem(prompts: int, vocab: int, length: int, ref_scale: float, generator: torch.Generator) -> Problem:
    """Random pi_ref and rewards; completions enumerated in lexicographic order."""
    if prompts < 1 or vocab < 2 or length < 1:
        raise ValueError(f"need prompts >= 1, vocab >= 2, length >= 1; got {prompts}, {vocab}, {length}")
    n = vocab**length
    ids = torch.arange(n)
    # token at position d of completion i: digit d (most significant first) of i in base V
    tokens = torch.stack([(ids // vocab ** (length - 1 - d)) % vocab for d in range(length)], dim=1)  # [N, L]
    # prefix node of position d: nodes are numbered depth by depth (root 0, then V nodes, then V^2 ...),
    # node of prefix (y_0..y_{d-1}) = (V^d - 1)/(V - 1) + that prefix read as a base-V number
    nodes = torch.stack(
        [(vocab**d - 1) // (vocab - 1) + ids // vocab ** (length - d) for d in range(length)], dim=1
    )  # [N, L]
    num_nodes = (vocab**length - 1) // (vocab - 1)  # K
    ref_logits = ref_scale * torch.randn(prompts, num_nodes, vocab, generator=generator, dtype=torch.float64)
    rewards = torch.randn(prompts, n, generator=generator, dtype=torch.float64)  # [P, N]
    problem = Problem(tokens, nodes, ref_logits, torch.empty(0), rewards)
    problem.ref_logps = sequence_logps(problem, ref_logits)
    return problem


def sequence_logps(problem: Problem, logits: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) of every completion: logits [..., P, K, V] -> [..., P, N]."""
    token_logps = torch.log_softmax(logits, dim=-1)  # [..., P, K, V]
    return token_logps[..., problem.nodes, problem.tokens].sum(-1)  # [..., P, N, L] -> [..., P, N]


def midpoint_quantiles(ref_logps: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """q(y) = F(r(y)-) + p_ref(y)/2 under pi_ref, per prompt: [P, N], [P, N] -> [P, N] in (0, 1)."""
    p = ref_logps.exp()  # [P, N]
    order = rewards.argsort(dim=1)  # [P, N] completions from lowest to highest reward
    p_sorted = p.gather(1, order)
    below = p_sorted.cumsum(1) - p_sorted  # [P, N] F(r-) in sorted order (rewards are distinct)
    q_sorted = below + p_sorted / 2
    return torch.empty_like(q_sorted).scatter_(1, order, q_sorted)


def tilted(ref_logps: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log of pi_ref exp(target) / Z, normalised exactly per prompt, and log Z: [P, N] -> [P, N], [P]."""
    log_z = torch.logsumexp(ref_logps + target, dim=1)  # [P]
    return ref_logps + target - log_z[:, None], log_z


def kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per prompt, from log-probabilities over all completions: [..., P, N] -> [..., P]."""
    return (logp.exp() * (logp - logq)).sum(-1)


def decayed_lr(lr: float, final_lr_fraction: float, step: int, steps: int) -> float:
    """Exponential decay from lr to lr * final_lr_fraction over the run."""
    return lr * final_lr_fraction ** (step / max(steps - 1, 1))


def train_qrpo(
    problem: Problem,
    transform: Transform,
    beta: float,
    ms: tuple[int, ...],
    steps: int,
    batch_size: int,
    lr: float,
    final_lr_fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Train 1 + len(ms) independent policies side by side: one on exact midpoint quantiles, one per M on
    estimated quantiles. Returns their final log pi over all completions, [1 + len(ms), P, N]."""
    prompts, n = problem.rewards.shape
    variants = 1 + len(ms)
    exact_q = midpoint_quantiles(problem.ref_logps, problem.rewards)  # [P, N]
    ref_probs = problem.ref_logps.exp()  # [P, N]
    rows = torch.arange(prompts)[:, None]  # [P, 1], broadcasts against [P, B]
    # every variant is its own copy of the table (Adam is elementwise, so the copies do not interact)
    logits = problem.ref_logits.repeat(variants, 1, 1, 1).requires_grad_()  # [R, P, K, V]
    optimizer = torch.optim.Adam([logits], lr=lr)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = decayed_lr(lr, final_lr_fraction, step, steps)
        ys = torch.randint(n, (variants, prompts, batch_size), generator=generator)  # [R, P, B] y ~ D
        policy_logps = sequence_logps(problem, logits).gather(-1, ys)  # [R, P, B]
        ref_logps = problem.ref_logps[rows, ys]  # [R, P, B]

        # exact: the midpoint quantile of y under pi_ref
        losses = [
            qrpo_loss_from_quantiles(
                policy_logps[0].reshape(-1), ref_logps[0].reshape(-1), exact_q[rows, ys[0]].reshape(-1), beta, transform
            ).losses.mean()
        ]
        # estimated: M fresh reference samples per example, mid-rank quantile, clamped inside the loss
        for i, m in enumerate(ms, start=1):
            refs = torch.multinomial(ref_probs, batch_size * m, replacement=True, generator=generator)  # [P, B*M]
            ref_rewards = problem.rewards.gather(1, refs).reshape(prompts * batch_size, m)  # [P*B, M]
            out = qrpo_loss(
                policy_logps[i].reshape(-1),
                ref_logps[i].reshape(-1),
                problem.rewards[rows, ys[i]].reshape(-1),  # [P*B] r(x, y)
                ref_rewards,
                beta,
                transform,
                ties="mid",
            )
            losses.append(out.losses.mean())
        optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        optimizer.step()
    with torch.no_grad():
        return sequence_logps(problem, logits)


def train_dpo(
    problem: Problem,
    beta: float,
    steps: int,
    batch_size: int,
    lr: float,
    final_lr_fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """DPO on Bradley-Terry labels from the raw reward; returns the final log pi, [P, N]."""
    prompts, n = problem.rewards.shape
    rows = torch.arange(prompts)[:, None]  # [P, 1]
    logits = problem.ref_logits.clone().requires_grad_()  # [P, K, V]
    optimizer = torch.optim.Adam([logits], lr=lr)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = decayed_lr(lr, final_lr_fraction, step, steps)
        y1 = torch.randint(n, (prompts, batch_size), generator=generator)  # [P, B] ~ D
        y2 = torch.randint(n, (prompts, batch_size), generator=generator)  # [P, B] ~ D
        p_first = torch.sigmoid(problem.rewards[rows, y1] - problem.rewards[rows, y2])  # [P, B] BT probability
        first_wins = torch.rand(prompts, batch_size, generator=generator, dtype=p_first.dtype) < p_first
        chosen, rejected = torch.where(first_wins, y1, y2), torch.where(first_wins, y2, y1)  # [P, B]
        logps = sequence_logps(problem, logits)  # [P, N]
        out = dpo_loss(
            logps[rows, chosen].reshape(-1),
            logps[rows, rejected].reshape(-1),
            problem.ref_logps[rows, chosen].reshape(-1),
            problem.ref_logps[rows, rejected].reshape(-1),
            beta,
        )
        optimizer.zero_grad(set_to_none=True)
        out.losses.mean().backward()
        optimizer.step()
    with torch.no_grad():
        return sequence_logps(problem, logits)


def kl_report(policy_logps: torch.Tensor, optimum_logps: torch.Tensor) -> dict[str, float]:
    """Prompt-averaged KL(pi_theta || pi*) and KL(pi* || pi_theta), from [P, N] log-probabilities."""
    return {
        "kl_to_optimum": kl(policy_logps, optimum_logps).mean().item(),
        "kl_from_optimum": kl(optimum_logps, policy_logps).mean().item(),
    }


def run(
    transforms: list[str] | None = None,
    betas: dict[str, float] | None = None,
    ms: tuple[int, ...] = DEFAULT_MS,
    dpo_beta: float = 0.5,
    seed: int = 0,
    prompts: int = 3,
    vocab: int = 8,
    length: int = 3,
    ref_scale: float = 0.5,
    steps: int = 2000,
    dpo_steps: int = 6000,
    batch_size: int = 256,
    dpo_batch_size: int = 4096,
    lr: float = 0.3,
    final_lr_fraction: float = 0.01,
    include_dpo: bool = True,
) -> dict:
    """Build the problem, train every variant, return the report (the JSON object of the CLI)."""
    started = time.perf_counter()
    transforms = list(DEFAULT_BETAS) if transforms is None else transforms
    betas = {**DEFAULT_BETAS, **(betas or {})}
    # one random stream for the problem and one per training run, so that a run's numbers do not
    # depend on which other transforms were selected
    streams = {name: i for i, name in enumerate(["problem", "dpo", *DEFAULT_BETAS])}
    generator = lambda stream: torch.Generator().manual_seed(1000 * seed + streams[stream])  # noqa: E731
    problem = make_problem(prompts, vocab, length, ref_scale, generator("problem"))
    exact_q = midpoint_quantiles(problem.ref_logps, problem.rewards)  # [P, N]

    report: dict = {"transforms": {}}
    for name in transforms:
        transform = get_transform(name, **(SCALED_NORMAL_PARAMS if name == "scaled_normal_icdf" else {}))
        beta = betas[name]
        with torch.no_grad():
            optimum, log_z = tilted(problem.ref_logps, transform(exact_q) / beta)  # [P, N], [P]
        final = train_qrpo(problem, transform, beta, ms, steps, batch_size, lr, final_lr_fraction, generator(name))
        entry = {
            "beta": beta,
            **kl_report(final[0], optimum),
            "kl_ref_to_optimum": kl(problem.ref_logps, optimum).mean().item(),
            "kl_optimum_to_ref": kl(optimum, problem.ref_logps).mean().item(),
            "log_partition_gap": (log_z - transform.log_partition(beta)).abs().max().item(),
            "estimated": {str(m): kl_report(final[i], optimum) for i, m in enumerate(ms, start=1)},
        }
        if name == "scaled_normal_icdf":
            entry["params"] = dict(SCALED_NORMAL_PARAMS)
        report["transforms"][name] = entry

    if include_dpo:
        optimum, _ = tilted(problem.ref_logps, problem.rewards / dpo_beta)  # [P, N]
        final = train_dpo(problem, dpo_beta, dpo_steps, dpo_batch_size, lr, final_lr_fraction, generator("dpo"))
        report["dpo"] = {
            "beta": dpo_beta,
            **kl_report(final, optimum),
            "kl_ref_to_optimum": kl(problem.ref_logps, optimum).mean().item(),
            "kl_optimum_to_ref": kl(optimum, problem.ref_logps).mean().item(),
        }

    report["config"] = {
        "seed": seed,
        "prompts": prompts,
        "vocab": vocab,
        "length": length,
        "completions_per_prompt": vocab**length,
        "ref_scale": ref_scale,
        "data_distribution": "uniform over completions",
        "steps": steps,
        "dpo_steps": dpo_steps,
        "batch_size": batch_size,
        "dpo_batch_size": dpo_batch_size,
        "lr": lr,
        "final_lr_fraction": final_lr_fraction,
        "ms": list(ms),
        "quantile_ties": "mid",
        "seconds": round(time.perf_counter() - started, 2),
    }
    return report


def format_report(report: dict) -> str:
    ms = report["config"]["ms"]
    header = f"{'transform':<20}{'beta':>6}{'gap':>9}{'KL(ref||*)':>12}{'exact':>10}" + "".join(
        f"{'M=' + str(m):>10}" for m in ms
    )
    lines = [
        "KL(pi_theta || pi*) in nats after training (exact = midpoint quantiles; M = estimated from M refs);",
        "KL(ref||*) = KL(pi_ref || pi*), where training starts; gap = max |log Z(x) - log Z_f(beta)|.",
        "",
        header,
    ]
    for name, e in report["transforms"].items():
        lines.append(
            f"{name:<20}{e['beta']:>6g}{e['log_partition_gap']:>9.1e}{e['kl_ref_to_optimum']:>12.4f}"
            f"{e['kl_to_optimum']:>10.5f}" + "".join(f"{e['estimated'][str(m)]['kl_to_optimum']:>10.5f}" for m in ms)
        )
    if "dpo" in report:
        d = report["dpo"]
        lines += [
            "",
            f"DPO (beta={d['beta']:g}): KL(pi_theta || pi*_dpo) = {d['kl_to_optimum']:.5f}, "
            f"KL(pi*_dpo || pi_theta) = {d['kl_from_optimum']:.5f}, KL(ref||*) = {d['kl_ref_to_optimum']:.4f}",
        ]
    c = report["config"]
    lines.append(
        f"\n{c['prompts']} prompts x {c['completions_per_prompt']} completions, {c['steps']} steps "
        f"(DPO {c['dpo_steps']}) of batch {c['batch_size']}, seed {c['seed']}, {c['seconds']} s"
    )
    return "\n".join(lines)


def _parse_betas(items: list[str]) -> dict[str, float]:
    """--beta 0.3 (every transform) or --beta log=0.3 (one transform), repeatable."""
    betas: dict[str, float] = {}
    for item in items:
        if "=" in item:
            name, value = item.split("=", 1)
            if name not in DEFAULT_BETAS:
                raise SystemExit(f"--beta: unknown transform {name!r}; choose one of {', '.join(DEFAULT_BETAS)}")
            betas[name] = float(value)
        else:
            betas.update(dict.fromkeys(DEFAULT_BETAS, float(item)))
    return betas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qrpo.verification.toy",
        description="Train QRPO (every built-in transform, exact and estimated quantiles) and DPO on an "
        "enumerable toy problem and report the KL to the exact optimum.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps per QRPO transform")
    parser.add_argument("--dpo-steps", type=int, default=6000, help="Adam steps for DPO (0 skips DPO)")
    parser.add_argument("--batch-size", type=int, default=256, help="completions per prompt per step")
    parser.add_argument("--dpo-batch-size", type=int, default=4096, help="preference pairs per prompt per step")
    parser.add_argument("--lr", type=float, default=0.3, help="initial Adam learning rate")
    parser.add_argument("--final-lr-fraction", type=float, default=0.01, help="lr decays exponentially to lr * this")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8)
    parser.add_argument("--length", type=int, default=3)
    parser.add_argument("--ref-scale", type=float, default=0.5, help="std of pi_ref's random logits")
    parser.add_argument("--ms", default=",".join(map(str, DEFAULT_MS)), help="reference-set sizes M, comma-separated")
    parser.add_argument(
        "--transforms", default=",".join(DEFAULT_BETAS), help="comma-separated subset of the built-in transforms"
    )
    parser.add_argument(
        "--beta", action="append", default=[], metavar="[NAME=]VALUE", help="override beta (all, or one transform)"
    )
    parser.add_argument("--dpo-beta", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    transforms = [t for t in args.transforms.split(",") if t]
    ms = tuple(int(m) for m in args.ms.split(",") if m)
    if any(m < 1 for m in ms):
        parser.error(f"--ms: every reference-set size must be >= 1; got {list(ms)}")
    unknown = [t for t in transforms if t not in DEFAULT_BETAS]
    if unknown:
        parser.error(f"unknown transform(s) {unknown}; choose from {', '.join(DEFAULT_BETAS)}")
    report = run(
        transforms=transforms,
        betas=_parse_betas(args.beta),
        ms=ms,
        dpo_beta=args.dpo_beta,
        seed=args.seed,
        prompts=args.prompts,
        vocab=args.vocab,
        length=args.length,
        ref_scale=args.ref_scale,
        steps=args.steps,
        dpo_steps=args.dpo_steps,
        batch_size=args.batch_size,
        dpo_batch_size=args.dpo_batch_size,
        lr=args.lr,
        final_lr_fraction=args.final_lr_fraction,
        include_dpo=args.dpo_steps > 0,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
