"""Where models come from: the only `from_pretrained` calls, and the tiny T5 preset built offline.

`load_model` / `load_tokenizer` take a hub name (`t5-small`, `google/flan-t5-small`) or a local directory.
`build_tiny_t5` trains a tokenizer on the study's own texts and saves a randomly initialised (seeded) small
T5 next to it, so the tiny preset loads through the same two functions as a hub model. `cached_tiny_t5`
keys that directory by the texts, size and seed, so a study builds it once and every trial reuses it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import is_offline_mode
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from trainables.training.cache import build_once, settings_key, texts_digest
from trainables.training.tokenizer import train_tokenizer

QUANTIZATIONS = (None, "8bit", "4bit")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
WHAT_TO_DO = "pass --model PATH to a saved T5, or use --preset tiny"
TINY_FORMAT_VERSION = 1
"""Part of the cache key: bump it when the builder changes what it writes."""


class ModelError(ValueError):
    """A model or tokenizer could not be loaded as asked: bad input, like `DataError` for data.

    A ValueError, so the CLI's one-line error handling reports it without a traceback.
    """


class ModelNotFoundError(ModelError):
    """No model by that name: not a local directory, and not loadable from the hub (offline, or absent)."""


# --- devices and dtypes ---------------------------------------------------------------------------------


def pick_device(prefer: str = "auto") -> torch.device:
    """The device to train on: `auto` takes the GPU when there is one.

    Raises:
        ValueError: if `prefer` is not `auto`, `cpu`, `cuda` or `cuda:N`, or names a missing GPU.
    """
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(prefer)
    except RuntimeError as err:
        raise ValueError(f"device {prefer!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {prefer!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {prefer!r} asked for, but {torch.cuda.device_count()} CUDA device(s) found")
    return device


def pick_dtype(device: torch.device) -> torch.dtype:
    """The compute dtype for `device`: bf16 on GPUs with native bf16, fp32 otherwise.

    fp32 on CPUs because bf16 autocast there ran 13-33x slower than fp32 in our measurements; never fp16,
    because T5's activations overflow it.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


# --- loading ----------------------------------------------------------------------------------------------


def _local_dir(name_or_path: str | os.PathLike, what: str) -> Path | None:
    """The local directory `name_or_path` names, or None for a hub name; fails for a missing path."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    looks_like_path = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if path.exists() or looks_like_path:
        reason = "a file, not a directory" if path.exists() else "no such directory"
        raise ModelNotFoundError(f"{what} {text!r} could not be loaded ({reason}): {WHAT_TO_DO}")
    return None


def _from_hub(loader, name: str, what: str, **kwargs):
    """Call a `from_pretrained` with a hub name, turning 'cannot get it' into one actionable line."""
    try:
        return loader(name, **kwargs)
    except OSError as err:  # transformers raises OSError for offline, unreachable, absent and invalid ids
        if is_offline_mode():
            reason = "not a local directory; the hub is offline (HF_HUB_OFFLINE=1) and it is not cached"
        else:
            reason = "not a local directory; not on the hub, or the hub is unreachable"
        raise ModelNotFoundError(f"{what} {name!r} could not be loaded ({reason}): {WHAT_TO_DO}") from err


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved with a model (hub name or local directory).

    Raises:
        ModelNotFoundError: if there is no such directory, it holds no tokenizer, or the hub cannot serve it.
    """
    local = _local_dir(name_or_path, "tokenizer")
    if local is None:
        return _from_hub(AutoTokenizer.from_pretrained, str(name_or_path), "tokenizer")
    if not any((local / name).is_file() for name in TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"tokenizer {str(local)!r} could not be loaded (no tokenizer files): {WHAT_TO_DO}"
        )
    return AutoTokenizer.from_pretrained(local)


