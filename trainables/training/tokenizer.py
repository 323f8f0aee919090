"""An offline byte-level BPE tokenizer with T5's conventions, trained on the study's own texts.

Byte-level BPE can spell any string, so decoding gives back the exact text: newlines, spaces and the
GSM8K calculator marks `<<48/2=24>>24` as well as one-line programs `a = 48 / 2; print(a)`. Digits are
split one per token before BPE runs, so `48` is always `4`, `8`: a tiny model copies and adds numbers
digit by digit far more easily than it learns a separate embedding for every number it has seen.

T5's conventions are kept, so the tokenizer drops in where a hub T5 tokenizer would: `<pad>` is id 0
(also the decoder start token), `</s>` id 1 and appended to every encoded text, `<unk>` id 2.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)
"""In id order: pad 0, eos 1, unk 2, as in every T5 checkpoint."""
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
"""Every byte plus the special tokens: a smaller vocabulary could not spell every text."""
MODEL_MAX_LENGTH = 512
"""What `truncation=True` cuts to when no `max_length` is given (T5's usual input length)."""


def train_tokenizer(texts: Iterable[str], *, vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it for `transformers`.

    Training is deterministic: the same texts in the same order give the same vocabulary and merges.
    A few hundred short texts take well under a second.

    Args:
        texts: The training texts (questions, solutions, programs).
        vocab_size: The most tokens to learn, special tokens and the 256 bytes included. Fewer are
            learned when the texts hold fewer distinct merges.

    Returns:
        A tokenizer with `<pad>`=0, `</s>`=1, `<unk>`=2 that appends `</s>` to each text.

    Raises:
        ValueError: if `vocab_size` cannot hold the byte alphabet, or `texts` is empty.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is below {MIN_VOCAB_SIZE} (256 bytes + 3 special tokens)")
    texts = [text for text in texts if text]
    if not texts:
        raise ValueError("cannot train a tokenizer on no texts (texts was empty or all empty strings)")

    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # add_prefix_space=False: a leading space would not survive decoding
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    # the trainer adds special tokens first; T5 code (loss masking, generate) relies on these ids
    ids = [backend.token_to_id(token) for token in SPECIAL_TOKENS]
    if ids != [0, 1, 2]:
        raise RuntimeError(f"special tokens {SPECIAL_TOKENS} got ids {ids}, expected [0, 1, 2]")
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    return _wrap(backend)


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` with T5's special tokens for `transformers`.

    `clean_up_tokenization_spaces=False`: the cleanup joins `' .'` into `'.'` and `" 's"` into `"'s"`,
    which would change decoded programs and solutions (transformers 5 skips it for BPE, with a warning).
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
    )
