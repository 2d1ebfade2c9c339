"""Typed configuration of one experiment, validated before any work starts.

The composed Hydra config (conf/) is a nested dict; `build_section` turns each section into one of
these dataclasses and rejects unknown keys, values of the wrong type (checked against each field's
annotation: `train.epochs=abc` -> "train.epochs must be an integer; got 'abc'") and out-of-range values
with one `InputError` naming the key.
Each pipeline step reads only its own section, and its artifact key hashes only that section, so
changing beta re-runs training and evaluation but no sampling or scoring. `typed_sections` builds all
of a run's sections at once (`Sections`); each Prefect task receives only the ones it reads, and an
artifact key hashes a section as composed (`composed`: the mapping it was built from, not the defaults).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from qrpo.errors import InputError


# The built-in implementations, by the choice that names them (sampler.backend, reward.kind, model.source).
# conf/ names each one again as the section's `_target_` (what is imported and called, through
# qrpo.config.binding.locate); a `_target_` of your own replaces the built-in, "" means the built-in of the choice.
SAMPLER_TARGETS = {  # f(cfg: SamplerConfig, model_path, params, tokenizer) -> Sampler
    "hf": "qrpo.sampling.hf.HFSampler.from_config",
    "vllm": "qrpo.sampling.vllm.VLLMSampler.from_config",
    "openai": "qrpo.sampling.openai.OpenAISampler.from_config",
}
REWARD_TARGETS = {  # f(cfg: RewardConfig) -> RewardModel
    "vader": "qrpo.rewards.vader.VaderReward.from_config",
    "sequence_classifier": "qrpo.rewards.classifier.sequence_classifier",
    "tiny_classifier": "qrpo.rewards.classifier.tiny_classifier",
    "code_tests": "qrpo.rewards.code.CodeTestsReward.from_config",
    "callable": "qrpo.rewards.callable.CallableReward.from_config",
    "judge": "qrpo.rewards.judge.JudgeReward.from_config",
}
MODEL_TARGETS = {  # f(cfg: ModelConfig) -> (causal LM, tokenizer)
    "gguf": "qrpo.models.load_gguf",
    "pretrained": "qrpo.models.load_pretrained",
    "config": "qrpo.models.build_tiny",
}
SAMPLER_BACKENDS, REWARD_KINDS, MODEL_SOURCES = tuple(SAMPLER_TARGETS), tuple(REWARD_TARGETS), tuple(MODEL_TARGETS)


def _check_target(section: str, choice: str, value: str, target: str, table: dict[str, str]) -> None:
    """A built-in `_target_` must be the one of the section's choice (a custom one may be anything)."""
    others = [name for name, path in table.items() if path == target and name != value]
    if target and others:
        raise InputError(f"{section}._target_={target!r} builds {section}.{choice}={others[0]}, not {value}; "
                         f"pick a {section} group that sets both ({section}=<name>, conf/{section}/), or set {section}._target_ too")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str  # "gguf" (a file in an installed package), "pretrained" (hub name or folder), "config" (tiny)
    path: str = ""  # pretrained: hub name or local folder
    package: str = ""  # gguf: Python package that ships the file
    file: str = ""  # gguf: file name inside the package
    architecture: dict[str, Any] = field(default_factory=dict)  # config: LlamaConfig fields
    seed: int = 0  # config: initialisation seed
    _target_: str = ""  # f(cfg) -> (model, tokenizer); "": MODEL_TARGETS[source]

    def validate(self):
        if self.source not in MODEL_SOURCES:
            raise InputError(f"model.source={self.source!r} is not one of {', '.join(MODEL_SOURCES)}")
        _check_target("model", "source", self.source, self._target_, MODEL_TARGETS)
        if self.source == "gguf" and not (self.package and self.file):
            raise InputError("model.source=gguf needs model.package and model.file (the GGUF inside that package)")
        if self.source == "pretrained" and not self.path:
            raise InputError("model.source=pretrained needs model.path (a local folder or a hub name you can access)")
        if self.source == "config" and self._target_ in ("", MODEL_TARGETS["config"]):
            _check_architecture(self.architecture)


ARCHITECTURE_OWN = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")  # set from the tokenizer by build_tiny


