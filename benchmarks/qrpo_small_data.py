"""Why QRPO lowered the held-out reward on the CPU-sized default while DPO raised it: the same
experiment on the enumerable toy (qrpo/verification/toy.py), where every expectation is exact.

    .venv/bin/python benchmarks/qrpo_small_data.py            # a table (about a minute on one core)

The CPU default trains on a *fixed, small* data set: per prompt K = 2 samples of pi_ref (the best and
the worst form the pair) and M = 4 references for the quantiles, a few epochs of Adam. This script
does exactly that on toy prompts (a tabular autoregressive pi_ref over 512 completions, rewards
N(0, 1)), trains QRPO (identity, beta = 0.1) and DPO on the same data, and reports, exactly by
enumeration: the expected raw reward E_pi[r] and expected quantile E_pi[q] of the trained policy
against pi_ref's (0 and 1/2) and the optimum pi*'s, and KL(pi || pi_ref).

What to look at: the QRPO regression targets beta log(pi/pi_ref) = f(q) - beta log Z. For identity at
beta = 0.1, beta log Z = 0.77, so every completion with q < 0.77 gets a *negative* target: both sides
of a best/worst-of-2 pair usually do (the best of two samples has E[q] = 2/3). The regression then
lowers the probability of the sampled completions, and the mass it frees goes to completions nobody
sampled, in proportion to their current probability: KL grows, the reward barely moves. That is
exactly right for pi* *in expectation over all completions* (E_{pi_ref}[log pi*/pi_ref] = -KL(pi_ref || pi*)
< 0), but with two completions per prompt the data cannot say where the mass should go. DPO's
logistic loss only asks for a margin inside each pair. With many completions per prompt (pointwise,
K = 16 or leave-one-out on all K + M), the positive targets of the top samples pull the mass to them.
"""

from __future__ import annotations

import argparse

import torch

from qrpo.objective.losses import dpo_loss, qrpo_loss_from_quantiles
from qrpo.objective.quantiles import quantile_table
from qrpo.verification.toy import kl, make_problem, midpoint_quantiles, sequence_logps, tilted
from qrpo.objective.transforms import get_transform


def fixed_data(problem, k: int, m: int, generator):
    """Per prompt: k candidates and m references drawn from pi_ref once (indices into the completions)."""
    probs = problem.ref_logps.exp()
    draws = torch.multinomial(probs, k + m, replacement=True, generator=generator)  # [P, K+M]
    return draws[:, :k], draws[:, k:]


def quantiles_among(rewards, candidates, references):
    """q_hat of every candidate among its prompt's references ("le", as the pipeline's default)."""
    cand_r = rewards.gather(1, candidates)  # [P, K]
    ref_r = rewards.gather(1, references)  # [P, M]
    q = quantile_table(cand_r.reshape(-1).numpy(), ref_r.repeat_interleave(candidates.shape[1], 0).numpy(), ties="le")
    return torch.as_tensor(q).reshape(cand_r.shape)


def train(problem, examples, method: str, beta: float, lr: float, epochs: int):
    """Full-batch Adam on a fixed data set; returns log pi over all completions [P, N]."""
    logits = problem.ref_logits.clone().requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=lr)
    transform = get_transform("identity")
    rows = torch.arange(problem.rewards.shape[0])[:, None]
    for _ in range(epochs):
        logps = sequence_logps(problem, logits)  # [P, N]
        if method == "dpo":
            chosen, rejected = examples["chosen"], examples["rejected"]
            loss = dpo_loss(logps[rows, chosen].reshape(-1), logps[rows, rejected].reshape(-1),
                            problem.ref_logps[rows, chosen].reshape(-1), problem.ref_logps[rows, rejected].reshape(-1),
                            beta).losses.mean()
        else:
            ids, q = examples["completions"], examples["quantiles"]
            loss = qrpo_loss_from_quantiles(logps[rows, ids].reshape(-1), problem.ref_logps[rows, ids].reshape(-1),
                                            q.reshape(-1).to(logps.dtype), beta, transform).losses.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return sequence_logps(problem, logits).detach()


