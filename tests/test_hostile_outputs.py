"""Model outputs written by an adversary: one example's output, size or program makes that example wrong
and never ends a scoring run; every pattern read over an output takes time linear in its length."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from study.evaluate import main
from trainables.data.arithmetic import MAX_NUMBER_CHARS, format_answer, unclosed_annotation_start
from trainables.data.records import parse_gsm8k_answer
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import extract_all
from trainables.scoring.metrics import extract_answer, find_numbers

HUGE = "9" * 4000 + "e999"
"""A number whose value has about 5,000 digits: Python refuses to write it as a str."""
REFERENCES = [("How many?", "3+4=<<3+4=7>>7\n#### 7"), ("And then?", "6*2=<<6*2=12>>12\n#### 12")] * 2


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _evaluate(tmp_path: Path, predictions: list[str], style: str) -> tuple[dict, list[dict]]:
    refs = _jsonl(tmp_path / "refs.jsonl", [{"question": q, "answer": a} for q, a in REFERENCES])
    preds = _jsonl(tmp_path / "preds.jsonl", [{"prediction": p} for p in predictions])
    out, rows = tmp_path / "m.json", tmp_path / "rows.jsonl"
    args = ["--predictions", str(preds), "--references", str(refs), "--out", str(out)]
    main([*args, "--style", style, "--metrics", "accuracy", "--per-example", str(rows)])
    return json.loads(out.read_text()), [json.loads(line) for line in rows.read_text().splitlines()]


def test_a_huge_printed_number_is_a_wrong_example_among_correct_programs(tmp_path):
    programs = ["print(3 + 4)", "print(6 * 2)", f"print('{HUGE}')", "print(12)"]
    summary, rows = _evaluate(tmp_path, programs, "code")
    assert [row["correct"] for row in rows] == [True, True, False, True]
    assert [row["extracted"] for row in rows] == ["7", "12", None, "12"]
    assert summary["accuracy"] == 0.75 and summary["programs_failed"] == 0


def test_a_huge_number_in_a_breakdown_generation_is_a_wrong_example(tmp_path):
    generations = [
        "3+4=<<3+4=7>>7\n#### 7",
        "6*2=<<6*2=12>>12\n#### 12",
        f"3+4=<<3+4=7>>7\n#### {HUGE}",
        f"6*2=<<6*2={HUGE}>>{HUGE}",
    ]
    summary, rows = _evaluate(tmp_path, generations, "text")
    assert [row["correct"] for row in rows] == [True, True, False, False]
    assert [row["extracted"] for row in rows] == ["7", "12", None, None]
    assert summary["accuracy"] == 0.5


def test_a_huge_number_is_a_wrong_example_in_a_trials_evaluation():
    settings = EvalSettings(program_timeout_s=2.0)
    extracted, outputs = extract_all(
        ["print(7)", f"print('{HUGE}')", f"print({HUGE[:60]}); print('{HUGE}')"],
        style="code",
        settings=settings,
    )
    assert [format_answer(x) for x in extracted] == ["7", None, None]
    assert outputs[1] == HUGE + "\n"
    extracted, _ = extract_all(
        [f"#### {HUGE}", f"The answer is -{HUGE}."], style="breakdown", settings=settings
    )
    assert [format_answer(x) for x in extracted] == [None, None]


def test_an_oversized_program_is_a_wrong_example_and_the_run_goes_on(tmp_path):
    # The 130 MiB of issue 19 stopped the run; the sandbox now refuses anything over 1 MiB unrun.
    oversized = "print(7)\n" + "#" * (2 << 20)
    summary, rows = _evaluate(tmp_path, ["print(7)", oversized, "print(7)", "print(12)"], "code")
    assert [row["correct"] for row in rows] == [True, False, True, True]
    assert rows[1]["program_error"] == "source over 1048576 bytes"
    assert summary["accuracy"] == 0.75 and summary["programs_failed"] == 1


def test_a_prediction_with_a_lone_surrogate_is_scored_and_the_run_goes_on(tmp_path):
    # JSON can carry "\ud800", UTF-8 cannot: ROUGE-1's Arrow table refused it and the run ended.
    refs = _jsonl(tmp_path / "refs.jsonl", [{"question": q, "answer": a} for q, a in REFERENCES[:2]])
    preds = _jsonl(tmp_path / "preds.jsonl", [{"prediction": "\ud800 #### 7"}, {"prediction": "#### 12"}])
    out = tmp_path / "m.json"
    main(
        [
            "--predictions",
            str(preds),
            "--references",
            str(refs),
            "--out",
            str(out),
            "--metrics",
            "accuracy,rouge1",
        ]
    )
    summary = json.loads(out.read_text())
    assert summary["accuracy"] == 1.0 and 0 < summary["rouge1"] < 1


def test_a_number_up_to_the_bound_is_read_and_written_back():
    longest = "9" * (MAX_NUMBER_CHARS - 4) + "e999"
    assert format_answer(extract_answer(longest, style="code")) == "9" * (MAX_NUMBER_CHARS - 4) + "0" * 999
    assert extract_answer("9" + longest, style="code") is None
    assert find_numbers(f"between 3 and {HUGE} or 4") == [3, 4]


def test_a_reference_of_5000_digits_is_refused_at_load_naming_the_line(tmp_path, capsys):
    refs = _jsonl(
        tmp_path / "refs.jsonl",
        [{"question": "q", "answer": "#### 7"}, {"question": "q2", "answer": "#### " + "9" * 5000}],
    )
    preds = _jsonl(tmp_path / "preds.jsonl", [{"prediction": "print(7)"}] * 2)
    out = tmp_path / "m.json"
    with pytest.raises(SystemExit) as exit_:
        main(["--predictions", str(preds), "--references", str(refs), "--out", str(out), "--style", "code"])
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith(f"error: {refs}:2: final answer '99999") and "5000 characters" in err[0]
    with pytest.raises(ValueError, match="over the 100 read as a number"):
        parse_gsm8k_answer("q", "#### " + "1" * 101)


HOSTILE_SHAPES = {
    "unclosed annotations, closed at the end": "<<a" * 66_666 + ">",
    "open markers, closed at the end": "<" * 199_999 + ">",
    "annotation bodies without a close": "<<1=" * 50_000,
    "equals signs in one annotation": "<<" + "1=" * 99_999,
    "final markers": "#### " * 40_000,
    "answer is, on one line": "answer is " * 20_000,
    "answer then spaces": "answer" + " " * 199_994,
    "signs and dollars": "$-" * 100_000,
    "negative numbers": "-1" * 100_000,
    "thousands commas": "1," * 100_000,
    "dotted chain": "1." * 100_000,
    "exponents": "1e" * 100_000,
    "dates": "2020-1-" * 28_571,
    "one long number": "9" * 200_000,
}


@pytest.fixture(scope="module")
def linear_seconds() -> float:
    """What a trivially linear scan of 200 KB takes on this machine now (it is shared and often loaded)."""
    text = "1" * 200_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        sum(1 for _ in re.finditer(r"\d", text))
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("shape", HOSTILE_SHAPES)
def test_reading_200_kb_of_a_hostile_shape_takes_linear_time(shape, linear_seconds):
    text = HOSTILE_SHAPES[shape]
    start = time.perf_counter()
    for style in ("text", "code"):
        extract_answer(text, style=style)
    unclosed_annotation_start(text)
    # Linear: at most ~6 times the trivial scan (0.1-0.5 s); the quadratic `<<[^>]*\Z` took 0.4 s on
    # 16 KB of `<<a...>`, over a minute on 200 KB, hundreds of times the trivial scan.
    assert time.perf_counter() - start < 20 * linear_seconds


def test_a_reference_line_with_a_long_inner_space_is_read_in_linear_time(linear_seconds):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not a number"):
        parse_gsm8k_answer("q", "#### 1" + " " * 200_000 + "2x")
    assert time.perf_counter() - start < 20 * linear_seconds


def test_an_unclosed_annotation_is_found_where_the_regex_found_it():
    assert unclosed_annotation_start("a <<b>> c <<4*2") == 10
    assert unclosed_annotation_start("a <<4*2=8>> 8") is None
    assert unclosed_annotation_start("<<a<<b>") is None
    assert unclosed_annotation_start("x<<<") == 1
    assert extract_answer("So 3+4=<<3+4=7>>7 and then <<7*2=") == 7
