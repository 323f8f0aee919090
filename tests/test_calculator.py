"""The calculator: exact safe evaluation, GSM8K-style numbers, and results forced into batched decoding."""

from __future__ import annotations

import json
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from trainables.scoring.calculator import (
    CalculatorConfig,
    CalculatorLogitsProcessor,
    format_number,
    make_calculator_processor,
    safe_eval,
)
from trainables.training.tokenizer import train_tokenizer

ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")


def solution_lines() -> list[str]:
    """GSM8K-style solution lines with calculator annotations."""
    lines = []
    for a in range(2, 60):
        b = a * 7 % 13 + 2
        lines.append(
            f"She sold {a} clips in April and {b} in May, {a}+{b} = <<{a}+{b}={a + b}>>{a + b} clips."
        )
        lines.append(f"Each box holds {b} eggs, so {a} boxes hold {a}*{b} = <<{a}*{b}={a * b}>>{a * b} eggs.")
        lines.append(f"Half of {2 * a} is {2 * a}/2 = <<{2 * a}/2={a}>>{a}, and x = y - 1 leaves {a - 1}.")
    return lines


def train_sentencepiece(directory: Path, lines: list[str]) -> Path:
    """Train a small SentencePiece unigram model into `directory`/spiece.model, as a hub T5 checkpoint has."""
    import sentencepiece

    directory.mkdir()
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(lines))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "spiece"),
        vocab_size=300,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return directory


def fastest(call, repeats: int = 3) -> float:
    """The fastest of `repeats` timed calls: the code's own time, which a test run sharing the CPU with
    another (pytest-xdist's other worker, a study's Ray workers) only ever lengthens."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # on the shared 2-core box, torch's second thread waits on busy cores: tiny generations take seconds
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_tok():
    return train_tokenizer(solution_lines(), vocab_size=400)


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory) -> Path:
    # as in T5's C4 vocabulary: natural text, no annotations, so `=24>>` is never one piece
    lines = [ANNOTATION.sub("", line) for line in solution_lines()]
    return train_sentencepiece(
        tmp_path_factory.mktemp("sp") / "tok", lines + ["if a < b and c > d then [x]"] * 3
    )


@pytest.fixture(scope="module")
def sp_tok(sp_dir):
    # transformers 5 ignores T5Tokenizer(vocab_file=...); from_pretrained converts the spiece.model
    return T5Tokenizer.from_pretrained(str(sp_dir))


@pytest.fixture(scope="module")
def sp_python_tok(sp_dir):
    """The same model through the `sentencepiece` library itself: a tokenizer without `backend_tokenizer`."""
    return SentencePieceBackend(vocab_file=str(sp_dir / "spiece.model"), pad_token="<pad>", eos_token="</s>")


class Script(LogitsProcessor):
    """Test-only: makes row r emit script[r][t] at step t (None: the model's choice; past the end: free)."""

    def __init__(self, scripts: list[list[int | None]], num_beams: int = 1) -> None:
        self.scripts, self.num_beams = scripts, num_beams

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - 1
        for row in range(input_ids.shape[0]):
            script = self.scripts[row // self.num_beams]
            if step < len(script) and script[step] is not None:
                scores[row] = -1e4  # finite, so beam search still finds enough candidates
                scores[row, script[step]] = 0.0
        return scores


def tiny_t5(vocab_size: int) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_heads=2,
        num_layers=1,
        num_decoder_layers=1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


def generate(tok, scripts, *, calculator, num_beams: int = 1, extra_tokens: int = 0) -> list[str]:
    """Greedy (or beam) generation by a random tiny T5 whose rows follow `scripts`."""
    model = tiny_t5(len(tok))
    inputs = tok(["a question"] * len(scripts), return_tensors="pt")
    processors = [Script(scripts, num_beams)] + ([calculator] if calculator else [])
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max(map(len, scripts)) + extra_tokens,
            do_sample=False,
            num_beams=num_beams,
            logits_processor=LogitsProcessorList(processors),
        )
    return tok.batch_decode(out, skip_special_tokens=True)


def force(processor, tok, prefix: str, *, steps: int = 12) -> str:
    """Run `processor` alone from a decoder prefix, the model always preferring `</s>`; decoded output."""
    ids = [tok.pad_token_id] + tok.encode(prefix, add_special_tokens=False)
    for _ in range(steps):
        scores = torch.zeros(1, len(tok))
        scores[0, tok.eos_token_id] = 1.0
        ids.append(int(processor(torch.tensor([ids]), scores).argmax()))
    return tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("48/2", Fraction(24)),
        ("0.2*50", Fraction(10)),
        ("(3+4)*2", Fraction(14)),
        ("-5+2", Fraction(-3)),
        ("1/3", Fraction(1, 3)),
        (".5+1.25", Fraction(7, 4)),
        ("-14+-8+1", Fraction(-21)),
        ("560//10", Fraction(56)),
        ("2 * (3 - 1)", Fraction(4)),
        ("--1", Fraction(1)),
        ("(" * 10 + "1" + ")" * 10, Fraction(1)),
        ("0.1+0.2", Fraction(3, 10)),  # exact: floats would give 0.30000000000000004
    ],
)
def test_safe_eval_computes_exactly(expr, value):
    assert safe_eval(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "1/0",
        "5//(2-2)",
        "9**9**9",
        "2**10000",
        "__import__('os')",
        "(" * 5000 + "1" + ")" * 5000,
        "(" * 11 + "1" + ")" * 11,  # nested deeper than max_depth
        "9" * 10000,
        "10**30",
        "1" + "0" * 31 + "+1",
        "3 x 4",
        "1,000+2",
        "1e5",
        "(1+2",
        "",
        "2*/3",
        "-" * 100 + "1",  # over max_chars
    ],
)
def test_safe_eval_rejects_quickly(expr):
    def reject() -> None:
        assert safe_eval(expr) is None  # safe_eval keeps no cache: each call does the whole work

    assert fastest(reject) < 0.01


