"""One stacked LoRA layer: `W = W0 + s1 B1 A1 + f(s2 B2 A2) - f(s2 B2_0 A2_0)`, with s = alpha / r.

Stage 1 is a plain LoRA (`y = x W0^T + s1 (x A1^T) B1^T + b`; A1 Kaiming-uniform, B1 zero, as in PEFT).
Stage 2 freezes A1, B1 and trains A2 (r2, in) and B2 (out, r2) through an elementwise `f`:

* weight space (`f_space="weight"`): f acts on the (out, in) matrix s2 B2 A2. The update does not depend
  on the input: a fixed nonlinear reparametrisation of a weight delta, so it folds into W0 for inference.
* activation space (`f_space="activation"`): `y += s2 f(x A2^T) B2^T`. The update depends on the input,
  like a tiny bottleneck MLP beside the layer; it never builds an (out, in) matrix but cannot be merged
  (except for f = identity, where both spaces are the same linear LoRA).

Initialisation (why the constant `- f(s2 B2_0 A2_0)`). With PEFT's zero B2, f(s2 B2 A2) = f(0) and the
gradient reaching B2 is s2 (f'(0) G) A2^T, G = dL/dW: torch's relu'(0) = 0, so relu's A2 and B2 would never
move. Weight space therefore draws B2 from N(0, init_scale^2) (1e-3 by default: about one AdamW step at
lr 1e-3, so training starts near the origin, where f's kink matters) and subtracts the frozen constant
f(s2 B2_0 A2_0) of the initial factors (entries of order 1e-4). A fresh stage 2 then leaves outputs exactly
unchanged (f(M) - f(M) is bit-for-bit zero at init) and every f gets non-zero gradients in A2 and B2.
The constant is recomputed each forward from frozen copies of B2_0 and A2_0 (buffers of r2 (in + out)
numbers, saved with the adapter) instead of kept as an (out, in) buffer per layer, which would cost as
much memory as W0 itself (4x an 8-bit W0); the recompute is a rank-r2 product without gradient, about
r2 / tokens of the layer's own matmul. `init_scale=0` drops the constant and keeps PEFT's zero B2 (allowed
only where f'(0) != 0). Activation space needs none of this: with B2 = 0 the gradient of B2,
s2 f(x A2^T)^T G, is non-zero for every f, so it keeps PEFT's init.

Cost. Weight space computes its (out, in) delta once per forward, not per token, and folds it into the
weight: `F.linear(x, W0 + s1 B1 A1 + delta2)`, one full matmul forward and two backward (dx, and the
(out, in) weight gradient that f's chain rule needs), where `F.linear(x, W0) + F.linear(x, delta)` takes
two and three (bench/bench_stacked.py times both). On a quantised base (bitsandbytes Linear8bitLt or
Linear4bit) W0 is never dequantised: the quantised layer gives the base output, stage 1 adds its low-rank
path and `F.linear(x, delta2)` is added. The same unfolded form serves while dropout is active, since
dropout touches only the trained adapter's input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.methods.stacked_lora.config import StackedLoraConfig


def _input_dependent_error(f: str) -> ValueError:
    return ValueError(
        f"an activation-space stacked LoRA with f={f!r} cannot be merged: s2 f(x A2^T) B2^T is not a fixed "
        "weight matrix; keep it unmerged or use f_space='weight'"
    )


class StackedLoraLinear(nn.Module):
    """A linear layer (float or bitsandbytes-quantised) with a LoRA and, after `start_stage2`, an f-LoRA.

    Attributes:
        base_layer: The wrapped layer; its parameters are never trained.
        stage: 1 while A1, B1 train; 2 once they are frozen and A2, B2 train.
        merged: Whether the adapter is folded into `base_layer.weight` (forward is then the base alone).
        stage1_merged: Whether stage 1 was folded into W0 for good (`config.stage1_merge`).
    """

    def __init__(self, base_layer: nn.Linear, *, config: StackedLoraConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"stacked LoRA wraps nn.Linear layers, got {type(base_layer).__name__}")
        self.base_layer = base_layer.requires_grad_(False)
        self.config = config
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        weight = base_layer.weight
        # bitsandbytes keeps int8 / packed 4-bit weights: its layer gives the base output, adapters are fp32
        self.quantized = not weight.dtype.is_floating_point
        factory = {"device": weight.device, "dtype": torch.float32 if self.quantized else weight.dtype}
        self.lora_A1 = nn.Parameter(torch.empty(config.r1, self.in_features, **factory))  # (r1, in)
        self.lora_B1 = nn.Parameter(torch.zeros(self.out_features, config.r1, **factory))  # (out, r1)
        nn.init.kaiming_uniform_(self.lora_A1, a=math.sqrt(5))  # PEFT's (and nn.Linear's) init for A
        for name in ("lora_A2", "lora_B2"):
            self.register_parameter(name, None)
        for name in ("lora_A2_init", "lora_B2_init"):
            self.register_buffer(name, None)
        self.stage = 1
        self.merged = False
        self.stage1_merged = False
        self.train(base_layer.training)  # a wrapper made inside an eval-mode model must not drop out

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (T5's feed-forward reads `wo.weight.dtype`)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias."""
        return self.base_layer.bias

    def start_stage2(self, config: StackedLoraConfig | None = None) -> None:
        """Freeze A1, B1 and add a trainable stage-2 adapter (see the module docstring for its init).

        Args:
            config: Stage-2 settings to use instead of the current ones; its stage-1 fields must match.

        Raises:
            ValueError: if stage 2 already started, the layer is merged, or `config` changes stage 1.
        """
        config = config or self.config
        self.check_stage2(config)
        self.config = config
        self.lora_A1.requires_grad_(False)
        self.lora_B1.requires_grad_(False)
        factory = {"device": self.lora_A1.device, "dtype": self.lora_A1.dtype}
        self.lora_A2 = nn.Parameter(torch.empty(config.r2, self.in_features, **factory))  # (r2, in)
        self.lora_B2 = nn.Parameter(torch.zeros(self.out_features, config.r2, **factory))  # (out, r2)
        nn.init.kaiming_uniform_(self.lora_A2, a=math.sqrt(5))
        if config.f_space == "weight" and config.init_scale > 0:
            nn.init.normal_(self.lora_B2, std=config.init_scale)
            self.lora_A2_init = self.lora_A2.detach().clone()
            self.lora_B2_init = self.lora_B2.detach().clone()
        if config.stage1_merge:
            with torch.no_grad():
                self.base_layer.weight += self._stage1_delta().to(self.base_layer.weight.dtype)
            self.stage1_merged = True
        self.stage = 2

    def check_stage2(self, config: StackedLoraConfig) -> None:
        """Raise the reason stage 2 with `config` cannot start on this layer, if there is one."""
        if self.stage == 2:
            raise ValueError("stacked LoRA stage 2 has already started on this layer")
        if self.merged:
            raise ValueError("cannot start stage 2 on a merged stacked LoRA layer; unmerge it first")
        if config.stage1_fields() != self.config.stage1_fields():
            raise ValueError(
                f"stage-2 config's stage-1 settings {config.stage1_fields()} differ from the trained "
                f"stage 1's {self.config.stage1_fields()}"
            )
        if config.stage1_merge and self.quantized:
            raise ValueError(
                "stage1_merge needs a float base layer: re-quantising W0 + s1 B1 A1 would be lossy"
            )

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        return self.config.apply_f(t, out_features=self.out_features)

    def _stage1_delta(self) -> torch.Tensor:
        """s1 B1 A1, (out, in)."""
        return torch.mm(self.lora_B1, self.lora_A1) * self.config.scaling1

    def _f_of_product(self, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """f(s2 B A), (out, in); one code path for the factors and the offset keeps them bit-equal at init."""
        return self._f(torch.mm(b * self.config.scaling2, a))

    def stage2_delta(self) -> torch.Tensor:
        """Weight-space stage 2: f(s2 B2 A2) - f(s2 B2_0 A2_0), (out, in), differentiable in A2 and B2."""
        delta = self._f_of_product(self.lora_B2, self.lora_A2)
        if self.lora_B2_init is not None:
            with torch.no_grad():
                offset = self._f_of_product(self.lora_B2_init, self.lora_A2_init)
            delta = delta - offset
        return delta

    def stage2_update_and_product(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(f(s2 B2 A2), s2 B2 A2), each (out, in): what stage 2 learned, before the frozen init constant
        f(s2 B2_0 A2_0) is subtracted, and its low-rank product. The first is None where the update
        depends on the input (activation space, f not the identity)."""
        product = torch.mm(self.lora_B2 * self.config.scaling2, self.lora_A2)
        if self.config.f_space == "weight":
            return self._f(product), product
        return (product if self.config.f == "identity" else None), product

    def delta_weight(self) -> torch.Tensor:
        """Everything the adapter adds to W0 (the stage-1 term unless already folded in), (out, in).

        Raises:
            ValueError: for an activation-space stage 2 with a nonlinear f: its update depends on the input.
        """
        factory = {"device": self.lora_A1.device, "dtype": self.lora_A1.dtype}
        delta = torch.zeros(self.out_features, self.in_features, **factory)
        if not self.stage1_merged:
            delta = delta + self._stage1_delta()
        if self.stage == 2:
            if self.config.f_space == "weight":
                delta = delta + self.stage2_delta()
            elif self.config.f == "identity":  # s2 (x A2^T) B2^T == x (s2 B2 A2)^T
                delta = delta + torch.mm(self.lora_B2, self.lora_A2) * self.config.scaling2
            else:
                raise _input_dependent_error(self.config.f)
        return delta

    def check_mergeable(self) -> None:
        """Raise the reason this layer cannot be merged, if there is one.

        Raises:
            ValueError: if already merged, the base is quantised, or the update is input-dependent.
        """
        if self.merged:
            raise ValueError("stacked LoRA layer is already merged")
        if self.quantized:
            raise ValueError(
                f"cannot merge stacked LoRA into a quantised {type(self.base_layer).__name__}: re-quantising "
                "W0 + delta would be lossy; load the base in float to merge"
            )
        if self.stage == 2 and self.config.f_space == "activation" and self.config.f != "identity":
            raise _input_dependent_error(self.config.f)

    def merge(self) -> None:
        """Fold the adapter into W0, so a forward costs exactly the base layer's (see `check_mergeable`)."""
        self.check_mergeable()
        with torch.no_grad():
            weight = self.base_layer.weight
            weight += self.delta_weight().to(weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Subtract the merged adapter from W0 again (exact up to float rounding).

        Raises:
            ValueError: if the layer is not merged.
        """
        if not self.merged:
            raise ValueError("stacked LoRA layer is not merged")
        with torch.no_grad():
            weight = self.base_layer.weight
            weight -= self.delta_weight().to(weight.dtype)
        self.merged = False

    def adapter_parameters(self) -> list[nn.Parameter]:
        """A1, B1 and, in stage 2, A2, B2."""
        return [p for p in (self.lora_A1, self.lora_B1, self.lora_A2, self.lora_B2) if p is not None]

    def set_trainable(self, trainable: bool) -> None:
        """Make the current stage's factors trainable (or not); the other stage's are always frozen."""
        current = (self.lora_A1, self.lora_B1) if self.stage == 1 else (self.lora_A2, self.lora_B2)
        for p in self.adapter_parameters():
            p.requires_grad_(trainable and any(p is c for c in current))

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout on the trained adapter's input (a function, not a module, so stage 2 can change p)."""
        return F.dropout(x, self.config.dropout, self.training) if self.config.dropout > 0 else x

    def _low_rank(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
        """scale * (x A^T) B^T: (..., in) -> (..., r) -> (..., out)."""
        return F.linear(F.linear(x, a), b) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        if self.merged:
            # training a merged layer would silently leave its adapter unchanged
            if (
                self.training
                and torch.is_grad_enabled()
                and any(p.requires_grad for p in self.adapter_parameters())
            ):
                raise RuntimeError(
                    "cannot train a merged stacked LoRA layer; call unmerge_stacked_lora first"
                )
            return self.base_layer(x)
        config = self.config
        if self.stage == 1:
            y = self.base_layer(x)
            xa = self._dropout(x.to(self.lora_A1.dtype))
            return y + self._low_rank(xa, self.lora_A1, self.lora_B1, config.scaling1).to(y.dtype)
        if config.f_space == "weight":
            delta = self.stage2_delta()  # (out, in), once per forward
            if not self.quantized and not (self.training and config.dropout > 0):
                weight = self.base_layer.weight
                if not self.stage1_merged:  # frozen, so no graph: W0 + s1 B1 A1 in one addmm
                    weight = torch.addmm(weight, self.lora_B1, self.lora_A1, alpha=config.scaling1)
                return F.linear(x, weight + delta, self.base_layer.bias)
        y = self.base_layer(x)
        xa = x.to(self.lora_A1.dtype)
        out = self._low_rank(xa, self.lora_A1, self.lora_B1, config.scaling1) if not self.stage1_merged else 0
        if config.f_space == "weight":
            out = out + F.linear(self._dropout(xa), delta)
        else:
            hidden = self._f(F.linear(self._dropout(xa), self.lora_A2))  # (..., r2)
            out = out + F.linear(hidden, self.lora_B2) * config.scaling2
        return y + out.to(y.dtype)

    def extra_repr(self) -> str:
        c = self.config
        text = f"stage={self.stage}, r1={c.r1}, alpha1={c.alpha1}"
        if self.stage == 2:
            text += f", r2={c.r2}, alpha2={c.alpha2}, f={c.f}, f_space={c.f_space}"
            text += f", omega={c.omega}" if c.omega != 1.0 else ""
            text += ", use_rslora" if c.use_rslora else ""
        return text + (", merged" if self.merged else "") + (", stage1_merged" if self.stage1_merged else "")
