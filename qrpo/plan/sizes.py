"""Parameter counts of the policy and the reward model, read from the config without loading any weights.

- model.source=config (tiny models) / reward.kind=tiny_classifier: the architecture, counted exactly on the
  `meta` device (no memory, no initialisation);
- a local folder (model.path, reward.path) or a hub name in the Hugging Face cache: its config.json, counted the
  same way (its tokenizer, when there is one, gives the chat template's length);
- model.source=gguf: the GGUF file's header (tensor shapes; the weights are not read);
- otherwise the throughput table's `models:` (known hub names), or `plan.params` / `plan.reward_params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrpo.config.sections import ModelConfig, PlanConfig, RewardConfig
from qrpo.errors import InputError
from qrpo.plan.table import known_model

DEFAULT_TEMPLATE_TOKENS = 30  # a chat template with a system turn; assumed where it cannot be counted
DEFAULT_CHARS_PER_TOKEN = 4.0  # English text through a BPE tokenizer; assumed where it cannot be measured
BYTE_VOCAB = 384  # ByT5Tokenizer(): 256 bytes + 3 special tokens + 125 extra ids (tiny models and the tiny classifier)
TINY_TEMPLATE_TOKENS = len("<|user|>\n<|assistant|>")  # qrpo.models.TINY_CHAT_TEMPLATE around one user turn, in bytes


@dataclass(frozen=True)
class ModelSize:
    params: int  # every parameter
    flop_params: int  # those a token is multiplied by: params minus an untied input embedding (a lookup)
    template_tokens: float  # the chat template's tokens around one user turn
    chars_per_token: float  # of its tokenizer, on English prompts
    source: str  # where the count comes from (printed with the plan)


def count_architecture(config, classifier: bool = False) -> tuple[int, int]:
    """(parameters, untied input-embedding parameters) of a transformers config, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # a tied weight is one parameter, counted once
    embedding = model.get_input_embeddings().weight
    head = None if classifier else model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    return int(params), 0 if tied else int(embedding.numel())


def _from_table(row: dict[str, Any], name: str) -> ModelSize:
    params = int(float(row["params"]))
    return ModelSize(params, params - int(float(row.get("embedding", 0))), float(row.get("template_tokens", DEFAULT_TEMPLATE_TOKENS)),
                     float(row.get("chars_per_token", DEFAULT_CHARS_PER_TOKEN)), f"throughput table: {name}")


def _overridden(params: float, key: str, row: dict[str, Any] | None) -> ModelSize:
    template = float(row.get("template_tokens", DEFAULT_TEMPLATE_TOKENS)) if row else DEFAULT_TEMPLATE_TOKENS
    chars = float(row.get("chars_per_token", DEFAULT_CHARS_PER_TOKEN)) if row else DEFAULT_CHARS_PER_TOKEN
    embedding = float(row.get("embedding", 0)) if row else 0.0
    return ModelSize(int(params), int(params - embedding), template, chars, f"{key}={params:.4g}")


def _config_folder(path: str) -> Path | None:
    """A folder holding config.json: the local path itself, or the hub name's snapshot in the Hugging Face cache."""
    local = Path(path).expanduser()
    if (local / "config.json").is_file():
        return local
    if path.startswith(("/", ".", "~")) or path.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(path, "config.json")
    except Exception:  # an odd repo id, a broken cache: not found
        return None
    return Path(found).parent if isinstance(found, str) else None


