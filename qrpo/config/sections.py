"""Typed configuration of one run: one dataclass per config section, checked before any work starts.

`build_section(cls, values)` turns a section of the composed Hydra config (a nested dict) into its
dataclass. pydantic checks every value against the field's annotation in strict mode (an int is not a
bool, a number is not a string) and refuses unknown keys; each failure becomes one InputError naming the
key ("train.epochs must be an integer; got 'abc'"). Then the section's own `validate()` checks ranges
and choices. `typed_sections` builds all of a run's sections (`Sections`); each Prefect task receives only
the ones it reads. An artifact key hashes a section as composed (`composed`), not its typed defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pydantic
import pydantic.dataclasses

from qrpo.errors import InputError

# The families of keys a section carries (which keys apply is named by the section's choice key). The
# `_target_` builds the section's object; the object declares its family (e.g. JudgeReward.kind = "judge"),
# and qrpo.config.binding.check_target refuses a `_target_` whose family is not the section's.
MODEL_SOURCES = ("gguf", "pretrained", "config")
SAMPLER_BACKENDS = ("hf", "vllm", "openai")
REWARD_KINDS = ("vader", "sequence_classifier", "tiny_classifier", "code_tests", "callable", "judge")
PRECISIONS = ("auto", "bf16", "fp32", "no")  # qrpo/precision.py; "no" is accelerate's spelling of fp32

_STRICT = pydantic.ConfigDict(strict=True, extra="forbid")


def section(cls):
    """A config section: a frozen dataclass whose values pydantic checks, strictly, when it is built."""
    return pydantic.dataclasses.dataclass(frozen=True, config=_STRICT)(cls)


def _needs_target(name: str, target: str) -> None:
    if not target:
        raise InputError(f"{name}._target_ is empty; name the class or function that builds the {name} "
                         f"(e.g. pick one with {name}=<name>, conf/{name}/)")


@section
class ModelConfig:
    name: str
    source: str  # "gguf" (a file in an installed package), "pretrained" (hub name or folder), "config" (tiny)
    path: str = ""  # pretrained: hub name or local folder
    package: str = ""  # gguf: Python package that ships the file
    file: str = ""  # gguf: file name inside the package
    architecture: dict[str, Any] = field(default_factory=dict)  # config: LlamaConfig fields
    seed: int = 0  # config: initialisation seed
    _target_: str = ""  # builds (model, tokenizer) from this section: qrpo.models.GGUFModel.load, ...

    FAMILY: ClassVar[str] = "source"

    def validate(self):
        if self.source not in MODEL_SOURCES:
            raise InputError(f"model.source={self.source!r} is not one of {', '.join(MODEL_SOURCES)}")
        _needs_target("model", self._target_)


@section
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


@section
class SamplerConfig:
    """How completions are drawn (qrpo/sampling/). Only `seed`, `max_new_tokens`, `temperature` and `top_p`
    (with the model and the prompts) determine a completion; the other keys say how fast it is drawn."""

    backend: str = "hf"  # which keys apply: one of SAMPLER_BACKENDS (`_target_` builds the sampler)
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
    # vLLM's own distributed executor (vLLM's EngineArgs names), for a model across GPUs of several nodes
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
    _target_: str = "qrpo.sampling.hf.HFSampler.from_config"  # f(cfg, model_path, params, tokenizer) -> Sampler
    FAMILY: ClassVar[str] = "backend"

    def validate(self):
        _positive(self, "num_ref_samples", "num_train_samples", "max_new_tokens", "batch_size", "shard_prompts",
                  "tensor_parallel_size", "data_parallel_size", "concurrency", "timeout_s")
        if self.backend not in SAMPLER_BACKENDS:
            raise InputError(f"sampler.backend={self.backend!r} is not one of {', '.join(SAMPLER_BACKENDS)}")
        _needs_target("sampler", self._target_)
        if self.num_train_samples < 2:
            raise InputError("sampler.num_train_samples must be >= 2: the training pair is the best and worst of them")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise InputError("sampler.temperature must be > 0 and sampler.top_p in (0, 1]")
        if self.min_samples_per_prompt < 0 or self.max_retries < 0:
            raise InputError("sampler.min_samples_per_prompt and sampler.max_retries must be >= 0")
        check_precision("sampler.precision", self.precision)
        _positive(self, "pipeline_parallel_size")
        if self.distributed_executor_backend not in VLLM_EXECUTOR_BACKENDS:
            raise InputError(f"sampler.distributed_executor_backend={self.distributed_executor_backend!r} is not one of null, "
                             f"{', '.join(b for b in VLLM_EXECUTOR_BACKENDS if b)} (vLLM's EngineArgs)")
        if self.prompt_format not in ("text", "token_ids"):
            raise InputError(f"sampler.prompt_format={self.prompt_format!r} is not one of text, token_ids")


@section
class RewardConfig:
    name: str
    kind: str | None = None  # which keys apply: one of REWARD_KINDS, or null for a reward of your own (`_target_` builds it)
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
    _target_: str = ""  # f(cfg) -> RewardModel, e.g. qrpo.rewards.vader.VaderReward.from_config
    FAMILY: ClassVar[str] = "kind"

    def validate(self):
        if self.kind is not None and self.kind not in REWARD_KINDS:
            raise InputError(f"reward.kind={self.kind!r} is not one of {', '.join(REWARD_KINDS)}; or pick a reward with reward=<name> (conf/reward/)")
        _positive(self, "batch_size", "wall_seconds", "cpu_seconds", "memory_mb", "max_concurrency", "timeout", "max_tokens")
        if self.truncation not in ("right", "left"):
            raise InputError(f"reward.truncation={self.truncation!r} is not one of right, left")
        if self.code_block not in ("last", "first"):
            raise InputError(f"reward.code_block={self.code_block!r} is not one of last, first")
        for name in ("max_length", "max_workers", "max_tests", "max_retries"):
            if getattr(self, name) < 0:
                raise InputError(f"reward.{name} must be >= 0; got {getattr(self, name)}")
        _needs_target("reward", self._target_)


@section
class QuantileConfig:
    ties: str = "le"

    def validate(self):
        from qrpo.objective.quantiles import TIE_POLICIES

        if self.ties not in TIE_POLICIES:
            raise InputError(f"quantiles.ties={self.ties!r} is not one of {', '.join(TIE_POLICIES)}")


@section
class RegimeConfig:
    """How the training table is built from scored samples (qrpo/data/regimes.py: one class per regime)."""

    name: str = "best_worst"  # which regime (best_worst, random_pairs, offline, pointwise, or your own): as its class declares
    leave_one_out: bool = False  # pointwise: all K + M samples train, each quantile among the others
    seed: int = 0  # random_pairs: which candidates are paired
    chosen_column: str = "chosen"  # offline: the prompt table's columns holding the dataset's two completions
    rejected_column: str = "rejected"
    _target_: str = "qrpo.data.regimes.BestWorst"  # the Regime class, built with this section
    FAMILY: ClassVar[str] = "name"

    def validate(self):
        if self.leave_one_out and self.name != "pointwise":
            raise InputError(f"regime.leave_one_out=true only applies to regime=pointwise, not {self.name}")
        _needs_target("regime", self._target_)


@section
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
LAUNCHERS = ("accelerate", "ray")


@section
class DistributedConfig:
    """Where training runs: this process, or `accelerate launch` with a topology (see qrpo/training/distributed.py)."""

    topology: str = "none"  # none | ddp | fsdp | deepspeed
    num_processes: int = 1  # processes on the worker (usually its GPU count)
    use_cpu: bool = False  # DDP over gloo on CPU processes (tests, and machines without GPUs)
    accelerate: dict[str, Any] = field(default_factory=dict)  # extra accelerate config keys (fsdp_config, deepspeed_config, ...)
    launcher: str = "accelerate"  # accelerate (launch on the step's machine) | ray (Ray Train, qrpo/training/ray_train.py)

    def validate(self):
        if self.launcher not in LAUNCHERS:
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


@section
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


@section
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


PLAN_WORK = ("decode", "prefill", "train")  # the kinds of work qrpo-plan prices (qrpo/plan/)
PLAN_SPREADS = ("cluster", "config")


@section
class PlanConfig:
    """`qrpo-plan`'s cluster and assumptions (conf/plan/default.yaml; qrpo/plan/): never part of a pipeline run."""

    gpu: str = "cpu"  # a device of qrpo/plan/throughput.yaml: cpu (this 2-core machine kind), h100, h200, a100, l40s
    num_gpus: int = 1  # devices in the cluster, all nodes together
    nodes: int = 1  # nodes the devices sit in (a pipeline step runs on one node: spread=config caps a step there)
    spread: str = "cluster"  # cluster: each step over all num_gpus; config: the devices the config gives each step
    precision: str | None = None  # null: what each step's precision resolves to on that device; bf16 | fp32
    params: float | None = None  # the policy's parameter count, where the config cannot give it (a hub name not in the table)
    reward_params: float | None = None  # the reward model's, likewise
    prompt_tokens: float | None = None  # mean prompt tokens after the chat template; null: estimated from the data
    completion_tokens: float | None = None  # mean completion tokens; null: max_new_tokens (an upper bound)
    train_prompts: int | None = None  # where the dataset cannot be read or is not in the table
    eval_prompts: int | None = None
    peak_tflops: float | None = None  # one device's dense peak in the precision used (overrides the table)
    mfu: dict[str, Any] = field(default_factory=dict)  # {decode, prefill, train}: fractions of the peak (override the table)
    tokens_per_s: dict[str, Any] = field(default_factory=dict)  # {decode, prefill, train}: measured, per device (override mfu)
    table: str = ""  # another throughput table (YAML); "": qrpo/plan/throughput.yaml

    def validate(self):
        _positive(self, "num_gpus", "nodes")
        if self.num_gpus % self.nodes:
            raise InputError(f"plan.num_gpus={self.num_gpus} must be a multiple of plan.nodes={self.nodes} (devices per node)")
        if self.spread not in PLAN_SPREADS:
            raise InputError(f"plan.spread={self.spread!r} is not one of {', '.join(PLAN_SPREADS)}")
        if self.precision not in (None, "bf16", "fp32"):
            raise InputError(f"plan.precision={self.precision!r} is not one of bf16, fp32 (or null: what the config resolves to)")
        for name in ("params", "reward_params", "prompt_tokens", "completion_tokens", "train_prompts", "eval_prompts", "peak_tflops"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"plan.{name} must be a positive number or null; got {value!r}")
        for section in ("mfu", "tokens_per_s"):
            values = getattr(self, section)
            unknown = sorted(set(values) - set(PLAN_WORK))
            if unknown:
                raise InputError(f"unknown key plan.{section}.{unknown[0]}; valid keys: {', '.join(PLAN_WORK)}")
            for work, value in values.items():
                if value is None:
                    continue
                check_type(f"plan.{section}.{work}", value, float)
                if not (value > 0 and math.isfinite(value)) or (section == "mfu" and value > 1):
                    limit = "in (0, 1]" if section == "mfu" else "a positive number"
                    raise InputError(f"plan.{section}.{work} must be {limit} or null; got {value!r}")


