"""Out-of-memory-proof trials: a step or an evaluation that runs out of memory is redone at half the batch,
the same experiment; a dead worker's retry starts smaller; evaluation batches stay within a token budget."""

from __future__ import annotations

import json

import pytest
import torch
from test_loop import _config, _lora_model

from trainables.data.batching import collate, encode_pairs, token_budget_batches
from trainables.data.prompts import format_example
from trainables.scoring.evaluation import EvalResult, generate
from trainables.training.loop import batch_order, eval_settings, evaluate_with_retries, fit
from trainables.training.memory import OOM_HOOK_ENV, TrialMemory, is_out_of_memory, oom_hook_limit


def _pairs(splits):
    return [format_example(r, "breakdown") for r in splits.train]


def _largest_batch_tokens(tokenizer, pairs, config, *, rows: int, epochs: int) -> list[int]:
    """Padded tokens of every micro-batch of `rows` examples the loop will form, per epoch's order."""
    examples = encode_pairs(
        tokenizer, pairs, max_input_tokens=config.max_input_tokens, max_target_tokens=config.max_target_tokens
    )
    tokens = []
    for epoch in range(epochs):
        for ids in batch_order(len(examples), rows, seed=config.seed, epoch=epoch):
            batch = collate([examples[i] for i in ids], tokenizer.pad_token_id, torch.device("cpu"))
            tokens.append(batch["input_ids"].numel() + batch["labels"].numel())
    return tokens


def _loss_curve(micro_t5_dir, pairs, config, *, memory=None) -> list[dict]:
    model, tokenizer = _lora_model(micro_t5_dir)
    reports: list[dict] = []
    fit(model, tokenizer, pairs, config, on_eval=reports.append, memory=memory, log=lambda m: None)
    return reports


def test_a_run_forced_to_halve_twice_matches_one_started_at_the_small_micro_batch(
    micro_t5_dir, micro_splits, monkeypatch
):
    pairs = _pairs(micro_splits)
    config = _config(batch_size=16, grad_accum=1, epochs=2, evals_per_epoch=3)
    _, tokenizer = _lora_model(micro_t5_dir)
    # Every 4-example micro-batch fits under the limit; the first step's 8-example halves do not.
    limit = max(_largest_batch_tokens(tokenizer, pairs, config, rows=4, epochs=2))
    assert min(_largest_batch_tokens(tokenizer, pairs[:16], config, rows=8, epochs=1)) > limit

    monkeypatch.setenv(OOM_HOOK_ENV, str(limit))
    lines: list[str] = []
    memory = TrialMemory(log=lines.append)
    forced = _loss_curve(micro_t5_dir, pairs, config, memory=memory)
    monkeypatch.delenv(OOM_HOOK_ENV)
    small = _loss_curve(
        micro_t5_dir, pairs, _config(batch_size=16, grad_accum=4, epochs=2, evals_per_epoch=3)
    )

    assert [r["step"] for r in forced] == [r["step"] for r in small]  # the same optimiser steps
    assert [r["train/loss"] for r in forced] == pytest.approx([r["train/loss"] for r in small], rel=1e-5)
    last = forced[-1]
    assert (last["train/micro_batch_size"], last["train/grad_accum"], last["oom_retries"]) == (4, 4, 2)
    assert (small[-1]["train/micro_batch_size"], small[-1]["oom_retries"]) == (4, 0)
    assert lines == [
        "out of memory in training step 0: micro-batch halved to 8, gradient accumulation 2",
        "out of memory in training step 0: micro-batch halved to 4, gradient accumulation 4",
    ]


def test_a_trial_that_cannot_fit_one_example_fails_with_one_line(micro_t5_dir, micro_splits, monkeypatch):
    monkeypatch.setenv(OOM_HOOK_ENV, "1")
    with pytest.raises(
        torch.OutOfMemoryError, match=r"^out of memory in training step 0 at a micro-batch of 1"
    ):
        _loss_curve(micro_t5_dir, _pairs(micro_splits)[:8], _config(batch_size=4, epochs=1))


@pytest.mark.parametrize("raw", ["0", "-3", "many", "1.5"])
def test_the_testing_hook_refuses_a_bad_value(raw, monkeypatch):
    monkeypatch.setenv(OOM_HOOK_ENV, raw)
    with pytest.raises(ValueError, match=f"{OOM_HOOK_ENV} must be a whole number"):
        oom_hook_limit()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
            True,
        ),
        (MemoryError(), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_what_counts_as_out_of_memory(error, expected):
    assert is_out_of_memory(error) is expected


def test_an_evaluation_that_runs_out_of_memory_is_redone_at_half_its_batch():
    config = _config(batch_size=16, max_input_tokens=64, max_target_tokens=48, eval={"batch_size": 64})
    seen: list[tuple[int, int]] = []

    def evaluate(settings) -> EvalResult:
        seen.append((settings.batch_size, settings.batch_tokens))
        if settings.batch_size > 16:
            raise RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes"
            )
        return EvalResult(metrics={"accuracy": 1.0})

    lines: list[str] = []
    memory = TrialMemory(log=lines.append)
    assert evaluate_with_retries(evaluate, config, memory, what="dev evaluation").metrics == {"accuracy": 1.0}
    # the budget starts at the training micro-batch's tokens: 16 x (64 + 48)
    assert seen == [(64, 1792), (32, 896), (16, 448)]
    assert (
        memory.oom_retries == 2
        and lines[-1] == "out of memory in dev evaluation: evaluation batch halved to 16"
    )
    assert evaluate_with_retries(evaluate, config, memory, what="dev evaluation")  # the next one starts small
    assert seen[-1] == (16, 448)


