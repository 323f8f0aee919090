"""Loading GSM8K / MBPP / the embedded problems, and the train / dev / test splits."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from trainables.data.load import (
    DataConfig,
    load_code_dataset,
    load_gsm8k_file,
    load_gsm8k_hub,
    load_math_splits,
    load_mbpp_file,
    load_mbpp_hub,
    skipped_summary,
)
from trainables.data.records import DataError, MathRecord


def row(i: int, *, socratic: bool = False) -> dict:
    step = f"She has {i}+2 = <<{i}+2={i + 2}>>{i + 2} apples."
    return {"question": f"Question {i}: she has {i} apples and gets 2. How many?",
            "answer": (f"How many apples? ** {step}" if socratic else step) + f"\n#### {i + 2}"}  # fmt: skip


def write_jsonl(path: Path, rows: list, *, final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)
    path.write_text(text + ("\n" if final_newline else ""), encoding="utf-8")
    return path


@pytest.fixture
def gsm8k_dir(tmp_path: Path) -> Path:
    """A small GSM8K layout: data/gsm8k/{train,test,test_socratic}.jsonl (no train_socratic, as on disk)."""
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [row(i) for i in range(40)])
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [row(i) for i in range(100, 120)])
    write_jsonl(tmp_path / "gsm8k" / "test_socratic.jsonl", [row(i, socratic=True) for i in range(100, 150)])
    return tmp_path


# ---- one file


def test_gsm8k_file_records_have_programs(gsm8k_dir):
    loaded = load_gsm8k_file(gsm8k_dir / "gsm8k" / "train.jsonl")
    first = loaded.records[0]
    assert (first.answer, first.steps, first.program, first.source) == (
        "2",
        ("She has 0+2 = <<0+2=2>>2 apples.",),
        "a = 0 + 2; print(a)",
        "gsm8k/main",
    )
    assert len(loaded.records) == 40 and loaded.skipped == []


def test_socratic_file_is_detected(gsm8k_dir):
    record = load_gsm8k_file(gsm8k_dir / "gsm8k" / "test_socratic.jsonl").records[0]
    assert record.source == "gsm8k/socratic" and record.subquestions == ("How many apples?",)
    assert load_gsm8k_file(gsm8k_dir / "gsm8k" / "train.jsonl", source="mine").records[0].source == "mine"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([row(1), row(2), '{"question": "q", "answer": ', row(4)], r"bad\.jsonl:3: malformed JSON"),
        ([row(1), {"question": "q"}], r"bad\.jsonl:2: missing field 'answer'"),
        ([{"question": 5, "answer": "#### 1"}], r"bad\.jsonl:1: field 'question' should be str, got int"),
        (["[1, 2]"], r"bad\.jsonl:1: expected a JSON object, got list"),
        ([row(1), "[" * 100_000 + "]" * 100_000], r"bad\.jsonl:2: malformed JSON: nested too deeply"),
        ([], r"bad\.jsonl: empty file"),
        (["", "   "], r"bad\.jsonl: empty file"),
        ([{"question": "q", "answer": "no final line"}], r"bad\.jsonl: no record has a usable final answer"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message):
        load_gsm8k_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_gsm8k_file(tmp_path / "nope.jsonl")


def test_bad_answers_are_skipped_and_counted(tmp_path):
    rows = [
        row(1),
        {"question": "q", "answer": "1+1 = 2"},
        row(3),
        {"question": "q", "answer": "#### lots"},
        "",
    ]
    loaded = load_gsm8k_file(write_jsonl(tmp_path / "train.jsonl", rows))
    assert [r.answer for r in loaded.records] == ["3", "5"]
    assert [s.where for s in loaded.skipped] == [
        f"{tmp_path / 'train.jsonl'}:2",
        f"{tmp_path / 'train.jsonl'}:4",
    ]
    summary = skipped_summary(loaded.skipped)
    assert (
        summary.startswith("skipped 2 record(s) with a bad answer (first: ")
        and "train.jsonl:2: no '#### N'" in summary
    )
    assert skipped_summary([]) == ""


# ---- splits from a local dir


@pytest.mark.parametrize("layout", ["data dir", "gsm8k dir"])
def test_local_splits(gsm8k_dir, layout):
    folder = gsm8k_dir if layout == "data dir" else gsm8k_dir / "gsm8k"
    splits = load_math_splits(DataConfig(source="local", data_dir=str(folder), dev_size=10, seed=1))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (30, 10, 20)
    assert not {r.question for r in splits.train} & {r.question for r in splits.dev}
    assert (
        splits.description
        == f"GSM8K main from {gsm8k_dir / 'gsm8k'}: train 40 -> train 30 / dev 10; test 20 (seed 1)"
    )
    again = load_math_splits(DataConfig(data_dir=str(folder), dev_size=10, seed=1))  # auto + data_dir = local
    assert again == splits
    other = load_math_splits(DataConfig(data_dir=str(folder), dev_size=10, seed=2))
    assert other.dev != splits.dev and other.test == splits.test


def test_subsets_are_nested_and_in_file_order(gsm8k_dir):
    def load(train_size, test_size):
        cfg = DataConfig(data_dir=str(gsm8k_dir), dev_size=10, train_size=train_size, test_size=test_size)
        return load_math_splits(cfg)

    small, large = load(5, 4), load(20, 8)
    assert (len(small.train), len(small.test)) == (5, 4)
    assert set(small.train) <= set(large.train) and set(small.test) <= set(large.test)
    assert small.dev == large.dev
    index = [int(r.question.split()[1].rstrip(":")) for r in large.train]
    assert index == sorted(index)
    assert "train 40 -> train 20 of 30 / dev 10; test 8 of 20" in large.description


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"train_size": 31}, "train_size=31 but only 30 records are available"),
        ({"test_size": 21}, "test_size=21 but only 20 records are available"),
        ({"dev_size": 40}, "dev_size=40 leaves no training records out of 40"),
    ],
)
def test_sizes_larger_than_the_data(gsm8k_dir, cfg, message):
    with pytest.raises(DataError, match=message):
        load_math_splits(DataConfig(data_dir=str(gsm8k_dir), **{"dev_size": 10, **cfg}))


def test_dir_without_gsm8k_files(tmp_path):
    with pytest.raises(DataError, match="no GSM8K files in"):
        load_math_splits(DataConfig(source="local", data_dir=str(tmp_path)))


def test_socratic_without_train_file_splits_the_test_file_loudly(gsm8k_dir):
    splits = load_math_splits(DataConfig(data_dir=str(gsm8k_dir), config="socratic", dev_size=10))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (30, 10, 10)  # test: 20% of 50
    questions = [{r.question for r in part} for part in (splits.train, splits.dev, splits.test)]
    assert sum(map(len, questions)) == len(set().union(*questions)) == 50
    assert all(r.source == "gsm8k/socratic" and r.subquestions for r in splits.train)
    assert "NO train_socratic.jsonl THERE" in splits.description and "NOT COMPARABLE" in splits.description
    assert "50 -> train 30 / dev 10 / test 10 (seed 0)" in splits.description


def test_skipped_records_are_reported_in_the_description(gsm8k_dir):
    write_jsonl(gsm8k_dir / "gsm8k" / "test.jsonl", [row(1), {"question": "q", "answer": "#### ?"}])
    splits = load_math_splits(DataConfig(data_dir=str(gsm8k_dir), dev_size=10))
    assert len(splits.skipped) == 1 and "skipped 1 record(s) with a bad answer" in splits.description


# ---- embedded


def test_embedded_splits_are_disjoint_and_said_to_be_embedded():
    cfg = DataConfig(source="embedded", train_size=300, dev_size=50, test_size=60, seed=4)
    splits = load_math_splits(cfg)
    questions = [{r.question for r in part} for part in (splits.train, splits.dev, splits.test)]
    assert list(map(len, questions)) == [300, 50, 60]
    assert len(set().union(*questions)) == 410  # no problem in two splits
    assert splits.description.startswith(
        "EMBEDDED generated problems (not GSM8K): train 300 / dev 50 / test 60"
    )
    assert load_math_splits(cfg) == splits
    assert all(r.source == "embedded" and not r.subquestions for r in splits.train)


def test_embedded_socratic_and_difficulty():
    cfg = DataConfig(source="embedded", config="socratic", train_size=40, dev_size=5, test_size=5,
                     min_steps=3, max_steps=3, max_operand=9)  # fmt: skip
    splits = load_math_splits(cfg)
    assert all(len(r.subquestions) == len(r.steps) == 3 for r in splits.train)
    assert "3-3 steps, operands <= 9, socratic format" in splits.description


# ---- config validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "web"}, "source must be one of .* got 'web'"),
        ({"config": "both"}, "config must be one of .* got 'both'"),
        ({"source": "local"}, "source 'local' needs data_dir"),
        ({"train_size": 0}, "train_size must be >= 1 or None, got 0"),
        ({"test_size": -3}, "test_size must be >= 1 or None, got -3"),
        ({"dev_size": 0}, "dev_size must be >= 1, got 0"),
        ({"min_steps": 3, "max_steps": 2}, "need 1 <= min_steps <= max_steps <= 10, got 3, 2"),
        ({"max_operand": 1}, "max_operand must be >= 2, got 1"),
    ],
)
def test_data_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


# ---- the hub, through a stand-in `datasets` module (nothing is downloaded in tests)


def fake_datasets(monkeypatch, splits: dict | None = None, error: Exception | None = None) -> list:
    calls = []

    def load_dataset(name, config, *, split):
        calls.append((name, config, split))
        if error is not None:
            raise error
        return splits[split]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_failure_is_one_line_with_advice(monkeypatch):
    fake_datasets(monkeypatch, error=ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\nmore detail"))
    with pytest.raises(DataError) as info:
        load_math_splits(DataConfig())  # auto without a data dir means the hub
    message = str(info.value)
    assert "\n" not in message and "could not load openai/gsm8k (main/train)" in message
    assert "ConnectionError: Couldn't reach" in message and "pass a local data dir" in message


def test_hub_records(monkeypatch):
    calls = fake_datasets(
        monkeypatch, {"train": [row(i) for i in range(30)], "test": [row(i) for i in range(9)]}
    )
    splits = load_math_splits(DataConfig(source="hub", dev_size=5))
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (25, 5, 9)
    assert splits.description.startswith("GSM8K main from the hub (openai/gsm8k): train 30 -> train 25")
    bad = fake_datasets(monkeypatch, {"train": [row(1), {"question": "q", "answer": "x"}]})
    assert bad == [] and load_gsm8k_hub("main", "train").skipped[0].where == "openai/gsm8k main/train row 2"


def test_mbpp_hub_joins_all_splits_in_task_order(monkeypatch):
    task = {"text": "t", "code": "def f():\r\n    return 1", "test_list": ["assert f() == 1"]}
    calls = fake_datasets(monkeypatch, {"train": [{**task, "task_id": 3}], "validation": [{**task, "task_id": 1}],
                                        "test": [{**task, "task_id": 2}], "prompt": []})  # fmt: skip
    records = load_mbpp_hub()
    assert [c[:2] for c in calls] == [("google-research-datasets/mbpp", "full")] * 4
    assert len(records) == 3 and records[0].code == "def f():\n    return 1"


# ---- code datasets


def test_mbpp_file_without_final_newline(tmp_path):
    tasks = [{"text": "Add.", "code": "def add(a, b):\r\n\treturn a + b\r", "task_id": 1,
              "test_list": ["assert add(1, 2) == 3"]}, {"text": "One.", "code": "x = 1", "test_list": []}]  # fmt: skip
    path = write_jsonl(tmp_path / "mbpp" / "mbpp.jsonl", tasks, final_newline=False)
    records = load_mbpp_file(path)
    assert records[0].code == "def add(a, b):\n\treturn a + b" and records[0].test_list == (
        "assert add(1, 2) == 3",
    )
    assert load_code_dataset("mbpp", str(tmp_path)) == records


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"text": "t", "code": "c"}, r"mbpp\.jsonl:1: missing field 'test_list'"),
        ({"text": "t", "code": "c", "test_list": "assert 1"}, "field 'test_list' should be list"),
        ({"text": "t", "code": "c", "test_list": [1]}, "field 'test_list' should hold strings"),
    ],
)
def test_bad_mbpp_rows(tmp_path, task, message):
    with pytest.raises(DataError, match=message):
        load_mbpp_file(write_jsonl(tmp_path / "mbpp.jsonl", [task]))


def test_gsm8k_programs_dataset():
    records = [
        MathRecord("q1", "#### 1", (), (), "1", program="print(1)"),
        MathRecord("q2", "#### 2", (), (), "2"),
    ]
    code = load_code_dataset("gsm8k-programs", math_train=records)
    assert [(c.text, c.code, c.source) for c in code] == [("q1", "print(1)", "gsm8k-programs")]
    with pytest.raises(DataError, match="needs the math train split"):
        load_code_dataset("gsm8k-programs")
    with pytest.raises(DataError, match="none of the 1 math records has a program"):
        load_code_dataset("gsm8k-programs", math_train=records[1:])
    with pytest.raises(ValueError, match="code dataset must be one of"):
        load_code_dataset("humaneval")


def test_missing_mbpp_file(tmp_path):
    with pytest.raises(DataError, match="no mbpp/mbpp.jsonl or mbpp.jsonl in"):
        load_code_dataset("mbpp", str(tmp_path))


# ---- the real files (SLM_DATA_DIR, through conftest's data_dir fixture)


@pytest.mark.slow  # reads and converts all 7473 training solutions (about a second)
def test_real_gsm8k_main_splits(data_dir):
    splits = load_math_splits(DataConfig(source="local", data_dir=str(data_dir)))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (6973, 500, 1319)
    assert splits.skipped == ()
    assert splits.description.endswith("gsm8k: train 7473 -> train 6973 / dev 500; test 1319 (seed 0)")
    assert splits.train[0].source == "gsm8k/main" and not splits.train[0].subquestions


def test_real_test_files(data_dir):
    test = load_gsm8k_file(Path(data_dir, "gsm8k", "test.jsonl")).records
    socratic = load_gsm8k_file(Path(data_dir, "gsm8k", "test_socratic.jsonl")).records
    assert len(test) == len(socratic) == 1319
    assert [r.answer for r in test] == [r.answer for r in socratic]
    # the same solutions, sub-questions apart
    assert [r.steps for r in test[:50]] == [r.steps for r in socratic[:50]]
    assert all(r.source == "gsm8k/socratic" and r.subquestions for r in socratic)
    # 1317 of 1319 have one sub-question per step; two have a line 'Sub-question? **' with an empty step
    assert sum(len(r.subquestions) == len(r.steps) for r in socratic) >= 1317
    assert socratic[0].subquestions[0] == "How many eggs does Janet sell?"
    assert socratic[0].steps[0] == "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day."


def test_real_mbpp(data_dir):
    records = load_code_dataset("mbpp", str(data_dir))
    assert len(records) == 974
    assert all(r.text and r.code and "\r" not in r.code and len(r.test_list) == 3 for r in records)


def test_solution_programs_dataset_asks_from_the_solution_never_the_question():
    from trainables.data.generator import generate_problems
    from trainables.data.prompts import code_task_example

    (record,) = generate_problems(1, seed=3, min_steps=2, max_steps=2)
    (code,) = load_code_dataset("solution-programs", math_train=[record])
    source, target = code_task_example(code)
    assert target == record.program and code.source == "solution-programs"
    assert source.startswith("Write the solution as a Python program. Solution: ")
    assert record.question not in source and "####" not in source and "<<" not in source
    with pytest.raises(DataError, match="solution-programs needs the math train split"):
        load_code_dataset("solution-programs")
