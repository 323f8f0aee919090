"""Loading models and tokenizers, the tiny T5 preset, its tokenizer, quantised loading and the errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import BartConfig, T5ForConditionalGeneration

from trainables.training import models
from trainables.training.models import (
    TINY_SIZES,
    ModelError,
    ModelNotFoundError,
    TinyT5Size,
    build_tiny_t5,
    cached_tiny_t5,
    count_parameters,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    tiny_t5_dir,
)
from trainables.training.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

PROGRAM = "a = 48 / 2; b = a + 24; print(b)"
SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
# measured with vocabularies trained on 500+ GSM8K train texts, which fill every size's vocab_size
DOCUMENTED_PARAMETERS = {"micro": 156_672, "tiny": 295_936, "mini": 1_181_440}


def gsm8k_texts(data_dir: Path, split: str, limit: int | None = None) -> list[str]:
    lines = (data_dir / "gsm8k" / f"{split}.jsonl").read_text().splitlines()[:limit]
    return [text for line in lines for text in json.loads(line).values()]


# --- tokenizer ------------------------------------------------------------------------------------------


def test_special_ids_follow_t5_and_eos_is_appended(micro_tokenizer):
    tok = micro_tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("a = 1").input_ids[-1] == 1
    assert tok(text_target="72").input_ids[-1] == 1


@pytest.mark.parametrize(
    "text",
    [
        PROGRAM,
        SOLUTION,
        "  two  spaces, (3 * 4) ; #### -0.5\n\nend ",
        "spaces before marks , . ? ! and it 's n't",  # what clean_up_tokenization_spaces would join
        "Café costs €5 ÷ 2 — ok?",
        "x",
    ],
)
def test_decode_reproduces_the_text_exactly(micro_tokenizer, text):
    tok = micro_tokenizer
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_round_trips_real_gsm8k_questions_and_solutions(micro_tokenizer, data_dir):
    tok = micro_tokenizer
    texts = gsm8k_texts(data_dir, "test") + gsm8k_texts(data_dir, "test_socratic", limit=300)
    decoded = tok.batch_decode(tok(texts).input_ids, skip_special_tokens=True)
    mismatches = [(a, b) for a, b in zip(texts, decoded, strict=True) if a != b]
    assert not mismatches, mismatches[:3]


def test_digits_are_single_tokens(micro_tokenizer):
    tok = micro_tokenizer
    tokens = tok.convert_ids_to_tokens(tok("12345 + 678 = <<12345+678=13023>>13023 and 0.75").input_ids)
    with_digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert with_digits == list("12345678123456781302313023075")


def test_batch_padding_truncation_and_targets(micro_tokenizer):
    tok = micro_tokenizer
    batch = tok(
        ["a = 48 / 2; print(a)", "7"], padding=True, truncation=True, max_length=6, return_tensors="pt"
    )
    assert batch.input_ids.shape == (2, 6)
    assert batch.input_ids[0, -1] == 1  # truncation keeps the eos
    assert batch.input_ids[1].tolist()[2:] == [0, 0, 0, 0] and batch.attention_mask[1].tolist() == [
        1,
        1,
        0,
        0,
        0,
        0,
    ]
    labels = tok(text_target=["24", "#### 72"], padding=True).input_ids
    assert tok.batch_decode(labels, skip_special_tokens=True) == ["24", "#### 72"]


def test_training_is_deterministic_and_saved_tokenizer_matches(micro_texts, micro_t5_dir):
    first = train_tokenizer(micro_texts, vocab_size=384)
    second = train_tokenizer(micro_texts, vocab_size=384)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert load_tokenizer(micro_t5_dir)(SOLUTION).input_ids == first(SOLUTION).input_ids


def test_tokenizer_rejects_a_vocab_too_small_for_bytes_and_no_texts():
    with pytest.raises(ValueError, match=f"vocab_size=100 is below {MIN_VOCAB_SIZE}"):
        train_tokenizer(["a"], vocab_size=100)
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer(["", ""], vocab_size=300)


# --- the tiny preset --------------------------------------------------------------------------------------


def test_micro_t5_loads_by_path_like_a_hub_model(micro_t5):
    model, tok = micro_t5
    assert isinstance(model, T5ForConditionalGeneration)
    assert model.device.type == "cpu" and model.dtype == torch.float32 and not model.training
    config = model.config
    assert (config.pad_token_id, config.eos_token_id, config.decoder_start_token_id) == (0, 1, 0)
    assert config.vocab_size == len(tok)
    assert 100_000 < count_parameters(model)[1] < 200_000


def test_generate_runs_on_the_loaded_model(micro_t5):
    model, tok = micro_t5
    batch = tok(["Sam has 3 apples.", "a = 4 + 5; print(a)"], padding=True, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and 2 <= out.shape[1] <= 6
    assert out[:, 0].tolist() == [0, 0]  # decoding starts from <pad>
    assert all(isinstance(text, str) for text in tok.batch_decode(out, skip_special_tokens=True))


@pytest.mark.parametrize("size", sorted(TINY_SIZES))
def test_documented_parameter_counts(tmp_path, data_dir, size):
    out = build_tiny_t5(tmp_path / size, texts=gsm8k_texts(data_dir, "train", limit=250), size=size)
    assert len(load_tokenizer(out)) == TINY_SIZES[size].vocab_size
    assert count_parameters(load_model(out, device="cpu")) == (DOCUMENTED_PARAMETERS[size],) * 2


def test_same_seed_same_weights_and_global_rng_untouched(tmp_path, micro_texts):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    seeds = {"a": 0, "b": 0, "c": 1}
    paths = [
        build_tiny_t5(tmp_path / name, texts=micro_texts, size="micro", seed=s) for name, s in seeds.items()
    ]
    assert torch.equal(torch.rand(1), expected_next)
    a, b, c = (load_model(p, device="cpu").shared.weight for p in paths)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_build_refuses_a_non_empty_directory_and_unknown_size(tmp_path, micro_texts):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        build_tiny_t5(tmp_path / "taken", texts=micro_texts, size="micro")
    with pytest.raises(ValueError, match="size must be one of .* got 'huge'"):
        build_tiny_t5(tmp_path / "new", texts=micro_texts, size="huge")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written left behind


def test_cache_builds_once_and_keys_by_texts_size_and_seed(tmp_path, micro_texts):
    first = cached_tiny_t5(tmp_path, texts=micro_texts, size="micro", seed=0)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert cached_tiny_t5(tmp_path, texts=iter(micro_texts), size="micro", seed=0) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    others = {
        tiny_t5_dir(tmp_path, texts=micro_texts, size="micro", seed=1),
        tiny_t5_dir(tmp_path, texts=micro_texts, size="tiny", seed=0),
        tiny_t5_dir(tmp_path, texts=micro_texts[1:], size="micro", seed=0),
        tiny_t5_dir(tmp_path, texts=["ab"], size="micro", seed=0),
        tiny_t5_dir(tmp_path, texts=["a", "b"], size="micro", seed=0),
    }
    assert len(others) == 5 and first not in others


def test_cache_key_holds_the_shape_of_the_size_not_only_its_name(tmp_path, micro_texts, monkeypatch):
    before = tiny_t5_dir(tmp_path, texts=micro_texts, size="micro", seed=0)
    wider = TinyT5Size(**{**dataclasses.asdict(TINY_SIZES["micro"]), "d_ff": 128})
    monkeypatch.setitem(models.TINY_SIZES, "micro", wider)
    assert tiny_t5_dir(tmp_path, texts=micro_texts, size="micro", seed=0) != before


def test_cache_uses_the_build_of_a_process_that_finished_first(tmp_path, micro_texts, monkeypatch):
    target = tiny_t5_dir(tmp_path, texts=micro_texts, size="micro", seed=0)
    real_train = models.train_tokenizer

    def train_while_another_process_finishes(texts, *, vocab_size):
        monkeypatch.setattr(models, "train_tokenizer", real_train)
        build_tiny_t5(target, texts=texts, size="micro", seed=0)  # the other process wins the rename
        return real_train(texts, vocab_size=vocab_size)

    monkeypatch.setattr(models, "train_tokenizer", train_while_another_process_finishes)
    assert cached_tiny_t5(tmp_path, texts=micro_texts, size="micro", seed=0) == target
    # the loser's temp dir is gone (the lock file of the cache stays: deleting a lock file is a race)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == [target.name]
    assert load_model(target, device="cpu").config.vocab_size == 384


# --- quantised loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_loading_on_cpu(micro_t5_dir, quantization):
    bnb = pytest.importorskip("bitsandbytes")
    expected = {"8bit": bnb.nn.Linear8bitLt, "4bit": bnb.nn.Linear4bit}[quantization]
    model = load_model(micro_t5_dir, device="cpu", quantization=quantization)
    tok = load_tokenizer(micro_t5_dir)
    attention = model.encoder.block[1].layer[0].SelfAttention
    assert all(isinstance(getattr(attention, name), expected) for name in "qkvo")
    assert type(model.lm_head) is torch.nn.Linear  # the tied embedding / head stays full precision
    trainable, total = count_parameters(model)
    assert total == DOCUMENTED_PARAMETERS["micro"] and trainable < total / 2

    batch = tok(["a = 4 + 5; print(a)", "Sam has 3 apples."], padding=True, return_tensors="pt")
    labels = tok(text_target=["9", "3"], padding=True, return_tensors="pt").input_ids
    model.train()
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.shared.weight.grad is not None
    model.eval()  # bitsandbytes' CPU inference path repacks 4-bit weights; it needs dims that are multiples of 64
    with torch.no_grad():
        assert model.generate(**batch, max_new_tokens=4).shape[0] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", [None, "8bit", "4bit"])
def test_loading_on_cuda(micro_t5_dir, quantization):
    model = load_model(micro_t5_dir, device="cuda", quantization=quantization)
    tok = load_tokenizer(micro_t5_dir)
    assert model.device.type == "cuda"
    batch = tok(["a = 4 + 5; print(a)"], return_tensors="pt").to("cuda")
    assert model.generate(**batch, max_new_tokens=4).shape[0] == 1


# --- errors -----------------------------------------------------------------------------------------------


def assert_one_actionable_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message and "--preset tiny" in message and "--model PATH" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("loader", [load_model, load_tokenizer])
def test_missing_path_raises_model_not_found(tmp_path, loader):
    with pytest.raises(ModelNotFoundError) as err:
        loader(tmp_path / "no" / "such" / "model")
    assert_one_actionable_line(err, "no such directory", str(tmp_path / "no"))


@pytest.mark.parametrize("loader", [load_model, load_tokenizer])
def test_hub_name_while_offline_raises_model_not_found(loader):
    with pytest.raises(ModelNotFoundError) as err:
        loader("no-such-org/no-such-t5")
    assert_one_actionable_line(err, "'no-such-org/no-such-t5'", "offline (HF_HUB_OFFLINE=1)")
    assert isinstance(err.value, ModelError) and isinstance(err.value, ValueError)  # the CLI's one-line path


def test_directory_without_model_or_tokenizer_files(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        load_model(tmp_path)
    assert_one_actionable_line(err, "no config.json")
    with pytest.raises(ModelNotFoundError) as err:
        load_tokenizer(tmp_path)
    assert_one_actionable_line(err, "no tokenizer files")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="a file, not a directory"):
        load_model(tmp_path / "model.bin")


def test_a_non_t5_model_and_a_bad_quantization_are_refused(tmp_path, micro_t5_dir):
    BartConfig(d_model=16, encoder_layers=1, decoder_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="is a 'bart' model, not a T5"):
        load_model(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="quantization must be one of .* got '3bit'"):
        load_model(micro_t5_dir, quantization="3bit")


def test_pick_device_and_dtype():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_dtype(torch.device("cpu")) == torch.float32
    for bad in ("banana", "meta"):
        with pytest.raises(ValueError, match=f"device '{bad}' is not"):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="0 CUDA device"):
            pick_device("cuda")


def test_count_parameters_separates_frozen_weights(micro_t5):
    model, _ = micro_t5
    trainable, total = count_parameters(model)
    assert trainable == total
    for param in model.encoder.parameters():
        param.requires_grad_(False)
    frozen = sum(p.numel() for p in model.encoder.parameters())  # includes the tied embedding
    assert count_parameters(model) == (total - frozen, total) and 0 < frozen < total


@pytest.mark.parametrize(
    ("native", "emulated", "expected"), [(True, True, torch.bfloat16), (False, True, torch.float32)]
)
def test_bf16_only_on_gpus_with_native_bf16(monkeypatch, native, emulated, expected):
    # A V100 or T4 emulates bf16: torch.cuda.is_bf16_supported() says True, including_emulation=False says no.
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or (including_emulation and emulated)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert pick_dtype(torch.device("cuda")) == expected
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_pretraining_is_built_once_and_keyed_by_its_whole_train_config(
    tmp_path, micro_t5_dir, micro_texts, monkeypatch
):
    import shutil

    from trainables.training import pretrain as pretraining
    from trainables.training.train_config import TrainConfig

    base = Path(shutil.copytree(micro_t5_dir, tmp_path / "base"))
    texts = micro_texts[:32]
    config = TrainConfig(epochs=1, batch_size=16, max_input_tokens=32, max_target_tokens=32)
    key = pretraining.pretrained_dir(base, texts=texts, config=config)
    assert key != pretraining.pretrained_dir(
        base, texts=texts, config=dataclasses.replace(config, warmup_ratio=0.5)
    )
    assert key != pretraining.pretrained_dir(base, texts=texts[1:], config=config)
    assert key != pretraining.pretrained_dir(base, texts=texts, config=config, pairs=[("a b", "c")])
    assert key == pretraining.pretrained_dir(
        base, texts=texts, config=dataclasses.replace(config, eval={"num_beams": 2})
    )
    fits = []
    real_fit = pretraining.fit
    monkeypatch.setattr(
        pretraining, "fit", lambda *args, **kwargs: fits.append(1) or real_fit(*args, **kwargs)
    )
    first = pretraining.pretrain(base, texts=texts, config=config, log=lambda message: None)
    assert pretraining.pretrain(base, texts=texts, config=config, log=lambda message: None) == first == key
    assert len(fits) == 1 and load_model(first, device="cpu").config.vocab_size == 384
