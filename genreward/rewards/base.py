"""The reward-term interface and its registry entry. No torch or numpy import (config loading stays light).

A term is a class with the :class:`Term` interface (scores from stored frames, an identity, a
``build`` from config and artifacts) plus one :class:`TermSpec` in ``TERMS``
(``genreward/rewards/config.py``): its builder, its weight knob and its schedule.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

# interval: every `rewards.interval` steps, at transitions t with (t+1) % interval == 0; step: every step
Schedule = Literal["interval", "step"]


class RewardInputError(ValueError):
    """Frames, actions or goal arrays of the wrong shape or type."""


class Term(Protocol):
    """One reward term, a pure function of an episode's stored frames (and actions)."""

    name: str

    def scores(self, frames: np.ndarray, actions: np.ndarray, paid_steps: np.ndarray, window: int) -> np.ndarray:
        """float32 [L] scores of an episode's transitions from its frames uint8 [L+1, 3, H, W] and
        actions [L, A]: computed at ``paid_steps`` (transition indices), zero elsewhere. ``window``
        is ``rewards.window`` (frames in a window-scored term's window)."""
        ...

    def identity(self) -> dict:
        """What determines the scores (models, goal hashes), JSON-able; recorded in run.json."""
        ...

    @classmethod
    def build(cls, cfg, task: str, inputs: dict[str, Path], device: str) -> tuple[Term, dict[str, str]]:
        """The term for ``task`` from the run's config (a ``genreward.config.Config``) and input
        paths (the finetune_rl stage's ``inputs``), reading only what it needs; plus the hashes
        of the inputs it read. A missing input fails with a message naming the stage to run."""
        ...


TermBuilder = Callable[[Any, str, "dict[str, Path]", str], "tuple[Term, dict[str, str]]"]


@dataclass(frozen=True)
class TermSpec:
    """A registered term: how to build it, which ``rewards`` knob weights it, and when it is paid."""

    build: str | TermBuilder  # a builder or "module:Class.build" (imported when a run needs the term)
    weight: str  # the float knob in `rewards` that weights the term
    schedule: Schedule = "interval"
    per_step: str | None = None  # a bool knob in `rewards` that switches the term to "step"

    def builder(self) -> TermBuilder:
        if callable(self.build):
            return self.build
        module, _, attr = self.build.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def schedule_for(self, cfg) -> Schedule:
        """The schedule under ``cfg`` (a ``RewardConfig``)."""
        return "step" if self.per_step is not None and getattr(cfg, self.per_step) else self.schedule

    def weight_for(self, cfg) -> float:
        return float(getattr(cfg, self.weight))
