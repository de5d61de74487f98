"""Weight averaging: an exponential moving average of the model's parameters during training.

The averaged weights are what a checkpoint's model is (what probes, acting and export read); the
weights the optimizer moves stay in the checkpoint's training state, so a resumed run continues
both. Averaging smooths the step-to-step noise of a run's last stretch, where the learning rate
is small but not zero, at the cost of one copy of the parameters and one lerp per parameter a step.

The decay used at step t is min(decay, (1 + t) / (10 + t)), so the average follows the weights
closely early on instead of remembering their random start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """The running average of ``model``'s parameters (by name; buffers are not averaged)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average toward ``model``'s weights after optimiser step ``step`` (0-based)."""
        weight = 1 - self.decay_at(step)
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), weight)

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Take the averaged parameters from a model's state dict."""
        for name, value in self.shadow.items():
            value.copy_(state[name])

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """``model`` holds the averaged weights inside the block, its own again after it."""
        params = dict(model.named_parameters())
        own = {name: p.detach().clone() for name, p in params.items()}
        try:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(self.shadow[name])
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(own[name])
