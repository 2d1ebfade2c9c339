"""What a run or a sweep will cost before it is launched (`qrpo-plan`, flows/plan.py): tokens, FLOPs,
device-hours, wall time and disk per pipeline step, from the composed config and a throughput table.

- table.py: the throughput table (throughput.yaml: devices' peaks, the utilisation assumed per kind of
  work, known models and datasets, disk constants, with their sources);
- sizes.py: parameter counts from the config (architecture, config.json, GGUF header, the table), no weights;
- cost.py: the steps of a run as the pipeline runs them, their prices, and a sweep's reuse;
- report.py: the plan as text.
No Hydra, no Prefect: the caller composes the configs (flows/plan.py).
"""

from qrpo.plan.cost import JobPlan, Priced, Shapes, Step, SweepPlan, job_plan, plan_jobs, price, totals
from qrpo.plan.report import format_plan

__all__ = ["JobPlan", "Priced", "Shapes", "Step", "SweepPlan", "format_plan", "job_plan", "plan_jobs", "price", "totals"]
