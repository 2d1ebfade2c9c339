"""The `openai` backend: any OpenAI-compatible server (vllm serve, SGLang, TGI, transformers serve).

Requests go to `<sampler.base_url>/completions` (the legacy text-completion endpoint: the prompt is
already chat-templated by the policy's tokenizer, so the server must not template it again):

    {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "seed", **sampler.extra_body}

(`seed` is the row seed modulo 2**31: servers take 32-bit seeds.)

`prompt` is the templated prompt decoded to text (`sampler.prompt_format: text`, which the server
re-tokenises) or its token ids (`token_ids`, accepted by vLLM and SGLang: exact). For N samples of a
prompt the sampler asks for n = (samples still missing) with seed = the `row_seed` of the first
missing index, assigns the k choices that come back to the next k indices, and repeats until all N
are there: one request where the server honours `n` (vLLM), N requests with one seed per sample where
it ignores `n` (transformers serve). Completion token ids are taken from the response when the
server returns them (`choices[].token_ids`, e.g. vLLM with extra_body {return_token_ids: true});
otherwise the text is tokenised with the policy tokenizer (and EOS appended when finish_reason is
"stop"), which may differ from the server's own tokens at a few boundaries.

`sampler.concurrency` prompts are in flight at once (threads sharing one httpx connection pool,
qrpo.http_json); each request has `sampler.timeout_s`; connection errors, timeouts, HTTP 408, 409,
429 and 5xx are retried `sampler.max_retries` times with exponential back-off (0.5 s, 1 s, 2 s, ...
capped at 30 s), after which one `SamplerServerError` names the server URL and the last error. The
API key, if the server needs one, is read from the environment variable named by `sampler.api_key_env`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from qrpo.config.sections import SamplerConfig
from qrpo.http_json import GaveUp, JSONClient, Rejected
from qrpo.sampling.base import Completion, Prompt, Sampler, SamplingParams, eos_ids, row_seed


class SamplerServerError(RuntimeError):
    """The server could not be reached or kept failing after every retry."""


class OpenAISampler(Sampler):
    backend = "openai"

    def __init__(self, tokenizer, params: SamplingParams, cfg: SamplerConfig):
        super().__init__(tokenizer, params)
        self.cfg, self.base_url = cfg, cfg.base_url.rstrip("/")
        self.api_key = os.environ.get(cfg.api_key_env, "")
        self._model = cfg.api_model or None
        self.http = JSONClient(self.base_url, timeout=cfg.timeout_s, retries=cfg.max_retries, connections=cfg.concurrency,
                               api_key=self.api_key, timeout_key="sampler.timeout_s")

    @classmethod
    def from_config(cls, cfg: SamplerConfig, model_path, params: SamplingParams, tokenizer) -> "OpenAISampler":
        """sampler.backend=openai: the server at sampler.base_url serves the model (model_path is not read)."""
        return cls(tokenizer, params, cfg)

    # --- HTTP with retries (qrpo.http_json) --------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            return self.http.call(method, path, body)
        except Rejected as err:
            raise SamplerServerError(f"the OpenAI-compatible server at {self.base_url} rejected {method} {path}: "
                                     f"{err.last}") from None
        except GaveUp as err:
            raise SamplerServerError(
                f"the OpenAI-compatible server at {self.base_url} failed {err.attempts} times on {method} {path} "
                f"(last error: {err.last}); check that it is running and serves the policy (sampler.base_url, sampler.api_model)"
            ) from None

    def close(self) -> None:
        self.http.close()

    @property
    def model(self) -> str:
        if self._model is None:
            served = self._call("GET", "/models").get("data") or []
            if not served:
                raise SamplerServerError(f"the server at {self.base_url} lists no models; set sampler.api_model")
            self._model = served[0]["id"]
        return self._model

    # --- sampling ----------------------------------------------------------------------------
    def _completion(self, choice: dict, eos: set[int]) -> Completion:
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        ids = choice.get("token_ids")
        if ids is None:  # the server returned text only
            ids = self.tokenizer.encode(choice.get("text", ""), add_special_tokens=False)
            if reason == "stop" and eos:
                ids = [*ids, min(eos)]
        return Completion(list(ids)[: self.params.max_new_tokens + 1], reason)

    def _prompt(self, prompt: Prompt, indices: range) -> list[Completion]:
        if self.cfg.prompt_format == "token_ids":
            text_or_ids = list(prompt.prompt_ids)
        else:
            text_or_ids = self.tokenizer.decode(list(prompt.prompt_ids), skip_special_tokens=False)
        eos, out = eos_ids(self.tokenizer), []
        while len(out) < len(indices):
            missing = len(indices) - len(out)
            body = {"model": self.model, "prompt": text_or_ids, "max_tokens": self.params.max_new_tokens,
                    "temperature": self.params.temperature, "top_p": self.params.top_p, "n": missing,
                    "seed": row_seed(self.params.seed, prompt.prompt_id, indices[len(out)]) % 2**31,
                    **self.cfg.extra_body}
            choices = sorted(self._call("POST", "/completions", body).get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise SamplerServerError(f"the server at {self.base_url} returned no choices for prompt {prompt.prompt_id}")
            out += [self._completion(c, eos) for c in choices[:missing]]
        return out

    def complete(self, prompts: Sequence[Prompt], indices: range) -> list[list[Completion]]:
        _ = self.model  # resolve once, before the threads
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            futures = [pool.submit(self._prompt, p, indices) for p in prompts]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
