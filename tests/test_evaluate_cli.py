"""`python -m study.evaluate`: what it scores, what it writes, and how it refuses bad input."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from study.evaluate import load_references, main
from trainables.data.prompts import format_example

REPO = Path(__file__).resolve().parents[1]

# (question, GSM8K answer, prediction, correct as a person grades it)
HAND_GRADED = [
    (
        "Janet's ducks lay 16 eggs per day. She eats three and bakes with four. "
        "She sells the rest for $2 each. "
        "How much does she make?",
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18",
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18",
        True,
    ),
    (
        "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
        "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3 bolts\n#### 3",
        "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+2=<<2+2=4>>4 bolts\n#### 4",  # wrong
        False,
    ),
    (
        "Josh buys a house for $80,000 and puts in $50,000 in repairs. It is then worth $200,000. Profit?",
        "The cost was 80,000+50,000=$<<80000+50000=130000>>130,000\n"
        "He made 200,000-130,000=$<<200000-130000=70000>>70,000"
        "\n#### 70,000",
        "He made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000",  # no '####': last number
        True,
    ),
    (
        "James runs 3 sprints 3 times a week, 60 meters each. How many meters a week?",
        "He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=<<9*60=540>>540 meters\n#### 540",
        "He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=<<9*60=",  # truncated before the answer
        False,
    ),
    (
        "A shirt costs $20. How much do two half-price shirts cost?",
        "Each costs 20/2=$<<20/2=10>>10\nTwo cost 2*10=$<<2*10=20>>20\n#### 20",
        "The answer is $20.00.",
        True,
    ),
    (
        "A village of 10 houses buys 100 bricks per house. How many bricks?",
        "10*100=<<10*100=1000>>1000 bricks\n#### 1,000",
        "#### 1000.0",
        True,
    ),
    (
        "Half a pie is eaten, then half of the rest. What fraction of the pie was eaten first?",
        "1/2=<<1/2=0.5>>0.5\n#### 0.5",
        "She ate 1/2",
        True,
    ),
    (
        "It was 2 degrees, then it dropped 8 and rose 3. What was the temperature?",
        "2-8+3=<<2-8+3=-3>>-3\n#### -3",
        "It was \u22123 degrees Celsius.",
        True,
    ),
    (
        "Carla downloads a 200 GB file at 2 GB a minute. How many minutes?",
        "200/2=<<200/2=100>>100 minutes\n#### 100",
        "I don't know.",
        False,
    ),
    (
        "Tom has 8 dollars and Ann has 3 less. How much does Ann have?",
        "8-3=<<8-3=5>>5\n#### 5",
        "The answer is 5 dollars, which is 3 less than Tom's 8.",
        True,
    ),
    (
        "A store sells 12 cakes on December 25th. How many cakes?",
        "#### 12",
        "On 12/25/2020 the store sold 12.",
        True,
    ),
    (
        "25 of 100 students walk. What percent walk?",
        "25/100*100=<<25/100*100=25>>25\n#### 25",
        "25%",
        True,
    ),
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """(predictions, references) of the hand-graded examples; predictions carry the question."""
    refs = _write_jsonl(tmp_path / "refs.jsonl", [{"question": q, "answer": a} for q, a, _, _ in HAND_GRADED])
    preds = _write_jsonl(
        tmp_path / "preds.jsonl", [{"question": q, "prediction": p} for q, _, p, _ in HAND_GRADED]
    )
    return preds, refs


def _run(preds: Path, refs: Path, out: Path, *extra: str) -> dict:
    main(["--predictions", str(preds), "--references", str(refs), "--out", str(out), *extra])
    return json.loads(out.read_text())


def test_hand_graded_answers_score_as_a_person_would(files, tmp_path):
    preds, refs = files
    per_example = tmp_path / "rows" / "per_example.jsonl"
    summary = _run(
        preds, refs, tmp_path / "metrics.json", "--metrics", "accuracy", "--per-example", str(per_example)
    )
    rows = [json.loads(line) for line in per_example.read_text().splitlines()]
    assert [row["correct"] for row in rows] == [graded for *_, graded in HAND_GRADED]
    assert [row["extracted"] for row in rows] == [
        "18",
        "4",
        "70000",
        "60",
        "20",
        "1000",
        "0.5",
        "-3",
        None,
        "5",
        "12",
        "25",
    ]
    assert [row["reference"] for row in rows][:3] == ["18", "3", "70000"]
    assert summary["n"] == 12 and summary["metrics"] == ["accuracy"]
    assert summary["accuracy"] == pytest.approx(9 / 12)
    low, high = summary["accuracy_ci"]
    assert low < 9 / 12 < high
    assert "rouge1" not in summary and "similarity" not in summary


@pytest.mark.parametrize("name", ["test.jsonl", "test_socratic.jsonl"])
def test_official_answers_scored_against_themselves_are_all_correct(data_dir, tmp_path, name):
    references = data_dir / "gsm8k" / name
    if not references.is_file():
        pytest.skip(f"{references} is missing")
    rows = [json.loads(line) for line in references.read_text(encoding="utf-8").splitlines()]
    preds = _write_jsonl(
        tmp_path / "preds.jsonl", [{"question": r["question"], "prediction": r["answer"]} for r in rows]
    )
    summary = _run(preds, references, tmp_path / "metrics.json", "--metrics", "accuracy")
    assert summary["n"] == 1319
    assert summary["accuracy"] == 1.0 and summary["accuracy_ci"] == [1.0, 1.0]


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def _args(preds: Path, refs: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--predictions", str(preds), "--references", str(refs), "--out", str(tmp_path / "m.json"), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics", "accuracy,bleu"], "unknown metric 'bleu'; choose from accuracy, rouge1, similarity"),
        (["--metrics", " , "], "--metrics is empty"),
        (["--style", "python"], "argument --style: invalid choice: 'python'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_2_with_one_line(files, tmp_path, capsys, extra, message):
    assert message in _error_line(capsys, _args(*files, tmp_path, *extra))
    assert not (tmp_path / "m.json").exists()


def test_missing_required_option_exits_2(capsys):
    assert "--predictions" in _error_line(capsys, ["--references", "r.jsonl", "--out", "m.json"])


def test_missing_file_exits_2(files, tmp_path, capsys):
    preds, _ = files
    err = _error_line(capsys, _args(preds, tmp_path / "nope.jsonl", tmp_path))
    assert "nope.jsonl: no such file" in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:1] + ["{not json"] + lines[2:], "preds.jsonl:2: malformed JSON"),
        (
            lambda lines: lines[:2] + ['["a list"]'] + lines[3:],
            "preds.jsonl:3: expected a JSON object, got list",
        ),
        (
            lambda lines: lines[:1] + ['{"text": "18"}'] + lines[2:],
            "preds.jsonl:2: missing field 'prediction'",
        ),
        (
            lambda lines: lines[:1] + ['{"prediction": 18}'] + lines[2:],
            "field 'prediction' must be a string, got int",
        ),
        (lambda lines: lines[:-1], "preds.jsonl has 11 predictions but"),
        (lambda lines: [lines[1], lines[0]] + lines[2:], "preds.jsonl:1: question differs from reference #1"),
        (lambda lines: [], "preds.jsonl: empty file"),
    ],
)
def test_bad_predictions_file_exits_2_naming_the_line(files, tmp_path, capsys, edit, message):
    preds, refs = files
    lines = preds.read_text().splitlines()
    preds.write_text("".join(line + "\n" for line in edit(lines)))
    assert message in _error_line(capsys, _args(preds, refs, tmp_path))


def test_reference_without_final_answer_exits_2_naming_the_line(files, tmp_path, capsys):
    preds, refs = files
    lines = refs.read_text().splitlines()
    lines[4] = json.dumps({"question": "q", "answer": "It costs 5 dollars."})
    refs.write_text("\n".join(lines) + "\n")
    assert "refs.jsonl:5: no '#### N' final answer line" in _error_line(capsys, _args(preds, refs, tmp_path))


def test_predictions_without_question_are_taken_in_order(tmp_path):
    refs = _write_jsonl(
        tmp_path / "refs.jsonl", [{"question": q, "answer": a} for q, a, _, _ in HAND_GRADED[:2]]
    )
    preds = _write_jsonl(tmp_path / "preds.jsonl", [{"prediction": "#### 18"}, {"prediction": "#### 3"}])
    assert _run(preds, refs, tmp_path / "m.json", "--metrics", "accuracy")["accuracy"] == 1.0


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--predictions",
        "--references",
        "--style",
        "--metrics",
        "--out",
        "--per-example",
        "--similarity-model",
    ):
        assert option in out


def test_code_style_runs_the_programs(tmp_path):
    references = HAND_GRADED[:4]
    programs = [
        "a = 16 - 3 - 4; print(a * 2)",  # 18: right
        "print(2 + 2)",  # 4: wrong (answer 3)
        "x = 200000 - 130000\nprint(f'profit: {x}.0')",  # 70000.0: right
        "raise ValueError('no')",  # crashes: wrong
    ]
    refs = _write_jsonl(tmp_path / "refs.jsonl", [{"question": q, "answer": a} for q, a, _, _ in references])
    preds = _write_jsonl(tmp_path / "preds.jsonl", [{"prediction": p} for p in programs])
    rows_path = tmp_path / "rows.jsonl"
    summary = _run(
        preds,
        refs,
        tmp_path / "m.json",
        "--style",
        "code",
        "--metrics",
        "accuracy",
        "--per-example",
        str(rows_path),
    )
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert [row["correct"] for row in rows] == [True, False, True, False]
    assert [row["extracted"] for row in rows] == ["18", "4", "70000", None]
    assert [row["program_error"] for row in rows][:3] == [None, None, None]
    assert "ValueError: no" in rows[3]["program_error"]
    assert summary["accuracy"] == 0.5 and summary["programs_failed"] == 1


def _subprocess(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "study.evaluate", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_command_line_error_has_no_traceback(tmp_path):
    result = _subprocess(
        ["--predictions", "p.jsonl", "--references", str(tmp_path / "r.jsonl"), "--out", "m.json"]
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'r.jsonl'}: no such file"]


@pytest.mark.slow
def test_command_line_default_metrics_and_similarity_offline(files, tmp_path):
    preds, refs = files
    out = tmp_path / "metrics.json"
    result = _subprocess(
        _args(preds, refs, tmp_path)[:-1] + [str(out), "--metrics", "accuracy,rouge1,similarity"]
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["metrics"] == ["accuracy", "rouge1", "similarity"]
    assert summary["accuracy"] == pytest.approx(9 / 12)
    assert 0.2 < summary["rouge1"] < 1.0 and 0.2 < summary["similarity"] < 1.0
    assert summary["similarity_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert json.loads(result.stdout.splitlines()[-1]) == summary
    default = _subprocess(_args(preds, refs, tmp_path))
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "m.json").read_text())["metrics"] == ["accuracy", "rouge1"]


@pytest.mark.slow
def test_unloadable_similarity_model_exits_2(files, tmp_path, capsys):
    missing = tmp_path / "no-model"
    err = _error_line(
        capsys, _args(*files, tmp_path, "--metrics", "similarity", "--similarity-model", str(missing))
    )
    assert "cannot load sentence-embedding model" in err


NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("which", ["preds", "refs"])
def test_deeply_nested_json_exits_2_naming_the_line(files, tmp_path, capsys, which):
    preds, refs = files
    target = preds if which == "preds" else refs
    lines = target.read_text().splitlines()
    target.write_text("".join(line + "\n" for line in [lines[0], NESTED, *lines[2:]]))
    err = _error_line(capsys, _args(preds, refs, tmp_path))
    assert f"{which}.jsonl:2: malformed JSON: nested too deeply" in err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    ("flag", "target", "message"),
    [
        ("--out", "preds", "--out {path} is the --predictions file"),
        ("--out", "refs", "--out {path} is the --references file"),
        ("--per-example", "preds", "--per-example {path} is the --predictions file"),
        ("--out", "preds-via-dots", "is the --predictions file"),
        ("--out", "preds-via-link", "is the --predictions file"),
    ],
)
def test_an_output_that_is_an_input_is_refused_and_nothing_written(
    files, tmp_path, capsys, flag, target, message
):
    preds, refs = files
    before = {p: p.read_bytes() for p in (preds, refs)}
    path = {
        "preds": preds,
        "refs": refs,
        "preds-via-dots": tmp_path / "." / ".." / tmp_path.name / preds.name,
    }.get(target)
    if target == "preds-via-link":
        path = tmp_path / "link.jsonl"
        path.symlink_to(preds)
    argv = ["--predictions", str(preds), "--references", str(refs), "--out", str(tmp_path / "m.json")]
    if flag == "--out":
        argv[-1] = str(path)
    else:
        argv += [flag, str(path)]
    assert message.format(path=path) in _error_line(capsys, argv)
    assert {p: p.read_bytes() for p in (preds, refs)} == before
    assert not (tmp_path / "m.json").exists()


def test_a_per_example_directory_is_refused_before_anything_is_written(files, tmp_path, capsys):
    (tmp_path / "rows").mkdir()
    err = _error_line(capsys, _args(*files, tmp_path, "--per-example", str(tmp_path / "rows")))
    assert f"--per-example {tmp_path / 'rows'} is a directory" in err
    assert not (tmp_path / "m.json").exists()


def _special_output(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An output path of `kind` made in `tmp_path`, and the words the refusal uses for it."""
    path = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "is a FIFO (named pipe)"
    if kind == "device":
        try:  # a null device of our own: the test never points the old code at the system's /dev/null
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root (CAP_MKNOD)")
        return path, "is a character device"
    if kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
        return path, "is a socket"
    target = {
        "link-to-dir": tmp_path / "folder",
        "link-to-fifo": tmp_path / "pipe",
        "link-to-dev-null": Path("/dev/null"),
        "dangling-link": tmp_path / "nothing",
    }[kind]
    if kind == "link-to-dir":
        target.mkdir()
    if kind == "link-to-fifo":
        os.mkfifo(target)
    path.symlink_to(target)
    return path, "is a symbolic link"


