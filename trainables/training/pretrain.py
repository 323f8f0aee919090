"""A stand-in for pretraining the tiny preset's T5: prefix language modelling on generated text, cached.

The study fine-tunes *pretrained* T5s. A tiny T5 with random weights would leave the methods that freeze
the base (LoRA, QLoRA, stacked LoRA) nothing to adapt, so the tiny preset first pretrains its base with
T5's prefix-LM objective (Raffel et al. 2020, section 3.3): each text is cut at a random word; the encoder
reads the start and the decoder writes the rest. The texts are generated questions, solutions and programs
*as separate texts*, from a seed of their own, so the base learns the language of the problems but never
the question -> solution mapping that the strategies are compared on.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from trainables.training.loop import TrainConfig, fit
from trainables.training.models import load_model, load_tokenizer

PRETRAIN_FORMAT = 1  # bump when what a cached pretrained base means changes


def prefix_lm_pairs(texts: Sequence[str], *, seed: int) -> list[tuple[str, str]]:
    """Cut each text of at least two words at a random word boundary: (start, rest)."""
    rng = random.Random(seed)
    pairs = []
    for text in texts:
        words = text.split(" ")
        if len(words) >= 2:
            cut = rng.randint(1, len(words) - 1)
            pairs.append((" ".join(words[:cut]), " ".join(words[cut:])))
    return pairs


def pretrained_dir(base: Path, *, texts: Sequence[str], config: TrainConfig) -> Path:
    """The content-addressed folder of `base` pretrained on `texts` with `config`."""
    digest = hashlib.sha256(f"v{PRETRAIN_FORMAT}\0{config}\0".encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return base.parent / f"{base.name}-prefixlm-{digest.hexdigest()[:16]}"


def pretrain(
    base: Path,
    *,
    texts: Sequence[str],
    config: TrainConfig,
    log: Callable[[str], None] = print,
) -> Path:
    """Pretrain the model saved in `base` with prefix LM on `texts`; returns the folder of the result.

    Built once: a later call with the same arguments returns the cached folder. Safe when several
    processes ask at once (each builds into its own folder; the first rename wins).
    """
    out = pretrained_dir(base, texts=texts, config=config)
    if (out / "config.json").is_file():
        return out
    model, tokenizer = load_model(base, device="cpu"), load_tokenizer(base)
    pairs = prefix_lm_pairs(texts, seed=config.seed)
    log(f"pretraining the tiny T5 (prefix LM, {len(pairs)} texts, {config.epochs} epochs) -> {out}")
    losses: list[float] = []
    with torch.random.fork_rng():
        fit(model, tokenizer, pairs, config, on_eval=lambda m: losses.append(m["train/loss"]), log=log)
    log(f"pretraining loss per epoch: {', '.join(f'{x:.3f}' for x in losses)}")
    staging = Path(f"{out}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(out)
    except OSError:  # another process finished first: use its result
        shutil.rmtree(staging, ignore_errors=True)
        if not (out / "config.json").is_file():
            raise
    return out
