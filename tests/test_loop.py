"""The shared loop: it learns, reports every metric, checkpoints, resumes exactly, and stops on NaN."""

from __future__ import annotations

import json

import pytest
import torch

from trainables.data.prompts import format_example
from trainables.methods import StrategyContext, get_strategy
from trainables.scoring.collapse import answer_spread
from trainables.training.loop import TrainingDiverged, batch_order, fit, train_and_evaluate
from trainables.training.models import load_model, load_tokenizer
from trainables.training.reporting import LocalReporter
from trainables.training.train_config import TrainConfig

FAST_EVAL = {"batch_size": 8, "max_new_tokens": 24, "metrics": ("accuracy", "perplexity", "rouge1")}


def _config(**changes) -> TrainConfig:
    values = {
        "lr": 3e-3,
        "epochs": 2,
        "batch_size": 16,
        "max_input_tokens": 64,
        "max_target_tokens": 48,
        "prompt_style": "breakdown",
        "eval": dict(FAST_EVAL),
    }
    return TrainConfig(**{**values, **changes})


def _lora_model(micro_t5_dir):
    torch.manual_seed(0)
    model = load_model(micro_t5_dir, device="cpu")
    tokenizer = load_tokenizer(micro_t5_dir)
    lora = get_strategy("lora")
    return lora.apply(model, lora.make_config({"r": 4}), StrategyContext(tokenizer=tokenizer)), tokenizer


def test_fit_lowers_the_training_loss(micro_t5_dir, micro_splits):
    torch.manual_seed(0)
    model = load_model(micro_t5_dir, device="cpu")
    tokenizer = load_tokenizer(micro_t5_dir)
    pairs = [format_example(r, "answer_only") for r in micro_splits.train[:32]]
    losses = []
    fit(model, tokenizer, pairs, _config(epochs=6, lr=1e-2), on_eval=lambda m: losses.append(m["train/loss"]))
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses


def test_reports_every_metric_each_epoch_and_test_metrics_last(micro_t5_dir, micro_splits, tmp_path):
    model, tokenizer = _lora_model(micro_t5_dir)
    reporter = LocalReporter(tmp_path, echo=None)
    final = train_and_evaluate(model, tokenizer, micro_splits, _config(), reporter)
    assert [round(r["epoch"]) for r in reporter.history] == [1, 2]
    for key in ("train/loss", "train/examples_per_s", "dev/accuracy", "dev/perplexity", "dev/rouge1"):
        assert all(key in r for r in reporter.history), key
    for key in ("dev/distinct_answers", "dev/top_answer_share"):
        assert all(key in r for r in reporter.history), key
    train_size = len(micro_splits.train)  # every record is usable with the breakdown style
    assert [r["train/examples_seen"] for r in reporter.history] == [train_size, 2 * train_size]
    assert reporter.history[-1] is not None and final["test/n"] == len(micro_splits.test)
    assert "test/accuracy" not in reporter.history[0]
    assert final["params/trainable"] < final["params/total"]
    rows = [json.loads(line) for line in (tmp_path / "generations_test.jsonl").read_text().splitlines()]
    assert len(rows) == len(micro_splits.test)
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(final["test/accuracy"])
    spread = answer_spread([r["extracted"] for r in rows])  # the generations file tells the same spread
    assert (final["test/distinct_answers"], final["test/top_answer_share"]) == tuple(spread.values())
    assert {"input", "target", "prediction", "extracted", "reference", "correct"} <= set(rows[0])
    assert (tmp_path / "generations_test_calculator.jsonl").is_file()
    assert "test/accuracy_calculator" in final


def test_same_seed_same_metrics(micro_t5_dir, micro_splits, tmp_path):
    runs = []
    for attempt in range(2):
        model, tokenizer = _lora_model(micro_t5_dir)
        reporter = LocalReporter(tmp_path / str(attempt), echo=None)
        runs.append(train_and_evaluate(model, tokenizer, micro_splits, _config(epochs=1), reporter))
    for key in ("train/loss", "dev/perplexity", "test/accuracy", "test/rouge1"):
        assert runs[0][key] == runs[1][key], key


class Crash(Exception):
    pass


