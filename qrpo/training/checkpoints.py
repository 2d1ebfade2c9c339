"""Checkpoints of a training run: accelerate's state (model, optimizer, scheduler, RNG) plus the step and the
history so far, each written to a temporary folder and renamed into place when complete; the newest
`keep` are kept. A run resumes from the newest complete one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def latest_checkpoint(checkpoint_dir: Path | None) -> Path | None:
    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return None
    done = sorted(p for p in checkpoint_dir.glob("step-*") if (p / "trainer_state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(accelerator, checkpoint_dir: Path, step: int, history: list[dict], keep: int) -> Path:
    """accelerate's state (model, optimizer, scheduler, RNG) + our step and history, renamed into place when complete;
    returns the folder this process wrote (the final one on the main process; where a process has a checkpoint
    folder of its own, its temporary one, which only the main process renames)."""
    final = checkpoint_dir / f"step-{step:07d}"
    tmp = checkpoint_dir / f".tmp-step-{step:07d}"
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "history": history}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(checkpoint_dir.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final if final.is_dir() else tmp


def load_checkpoint(accelerator, checkpoint: Path) -> tuple[int, list[dict]]:
    """Restore accelerate's state from `checkpoint`; return (the step to go on from, the history so far)."""
    accelerator.load_state(str(checkpoint))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state["step"], state["history"]
