"""What each step of a run costs: tokens, FLOPs, device-hours, wall time and disk, from the typed sections.

The formula (the throughput table, qrpo/plan/throughput.yaml, says it in full and gives its sources):

    FLOPs    = c * N * tokens     N: the parameters a token is multiplied by (policy or reward model)
                                  c = 2 forward (sampling: generated tokens + each prompt once; scoring;
                                  reference and eval log-probs: prompt + completion), 6 training
                                  (8 with gradient checkpointing, 4 with LoRA, 6 with both)
    seconds  = FLOPs / (peak[precision] * mfu[precision][work])   device-seconds, work = decode | prefill | train
               (or tokens / plan.tokens_per_s[work], a measured figure)
    wall     = seconds / devices + loads    (each device loads its weights: bytes / load_gb_per_s, + startup_s)
    device-h = (seconds + loads * devices) / 3600

Every step is built as the pipeline runs it (flows/pipeline.py): the same regimes, the same samples per prompt,
the same steps per eval seed. A step's `share` key says which artifact it writes: in a sweep, steps with equal
keys are one artifact, computed once (`combine`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qrpo.config.sections import DatasetConfig, PlanConfig, Sections, composed
from qrpo.errors import InputError
from qrpo.plan.sizes import ModelSize, policy_size, reward_size
from qrpo.plan.table import Device, device as table_device, disk as disk_constants, known_dataset, load_table

DEFAULT_PROMPT_CHARS = 400.0  # a one-paragraph instruction; assumed where the data cannot be read


@dataclass(frozen=True)
class Shapes:
    """The run's sizes: prompt counts and mean token lengths."""

    train_prompts: int
    eval_prompts: int
    prompt_tokens: float  # after the chat template
    train_completion: float  # mean completion tokens of the train samples
    eval_completion: float  # of eval samples (reference and policy)
    notes: tuple[str, ...] = ()  # where each number comes from


@dataclass(frozen=True)
class Step:
    name: str
    work: str  # decode | prefill | train | none (not on the device: a CPU reward, an API)
    rows: int  # completions, or training examples (pairs count once)
    tokens: float  # tokens processed: decode counts generated tokens; the others every position
    flops: float
    precision: str
    loads: tuple[float, ...] = ()  # bytes of each model load (paid on every device the step runs on)
    startups: int = 0  # engine or process-group starts
    devices: int = 1
    disk: float = 0.0  # bytes kept: Parquet tables, weights
    share: str | None = None  # equal keys in a sweep: one artifact, computed once
    detail: str = ""
    scratch: float = 0.0  # bytes held while the step runs, removed when it finishes (training checkpoints)


@dataclass(frozen=True)
class Priced:
    step: Step
    compute_s: float  # device-seconds of compute, all devices together
    load_s: float  # seconds of loading and startup, per device
    device_hours: float
    wall_s: float
    mfu: float | None  # the utilisation assumed (None: a measured tokens/s, or off the device)
    tokens_per_s: float | None  # per device


@dataclass
class JobPlan:
    """One run: its steps (with the samples per prompt it draws) and what they rest on."""

    label: str
    method: str
    steps: list[Step]
    policy: ModelSize
    reward: ModelSize | None
    shapes: Shapes
    device: Device
    plan: PlanConfig
    notes: list[str] = field(default_factory=list)


# --- sizes of the data ---------------------------------------------------------------------------------------


def _split_counts(dataset: DatasetConfig, rows: dict[str, int], where: str) -> tuple[int, int]:
    """Train and eval prompts as qrpo.data.load_prompts cuts them, from the split sizes alone."""
    if dataset.train_split not in rows:
        raise InputError(f"{where} has no split {dataset.train_split!r} (splits: {', '.join(rows)}); set dataset.train_split")
    if dataset.eval_split is not None:
        if dataset.eval_split not in rows:
            raise InputError(f"{where} has no split {dataset.eval_split!r} (splits: {', '.join(rows)}); set dataset.eval_split")
        train, evals = rows[dataset.train_split], rows[dataset.eval_split]
    elif dataset.split_column is not None:
        raise InputError(f"{where}: a split column cannot be counted from the table; set plan.train_prompts and plan.eval_prompts")
    else:  # a seeded split of one split, as load_prompts cuts it
        total = rows[dataset.train_split]
        evals = max(1, round(dataset.eval_fraction * total))
        train = total - evals
    return (min(train, dataset.max_train_prompts) if dataset.max_train_prompts else train,
            min(evals, dataset.max_eval_prompts) if dataset.max_eval_prompts else evals)


