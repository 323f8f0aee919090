"""Tokenising (input, target) pairs once and padding them per batch, for training and perplexity."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def encode_pairs(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    max_input_tokens: int | None,
    max_target_tokens: int | None,
) -> list[dict[str, list[int]]]:
    """Tokenise (input, target) pairs once, truncated to the limits (None: not truncated); padding happens
    per batch."""
    inputs = tokenizer(
        [p[0] for p in pairs], truncation=max_input_tokens is not None, max_length=max_input_tokens
    )
    targets = tokenizer(
        text_target=[p[1] for p in pairs],
        truncation=max_target_tokens is not None,
        max_length=max_target_tokens,
    )
    return [
        {"input_ids": i, "labels": t} for i, t in zip(inputs["input_ids"], targets["input_ids"], strict=True)
    ]


def collate(
    examples: Sequence[dict[str, list[int]]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad a batch: inputs with the pad id (masked), labels with -100 (ignored by the loss)."""
    width = max(len(e["input_ids"]) for e in examples)
    label_width = max(len(e["labels"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), label_width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        labels[row, : len(example["labels"])] = torch.tensor(example["labels"])
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": (input_ids != pad_id).long().to(device),
        "labels": labels.to(device),
    }


def token_budget_batches(
    widths: Sequence[Sequence[int]], *, max_rows: int, max_tokens: int | None
) -> list[list[int]]:
    """Indices grouped into batches, sorted by length, each of at most `max_rows` rows and, padded, at most
    `max_tokens` tokens (a batch takes one row even when that row alone is over).

    `widths[i]` are example i's lengths per padded part (input, target or generated tokens); a batch pads
    each part to its longest, so it costs rows x (sum of the parts' longest).
    """
    order = sorted(range(len(widths)), key=lambda i: tuple(widths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    longest: list[int] = []
    for i in order:
        grown = [max(a, b) for a, b in zip(longest, widths[i], strict=True)] if current else list(widths[i])
        over = max_tokens is not None and (len(current) + 1) * sum(grown) > max_tokens
        if current and (len(current) == max_rows or over):
            batches.append(current)
            current, grown = [], list(widths[i])
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches
