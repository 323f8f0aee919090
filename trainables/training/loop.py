"""The one training and evaluation loop every strategy shares.

A strategy has already decided which weights train; this module does the rest: tokenise the prompt style's
(input, target) pairs, batch, AdamW with linear warmup and decay, gradient accumulation, bf16 autocast on
GPUs with native bf16 (fp32 on CPUs and on GPUs that only emulate bf16, where it is many times slower),
evaluation on the dev split, reporting and checkpoints, and the final test evaluation whose generations are
written next to the trial's results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import get_linear_schedule_with_warmup

from trainables.data.batching import collate, encode_pairs
from trainables.data.prompts import format_example, usable
from trainables.scoring.calculator import calculator_supported
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import EvalResult, evaluate_split
from trainables.training.memory import (
    TrialMemory,
    check_oom_hook,
    free_memory,
    is_out_of_memory,
    oom_hook_limit,
)
from trainables.training.models import count_parameters, pick_dtype
from trainables.training.reporting import Reporter
from trainables.training.train_config import TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial stops with this as its error."""


def seed_everything(seed: int) -> None:
    """Seed every random number generator a trial touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Run a block without moving the random number generators `seed_everything` seeds: what follows draws
    the same numbers whatever the block did (stacked LoRA's stage 1, trained here or loaded from a cache)."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():  # torch's CPU generator, and CUDA's where it is in use
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


LENGTH_GROUP = 50
"""Batches per group that `batch_order` sorts by length (Hugging Face's `group_by_length` takes 50 too)."""


def batch_order(
    n: int, batch_size: int, *, seed: int, epoch: int, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """The shuffled batches of one epoch: a pure function of (seed, epoch), so a resumed trial sees the same.

    With `lengths` (tokens per example), each run of `LENGTH_GROUP` batches of the shuffled order is sorted
    by length before it is cut into batches, and the batches are shuffled again: examples of similar length
    share a batch, so less of it is padding, while every batch is still drawn from a random part of the data.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    group = batch_size * LENGTH_GROUP
    order = [i for g in range(0, n, group) for i in sorted(order[g : g + group], key=lambda i: -lengths[i])]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the weights that train: an adapter checkpoint holds kilobytes, not the base model."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def memory_mb(device: torch.device) -> float:
    """GPU memory allocated at its peak since the trial began, or the process's resident memory now on CPU.

    On CPU the process's lifetime peak (`ru_maxrss`) would not do: Ray reuses a worker for many trials, so
    it would report the largest trial so far. The loop takes the maximum over its evaluation points.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20


def fit(
    model: torch.nn.Module,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    config: TrainConfig,
    *,
    on_eval: Callable[[dict], None] | None = None,
    reporter: Reporter | None = None,
    memory: TrialMemory | None = None,
    log: Callable[[str], None] = print,
    make_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
) -> int:
    """Train `model`'s trainable weights on `pairs`; returns the number of optimiser steps taken.

    At each evaluation point `on_eval(train_metrics)` is called; its `_save(directory)` entry writes a
    checkpoint of that point. With a `reporter`, training resumes from the reporter's last checkpoint
    (weights, optimiser, schedule and position), skipping the batches done before it. A step that runs out
    of memory is redone from the same optimiser state at half the micro-batch and twice the accumulation
    (`memory`, the trial's record of that; a fresh one by default).
    `make_optimizer(model, lr=, weight_decay=)` builds the optimiser (a method's own, e.g. LoRA+'s);
    None gives AdamW over every trainable weight.
    """
    device = next(model.parameters()).device
    memory = memory or TrialMemory(log=log)
    seed_everything(config.seed)
    examples = encode_pairs(
        tokenizer, pairs, max_input_tokens=config.max_input_tokens, max_target_tokens=config.max_target_tokens
    )
    micro_batch = max(1, config.batch_size // config.grad_accum)
    batching = memory.batching(micro_batch, config.grad_accum)
    while config.max_micro_batch and batching.size > config.max_micro_batch:
        batching = batching.halved()  # the memory check's cap: the same examples per step, in smaller passes
    lengths = [len(e["input_ids"]) + len(e["labels"]) for e in examples] if config.group_by_length else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the strategy left no trainable parameters")
    if make_optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(len(examples) / micro_batch)
    total_steps = math.ceil(batches_per_epoch / config.grad_accum) * config.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    eval_points = _eval_points(batches_per_epoch, config.grad_accum, config.evals_per_epoch)
    start = _restore(model, optimizer, scheduler, reporter, log)
    step, epoch0, batch0 = start["step"], start["epoch"], start["batch"]
    # pick_dtype, not torch.cuda.is_bf16_supported(): that counts emulated bf16 (V100, T4), which is slow
    use_bf16 = pick_dtype(device) == torch.bfloat16
    oom_limit = oom_hook_limit()

    def accumulate(step_batches: list[list[int]]) -> list[float]:
        """Forward and backward every micro-batch of one optimiser step; their losses."""
        losses = []
        for batch_ids in (ids for configured in step_batches for ids in batching.split(configured)):
            batch = collate([examples[i] for i in batch_ids], tokenizer.pad_token_id, device)
            check_oom_hook(batch, oom_limit)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at step {step} (epoch {epoch}, lr {config.lr:g})"
                )
            (loss / batching.accum).backward()
            losses.append(loss.item())
            del batch, loss
        return losses

    loss_sum, loss_count, seen, t0 = 0.0, 0, 0, time.perf_counter()
    for epoch in range(epoch0, config.epochs):
        model.train()
        order = batch_order(len(examples), micro_batch, seed=config.seed, epoch=epoch, lengths=lengths)
        for first in range(0, len(order), config.grad_accum):
            if epoch == epoch0 and first < batch0:
                continue  # done before the checkpoint this trial resumed from (always a step's end)
            step_batches = order[first : first + config.grad_accum]
            index = first + len(step_batches) - 1  # the configured micro-batch that ends this step
            rng = _rng_state(device)
            while True:
                try:
                    losses = accumulate(step_batches)
                    break
                except Exception as error:  # an out-of-memory error of any device: redo at half the batch
                    if not is_out_of_memory(error):
                        raise
                    del error
                    optimizer.zero_grad(set_to_none=True)  # the partial sum of this step's gradients
                    free_memory(device)
                    batching = memory.halve(batching, f"training step {step}")
                    _set_rng_state(device, rng)  # the same dropout masks as a run started at this size
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_sum, loss_count = loss_sum + sum(losses), loss_count + len(losses)
            seen += sum(len(ids) for ids in step_batches)
            if index in eval_points and on_eval is not None:
                train_seconds = time.perf_counter() - t0
                position = {"step": step, "epoch": epoch, "batch": index + 1}
                if index + 1 == batches_per_epoch:
                    position = {"step": step, "epoch": epoch + 1, "batch": 0}
                on_eval(
                    {
                        "epoch": epoch + (index + 1) / batches_per_epoch,
                        "step": step,
                        "train/loss": loss_sum / max(loss_count, 1),
                        "train/examples_per_s": seen / max(train_seconds, 1e-9),
                        # from the position, so a resumed trial counts the examples seen before it too
                        "train/examples_seen": epoch * len(examples)
                        + min((index + 1) * micro_batch, len(examples)),
                        **memory.metrics(batching),
                        "_save": lambda directory, pos=position: _save(
                            directory, model, optimizer, scheduler, pos
                        ),
                    }
                )
                model.train()
                loss_sum, loss_count, seen, t0 = 0.0, 0, 0, time.perf_counter()
    return step


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _eval_points(batches_per_epoch: int, grad_accum: int, evals_per_epoch: int) -> set[int]:
    """Indices of the micro-batches after which to evaluate: the last micro-batch of evenly spaced steps.

    An evaluation is also a checkpoint, and a checkpoint holds no gradients: one taken in the middle of an
    accumulated step would lose the micro-batches already summed, so a resumed run would diverge.
    """
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)
    steps = {round(steps_per_epoch * (k + 1) / evals_per_epoch) for k in range(evals_per_epoch)}
    return {min(s * grad_accum, batches_per_epoch) - 1 for s in steps if s > 0}


def _save(directory: Path, model, optimizer, scheduler, position: dict) -> None:
    torch.save(trainable_state(model), directory / "trainable.pt")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),  # dropout masks after a resume match an uninterrupted run
        },
        directory / "optimizer.pt",
    )
    (directory / "position.json").write_text(json.dumps(position))


