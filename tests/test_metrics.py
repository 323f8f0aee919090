"""Answer extraction, accuracy, bootstrap, perplexity, ROUGE-1 and similarity, mostly as tables."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from trainables.data.arithmetic import format_answer, parse_number
from trainables.data.records import parse_gsm8k_answer
from trainables.scoring.metrics import (
    SimilarityModelError,
    accuracy,
    accuracy_per_example,
    answers_match,
    bootstrap_ci,
    extract_answer,
    perplexity,
    rouge1,
    semantic_similarity,
)

# Real GSM8K test answers, copied verbatim (lines 1, 147, 490, 1114 and 202 of test.jsonl).
JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18"
)
JOHNNY = (
    "The first set had 500 pieces, and the second set had 3 times as many as the first set, so the "
    "second set has 500*3=<<500*3=1500>>1500 pieces\n"
    "The third set had one-quarter of the 500 pieces, so that means it had "
    "500*.25= <<500*.25=125>>125 pieces\n"
    "In total, that means Johnny picked up 500 + 1500+ 125= <<500+1500+125=2125>>2125 blocks\n#### 2,125"
)
TEMPERATURE = (
    "-48 + 21 + (-3) = <<-48+21+(-3)=-30>>-30\n-30/3 = <<-30/3=-10>>-10 degrees\nThe average highest "
    "temperature recorded in Southlandia, Northlandia, and Midlandia is -10 degrees Fahrenheit.\n#### -10"
)
MORNING = (
    "Start = +<<2=2>>2 degrees\nDrop 8 degrees = 2 - 8 = -6 degrees\n"
    "Increase 3 degrees = -6 + 3 = -3 degrees\n"
    "It was -3 degrees Celsius in the morning.\n#### -3"
)
SALARY = (
    "He makes 2000*52=$<<2000*52=104000>>104,000 a year\n"
    "So the raise is worth .05*104,000=$<<.05*104000=5200>>5200"
    "\nSo he makes 104,000+5200=$<<104000+5200=109200>>109,200 from his salary\nSo in total he made "
    "109,200+5,000=$<<109200+5000=114200>>114,200\n#### 114,200"
)


def _without_final_line(answer: str) -> str:
    return answer.rsplit("\n", 1)[0]


EXTRACTION_CASES = [
    # the '#### N' form, preferred when present
    ("#### 72", "72"),
    ("#### 1,000", "1000"),
    ("#### 1,234,567", "1234567"),
    ("####-3", "-3"),
    ("#### $18.00", "18"),
    ("So the total is 20 + 5 = 25.\n#### 25", "25"),
    ("Answer 12 is wrong, try again.\n#### 7\nQuestion: how many are 9?", "7"),
    ("#### \nThe answer is 6", "6"),  # an empty '####' falls through to the next rule
    # 'The answer is N' / 'answer: N'
    ("The answer is $18.00.", "18"),
    ("The answer is 18 dollars, 3 more than Tom's 15.", "18"),
    ("the final answer is: 0.5", "1/2"),
    ("Answer: 3/4", "3/4"),
    ("The answer is .5", "1/2"),
    # last number, with signs, units, currency and punctuation
    ("-3", "-3"),
    ("It was \u22123 degrees.", "-3"),
    ("x = -3", "-3"),
    ("3/4", "3/4"),
    ("18.0", "18"),
    ("18.50", "37/2"),
    ("It costs 5 dollars.", "5"),
    ("She paid $1,000.50 in total.", "2001/2"),
    ("The discount is 5%.", "5"),
    ("He has 5-3=2 left", "2"),
    ("The board is 2 x 4 feet, so 8", "8"),
    ("It weighs 12kg.", "12"),
    ("US$5", "5"),
    ("The answer was 1e3", "1000"),
    # calculator annotations: only the value after '='
    ("48/2 = <<48/2=24>>24", "24"),
    ("so she has <<48/2=24>>", "24"),
    ("He gets <<3*4=12>> apples", "12"),
    ("Then 9*60=<<9*60=", "60"),  # truncated inside an annotation: the half-written one is ignored
    ("<<10-4=6>>6 are left.", "6"),
    # dates, times and versions are not numbers; a sentence-final period is not a decimal point
    ("On 12/25/2020 he paid 5.", "5"),
    ("Born 2020-01-05, she is 3.", "3"),
    ("On 5.3.2021 he paid 7", "7"),
    ("He left at 3:30", None),
    ("Use version v1.2.3", None),
    ("He ate 3.5.", "7/2"),
    ("It costs 5.The next item", "5"),
    # no number at all
    ("", None),
    ("I don't know.", None),
    ("#### eighteen", None),
    ("The answer is unknown", None),
    # real GSM8K answers, whole and without their '#### N' line
    (JANET, "18"),
    (_without_final_line(JANET), "18"),
    (JOHNNY, "2125"),
    (_without_final_line(JOHNNY), "2125"),
    (TEMPERATURE, "-10"),
    (_without_final_line(TEMPERATURE), "-10"),
    (MORNING, "-3"),
    (_without_final_line(MORNING), "-3"),
    (SALARY, "114200"),
    (_without_final_line(SALARY), "114200"),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTION_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == (None if expected is None else Fraction(expected))


CODE_CASES = [
    ("18\n", "18"),
    ("18.0\n", "18"),
    ("0.30000000000000004\n", "3/10"),  # float noise of 0.1 + 0.2
    ("17.999999999999996\n", "18"),
    ("-3\n", "-3"),
    ("step 1: 4\nstep 2: 9\n", "9"),
    ("[1, 2, 3]\n", "3"),
    ("1e+20\n", "100000000000000000000"),
    ("33.333333333333336\n", "333333333333/10000000000"),
    ("", None),
    ("True\n", None),
]


@pytest.mark.parametrize(("stdout", "expected"), CODE_CASES)
def test_extract_answer_code_style_reads_last_printed_number(stdout, expected):
    assert extract_answer(stdout, style="code") == (None if expected is None else Fraction(expected))


def test_code_style_ignores_markers():
    assert extract_answer("#### 5\n7\n", style="code") == 7
    assert extract_answer("#### 5\n7\n", style="text") == 5


def test_huge_exponent_is_not_expanded():
    # A model writing 1e999999999 must not make extraction build a billion-digit integer.
    assert extract_answer("1e999999999") == 1
    assert extract_answer("1e+308", style="code") == 10**308


def test_extract_answer_rejects_unknown_style():
    with pytest.raises(ValueError, match="style 'python'"):
        extract_answer("5", style="python")


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (Fraction(18), "18", True),
        (Fraction(18), "18.0", True),
        (Fraction(1, 2), "0.5", True),
        (Fraction(1000), "1,000", True),
        (Fraction(5), "$5", True),
        (Fraction(3, 4), "3/4", True),
        (Fraction(-3), "-3", True),
        (Fraction(-3), "3", False),
        (Fraction(3), Fraction(3), True),
        (Fraction(33, 100), "1/3", False),
        (None, "3", False),
    ],
)
def test_answers_match(predicted, reference, expected):
    assert answers_match(predicted, reference) is expected


def test_non_numeric_reference_is_an_error_not_a_miss():
    with pytest.raises(ValueError, match="reference answer 'twelve' is not a number"):
        answers_match(Fraction(12), "twelve")
    with pytest.raises(ValueError, match="'5/0'"):
        parse_number("5/0")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(72), "72"),
        (Fraction(-3), "-3"),
        (Fraction(1, 2), "0.5"),
        (Fraction(-5, 2), "-2.5"),
        (Fraction(1, 80), "0.0125"),
        (Fraction(2001, 2), "1000.5"),
        (Fraction(3, 4), "0.75"),
        (Fraction(1, 3), "1/3"),
        (Fraction(-2, 7), "-2/7"),
        (None, None),
    ],
)
def test_format_answer(value, text):
    assert format_answer(value) == text
    if text is not None:
        assert parse_number(text) == value  # the text reads back to the same number


def test_accuracy_and_per_example():
    predictions = ["#### 18", "The answer is 4.", "no idea", "It costs $1,000."]
    references = ["18", "5", "3", "1000"]
    extracted, correct = accuracy_per_example(predictions, references)
    assert extracted == [18, 4, None, 1000]
    assert correct == [True, False, False, True]
    assert accuracy(predictions, references) == 0.5
    assert accuracy(["18\n", "4.0\n"], ["18", "4"], style="code") == 1.0


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [(["1"], ["1", "2"], "1 predictions but 2"), ([], [], "no predictions")],
)
def test_accuracy_rejects_bad_lengths(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        accuracy(predictions, references)


def test_bootstrap_ci():
    assert bootstrap_ci([True] * 20) == (1.0, 1.0)
    correct = [True, False] * 50  # accuracy 0.5 on 100 examples: normal approximation 0.5 +- 0.098
    low, high = bootstrap_ci(correct)
    assert low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)
    assert bootstrap_ci(correct, seed=0) == (low, high)  # seeded: reproducible
    narrow = bootstrap_ci([True, False] * 500)
    assert narrow[0] > low and narrow[1] < high  # more examples, tighter interval
    low90, high90 = bootstrap_ci(correct, confidence=0.9)
    assert low < low90 < 0.5 < high90 < high


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"correct": []}, "at least one"),
        ({"correct": [True], "n_resamples": 0}, "n_resamples must be >= 1, got 0"),
        ({"correct": [True], "confidence": 1.0}, r"confidence must be in \(0, 1\), got 1.0"),
    ],
)
def test_bootstrap_ci_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)


def _gsm8k_rows(data_dir: Path, name: str) -> list[dict]:
    path = data_dir / "gsm8k" / name
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["train.jsonl", "test.jsonl", "test_socratic.jsonl"])
def test_every_real_gsm8k_answer_extracts_to_its_final_number(data_dir, name):
    rows = _gsm8k_rows(data_dir, name)
    wrong = [
        (i, row["answer"][-60:])
        for i, row in enumerate(rows)
        if extract_answer(row["answer"])
        != parse_number(parse_gsm8k_answer(row["question"], row["answer"]).answer)
    ]
    assert wrong == []


def test_real_solutions_without_final_line_mostly_end_in_the_answer(data_dir):
    # GSM8K's last step usually computes the answer; reading annotations wrongly would break that.
    rows = _gsm8k_rows(data_dir, "test.jsonl")
    hits = sum(
        extract_answer(_without_final_line(row["answer"].strip()))
        == parse_number(row["answer"].strip().rsplit("#### ", 1)[1])
        for row in rows
    )
    assert hits / len(rows) > 0.95  # 97.2% on the official test split


# --- perplexity on a tiny random T5 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_t5():
    torch = pytest.importorskip("torch")
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, dropout_rate=0.5,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def _batch(inputs, targets):
    """Right-padded batch (pad id 0); padded target positions labelled -100."""
    import torch

    width_in, width_out = max(map(len, inputs)), max(map(len, targets))
    return {
        "input_ids": torch.tensor([x + [0] * (width_in - len(x)) for x in inputs]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width_in - len(x)) for x in inputs]),
        "labels": torch.tensor([y + [-100] * (width_out - len(y)) for y in targets]),
    }


INPUTS = [[5, 9, 13, 1], [7, 3, 1], [20, 21, 22, 23, 24, 1]]
TARGETS = [[4, 6, 8, 1], [11, 1], [30, 31, 32, 33, 34, 35, 1]]


def test_perplexity_is_exp_of_token_weighted_nll(tiny_t5):
    import torch

    batches = [_batch(INPUTS[:2], TARGETS[:2]), _batch(INPUTS[2:], TARGETS[2:])]
    with torch.no_grad():  # the model's own loss is the mean NLL of one batch's target tokens
        losses = [tiny_t5(**batch).loss.item() for batch in batches]
    counts = [6, 7]
    expected = math.exp(sum(loss * n for loss, n in zip(losses, counts, strict=True)) / sum(counts))
    assert perplexity(tiny_t5, batches) == pytest.approx(expected, rel=1e-5)
    assert perplexity(tiny_t5, batches) != pytest.approx(math.exp(sum(losses) / 2), rel=1e-3)


def test_perplexity_ignores_padding(tiny_t5):
    one_batch = [_batch(INPUTS, TARGETS)]
    one_per_batch = [_batch([x], [y]) for x, y in zip(INPUTS, TARGETS, strict=True)]
    assert perplexity(tiny_t5, one_batch) == pytest.approx(perplexity(tiny_t5, one_per_batch), rel=1e-5)


def test_perplexity_turns_dropout_off_and_restores_train_mode(tiny_t5):
    batches = [_batch(INPUTS, TARGETS)]
    expected = perplexity(tiny_t5, batches)
    tiny_t5.train()
    try:
        assert perplexity(tiny_t5, batches) == pytest.approx(
            expected, rel=1e-6
        )  # dropout 0.5 would change it
        assert tiny_t5.training
    finally:
        tiny_t5.eval()


def test_perplexity_without_target_tokens_is_an_error(tiny_t5):
    with pytest.raises(ValueError, match="at least one target token"):
        perplexity(tiny_t5, [])
    with pytest.raises(ValueError, match="at least one target token"):
        perplexity(tiny_t5, [_batch([[5, 1]], [[-100, -100]])])


# --- ROUGE-1 (counted as rouge_score counts) and similarity (MiniLM: loads a library for seconds) -----


@pytest.mark.parametrize(
    ("predictions", "references", "expected"),
    [
        (["the cat sat on the mat"], ["the cat sat on the mat"], 1.0),
        (["the cat sat"], ["a dog ran"], 0.0),
        # precision 3/6, recall 3/3: F = 2 * 0.5 * 1 / 1.5
        (["the cat sat on the mat"], ["the cat sat"], 2 / 3),
        # mean over examples; case and punctuation are ignored by the tokenizer
        (["The Cat.", "x y"], ["the cat", "z w"], 0.5),
        # 30 tokens each ("farmer’s" is two); the three 18s become 19s
        ([JANET], [JANET.replace("18", "19")], 27 / 30),
    ],
)
def test_rouge1(predictions, references, expected):
    assert rouge1(predictions, references) == pytest.approx(expected)


def test_rouge1_is_rouge_scores_mean_with_the_stemmer_too():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    pairs = [("the cats were running", "a cat runs"), (JOHNNY, SALARY)]
    expected = sum(scorer.score(ref, pred)["rouge1"].fmeasure for pred, ref in pairs) / 2
    got = rouge1([p for p, _ in pairs], [r for _, r in pairs], use_stemmer=True)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("the cat sat on the mat", "the cat sat"),
        ("The Cat.", "the cat"),
        ("5 5 5 apples", "5 apples, 5 pears"),  # a repeated word overlaps at most as often as the rarer side
        ("café_au lait", "cafe au LAIT"),  # non-ASCII letters and `_` split words, as in rouge_score
        ("", "a b"),
        ("!!!", "..."),
        (JANET, JANET.replace("18", "19")),
    ],
)
def test_rouge1_without_a_stemmer_matches_rouge_score(prediction, reference):
    """The count `rouge1` makes without a stemmer (no nltk import) gives `rouge_score`'s number (to 1e-12)."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from trainables.scoring.metrics import _rouge1_fmeasure

    expected = rouge_scorer.RougeScorer(["rouge1"]).score(reference, prediction)["rouge1"].fmeasure
    assert _rouge1_fmeasure(prediction, reference) == pytest.approx(expected, abs=1e-12)


def test_rouge1_without_a_stemmer_imports_neither_rouge_score_nor_nltk():
    """`rouge_score` imports the whole of nltk (scipy.stats, sklearn): 5-6 s in every trial worker."""
    import subprocess
    import sys

    script = "import sys; from trainables.scoring.metrics import rouge1; rouge1(['a b'], ['a']); "
    script += "print(sorted(m for m in ('rouge_score', 'nltk', 'scipy') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


@pytest.mark.slow
def test_semantic_similarity_orders_related_above_unrelated():
    question = "Janet's ducks lay 16 eggs per day and she sells them at the market."
    assert semantic_similarity([question], [question]) == pytest.approx(1.0, abs=1e-4)
    related = semantic_similarity([question], ["Janet sells the eggs her ducks lay every day."])
    unrelated = semantic_similarity([question], ["The stock market fell sharply on Tuesday."])
    assert unrelated < related


@pytest.mark.slow
def test_semantic_similarity_reports_a_model_it_cannot_load(tmp_path):
    with pytest.raises(SimilarityModelError, match="cannot load sentence-embedding model") as caught:
        semantic_similarity(["a"], ["b"], model_name=str(tmp_path / "no-such-model"))
    assert "\n" not in str(caught.value)
