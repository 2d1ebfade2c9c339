import pytest
import torch

from qrpo.config.sections import ModelConfig
from qrpo.models import load_policy, prepare_model

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 256}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama + byte tokenizer saved the way the pipeline saves models."""
    out = tmp_path_factory.mktemp("tiny_model")
    prepare_model(ModelConfig(name="tiny", source="config", _target_="qrpo.models.TinyModel.load", architecture=TINY, seed=0), out)
    return out


@pytest.fixture
def tiny_policy(tiny_model_dir):
    torch.manual_seed(0)
    return load_policy(tiny_model_dir, torch.device("cpu"))