def test_the_evaluation_token_budget_is_the_training_micro_batch_s_unless_set():
    assert eval_settings(_config(batch_size=16, grad_accum=2)).batch_tokens == 8 * (64 + 48)
    assert eval_settings(_config(eval={"batch_tokens": 1000})).batch_tokens == 1000


def test_token_budget_batches_hold_every_example_once_within_the_budget():
    widths = [(n, 10) for n in (5, 40, 7, 12, 30, 30, 2, 90)]
    batches = token_budget_batches(widths, max_rows=3, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(widths)))
    for batch in batches:
        assert len(batch) <= 3
        cost = len(batch) * (max(widths[i][0] for i in batch) + 10)
        assert cost <= 100 or len(batch) == 1  # one row alone may be over: it still has to be evaluated
    assert token_budget_batches(widths, max_rows=3, max_tokens=None) == [[6, 0, 2], [3, 4, 5], [1, 7]]


def test_generation_under_a_token_budget_gives_the_same_text(micro_t5_dir, micro_splits):
    model, tokenizer = _lora_model(micro_t5_dir)
    inputs = [format_example(r, "breakdown")[0] for r in micro_splits.dev[:12]]
    whole = eval_settings(_config(eval={"batch_size": 12, "max_new_tokens": 12, "batch_tokens": 10**6}))
    tight = eval_settings(_config(eval={"batch_size": 12, "max_new_tokens": 12, "batch_tokens": 150}))
    assert generate(model, tokenizer, inputs, tight) == generate(model, tokenizer, inputs, whole)


def test_a_retry_after_the_worker_died_starts_at_half_the_micro_batch(tmp_path):
    lines: list[str] = []
    first = TrialMemory(tmp_path, log=lines.append)
    first.begin()  # ... and the worker is SIGKILLed: end() never runs
    assert json.loads((tmp_path / "memory.json").read_text())["running"] is True

    retry = TrialMemory(tmp_path, log=lines.append)
    retry.begin()
    batching = retry.batching(16, 1)
    assert (batching.size, batching.accum, retry.oom_retries) == (8, 2, 1)
    assert lines == ["the previous attempt's worker died (killed for memory?): micro-batches halved"]
    retry.end()  # it raised in Python, say: its retry is no dead worker's and keeps the same micro-batch
    again = TrialMemory(tmp_path, log=lines.append)
    again.begin()
    assert again.batching(16, 1).size == 8 and len(lines) == 1


def test_a_micro_batch_cap_is_gradient_accumulation_the_same_effective_batch(micro_t5_dir, micro_splits):
    pairs = _pairs(micro_splits)
    capped = _loss_curve(micro_t5_dir, pairs, _config(batch_size=16, max_micro_batch=4, evals_per_epoch=2))
    small = _loss_curve(micro_t5_dir, pairs, _config(batch_size=16, grad_accum=4, evals_per_epoch=2))
    assert [r["train/loss"] for r in capped] == pytest.approx([r["train/loss"] for r in small], rel=1e-5)
    last = capped[-1]
    assert (last["train/micro_batch_size"], last["train/grad_accum"], last["oom_retries"]) == (4, 4, 0)
    assert eval_settings(_config(batch_size=16, max_micro_batch=4)).batch_tokens == 4 * (64 + 48)


def test_the_memory_record_is_never_half_there_while_ray_uploads_the_trial_folder(tmp_path):
    # Ray uploads a trial's folder (pyarrow's copy_files) at each checkpoint and at the trial's end; a file
    # that is listed and then renamed away fails that upload, and Ray fails the worker's next trial with it
    # (the paper-shape rehearsal lost a lora_cot trial so). The record is staged outside the folder.
    import threading

    from pyarrow import fs

    trial_dir = tmp_path / "working_dirs" / "trial_1"
    trial_dir.mkdir(parents=True)
    (trial_dir / "progress.csv").write_text("x\n" * 1000)
    memory = TrialMemory(trial_dir, staging_dir=trial_dir.parent, log=lambda message: None)
    done = threading.Event()

    def save_again_and_again():
        while not done.is_set():
            memory.begin()
            memory.end()

    writer = threading.Thread(target=save_again_and_again)
    writer.start()
    failures = 0
    try:
        for copy in range(1000):
            destination = tmp_path / "storage" / str(copy)
            destination.mkdir(parents=True)  # as Ray makes it
            try:
                fs.copy_files(str(trial_dir), str(destination))
            except FileNotFoundError:
                failures += 1
    finally:
        done.set()
        writer.join()
    assert failures == 0
    assert sorted(p.name for p in trial_dir.iterdir()) == ["memory.json", "progress.csv"]
    assert json.loads((trial_dir / "memory.json").read_text())["running"] is False