def _check_architecture(architecture: dict[str, Any]) -> None:
    """model.architecture as `qrpo.models.build_tiny` hands it to transformers' LlamaConfig: known fields
    only (LlamaConfig keeps a misspelt one silently), each of the right type, sizes positive, and the
    config LlamaConfig itself accepts (heads dividing the hidden size, ...)."""
    import dataclasses

    from huggingface_hub.errors import StrictDataclassError
    from transformers import LlamaConfig

    own = sorted(set(architecture) & set(ARCHITECTURE_OWN))
    if own:
        raise InputError(f"model.architecture.{own[0]} is set from the byte-level tokenizer; remove it")
    known = {f.name for f in dataclasses.fields(LlamaConfig)}
    unknown = sorted(set(architecture) - known)
    if unknown:
        raise InputError(f"model.architecture has no field {unknown[0]!r} (LlamaConfig fields: hidden_size, "
                         "intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, ...); fix its name")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "max_position_embeddings", "head_dim"):
        value = architecture.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise InputError(f"model.architecture.{key} must be a positive integer; got {value}")
    try:
        LlamaConfig(**architecture)
    except (StrictDataclassError, TypeError, ValueError) as err:
        detail = " ".join(str(err).split())
        raise InputError(f"model.architecture is not a valid Llama config: {detail}") from None


@dataclass(frozen=True)
class DatasetConfig:
    """Where prompts come from (read with Hugging Face `datasets`, see qrpo/data/prompts.py)."""

    name: str
    path: str  # local file (jsonl/json/parquet/csv), local folder, or a hub name already in the HF cache
    data_files: Any = None  # passed to datasets.load_dataset
    subset: str | None = None  # dataset config name
    train_split: str = "train"  # split holding training prompts
    eval_split: str | None = None  # split holding eval prompts; null: split_column, else a seeded split of train_split
    split_column: str | None = None  # column whose values are "train"/"eval" inside one split
    eval_fraction: float = 0.1  # seeded split only
    split_seed: int = 0
    id_column: str | None = None  # stable prompt id; null: "<name>-<row index>"
    prompt_column: str = "prompt"  # text prompts ...
    messages_column: str | None = None  # ... or chat messages [{role, content}]; the last user turn is the prompt
    keep_columns: list[str] = field(default_factory=list)  # extra columns copied into the prompt table
    max_train_prompts: int = 0  # 0: all
    max_eval_prompts: int = 0

    def validate(self):
        if not 0 < self.eval_fraction < 1:
            raise InputError(f"dataset.eval_fraction must be in (0, 1); got {self.eval_fraction}")
        if self.max_train_prompts < 0 or self.max_eval_prompts < 0:
            raise InputError("dataset.max_train_prompts / dataset.max_eval_prompts must be >= 0 (0: all)")


VLLM_EXECUTOR_BACKENDS = (None, "mp", "ray", "uni", "external_launcher")  # vllm/config/parallel.py DistributedExecutorBackend


