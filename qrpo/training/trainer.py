"""The training loop: a table of examples -> "the loss" -> AdamW with warm-up + cosine decay.

The loop knows neither the method nor the data regime. `make_examples` wraps the training table
(pairs or single completions); each optimiser step takes `batch_size` examples (the global batch,
split across processes under DDP/FSDP/DeepSpeed and into micro-batches of `micro_batch_size` for
gradient accumulation), computes log pi_theta of every completion of a micro-batch in one forward
pass (through a chunked LM head that never forms the [tokens, vocab] logits, `qrpo.training.fused_head`),
and hands the `Algorithm` a batch whose every tensor lives on the policy's device.

Scale-out goes through accelerate: the same function runs in one process or in each process of an
`accelerate launch` (see `qrpo.training.distributed`); the gradient of a step is the mean over the global
batch whatever the topology, so 2 processes give the parameters of 1 process with the same batch.
The master weights stay fp32; with bf16 (train.mixed_precision, the run's `precision`: qrpo/precision.py)
the forward runs under bf16 autocast.

Checkpoints (`checkpoint_every` steps) hold the model, optimizer, scheduler, RNG states and the
history so far; a run resumes from the newest one with the parameters of an uninterrupted run (the
data order of an epoch is a pure function of (seed, epoch), so it needs no state).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import torch
from tqdm.auto import tqdm

from qrpo import precision
from qrpo.objective.algorithms import Algorithm
from qrpo.config.sections import TrainConfig
from qrpo.errors import InputError
from qrpo.memory import keep_freed_memory
from qrpo.training.batching import epoch_order, make_examples, micro_batch
from qrpo.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint



def cosine_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""
    warmup = int(round(warmup_ratio * total_steps))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


# --- the optimiser and precision ----------------------------------------------------------------


def _optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (CUDA, and CPU in torch >= 2.4), else multi-tensor (foreach)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, foreach=True)


def mixed_precision(cfg: TrainConfig) -> str:
    """"bf16" or "fp32": `train.mixed_precision` (the run's `precision` unless overridden) on this device."""
    return precision.resolve(cfg.mixed_precision)


def _accelerator(cfg: TrainConfig):
    """accelerate's Accelerator in this run's precision. Its state is process-global and refuses another
    precision once set, so a second training in one process (a notebook, a test) with another
    `train.mixed_precision` resets that part of it; the process group (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    wanted = {"bf16": "bf16", "fp32": "no"}[mixed_precision(cfg)]  # accelerate's names
    if AcceleratorState._shared_state.get("_mixed_precision", wanted) != wanted:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=wanted, cpu=not torch.cuda.is_available())


def _with_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


# --- the loop -------------------------------------------------------------------------------------


def train_policy(
    model,
    table: pa.Table,
    algorithm: Algorithm,
    cfg: TrainConfig,
    pad_id: int,
    on_step: Callable[[int, dict], None] | None = None,
    checkpoint_dir: Path | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> list[dict]:
    """Train `model` on `table` (a training table with reference log-probs if the method needs them);
    return the history (one dict per optimiser step). `model` is trained in place (with LoRA, the
    adapters are merged into it at the end, so it is a plain model again). `on_checkpoint(step, folder)` is
    called on every process after each checkpoint with the folder that process wrote (qrpo/training/ray_train.py)."""
    examples = make_examples(table, algorithm)
    n = len(examples)
    if n == 0:
        raise InputError(
            "the training table is empty: every prompt's candidates tied on reward; raise "
            "sampler.num_train_samples or dataset.max_train_prompts, or use a finer-grained reward"
        )
    if n < cfg.batch_size:
        raise InputError(f"the training table has {n} examples, fewer than train.batch_size={cfg.batch_size}; lower it")
    accelerator = _accelerator(cfg)
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # its step's large gradients and casts reuse freed pages (qrpo/memory.py)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise InputError(f"train.batch_size={cfg.batch_size} must be a multiple of the {world} training processes")
    steps_per_epoch = n // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    tokens = examples.tokens()

    torch.manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:  # recompute activations in the backward pass (named activation_* from transformers 5.x)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r > 0:
        model = _with_lora(model, cfg)
    model.to(accelerator.device)
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], cfg, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, cfg.warmup_ratio))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    history: list[dict] = []
    start_step = 0
    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        start_step, history = load_checkpoint(accelerator, resume)
    model.train()

    # a prompt's completions share one prompt pass, except under activation checkpointing (no cache there)
    share_prompts = cfg.share_prompts and not cfg.gradient_checkpointing
    bar = tqdm(total=total_steps, initial=start_step, desc=f"train {algorithm.name}", unit="step",
               dynamic_ncols=True, disable=not accelerator.is_main_process)
    batches, batches_epoch = None, -1
    step_tokens, start = 0, time.perf_counter()
    for step in range(start_step, total_steps):
        epoch, index = divmod(step, steps_per_epoch)
        if epoch != batches_epoch:
            batches = epoch_order(n, cfg.batch_size, cfg.seed, epoch, tokens if cfg.group_by_length else None)
            batches_epoch = epoch
        step_rows = batches[index]  # the global batch; this process takes every world-th row
        local_rows = step_rows[rank::world]
        micro = [local_rows[m : m + cfg.micro_batch_size] for m in range(0, len(local_rows), cfg.micro_batch_size)]
        sums: dict[str, torch.Tensor] = {}
        for i, rows in enumerate(micro):
            sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
            with sync:
                losses, diagnostics, _ = micro_batch(model, examples, rows, algorithm, pad_id, share_prompts, cfg.fused_lm_head)
                # mean over the global batch: DDP averages over processes, hence the factor `world`
                accelerator.backward(losses.sum() * world / len(step_rows))
            for name, values in {"loss": losses.detach().float(), **diagnostics}.items():
                sums[name] = sums.get(name, 0.0) + values.sum()
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        names = sorted(sums)
        totals = accelerator.reduce(torch.stack([sums[k] for k in names]), reduction="sum") / len(step_rows)
        step_tokens += int(tokens[step_rows].sum())
        elapsed = time.perf_counter() - start
        record = {
            "step": step,
            "epoch": epoch,
            "learning_rate": scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
            "tokens_per_s": step_tokens / elapsed,
            "processes": world,
            **{k: float(v) for k, v in zip(names, totals.tolist())},
        }
        history.append(record)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total_steps and checkpoint_dir is not None:
            written = save_checkpoint(accelerator, checkpoint_dir, step + 1, history, cfg.keep_checkpoints)
            if on_checkpoint is not None:  # Ray Train persists each process's files
                on_checkpoint(step + 1, written)
        if on_step is not None and accelerator.is_main_process:
            on_step(step, record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4g}", tok_per_s=f"{record['tokens_per_s']:.0f}")
    bar.close()
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # drop the autocast wrapper of bf16 training
    if cfg.lora_r > 0:
        model = model.merge_and_unload()
    model.eval()
    return history
