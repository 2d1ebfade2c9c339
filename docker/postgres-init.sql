-- A second database for MLflow beside Prefect's.
CREATE DATABASE mlflow;
