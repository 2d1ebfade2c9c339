"""Typed configuration of one experiment, validated before any work starts.

The composed Hydra config (conf/) is a nested dict; `build_section` turns each section into one of
these dataclasses and rejects unknown keys and out-of-range values with one `InputError` naming the key.
Each pipeline step reads only its own section, and its artifact key hashes only that section, so
changing beta re-runs training and evaluation but no sampling or scoring.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from qrpo.errors import InputError


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str  # "gguf" (a file in an installed package), "pretrained" (hub name or folder), "config" (tiny)
    path: str = ""  # pretrained: hub name or local folder
    package: str = ""  # gguf: Python package that ships the file
    file: str = ""  # gguf: file name inside the package
    architecture: dict[str, Any] = field(default_factory=dict)  # config: LlamaConfig fields
    seed: int = 0  # config: initialisation seed

    def validate(self):
        sources = ("gguf", "pretrained", "config")
        if self.source not in sources:
            raise InputError(f"model.source={self.source!r} is not one of {', '.join(sources)}")
        if self.source == "gguf" and not (self.package and self.file):
            raise InputError("model.source=gguf needs model.package and model.file (the GGUF inside that package)")
        if self.source == "pretrained" and not self.path:
            raise InputError("model.source=pretrained needs model.path (a local folder or a hub name you can access)")


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    path: str  # JSONL file, one object per line
    prompt_column: str = "prompt"
    split_column: str = "split"
    max_train_prompts: int = 0  # 0: all
    max_eval_prompts: int = 0


@dataclass(frozen=True)
class SamplerConfig:
    num_ref_samples: int = 4  # M: reference completions per prompt, for the quantiles
    num_train_samples: int = 2  # K: completions per prompt from which the training pair is picked
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 16
    shard_prompts: int = 16  # prompts per checkpointed shard
    seed: int = 0

    def validate(self):
        _positive(self, "num_ref_samples", "num_train_samples", "max_new_tokens", "batch_size", "shard_prompts")
        if self.num_train_samples < 2:
            raise InputError("sampler.num_train_samples must be >= 2: the training pair is the best and worst of them")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise InputError("sampler.temperature must be > 0 and sampler.top_p in (0, 1]")


@dataclass(frozen=True)
class RewardConfig:
    name: str
    kind: str  # one of qrpo.rewards.REWARD_KINDS
    path: str = ""  # sequence_classifier: hub name or folder
    architecture: dict[str, Any] = field(default_factory=dict)  # tiny_classifier: LlamaConfig fields
    seed: int = 0  # tiny_classifier: initialisation seed
    trust_remote_code: bool = False
    batch_size: int = 16
    score_index: int = 0  # which logit is the reward
    # sequence_classifier / tiny_classifier (see qrpo/rewards/classifier.py for the truncation policy)
    max_length: int = 0  # tokens per (conversation, answer); 0: no limit
    truncation: str = "right"  # which end of the ANSWER is cut beyond max_length: right keeps its start, left its end
    length_grouped: bool = True  # batch samples of similar token length together
    dtype: str = "auto"  # auto (bfloat16 on a GPU, float32 on a CPU) | float32 | bfloat16 | float16
    # code_tests: the sandbox (qrpo/sandbox) and code extraction (qrpo/rewards/code.py)
    wall_seconds: float = 5.0  # per test case
    cpu_seconds: int = 5
    memory_mb: int = 512
    max_workers: int = 0  # parallel test cases; 0: one per core
    allow_unsandboxed: bool = False  # where namespaces are not permitted, run model code WITHOUT isolation
    max_tests: int = 0  # first N test cases per problem; 0: all
    code_block: str = "last"  # which ```python block of a completion is the program: last | first
    # callable: "package.module:function", called as f(prompt, completion, **row) -> float
    function: str = ""
    # judge: an OpenAI-compatible chat endpoint (qrpo/rewards/judge.py)
    base_url: str = ""
    model: str = ""
    api_key_env: str = ""  # name of the environment variable holding the API key ("" for none)
    template: str = ""  # "" : the built-in rating prompt; fields {prompt} {completion} {min} {max}
    score_min: float = 0.0
    score_max: float = 10.0
    max_concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 3
    max_tokens: int = 16
    temperature: float = 0.0

    def validate(self):
        _positive(self, "batch_size", "wall_seconds", "cpu_seconds", "memory_mb", "max_concurrency", "timeout", "max_tokens")
        if self.truncation not in ("right", "left"):
            raise InputError(f"reward.truncation={self.truncation!r} is not one of right, left")
        if self.code_block not in ("last", "first"):
            raise InputError(f"reward.code_block={self.code_block!r} is not one of last, first")
        for name in ("max_length", "max_workers", "max_tests", "max_retries"):
            if getattr(self, name) < 0:
                raise InputError(f"reward.{name} must be >= 0; got {getattr(self, name)}")


@dataclass(frozen=True)
class QuantileConfig:
    ties: str = "le"

    def validate(self):
        from qrpo.quantiles import TIE_POLICIES

        if self.ties not in TIE_POLICIES:
            raise InputError(f"quantiles.ties={self.ties!r} is not one of {', '.join(TIE_POLICIES)}")


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-5
    epochs: int = 1
    batch_size: int = 8  # pairs per optimiser step (after accumulation)
    micro_batch_size: int = 4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping (the paper's setting)
    seed: int = 0

    def validate(self):
        _positive(self, "learning_rate", "epochs", "batch_size", "micro_batch_size")
        if self.batch_size % self.micro_batch_size:
            raise InputError(f"train.batch_size={self.batch_size} must be a multiple of train.micro_batch_size={self.micro_batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"train.warmup_ratio must be in [0, 1); got {self.warmup_ratio}")


@dataclass(frozen=True)
class EvalConfig:
    samples_per_prompt: int = 1
    max_new_tokens: int = 48
    batch_size: int = 16
    seed: int = 1234

    def validate(self):
        _positive(self, "samples_per_prompt", "max_new_tokens", "batch_size")


def _positive(section, *names):
    for name in names:
        value = getattr(section, name)
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise InputError(f"{_SECTION_NAMES[type(section)]}.{name} must be a positive number; got {value!r}")


_SECTION_NAMES = {
    ModelConfig: "model",
    DatasetConfig: "dataset",
    SamplerConfig: "sampler",
    RewardConfig: "reward",
    QuantileConfig: "quantiles",
    TrainConfig: "train",
    EvalConfig: "eval",
}


def build_section(cls, values: dict[str, Any]):
    """`cls(**values)`, with unknown or missing keys reported as one InputError naming the section."""
    section = _SECTION_NAMES[cls]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; known: {', '.join(sorted(names))}")
    try:
        config = cls(**values)
    except TypeError as err:
        raise InputError(f"{section}: {err}") from None
    if hasattr(config, "validate"):
        config.validate()
    return config
