"""Model surgery for stacked LoRA: wrap the targeted linear layers, switch stages, merge, save and load.

The functions change a model in place and return it, like PEFT's `inject_adapter_in_model`. A saved adapter
is a folder holding `adapter_config.json` (the `StackedLoraConfig` fields plus `peft_type: "STACKED_LORA"`,
`stage` and `base_model_name_or_path`) and `adapter_model.safetensors` (keys `<module name>.lora_A1`, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trainables.methods.stacked_lora.config import StackedLoraConfig
from trainables.methods.stacked_lora.layer import StackedLoraLinear

PEFT_TYPE = "STACKED_LORA"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def stacked_layers(model: nn.Module) -> dict[str, StackedLoraLinear]:
    """Module name -> stacked LoRA layer.

    Raises:
        ValueError: if the model has none (`apply_stacked_lora` was not called).
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, StackedLoraLinear)}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no stacked LoRA layers; call apply_stacked_lora first")
    return layers


def apply_stacked_lora(model: nn.Module, config: StackedLoraConfig) -> nn.Module:
    """Freeze the model and wrap every targeted linear layer in a `StackedLoraLinear` (stage 1 trains).

    Raises:
        ValueError: if the model already has stacked LoRA layers, a target name matches no module, a matching
            module is not a linear layer, or `stage1_merge` is asked of a quantised base.
    """
    if any(isinstance(m, StackedLoraLinear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already has stacked LoRA layers")
    targets = {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in config.target_modules}
    missing = set(config.target_modules) - {n.rsplit(".", 1)[-1] for n in targets}
    if missing:
        present = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"stacked LoRA target module(s) {sorted(missing)} not found in {type(model).__name__}; "
            f"its linear layers are named {present}"
        )
    not_linear = sorted(n for n, m in targets.items() if not isinstance(m, nn.Linear))
    if not_linear:
        raise ValueError(f"stacked LoRA targets must be nn.Linear layers; these are not: {not_linear[:5]}")
    if config.stage1_merge and any(not m.weight.dtype.is_floating_point for m in targets.values()):
        raise ValueError("stage1_merge needs a float base model: re-quantising W0 + s1 B1 A1 would be lossy")
    model.requires_grad_(False)
    for name, module in targets.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, StackedLoraLinear(module, config=config))
    return model


def start_stage2(model: nn.Module, config: StackedLoraConfig | None = None) -> nn.Module:
    """Freeze A1, B1 on every stacked layer and add trainable A2, B2.

    Args:
        model: A model prepared by `apply_stacked_lora` (stage 1 trained, or loaded).
        config: Stage-2 settings (r2, alpha2, f, f_space, init_scale, stage1_merge, dropout) to use instead
            of the applied ones, e.g. a trial's on top of a cached stage 1; stage-1 fields must match.

    Raises:
        ValueError: if stage 2 already started, the model is merged, `config` changes stage 1, or
            `stage1_merge` is asked of a quantised layer; checked on every layer before any changes.
    """
    layers = stacked_layers(model).values()
    for layer in layers:
        layer.check_stage2(config or layer.config)
    for layer in layers:
        layer.start_stage2(config)
    return model


def merge_stacked_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight, so inference costs what the base model costs.

    Raises:
        ValueError: for a quantised base, an activation-space f other than identity, or a merged model.
    """
    layers = stacked_layers(model).values()
    for layer in layers:  # check all before changing any, so a refusal leaves no half-merged model
        layer.check_mergeable()
    for layer in layers:
        layer.merge()
    return model


def unmerge_stacked_lora(model: nn.Module) -> nn.Module:
    """Undo `merge_stacked_lora` (W0 comes back up to float rounding)."""
    for layer in stacked_layers(model).values():
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put the plain base layers back: a model with no trace of the adapter, for export."""
    merge_stacked_lora(model)
    for name, layer in stacked_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base_layer)
    return model


