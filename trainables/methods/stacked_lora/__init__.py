"""Stacked LoRA, the study's own method: W = W0 + s1 B1 A1 + f(s2 B2 A2), s = alpha / r, f elementwise.

Stage 1 trains A1, B1 alone (a plain LoRA); stage 2 freezes them and trains A2, B2 through f, in weight
space (f on the (out, in) matrix) or activation space (s2 f(x A2^T) B2^T). `layer.py` holds the math, the
init that lets every f train and the cost argument; `model.py` the surgery, merging and files.

    model = apply_stacked_lora(base, StackedLoraConfig(r1=8, r2=8, f="relu"))  # A1, B1 train
    ...train stage 1...; save_stacked_lora(model, "stage1/")
    model = load_stacked_lora(fresh_base, "stage1/")
    start_stage2(model, trial_config)  # A1, B1 frozen; A2, B2 train; stage-1 fields must match
    ...train stage 2...; save_stacked_lora(model, "adapter/")
    merge_stacked_lora(model)  # or merge_and_unload(model): inference at the base model's cost

Why a PEFT-shaped tuner of our own, not a PEFT LoRA variant with "stage1" and "stage2" adapters:

* PEFT 0.21 cannot take a new tuner from outside: `register_peft_method` accepts only names already in its
  `PeftType` enum.
* A LoRA variant needs a `LoraConfig` subclass with an `is_lora_variant` field for f. Its
  `adapter_config.json` says `peft_type: "LORA"`, and `PeftModel.from_pretrained` drops the unknown field
  with only a warning: the adapter would load as a linear stack, a silently wrong model. Ours writes
  `peft_type: "STACKED_LORA"`, which PEFT's loader refuses loudly, and `load_stacked_lora` reads it.
* A variant's forward receives the base output already computed, so the weight-space delta would cost a
  second full matmul, `F.linear(x, delta)`, where folding it into W0 costs none (1.65x slower per layer
  forward + backward in bench/bench_stacked.py).
* `_register_custom_module` maps one base type to one layer class and must be repeated at load time;
  float and bitsandbytes layers would each need a subclass of a different PEFT class, and PEFT calls
  the variant API private and prone to change.

What is kept from PEFT: the folder (`adapter_config.json` + `adapter_model.safetensors`), the names
(`base_layer`, `lora_A1` ... as `lora_A`), stage 1's init and scaling, the target matching on a module
name's last part, and `merge` / `unmerge` / `merge_and_unload`. Bases: `nn.Linear` and bitsandbytes
`Linear8bitLt` / `Linear4bit`, whose quantised W0 is never dequantised and which cannot be merged into.

Baselines (the lead's setting chooses; the mechanics are here):

* linear stack: `f="identity"`. Prefer `f_space="activation"`: the same function (two LoRAs) for less work.
* merged-then-LoRA (COLA-style): `f="identity", f_space="activation", stage1_merge=True` folds s1 B1 A1 into
  W0 when stage 2 starts; a saved adapter keeps A1, B1, and loading folds them in again. Float bases only.
* one LoRA of rank r1 + r2: plain PEFT LoRA (the `lora` strategy with `r = r1 + r2`), not this package.

The package imports its torch modules (`layer`, `model`) on first use of one of their names (PEP 562), so
that the method registry can read `StackedLoraConfig` without torch.
"""

import importlib

from trainables.methods.stacked_lora.config import ACTIVATIONS, F_SPACES, StackedLoraConfig

_LAZY = {
    "StackedLoraLinear": "layer",
    **dict.fromkeys(
        (
            "apply_stacked_lora",
            "load_stacked_lora",
            "merge_and_unload",
            "merge_stacked_lora",
            "read_stacked_lora_config",
            "save_stacked_lora",
            "stacked_layers",
            "stacked_lora_state_dict",
            "start_stage2",
            "unmerge_stacked_lora",
        ),
        "model",
    ),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


__all__ = ["ACTIVATIONS", "F_SPACES", "StackedLoraConfig", *_LAZY]