@dataclass(frozen=True)
class SamplerConfig:
    """How completions are drawn (qrpo/sampling/). Only `seed`, `max_new_tokens`, `temperature` and `top_p`
    (with the model and the prompts) determine a completion; the other keys say how fast it is drawn."""

    backend: str = "hf"  # one of SAMPLER_BACKENDS (the built-in; `_target_` may name your own)
    num_ref_samples: int = 4  # M: reference completions per prompt, for the quantiles
    num_train_samples: int = 2  # K: completions per prompt from which the training pair is picked
    min_samples_per_prompt: int = 0  # the train sample step draws max(K + M, this): a sweep over M samples once
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    drop_truncated: bool = False  # drop samples that hit max_new_tokens (counted either way)
    batch_size: int = 16  # hf: sequences per generate call
    shard_prompts: int = 16  # prompts per checkpointed shard
    map_shards: bool = False  # run shards as mapped Prefect tasks (each loads the model once)
    seed: int = 0
    precision: str = "fp32"  # hf: the forward passes' arithmetic (qrpo/precision.py); the run's `precision` in conf/
    # vllm: a worker process in vLLM's own environment
    vllm_python: str = "python"  # the Python that has vLLM: a venv's bin/python, or a `docker run ... python` prefix
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1  # worker processes, each on its own tensor_parallel_size GPUs
    vllm_engine_args: dict[str, Any] = field(default_factory=dict)  # extra vllm.LLM(...) arguments
    # issue 20: vLLM's own distributed executor (vLLM's EngineArgs names), for a model across GPUs of several nodes
    pipeline_parallel_size: int = 1  # pipeline stages (vllm.LLM(pipeline_parallel_size=...))
    distributed_executor_backend: str | None = None  # null: vLLM's choice | mp (one node) | ray (across the nodes of a Ray cluster) | uni
    ray_address: str | None = None  # distributed_executor_backend=ray: the cluster vLLM joins (RAY_ADDRESS of the worker); null: its own
    # openai: any OpenAI-compatible server
    base_url: str = "http://127.0.0.1:8000/v1"
    api_model: str = ""  # the served model name ("": the first one the server lists)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (never the key itself)
    prompt_format: str = "text"  # "text" (the decoded chat-templated prompt) or "token_ids" (vLLM, SGLang)
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request (server extensions)
    _target_: str = ""  # f(cfg, model_path, params, tokenizer) -> Sampler; "": SAMPLER_TARGETS[backend]

    def validate(self):
        _positive(self, "num_ref_samples", "num_train_samples", "max_new_tokens", "batch_size", "shard_prompts",
                  "tensor_parallel_size", "data_parallel_size", "concurrency", "timeout_s")
        if self.backend not in SAMPLER_BACKENDS:
            raise InputError(f"sampler.backend={self.backend!r} is not one of {', '.join(SAMPLER_BACKENDS)}")
        _check_target("sampler", "backend", self.backend, self._target_, SAMPLER_TARGETS)
        if self.num_train_samples < 2:
            raise InputError("sampler.num_train_samples must be >= 2: the training pair is the best and worst of them")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise InputError("sampler.temperature must be > 0 and sampler.top_p in (0, 1]")
        if self.min_samples_per_prompt < 0 or self.max_retries < 0:
            raise InputError("sampler.min_samples_per_prompt and sampler.max_retries must be >= 0")
        check_precision("sampler.precision", self.precision)
        _positive(self, "pipeline_parallel_size")  # issue 20
        if self.distributed_executor_backend not in VLLM_EXECUTOR_BACKENDS:
            raise InputError(f"sampler.distributed_executor_backend={self.distributed_executor_backend!r} is not one of null, "
                             f"{', '.join(b for b in VLLM_EXECUTOR_BACKENDS if b)} (vLLM's EngineArgs)")
        if self.prompt_format not in ("text", "token_ids"):
            raise InputError(f"sampler.prompt_format={self.prompt_format!r} is not one of text, token_ids")


@dataclass(frozen=True)
class RewardConfig:
    name: str
    kind: str  # one of REWARD_KINDS (the built-in; `_target_` may name your own)
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
    _target_: str = ""  # f(cfg) -> RewardModel; "": REWARD_TARGETS[kind]

    def validate(self):
        if self.kind not in REWARD_KINDS:
            raise InputError(f"reward.kind={self.kind!r} is not one of {', '.join(REWARD_KINDS)}; or pick a reward with reward=<name> (conf/reward/)")
        _check_target("reward", "kind", self.kind, self._target_, REWARD_TARGETS)
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
        from qrpo.objective.quantiles import TIE_POLICIES

        if self.ties not in TIE_POLICIES:
            raise InputError(f"quantiles.ties={self.ties!r} is not one of {', '.join(TIE_POLICIES)}")


@dataclass(frozen=True)
class RegimeConfig:
    """How the training table is built from scored samples (see qrpo/data/regimes.py)."""

    name: str = "best_worst"  # best_worst | random_pairs | offline | pointwise
    leave_one_out: bool = False  # pointwise: all K + M samples train, each quantile among the others
    seed: int = 0  # random_pairs: which candidates are paired
    chosen_column: str = "chosen"  # offline: the prompt table's columns holding the dataset's two completions
    rejected_column: str = "rejected"

    def validate(self):
        if self.name not in REGIMES:
            raise InputError(f"regime.name={self.name!r} is not one of {', '.join(REGIMES)}")
        if self.leave_one_out and self.name != "pointwise":
            raise InputError(f"regime.leave_one_out=true only applies to regime=pointwise, not {self.name}")

    @property
    def pointwise(self) -> bool:
        return self.name == "pointwise"


