import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.config import REPO_ROOT
from qrpo.config.sections import DatasetConfig
from qrpo.data import load_prompts, split
from qrpo.errors import InputError


def _write(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _cfg(path, **kw):
    return DatasetConfig(name="t", path=path, **{"split_column": "split", **kw})


def test_shipped_demo_set_has_300_plus_distinct_prompts_in_both_splits():
    table = load_prompts(DatasetConfig(name="chat", path=str(REPO_ROOT / "data/chat/prompts.jsonl"), split_column="split",
                                       id_column="id"))
    prompts, splits = table.column("prompt").to_pylist(), table.column("split").to_pylist()
    assert len(set(prompts)) == len(prompts) >= 300
    assert splits.count("eval") >= 30 and splits.count("train") >= 250
    assert len(set(table.column("prompt_id").to_pylist())) == len(prompts)
    assert table.column("prompt_id").to_pylist()[0].startswith("chat-")
    first = json.loads(table.column("messages")[0].as_py())
    assert first == [{"role": "user", "content": prompts[0]}]


def test_limits_cut_each_split(tmp_path):
    rows = [{"prompt": f"p{i}", "split": "train" if i % 3 else "eval"} for i in range(12)]
    table = load_prompts(_cfg(_write(tmp_path, rows), max_train_prompts=5, max_eval_prompts=2))
    assert table.column("split").to_pylist() == ["train"] * 5 + ["eval"] * 2


def test_messages_jsonl_and_text_parquet_give_the_same_prompt_table(tmp_path):
    """The TRL/UltraFeedback `messages` convention and a plain parquet prompt column meet in one table."""
    prompts = [f"question {i}?" for i in range(6)]
    chats = [{"uid": f"q{i}", "split": "eval" if i < 2 else "train", "messages": [
        {"role": "user", "content": p}, {"role": "assistant", "content": "an answer that must be dropped"}]}
        for i, p in enumerate(prompts)]
    from_messages = load_prompts(_cfg(_write(tmp_path, chats), messages_column="messages", id_column="uid"))
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"uid": [c["uid"] for c in chats], "text": prompts, "split": [c["split"] for c in chats]}), parquet)
    from_parquet = load_prompts(_cfg(str(parquet), prompt_column="text", id_column="uid"))
    assert from_messages.to_pylist() == from_parquet.to_pylist()
    assert from_parquet.column_names == ["prompt_id", "prompt", "messages", "split"]
    assert from_parquet.column("prompt_id").to_pylist() == ["q2", "q3", "q4", "q5", "q0", "q1"]  # train first


def test_a_multi_turn_conversation_keeps_its_context_up_to_the_last_user_turn(tmp_path):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Name a colour"},
                    {"role": "assistant", "content": "Blue"}]
    rows = [{"messages": conversation, "split": "train"}, {"messages": conversation[:2], "split": "eval"}]
    table = load_prompts(_cfg(_write(tmp_path, rows), messages_column="messages"))
    first = table.to_pylist()[0]
    assert first["prompt"] == "Name a colour"
    assert json.loads(first["messages"]) == conversation[:4]
    assert first["prompt_id"] == "t-0"


def test_two_splits_from_data_files_and_keep_columns(tmp_path):
    train = _write(tmp_path, [{"q": f"t{i}", "level": i} for i in range(4)], "train.jsonl")
    test = _write(tmp_path, [{"q": f"e{i}", "level": 10 + i} for i in range(2)], "test.csv.jsonl")
    cfg = DatasetConfig(name="d", path="json", data_files={"train": train, "test": test}, eval_split="test",
                        prompt_column="q", keep_columns=["level"])
    table = load_prompts(cfg)
    assert table.column("split").to_pylist() == ["train"] * 4 + ["eval"] * 2
    assert table.column("level").to_pylist() == [0, 1, 2, 3, 10, 11]


def test_a_seeded_split_of_one_split_is_stable_and_disjoint(tmp_path):
    path = _write(tmp_path, [{"prompt": f"p{i}"} for i in range(50)], "all.jsonl")
    cfg = DatasetConfig(name="s", path=path, eval_fraction=0.2, split_seed=3)
    first, again = load_prompts(cfg), load_prompts(cfg)
    assert first.to_pylist() == again.to_pylist()
    evals = split(first, "eval").column("prompt").to_pylist()
    assert len(evals) == 10 and not set(evals) & set(split(first, "train").column("prompt").to_pylist())
    other = split(load_prompts(DatasetConfig(name="s", path=path, eval_fraction=0.2, split_seed=4)), "eval")
    assert set(other.column("prompt").to_pylist()) != set(evals)


@pytest.mark.parametrize(
    "rows, kw, message",
    [
        ([{"instruction": "hi", "split": "train"}], {}, r"p.jsonl \[train\] has no column 'prompt' \(columns: instruction, split\)"),
        ([{"prompt": "hi", "split": "test"}], {}, r"split 'test'"),
        ([{"prompt": "hi", "split": "train"}], {}, r"no 'eval' prompts"),
        ([{"prompt": "hi", "split": "train", "id": 1}, {"prompt": "ho", "split": "eval", "id": 1}], {"id_column": "id"}, r"id '1' appears twice"),
        ([{"messages": "nope", "split": "train"}], {"messages_column": "messages"}, r"row 0: messages must be a list"),
    ],
)
def test_bad_datasets_raise_one_clear_error(tmp_path, rows, kw, message):
    with pytest.raises(InputError, match=message):
        load_prompts(_cfg(_write(tmp_path, rows), **kw))


def test_invalid_json_names_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "split": "train"}\n{oops\n')
    with pytest.raises(InputError, match=r"p.jsonl:2 is not valid JSON"):
        load_prompts(_cfg(str(path)))


def test_missing_file_and_missing_hub_dataset_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match=r"does not exist"):
        load_prompts(_cfg(str(tmp_path / "nope.jsonl")))
    with pytest.raises(InputError, match=r"cannot load dataset.path='nobody/no-such-dataset'.*Hugging Face cache"):
        load_prompts(_cfg("nobody/no-such-dataset"))


def test_the_default_chat_demo_config_reads_the_shipped_prompts_with_their_ids():
    from flows.config import compose_config

    cfg = DatasetConfig(**compose_config([])["dataset"])
    table = load_prompts(cfg)
    assert table.column("split").to_pylist() == ["train"] * 64 + ["eval"] * 48  # 64 train prompts, all 48 eval prompts
    shipped = [json.loads(line) for line in (REPO_ROOT / "data/chat/prompts.jsonl").read_text().splitlines()]
    first_train = next(r for r in shipped if r["split"] == "train")
    assert table.to_pylist()[0]["prompt_id"] == first_train["id"] and table.to_pylist()[0]["prompt"] == first_train["prompt"]
