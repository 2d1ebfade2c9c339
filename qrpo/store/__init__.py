"""Where results go: content-keyed artifacts (local or S3) and MLflow tracking."""