REGIMES = ("best_worst", "random_pairs", "offline", "pointwise")
PRECISIONS = ("auto", "bf16", "fp32", "no")  # qrpo/precision.py; "no" is accelerate's spelling of fp32


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-5
    epochs: int = 1
    batch_size: int = 8  # examples (pairs, or completions in the pointwise regime) per optimiser step, all processes
    micro_batch_size: int = 4  # examples per forward pass of one process (gradient accumulation makes up the rest)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping (the paper's setting)
    seed: int = 0
    group_by_length: bool = True  # batches of similar length (little padding), in a random order
    share_prompts: bool = True  # run a prompt once for all its completions in a micro-batch (a pair's two sides)
    fused_lm_head: bool = True  # log-probs through a chunked LM head: no [tokens, vocab] logits (qrpo.training.fused_head)
    gradient_checkpointing: bool = False
    mixed_precision: str = "fp32"  # the run's `precision` in conf/ (auto: bf16 autocast where the hardware has bf16 matmul)
    lora_r: int = 0  # > 0: train LoRA adapters of this rank (peft), merged into the model at the end
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    checkpoint_every: int = 0  # optimiser steps between checkpoints (0: none); a failed run resumes from the last
    keep_checkpoints: int = 2

    def validate(self):
        _positive(self, "learning_rate", "epochs", "batch_size", "micro_batch_size")
        if self.batch_size % self.micro_batch_size:
            raise InputError(f"train.batch_size={self.batch_size} must be a multiple of train.micro_batch_size={self.micro_batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"train.warmup_ratio must be in [0, 1); got {self.warmup_ratio}")
        check_precision("train.mixed_precision", self.mixed_precision)
        for name in ("lora_r", "checkpoint_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise InputError(f"train.{name} must be an integer >= 0; got {getattr(self, name)!r}")
        _positive(self, "keep_checkpoints")


TOPOLOGIES = ("none", "ddp", "fsdp", "deepspeed")
LAUNCHERS = ("accelerate", "ray")  # issue 20


@dataclass(frozen=True)
class DistributedConfig:
    """Where training runs: this process, or `accelerate launch` with a topology (see qrpo/training/distributed.py)."""

    topology: str = "none"  # none | ddp | fsdp | deepspeed
    num_processes: int = 1  # processes on the worker (usually its GPU count)
    use_cpu: bool = False  # DDP over gloo on CPU processes (tests, and machines without GPUs)
    accelerate: dict[str, Any] = field(default_factory=dict)  # extra accelerate config keys (fsdp_config, deepspeed_config, ...)
    launcher: str = "accelerate"  # issue 20: accelerate (launch on the step's machine) | ray (Ray Train, qrpo/training/ray_train.py)

    def validate(self):
        if self.launcher not in LAUNCHERS:  # issue 20
            raise InputError(f"distributed.launcher={self.launcher!r} is not one of {', '.join(LAUNCHERS)}")
        if self.launcher == "ray" and self.topology != "ddp":
            raise InputError(f"distributed.launcher=ray runs DDP (Ray Train's TorchTrainer); distributed.topology={self.topology} "
                             "needs distributed.launcher=accelerate: use distributed=ddp distributed.launcher=ray")
        if self.launcher == "ray":
            check_ray("distributed.launcher=ray")
        if self.topology not in TOPOLOGIES:
            raise InputError(f"distributed.topology={self.topology!r} is not one of {', '.join(TOPOLOGIES)}")
        if not (isinstance(self.num_processes, int) and self.num_processes >= 1):
            raise InputError(f"distributed.num_processes must be an integer >= 1; got {self.num_processes!r}")
        if self.topology == "none" and self.num_processes != 1:
            raise InputError("distributed.num_processes > 1 needs distributed.topology=ddp, fsdp or deepspeed")
        if self.use_cpu and self.topology in ("fsdp", "deepspeed"):  # accelerate would train with DDP instead
            raise InputError(f"distributed.use_cpu=true runs DDP only; accelerate has no {self.topology} on CPU processes "
                             "(it would train with DDP instead): use distributed=ddp, or GPUs")

    @property
    def launches(self) -> bool:
        """True when training runs in processes of its own (accelerate launch)."""
        return self.topology != "none"


@dataclass(frozen=True)
class AlpacaEvalConfig:
    """AlpacaEval 2 on the trained policy (see qrpo/evaluation/alpaca_eval.py)."""

    enabled: bool = False
    # JSON/JSONL list of {instruction, output, generator}: the instructions and the baseline's outputs.
    # The shipped offline set, a local copy of the 805 (alpaca_eval_gpt4_baseline.json), or "hub": the
    # 805 from the Hugging Face cache (tatsu-lab/alpaca_eval), never downloaded at run time.
    instructions: str = ""
    annotator: str = "qrpo_text_judge"  # our text-answer judge, or any alpaca_eval config (weighted_alpaca_eval_gpt4_turbo)
    judge_model: str = "gpt-4-1106-preview"  # model name sent to the judge endpoint
    judge_base_url: str = ""  # OpenAI-compatible endpoint; "" = OpenAI's
    judge_api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the judge's key (never the key itself)
    max_instances: int = 0  # 0 = all instructions
    max_new_tokens: int = 256
    seed: int = 1234

    def validate(self):
        if self.enabled and not self.instructions:
            raise InputError("eval.alpaca_eval.instructions is empty; give a JSON/JSONL file of {instruction, output} "
                             "(e.g. data/alpaca_eval/instructions.json) or 'hub'")
        if self.max_instances < 0 or self.max_new_tokens <= 0:
            raise InputError("eval.alpaca_eval.max_instances must be >= 0 and eval.alpaca_eval.max_new_tokens > 0")


@dataclass(frozen=True)
class EvalConfig:
    seeds: Any = (1235,)  # the policy's sampling seeds (a list), or a count n: seeds seed+1 .. seed+n
    samples_per_prompt: int = 1  # policy samples per eval prompt and seed
    ref_samples_per_prompt: int = 4  # reference samples per eval prompt (one draw), for gains, quantiles, lc reward
    max_new_tokens: int = 48
    batch_size: int = 16
    seed: int = 1234  # seed of the reference samples on the eval prompts
    split_seed: int = 0  # cuts the eval prompts into a selection half and a reporting half
    lc_fit_on: str = "reference"  # length-controlled reward: fit the length slope on "reference" or "all" samples
    alpaca_eval: dict[str, Any] = field(default_factory=dict)

    def validate(self):
        _positive(self, "samples_per_prompt", "ref_samples_per_prompt", "max_new_tokens", "batch_size")
        seeds = self.seed_list
        if not seeds or len(set(seeds)) != len(seeds):
            raise InputError(f"eval.seeds must be a non-empty list of distinct integers or a positive count; got {self.seeds!r}")
        if self.lc_fit_on not in ("reference", "all"):
            raise InputError(f"eval.lc_fit_on={self.lc_fit_on!r} is not one of reference, all")
        self.alpaca.validate()

    @property
    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, bool):
            return []
        if isinstance(self.seeds, int):
            return [self.seed + i for i in range(1, self.seeds + 1)]
        try:
            seeds = list(self.seeds)
        except TypeError:
            return []
        return seeds if all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) else []

    @property
    def alpaca(self) -> AlpacaEvalConfig:
        return _build(AlpacaEvalConfig, self.alpaca_eval, "eval.alpaca_eval")


