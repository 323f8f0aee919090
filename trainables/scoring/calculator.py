"""A calculator for GSM8K's `<<expr=value>>` annotations, applied while the model decodes.

Small models copy numbers well and do arithmetic badly. Whenever a generated sequence ends with `<<EXPR=`,
`CalculatorLogitsProcessor` evaluates EXPR exactly (`safe_eval`, never `eval`), writes the value the way
GSM8K does (`format_number`; both from `trainables.data.arithmetic`) and forces the tokens of `value>>`
into that row over the next steps, while the other rows of the batch decode freely. Every annotation of
GSM8K (23,716 in train, 4,282 in test) records the exact value of its expression; `format_number` writes
97.2% of train's (96.4% of test's) character for character, the rest being GSM8K's stray styles `.4` (for
0.4), `144.00` and `3/4`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from trainables.data.arithmetic import (
    DECIMALS,
    EXPRESSION_CHARS,
    MAX_CHARS,
    MAX_DEPTH,
    MAX_DIGITS,
    MAX_EXACT_PLACES,
    format_number,
    safe_eval,
)


@dataclass(frozen=True)
class CalculatorConfig:
    """The calculator's markers and the bounds that keep hostile expressions cheap."""

    open_marker: str = "<<"
    """Starts an annotation. T5's SentencePiece vocabulary has no `<`: use e.g. `[[` with hub T5 models."""
    equals: str = "="
    """Ends the expression; the calculator fills in what follows it."""
    close_marker: str = ">>"
    """Forced after the value."""
    max_chars: int = MAX_CHARS
    """Longer expressions are left alone (GSM8K's longest has 30 characters); also sets the decoded tail."""
    max_depth: int = MAX_DEPTH
    """Deeper parenthesis nesting is left alone, checked before parsing (GSM8K nests at most 2)."""
    max_digits: int = MAX_DIGITS
    """Every literal and intermediate result must have numerator and denominator below 10**max_digits."""
    decimals: int = DECIMALS
    """Places a value is rounded to when it is not a short terminating decimal (GSM8K writes 137.33)."""
    max_exact_places: int = MAX_EXACT_PLACES
    """Terminating decimals with at most this many places are written exactly (GSM8K writes .004, .925)."""

    def __post_init__(self) -> None:
        for name in ("open_marker", "equals", "close_marker"):
            marker = getattr(self, name)
            if not marker or any(c.isspace() or c in EXPRESSION_CHARS for c in marker):
                raise ValueError(f"{name}={marker!r} must be non-empty without spaces, digits or `.+-*/()`")
        for name in ("max_chars", "max_depth", "max_digits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("decimals", "max_exact_places"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 0")


