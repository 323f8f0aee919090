"""Evaluating a model on a split: batched generation, answer extraction (or program runs), and metrics.

Generation sorts inputs by length so each batch pads little, decodes greedily with the KV cache, and can
let a calculator fill GSM8K's `<<expr=` annotations as it goes. Programs written for the `code` style run
in the sandbox, never in this process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainables.data.arithmetic import format_answer
from trainables.data.batching import collate, encode_pairs, token_budget_batches
from trainables.data.prompts import format_example, usable
from trainables.data.records import MathRecord
from trainables.scoring.collapse import answer_spread
from trainables.scoring.eval_settings import METRICS, EvalSettings
from trainables.scoring.metric_registry import SplitGenerations, compute_metrics
from trainables.scoring.metrics import bootstrap_ci, extract_answer, perplexity


@dataclass
class EvalResult:
    """The metrics of one split and the per-example rows behind them."""

    metrics: dict[str, float]
    rows: list[dict] = field(default_factory=list)

    def write_generations(self, path: Path) -> None:
        """One JSON line per example: input, target, prediction, extracted answer, reference, correct."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as file:
            for row in self.rows:
                file.write(json.dumps(row) + "\n")


@torch.no_grad()
def generate(
    model,
    tokenizer,
    inputs: Sequence[str],
    settings: EvalSettings,
    *,
    calculator: bool = False,
    max_input_tokens: int | None = None,
) -> list[str]:
    """Greedy batched generation in length-sorted batches; outputs in the order of `inputs`.

    Inputs are truncated to `max_input_tokens` (None: not at all), as training truncated them. A batch
    holds at most `settings.batch_size` rows and `settings.batch_tokens` tokens (input + new, padded).
    """
    device = next(model.parameters()).device
    model.eval()
    truncate = max_input_tokens is not None
    encoded = tokenizer(list(inputs), truncation=truncate, max_length=max_input_tokens)["input_ids"]
    batches = token_budget_batches(
        [(len(ids), settings.max_new_tokens) for ids in encoded],
        max_rows=settings.batch_size,
        max_tokens=settings.batch_tokens,
    )
    processors = None
    if calculator:
        from trainables.scoring.calculator import make_calculator_processor

        processors = [make_calculator_processor(tokenizer)]
    outputs: list[str] = [""] * len(encoded)
    for ids in batches:
        batch = collate(
            [{"input_ids": encoded[i], "labels": [0]} for i in ids], tokenizer.pad_token_id, device
        )
        generated = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            do_sample=False,
            logits_processor=processors,
        )
        for i, text in zip(ids, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[i] = text.strip()
    return outputs


def extract_all(
    predictions: Sequence[str], *, style: str, settings: EvalSettings
) -> tuple[list, list[str | None]]:
    """The answer of each prediction: the number in the text, or what the program prints (code style)."""
    if style != "code":
        return [extract_answer(p) for p in predictions], [None] * len(predictions)
    from trainables.scoring.sandbox import SandboxLimits, run_programs
    from trainables.scoring.straight_line import straight_line_output

    # Straight-line arithmetic is scored from its syntax tree; only the rest pays for a sandboxed process.
    printed: list[str | None] = [straight_line_output(p) for p in predictions]
    extracted = [None if out is None else extract_answer(out, style="code") for out in printed]
    outputs = list(printed)
    rest = [i for i, out in enumerate(printed) if out is None]
    limits = SandboxLimits(wall_seconds=settings.program_timeout_s)
    for i, result in zip(rest, run_programs([predictions[i] for i in rest], limits), strict=True):
        extracted[i] = extract_answer(result.stdout, style="code") if result.ok else None
        outputs[i] = result.stdout if result.ok else f"error: {result.error}"
    return extracted, outputs


def evaluate_split(
    model,
    tokenizer,
    records: Sequence[MathRecord],
    *,
    style: str,
    settings: EvalSettings,
    calculator: bool = False,
    metrics: Sequence[str] | None = None,
    max_input_tokens: int | None = None,
    max_target_tokens: int | None = None,
) -> EvalResult:
    """Generate for every record of a split and score the generations.

    `max_input_tokens` and `max_target_tokens` truncate inputs (for generation and perplexity) and
    reference targets (for perplexity) as the trial's training did; None leaves them whole.
    """
    records = [r for r in records if usable(r, style)][: settings.max_examples]
    if not records:
        raise ValueError(f"no records of this split can be used with prompt style {style!r}")
    wanted = set(metrics if metrics is not None else settings.metrics) | {"accuracy"}
    pairs = [format_example(r, style) for r in records]
    inputs = [p[0] for p in pairs]
    predictions = generate(
        model, tokenizer, inputs, settings, calculator=calculator, max_input_tokens=max_input_tokens
    )
    extracted, program_outputs = extract_all(predictions, style=style, settings=settings)
    split = SplitGenerations(
        predictions=predictions,
        targets=[p[1] for p in pairs],
        extracted=extracted,
        answers=[r.answer for r in records],
        similarity_model=settings.similarity_model,
    )
    correct = split.correct
    low, high = bootstrap_ci(correct)
    result = {
        "accuracy_low": low,
        "accuracy_high": high,
        "n": len(correct),
        **answer_spread(extracted),  # distinct_answers, top_answer_share: is the model collapsed?
    }
    # every metric computed from generations by its record (the code `study.evaluate` scores with)
    result |= compute_metrics(split, [m for m in METRICS if m in wanted])
    if "perplexity" in wanted:  # the one metric that needs the model, not its generations
        limits = {"max_input_tokens": max_input_tokens, "max_target_tokens": max_target_tokens}
        result["perplexity"] = _perplexity(model, tokenizer, pairs, settings, **limits)
    rows = [
        {
            "input": pair[0],
            "target": pair[1],
            "prediction": prediction,
            "program_output": output,
            "extracted": format_answer(x),
            "reference": record.answer,
            "correct": ok,
        }
        for pair, prediction, output, x, record, ok in zip(
            pairs, predictions, program_outputs, extracted, records, correct, strict=True
        )
    ]
    return EvalResult(metrics=result, rows=rows)


def _perplexity(
    model,
    tokenizer,
    pairs,
    settings: EvalSettings,
    *,
    max_input_tokens: int | None,
    max_target_tokens: int | None,
) -> float:
    device = next(model.parameters()).device
    examples = encode_pairs(
        tokenizer, pairs, max_input_tokens=max_input_tokens, max_target_tokens=max_target_tokens
    )
    groups = token_budget_batches(
        [(len(e["input_ids"]), len(e["labels"])) for e in examples],
        max_rows=settings.batch_size,
        max_tokens=settings.batch_tokens,
    )
    batches = (collate([examples[i] for i in ids], tokenizer.pad_token_id, device) for ids in groups)
    return perplexity(model, batches)
