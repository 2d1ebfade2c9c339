"""JSON over HTTP with bounded retries: the client of the OpenAI-compatible sampler and the LLM judge.

httpx does the HTTP (one pooled client, as many connections as the caller runs requests at once);
this adds the retry policy its transport lacks (that retries failed connects only): connection
errors, timeouts, HTTP 408/409/429/5xx, a reply that is not JSON and a reply the caller's `accept`
rejects (BadReply) are tried again, `retries` times, after 0.5 s, 1 s, 2 s, ... (capped at 30 s);
then one GaveUp names the URL and the last error. Any other HTTP error is a Rejected at once.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class HTTPJSONError(RuntimeError):
    def __init__(self, url: str, attempts: int, last: str):
        super().__init__(f"{url}: {last}")
        self.url, self.attempts, self.last = url, attempts, last


class Rejected(HTTPJSONError):
    """The server answered with an HTTP error that a retry would not change (400, 401, 404, ...)."""


class GaveUp(HTTPJSONError):
    """Every attempt failed; `last` says how the last one did."""


class BadReply(ValueError):
    """Raised by an `accept` callback: the reply is unusable, ask again."""


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...)."""
    return min(30.0, 0.5 * 2 ** (attempt - 1))


def _reason(err: BaseException) -> str:
    """The innermost cause of a transport error ("ConnectionRefusedError: [Errno 111] ..."), not httpx's wrapper."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    return f"{type(err).__name__}: {err}"


class JSONClient:
    """JSON requests to `base_url` + path; `timeout_key` names the setting in the timeout message."""

    def __init__(self, base_url: str, *, timeout: float, retries: int, connections: int, api_key: str = "",
                 timeout_key: str = "timeout"):
        self.base_url, self.timeout, self.retries, self.timeout_key = base_url.rstrip("/"), timeout, retries, timeout_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(timeout=timeout, headers=headers,
                                 limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    def call(self, method: str, path: str, body: dict | None = None, accept: Callable[[Any], Any] | None = None) -> Any:
        """The reply's JSON (what `accept` makes of it, if given), after at most `retries` retries."""
        url, last = f"{self.base_url}{path}", ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff(attempt))
            try:
                response = self.http.request(method, url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_key}={self.timeout:g} s"
                continue
            except httpx.TransportError as err:
                last = _reason(err)
                continue
            if response.is_error:
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code in RETRY_STATUS:
                    continue
                raise Rejected(url, attempt + 1, last)
            try:
                data = response.json()
            except ValueError:  # json.JSONDecodeError
                last = f"reply is not JSON: {response.text[:200]!r}"
                continue
            if accept is None:
                return data
            try:
                return accept(data)
            except BadReply as err:
                last = str(err)
        raise GaveUp(url, self.retries + 1, last)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "JSONClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
