"""The throughput table (qrpo/plan/throughput.yaml, or `plan.table`): devices, known models and datasets, disk."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qrpo.config.sections import PLAN_WORK, PlanConfig
from qrpo.errors import InputError

TABLE = Path(__file__).with_name("throughput.yaml")
PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class Device:
    """One device kind: dense peak per precision (FLOP/s), MFU per precision and kind of work, loading costs."""

    key: str
    name: str
    bf16: bool  # has bf16 matrix units: precision=auto resolves to bf16 there
    peak: dict[str, float]  # FLOP/s per precision
    mfu: dict[str, dict[str, float]]  # precision -> work -> fraction of the peak
    memory_gb: float | None
    load_gb_per_s: float
    startup_s: float
    tokens_per_s: dict[str, float] = field(default_factory=dict)  # work -> measured tokens/s (plan.tokens_per_s)
    sources: dict[str, str] = field(default_factory=dict)

    def rate(self, precision: str, work: str) -> float:
        """Model FLOP/s one device reaches on this kind of work in this precision."""
        return self.peak[precision] * self.mfu[precision][work]


@functools.cache
def _read(path: str) -> dict[str, Any]:
    try:
        table = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as err:
        raise InputError(f"plan.table={path!r} cannot be read: {err.strerror}; give a YAML file laid out as qrpo/plan/throughput.yaml") from None
    except yaml.YAMLError as err:
        raise InputError(f"plan.table={path!r} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(table, dict) or not isinstance(table.get("devices"), dict):
        raise InputError(f"plan.table={path!r} has no `devices:` mapping; lay it out as qrpo/plan/throughput.yaml")
    return table


def load_table(path: str = "") -> dict[str, Any]:
    """The table as a mapping (cached per path); "" is the shipped one."""
    return _read(str(path or TABLE))


def device(plan: PlanConfig, table: dict[str, Any]) -> Device:
    """The device `plan.gpu` names, with the plan's own overrides (peak, MFU, measured tokens/s) applied."""
    devices = table["devices"]
    if plan.gpu not in devices:
        raise InputError(f"plan.gpu={plan.gpu!r} is not in the throughput table ({plan.table or 'qrpo/plan/throughput.yaml'}); "
                         f"one of: {', '.join(devices)}")
    row = devices[plan.gpu]
    try:
        peak = {p: float(row["peak_tflops"][p]) * 1e12 for p in PRECISIONS}
        mfu = {p: {w: float(row["mfu"][p][w]) for w in PLAN_WORK} for p in PRECISIONS}
        found = Device(key=plan.gpu, name=str(row["name"]), bf16=bool(row.get("bf16", True)), peak=peak, mfu=mfu,
                       memory_gb=row.get("memory_gb"), load_gb_per_s=float(row["load_gb_per_s"]),
                       startup_s=float(row.get("startup_s", 0.0)), sources=dict(row.get("sources") or {}))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"the throughput table's device {plan.gpu!r} lacks or misstates {err}: it needs peak_tflops and mfu "
                         "for bf16 and fp32 (decode, prefill, train), load_gb_per_s") from None
    if plan.peak_tflops is not None:
        found = _replace(found, peak={p: plan.peak_tflops * 1e12 for p in PRECISIONS})
    overrides = {w: v for w, v in plan.mfu.items() if v is not None}
    if overrides:
        found = _replace(found, mfu={p: {**m, **overrides} for p, m in found.mfu.items()})
    measured = {w: float(v) for w, v in plan.tokens_per_s.items() if v is not None}
    if measured:
        found = _replace(found, tokens_per_s=measured)
    return found


def _replace(device: Device, **changes) -> Device:
    import dataclasses

    return dataclasses.replace(device, **changes)


def known_model(table: dict[str, Any], *names: str) -> dict[str, Any] | None:
    """The `models:` row of the first of these names (a hub name, a model.name) that the table has."""
    models = table.get("models") or {}
    for name in names:
        if name and name in models:
            return models[name]
    return None


def known_dataset(table: dict[str, Any], *names: str) -> dict[str, Any] | None:
    datasets = table.get("datasets") or {}
    for name in names:
        if name and name in datasets:
            return datasets[name]
    return None


def disk(table: dict[str, Any]) -> dict[str, float]:
    row = table.get("disk") or {}
    return {"completion": float(row.get("bytes_per_completion_token", 3.4)), "prompt": float(row.get("bytes_per_prompt_token", 1.4)),
            "checkpoint": float(row.get("checkpoint_bytes_per_param", 12)), "weights": float(row.get("weights_bytes_per_param", 4))}