def _read_prompts(dataset: DatasetConfig) -> tuple[int, int, float]:
    """Counts and mean prompt characters of a readable dataset (a local file or folder, or a cached hub dataset)."""
    from qrpo import data

    table = data.load_prompts(dataset)
    splits = table.column("split").to_pylist()
    if "messages" in table.column_names:
        chars = [sum(len(m.get("content") or "") for m in json.loads(text)) for text in table.column("messages").to_pylist()]
    else:
        chars = [len(text) for text in table.column("prompt").to_pylist()]
    return splits.count("train"), splits.count("eval"), sum(chars) / max(len(chars), 1)


def data_shapes(sections: Sections, plan: PlanConfig, policy: ModelSize, table: dict[str, Any]) -> Shapes:
    dataset, notes = sections.dataset, []
    counts, chars, where = None, None, None
    if plan.train_prompts is not None and plan.eval_prompts is not None:
        counts, where = (plan.train_prompts, plan.eval_prompts), "plan.train_prompts / plan.eval_prompts"
    row = known_dataset(table, dataset.path, dataset.name)
    local = dataset.data_files is not None or Path(dataset.path).expanduser().exists()
    if (counts is None or plan.prompt_tokens is None) and (local or row is None):
        try:
            train, evals, chars = _read_prompts(dataset)
            counts = counts or (train, evals)
            where = where or f"read from {dataset.path}"
        except InputError as err:
            if counts is None:
                raise InputError(f"{err}; for a plan without the data, set plan.train_prompts, plan.eval_prompts (and plan.prompt_tokens)") from None
    if counts is None and row is not None:
        counts = _split_counts(dataset, {k: int(v) for k, v in (row.get("rows") or {}).items()}, dataset.path)
        where = f"throughput table: {dataset.path}, {' / '.join(f'{v:,} {k}' for k, v in row['rows'].items())}"
    if chars is None and row is not None and row.get("prompt_chars"):
        chars = float(row["prompt_chars"])
        chars_note = f"{chars:.0f} characters (throughput table, assumed)"
    elif chars is None:
        chars, chars_note = DEFAULT_PROMPT_CHARS, f"{DEFAULT_PROMPT_CHARS:.0f} characters (assumed)"
    else:
        chars_note = f"{chars:.1f} characters"
    train, evals = (plan.train_prompts or counts[0]), (plan.eval_prompts or counts[1])
    notes.append(f"{train:,} train / {evals:,} eval prompts ({where})")
    if plan.prompt_tokens is not None:
        prompt = float(plan.prompt_tokens)
        notes.append(f"prompt {prompt:.1f} tokens (plan.prompt_tokens)")
    else:
        prompt = policy.template_tokens + chars / policy.chars_per_token
        notes.append(f"prompt {prompt:.1f} tokens (estimated: {policy.template_tokens:.0f} of chat template + {chars_note} / "
                     f"{policy.chars_per_token:g} per token)")
    train_new, eval_new = sections.sampler.max_new_tokens, sections.eval.max_new_tokens
    if plan.completion_tokens is not None:
        train_c, eval_c = min(plan.completion_tokens, train_new), min(plan.completion_tokens, eval_new)
        notes.append(f"completions {train_c:.0f} train / {eval_c:.0f} eval tokens (plan.completion_tokens, at most max_new_tokens)")
    else:
        train_c, eval_c = float(train_new), float(eval_new)
        notes.append(f"completions {train_c:.0f} train / {eval_c:.0f} eval tokens (max_new_tokens: an upper bound; "
                     "plan.completion_tokens sets a mean)")
    return Shapes(int(train), int(evals), prompt, train_c, eval_c, tuple(notes))


# --- precision, devices, keys --------------------------------------------------------------------------------


def resolved_precision(choice: str, plan: PlanConfig, device: Device) -> str:
    """What a step's precision key resolves to on the planned device (plan.precision overrides every step).
    `cpu` is this machine kind: auto resolves on the machine running the plan, as a run here would."""
    if plan.precision is not None:
        return plan.precision
    if device.key == "cpu":
        from qrpo import precision

        return precision.resolve(choice, "cpu")
    if choice == "auto":
        return "bf16" if device.bf16 else "fp32"
    return "fp32" if choice == "no" else choice


def reward_precision(dtype: str, plan: PlanConfig, device: Device) -> str:
    if plan.precision is not None:
        return plan.precision
    if dtype == "auto":  # qrpo/rewards/classifier.py: bfloat16 on a GPU, float32 on a CPU
        return "fp32" if device.key == "cpu" else "bf16"
    return "fp32" if dtype == "float32" else "bf16"  # bfloat16, float16: the same tensor-core rate


