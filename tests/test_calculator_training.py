"""On the tiny preset's data, a briefly trained model scores at least as well with the calculator as without."""

from __future__ import annotations

import pytest
import torch

from trainables.data.load import DataConfig, load_math_splits
from trainables.data.prompts import format_example
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import evaluate_split
from trainables.training.loop import fit
from trainables.training.models import build_tiny_t5, load_model, load_tokenizer
from trainables.training.train_config import TrainConfig


@pytest.mark.slow
def test_calculator_accuracy_is_at_least_plain_accuracy_on_the_same_test_set(tmp_path):
    splits = load_math_splits(
        DataConfig(
            source="embedded", train_size=600, dev_size=8, test_size=64, seed=0, max_steps=1, max_operand=9
        )
    )
    texts = [t for r in splits.train for t in (r.question, r.answer_text)]
    path = build_tiny_t5(tmp_path / "t5", texts=texts, size="tiny", seed=0)
    torch.manual_seed(0)
    model, tokenizer = load_model(path, device="cpu"), load_tokenizer(path)
    pairs = [format_example(r, "breakdown") for r in splits.train]
    config = TrainConfig(lr=3e-3, epochs=6, batch_size=32, max_input_tokens=96, max_target_tokens=64)
    fit(model, tokenizer, pairs, config)
    settings = EvalSettings(batch_size=64, max_new_tokens=64, metrics=("accuracy",))
    plain = evaluate_split(model, tokenizer, splits.test, style="breakdown", settings=settings)
    with_calculator = evaluate_split(
        model, tokenizer, splits.test, style="breakdown", settings=settings, calculator=True
    )
    print(
        f"accuracy without {plain.metrics['accuracy']:.3f}, with calculator {with_calculator.metrics['accuracy']:.3f}"
    )
    assert with_calculator.metrics["accuracy"] >= plain.metrics["accuracy"]
    assert with_calculator.metrics["accuracy"] > 0, "the model did not learn the solution format"
    filled = [r["prediction"] for r in with_calculator.rows if "<<" in r["prediction"]]
    assert filled, "no generation reached a calculator annotation"
