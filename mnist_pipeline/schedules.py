"""Epoch-level policies: the learning-rate schedule and early stopping (plain Python, no TensorFlow).

Both keep their state in a small dict, so a checkpoint can save it and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class LearningRateSchedule:
    """The learning rate through training: constant, step decay, cosine decay or reduce-on-plateau, after an
    optional linear warm-up.

    `rate(position)` is the rate at `position` epochs into training (fractional within an epoch: the trainer
    asks for every step's rate before each epoch); `observe(val_loss)` after each epoch validates. Warm-up and
    cosine move the rate every step (a per-epoch staircase wastes much of a short run); step decay and
    reduce-on-plateau hold one rate through each epoch, as they are defined.
    """

    name: str
    base: float  # the configured learning rate
    epochs: int
    step_size: int = 10
    factor: float = 0.1
    patience: int = 3
    min_learning_rate: float = 0.0
    warmup_epochs: int = 0
    # reduce-on-plateau state
    current: float | None = None
    best: float | None = None
    wait: int = 0

    def rate(self, position: float) -> float:
        if position < self.warmup_epochs:  # from 0 up to the rate the schedule proper starts at
            return self._scheduled(self.warmup_epochs) * position / self.warmup_epochs
        return self._scheduled(position)

    def _scheduled(self, position: float) -> float:
        if self.name == "step":
            return max(self.base * self.factor ** (int(position) // self.step_size), self.min_learning_rate)
        if self.name == "cosine":  # from base after warm-up down to min_learning_rate at the end of training
            progress = min((position - self.warmup_epochs) / max(self.epochs - self.warmup_epochs, 1), 1.0)
            span = self.base - self.min_learning_rate
            return self.min_learning_rate + span * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "reduce_on_plateau":
            return self.current if self.current is not None else self.base
        return self.base

    def observe(self, val_loss: float) -> None:
        if self.name != "reduce_on_plateau":
            return
        if self.current is None:
            self.current = self.base
        if self.best is None or val_loss < self.best:
            self.best, self.wait = val_loss, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.current, self.wait = max(self.current * self.factor, self.min_learning_rate), 0

    def state(self) -> dict:
        return {"current": self.current, "best": self.best, "wait": self.wait}

    def load_state(self, state: dict) -> None:
        self.current, self.best, self.wait = state["current"], state["best"], state["wait"]


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    monitor: str  # val_loss (lower is better) | val_accuracy (higher is better)
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    wait: int = 0

    def should_stop(self, value: float) -> bool:
        sign = -1.0 if self.monitor == "val_loss" else 1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]
