"""Reward configuration (``rewards:`` in params.yaml) and the registry of reward terms and methods. No torch import."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from genreward.rewards.base import TermSpec

# The reward terms: name -> builder, weight knob in `rewards`, schedule (genreward/rewards/terms.py).
TERMS: dict[str, TermSpec] = {
    "video": TermSpec("genreward.rewards.terms:VideoReward.build", weight="alpha"),
    "frame": TermSpec("genreward.rewards.terms:FrameReward.build", weight="beta", per_step="frame_per_step"),
    "clip": TermSpec("genreward.rewards.terms:CLIPReward.build", weight="clip_weight", schedule="step"),
}
# The methods (`rl.methods`): name -> the terms added to the env reward. The one list of method names.
METHODS: dict[str, tuple[str, ...]] = {
    "genreward": ("video", "frame"),
    "video_only": ("video",),
    "frame_only": ("frame",),
    "env_only": (),
    "clip_reward": ("clip",),
}


def method_terms(method: str) -> tuple[str, ...]:
    """The terms of ``method``; an unknown method fails naming the valid ones."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def term_spec(name: str) -> TermSpec:
    if name not in TERMS:
        raise ValueError(f"unknown reward term {name!r}; registered: {', '.join(TERMS)}")
    return TERMS[name]


class RewardConfig(BaseModel):
    """r = env_weight·r_env + α·r_video + β·r_FB (+ γ_clip·r_CLIP for the baseline): Eq. 10 of arXiv 2512.00961.

    The video and frame terms are paid every ``interval`` agent steps (Δt), the frame term every
    step with ``frame_per_step``; ``normalize`` z-scores each term with running statistics
    before weighting (the paper's raw scales differ by orders of magnitude).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(
        1.0, ge=0.0, description="weight α of the video-level reward (paper code: 0.01 on the raw cosine)"
    )
    beta: float = Field(
        1.0, ge=0.0, description="weight β of the frame-level FB reward (paper code: 1e-5 on the raw F·z)"
    )
    clip_weight: float = Field(
        1.0, ge=0.0, description="weight of the per-step CLIP cosine to the prompt (clip_reward baseline)"
    )
    env_weight: float = Field(1.0, ge=0.0, description="weight of the env's dense reward (0: generated reward only)")
    interval: int = Field(128, ge=1, description="Δt: agent steps between video/frame rewards")
    window: int = Field(
        128, ge=2, description="agent steps in the video-reward window (subsampled to latents.num_frames)"
    )
    frame_per_step: bool = Field(False, description="pay the frame-level reward every step instead of every Δt")
    normalize: bool = Field(True, description="running z-score of each generated term before weighting")