def _template_tokens(folder: Path) -> float | None:
    """The chat template's tokens around one empty user turn, with the folder's own tokenizer (no model loaded)."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=True)
        return float(len(ids["input_ids"] if hasattr(ids, "keys") else ids))
    except Exception:  # no tokenizer files, no chat template: the caller assumes one
        return None


def _from_folder(folder: Path, classifier: bool, trust_remote_code: bool = False) -> ModelSize | None:
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if classifier:
            config.num_labels = getattr(config, "num_labels", 1) or 1
        params, embedding = count_architecture(config, classifier)
    except Exception:  # a remote-code architecture, a config transformers cannot build: the table or plan.params
        return None
    template = _template_tokens(folder)
    return ModelSize(params, params - embedding, template if template is not None else DEFAULT_TEMPLATE_TOKENS,
                     DEFAULT_CHARS_PER_TOKEN, f"{folder}/config.json")


def _built_in(target: str) -> bool:
    """Whether a `_target_` is the platform's own builder (one of your own may read the section's keys differently)."""
    return target.startswith("qrpo.")


def policy_size(model: ModelConfig, plan: PlanConfig, table: dict[str, Any]) -> ModelSize:
    row = known_model(table, model.path, model.name)
    if plan.params is not None:
        return _overridden(plan.params, "plan.params", row)
    builtin = _built_in(model._target_)
    if model.source == "config" and builtin:
        from transformers import LlamaConfig

        config = LlamaConfig(vocab_size=BYTE_VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=1, **model.architecture)
        params, embedding = count_architecture(config)
        return ModelSize(params, params - embedding, TINY_TEMPLATE_TOKENS, 1.0, "model.architecture (byte-level tokenizer)")
    if row is not None:
        return _from_table(row, model.path or model.name)
    if model.source == "gguf" and builtin:
        return _from_gguf(model)
    if model.source == "pretrained" and model.path:
        folder = _config_folder(model.path)
        found = _from_folder(folder, classifier=False) if folder else None
        if found is not None:
            return found
    raise InputError(f"the policy's parameter count is not known here (model {model.path or model.name!r}: not a local folder, "
                     "not in the Hugging Face cache, not in qrpo/plan/throughput.yaml's models); set plan.params, e.g. plan.params=8.03e9")


def _from_gguf(model: ModelConfig) -> ModelSize:
    from gguf import GGUFReader

    from qrpo.models import gguf_file

    reader = GGUFReader(gguf_file(model))  # memory-maps the file; only the header's tensor shapes are read
    sizes = {t.name: int(t.n_elements) for t in reader.tensors}
    params = sum(sizes.values())
    embedding = 0 if "output.weight" not in sizes else sizes.get("token_embd.weight", 0)
    return ModelSize(params, params - embedding, DEFAULT_TEMPLATE_TOKENS, DEFAULT_CHARS_PER_TOKEN, f"GGUF header of {model.file}")


def reward_size(reward: RewardConfig, plan: PlanConfig, table: dict[str, Any]) -> ModelSize | None:
    """The reward model's size, or None for a reward that is no model on the device (VADER, code tests, a
    function of your own, an LLM judge behind an API)."""
    if reward.kind not in ("sequence_classifier", "tiny_classifier"):
        return None
    row = known_model(table, reward.path, reward.name)
    if plan.reward_params is not None:
        return _overridden(plan.reward_params, "plan.reward_params", row)
    builtin = _built_in(reward._target_)
    if reward.kind == "tiny_classifier" and builtin:
        from transformers import LlamaConfig

        config = LlamaConfig(vocab_size=BYTE_VOCAB, pad_token_id=0, num_labels=1, **reward.architecture)
        params, embedding = count_architecture(config, classifier=True)
        return ModelSize(params, params - embedding, TINY_TEMPLATE_TOKENS, 1.0, "reward.architecture (byte-level tokenizer)")
    if row is not None:
        return _from_table(row, reward.path or reward.name)
    folder = _config_folder(reward.path) if reward.path else None
    found = _from_folder(folder, classifier=True, trust_remote_code=reward.trust_remote_code) if folder else None
    if found is not None:
        return found
    raise InputError(f"the reward model's parameter count is not known here (reward {reward.path or reward.name!r}: not a local folder, "
                     "not in the Hugging Face cache, not in qrpo/plan/throughput.yaml's models); set plan.reward_params, e.g. plan.reward_params=8e9")