def test_safe_eval_bounds_intermediate_results():
    assert safe_eval("1" + "0" * 15 + "*" + "1" + "0" * 14) is not None  # 10**29
    assert safe_eval("1" + "0" * 15 + "*" + "1" + "0" * 15) is None  # 10**30
    assert safe_eval("1/3/3/3", max_digits=1) is None  # denominator 27


def test_safe_eval_rejects_non_string():
    with pytest.raises(TypeError, match="safe_eval expects a str, got int"):
        safe_eval(42)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(24), "24"),
        (Fraction(10, 1), "10"),
        (Fraction(1, 5), "0.2"),
        (Fraction(5, 2), "2.5"),
        (Fraction(-7, 2), "-3.5"),
        (Fraction(1, 250), "0.004"),
        (Fraction(37, 40), "0.925"),
        (Fraction(10, 3), "3.33"),
        (Fraction(2, 3), "0.67"),
        (Fraction(-1, 3), "-0.33"),
        (Fraction(2060, 15), "137.33"),
        (Fraction(1, 300), "0.003"),
        (Fraction(1, 128), "0.01"),
        (Fraction(0), "0"),
        (-5, "-5"),
    ],
)
def test_format_number_writes_gsm8k_style(value, text):
    assert format_number(value) == text


def test_format_number_rejects_bad_input():
    with pytest.raises(TypeError, match="got float"):
        format_number(0.5)
    with pytest.raises(ValueError, match="decimals=-1"):
        format_number(Fraction(1, 3), decimals=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"open_marker": ""}, "open_marker=''"),
        ({"close_marker": "> >"}, "close_marker='> >'"),
        ({"equals": "+"}, "equals='\\+'"),
        ({"max_chars": 0}, "max_chars=0"),
        ({"decimals": -2}, "decimals=-2"),
    ],
)
def test_config_names_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalculatorConfig(**kwargs)


@pytest.mark.parametrize(
    ("name", "count", "agreement"),
    [("test.jsonl", 4282, 0.963), pytest.param("train.jsonl", 23716, 0.971, marks=pytest.mark.slow)],
)
def test_gsm8k_annotations_evaluate_to_written_values(data_dir, name, count, agreement):
    path = data_dir / "gsm8k" / name
    pairs = [
        m for line in path.read_text().splitlines() for m in ANNOTATION.findall(json.loads(line)["answer"])
    ]
    values = [safe_eval(expr) for expr, _ in pairs]
    # every annotation holds its exact value; the misses in writing are GSM8K's `.5`, `20.00` and `3/4` styles
    assert all(v == Fraction(r) for v, (_, r) in zip(values, pairs, strict=True))
    written_alike = sum(
        v is not None and format_number(v) == r for v, (_, r) in zip(values, pairs, strict=True)
    )
    assert len(pairs) == count and written_alike / count > agreement


