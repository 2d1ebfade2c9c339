"""The vLLM worker: runs inside vLLM's own environment and imports only the standard library, pyarrow
and vllm (never qrpo or this project's torch). Started by qrpo/sampling/vllm.py as

    <sampler.vllm_python> vllm_worker.py WORKDIR

It follows the protocol documented in qrpo/sampling/vllm.py: read WORKDIR/config.json, load the
engine once, write WORKDIR/ready, then answer each WORKDIR/requests/<seq>.parquet with
WORKDIR/responses/<seq>.parquet (in sequence order) until WORKDIR/stop appears. Any failure is
written to WORKDIR/error.txt before the process exits non-zero.
"""

import json
import os
import sys
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

POLL_S = 0.05
# `python vllm_worker.py` puts this folder first on sys.path, where qrpo/sampling/vllm.py would shadow vllm
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _atomic_write(table, path):
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _answer(llm, SamplingParams, request):
    rows = request.to_pylist()
    params = [
        SamplingParams(
            n=1, seed=int(r["seed"]), temperature=float(r["temperature"]), top_p=float(r["top_p"]), top_k=-1, min_p=0.0,
            max_tokens=int(r["max_tokens"]), min_tokens=0, repetition_penalty=1.0, presence_penalty=0.0,
            frequency_penalty=0.0, ignore_eos=False, skip_special_tokens=True,
        )
        for r in rows
    ]
    outputs = llm.generate([{"prompt_token_ids": list(r["prompt_token_ids"])} for r in rows], params, use_tqdm=False)
    completions = [o.outputs[0] for o in outputs]
    return pa.table({
        "row": pa.array([r["row"] for r in rows], pa.int64()),
        "token_ids": pa.array([list(c.token_ids) for c in completions], pa.list_(pa.int64())),
        "finish_reason": pa.array([str(c.finish_reason) for c in completions], pa.string()),
    })


def main(workdir):
    workdir = Path(workdir)
    try:
        from vllm import LLM, SamplingParams

        config = json.loads((workdir / "config.json").read_text())
        llm = LLM(model=config["model"], tensor_parallel_size=config["tensor_parallel_size"], **config["engine_args"])
        requests, responses = workdir / "requests", workdir / "responses"
        responses.mkdir(exist_ok=True)
        (workdir / "ready").write_text(str(os.getpid()))
        while True:
            pending = sorted(p for p in requests.glob("*.parquet") if not p.name.startswith("."))
            if not pending:
                if (workdir / "stop").exists():
                    return 0
                time.sleep(POLL_S)
                continue
            request = pending[0]
            _atomic_write(_answer(llm, SamplingParams, pq.read_table(request)), responses / request.name)
            request.unlink()
    except BaseException:
        (workdir / "error.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
