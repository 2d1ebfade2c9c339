from qrpo.store.tracking import REDACTED, flatten, is_secret_key, redact, tracking_uri


def test_secret_names_are_recognised_without_catching_ordinary_keys():
    assert all(map(is_secret_key, ["hf_token", "HF_TOKEN", "api_key", "OPENAI_API_KEY", "db_password", "aws_secret_access_key"]))
    assert not any(map(is_secret_key, ["max_new_tokens", "num_tokens", "key", "artifact_root", "tokenizer"]))


def test_redact_masks_secret_keys_and_secret_environment_values_anywhere(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-42")
    config = {"model": {"path": "https://user:s3cr3t-value-42@host/model", "hf_token": "abc"}, "list": ["s3cr3t-value-42", 3]}
    safe = redact(config)
    assert safe == {"model": {"path": f"https://user:{REDACTED}@host/model", "hf_token": REDACTED}, "list": [REDACTED, 3]}
    assert config["model"]["hf_token"] == "abc"  # the input is not modified


def test_flatten_uses_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": {}}) == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]", "f": "{}"}


def test_default_tracking_store_is_an_absolute_sqlite_path(qrpo_home, monkeypatch):
    assert tracking_uri() == f"sqlite:///{qrpo_home.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