def _restore(model, optimizer, scheduler, reporter: Reporter | None, log) -> dict:
    directory = reporter.restore() if reporter is not None else None
    if directory is None:
        return {"step": 0, "epoch": 0, "batch": 0}
    weights = torch.load(directory / "trainable.pt", map_location="cpu")
    missing = model.load_state_dict(weights, strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"checkpoint holds weights this model lacks: {missing.unexpected_keys[:3]}")
    states = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    torch.set_rng_state(states["torch_rng"])
    position = json.loads((directory / "position.json").read_text())
    log(f"resumed from checkpoint at step {position['step']} (epoch {position['epoch']})")
    return position


def train_and_evaluate(
    model: torch.nn.Module,
    tokenizer,
    splits,
    config: TrainConfig,
    reporter: Reporter,
    *,
    memory: TrialMemory | None = None,
    log: Callable[[str], None] = print,
    make_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    end_metrics: Callable[[torch.nn.Module, Path], dict] | None = None,
) -> dict:
    """Train on `splits.train`, report dev metrics at each evaluation point, test once at the end.

    The last report carries the dev and the test metrics together, so a scheduler that stops a trial at its
    final iteration cannot lose the test numbers. Returns that last report's metrics. An evaluation that
    runs out of memory is redone at half its batch (`memory` records it). `make_optimizer` is `fit`'s;
    `end_metrics(model, trial_dir)` adds metrics of the trained model to the last report (the rank of the
    learned update).
    """
    memory = memory or TrialMemory(log=log)
    device = next(model.parameters()).device
    trainable, total = count_parameters(model)
    style = config.prompt_style
    pairs = [format_example(r, style) for r in splits.train if usable(r, style)]
    evaluations_total = config.epochs * config.evals_per_epoch
    final: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peak = {"mb": 0.0}
    limits = _token_limits(config)

    def on_eval(train_metrics: dict) -> None:
        peak["mb"] = max(peak["mb"], memory_mb(device))
        save = train_metrics.pop("_save")
        metrics = dict(train_metrics)
        dev = evaluate_with_retries(
            lambda settings: evaluate_split(
                model, tokenizer, splits.dev, style=style, settings=settings, calculator=False, **limits
            ),
            config,
            memory,
            what="dev evaluation",
        )
        metrics.update({f"dev/{k}": v for k, v in dev.metrics.items()})
        metrics.update({"params/trainable": trainable, "params/total": total, "memory/peak_mb": peak["mb"]})
        is_last = round(train_metrics["epoch"] * config.evals_per_epoch) >= evaluations_total
        if is_last:
            metrics.update(_test_metrics(model, tokenizer, splits.test, config, reporter.trial_dir(), memory))
            if end_metrics is not None:
                metrics.update(end_metrics(model, reporter.trial_dir()))
            final.update(metrics)
        reporter.report(metrics, save=save)

    fit(
        model,
        tokenizer,
        pairs,
        config,
        on_eval=on_eval,
        reporter=reporter,
        memory=memory,
        log=log,
        make_optimizer=make_optimizer,
    )
    return final


