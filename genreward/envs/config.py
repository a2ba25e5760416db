"""Pixel-environment configuration (no MuJoCo import: config loading stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from genreward.fields import Section

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
# The dimensions of Meta-World v3, the same for every task (stated here so that config-level code
# needs no MuJoCo import): its observation state is 39-D (hand position, gripper opening, two
# objects' positions and quaternions = 18 values, the previous step's 18 again, goal position)
# and its action space is Box(-1, 1, (4,)): hand dx, dy, dz and gripper effort. The pixel env
# declares its spaces with them (tests/test_envs.py checks a live env's state against STATE_DIM).
STATE_DIM = 39
ACTION_DIM = 4
# What an agent learns from the env's own reward (rl.env_reward; genreward/envs/reward_setting.py).
EnvReward = Literal["dense", "sparse", "success"]


class EnvConfig(Section):
    """Pixel-environment knobs (``env:`` in params.yaml)."""

    camera: str = Field(
        "corner",
        description="Meta-World camera that renders the observations",
        json_schema_extra={"choices": list(CAMERAS)},
    )
    image_size: int = Field(64, ge=8, le=1024, description="square observation size in pixels")
    action_repeat: int = Field(
        1, ge=1, le=16, description="env steps per agent action (the action is repeated, rewards summed)"
    )
    frame_stack: int = Field(3, ge=1, le=16, description="consecutive frames stacked into one agent observation")
    episode_length: int = Field(
        256,
        ge=1,
        le=100_000,
        description="environment steps per episode (truncated exactly here); a multiple of action_repeat",
    )
    randomize: bool = Field(
        True, description="resample object and goal positions at every reset (false: one fixed layout per task)"
    )
    fast_render: bool = Field(
        True,
        description="render without shadows, offscreen multisampling and reflections "
        "(much faster on a software rasteriser; benchmarks/render_settings.py)",
    )

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
