"""A tiny configuration learns: it beats always answering the split's most common answer, and its
predictions do not collapse onto a few answers.

Every other test checks that the pieces fit; this one checks that the pipeline they make can learn at all
(a model whose test generations are all `#### 1` passes every shape test). `assert_learned` is checked
against an untrained model too, which must fail it: so the test can fail, and a collapsed model does.
"""

from __future__ import annotations

from collections import Counter

import pytest

from trainables.data.generator import generate_problems
from trainables.data.prompts import format_example
from trainables.methods import get_strategy
from trainables.methods.registry import StrategyContext
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import evaluate_split
from trainables.training.loop import fit
from trainables.training.models import cached_tiny_t5, load_model, load_tokenizer
from trainables.training.train_config import TrainConfig

MIN_DISTINCT = 10
"""Distinct extracted answers the test predictions must take (the split has about 20 distinct answers)."""
MAX_TOP_SHARE = 0.5
"""The most common predicted answer may fill at most this share of the split."""


def majority_accuracy(records) -> float:
    """Accuracy of always answering the split's most common reference answer."""
    counts = Counter(r.answer for r in records)
    return counts.most_common(1)[0][1] / len(records)


def assert_learned(result, records, *, min_distinct: int = MIN_DISTINCT) -> None:
    """The split's accuracy interval lies above the majority baseline, and the predictions do not collapse.

    Raises:
        AssertionError: naming which of the three conditions failed, with the numbers.
    """
    rows, metrics = result.rows, result.metrics
    majority = majority_accuracy(records)
    answers = Counter(row["extracted"] for row in rows)
    top_share = answers.most_common(1)[0][1] / len(rows)
    summary = (
        f"accuracy {metrics['accuracy']:.3f} [{metrics['accuracy_low']:.3f}, {metrics['accuracy_high']:.3f}], "
        f"majority baseline {majority:.3f}, {len(answers)} distinct answers, top answer share {top_share:.2f}"
    )
    print(summary)  # shown by `pytest -rP`: the margin, not only pass or fail
    assert metrics["accuracy_low"] > majority, f"not above the majority baseline: {summary}"
    assert len(answers) >= min_distinct, f"collapsed onto few answers: {summary}"
    assert top_share < MAX_TOP_SHARE, f"one answer dominates: {summary}"


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """One-step problems with operands up to 9 (train 1,200, test 150) and the 0.3M-parameter tiny T5."""
    problems = generate_problems(1350, seed=7, min_steps=1, max_steps=1, max_operand=9)
    train, test = problems[:1200], problems[1200:]
    texts = [t for r in train for t in (r.question, r.answer_text, r.program or "")]
    path = cached_tiny_t5(tmp_path_factory.mktemp("models"), texts=texts, size="tiny", seed=0)
    return path, train, test


def trained(path, train, *, epochs: int):
    """The tiny T5 fully fine-tuned on the code style for `epochs` (0: left untrained)."""
    model, tokenizer = load_model(path, device="cpu"), load_tokenizer(path)
    config = TrainConfig(
        lr=2e-3, epochs=max(epochs, 1), batch_size=32, max_input_tokens=128, max_target_tokens=64,
        prompt_style="code", warmup_ratio=0.06, seed=0,
    )  # fmt: skip
    strategy = get_strategy("full")
    model = strategy.apply(
        model, strategy.make_config({}), StrategyContext(tokenizer=tokenizer, train=config)
    )
    if epochs:
        fit(model, tokenizer, [format_example(r, "code") for r in train], config, log=lambda message: None)
    return model, tokenizer


def evaluate(model, tokenizer, test):
    settings = EvalSettings(batch_size=75, max_new_tokens=48, metrics=("accuracy",))
    return evaluate_split(model, tokenizer, test, style="code", settings=settings)


@pytest.mark.slow
def test_a_short_full_fine_tuning_learns_and_does_not_collapse(tiny_setup):
    path, train, test = tiny_setup
    model, tokenizer = trained(path, train, epochs=5)
    assert_learned(evaluate(model, tokenizer, test), test)


@pytest.mark.slow
def test_the_untrained_model_fails_the_same_check(tiny_setup):
    path, train, test = tiny_setup
    model, tokenizer = trained(path, train, epochs=0)
    with pytest.raises(AssertionError, match="majority baseline|collapsed|dominates"):
        assert_learned(evaluate(model, tokenizer, test), test)


@pytest.fixture(scope="module")
def tiny_preset_lora(tmp_path_factory):
    """The tiny preset's data and pretrained base (built in a fresh cache: about a minute), with the rank-4
    adapter on all six projections its search space fixes, untrained."""
    from study.config import SearchSettings, StudyConfig
    from study.prepare import prepare

    config = StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",)))
    prepared = prepare(config, cache_dir=tmp_path_factory.mktemp("c"))
    path, splits = prepared.models["lora"], prepared.splits["main"]
    model, tokenizer = load_model(path, device="cpu"), load_tokenizer(path)
    config = TrainConfig(
        lr=6e-3, epochs=4, batch_size=32, max_input_tokens=128, max_target_tokens=128, prompt_style="code",
        warmup_ratio=0.05, seed=0,
    )  # fmt: skip
    strategy = get_strategy("lora")
    settings = strategy.make_config({"r": 4, "alpha": 16, "dropout": 0.0, "target_modules": "q,k,v,o,wi,wo"})
    model = strategy.apply(model, settings, StrategyContext(tokenizer=tokenizer, train=config))
    return model, tokenizer, splits, config


def evaluate_tiny_preset(model, tokenizer, test):
    settings = EvalSettings(batch_size=100, max_new_tokens=96, metrics=("accuracy",))
    return evaluate_split(model, tokenizer, test, style="code", settings=settings, max_input_tokens=128)


@pytest.mark.slow
def test_a_low_rank_adapter_learns_on_the_tiny_presets_pretrained_base(tiny_preset_lora):
    """The methods that freeze the base learn because the pretrained base is worth adapting: an adapter of
    8% of its parameters, not the base's weights, takes the test split above the majority answer (issue 10).
    Untrained (B = 0, so the pretrained base itself) it fails the same check."""
    from trainables.training.models import count_parameters

    model, tokenizer, splits, config = tiny_preset_lora
    trainable, total = count_parameters(model)
    assert trainable / total <= 0.10
    with pytest.raises(AssertionError, match="majority baseline|collapsed|dominates"):
        assert_learned(evaluate_tiny_preset(model, tokenizer, splits.test), splits.test, min_distinct=20)
    pairs = [format_example(r, "code") for r in splits.train]
    fit(model, tokenizer, pairs, config, log=lambda message: None)
    assert_learned(evaluate_tiny_preset(model, tokenizer, splits.test), splits.test, min_distinct=20)
