"""Evaluation's peak memory against training's, at the paper preset's shapes, before and after issue 20.

    python bench/bench_eval_memory.py --model DIR --data-dir ../shared/data   # DIR: bench/rehearsal.py's

Each case runs in a fresh process, so its peak resident memory (`ru_maxrss`) is its own; the figure is that
peak less the process's memory once the model is loaded. The examples are GSM8K train's longest in the
breakdown style, truncated at 256 tokens as the paper preset does; LoRA (r 8 on q, v) on the T5-small shape.

  train         one optimiser step at batch 16 (the paper preset's), and at 32 (the largest the search samples)
  eval before   perplexity as it was: batches of 64 (the preset's eval batch), the full-vocabulary logits of
                all 64 rows, a float copy and a log-softmax of it; then generation of 64 rows to 256 tokens
  eval after    the study's evaluation now: batches under the training micro-batch's token budget (16 x 512),
                perplexity from the loss's own reduction, the same generation under that budget
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = ("train-16", "train-32", "eval-before", "eval-after")
TOKENS = 256
EVAL_BATCH = 64


def _longest_pairs(data_dir: str, tokenizer, n: int) -> list[tuple[str, str]]:
    from trainables.data.load import DataConfig, load_math_splits
    from trainables.data.prompts import format_example

    splits = load_math_splits(DataConfig(source="local", data_dir=data_dir, train_size=None, dev_size=1))
    pairs = [format_example(r, "breakdown") for r in splits.train]
    lengths = [len(tokenizer(p[0]).input_ids) + len(tokenizer(text_target=p[1]).input_ids) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
    return [pairs[i] for i in order[:n]]


def run_case(case: str, model_dir: str, data_dir: str) -> dict:
    """One case in this process: its peak resident MiB above the loaded model's."""
    import torch
    import torch.nn.functional as F

    from trainables.data.batching import collate, encode_pairs
    from trainables.methods import StrategyContext, get_strategy
    from trainables.scoring.eval_settings import EvalSettings
    from trainables.scoring.evaluation import _perplexity, generate
    from trainables.training.loop import eval_settings
    from trainables.training.memory import resident_mb
    from trainables.training.models import load_model, load_tokenizer
    from trainables.training.train_config import TrainConfig

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(model_dir)
    pairs = _longest_pairs(data_dir, tokenizer, EVAL_BATCH)
    lora = get_strategy("lora")
    model = lora.apply(
        load_model(model_dir, device="cpu"), lora.make_config({"r": 8}), StrategyContext(tokenizer=tokenizer)
    )
    examples = encode_pairs(tokenizer, pairs, max_input_tokens=TOKENS, max_target_tokens=TOKENS)
    cpu = torch.device("cpu")
    base = resident_mb()
    if case.startswith("train"):
        size = int(case.split("-")[1])
        model.train()  # dropout on, as in a trial: its masks are kept for the backward pass
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model(**collate(examples[:size], tokenizer.pad_token_id, cpu)).loss.backward()
        optimizer.step()
    elif case == "eval-before":
        model.eval()
        with torch.no_grad():
            batch = collate(examples, tokenizer.pad_token_id, cpu)
            logits = model(**batch).logits  # (64, target_len, 32128)
            F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
            del logits
        settings = EvalSettings(batch_size=EVAL_BATCH, max_new_tokens=TOKENS)
        generate(model, tokenizer, [p[0] for p in pairs], settings, max_input_tokens=TOKENS)
    else:
        config = TrainConfig(
            batch_size=16,
            max_input_tokens=TOKENS,
            max_target_tokens=TOKENS,
            eval={"batch_size": EVAL_BATCH, "max_new_tokens": TOKENS},
        )
        settings = eval_settings(config)
        _perplexity(model, tokenizer, pairs, settings, max_input_tokens=TOKENS, max_target_tokens=TOKENS)
        generate(model, tokenizer, [p[0] for p in pairs], settings, max_input_tokens=TOKENS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"case": case, "peak_above_model_mib": round(peak - base), "model_loaded_mib": round(base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.model, args.data_dir)))
        return
    for case in CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--data-dir", args.data_dir, "--case", case],
            capture_output=True,
            text=True,
            check=True,
        )
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
