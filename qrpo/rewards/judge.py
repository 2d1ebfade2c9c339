"""An LLM judge as the reward (`kind: judge`): an OpenAI-compatible chat endpoint returns a score.

Any server that speaks the OpenAI chat-completions API works: vLLM, `transformers serve`, TGI,
llama.cpp's server, or a hosted API. `reward.base_url` and `reward.model` name it; the API key is
read from the environment variable named by `reward.api_key_env` (never from a config file).
Each sample is sent as one user message built from `reward.template` (fields {prompt},
{completion}, {min}, {max}); the score is the FIRST number in the reply that lies in
[score_min, score_max] ("Score: 8/10" -> 8, "7.5" -> 7.5, "I give it 11" with max 10 -> none).
A reply without such a number, a timeout or a server error is retried up to `max_retries` times;
then the step fails with one error that names the server and the last reply or error. Requests
run concurrently, at most `max_concurrency` at a time.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from qrpo.errors import InputError
from qrpo.rewards.base import RewardModel

DEFAULT_TEMPLATE = (
    "You are a strict judge. Rate how well the answer below responds to the request, on a scale from "
    "{min} to {max}, where {max} is a perfect answer. Reply with the number only.\n\n"
    "[Request]\n{prompt}\n\n[Answer]\n{completion}"
)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_score(reply: str, low: float, high: float) -> float | None:
    """The first number in the reply within [low, high], or None."""
    for match in _NUMBER.finditer(reply or ""):
        value = float(match.group())
        if low <= value <= high:
            return value
    return None


class JudgeReward(RewardModel):
    kind = "judge"

    def __init__(self, base_url: str, model: str, api_key: str = "", template: str = "", score_min: float = 0.0,
                 score_max: float = 10.0, max_concurrency: int = 8, timeout: float = 60.0, max_retries: int = 3,
                 max_tokens: int = 16, temperature: float = 0.0):
        from openai import OpenAI

        if not base_url or not model:
            raise InputError("reward.kind=judge needs reward.base_url (e.g. http://127.0.0.1:8000/v1) and reward.model")
        if not score_min < score_max:
            raise InputError(f"reward.score_min={score_min} must be below reward.score_max={score_max}")
        self.base_url, self.model, self.template = base_url, model, template or DEFAULT_TEMPLATE
        self.score_min, self.score_max = score_min, score_max
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.max_tokens, self.temperature = max_tokens, temperature
        self.client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)

    @classmethod
    def from_config(cls, cfg) -> "JudgeReward":
        api_key = ""
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env, "")
            if not api_key:
                raise InputError(f"reward.api_key_env={cfg.api_key_env!r} is not set in the environment; export it (the key never goes in a config)")
        return cls(cfg.base_url, cfg.model, api_key, cfg.template, cfg.score_min, cfg.score_max, cfg.max_concurrency,
                   cfg.timeout, cfg.max_retries, cfg.max_tokens, cfg.temperature)

    def _one(self, prompt: str, completion: str) -> float:
        message = self.template.format(prompt=prompt, completion=completion, min=_fmt(self.score_min), max=_fmt(self.score_max))
        last = ""
        for _ in range(self.max_retries + 1):
            try:
                reply = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": message}],
                    max_tokens=self.max_tokens, temperature=self.temperature)
                text = reply.choices[0].message.content or ""
            except Exception as err:  # noqa: BLE001 -- connection, timeout, HTTP errors: retried, then reported
                last = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                continue
            score = parse_score(text, self.score_min, self.score_max)
            if score is not None:
                return score
            last = f"reply without a score in [{_fmt(self.score_min)}, {_fmt(self.score_max)}]: {text[:200]!r}"
        raise InputError(f"judge {self.model!r} at {self.base_url} gave no score after {self.max_retries + 1} tries ({last}); "
                         "check that the server is up and the model follows reward.template")

    def score(self, prompts, completions):
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            scores = list(tqdm(pool.map(self._one, prompts, completions), total=len(prompts), desc="judge", unit="sample", dynamic_ncols=True))
        return np.array(scores, dtype=np.float64)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