def summary(problem, logps, exact_q, negative=float("nan")):
    p = logps.exp()
    return {
        "reward": float((p * problem.rewards).sum(1).mean()),
        "quantile": float((p * exact_q).sum(1).mean()),
        "kl": float(kl(logps, problem.ref_logps).mean()),
        "negative": negative,
    }


def negative_share(quantiles, beta):
    """Share of training examples whose QRPO target f(q) - beta log Z (identity) is below 0."""
    return float((quantiles - beta * get_transform("identity").log_partition(beta) < 0).double().mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)

    rows = []
    for seed in range(args.seeds):
        g = torch.Generator().manual_seed(seed)
        problem = make_problem(prompts=args.prompts, vocab=8, length=3, ref_scale=1.0, generator=g)
        exact_q = midpoint_quantiles(problem.ref_logps, problem.rewards)
        optimum, _ = tilted(problem.ref_logps, exact_q / args.beta)
        row = {"pi_ref": summary(problem, problem.ref_logps, exact_q), "pi* (QRPO identity)": summary(problem, optimum, exact_q)}
        for k, m, regime in ((2, 4, "best_worst"), (2, 4, "pointwise"), (16, 4, "pointwise"), (16, 4, "leave_one_out")):
            candidates, references = fixed_data(problem, k, m, g)
            r = problem.rewards
            if regime == "leave_one_out":
                everything = torch.cat([candidates, references], 1)  # every sample, quantile among the others
                qs = [quantiles_among(r, everything[:, j : j + 1], torch.cat([everything[:, :j], everything[:, j + 1 :]], 1))
                      for j in range(everything.shape[1])]
                examples = {"completions": everything, "quantiles": torch.cat(qs, 1)}
            else:
                q = quantiles_among(r, candidates, references)
                cand_r = r.gather(1, candidates)
                best, worst = cand_r.argmax(1, keepdim=True), cand_r.argmin(1, keepdim=True)
                if regime == "best_worst":
                    pairs = torch.cat([candidates.gather(1, best), candidates.gather(1, worst)], 1)
                    examples = {"completions": pairs, "quantiles": torch.cat([q.gather(1, best), q.gather(1, worst)], 1)}
                    dpo = train(problem, {"chosen": candidates.gather(1, best), "rejected": candidates.gather(1, worst)},
                                "dpo", args.dpo_beta, args.lr, args.epochs)
                    row[f"DPO on best/worst of K={k}"] = summary(problem, dpo, exact_q)
                else:
                    examples = {"completions": candidates, "quantiles": q}
            label = {"best_worst": f"QRPO on best/worst of K={k}", "pointwise": f"QRPO pointwise K={k}",
                     "leave_one_out": f"QRPO leave-one-out, all K+M={k + m}"}[regime]
            row[label] = summary(problem, train(problem, examples, "qrpo", args.beta, args.lr, args.epochs), exact_q,
                                 negative_share(examples["quantiles"], args.beta))
        rows.append(row)

    print(f"{args.prompts} toy prompts x 512 completions, M = 4 references, beta = {args.beta} (DPO {args.dpo_beta}), "
          f"full-batch Adam lr {args.lr} x {args.epochs} epochs, {args.seeds} seeds (mean ± spread)\n")
    print("| policy | E[reward] (pi_ref 0) | E[q] (pi_ref 0.5) | KL(pi ‖ pi_ref) | QRPO targets < 0 |")
    print("|---|---|---|---|---|")
    for name in rows[0]:
        cells = []
        for key in ("reward", "quantile", "kl", "negative"):
            values = torch.tensor([r[name][key] for r in rows])
            if torch.isnan(values).all():
                cells.append("")
            else:
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