def test_sampling_is_forced_too(tiny_tok):
    scripts = [tiny_tok.encode("x = <<3+4=8>> ok")]
    model, inputs = tiny_t5(len(tiny_tok)), tiny_tok(["q"], return_tensors="pt")
    out = model.generate(
        **inputs,
        do_sample=True,
        max_new_tokens=len(scripts[0]),
        logits_processor=[
            Script(scripts),
            make_calculator_processor(tiny_tok),
        ],  # a plain list, as the loop passes
    )
    assert tiny_tok.batch_decode(out, skip_special_tokens=True) == ["x = <<3+4=7>> ok"]


def test_forces_results_in_batch_at_different_steps(tiny_tok):
    texts = [
        "x = <<3+4=8>> ok",
        "so we have y = <<10/4=2.4>> ok",
        "no calculation here = 5 ok",
        "x = <<5+2=88 ok",  # the same result at the same step as the first row; `>>` must be forced too
        "bad <<9**9**9=1>> ok",
        "deep <<" + "(" * 11 + "1" + ")" * 11 + "=2>> ok",  # nested deeper than max_depth
    ]
    scripts = [tiny_tok.encode(text) for text in texts]  # ends with </s>
    calculator = make_calculator_processor(tiny_tok)
    assert generate(tiny_tok, scripts, calculator=None) == texts
    assert generate(tiny_tok, scripts, calculator=calculator) == [
        "x = <<3+4=7>> ok",
        "so we have y = <<10/4=2.5>> ok",
        texts[2],
        "x = <<5+2=7>> ok",
        *texts[4:],
    ]


def test_project_micro_t5_and_its_saved_tokenizer(micro_t5):
    model, tok = micro_t5  # what the study trains: build_tiny_t5's model and tokenizer, loaded from disk
    texts = ["She has 12*3 = <<12*3=35>>35 eggs", "It costs 7.5-2 = <<7.5-2=5.4>>5.4 dollars"]
    scripts = [tok.encode(text) for text in texts]
    inputs = tok(["How many?"] * 2, return_tensors="pt", padding=True)
    processors = [Script(scripts), make_calculator_processor(tok)]
    out = model.generate(
        **inputs, max_new_tokens=max(map(len, scripts)), do_sample=False, logits_processor=processors
    )
    assert tok.batch_decode(out, skip_special_tokens=True) == [
        "She has 12*3 = <<12*3=36>>35 eggs",
        "It costs 7.5-2 = <<7.5-2=5.5>>5.4 dollars",
    ]


def test_one_processor_serves_several_calls_and_batch_sizes(tiny_tok):
    calculator = make_calculator_processor(tiny_tok)
    first = [tiny_tok.encode(t) for t in ["a <<6*7=41>> b", "c <<1-3=-1>> d", "e <<2.5*2=4>> f"]]
    assert generate(tiny_tok, first, calculator=calculator) == [
        "a <<6*7=42>> b",
        "c <<1-3=-2>> d",
        "e <<2.5*2=5>> f",
    ]
    second = [tiny_tok.encode("yy <<120/100=1.3>> z")]
    assert generate(tiny_tok, second, calculator=calculator) == ["yy <<120/100=1.2>> z"]


def test_beam_search_keeps_forcing(tiny_tok):
    scripts = [tiny_tok.encode("x = <<3+4=8>> ok"), tiny_tok.encode("so y = <<12/5=2.5>> ok")]
    texts = generate(tiny_tok, scripts, calculator=make_calculator_processor(tiny_tok), num_beams=3)
    assert texts == ["x = <<3+4=7>> ok", "so y = <<12/5=2.4>> ok"]


@pytest.mark.parametrize("which", ["tiny", "sentencepiece", "sentencepiece-python"])
@pytest.mark.parametrize(
    ("expr", "result"),
    [("48/2", "24"), ("10/4", "2.5"), ("2-5", "-3"), ("1/250", "0.004"), ("10*100", "1000")],
)
def test_forced_tokens_decode_exactly(which, expr, result, tiny_tok, sp_tok, sp_python_tok):
    tok = {"tiny": tiny_tok, "sentencepiece": sp_tok, "sentencepiece-python": sp_python_tok}[which]
    prefix = f"She sold 48 clips, so = <<{expr}="
    assert force(CalculatorLogitsProcessor(tok), tok, prefix) == prefix + result + ">>"