def step_devices(sections: Sections, plan: PlanConfig, kind: str) -> int:
    """Devices a step runs on: all of the cluster (spread=cluster), or what the config gives it (spread=config),
    at most one node's (a pipeline step runs on one worker)."""
    if plan.spread == "cluster":
        return plan.num_gpus
    per_node = plan.num_gpus // plan.nodes
    sampler = sections.sampler
    wanted = {"sample": sampler.tensor_parallel_size * sampler.data_parallel_size if sampler.backend == "vllm" else 1,
              "train": sections.distributed.num_processes}.get(kind, 1)
    return max(1, min(wanted, per_node))


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


# --- the steps of one run ------------------------------------------------------------------------------------


def samples_drawn(sections: Sections, at_least: int = 0) -> int:
    """Completions per train prompt the sample step draws: max(K + M, sampler.min_samples_per_prompt, at_least)."""
    sampler = sections.sampler
    return max(sampler.num_train_samples + sampler.num_ref_samples, sampler.min_samples_per_prompt, at_least)


def job_plan(config: dict[str, Any], sections: Sections, plan: PlanConfig, at_least: int = 0, label: str = "") -> JobPlan:
    """The steps of one run of this config; `at_least`: a sweep's largest K + M (its train prompts are sampled
    once at that size, sampler.min_samples_per_prompt, as flows/sweep.py does)."""
    from qrpo.config.binding import build_algorithm
    from qrpo.data.regimes import check_algorithm_fits

    table = load_table(plan.table)
    dev = table_device(plan, table)
    algorithm = build_algorithm(sections.algorithm)
    check_algorithm_fits(sections.regime, algorithm)  # DPO on pointwise data: the pipeline's own one-line refusal
    policy = policy_size(sections.model, plan, table)
    reward = reward_size(sections.reward, plan, table)
    shapes = data_shapes(sections, plan, policy, table)
    steps = _steps(config, sections, plan, dev, table, policy, reward, shapes, algorithm, samples_drawn(sections, at_least))
    notes = _notes(sections, plan, dev, policy, reward)
    return JobPlan(label, sections.algorithm.label, steps, policy, reward, shapes, dev, plan, notes)


def _table_bytes(rows: float, prompt: float, completion: float, constants: dict[str, float], completions: int = 1) -> float:
    """A Parquet table of `rows` rows, each a prompt's ids and `completions` completions' ids and text."""
    return rows * (constants["prompt"] * prompt + constants["completion"] * completion * completions)


