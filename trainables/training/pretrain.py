"""A stand-in for pretraining the tiny preset's T5: prefix LM and a few (input, target) tasks, cached.

The study fine-tunes *pretrained* T5s. A tiny T5 with random weights would leave the methods that freeze
the base (LoRA, QLoRA, stacked LoRA) nothing to adapt, so the tiny preset first pretrains its base with
T5's prefix-LM objective (Raffel et al. 2020, section 3.3): each text is cut at a random word; the encoder
reads the start and the decoder writes the rest. Other (input, target) tasks train alongside (`pairs`).
What the tiny preset pretrains on, and why none of it is the question -> solution mapping the strategies
are compared on, is `trainables.data.pretraining`'s to say; this module only trains and caches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from trainables.training.cache import build_once, settings_key, texts_digest
from trainables.training.loop import fit
from trainables.training.models import load_model, load_tokenizer
from trainables.training.train_config import TrainConfig

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


def pretrained_dir(
    base: Path, *, texts: Sequence[str], config: TrainConfig, pairs: Sequence[tuple[str, str]] = ()
) -> Path:
    """The content-addressed folder of `base` pretrained on `texts` (and `pairs`) with `config`.

    `base` is itself content-addressed; the key adds the texts, the pairs and the whole TrainConfig but
    its `eval` (pretraining never evaluates).
    """
    flat_pairs = [f"{source}\0{target}" for source, target in pairs]
    settings = {
        "format": PRETRAIN_FORMAT,
        "texts": texts_digest(texts),
        "pairs": texts_digest(flat_pairs),
        "train": config,
    }
    return base.parent / f"{base.name}-prefixlm-{settings_key(settings, ignore=('train.eval',))}"


def pretrain(
    base: Path,
    *,
    texts: Sequence[str],
    config: TrainConfig,
    pairs: Sequence[tuple[str, str]] = (),
    log: Callable[[str], None] = print,
) -> Path:
    """Pretrain the model saved in `base` with prefix LM on `texts`; returns the folder of the result.

    `pairs` are (input, target) tasks trained alongside the prefix-LM pairs (the tiny preset's
    translations between two notations of a solution; see `study.prepare.pretraining_corpus`).

    Built once (`trainables.training.cache.build_once`): a later call with the same arguments returns the
    cached folder, and processes asking at once wait for the one that builds it.
    """
    out = pretrained_dir(base, texts=texts, config=config, pairs=pairs)

    def build(staging: Path) -> None:
        model, tokenizer = load_model(base, device="cpu"), load_tokenizer(base)
        tasks = prefix_lm_pairs(texts, seed=config.seed) + list(pairs)
        log(
            f"pretraining the tiny T5 ({len(pairs)} task pairs, {len(tasks) - len(pairs)} prefix-LM texts, "
            f"{config.epochs} epochs) -> {out}"
        )
        losses: list[float] = []
        with torch.random.fork_rng():
            fit(model, tokenizer, tasks, config, on_eval=lambda m: losses.append(m["train/loss"]), log=log)
        log(f"pretraining loss per epoch: {', '.join(f'{x:.3f}' for x in losses)}")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return build_once(out, build)
