import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real local Prefect API (Prefect's test harness: a temporary server and database)."""
    import os

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