def _steps(config, sections: Sections, plan: PlanConfig, dev: Device, table, policy: ModelSize, reward: ModelSize | None,
           shapes: Shapes, algorithm, drawn: int) -> list[Step]:
    sampler, regime, train, evals = sections.sampler, sections.regime, sections.train, sections.eval
    constants = disk_constants(table)
    P, E, Lp = shapes.train_prompts, shapes.eval_prompts, shapes.prompt_tokens
    Lc, Le = shapes.train_completion, shapes.eval_completion
    K, M = sampler.num_train_samples, sampler.num_ref_samples
    N = policy.flop_params
    weights = constants["weights"] * policy.params  # the fp32 policy folder every step loads
    sample_precision = resolved_precision(sampler.precision, plan, dev)
    train_precision = resolved_precision(train.mixed_precision, plan, dev)
    score_precision = reward_precision(sections.reward.dtype, plan, dev)
    reward_weights = (2 if score_precision == "bf16" else 4) * reward.params if reward else 0.0
    gpus = {kind: step_devices(sections, plan, kind) for kind in ("sample", "score", "logps", "train")}
    model, data = composed(sections.model), composed(sections.dataset)
    sampling = {k: composed(sampler).get(k) for k in ("seed", "max_new_tokens", "temperature", "top_p", "drop_truncated")}
    pool = _key("train-samples", model, data, sampling, sample_precision)
    eval_pool = _key("eval-reference", model, data, {k: composed(evals).get(k) for k in ("seed", "max_new_tokens", "ref_samples_per_prompt")},
                     {k: sampling[k] for k in ("temperature", "top_p", "drop_truncated")}, sample_precision)
    scorer = _key(composed(sections.reward), score_precision)
    job = _key({k: v for k, v in config.items() if k not in ("run_name", "plan", "hydra")}, train_precision, sample_precision)
    steps: list[Step] = []

    def sample(name, prompts, per_prompt, completion, share, loads=1, detail=""):
        rows = prompts * per_prompt
        generated = rows * completion
        return Step(name, "decode", rows, generated, 2 * N * (generated + prompts * Lp), sample_precision, (weights,) * loads,
                    loads, gpus["sample"], _table_bytes(rows, Lp, completion, constants), share, detail)

    def score(name, rows, completion, share):
        if reward is None:
            return Step(name, "none", rows, 0.0, 0.0, "-", disk=_table_bytes(rows, Lp, completion, constants), share=share,
                        detail=f"{sections.reward.kind}: off the device")
        text = max(Lp - policy.template_tokens, 0.0) + completion  # in the policy's tokens; the reward counts its own
        per_row = reward.template_tokens + text * policy.chars_per_token / reward.chars_per_token
        if sections.reward.max_length:
            per_row = min(per_row, sections.reward.max_length)
        tokens = rows * per_row
        return Step(name, "prefill", rows, tokens, 2 * reward.flop_params * tokens, score_precision, (reward_weights,), 0, gpus["score"],
                    _table_bytes(rows, Lp, completion, constants), share)

    steps.append(Step("prepare model", "none", 0, 0.0, 0.0, "-", disk=weights, share=_key("model", model),
                      detail="fp32 weights, once (not priced)"))
    steps.append(sample("sample train", P, drawn, Lc, pool, detail=f"K+M = {drawn}" if drawn == K + M else f"K+M = {K + M}, drawn {drawn}"))
    steps.append(sample("sample eval reference", E, evals.ref_samples_per_prompt, Le, eval_pool))
    steps.append(score("score train", P * drawn, Lc, _key(pool, scorer)))
    steps.append(score("score eval reference", E * evals.ref_samples_per_prompt, Le, _key(eval_pool, scorer)))
    if regime.name == "offline":  # the dataset's own chosen/rejected, scored by the same reward
        steps.append(score("score offline pairs", 2 * P, Lc, _key("offline", data, composed(regime), scorer)))

    # the training table: rows and completions per row, as qrpo/data/regimes.py builds it
    if regime.name == "pointwise":
        examples, sides = P * (K + M if regime.leave_one_out else K), 1
        shape = f"pointwise, {'all K+M' if regime.leave_one_out else 'K'} = {K + M if regime.leave_one_out else K} per prompt"
    else:
        pairs = {"best_worst": 1, "offline": 1, "random_pairs": K // 2}[regime.name]
        examples, sides = P * pairs, 2
        shape = f"{regime.name}, {pairs} pair(s) per prompt"
    data_key = _key(pool, scorer, composed(regime), K, M, composed(sections.quantiles))
    training_table = 2 * _table_bytes(examples, Lp, Lc, constants, sides)  # training_data, and its copy with the reference log-probs
    if algorithm.needs_reference:
        tokens = examples * sides * (Lp + Lc)  # each side with its prompt (qrpo/flows tasks.ref_logps)
        steps.append(Step("reference log-probs", "prefill", examples * sides, tokens, 2 * N * tokens, train_precision, (weights,), 0,
                          gpus["logps"], training_table, _key(data_key, train_precision), shape))
        training_table = 0.0
    shared_prompt = sides == 2 and train.share_prompts and not train.gradient_checkpointing
    per_example = (1 if shared_prompt or sides == 1 else 2) * Lp + sides * Lc
    tokens = train.epochs * examples * per_example
    factor = 6 + (2 if train.gradient_checkpointing else 0) - (2 if train.lora_r else 0)
    saved = constants["weights"] * policy.params  # the trained policy, fp32
    checkpoints = (train.keep_checkpoints * (constants["weights"] if train.lora_r else constants["checkpoint"]) * policy.params
                   if train.checkpoint_every else 0.0)  # in the step's partial folder, removed once the policy is written
    steps.append(Step("train", "train", examples * train.epochs, tokens, factor * N * tokens, train_precision, (weights,),
                      1, gpus["train"], saved + training_table, job,
                      f"{train.epochs} epoch(s) x {examples:,} examples, {factor}N per token", scratch=checkpoints))
    seeds = len(evals.seed_list)
    steps.append(sample("sample policy (eval)", E, evals.samples_per_prompt * seeds, Le, job, loads=seeds,
                        detail=f"{seeds} seed(s) x {evals.samples_per_prompt} per prompt"))
    steps.append(score("score policy samples", E * evals.samples_per_prompt * seeds, Le, job))
    rows = E * evals.samples_per_prompt * seeds
    tokens = 2 * rows * (Lp + Le)  # log pi and log pi_ref of every policy sample
    steps.append(Step("eval log-probs", "prefill", rows, tokens, 2 * N * tokens, train_precision, (weights, weights), 0, gpus["logps"],
                      2 * _table_bytes(rows, Lp, Le, constants), job, "policy and pi_ref"))
    alpaca = evals.alpaca
    if alpaca.enabled:
        count = alpaca.max_instances or _alpaca_count(alpaca.instructions, table)
        steps.append(sample("sample AlpacaEval", count, 1, float(plan.completion_tokens and min(plan.completion_tokens, alpaca.max_new_tokens)
                                                                  or alpaca.max_new_tokens), job, detail="the judge is an API: not priced"))
    return steps


def _alpaca_count(instructions: str, table: dict[str, Any]) -> int:
    path = Path(instructions).expanduser()
    if instructions != "hub" and path.is_file():
        text = path.read_text()
        try:
            return len(json.loads(text))
        except json.JSONDecodeError:
            return sum(1 for line in text.splitlines() if line.strip())
    return int(table.get("alpaca_eval_instructions", 805))


def _notes(sections: Sections, plan: PlanConfig, dev: Device, policy: ModelSize, reward: ModelSize | None) -> list[str]:
    notes = []
    if reward is None:
        notes.append(f"reward {sections.reward.name} ({sections.reward.kind}) is not a model on the device: its scoring is not priced")
    if dev.key == "cpu" and plan.precision is None:
        sample, train = (resolved_precision(c, plan, dev) for c in (sections.sampler.precision, sections.train.mixed_precision))
        notes.append(f"precision resolved on the machine running qrpo-plan, as a run here would (qrpo/precision.py): sampling {sample}, "
                     f"log-probs and training {train}; the cpu row was measured on an AVX512-BF16 EPYC: plan.precision=bf16|fp32 fixes it")
    if sections.sampler.backend == "hf" and dev.key != "cpu":
        notes.append("sampler=hf on a GPU: the decode figure is vLLM's (continuous batching); transformers' generate reaches less, "
                     "use sampler=vllm or set plan.tokens_per_s.decode")
    if plan.spread == "cluster" and plan.num_gpus > 1:
        configured = dataclasses.replace(plan, spread="config")
        given = {kind: step_devices(sections, configured, kind) for kind in ("sample", "train", "score")}
        if min(given.values()) < plan.num_gpus:
            notes.append(f"wall times spread every step over all {plan.num_gpus} devices; as configured, sampling runs on "
                         f"{given['sample']} (sampler=vllm: tensor_parallel_size x data_parallel_size), training on {given['train']} "
                         f"(distributed.num_processes), scoring and log-probs on 1, each step on one node: plan.spread=config prices that")
    train, constants = sections.train, disk_constants(load_table(plan.table))
    each = (constants["weights"] if train.lora_r else constants["checkpoint"]) * policy.params
    if train.checkpoint_every:
        notes.append(f"checkpoints: train.keep_checkpoints={train.keep_checkpoints} x {size(each)} (fp32 weights"
                     f"{'' if train.lora_r else ' and AdamW moments'}) = {size(train.keep_checkpoints * each)} more disk while a "
                     f"job trains (every {train.checkpoint_every} optimiser steps; removed when its policy is written)")
    else:
        notes.append(f"checkpoints: none (train.checkpoint_every=0); each would hold {size(each)} (fp32 weights"
                     f"{'' if train.lora_r else ' and AdamW moments'}), train.keep_checkpoints={train.keep_checkpoints} of them")
    if policy.params < 2e7:
        notes.append(f"a {policy.params / 1e6:.2g}M-parameter policy: per-call overheads (Python, the tokenizer, Prefect's tasks), "
                     "which the plan does not price, outweigh its FLOPs; the MFU figures hold for models of ~100M parameters and up")
    if dev.memory_gb:
        per_device, state, topology, n = training_memory(sections, plan, policy)
        if per_device > dev.memory_gb * 1e9:
            notes.append(f"training state {state / 1e9:.0f} GB (fp32 weights{'' if sections.train.lora_r else ', gradients, AdamW moments'}) is "
                         f"{per_device / 1e9:.0f} GB per device with distributed={topology} over {n}: more than one {dev.key}'s "
                         f"{dev.memory_gb} GB before activations; shard it (distributed=fsdp) or set train.lora_r")
    return notes


def training_memory(sections: Sections, plan: PlanConfig, policy: ModelSize) -> tuple[float, float, str, int]:
    """(bytes per device, bytes in all, topology, devices) of the training state before activations: fp32
    weights (4 bytes a parameter), and unless LoRA trains, fp32 gradients (4) and AdamW's two moments (8).
    FSDP and ZeRO-3 shard all of it; ZeRO-1 the optimiser's moments; DDP and a single process none."""
    train, distributed = sections.train, sections.distributed
    n = step_devices(sections, plan, "train")
    weights, grads, moments = 4.0 * policy.params, (0.0 if train.lora_r else 4.0 * policy.params), (0.0 if train.lora_r else 8.0 * policy.params)
    state = weights + grads + moments
    zero_stage = (distributed.accelerate.get("deepspeed_config") or {}).get("zero_stage", 1)
    if distributed.topology == "fsdp" or (distributed.topology == "deepspeed" and zero_stage == 3):
        per_device = state / n
    elif distributed.topology == "deepspeed":
        per_device = weights + grads + moments / n
    else:
        per_device = state
    return per_device, state, distributed.topology, n


# --- pricing -------------------------------------------------------------------------------------------------


def price(step: Step, dev: Device) -> Priced:
    """Device time of one step: compute over the devices it runs on, plus each device's loading."""
    if step.work == "none":
        return Priced(step, 0.0, 0.0, 0.0, 0.0, None, None)
    measured = dev.tokens_per_s.get(step.work)
    if measured:
        compute, mfu = step.tokens / measured, None
    else:
        mfu = dev.mfu[step.precision][step.work]
        compute = step.flops / dev.rate(step.precision, step.work)
    load = sum(step.loads) / (dev.load_gb_per_s * 1e9) + step.startups * dev.startup_s
    wall = compute / step.devices + load
    hours = (compute + load * step.devices) / 3600
    return Priced(step, compute, load, hours, wall, mfu, step.tokens / compute if compute else None)


@dataclass
class Totals:
    device_hours: float
    wall_s: float
    disk: float


def totals(priced: list[Priced]) -> Totals:
    return Totals(sum(p.device_hours for p in priced), sum(p.wall_s for p in priced), sum(p.step.disk for p in priced))


@dataclass
class SweepPlan:
    """A run (one job) or a sweep: each job on its own (without reuse), and the steps the sweep runs once
    its jobs share samples, scores and reference log-probs (with reuse)."""

    jobs: list[JobPlan]  # each job as the sweep runs it (train prompts sampled at the sweep's largest K + M)
    alone: list[JobPlan]  # each job as a run of its own (its own K + M)
    largest: int  # the sweep's largest K + M

    @property
    def device(self) -> Device:
        return self.jobs[0].device

    def without_reuse(self) -> list[Priced]:
        return [price(step, job.device) for job in self.alone for step in job.steps]

    def with_reuse(self) -> list[tuple[Priced, int]]:
        """Each artifact once, in the order the sweep first needs it, with the number of jobs that use it."""
        seen: dict[str, int] = {}
        out: list[list] = []
        for job in self.jobs:
            for step in job.steps:
                key = f"{step.name}|{step.share if step.share is not None else id(job)}"
                if key in seen:
                    out[seen[key]][1] += 1
                    continue
                seen[key] = len(out)
                out.append([price(step, job.device), 1])
        return [(p, n) for p, n in out]


def plan_jobs(jobs: list[tuple[dict[str, Any], Sections, PlanConfig, str]]) -> SweepPlan:
    """The plan of a run (one job) or a sweep: (composed config, typed sections, plan section, label) per job."""
    if not jobs:
        raise InputError("nothing to plan: the sweep has no jobs")
    plans = {json.dumps(dataclasses.asdict(p), sort_keys=True, default=str) for _, _, p, _ in jobs}
    if len(plans) > 1:
        raise InputError("plan.* differs between the sweep's jobs; a plan prices one cluster: give plan.* once, not as a sweep")
    largest = max(samples_drawn(sections) for _, sections, _, _ in jobs)
    alone = [job_plan(config, sections, plan, 0, label) for config, sections, plan, label in jobs]
    shared = [job_plan(config, sections, plan, largest, label) for config, sections, plan, label in jobs] if len(jobs) > 1 else alone
    return SweepPlan(shared, alone, largest)


def size(b: float) -> str:
    if b == 0:
        return "0"
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= div:
            return f"{b / div:.3g} {unit}"
    return f"{b:.0f} B"