# --- issue 20: where the shards of the data-parallel steps run (qrpo/executor/, conf/executor/) -------------
EXECUTOR_KINDS = ("local", "ray")
SHARDED_STEPS = ("sample", "score", "ref_logps", "eval_logps")


@dataclass(frozen=True)
class ExecutorConfig:
    """executor=local|ray: where the shards of sample, score, ref_logps and eval_logps are computed. Never in
    an artifact key: the rows are the same wherever (and on how many workers) the shards ran."""

    kind: str = "local"  # local: in the step's process, shard after shard | ray: one Ray task per missing shard
    address: str | None = None  # ray: the cluster (auto, host:6379, ray://host:10001); null: $RAY_ADDRESS, else start a local Ray
    shard_rows: int = 256  # rows per shard of score, ref_logps, eval_logps (sample: sampler.shard_prompts prompts)
    cpus_per_shard: float = 1.0  # ray: num_cpus of each shard's task
    gpus_per_shard: float = 0.0  # ray: num_gpus of each shard's task (1: a shard per GPU)
    max_retries: int = 3  # ray: a shard whose worker or node died is redone elsewhere up to this many times
    keep_model_s: float = 60.0  # ray: a worker process keeps its loaded model this long after its last shard
    steps: list[str] = field(default_factory=lambda: list(SHARDED_STEPS))  # ray: the steps whose shards go to Ray
    runtime_env: dict[str, Any] = field(default_factory=dict)  # ray: ray.init(runtime_env=...), e.g. {working_dir: .}
    namespace: str = "qrpo"  # ray: the Ray namespace of the pipeline's driver

    def validate(self):
        if self.kind not in EXECUTOR_KINDS:
            raise InputError(f"executor.kind={self.kind!r} is not one of {', '.join(EXECUTOR_KINDS)}; pick executor=local or executor=ray")
        if not (isinstance(self.shard_rows, int) and self.shard_rows >= 1):
            raise InputError(f"executor.shard_rows must be an integer >= 1; got {self.shard_rows!r}")
        if self.cpus_per_shard < 0 or self.gpus_per_shard < 0 or self.cpus_per_shard + self.gpus_per_shard <= 0:
            raise InputError("executor.cpus_per_shard and executor.gpus_per_shard must be >= 0, and not both 0")
        if self.max_retries < 0 or self.keep_model_s < 0:
            raise InputError("executor.max_retries and executor.keep_model_s must be >= 0")
        unknown = [s for s in self.steps if s not in SHARDED_STEPS]
        if unknown:
            raise InputError(f"executor.steps: {unknown[0]!r} is not one of {', '.join(SHARDED_STEPS)}")
        if self.kind == "ray":
            check_ray("executor=ray")

    def runs(self, step: str) -> str:
        """"ray" when this step's shards go to Ray, else "local"."""
        return "ray" if self.kind == "ray" and step in self.steps else "local"


