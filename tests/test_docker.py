"""The compose stack, validated offline (no Docker engine here): structure, images that build from files
that exist, real Prefect workers, GPU reservations, health checks, 127.0.0.1-only ports, and credentials
only through variables that .env.example defines (.env itself is never committed)."""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}")


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_compose_has_the_documented_services():
    assert {"postgres", "prefect-server", "mlflow", "minio", "minio-init", "cpu-worker", "gpu-worker", "vllm", "ray-head",
            "ray-worker"} <= set(SERVICES)


def test_every_build_uses_an_existing_dockerfile_and_every_copy_source_exists():
    built = [s for s in SERVICES.values() if "build" in s]
    assert len(built) >= 4
    for service in built:
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


def test_workers_are_real_prefect_workers_on_the_cpu_and_gpu_pools():
    entry = ROOT / "docker" / "worker-entrypoint.sh"
    assert entry.stat().st_mode & stat.S_IXUSR, "the worker entry point must be executable"
    script = entry.read_text()
    assert "exec prefect worker start --pool" in script and "prefect --no-prompt deploy --all" in script
    for name, pool in (("cpu-worker", "cpu"), ("gpu-worker", "gpu")):
        command = SERVICES[name]["command"]
        assert command[:2] == ["/app/docker/worker-entrypoint.sh", pool], name
        assert "sleep" not in command_text(SERVICES[name])
        env = SERVICES[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["QRPO_ARTIFACT_ROOT"].startswith("s3://") and env["QRPO_S3_ENDPOINT_URL"] == "http://minio:9000"
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert pools == {"cpu", "gpu"}


def test_gpu_services_reserve_nvidia_devices_and_vllm_has_its_own_image():
    for name in ("gpu-worker", "vllm"):
        devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
        assert SERVICES[name]["profiles"] == ["gpu"], "GPU services must not start on a CPU-only `docker compose up`"
    assert SERVICES["vllm"]["build"]["dockerfile"] == "docker/vllm.Dockerfile"
    assert SERVICES["vllm"]["image"] != SERVICES["gpu-worker"]["image"]


def test_the_ray_profile_is_a_head_and_worker_nodes_of_one_image_that_share_the_artifact_store():
    """Issue 20: `docker compose --profile ray up -d --scale ray-worker=N`. Head and workers run the same image (Ray
    needs the same Python, Ray and qrpo on every node), real `ray start` processes joined by the head's address and
    its auth token, every node on the S3 artifact store (a shard written by one worker is read by the driver), and
    the pipeline run from the head is pointed at the cluster (RAY_ADDRESS, read when executor.address is null or auto)."""
    head, worker = SERVICES["ray-head"], SERVICES["ray-worker"]
    for service in (head, worker):
        assert service["profiles"] == ["ray"], "Ray must not start on a plain `docker compose up`"
        assert service["build"]["dockerfile"] == "docker/ray.Dockerfile" and service["image"] == "qrpo-ray:latest"
        env = service["environment"]
        assert env["QRPO_ARTIFACT_ROOT"].startswith("s3://") and env["QRPO_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", "${RAY_AUTH_TOKEN}")
        assert "sleep" not in command_text(service) and "--block" in command_text(service)
    assert command_text(head).split()[:3] == ["ray", "start", "--head"] and "--port=6379" in command_text(head)
    assert "--num-cpus=0" in command_text(head), "the head schedules no shard: they all go to worker nodes"
    assert head["environment"]["RAY_ADDRESS"] == "127.0.0.1:6379"
    assert command_text(worker).startswith("ray start --address=ray-head:6379 ")
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "ray health-check" in " ".join(head["healthcheck"]["test"])
    dockerfile = (ROOT / "docker" / "ray.Dockerfile").read_text()
    assert "'.[ray]'" in dockerfile and "constraints.txt" in dockerfile


def test_mlflow_server_runs_on_postgres_with_artifacts_in_minio():
    command = command_text(SERVICES["mlflow"])
    assert "--backend-store-uri postgresql://" in command and "--artifacts-destination s3://" in command
    assert SERVICES["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "postgresql+asyncpg://" in SERVICES["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]


def test_long_running_services_have_health_checks_and_dependencies_wait_for_them():
    for name, service in SERVICES.items():
        if name != "minio-init":
            assert "healthcheck" in service, f"{name} has no health check"
        for dependency, spec in (service.get("depends_on") or {}).items():
            condition = spec["condition"] if isinstance(spec, dict) else "service_started"
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits on {dependency}, which has no health check"


def test_ports_bind_to_localhost_only():
    published = [(name, port) for name, service in SERVICES.items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_variable_has_a_value_in_env_example_and_no_secret_is_written_in_the_compose_file():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(VARIABLE.findall(text))
    example = env_example()
    assert used, "credentials must come from variables"
    missing = sorted(v for v in used if v not in example)
    assert not missing, f"variables without a value in .env.example: {missing}"
    assert all(example[v] != "" for v in used if v != "HF_TOKEN")
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert VARIABLE.fullmatch(str(value)), f"{name}.{key} must come from .env, not be written here"
    for value in (example["POSTGRES_PASSWORD"], example["MINIO_ROOT_PASSWORD"]):
        assert value not in text


def test_env_file_is_ignored_and_not_committed():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    if shutil.which("git") and (ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
        assert tracked.strip() == ""


def compose_client() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(compose_client() is None, reason="no docker compose client installed (validated offline above)")
def test_compose_file_validates_with_the_compose_client(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    client = compose_client()
    subprocess.run([*client, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), "--profile", "gpu",
                    "--profile", "ray", "config", "-q"], check=True, env={**os.environ})
