#!/bin/sh
# A Prefect worker on one work pool:  worker-entrypoint.sh <pool> [--deploy]
# Creates the pool if missing (process type: flow runs are subprocesses of this container); with
# --deploy, also registers the deployments of /app/prefect.yaml (idempotent); then runs the worker
# with its health endpoint on :8080 (the compose health check).
set -eu
pool="$1"
prefect work-pool inspect "$pool" >/dev/null 2>&1 || prefect work-pool create "$pool" --type process
if [ "${2:-}" = "--deploy" ]; then
  for other in cpu gpu; do
    prefect work-pool inspect "$other" >/dev/null 2>&1 || prefect work-pool create "$other" --type process
  done
  cd /app && prefect --no-prompt deploy --all
fi
exec prefect worker start --pool "$pool" --type process --name "$pool-$(hostname)" --with-healthcheck
