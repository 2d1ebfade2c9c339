"""executor=ray through the real Prefect flow: `experiment=smoke executor=ray` on a real Ray cluster (tests/conftest.py
`ray_cluster`: two one-CPU worker nodes) writes exactly the artifacts of an `executor=local` run, with the shards of
its sample, score, ref_logps and eval_logps steps spread over both worker nodes."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.pipeline import qrpo_pipeline

SHARDED = ("sample/train", "sample/eval_reference", "score/train", "score/eval_reference", "ref_logps",
           "sample/eval_policy_seed1235", "score/eval_policy_seed1235", "eval_logps")


def _tables(home: Path, summary: dict) -> dict:
    """Every Parquet table of every artifact of the run, by artifact name and file (the training history's
    timings aside: tokens_per_s is a measurement, not a result)."""
    tables = {}
    for name, key in summary["artifacts"].items():
        for file in sorted((home / "artifacts").glob(f"*/{key}/*.parquet")):
            table = pq.read_table(file)
            tables[(name, file.name)] = table.drop_columns(["tokens_per_s"]) if file.name == "history.parquet" else table
    return tables


@pytest.mark.slow
def test_executor_ray_gives_the_rows_of_a_local_run_with_shards_on_both_worker_nodes(prefect_server, ray_cluster, tmp_path,
                                                                                     monkeypatch):
    """Which node ran which shard is read from Ray's state API: each shard is a task named `<step>:<rows>`, and
    its node id is recorded by Ray. Exact equality: a completion depends on its seed only, and a log-prob or a
    reward on the shard's rows only (fixed shard size), never on the process or node that computed it."""
    from ray.util.state import list_tasks

    cluster, workers = ray_cluster
    runs = {}
    for executor in ("local", "ray"):
        home = tmp_path / executor
        monkeypatch.setenv("QRPO_HOME", str(home))
        overrides = ["experiment=smoke", f"executor={executor}"]
        if executor == "ray":
            overrides.append(f"executor.address='{cluster.address}'")
        runs[executor] = (home, qrpo_pipeline(overrides))
    (local_home, local), (ray_home, on_ray) = runs["local"], runs["ray"]
    assert on_ray["artifacts"] == local["artifacts"], "the executor is in no artifact key"
    local_tables, ray_tables = _tables(local_home, local), _tables(ray_home, on_ray)
    assert set(ray_tables) == set(local_tables) and {name for name, _ in ray_tables} >= set(SHARDED)
    for name, table in local_tables.items():
        assert ray_tables[name].equals(table), f"{name} differs between executor=local and executor=ray"

    steps = ("sample/train", "sample/eval_reference", "score", "ref_logps", "eval_logps", "sample/eval_policy_seed1235")
    tasks = [t for t in list_tasks(filters=[("state", "=", "FINISHED")], limit=10_000, detail=True)
             if t.name.split(":")[0] in steps]
    by_step = {step: {t.node_id for t in tasks if t.name.startswith(step + ":")} for step in steps}
    assert all(by_step.values()), f"a step ran no shard on Ray: {by_step}"
    assert set().union(*by_step.values()) == {w.node_id for w in workers}, "the shards ran on both worker nodes (and only there)"
    assert len(by_step["sample/train"]) == 2, "the 4 train sampling shards were spread over both nodes"
