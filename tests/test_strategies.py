"""Every registered strategy: only the intended weights train, gradients reach them, a fresh adapter is a no-op."""

from __future__ import annotations

import pytest
import torch

from trainables.data.batching import collate, encode_pairs
from trainables.data.prompts import format_example
from trainables.data.records import CodeRecord
from trainables.methods import STRATEGIES, StrategyContext, get_strategy
from trainables.training.models import load_model, load_tokenizer
from trainables.training.train_config import TrainConfig
from trainables.trial import stage_fitter


def _base_name(name: str) -> str:
    """A parameter's name in the base model: PEFT's wrapper prefix and `base_layer` segment removed."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _may_train(name: str, base: set[str], added: bool) -> bool:
    """A method that adds weights trains only weights it added (adapters); one that adds none trains the
    base's own (full fine-tuning). Everything else must stay bit-identical."""
    return _base_name(name) not in base if added else True


def test_the_rule_tells_a_base_weight_from_an_added_one():
    base = {"encoder.block.0.layer.0.SelfAttention.q.weight"}
    wrapped = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.base_layer.weight"
    assert not _may_train(wrapped, base, added=True)
    assert _may_train(
        "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.default.weight", base, added=True
    )
    assert _may_train("encoder.block.0.layer.0.SelfAttention.q.weight", base, added=False)


def _prepared(name: str, micro_t5_dir, micro_splits, tmp_path, **settings):
    strategy = get_strategy(name)
    config = strategy.make_config(settings)
    model = load_model(micro_t5_dir, device="cpu", **strategy.load_kwargs(config))
    tokenizer = load_tokenizer(micro_t5_dir)
    context = StrategyContext(
        tokenizer=tokenizer,
        model_name=str(micro_t5_dir),
        train=TrainConfig(epochs=1, batch_size=16, max_input_tokens=64, max_target_tokens=48),
        fit=stage_fitter(tokenizer, log=lambda message: None),
        code_records=[
            CodeRecord(text=r.question, code=r.program, source="gsm8k-programs") for r in micro_splits.train
        ],
        cache_dir=tmp_path,
        log=lambda message: None,
    )
    return strategy.apply(model, config, context), tokenizer


def _batch(tokenizer, records):
    pairs = [format_example(r, "breakdown") for r in records]
    examples = encode_pairs(tokenizer, pairs, max_input_tokens=64, max_target_tokens=64)
    return collate(examples, tokenizer.pad_token_id, torch.device("cpu"))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_only_intended_parameters_train_and_all_of_them_move(name, micro_t5_dir, micro_splits, tmp_path):
    torch.manual_seed(0)
    model, tokenizer = _prepared(name, micro_t5_dir, micro_splits, tmp_path)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} trains nothing"
    base = {n for n, _ in load_model(micro_t5_dir, device="cpu").named_parameters()}
    added = any(_base_name(n) not in base for n, _ in model.named_parameters())
    wrong = sorted(n for n in trainable if not _may_train(n, base, added))
    assert not wrong, wrong[:3]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(tokenizer, micro_splits.train[:8])
    model.train()
    for _ in range(3):  # LoRA's A gets a gradient only once B has left zero
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p.detach(), before[n]), f"{n} did not move"
        else:
            assert torch.equal(p.detach(), before[n]), f"frozen {n} changed"


@pytest.mark.parametrize("name", ["lora", "qlora"])
def test_fresh_adapter_leaves_outputs_unchanged(name, micro_t5_dir, micro_splits, tmp_path):
    strategy = get_strategy(name)
    config = strategy.make_config({})
    base = load_model(micro_t5_dir, device="cpu", **strategy.load_kwargs(config)).eval()
    tokenizer = load_tokenizer(micro_t5_dir)
    batch = _batch(tokenizer, micro_splits.dev[:4])
    with torch.no_grad():
        expected = base(**batch).logits.clone()
    model, _ = _prepared(name, micro_t5_dir, micro_splits, tmp_path)
    with torch.no_grad():
        got = model.eval()(**batch).logits
    torch.testing.assert_close(got, expected)


def test_qlora_loads_the_base_in_8bit(micro_t5_dir, micro_splits, tmp_path):
    import bitsandbytes as bnb

    model, _ = _prepared("qlora", micro_t5_dir, micro_splits, tmp_path)
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_qlora_evaluates_after_a_training_step_on_a_cpu(variant, micro_t5_dir, micro_splits, tmp_path):
    # DoRA on an 8-bit base on a CPU once lost the weight's scale after its first forward (PEFT re-wraps
    # the int8 weight there), and the next forward failed in bitsandbytes: the rehearsal lost a trial so
    model, tokenizer = _prepared("qlora", micro_t5_dir, micro_splits, tmp_path, variant=variant)
    batch = _batch(tokenizer, micro_splits.train[:4])
    model.train()
    model(**batch).loss.backward()
    with torch.no_grad():
        loss = model.eval()(**batch).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("lora", {"r": 0}, "rank r must be >= 1, got 0"),
        ("lora", {"target_modules": "q,nope"}, "['nope'] are not T5 linear layers"),
        ("lora", {"rank": 8}, "unknown setting(s) rank for method 'lora'"),
        ("qlora", {"bits": 3}, "bits must be 4 or 8, got 3"),
    ],
)
def test_bad_settings_name_the_bad_value(name, settings, message):
    with pytest.raises(ValueError) as error:
        get_strategy(name).make_config(settings)
    assert message in str(error.value)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'lorax'; choose from .*full.*lora"):
        get_strategy("lorax")
