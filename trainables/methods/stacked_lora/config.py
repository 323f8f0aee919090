"""Settings of a stacked LoRA adapter and the registry of the nonlinearities `f` it may apply.

The adapter computes `W = W0 + s1 B1 A1 + f(s2 B2 A2)` with `s = alpha / r` (see `layer.py`). Stage 1
(`r1`, `alpha1`, `target_modules`) is a plain LoRA; stage 2 (`r2`, `alpha2`, `f`, `omega`, `f_space`,
`init_scale`, `stage1_merge`, `use_rslora`) is what a study varies on top of one trained stage 1.

`f = "sin"` is Ji et al.'s sine-activated low-rank update (ICLR 2025), `sin(omega M) / g` with the gain
`g = sqrt(out)` of their LoRA experiments: an elementwise sine of a rank-r matrix is in general of higher
rank (the more so the larger omega), and dividing by g bounds every entry by 1 / sqrt(out) whatever omega
is, so raising the frequency raises the rank without raising the update's magnitude.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.training.setting_types import is_number

if TYPE_CHECKING:
    import torch


class TorchFunction:
    """A torch function named by its dotted path, imported at its first call.

    This module must load without torch: the method registry imports it for the config class, and the
    study's CLI validates method names before it imports torch (seconds). After the first call a call
    costs one attribute read more than the function itself.
    """

    __slots__ = ("path", "_function")

    def __init__(self, path: str) -> None:
        self.path = path
        self._function: Callable | None = None

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self._function is None:
            module, _, name = self.path.rpartition(".")
            self._function = getattr(importlib.import_module(module), name)
        return self._function(t)

    def __repr__(self) -> str:
        return self.path


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": _identity,
    "relu": TorchFunction("torch.nn.functional.relu"),
    "leaky_relu": TorchFunction("torch.nn.functional.leaky_relu"),  # negative slope 0.01
    "gelu": TorchFunction("torch.nn.functional.gelu"),  # exact (erf) form
    "tanh": TorchFunction("torch.tanh"),
    "silu": TorchFunction("torch.nn.functional.silu"),
    "sin": TorchFunction("torch.sin"),  # as sin(omega t) / sqrt(out): `StackedLoraConfig.apply_f`
}
"""Name -> elementwise function for `f`. Add an entry to offer another `f` (any name here validates; the
search space samples every name here)."""

PERIODIC = ("sin",)
"""The f that take a frequency `omega` and Ji et al.'s gain 1 / sqrt(out) (`StackedLoraConfig.apply_f`)."""

F_SPACES = ("weight", "activation")
"""Where f acts: on the (out, in) weight delta, or on the stage-2 adapter's (..., r2) hidden activations."""


