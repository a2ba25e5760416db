"""Bounded knob types shared by the params sections (``typing.Annotated`` aliases). No torch import.

A knob typed with one of these carries its bounds in its type, so its declaration names only its
default and description: ``lr: Rate = Field(1e-4, description="...")``. Pydantic merges the
bounds into the field (``FieldInfo.metadata``): validation, error messages and
``genreward config --explain`` see them as if they were written in the ``Field``. A field that
uses an alias adds no bounds of its own (pydantic would list them before the alias's). The last
aliases are whole knobs (bounds and description) that two sections declare alike.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A params section: unknown keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]  # shares and probabilities
ProperFraction = Annotated[float, Field(ge=0.0, lt=1.0)]  # discounts, held-out shares
Rate = Annotated[float, Field(gt=0, le=1.0)]  # learning rates, Polyak rates
BatchSize = Annotated[int, Field(ge=2, le=65536)]  # transitions per update of an online agent
FeatureDim = Annotated[int, Field(ge=4, le=4096)]  # trunk width after a conv encoder
HiddenDim = Annotated[int, Field(ge=8, le=8192)]  # hidden width of an MLP
ActionNoise = Annotated[float, Field(ge=0.0, le=2.0)]  # std, clip or colour of the noise on actions in [-1, 1]
AnnealedStd = Annotated[float, Field(ge=0.0, le=5.0)]  # ends of a linearly annealed exploration-noise std

# The end of a DrQ-v2 agent's exploration-noise schedule: the same knobs in ``exploration`` and ``rl``.
StdEnd = Annotated[float, Field(ge=0.0, le=5.0, description="exploration-noise std after std_steps")]
StdSteps = Annotated[
    int, Field(ge=1, description="agent steps over which the noise std anneals from std_start to std_end")
]

# The video model's text conditioning: the same knob in ``video_model.from_scratch`` and ``video_model.lora``.
PromptDropout = Annotated[float, Field(ge=0.0, le=1.0, description="prompt dropout (classifier-free guidance)")]