def check_ray(what: str) -> None:
    """Ray is an optional dependency (the `ray` extra): its absence is one line before any work."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise InputError(f"{what} needs Ray, which is not installed: pip install 'qrpo-platform[ray]' (or 'ray[default,train]')")


def check_precision(key: str, value: Any) -> None:
    if value not in PRECISIONS:
        raise InputError(f"{key}={value!r} is not one of auto, bf16, fp32 (auto: bf16 where the hardware has bf16 matrix units)")


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
    RegimeConfig: "regime",
    TrainConfig: "train",
    DistributedConfig: "distributed",
    EvalConfig: "eval",
    ExecutorConfig: "executor",  # issue 20
}


def build_section(cls, values: dict[str, Any]):
    """`cls(**values)`, with unknown or missing keys and values of the wrong type reported as one
    InputError naming the key, then the section's own `validate()`."""
    return _build(cls, values, _SECTION_NAMES[cls])


def _build(cls, values: dict[str, Any], section: str):
    if not isinstance(values, dict):
        raise InputError(f"{section} must be a mapping of keys (see conf/); got {values!r}")
    hints = _field_types(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; known: {', '.join(sorted(hints))}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values]
    if required:
        raise InputError(f"{section}.{required[0]} is required; set it in the config or with {section}.{required[0]}=...")
    for name, value in values.items():
        check_type(f"{section}.{name}", value, hints[name])
    config = cls(**values)
    object.__setattr__(config, _COMPOSED, copy.deepcopy(values))  # what artifact keys hash: see `composed`
    if hasattr(config, "validate"):
        config.validate()
    return config


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in {f.name for f in dataclasses.fields(cls)}}


def check_type(key: str, value: Any, hint: Any) -> None:
    """Raise one InputError when `value` (from YAML or an override) does not fit the annotation `hint`:
    bool only takes true/false (not 1 or "yes"), int no floats or bools, float takes ints, str no numbers
    (quote them), list[X] and dict by their items' types, Optional also null; Any takes anything."""
    if not _fits(value, hint):
        fix = f"; if you mean the text, quote it: {key}='{value}'" if isinstance(value, (int, float)) and not isinstance(value, bool) and _fits(str(value), hint) else ""
        raise InputError(f"{key} must be {_describe(hint)}; got {value!r}{fix}")


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in args)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is list or origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_fits(item, args[0]) for item in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict) and (len(args) < 2 or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()))
    return not isinstance(hint, type) or isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [_describe(arm) for arm in args if arm is not type(None)]
        return " or ".join(arms) + (" or null" if type(None) in args else "")
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is list or origin in (list, tuple):
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s" if args and args[0] in (int, float, str) else "a list"
    if hint is dict or origin is dict:
        return "a mapping (key: value)"
    return getattr(hint, "__name__", str(hint))