# --- where the shards of the data-parallel steps run (qrpo/executor/, conf/executor/) -------------
EXECUTOR_KINDS = ("local", "ray")
SHARDED_STEPS = ("sample", "score", "ref_logps", "eval_logps")


@section
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
    PlanConfig: "plan",


    ExecutorConfig: "executor",
}


def build_section(cls, values: dict[str, Any]):
    """`cls(**values)`, every value checked by pydantic; unknown or missing keys and values of the wrong
    type are reported as one InputError naming the key; then the section's own `validate()`."""
    return _build(cls, values, _SECTION_NAMES[cls])


def _build(cls, values: dict[str, Any], section: str):
    if not isinstance(values, dict):
        raise InputError(f"{section} must be a mapping of keys (see conf/); got {values!r}")
    try:
        config = cls(**values)
    except pydantic.ValidationError as err:
        raise _first_error(cls, values, section, err.errors()) from None
    object.__setattr__(config, _COMPOSED, copy.deepcopy(values))  # what artifact keys hash: see `composed`
    config.validate()
    return config


def _first_error(cls, values: dict[str, Any], section: str, errors: list[dict]) -> InputError:
    """The one error to report of pydantic's list: unknown keys (all of them), else the first missing key,
    else the first key (in the order given) whose value does not fit its annotation."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "unexpected_keyword_argument")
    if unknown:
        return InputError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; known: {', '.join(sorted(fields))}")
    missing = [name for name in fields if any(e["type"] == "missing" and e["loc"][0] == name for e in errors)]
    if missing:
        return InputError(f"{section}.{missing[0]} is required; set it in the config or with {section}.{missing[0]}=...")
    wrong = {e["loc"][0] for e in errors}
    name = next(name for name in values if name in wrong)
    return _type_error(f"{section}.{name}", values[name], _field_types(cls)[name])


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in {f.name for f in dataclasses.fields(cls)}}


@functools.cache
def _adapter(hint: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(hint, config=pydantic.ConfigDict(strict=True))


def _fits(value: Any, hint: Any) -> bool:
    try:
        _adapter(hint).validate_python(value)
    except pydantic.ValidationError:
        return False
    return True


def check_type(key: str, value: Any, hint: Any) -> None:
    """Raise one InputError when `value` (from YAML or an override) does not fit the annotation `hint`, in
    pydantic's strict mode: bool only takes true/false (not 1 or "yes"), int no floats or bools, float takes
    ints, str no numbers (quote them), list[X] and dict by their items' types, Optional also null."""
    if not _fits(value, hint):
        raise _type_error(key, value, hint)


def _type_error(key: str, value: Any, hint: Any) -> InputError:
    quote = isinstance(value, (int, float)) and not isinstance(value, bool) and _fits(str(value), hint)
    fix = f"; if you mean the text, quote it: {key}='{value}'" if quote else ""
    return InputError(f"{key} must be {_describe(hint)}; got {value!r}{fix}")


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
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # a config without it: executor=local

    def of(self, cls: type) -> Any:
        """The section of this class (`sections.of(SamplerConfig)` is `sections.sampler`)."""
        return getattr(self, "algorithm" if cls is AlgorithmConfig else _SECTION_NAMES[cls])


def typed_sections(config: dict[str, Any]) -> Sections:
    """The composed config's sections, each built and checked by `build_section` (one InputError naming the
    key), the algorithm's by `algorithm_section`: the one place a run's sections are typed."""
    built = {f.name: build_section(_field_types(Sections)[f.name], config.get(f.name, {} if f.name == "executor" else None))
             for f in dataclasses.fields(Sections) if f.name != "algorithm"}
    return Sections(**built, algorithm=algorithm_section(config.get("algorithm")))
