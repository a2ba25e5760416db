"""Pixel-environment configuration (no MuJoCo import: config loading stays light)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
STATE_DIM = 39
ACTION_DIM = 4


class EnvConfig(BaseModel):
    """Pixel-environment knobs (``env:`` in params.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: str = Field("corner", description="Meta-World camera name")
    image_size: int = Field(64, ge=8, le=1024, description="square observation size in pixels")
    action_repeat: int = Field(1, ge=1, le=16)
    frame_stack: int = Field(3, ge=1, le=16)
    episode_length: int = Field(256, ge=1, le=100_000, description="environment steps per episode")
    randomize: bool = Field(True, description="resample object/goal positions at every reset")
    fast_render: bool = Field(True, description="no shadows, no offscreen multisampling (~6x faster)")

    @model_validator(mode="after")
    def _check(self) -> "EnvConfig":
        if self.camera not in CAMERAS:
            raise ValueError(f"camera {self.camera!r} is not a Meta-World camera; valid: {', '.join(CAMERAS)}")
        if self.episode_length % self.action_repeat:
            raise ValueError(
                f"episode_length ({self.episode_length}) must be a multiple of action_repeat ({self.action_repeat})"
            )
        return self

    @property
    def agent_steps(self) -> int:
        return self.episode_length // self.action_repeat