def stacked_lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors (A1, B1, and in stage 2 A2, B2 and the frozen init copies), keyed by full name."""
    state = {}
    for name, layer in stacked_layers(model).items():
        for key, tensor in layer.state_dict(keep_vars=True).items():
            if key.startswith("lora_"):
                state[f"{name}.{key}"] = tensor
    return state


def _stage(model: nn.Module) -> int:
    stages = {layer.stage for layer in stacked_layers(model).values()}
    if len(stages) != 1:
        raise ValueError(f"stacked LoRA layers are in mixed stages {sorted(stages)}")
    return stages.pop()


def save_stacked_lora(
    model: nn.Module, path: str | Path, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write `adapter_config.json` and `adapter_model.safetensors` into the folder `path`.

    Args:
        model: A model with stacked LoRA layers (merged or not: the adapter tensors are the same).
        path: The folder; created if missing.
        base_model_name_or_path: Recorded for users; defaults to the model's `name_or_path` if it has one.

    Returns:
        The folder.
    """
    path = Path(path)
    layers = stacked_layers(model)
    config = next(iter(layers.values())).config
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model, "name_or_path", None) or None
    meta = {
        "peft_type": PEFT_TYPE,
        "stage": _stage(model),
        "base_model_name_or_path": base_model_name_or_path,
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(meta | config.to_dict(), indent=2) + "\n")
    tensors = {k: v.detach().contiguous().cpu() for k, v in stacked_lora_state_dict(model).items()}
    save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    return path


def read_stacked_lora_config(path: str | Path) -> tuple[StackedLoraConfig, int]:
    """The config and stage saved in the folder `path`.

    Raises:
        FileNotFoundError: if the folder lacks `adapter_config.json`.
        ValueError: if the file is not a stacked LoRA adapter or holds a bad setting.
    """
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
    values = json.loads(file.read_text())
    peft_type = values.pop("peft_type", None)
    if peft_type != PEFT_TYPE:
        raise ValueError(f"{file} holds a {peft_type!r} adapter, not a {PEFT_TYPE!r} one")
    stage = values.pop("stage", None)
    if stage not in (1, 2):
        raise ValueError(f"{file} has stage {stage!r}; expected 1 or 2")
    values.pop("base_model_name_or_path", None)
    return StackedLoraConfig.from_dict(values), stage


def _copy_into(targets: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Copy `tensors` into `targets` (same keys, same shapes)."""
    missing, unexpected = sorted(set(targets) - set(tensors)), sorted(set(tensors) - set(targets))
    if missing or unexpected:
        raise ValueError(
            f"{file} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    with torch.no_grad():
        for key, target in targets.items():
            if target.shape != tensors[key].shape:
                raise ValueError(
                    f"{file}: {key} has shape {tuple(tensors[key].shape)}, model has {tuple(target.shape)}"
                )
            target.copy_(tensors[key])


def load_stacked_lora(model: nn.Module, path: str | Path, *, is_trainable: bool = False) -> nn.Module:
    """Apply the adapter saved in `path` to a fresh base `model` and load its tensors.

    Args:
        model: The base model the adapter was trained on (float or bitsandbytes-quantised), without
            stacked layers. On an error past reading the files it is left wrapped: load into a fresh one.
        path: A folder written by `save_stacked_lora`.
        is_trainable: Leave the saved stage's adapter trainable (to resume); else every parameter is frozen.

    Raises:
        FileNotFoundError: if the folder lacks either file.
        ValueError: if the folder's adapter does not fit the model (see `read_stacked_lora_config`).
    """
    config, stage = read_stacked_lora_config(path)
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    tensors = load_file(str(file), device="cpu")
    apply_stacked_lora(model, config)
    # stage 1 goes in first: with stage1_merge, starting stage 2 folds the loaded A1, B1 into W0
    stage1 = stacked_lora_state_dict(model)
    _copy_into(stage1, {k: v for k, v in tensors.items() if k in stage1 or stage == 1}, file)
    if stage == 2:
        start_stage2(model)
        stage2 = {k: v for k, v in stacked_lora_state_dict(model).items() if k not in stage1}
        _copy_into(stage2, {k: v for k, v in tensors.items() if k not in stage1}, file)
    for layer in stacked_layers(model).values():
        layer.set_trainable(is_trainable)
    return model