def test_sentencepiece_batch_generation(sp_tok):
    prefixes = ["so 3+4 = <<3+4=", "Each box holds 12 eggs, so 10/4 = <<10/4="]
    scripts = [sp_tok.encode(p, add_special_tokens=False) for p in prefixes]
    assert all(sp_tok.decode(s[-1:]).endswith("=") for s in scripts)  # the script ends on a trigger token
    without = generate(sp_tok, scripts, calculator=None, extra_tokens=8)
    with_calculator = generate(sp_tok, scripts, calculator=make_calculator_processor(sp_tok), extra_tokens=8)
    assert [
        t.startswith(p + r + ">>") for t, p, r in zip(with_calculator, prefixes, ["7", "2.5"], strict=True)
    ] == [
        True,
        True,
    ]
    assert not any(">>" in t[len(p) : len(p) + 4] for t, p in zip(without, prefixes, strict=True))


def test_marker_outside_vocabulary_is_refused_and_others_work(tmp_path):
    # like T5's real vocabulary, which has no `<`
    lines = [line.replace("<<", "[[").replace(">>", "]]") for line in solution_lines()]
    tok = T5Tokenizer.from_pretrained(str(train_sentencepiece(tmp_path / "no_angle", lines)))
    with pytest.raises(ValueError, match=r"open_marker='<<' cannot be written by this tokenizer"):
        CalculatorLogitsProcessor(tok)
    brackets = CalculatorLogitsProcessor(tok, CalculatorConfig(open_marker="[[", close_marker="]]"))
    assert force(brackets, tok, "so 4 = [[8/2=") == "so 4 = [[8/2=4]]"


@pytest.mark.parametrize(
    "prefix",
    [
        "<<9**9**9=",
        "<<__import__('os')=",
        "<<" + "9" * 5000 + "=",
        "<<" + "(" * 3000 + "=",
        "<<1/0=",
        "<<3+4>>7 =",
        "x =",
    ],
)
def test_hostile_expressions_are_left_alone_quickly(tiny_tok, prefix):
    ids = torch.tensor([[0] + tiny_tok.encode(prefix, add_special_tokens=False)])
    scores = torch.randn(1, len(tiny_tok))
    seconds = []
    for _ in range(3):  # a fresh processor each time: nothing it caches carries over to the next run
        processor, copy = CalculatorLogitsProcessor(tiny_tok), scores.clone()
        start = time.perf_counter()
        left = processor(ids, copy)
        seconds.append(time.perf_counter() - start)
        assert torch.equal(left, scores)
    assert min(seconds) < 0.02  # the fastest of three: another process on the CPU only lengthens a run


def rows(tok, *texts: str) -> torch.Tensor:
    """Decoder ids of equal length: each text's tokens after pads (pads decode to nothing)."""
    encoded = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, encoded)) + 1
    return torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in encoded])


def forced(scores: torch.Tensor) -> list[int | None]:
    """The token forced in each row, or None where the row is free."""
    return [int(row.argmax()) if int(torch.isfinite(row).sum()) == 1 else None for row in scores]


def test_queues_follow_rows_that_beam_search_reorders(tiny_tok):
    processor = CalculatorLogitsProcessor(tiny_tok)
    seven, close, nine = (tiny_tok.convert_tokens_to_ids(t) for t in ("7", ">>", "9"))
    step1 = rows(tiny_tok, "a = <<3+4=", "b = 1234567")
    assert forced(processor(step1, torch.zeros(2, len(tiny_tok)))) == [seven, None]
    step2 = torch.cat([step1[[1, 0]], torch.tensor([[nine], [seven]])], dim=1)  # rows swapped
    assert forced(processor(step2, torch.zeros(2, len(tiny_tok)))) == [None, close]


def test_queue_dropped_when_forced_token_not_taken_and_on_new_call(tiny_tok):
    processor = CalculatorLogitsProcessor(tiny_tok)
    nine = tiny_tok.convert_tokens_to_ids("9")
    step1 = rows(tiny_tok, "a = <<3+4=")
    assert forced(processor(step1, torch.zeros(1, len(tiny_tok)))) != [None]
    step2 = torch.cat([step1, torch.tensor([[nine]])], dim=1)  # another processor overrode the forced 7
    assert forced(processor(step2, torch.zeros(1, len(tiny_tok)))) == [None]
    processor(step1, torch.zeros(1, len(tiny_tok)))  # forces 7 again
    assert forced(processor(torch.tensor([[0]]), torch.zeros(1, len(tiny_tok)))) == [
        None
    ]  # a new generate call