class CrashingReporter(LocalReporter):
    """Dies right after its first checkpoint is on disk, like a killed worker."""

    def report(self, metrics, *, save=None):
        super().report(metrics, save=save)
        raise Crash


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(
    micro_t5_dir, micro_splits, tmp_path
):
    config = _config(evals_per_epoch=2, epochs=2)
    model, tokenizer = _lora_model(micro_t5_dir)
    whole = LocalReporter(tmp_path / "whole", echo=None)
    expected = train_and_evaluate(model, tokenizer, micro_splits, config, whole)

    model, tokenizer = _lora_model(micro_t5_dir)
    with pytest.raises(Crash):
        train_and_evaluate(
            model, tokenizer, micro_splits, config, CrashingReporter(tmp_path / "resumed", echo=None)
        )
    model, tokenizer = _lora_model(micro_t5_dir)  # a fresh process: fresh adapter weights
    resumed = LocalReporter(tmp_path / "resumed", resume=True, echo=None)
    got = train_and_evaluate(model, tokenizer, micro_splits, config, resumed)

    assert [r["step"] for r in resumed.history] == [r["step"] for r in whole.history][1:]
    assert got["step"] == expected["step"]
    assert got["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-5)
    assert got["test/accuracy"] == expected["test/accuracy"]
    assert got["dev/perplexity"] == pytest.approx(expected["dev/perplexity"], rel=1e-5)


def test_nan_loss_stops_the_trial_with_the_cause(micro_t5_dir, micro_splits, tmp_path):
    model, tokenizer = _lora_model(micro_t5_dir)
    original = model.forward

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    model.forward = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 0 \(epoch 0, lr 0.003\)"):
        train_and_evaluate(model, tokenizer, micro_splits, _config(), LocalReporter(tmp_path, echo=None))


def test_grouping_by_length_keeps_every_example_once_and_cuts_the_padding():
    import random

    lengths = [random.Random(i).randint(5, 80) for i in range(2000)]
    grouped = batch_order(2000, 32, seed=3, epoch=1, lengths=lengths)
    assert grouped == batch_order(2000, 32, seed=3, epoch=1, lengths=lengths)  # a pure function, for resumes
    assert grouped != batch_order(2000, 32, seed=3, epoch=2, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == list(range(2000))

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = batch_order(2000, 32, seed=3, epoch=1)
    assert padded(grouped) < 0.8 * padded(plain)
    # batches still come from all over the data: the first is not the longest examples
    assert grouped[0] != sorted(range(2000), key=lambda i: -lengths[i])[:32]


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    assert batch_order(10, 4, seed=1, epoch=2) == batch_order(10, 4, seed=1, epoch=2)
    assert batch_order(10, 4, seed=1, epoch=2) != batch_order(10, 4, seed=1, epoch=3)
    assert sorted(i for b in batch_order(10, 4, seed=0, epoch=0) for i in b) == list(range(10))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0}, "learning rate must be a positive number, got 0"),
        ({"lr": float("nan")}, "learning rate must be a positive number, got nan"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"prompt_style": "poem"}, "unknown prompt_style 'poem'"),
        ({"warmup_ratio": 1.5}, "warmup_ratio must be in [0, 1), got 1.5"),
        ({"eval": {"metrics": "accuracy,bleu"}}, "unknown metric 'bleu'"),
    ],
)
def test_bad_train_settings_name_the_value(changes, message):
    with pytest.raises(ValueError) as error:
        _config(**changes)
    assert message in str(error.value)


def test_resume_with_gradient_accumulation_matches_an_uninterrupted_run(micro_t5_dir, micro_splits, tmp_path):
    # 64 records / micro-batches of 8 = 8 per epoch, 4 optimiser steps; three evaluations an epoch would
    # fall on micro-batch 3 of 8, in the middle of an accumulated step, unless aligned to the steps.
    config = _config(grad_accum=2, evals_per_epoch=3, epochs=1)
    model, tokenizer = _lora_model(micro_t5_dir)
    whole = LocalReporter(tmp_path / "whole", echo=None)
    expected = train_and_evaluate(model, tokenizer, micro_splits, config, whole)

    model, tokenizer = _lora_model(micro_t5_dir)
    with pytest.raises(Crash):
        train_and_evaluate(
            model, tokenizer, micro_splits, config, CrashingReporter(tmp_path / "resumed", echo=None)
        )
    model, tokenizer = _lora_model(micro_t5_dir)
    resumed = LocalReporter(tmp_path / "resumed", resume=True, echo=None)
    got = train_and_evaluate(model, tokenizer, micro_splits, config, resumed)

    assert [r["step"] for r in whole.history] == [1, 3, 4]  # evaluations at optimiser-step boundaries
    assert [r["step"] for r in resumed.history] == [3, 4]
    assert got["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-6)
    assert got["dev/perplexity"] == pytest.approx(expected["dev/perplexity"], rel=1e-6)
    assert got["test/accuracy"] == expected["test/accuracy"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_loop_autocasts_to_the_dtype_models_pick(micro_t5_dir, micro_splits, monkeypatch, dtype):
    # One decision for the loop and for loading: a GPU that only emulates bf16 gets fp32 from both.
    from trainables.training import loop

    model, tokenizer = _lora_model(micro_t5_dir)
    monkeypatch.setattr(loop, "pick_dtype", lambda device: dtype)  # as pick_dtype answers for some GPU
    seen = []
    model.register_forward_hook(lambda *args: seen.append(torch.is_autocast_enabled("cpu")))
    pairs = [format_example(r, "answer_only") for r in micro_splits.train[:4]]
    fit(model, tokenizer, pairs, _config(epochs=1, batch_size=4))
    assert seen == [dtype == torch.bfloat16]


def test_evaluation_truncates_like_training(micro_t5_dir, micro_splits, tmp_path):
    # The trial's max_input_tokens / max_target_tokens, not a fixed 512, bound what perplexity scores.
    from trainables.data.batching import collate, encode_pairs
    from trainables.scoring.metrics import perplexity

    config = _config(epochs=1, max_input_tokens=12, max_target_tokens=6)
    model, tokenizer = _lora_model(micro_t5_dir)
    final = train_and_evaluate(model, tokenizer, micro_splits, config, LocalReporter(tmp_path, echo=None))
    pairs = [format_example(r, "breakdown") for r in micro_splits.dev]
    examples = encode_pairs(tokenizer, pairs, max_input_tokens=12, max_target_tokens=6)
    batches = [collate(examples[i : i + 8], tokenizer.pad_token_id, torch.device("cpu")) for i in (0,)]
    assert len(examples) == 8 and max(len(e["labels"]) for e in examples) == 6
    assert final["dev/perplexity"] == pytest.approx(perplexity(model, batches), rel=1e-6)