class CalculatorLogitsProcessor(LogitsProcessor):
    """Forces `value>>` after every `<<EXPR=` that a row of a batched `generate` writes.

    Each row has its own queue of forced tokens; the other rows are not held up. Per step the processor
    reads the last token of every row and decodes a short tail only of rows whose last token ends with
    `=`; a malformed or hostile expression leaves the model's own tokens alone. The queues are a function
    of each row's tokens, so one instance serves any number of `generate` calls and batch sizes: a new call
    is recognised because its rows do not extend the previous step's rows, and beam search (which reorders
    rows) is followed by matching each row to the row it extends. Works with greedy decoding, sampling and
    beams, for encoder-decoder and decoder-only models.
    """

    supports_continuous_batching = False

    def __init__(self, tokenizer, config: CalculatorConfig | None = None) -> None:
        """Check the markers against the tokenizer and find the tokens that can end a trigger.

        Raises:
            ValueError: if the tokenizer cannot write a marker (it encodes to `<unk>` or decodes differently).
        """
        self.tokenizer = tokenizer
        self.config = config or CalculatorConfig()
        # a fast tokenizer's `tokenizers.Tokenizer` gives the same ids and text without transformers' overhead
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._special = frozenset(tokenizer.all_special_ids)
        for name in ("open_marker", "equals", "close_marker"):
            marker = getattr(self.config, name)
            ids = self._encode(marker)
            if self._special & set(ids) or self._decode(ids).strip() != marker:
                raise ValueError(
                    f"{name}={marker!r} cannot be written by this tokenizer (it reads back as "
                    f"{tokenizer.decode(ids)!r}); pick markers in its vocabulary, e.g. '[[' and ']]'"
                )
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        ordinary = [(i, piece) for i, piece in enumerate(pieces) if i not in self._special]
        self._trigger_ids = frozenset(i for i, piece in ordinary if piece.endswith(self.config.equals[-1]))
        # a tail holding none of these tokens cannot hold the open marker: no need to decode it
        self._open_ids = frozenset(i for i, piece in ordinary if self.config.open_marker[-1] in piece)
        # enough tokens for the open marker, the longest expression and `=` when every token writes a character
        self._window = self.config.max_chars + len(self.config.open_marker) + len(self.config.equals)
        self._cache: dict[str, list[int]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every row's queue (done automatically when a new `generate` call starts)."""
        self._pending: dict[int, list[int]] = {}
        self._previous: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Force the next queued token in rows that have one; start a queue where a row ends with `<<EXPR=`."""
        self._follow_rows(input_ids)
        last = input_ids[:, -1].tolist()
        forced_rows, forced_tokens = [], []
        for row, queue in list(self._pending.items()):
            if last[row] != queue[0]:  # the forced token was not taken (row finished, or overridden)
                del self._pending[row]
                continue
            queue.pop(0)
            if queue:
                forced_rows.append(row)
                forced_tokens.append(queue[0])
            else:
                del self._pending[row]
        triggered = [
            row for row, token in enumerate(last) if token in self._trigger_ids and row not in self._pending
        ]
        if triggered:
            tails = input_ids[triggered, -self._window :].tolist()
            for row, tail in zip(triggered, tails, strict=True):
                tokens = self._result_tokens(tail)
                if tokens:
                    self._pending[row] = list(tokens)  # a copy: the queue is consumed, the cache is shared
                    forced_rows.append(row)
                    forced_tokens.append(tokens[0])
        if not forced_rows:
            return scores
        rows = torch.tensor(forced_rows, device=scores.device)
        # index_fill returns a new tensor: the caller's scores stay as they were
        scores = scores.index_fill(0, rows, float("-inf"))
        scores[rows, torch.tensor(forced_tokens, device=scores.device)] = 0.0
        return scores

    def _follow_rows(self, input_ids: torch.LongTensor) -> None:
        """Carry each row's queue to the row that extends it; reset when the rows start a new sequence."""
        previous, self._previous = self._previous, input_ids  # generate builds a new tensor every step
        if not self._pending:
            return
        if previous is None or input_ids.shape[1] != previous.shape[1] + 1:
            self.reset()
            self._previous = input_ids
            return
        if input_ids.shape[0] == previous.shape[0] and torch.equal(input_ids[:, :-1], previous):
            return  # greedy and sampling: every row extends the same row
        extends = (input_ids[:, None, :-1] == previous[None, :, :]).all(dim=-1)  # (rows, previous rows)
        parents = [row.nonzero().flatten().tolist() for row in extends]
        self._pending = {
            row: list(self._pending[found[0]])
            for row, found in enumerate(parents)
            if found and found[0] in self._pending
        }

    def _result_tokens(self, tail: list[int]) -> list[int] | None:
        """The tokens of `value>>` for a tail ending with `<<EXPR=`, or None to leave the row alone."""
        config = self.config
        if self._open_ids.isdisjoint(tail):
            return None
        text = self._decode(tail)
        start = text.rfind(config.open_marker)
        if start < 0 or not text.endswith(config.equals):
            return None
        expr = text[start + len(config.open_marker) : len(text) - len(config.equals)]
        if config.close_marker in expr:
            return None
        value = safe_eval(
            expr, max_chars=config.max_chars, max_depth=config.max_depth, max_digits=config.max_digits
        )
        if value is None:
            return None
        wanted = format_number(value, decimals=config.decimals, max_exact_places=config.max_exact_places)
        return self._tokens_in_context(tail, text, wanted + config.close_marker)

    def _tokens_in_context(self, tail: list[int], text: str, wanted: str) -> list[int] | None:
        """Tokens that, appended to `tail`, add exactly `wanted` to its decoded text (no space before it).

        SentencePiece would write `24` at the start of a text as `▁24`, which decodes with a space; so the
        candidates are the tokens of `=24>>` after the tokens of `=`, the plain encoding, and one token per
        character, and the first whose decoding in context is exact wins.
        """
        cached = self._cache.get(wanted)
        if cached is not None and self._decode(tail + cached) == text + wanted:
            return cached
        for candidate in self._candidates(wanted):
            if (
                candidate
                and not self._special & set(candidate)
                and self._decode(tail + candidate) == text + wanted
            ):
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[wanted] = candidate
                return candidate
        return None

    def _candidates(self, wanted: str) -> Iterator[list[int]]:
        """Token sequences that might write `wanted`, best first (see `_tokens_in_context`)."""
        anchored = self._encode(self.config.equals + wanted)
        for k in range(1, len(anchored)):
            if self._decode(anchored[:k]).strip() == self.config.equals:
                yield anchored[k:]
                break
        yield self._encode(wanted)
        per_char = [self.tokenizer.convert_tokens_to_ids(char) for char in wanted]
        if None not in per_char:
            yield per_char

    def _encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _decode(self, ids: list[int]) -> str:
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=True)
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def make_calculator_processor(tokenizer, config: CalculatorConfig | None = None) -> CalculatorLogitsProcessor:
    """A calculator for `model.generate(..., logits_processor=[make_calculator_processor(tokenizer)])`.

    Raises:
        ValueError: if the tokenizer cannot write the markers (see `CalculatorLogitsProcessor`).
    """
    return CalculatorLogitsProcessor(tokenizer, config)


def calculator_supported(tokenizer, config: CalculatorConfig | None = None) -> bool:
    """Whether `tokenizer` can write the calculator's markers (T5's SentencePiece vocabulary has no `<`)."""
    try:
        make_calculator_processor(tokenizer, config)
    except ValueError:
        return False
    return True
