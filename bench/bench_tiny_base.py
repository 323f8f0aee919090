"""What makes the tiny base worth adapting: pretrain it on a choice of tasks, fine-tune, score the test split.

    python bench/bench_tiny_base.py --threads 2                                # the tiny preset's tasks
    python bench/bench_tiny_base.py --threads 2 --tasks lm,numbers,solution,arithmetic   # + prefix LM
    python bench/bench_tiny_base.py --threads 2 --tasks lm                     # prefix LM alone

Builds the tiny T5 (`--size`) on generated problems, pretrains it on `--tasks` (the tasks of
`trainables.data.pretraining`: `numbers`, `solution` (solution -> program), `arithmetic`; and `lm`, prefix LM
on questions and programs, which the preset leaves out) from problems of their own seed, then fully
fine-tunes it or trains a LoRA adapter on `--style` and prints test accuracy with its 95% interval against the majority answer of the same split, the
distinct answers, the trainable share and the time of each part, and `--show` generations to read by eye.
The defaults are the tiny preset's. Bases are cached under `--cache` by their settings.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from study.prepare import PRETRAIN_SEED  # the preset's: problems of their own
from trainables.data.generator import generate_problems
from trainables.data.pretraining import arithmetic, numbers
from trainables.data.prompts import format_example, solution_program_task, usable
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import evaluate_split
from trainables.training.cache import settings_key
from trainables.training.loop import fit
from trainables.training.models import cached_tiny_t5, count_parameters, load_model, load_tokenizer
from trainables.training.pretrain import prefix_lm_pairs
from trainables.training.train_config import TrainConfig


def pretraining_pairs(records, tasks: set[str]) -> list[tuple[str, str]]:
    import random

    rng = random.Random(PRETRAIN_SEED)
    texts = [r.question for r in records] + [r.program for r in records if r.program]
    pairs = prefix_lm_pairs(texts, seed=0) if "lm" in tasks else []
    pairs += [numbers(r) for r in records] if "numbers" in tasks else []
    pairs += [solution_program_task(r) for r in records if r.program] if "solution" in tasks else []
    pairs += [arithmetic(rng) for _ in records] if "arithmetic" in tasks else []
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny")
    p.add_argument("--min-steps", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--max-operand", type=int, default=9)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--tasks", default="numbers,solution,arithmetic")
    p.add_argument("--pretrain-problems", type=int, default=2000)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--method", choices=("full", "lora"), default="lora")
    p.add_argument("--r", type=int, default=4)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--targets", default="q,k,v,o,wi,wo")
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--style", default="code")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=Path("/tmp/slm-bench-tiny-base"))
    p.add_argument("--show", type=int, default=0, help="print this many test generations")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    difficulty = {"min_steps": args.min_steps, "max_steps": args.max_steps, "max_operand": args.max_operand}
    train = generate_problems(args.train, seed=0, **difficulty)
    test = generate_problems(args.test, seed=1, exclude={r.question for r in train}, **difficulty)
    texts = [t for r in train for t in (r.question, r.answer_text, r.program or "")]
    base = cached_tiny_t5(args.cache, texts=texts, size=args.size, seed=0)
    tasks = set(args.tasks.split(",")) - {""}
    model_dir, pretrain_s = base, 0.0
    if tasks:
        key = {"tasks": sorted(tasks), "n": args.pretrain_problems, "epochs": args.pretrain_epochs}
        model_dir = base.with_name(f"{base.name}-{settings_key(key)}")
        if not model_dir.exists():
            start = time.perf_counter()
            records = generate_problems(args.pretrain_problems, seed=PRETRAIN_SEED, **difficulty)
            model, tokenizer = load_model(base, device="cpu"), load_tokenizer(base)
            config = TrainConfig(lr=3e-3, epochs=args.pretrain_epochs, batch_size=64, max_input_tokens=128,
                                 max_target_tokens=128)  # fmt: skip
            fit(model, tokenizer, pretraining_pairs(records, tasks), config, log=lambda message: None)
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
            pretrain_s = time.perf_counter() - start
    model, tokenizer = load_model(model_dir, device="cpu"), load_tokenizer(model_dir)
    if args.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
                          target_modules=args.targets.split(","))  # fmt: skip
        model = get_peft_model(model, lora)
    trainable, total = count_parameters(model)
    pairs = [format_example(r, args.style) for r in train if usable(r, args.style)]
    config = TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_input_tokens=128,
                         max_target_tokens=128, prompt_style=args.style, warmup_ratio=0.05)  # fmt: skip
    start = time.perf_counter()
    fit(model, tokenizer, pairs, config, log=lambda message: None)
    train_s, start = time.perf_counter() - start, time.perf_counter()
    settings = EvalSettings(batch_size=100, max_new_tokens=80, metrics=("accuracy",))
    result = evaluate_split(model, tokenizer, test, style=args.style, settings=settings, max_input_tokens=128)
    eval_s, m = time.perf_counter() - start, result.metrics
    majority = Counter(r.answer for r in test).most_common(1)[0][1] / len(test)
    print(json.dumps(vars(args), default=str))
    print(
        f"test accuracy {m['accuracy']:.3f} [{m['accuracy_low']:.3f}, {m['accuracy_high']:.3f}], majority answer "
        f"{majority:.3f}, {m['distinct_answers']} distinct answers ({m['top_answer_share']:.0%} on one), "
        f"trainable {trainable:,} of {total:,} ({trainable / total:.1%}); pretraining {pretrain_s:.0f} s "
        f"(0: cached), fine-tuning {train_s:.0f} s ({len(pairs) * args.epochs / train_s:.0f} ex/s), "
        f"evaluation {eval_s:.0f} s"
    )
    for row in result.rows[: args.show]:
        print(f"  {row['input'][-70:]!r} -> {row['prediction']!r} (reference {row['reference']})")


if __name__ == "__main__":
    main()
