"""Serve the pipeline as a Prefect deployment: `python -m flows.serve` (needs a Prefect server,
e.g. `prefect server start` or docker compose, with PREFECT_API_URL set). This process runs the flow
runs itself; for work pools and separate workers use the root prefect.yaml (`prefect deploy --all`,
then `prefect worker start --pool cpu`).

A run of the deployment takes the same `overrides` list as the CLI, e.g. ["algorithm=dpo",
"algorithm.beta=0.1"], and composes the same Hydra config: the Prefect UI's "Run" button, the CLI
and `--multirun` are one code path. Secrets belong in the environment, referenced as
"${oc.env:HF_TOKEN}", never written into overrides (Prefect stores run parameters).
"""

import flows  # noqa: F401
from flows.pipeline import qrpo_pipeline


def main() -> None:
    qrpo_pipeline.serve(name="qrpo-pipeline", parameters={"overrides": []}, tags=["qrpo"])


if __name__ == "__main__":
    main()