@pytest.mark.parametrize("flag", ["--out", "--per-example"])
@pytest.mark.parametrize(
    "kind", ["fifo", "device", "socket", "link-to-dir", "link-to-fifo", "link-to-dev-null", "dangling-link"]
)
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_as_it_was(
    files, tmp_path, capsys, flag, kind
):
    path, words = _special_output(tmp_path, kind)
    before = os.lstat(path)
    argv = _args(*files, tmp_path)
    if flag == "--out":
        argv[-1] = str(path)
    else:
        argv += [flag, str(path)]
    assert f"{flag} {path} {words}; give the path of a regular file" in _error_line(capsys, argv)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert not (tmp_path / "m.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_outputs_are_replaced_whole_and_keep_the_usual_mode(files, tmp_path):
    out = tmp_path / "m.json"
    out.write_text("old")
    _run(*files, out, "--metrics", "accuracy", "--per-example", str(tmp_path / "rows.jsonl"))
    assert (
        json.loads(out.read_text())["n"] == 12
        and len((tmp_path / "rows.jsonl").read_text().splitlines()) == 12
    )
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "preds.jsonl", "refs.jsonl", "rows.jsonl"]


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("style", ["text", "code"])
def test_a_reference_dividing_by_zero_is_caught_before_scoring_naming_the_line(
    files, tmp_path, capsys, style
):
    preds, refs = files
    lines = refs.read_text().splitlines()
    lines[6] = json.dumps({"question": json.loads(lines[6])["question"], "answer": "#### 5/0"})
    refs.write_text("\n".join(lines) + "\n")
    err = _error_line(capsys, _args(preds, refs, tmp_path, "--style", style, "--metrics", "accuracy"))
    assert "refs.jsonl:7: final answer '5/0' divides by zero" in err


