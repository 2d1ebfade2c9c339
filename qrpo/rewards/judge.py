"""An LLM judge as the reward (`kind: judge`): an OpenAI-compatible chat endpoint returns a score.

Any server that speaks the OpenAI chat-completions API works: vLLM, `transformers serve`, TGI,
llama.cpp's server, or a hosted API. `reward.base_url` and `reward.model` name it; the API key is
read from the environment variable named by `reward.api_key_env` (never from a config file).
Each sample is sent as one user message built from `reward.template` (fields {prompt},
{completion}, {min}, {max}); the score is the FIRST number in the reply that lies in
[score_min, score_max] ("Score: 8/10" -> 8, "7.5" -> 7.5, "I give it 11" with max 10 -> none).
Requests go to `<base_url>/chat/completions` through qrpo.http_json (httpx): a reply without such a
number, a connection error, a timeout, HTTP 408/409/429/5xx are retried up to `max_retries` times
with exponential back-off; then the step fails with one error that names the server and the last
reply or error. Requests run concurrently, at most `max_concurrency` at a time.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from qrpo.errors import InputError
from qrpo.http_json import BadReply, GaveUp, JSONClient, Rejected
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
        if not base_url or not model:
            raise InputError("reward.kind=judge needs reward.base_url (e.g. http://127.0.0.1:8000/v1) and reward.model")
        if not score_min < score_max:
            raise InputError(f"reward.score_min={score_min} must be below reward.score_max={score_max}")
        self.base_url, self.model, self.template = base_url, model, template or DEFAULT_TEMPLATE
        self.score_min, self.score_max = score_min, score_max
        self.max_concurrency, self.max_retries, self.timeout, self.api_key = max_concurrency, max_retries, timeout, api_key
        self.max_tokens, self.temperature = max_tokens, temperature

    @classmethod
    def from_config(cls, cfg) -> "JudgeReward":
        api_key = ""
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env, "")
            if not api_key:
                raise InputError(f"reward.api_key_env={cfg.api_key_env!r} is not set in the environment; export it (the key never goes in a config)")
        return cls(cfg.base_url, cfg.model, api_key, cfg.template, cfg.score_min, cfg.score_max, cfg.max_concurrency,
                   cfg.timeout, cfg.max_retries, cfg.max_tokens, cfg.temperature)

    def _one(self, http: JSONClient, prompt: str, completion: str) -> float:
        message = self.template.format(prompt=prompt, completion=completion, min=_fmt(self.score_min), max=_fmt(self.score_max))
        body = {"model": self.model, "messages": [{"role": "user", "content": message}],
                "max_tokens": self.max_tokens, "temperature": self.temperature}
        try:
            return http.call("POST", "/chat/completions", body, accept=self._score)
        except GaveUp as err:
            raise InputError(f"judge {self.model!r} at {self.base_url} gave no score after {err.attempts} tries ({err.last}); "
                             "check that the server is up and the model follows reward.template") from None
        except Rejected as err:
            raise InputError(f"judge {self.model!r} at {self.base_url} refused the request ({err.last}); "
                             "check reward.base_url, reward.model and reward.api_key_env") from None

    def _score(self, reply) -> float:
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BadReply(f"not a chat completion: {str(reply)[:200]!r}") from None
        score = parse_score(text, self.score_min, self.score_max)
        if score is None:
            raise BadReply(f"reply without a score in [{_fmt(self.score_min)}, {_fmt(self.score_max)}]: {text[:200]!r}")
        return score

    def score(self, prompts, completions):
        with JSONClient(self.base_url, timeout=self.timeout, retries=self.max_retries, connections=self.max_concurrency,
                        api_key=self.api_key, timeout_key="reward.timeout") as http, ThreadPoolExecutor(self.max_concurrency) as pool:
            scores = list(tqdm(pool.map(lambda p, c: self._one(http, p, c), prompts, completions), total=len(prompts),
                               desc="judge", unit="sample", dynamic_ncols=True))
        return np.array(scores, dtype=np.float64)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
