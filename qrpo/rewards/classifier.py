"""Sequence-classifier reward models: a Hugging Face classifier's score of the chat (prompt, answer).

- ArmoRM-Llama3-8B-v0.1 (Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward
  Modeling and Mixture-of-Experts"; the QRPO paper's reward; trust_remote_code, its `score` output)
  and Skywork-Reward-Llama-3.1-8B-v0.2 (Liu et al. 2024, "Skywork-Reward"; logit 0), or any
  `AutoModelForSequenceClassification` checkpoint: conf/reward/armorm.yaml, conf/reward/skywork.yaml.
- A tiny randomly initialised Llama classifier over bytes ("tiny_classifier"): a real, cheap,
  continuous reward for smoke runs and tests (it scores text consistently; it does not judge quality).

How a sample is read: the conversation is the prompt row's `messages` (the whole conversation up
to the last user turn) or else its prompt as one user turn, plus the completion as the assistant
turn, rendered and tokenised by the REWARD MODEL's own chat template and tokenizer (never the
policy's). With `max_length` > 0 the truncation policy is explicit:
  1. if the conversation without the answer takes more than half of max_length, earlier turns are
     dropped and then the last user turn is cut from the LEFT (its end, the actual request, is kept);
  2. the answer is cut to the remaining budget: `truncation: right` keeps its beginning (default),
     `truncation: left` keeps its end; the chat template is applied after cutting, so the closing
     tokens that the reward head reads are always present.
Samples are batched by token length (longest first; `length_grouped: false` keeps the input order),
so little compute is spent on padding; scores come back in the input order. On a GPU the model
runs in bfloat16 (`dtype: auto`).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from tqdm.auto import tqdm

from qrpo.errors import InputError
from qrpo.rewards.base import RewardModel

TRUNCATION_SIDES = ("right", "left")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """"auto": bfloat16 on a CUDA GPU, float32 on a CPU; else one of DTYPES."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in DTYPES:
        raise InputError(f"reward.dtype={name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def conversation(row: dict) -> list[dict]:
    """The chat up to the last user turn: the row's `messages` (JSON string or list), else its prompt."""
    messages = row.get("messages")
    if isinstance(messages, str) and messages:
        messages = json.loads(messages)
    if messages:
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    return [{"role": "user", "content": row["prompt"]}]


class SequenceClassifierReward(RewardModel):
    def __init__(self, model, tokenizer, batch_size: int = 16, score_index: int = 0, max_length: int = 0,
                 truncation: str = "right", length_grouped: bool = True):
        if truncation not in TRUNCATION_SIDES:
            raise InputError(f"reward.truncation={truncation!r} is not one of {', '.join(TRUNCATION_SIDES)}")
        self.model, self.tokenizer = model, tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.batch_size, self.score_index = batch_size, score_index
        self.max_length, self.truncation, self.length_grouped = max_length, truncation, length_grouped

    @classmethod
    def from_pretrained(cls, path: str, trust_remote_code: bool = False, dtype: str = "auto", **kwargs) -> "SequenceClassifierReward":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            from qrpo.models import BUILDING

            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            with BUILDING:  # transformers patches classes while it loads (qrpo/models.py)
                model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                                           dtype=resolve_dtype(dtype))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load reward.path={path!r}: {str(err).splitlines()[0]}") from None
        if torch.cuda.is_available():
            model = model.to("cuda")
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def from_config(cls, architecture: dict, seed: int = 0, **kwargs) -> "SequenceClassifierReward":
        """A tiny randomly initialised Llama classifier over bytes (see the module docstring)."""
        from transformers import ByT5Tokenizer, LlamaConfig, LlamaForSequenceClassification

        tokenizer = ByT5Tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=1, **architecture)
        from qrpo.models import BUILDING

        with BUILDING:  # the seed and the initialisation it draws, with no other thread's draws between them
            torch.manual_seed(seed)
            model = LlamaForSequenceClassification(config)
        return cls(model, tokenizer, **kwargs)

    # -- tokenisation with the reward model's own template and an explicit truncation policy -----

    def _ids(self, chat: list[dict]) -> list[int]:
        if self.tokenizer.chat_template is None:  # no template: turns separated by blank lines
            return self.tokenizer("\n\n".join(m["content"] for m in chat)).input_ids
        ids = self.tokenizer.apply_chat_template(chat, tokenize=True)
        return list(ids["input_ids"] if not isinstance(ids, list) else ids)

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def encode(self, chat: list[dict], completion: str) -> list[int]:
        """Token ids of chat + the assistant's completion, at most max_length (policy: module docstring)."""
        full = self._ids(chat + [{"role": "assistant", "content": completion}])
        if not self.max_length or len(full) <= self.max_length:
            return full
        chat = [dict(m) for m in chat]
        half = self.max_length // 2
        while len(self._ids(chat + [{"role": "assistant", "content": ""}])) > half and len(chat) > 1:
            chat.pop(0)  # 1. earlier turns go first
        overhead = len(self._ids(chat + [{"role": "assistant", "content": ""}]))
        if overhead > half:  # 1. then the start of the last user turn
            prompt_ids = self._text_ids(chat[-1]["content"])
            chat[-1]["content"] = self._decode(prompt_ids[overhead - half :])
            overhead = len(self._ids(chat + [{"role": "assistant", "content": ""}]))
        answer = self._text_ids(completion)
        for _ in range(3):  # 2. the answer, to the budget left (decode/re-encode may shift a token or two)
            budget = max(0, self.max_length - overhead)
            kept = answer[:budget] if self.truncation == "right" else answer[len(answer) - budget:] if budget else []
            ids = self._ids(chat + [{"role": "assistant", "content": self._decode(kept)}])
            if len(ids) <= self.max_length:
                return ids
            overhead += len(ids) - self.max_length
        return ids[-self.max_length:]

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, prompts, completions):
        return self.score_rows([{"prompt": p} for p in prompts], completions)

    def score_rows(self, rows, completions):
        encoded = [self.encode(conversation(row), c) for row, c in zip(rows, completions)]
        return self.score_ids(encoded)

    @torch.no_grad()
    def score_ids(self, encoded: list[list[int]]) -> np.ndarray:
        """Scores of token-id sequences, batched longest-first when length_grouped; in input order."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i])) if self.length_grouped else list(range(len(encoded)))
        scores = np.empty(len(encoded), dtype=np.float64)
        device = self.model.device
        for b in tqdm(range(0, len(order), self.batch_size), desc="reward model", unit="batch", dynamic_ncols=True):
            idx = order[b : b + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            out = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            score = getattr(out, "score", None)  # ArmoRM returns its preference score here
            score = out.logits[:, self.score_index] if score is None else score.reshape(-1)
            scores[idx] = score.float().cpu().numpy()
        return scores


def _options(cfg) -> dict:
    return {"batch_size": cfg.batch_size, "score_index": cfg.score_index, "max_length": cfg.max_length,
            "truncation": cfg.truncation, "length_grouped": cfg.length_grouped}


def sequence_classifier(cfg) -> SequenceClassifierReward:
    """reward.kind=sequence_classifier: a Hugging Face reward model from reward.path."""
    if not cfg.path:
        raise InputError("reward.kind=sequence_classifier needs reward.path (a folder or hub name)")
    return SequenceClassifierReward.from_pretrained(cfg.path, cfg.trust_remote_code, cfg.dtype, **_options(cfg))


def tiny_classifier(cfg) -> SequenceClassifierReward:
    """reward.kind=tiny_classifier: a tiny random classifier built from reward.architecture."""
    return SequenceClassifierReward.from_config(cfg.architecture, cfg.seed, **_options(cfg))


sequence_classifier.kind = "sequence_classifier"  # the family of reward.* keys each reads (reward.kind)
tiny_classifier.kind = "tiny_classifier"