@pytest.mark.slow  # trains and tests one micro trial (~45 s on a loaded 2-core machine)
def test_a_trials_generations_rescored_give_the_trials_own_test_metrics(micro_t5_dir, tmp_path):
    """study.evaluate scores with a trial's code and references: its generations file gives its numbers."""
    from study.train import main as train

    out = tmp_path / "trial"
    final = train(
        [
            "--method", "full", "--preset", "tiny", "--model", str(micro_t5_dir), "--out", str(out),
            "--train-size", "64", "--dev-size", "4", "--test-size", "12", "--set", "lr=1e-2",
            "--set", "epochs=2", "--set", "max_new_tokens=24", "--set", "metrics=accuracy",
            "--set", "test_metrics=accuracy,rouge1", "--set", "prompt_style=breakdown",
        ]
    )  # fmt: skip
    metrics = tmp_path / "metrics.json"
    main(["--generations", str(out / "generations_test.jsonl"), "--out", str(metrics)])
    summary = json.loads(metrics.read_text())
    assert summary["n"] == final["test/n"] == 12
    assert summary["accuracy"] == final["test/accuracy"]
    assert summary["rouge1"] == pytest.approx(final["test/rouge1"], abs=1e-12)
    assert summary["accuracy_ci"] == [final["test/accuracy_low"], final["test/accuracy_high"]]