def _quantization_config(quantization: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    try:
        import bitsandbytes  # noqa: F401  (checked here so the error names the missing package)
    except ImportError as err:
        raise ModelError(
            f"quantization {quantization!r} needs bitsandbytes: pip install bitsandbytes"
        ) from err
    if quantization == "8bit":
        _log_once("bitsandbytes.autograd._functions")
        return BitsAndBytesConfig(load_in_8bit=True)
    # NF4 with double quantisation and bf16/fp32 compute, as in the QLoRA paper
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
) -> T5ForConditionalGeneration:
    """Load a T5 (hub name or local directory) onto `device`, optionally quantised with bitsandbytes.

    Args:
        name_or_path: `t5-small`, `google/flan-t5-small`, ... or a directory written by `save_pretrained`.
        device: Where to put the model; None picks the GPU when there is one.
        dtype: Weight dtype. None gives fp32 for a model that trains (the optimizer wants fp32 weights;
            use `pick_dtype` for autocast), and `pick_dtype(device)` for a quantised, frozen base.
        quantization: None, `8bit` (LLM.int8) or `4bit` (NF4); the Linear layers of the blocks become
            bitsandbytes modules, the tied embedding / LM head stays unquantised.

    Raises:
        ValueError: for an unknown `quantization` or device.
        ModelNotFoundError: if the model cannot be found locally or on the hub.
        ModelError: if it is not a T5, or quantisation needs bitsandbytes and it is missing.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    device = pick_device(str(device) if device is not None else "auto")
    local = _local_dir(name_or_path, "model")
    if local is not None and not (local / "config.json").is_file():
        raise ModelNotFoundError(f"model {str(local)!r} could not be loaded (no config.json): {WHAT_TO_DO}")
    source = str(local or name_or_path)
    config = (
        AutoConfig.from_pretrained(source)
        if local
        else _from_hub(AutoConfig.from_pretrained, source, "model")
    )
    if config.model_type != "t5":
        raise ModelError(
            f"model {source!r} is a {config.model_type!r} model, not a T5 (t5-small, google/flan-t5-*)"
        )

    kwargs: dict = {"config": config, "dtype": dtype or torch.float32}
    if quantization is not None:
        kwargs["dtype"] = dtype or pick_dtype(device)
        kwargs["quantization_config"] = _quantization_config(quantization, kwargs["dtype"])
        # bitsandbytes weights cannot be moved with .to() after loading: they must be placed while loading
        if device.type == "cpu":
            kwargs["device_map"] = {"": "cpu"}
        else:
            kwargs["device_map"] = {
                "": device.index if device.index is not None else torch.cuda.current_device()
            }
    if local:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs)
    else:
        model = _from_hub(AutoModelForSeq2SeqLM.from_pretrained, source, "model", **kwargs)
    return model if quantization else model.to(device)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight counts its unpacked size, as PEFT does."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values are packed in each uint8 element
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


# --- the tiny preset --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyT5Size:
    """The shape of a randomly initialised T5 (classic T5: ReLU feed-forward, tied embeddings)."""

    d_model: int
    """Hidden size; a multiple of 64 so bitsandbytes' 4-bit CPU kernels accept every Linear layer."""
    d_ff: int
    """Feed-forward inner size."""
    num_layers: int
    """Encoder blocks; the decoder has as many."""
    num_heads: int
    """Attention heads."""
    d_kv: int
    """Size of one head (num_heads * d_kv is the attention width)."""
    vocab_size: int
    """Most tokens the tokenizer may learn (fewer when the texts hold fewer merges)."""

    def __post_init__(self) -> None:
        for name in ("d_model", "d_ff", "num_layers", "num_heads", "d_kv", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


TINY_SIZES = {
    "micro": TinyT5Size(d_model=64, d_ff=64, num_layers=2, num_heads=4, d_kv=16, vocab_size=384),
    "tiny": TinyT5Size(d_model=64, d_ff=256, num_layers=2, num_heads=4, d_kv=16, vocab_size=1024),
    "mini": TinyT5Size(d_model=128, d_ff=512, num_layers=2, num_heads=4, d_kv=32, vocab_size=2048),
}
"""Sizes by name. Parameters with a full vocabulary (which 250 GSM8K problems already give):
micro 156,672 (unit tests), tiny 295,936 (the tiny preset's: 275,968 with the vocabulary its generated
problems give, on which a rank-4 adapter on all six projections is 22,528), mini 1,181,440."""


def _size(size: str) -> TinyT5Size:
    if size not in TINY_SIZES:
        raise ValueError(f"size must be one of {sorted(TINY_SIZES)}, got {size!r}")
    return TINY_SIZES[size]


def tiny_t5_config(size: TinyT5Size, vocab_size: int) -> T5Config:
    """A T5 config of `size` for a tokenizer of `vocab_size` tokens, with T5's special ids."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=size.d_model,
        d_ff=size.d_ff,
        d_kv=size.d_kv,
        num_layers=size.num_layers,
        num_decoder_layers=size.num_layers,
        num_heads=size.num_heads,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def build_tiny_t5(
    out_dir: str | os.PathLike, *, texts: Iterable[str], size: str = "tiny", seed: int = 0
) -> Path:
    """Train a tokenizer on `texts`, build a seeded random T5 of `size`, and save both into `out_dir`.

    The directory loads with `load_model` / `load_tokenizer` like a hub model. It is written to a
    temporary sibling and renamed into place, so a reader never sees half of it.

    Args:
        out_dir: Where to save; must not exist, or be empty.
        texts: Training texts for the tokenizer (questions, solutions, programs).
        size: A key of `TINY_SIZES`.
        seed: Seeds the weight initialisation (the global RNG state is left as it was).

    Returns:
        `out_dir` as a Path.

    Raises:
        ValueError: for an unknown size or no texts.
        FileExistsError: if `out_dir` exists and is not empty (e.g. another process built it first).
    """
    shape = _size(size)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; remove it or build elsewhere")
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, vocab_size=shape.vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(tiny_t5_config(shape, len(tokenizer)))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache must be readable by every worker
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename cannot replace a directory
        os.rename(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if out.is_dir() and any(out.iterdir()):
            raise FileExistsError(f"{out} was created by someone else while building") from err
        raise
    return out


def tiny_t5_dir(
    cache_dir: str | os.PathLike, *, texts: Iterable[str], size: str = "tiny", seed: int = 0
) -> Path:
    """The content-addressed directory for a tiny T5 built from these texts, size and seed.

    The key holds the size's whole shape (`TinyT5Size`), not only its name, so a preset whose shape
    changes gets a new model instead of an old one from the cache.
    """
    settings = {
        "format": TINY_FORMAT_VERSION,
        "size": _size(size),
        "seed": seed,
        "texts": texts_digest(texts),
    }
    return Path(cache_dir) / f"t5-{size}-seed{seed}-{settings_key(settings)}"


def cached_tiny_t5(
    cache_dir: str | os.PathLike, *, texts: Iterable[str], size: str = "tiny", seed: int = 0
) -> Path:
    """The tiny T5 for these texts, size and seed under `cache_dir`, built on first use.

    Safe when several processes ask at once: one builds (`trainables.training.cache.build_once`), the
    others wait for it and use its result.
    """
    texts = list(texts)
    out = tiny_t5_dir(cache_dir, texts=texts, size=size, seed=seed)
    return build_once(out, lambda staging: build_tiny_t5(staging, texts=texts, size=size, seed=seed))


class _OncePerMessage(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.msg not in self.seen
        self.seen.add(record.msg)
        return first


def _log_once(logger_name: str) -> None:
    """bitsandbytes logs 'inputs will be cast to float16' on every int8 matmul; keep the first of each."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _OncePerMessage) for f in logger.filters):
        logger.addFilter(_OncePerMessage())