def _value_and_slope_at_zero(f: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """f(0) and f'(0) as autograd computes them (torch's relu gives f'(0) = 0)."""
    import torch

    zero = torch.zeros(1, requires_grad=True)
    value = f(zero)
    (slope,) = torch.autograd.grad(value.sum(), zero)
    return value.item(), slope.item()


@dataclass
class StackedLoraConfig:
    """Hyperparameters of a stacked LoRA adapter; validated on construction."""

    r1: int = 8
    """Rank of the stage-1 adapter: A1 is (r1, in), B1 is (out, r1)."""
    alpha1: float = 16.0
    """Stage-1 scale numerator: s1 = alpha1 / r1."""
    r2: int = 8
    """Rank of the stage-2 adapter: A2 is (r2, in), B2 is (out, r2)."""
    alpha2: float = 16.0
    """Stage-2 scale numerator: s2 = alpha2 / r2."""
    f: str = "relu"
    """Name of the elementwise nonlinearity applied to the stage-2 term (a key of `ACTIVATIONS`)."""
    f_space: str = "weight"
    """'weight': f(s2 B2 A2) on the (out, in) matrix; 'activation': s2 f(x A2^T) B2^T (a tiny MLP)."""
    target_modules: tuple[str, ...] = ("q", "v")
    """Names of the linear layers that get an adapter (the last part of a module's dotted name)."""
    dropout: float = 0.0
    """Dropout on the input of the adapter being trained (stage 1, then stage 2)."""
    init_scale: float = 1e-3
    """Std of the Gaussian init of B2 in weight space; 0 gives PEFT's zero B2 (not for relu)."""
    stage1_merge: bool = False
    """Fold stage 1 into W0 when stage 2 starts (the COLA-style merged-then-LoRA baseline)."""
    omega: float = 1.0
    """Frequency of a periodic f: f = sin(omega t) / sqrt(out). Only `sin` takes it."""
    use_rslora: bool = False
    """PEFT's rsLoRA scale for stage 2, s2 = alpha2 / sqrt(r2) (stage 1 keeps alpha1 / r1)."""

    def __post_init__(self) -> None:
        for name in ("r1", "r2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"stacked LoRA rank {name} must be a positive integer, got {value!r}")
        for name in ("alpha1", "alpha2"):
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"stacked LoRA {name} must be a finite number > 0, got {value!r}")
        if self.f not in ACTIVATIONS:
            raise ValueError(f"unknown stacked LoRA f {self.f!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.f_space not in F_SPACES:
            raise ValueError(
                f"unknown stacked LoRA f_space {self.f_space!r}; choose from {', '.join(F_SPACES)}"
            )
        self.target_modules = self._parse_targets(self.target_modules)
        if not is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"stacked LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not is_number(self.init_scale) or not math.isfinite(self.init_scale) or self.init_scale < 0:
            raise ValueError(f"stacked LoRA init_scale must be a finite number >= 0, got {self.init_scale!r}")
        for name in ("stage1_merge", "use_rslora"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"stacked LoRA {name} must be True or False, got {getattr(self, name)!r}")
        if not is_number(self.omega) or not math.isfinite(self.omega) or self.omega <= 0:
            raise ValueError(f"stacked LoRA omega must be a finite number > 0, got {self.omega!r}")
        if self.omega != 1.0 and self.f not in PERIODIC:
            raise ValueError(f"stacked LoRA omega applies to f {', '.join(PERIODIC)} only, not f {self.f!r}")
        if self.f_space == "weight" and self.init_scale == 0:
            value, slope = _value_and_slope_at_zero(ACTIVATIONS[self.f])
            if slope == 0:
                raise ValueError(
                    f"stacked LoRA f {self.f!r} with init_scale 0 never trains: f'(0) = 0, so a zero B2 gets "
                    "no gradient; use init_scale > 0"
                )
            if value != 0:
                raise ValueError(
                    f"stacked LoRA f {self.f!r} with init_scale 0 would shift a fresh model: f(0) = {value}; "
                    "use init_scale > 0"
                )

    @staticmethod
    def _parse_targets(targets: Any) -> tuple[str, ...]:
        """A tuple of module names from a tuple, a list (JSON) or a 'q,v' / 'q+v' string (search spaces)."""
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.replace("+", ",").split(",")]
        if not isinstance(targets, (tuple, list)):
            raise ValueError(f"stacked LoRA target_modules must be a tuple of names, got {targets!r}")
        bad = [t for t in targets if not isinstance(t, str) or not t.isidentifier()]
        if not targets or bad:
            raise ValueError(f"stacked LoRA target_modules {tuple(targets)!r} must be non-empty module names")
        return tuple(targets)

    @property
    def scaling1(self) -> float:
        """s1 = alpha1 / r1."""
        return self.alpha1 / self.r1

    @property
    def scaling2(self) -> float:
        """s2 = alpha2 / r2 (alpha2 / sqrt(r2) with `use_rslora`)."""
        return self.alpha2 / (math.sqrt(self.r2) if self.use_rslora else self.r2)

    def apply_f(self, t: torch.Tensor, *, out_features: int) -> torch.Tensor:
        """f elementwise on `t`, for a layer with `out_features` outputs: `ACTIVATIONS[f](t)`, and for a
        periodic f Ji et al.'s `f(omega t) / sqrt(out_features)` (the module docstring says why)."""
        if self.f in PERIODIC:
            return ACTIVATIONS[self.f](self.omega * t) / math.sqrt(out_features)
        return ACTIVATIONS[self.f](t)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        values = dataclasses.asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StackedLoraConfig:
        """The config from `to_dict`'s output.

        Raises:
            ValueError: for a key that is not a field (rather than dropping it silently, as PEFT does).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"unknown stacked LoRA setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return cls(**values)

    def stage1_fields(self) -> dict[str, Any]:
        """The fields that define stage 1; a stage 2 can only stack on a stage 1 with equal values."""
        return {"r1": self.r1, "alpha1": self.alpha1, "target_modules": self.target_modules}
