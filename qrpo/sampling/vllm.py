"""The `vllm` backend: vLLM's offline engine in a worker process of its own environment.

vLLM pins its own torch and cannot share this project's environment, so the sampler starts
`qrpo/sampling/vllm_worker.py` with `sampler.vllm_python` (a venv's `bin/python`, or a command prefix
such as `docker run --gpus all -v /data:/data -v $PWD:$PWD qrpo-vllm python` for the
docker/vllm.Dockerfile image; the work folder, the model folder and the worker script must be visible
at the same paths inside the container). `sampler.data_parallel_size` workers each get
`sampler.tensor_parallel_size` GPUs (CUDA_VISIBLE_DEVICES), and each shard's rows are split among them.

Protocol (files in a work folder W per worker; every file is written to a temporary name and renamed):
1. The client writes W/config.json: {"model": folder, "tensor_parallel_size": int, "engine_args": {...}}
   (engine_args: `sampler.vllm_engine_args`, and `pipeline_parallel_size` / `distributed_executor_backend`
   when set, see `engine_parallelism`)
   and starts `<vllm_python> vllm_worker.py W` (stdout and stderr to W/worker.log).
2. The worker builds `vllm.LLM(model, tensor_parallel_size, **engine_args)` once and writes W/ready.
3. For each shard the client writes W/requests/<seq:08d>.parquet, one row per completion:
   row (int64, the client's row number), prompt_token_ids (list<int64>, the chat-templated prompt),
   seed (int64, the row's `row_seed`), max_tokens (int64), temperature (float64), top_p (float64).
4. The worker answers requests in sequence order with W/responses/<seq:08d>.parquet:
   row (int64), token_ids (list<int64>: the completion, EOS included when generated),
   finish_reason (string: "stop" | "length"), and deletes the request.
   Each row is its own vLLM request, `SamplingParams(n=1, seed=row seed, temperature, top_p,
   top_k=-1, min_p=0, repetition_penalty=1, presence/frequency penalty 0, max_tokens)`: exact
   samples whose randomness depends only on the row's seed (with `enable_prefix_caching` a
   prompt's N requests share its KV cache), so the prefix property of qrpo/sampling/base.py holds
   for vLLM too, up to vLLM's own batch numerics (set VLLM_BATCH_INVARIANT=1 where your vLLM has it).
5. The client writes W/stop; the worker exits 0. On any error the worker writes W/error.txt and
   exits non-zero; the client raises with that text (or the tail of W/worker.log).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from qrpo.config.sections import SamplerConfig
from qrpo.errors import InputError
from qrpo.sampling.base import Completion, Prompt, Sampler, SamplingParams, row_seed

WORKER = Path(__file__).with_name("vllm_worker.py")
POLL_S = 0.05


class _Worker:
    """One worker process and its work folder."""

    def __init__(self, command: list[str], workdir: Path, config: dict, env: dict):
        self.workdir, self.seq = workdir, 0
        (workdir / "requests").mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(config))
        self.log = (workdir / "worker.log").open("w")
        try:
            self.process = subprocess.Popen([*command, str(WORKER), str(workdir)], stdout=self.log, stderr=subprocess.STDOUT,
                                            env=env)
        except OSError as err:
            raise InputError(f"sampler.vllm_python={shlex.join(command)!r} cannot be started ({err}); point it at the "
                             "python of an environment with vLLM installed") from None

    def check(self) -> None:
        if self.process.poll() is not None:
            error = self.workdir / "error.txt"
            text = error.read_text() if error.exists() else (self.workdir / "worker.log").read_text()
            raise RuntimeError(f"the vLLM worker ({self.workdir}) exited with code {self.process.returncode}:\n"
                               + "\n".join(text.strip().splitlines()[-15:]))

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.workdir / "ready").exists():
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM worker ({self.workdir}) did not load the model within {timeout_s:.0f} s")
            time.sleep(POLL_S)

    def submit(self, table: pa.Table) -> Path:
        name = f"{self.seq:08d}.parquet"
        self.seq += 1
        tmp = self.workdir / "requests" / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.workdir / "requests" / name)
        return self.workdir / "responses" / name

    def stop(self) -> None:
        (self.workdir / "stop").write_text("")
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def engine_parallelism(cfg: SamplerConfig) -> dict:
    """vLLM's own distribution settings (EngineArgs names), only those that differ from vLLM's defaults:
    `pipeline_parallel_size` (stages, e.g. one per node) and `distributed_executor_backend` ("mp": processes
    on one node, "ray": Ray actors on the nodes of a Ray cluster, which vLLM joins through RAY_ADDRESS =
    `sampler.ray_address`). With "ray", vLLM needs tensor_parallel_size x pipeline_parallel_size GPUs in the
    cluster, wherever they are; `sampler.data_parallel_size` engines then each ask Ray for theirs."""
    args = {}
    if cfg.pipeline_parallel_size != 1:
        args["pipeline_parallel_size"] = cfg.pipeline_parallel_size
    if cfg.distributed_executor_backend is not None:
        args["distributed_executor_backend"] = cfg.distributed_executor_backend
    return args


class VLLMSampler(Sampler):
    """Completions from `sampler.data_parallel_size` vLLM worker processes (protocol in the module docstring)."""

    backend = "vllm"

    def __init__(self, model_path: Path, tokenizer, params: SamplingParams, cfg: SamplerConfig,
                 load_timeout_s: float = 1800.0):
        super().__init__(tokenizer, params)
        self.model_path, self.cfg, self.load_timeout_s = Path(model_path), cfg, load_timeout_s
        self.workers: list[_Worker] = []
        self.root: Path | None = None

    @classmethod
    def from_config(cls, cfg: SamplerConfig, model_path: Path, params: SamplingParams, tokenizer) -> "VLLMSampler":
        """sampler.backend=vllm: worker processes in vLLM's own environment (sampler.vllm_python)."""
        return cls(model_path, tokenizer, params, cfg)

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qrpo-vllm-"))
        command = shlex.split(self.cfg.vllm_python)
        config = {"model": str(self.model_path), "tensor_parallel_size": self.cfg.tensor_parallel_size,
                  "engine_args": {**engine_parallelism(self.cfg), **self.cfg.vllm_engine_args}}
        on_ray = self.cfg.distributed_executor_backend == "ray"  # vLLM places its GPU workers itself, on any node
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else None
        tp = self.cfg.tensor_parallel_size
        for w in range(self.cfg.data_parallel_size):
            env = dict(os.environ)
            if on_ray and self.cfg.ray_address:
                env["RAY_ADDRESS"] = self.cfg.ray_address  # vLLM's ray.init joins this cluster
            if self.cfg.data_parallel_size > 1 and not on_ray:  # worker w gets GPUs w*tp .. (w+1)*tp-1
                ids = devices[w * tp:(w + 1) * tp] if devices else [str(i) for i in range(w * tp, (w + 1) * tp)]
                env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
            self.workers.append(_Worker(command, self.root / f"worker-{w}", config, env))
        for worker in self.workers:
            worker.wait_ready(self.load_timeout_s)

    def complete(self, prompts: Sequence[Prompt], indices: range) -> list[list[Completion]]:
        if not self.workers:
            self._start()
        rows = [(p, k) for p in range(len(prompts)) for k in indices]
        request = pa.table({
            "row": pa.array(range(len(rows)), pa.int64()),
            "prompt_token_ids": pa.array([list(prompts[p].prompt_ids) for p, _ in rows], pa.list_(pa.int64())),
            "seed": pa.array([row_seed(self.params.seed, prompts[p].prompt_id, k) for p, k in rows], pa.int64()),
            "max_tokens": pa.array([self.params.max_new_tokens] * len(rows), pa.int64()),
            "temperature": pa.array([self.params.temperature] * len(rows), pa.float64()),
            "top_p": pa.array([self.params.top_p] * len(rows), pa.float64()),
        })
        size = -(-len(rows) // len(self.workers))  # each worker answers one contiguous part of the shard
        waiting = [(w, w.submit(request.slice(i * size, size))) for i, w in enumerate(self.workers) if i * size < len(rows)]
        answers = []
        for worker, response in waiting:
            while not response.exists():
                worker.check()
                time.sleep(POLL_S)
            answers.append(pq.read_table(response))
            response.unlink()
        answer = pa.concat_tables(answers).sort_by("row").to_pylist()
        out: list[list[Completion]] = [[] for _ in prompts]
        for (p, _), a in zip(rows, answer):
            reason = a["finish_reason"] if a["finish_reason"] in ("stop", "length") else "stop"
            out[p].append(Completion(list(a["token_ids"]), reason))
        return out

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
