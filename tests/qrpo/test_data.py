import json

import pytest

from qrpo.config import DatasetConfig
from qrpo.data import load_prompts
from qrpo.errors import InputError
from flows.config import REPO_ROOT


def _write(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_shipped_demo_set_has_300_plus_distinct_prompts_in_both_splits():
    table = load_prompts(DatasetConfig(name="chat", path=str(REPO_ROOT / "data/chat/prompts.jsonl")))
    prompts, splits = table.column("prompt").to_pylist(), table.column("split").to_pylist()
    assert len(set(prompts)) == len(prompts) >= 300
    assert splits.count("eval") >= 30 and splits.count("train") >= 250
    assert len(set(table.column("prompt_id").to_pylist())) == len(prompts)


def test_limits_cut_each_split(tmp_path):
    rows = [{"prompt": f"p{i}", "split": "train" if i % 3 else "eval"} for i in range(12)]
    table = load_prompts(DatasetConfig(name="t", path=_write(tmp_path, rows), max_train_prompts=5, max_eval_prompts=2))
    assert table.column("split").to_pylist() == ["train"] * 5 + ["eval"] * 2


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"instruction": "hi", "split": "train"}], r"p.jsonl:1 has no column 'prompt'"),
        ([{"prompt": "hi", "split": "test"}], r"split 'test'"),
        ([{"prompt": "hi", "split": "train"}], r"no 'eval' prompts"),
    ],
)
def test_bad_datasets_raise_one_clear_error_with_file_and_line(tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        load_prompts(DatasetConfig(name="t", path=_write(tmp_path, rows)))


def test_invalid_json_names_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "split": "train"}\n{oops\n')
    with pytest.raises(InputError, match=r"p.jsonl:2 is not valid JSON"):
        load_prompts(DatasetConfig(name="t", path=str(path)))
