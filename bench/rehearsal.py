"""The rehearsal of the real study on a CPU: a T5-small-shaped model with random weights and a T5-style
SentencePiece tokenizer, trained offline on GSM8K and MBPP texts, so the paper preset's shapes can run
without the hub.

    python bench/rehearsal.py --out /tmp/t5-small-shaped --data-dir ../shared/data
    python -m study.run --method all --preset paper --model /tmp/t5-small-shaped --data-dir ../shared/data \
        --train-size 48 --dev-size 16 --test-size 16 --trials 1 --space train/epochs=1 \
        --space stacked:strategy/stage1_epochs=1

The tokenizer is a SentencePiece unigram model like T5's: 32,000 pieces (fewer when the texts hold fewer)
plus T5's 100 `<extra_id_N>` sentinels, `<pad>` 0, `</s>` 1, `<unk>` 2, and no `<`, `{` or `}` (T5's own
vocabulary has none: GSM8K's `<<48/2=24>>` annotations become unknown tokens, as with t5-small). The model
is `T5Config()`'s defaults, which are T5-small's shape (60M parameters, vocabulary 32,128).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.errors import run_cli  # noqa: E402

LEFT_OUT = str.maketrans("", "", "<{}")
"""Characters T5's SentencePiece vocabulary lacks."""
VOCAB = 32000
EXTRA_IDS = 100


def corpus(data_dir: Path) -> list[str]:
    """GSM8K train questions and answers and MBPP's tasks and code, without `<`, `{`, `}`."""
    texts = []
    for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        texts += [row["question"], row["answer"]]
    for line in (data_dir / "mbpp" / "mbpp.jsonl").read_text().splitlines():
        row = json.loads(line)
        texts += [row["text"], row["code"]]
    return [t.translate(LEFT_OUT) for t in texts if t.strip()]


def build(out: Path, data_dir: Path) -> Path:
    """Train the tokenizer, build the random T5-small-shaped model, save both into `out`."""
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "corpus.txt"
        text_file.write_text("\n".join(t.replace("\n", " ") for t in corpus(data_dir)) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(text_file),
            model_prefix=str(Path(tmp) / "spiece"),
            model_type="unigram",
            vocab_size=VOCAB,
            hard_vocab_limit=False,  # GSM8K and MBPP hold fewer pieces than T5's C4 did
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
        )
        # from_pretrained on the folder converts the SentencePiece model (the constructor alone does not)
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=EXTRA_IDS, legacy=False)
        tokenizer.save_pretrained(out)
    if len(tokenizer) > T5Config().vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than T5-small's embedding holds")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(decoder_start_token_id=0))  # T5-small's shape
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the model and tokenizer")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with gsm8k/ and mbpp/")
    args = parser.parse_args(argv)
    for path in ("gsm8k/train.jsonl", "mbpp/mbpp.jsonl"):
        if not (args.data_dir / path).is_file():
            raise ValueError(f"--data-dir {args.data_dir} holds no {path}")
    if args.out.exists() and any(args.out.iterdir()):
        raise ValueError(f"--out {args.out} exists and is not empty")
    print(build(args.out, args.data_dir))


if __name__ == "__main__":
    run_cli(main)