def test_a_generations_file_with_a_bad_row_exits_2_naming_the_line(tmp_path, capsys):
    rows = [{"prediction": "4", "target": "#### 4", "extracted": "4", "reference": "4"}, {"prediction": 5}]
    path = _write_jsonl(tmp_path / "generations.jsonl", rows)
    err = _error_line(capsys, ["--generations", str(path), "--out", str(tmp_path / "m.json")])
    assert err.strip() == f"error: {path}:2: 'prediction' must be a string"
    assert "both" in _error_line(
        capsys, ["--generations", str(path), "--references", str(path), "--out", "m"]
    )


def test_rouge1_compares_with_the_prompt_styles_target_as_a_trial_does(files, tmp_path):
    """A prediction that is exactly what the no_breakdown style trains scores ROUGE-1 1.0 (the answer text,
    with its `<<expr=value>>` annotations and `#### N` line, is not what such a trial is compared with)."""
    _, refs = files
    records = load_references(refs)
    preds = _write_jsonl(
        tmp_path / "p.jsonl", [{"prediction": format_example(r, "no_breakdown")[1]} for r in records]
    )
    summary = _run(preds, refs, tmp_path / "m.json", "--metrics", "rouge1", "--prompt-style", "no_breakdown")
    assert summary["rouge1"] == pytest.approx(1.0) and summary["prompt_style"] == "no_breakdown"