# --- The typed sections of one run, built once after compose + validate (flows/validate.py) ----------------

_COMPOSED = "_composed"  # the mapping a section was built from, kept beside its fields (not a field itself)


def composed(section: Any) -> dict[str, Any]:
    """The mapping a typed section was built from, as the config composed it (a copy): artifact keys hash
    this, not the typed fields with their defaults, so that typing the sections changed no cache key. A
    section made by hand (no mapping behind it) gives all its fields."""
    values = vars(section).get(_COMPOSED)
    if values is not None:
        return copy.deepcopy(values)
    if isinstance(section, AlgorithmConfig):
        return {"_target_": section._target_, **copy.deepcopy(section.arguments)}
    return dataclasses.asdict(section)


@dataclass(frozen=True)
class AlgorithmConfig:
    """The `algorithm` section: `_target_`, the class that implements the method (qrpo.objective.algorithms.QRPO, or
    your own), and the keyword arguments it is built with (beta, transform, ...). The arguments are typed by
    that class's signature: qrpo.config.binding.build_algorithm checks them and builds the algorithm."""

    _target_: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """"qrpo", "dpo": the class `_target_` names, lower case (the `algorithm` tag)."""
        return self._target_.rsplit(".", 1)[-1].lower()

    @property
    def method(self) -> str:
        """"qrpo-log", "dpo": the algorithm, with QRPO's transform (the `method` tag and the comparison's rows)."""
        transform = self.arguments.get("transform")
        return f"{self.name}-{transform}" if transform else self.name

    @property
    def label(self) -> str:
        """"DPO (β=0.1)", "QRPO (β=0.1, identity)", "SFT": the method a run trained, for titles and the summary."""
        beta, transform = self.arguments.get("beta"), self.arguments.get("transform")
        details = [f"β={beta:g}"] if isinstance(beta, (int, float)) and not isinstance(beta, bool) else []
        if transform:
            details.append(str(transform))
        name = self._target_.rsplit(".", 1)[-1]
        return f"{name} ({', '.join(details)})" if details else name


def algorithm_section(values: dict[str, Any]) -> AlgorithmConfig:
    """The `algorithm` mapping as an AlgorithmConfig (its `_target_` is imported, and its arguments checked,
    where the algorithm is built: qrpo.config.binding.build_algorithm)."""
    if not isinstance(values, dict):
        raise InputError(f"algorithm must be a mapping with a _target_ (see conf/algorithm/); got {values!r}")
    section = AlgorithmConfig(values.get("_target_"), {k: v for k, v in values.items() if k != "_target_"})
    object.__setattr__(section, _COMPOSED, copy.deepcopy(values))
    return section


@dataclass(frozen=True)
class Sections:
    """Every typed section of one run. The flow holds this; each task receives only the sections it reads."""

    model: ModelConfig
    dataset: DatasetConfig
    sampler: SamplerConfig
    reward: RewardConfig
    quantiles: QuantileConfig
    train: TrainConfig
    eval: EvalConfig
    regime: RegimeConfig
    distributed: DistributedConfig
    algorithm: AlgorithmConfig
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # issue 20; a config without it: executor=local

    def of(self, cls: type) -> Any:
        """The section of this class (`sections.of(SamplerConfig)` is `sections.sampler`)."""
        return getattr(self, "algorithm" if cls is AlgorithmConfig else _SECTION_NAMES[cls])


def typed_sections(config: dict[str, Any]) -> Sections:
    """The composed config's sections, each built and checked by `build_section` (one InputError naming the
    key), the algorithm's by `algorithm_section`: the one place a run's sections are typed."""
    built = {f.name: build_section(_field_types(Sections)[f.name], config.get(f.name, {} if f.name == "executor" else None))
             for f in dataclasses.fields(Sections) if f.name != "algorithm"}
    return Sections(**built, algorithm=algorithm_section(config.get("algorithm")))
