"""The goal-video generator interface and the spec of one video."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from genreward.store.hashing import hash_array


class GenerationError(RuntimeError):
    """A generator could not produce a video (missing weights, bad spec, ...)."""


@dataclass(frozen=True)
class VideoSpec:
    """Everything a generator needs for one goal video."""

    prompt: str
    num_frames: int
    height: int
    width: int
    seed: int = 0
    steps: int = 50
    guidance: float = 7.5
    negative_prompt: str = ""
    task: str | None = None  # Meta-World task (scripted backend, conditioning image)
    image: np.ndarray | None = field(default=None, repr=False)  # uint8 [H,W,3] conditioning frame

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise GenerationError("empty prompt: give each task a prompt under `prompts:` in params.yaml")
        for name in ("num_frames", "height", "width", "steps"):
            if int(getattr(self, name)) < 1:
                raise GenerationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image is not None:
            img = np.asarray(self.image)
            if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise GenerationError(f"conditioning image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")

    def cache_inputs(self) -> dict[str, Any]:
        """The spec's part of the cache key (the image by content hash)."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "task": self.task,
            "image": None if self.image is None else hash_array(np.asarray(self.image)),
        }


class GoalVideoGenerator(Protocol):
    name: str

    def identity(self) -> dict[str, Any]:
        """What, besides the spec, determines the output (model id + revision/weights hash, ...).

        Must be cheap: it is computed on every cache lookup and must not load a model.
        """

    def generate(self, spec: VideoSpec) -> np.ndarray:
        """Return uint8 ``[spec.num_frames, spec.height, spec.width, 3]``."""

    def describe(self) -> dict[str, Any]:
        """Attrs to record with the artifact."""
