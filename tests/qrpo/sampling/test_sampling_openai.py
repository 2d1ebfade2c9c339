"""The openai backend against a real `transformers serve` on 127.0.0.1 (it ignores `n`), and against
local HTTP servers that honour `n`, fail, flap or hang."""

import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from qrpo.config.sections import SamplerConfig
from qrpo.sampling import SamplingParams, encode_prompts, load_tokenizer, row_seed, sample_table
from qrpo.sampling.openai import OpenAISampler, SamplerServerError

PROMPTS = pa.table({"prompt_id": ["a", "b"], "prompt": ["Hello there", "Name a colour"]})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(BaseHTTPRequestHandler):
    """A local OpenAI-compatible endpoint. `mode`: "forward" (to transformers serve, recording bodies),
    "honour_n" (answers n choices with token ids), "error" (503), "flaky" (503 twice, then answers), "hang",
    "reject" (400)."""

    mode, upstream, bodies, lock = "honour_n", "", [], threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            type(self).bodies.append(body)
            count = len(self.bodies)
        if self.mode == "hang":
            time.sleep(5)
            return
        if self.mode == "error" or (self.mode == "flaky" and count <= 2):
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b'{"error": "overloaded"}')
            return
        if self.mode == "reject":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "unknown field seed"}')
            return
        if self.mode == "forward":
            request = urllib.request.Request(f"{self.upstream}{self.path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            answer = urllib.request.urlopen(request, timeout=60).read()
        else:
            choices = [{"index": i, "text": "xy", "token_ids": [120, 121, 1], "finish_reason": "stop"} for i in range(body["n"])]
            answer = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def local_server():
    Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def transformers_serve(tiny_model_dir, transformers_server):
    """`transformers serve` (the CLI in this venv) serving the tiny model the tests saved."""
    with transformers_server(tiny_model_dir) as url:
        yield url.removesuffix("/v1")


def _sample(model_dir, url, n, **cfg):
    tokenizer = load_tokenizer(model_dir)
    cfg = SamplerConfig(backend="openai", base_url=url, **{"api_model": str(model_dir), **cfg})
    sampler = OpenAISampler(tokenizer, SamplingParams(max_new_tokens=5, seed=4), cfg)
    return sample_table(sampler, encode_prompts(tokenizer, PROMPTS), range(n), shard_prompts=1)


# transformers serve samples with the model's generation_config unless it gets one: ask for exact sampling
EXACT = {"generation_config": json.dumps({"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0})}


@pytest.mark.slow
def test_transformers_serve_returns_n_samples_per_prompt_with_the_requested_parameters(tiny_model_dir, transformers_serve, local_server):
    Recorder.mode, Recorder.upstream = "forward", transformers_serve
    table = _sample(tiny_model_dir, local_server, 3, concurrency=2, extra_body=EXACT)
    rows = table.to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(p, k) for p in "ab" for k in range(3)]
    # text re-tokenised by the policy tokenizer (the server returns no ids; it drops the byte model's special tokens)
    assert all(r["finish_reason"] in ("stop", "length") and r["num_tokens"] <= 6 for r in rows)
    assert sum(r["num_tokens"] for r in rows) > 0
    # transformers serve ignores n: the sampler topped up with one request per sample, each with its own seed
    assert len(Recorder.bodies) == 6
    assert {(b["max_tokens"], b["temperature"], b["top_p"], b["model"]) for b in Recorder.bodies} == {(5, 1.0, 1.0, str(tiny_model_dir))}
    assert sorted(b["n"] for b in Recorder.bodies) == [1, 1, 2, 2, 3, 3]
    assert sorted(b["seed"] for b in Recorder.bodies) == sorted(row_seed(4, p, k) % 2**31 for p in "ab" for k in range(3))
    assert all(b["generation_config"] == EXACT["generation_config"] for b in Recorder.bodies)
    assert len({r["completion"] for r in rows}) > 1, "different seeds, different samples"


def test_a_server_that_honours_n_is_asked_once_per_prompt_and_its_token_ids_are_kept(tiny_model_dir, local_server):
    Recorder.mode = "honour_n"
    rows = _sample(tiny_model_dir, local_server, 4, prompt_format="token_ids").to_pylist()
    assert len(Recorder.bodies) == 2 and all(b["n"] == 4 and isinstance(b["prompt"], list) for b in Recorder.bodies)
    assert all(r["completion_ids"] == [120, 121, 1] and r["finished"] for r in rows) and len(rows) == 8


def test_a_flaky_server_is_retried_until_it_answers(tiny_model_dir, local_server):
    Recorder.mode = "flaky"
    rows = _sample(tiny_model_dir, local_server, 2, concurrency=1, max_retries=3).to_pylist()
    assert len(rows) == 4 and len(Recorder.bodies) == 4  # two 503s, then one answer per prompt


@pytest.mark.parametrize("mode, last_error", [("error", "HTTP 503"), ("hang", "no answer within sampler.timeout_s=0.5 s")])
def test_a_failing_or_hanging_server_is_retried_then_one_clear_error_names_it(tiny_model_dir, local_server, mode, last_error):
    Recorder.mode = mode
    start = time.monotonic()
    with pytest.raises(SamplerServerError) as err:
        _sample(tiny_model_dir, local_server, 2, concurrency=1, max_retries=2, timeout_s=0.5)
    message = str(err.value)
    assert local_server in message and "failed 3 times" in message and last_error in message
    assert len(Recorder.bodies) == 3, "one attempt and two retries"
    assert time.monotonic() - start >= 1.5, "exponential back-off: 0.5 s then 1 s"


def test_an_unreachable_server_is_one_clear_error(tiny_model_dir):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(SamplerServerError, match=rf"server at {url} failed 2 times .*ConnectionRefusedError"):
        _sample(tiny_model_dir, url, 1, max_retries=1)


def test_a_request_the_server_rejects_is_not_retried(tiny_model_dir, local_server):
    Recorder.mode = "reject"
    with pytest.raises(SamplerServerError, match=r"rejected POST /completions: HTTP 400: .*unknown field seed"):
        _sample(tiny_model_dir, local_server, 2, concurrency=1, max_retries=3)
    assert len(Recorder.bodies) == 1