def eval_settings(config: TrainConfig, halvings: int = 0) -> EvalSettings:
    """The trial's evaluation settings, its batches bounded by the training micro-batch's tokens (unless
    `eval.batch_tokens` says otherwise) and halved `halvings` times after out-of-memory errors."""
    settings = config.eval
    assert settings is not None
    micro_batch = max(1, config.batch_size // config.grad_accum)
    micro_batch = min(micro_batch, config.max_micro_batch or micro_batch)
    budget = settings.batch_tokens or micro_batch * (config.max_input_tokens + config.max_target_tokens)
    size = settings.batch_size
    for _ in range(halvings):
        size, budget = (size + 1) // 2, (budget + 1) // 2
    return dataclasses.replace(settings, batch_size=size, batch_tokens=budget)


def evaluate_with_retries(
    evaluate: Callable[[EvalSettings], EvalResult], config: TrainConfig, memory: TrialMemory, *, what: str
) -> EvalResult:
    """`evaluate(settings)`, redone at half the batch after each out-of-memory error, down to one row."""
    while True:
        settings = eval_settings(config, memory.eval_halvings)
        try:
            return evaluate(settings)
        except Exception as error:  # an out-of-memory error of any device: redo at half the batch
            if not is_out_of_memory(error):
                raise
            del error
            free_memory()
            memory.halve_eval(settings.batch_size, what)


def _token_limits(config: TrainConfig) -> dict[str, int]:
    """Evaluation truncates inputs and targets as training did."""
    return {"max_input_tokens": config.max_input_tokens, "max_target_tokens": config.max_target_tokens}


def _test_metrics(
    model, tokenizer, records, config: TrainConfig, trial_dir: Path, memory: TrialMemory
) -> dict:
    """Test-split metrics and the generations file; twice (without and with calculator) where it applies."""
    style, limits = config.prompt_style, _token_limits(config)

    def evaluate(*, calculator: bool, metrics) -> EvalResult:
        return evaluate_with_retries(
            lambda settings: evaluate_split(
                model,
                tokenizer,
                records,
                style=style,
                settings=settings,
                calculator=calculator,
                metrics=metrics,
                **limits,
            ),
            config,
            memory,
            what="test evaluation",
        )

    result = evaluate(calculator=False, metrics=config.eval.test_metrics)
    result.write_generations(trial_dir / "generations_test.jsonl")
    metrics = {f"test/{k}": v for k, v in result.metrics.items()}
    if style == "breakdown" and config.eval.calculator and calculator_supported(tokenizer):
        with_calc = evaluate(calculator=True, metrics=("accuracy",))
        with_calc.write_generations(trial_dir / "generations_test_calculator.jsonl")
        metrics["test/accuracy_calculator"] = with_calc.metrics["accuracy"]
        metrics["test/accuracy_calculator_low"] = with_calc.metrics["accuracy_low"]
        metrics["test/accuracy_calculator_high"] = with_calc.metrics["accuracy_high"]
    return metrics
