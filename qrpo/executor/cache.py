"""One loaded model per worker process, kept between the shards of a step.

A shard function asks `hold(key, load)` for its model: the process's cached value when its key matches,
else the old value is released and `load()` is called. A Ray worker process runs many shards of a step
one after the other, so it loads the model once; `keep_s` seconds after its last use the value is
released (closed when it has `close()`, CUDA's cached blocks emptied), so an idle worker does not keep a
GPU's memory for the next step. The local executor releases it at the end of each step (`release()`).
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from typing import Any, Callable, Iterator

_lock = threading.RLock()
_state: dict[str, Any] = {"key": None, "value": None, "users": 0, "timer": None, "keep_s": None}


def configure(keep_s: float | None) -> None:
    """Release the value this many seconds after its last use (None: only on `release()` or another key)."""
    with _lock:
        _state["keep_s"] = keep_s


@contextlib.contextmanager
def hold(key: str, load: Callable[[], Any]) -> Iterator[Any]:
    """The value cached under `key` in this process (loaded on a miss), held while the block runs."""
    with _lock:
        _cancel_timer()
        if _state["key"] != key or _state["value"] is None:
            release()
            _state["value"], _state["key"] = load(), key
        _state["users"] += 1
        value = _state["value"]
    try:
        yield value
    finally:
        with _lock:
            _state["users"] -= 1
            keep_s = _state["keep_s"]
            if keep_s is not None and _state["users"] == 0:
                timer = threading.Timer(keep_s, _release_if_idle, args=(key,))
                timer.daemon = True
                _state["timer"] = timer
                timer.start()


def cached_key() -> str | None:
    return _state["key"]


def release() -> None:
    """Drop the cached value now (closing it if it can be closed) and return its memory."""
    with _lock:
        _cancel_timer()
        value, _state["value"], _state["key"] = _state["value"], None, None
    if value is None:
        return
    for item in value if isinstance(value, tuple) else (value,):
        close = getattr(item, "close", None)
        if callable(close) and not isinstance(item, type):
            with contextlib.suppress(Exception):
                close()
    del value
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _release_if_idle(key: str) -> None:
    with _lock:
        if _state["key"] == key and _state["users"] == 0:
            release()


def _cancel_timer() -> None:
    timer, _state["timer"] = _state["timer"], None
    if timer is not None:
        timer.cancel()
