"""Reward configuration (``rewards:`` in params.yaml) and the registry of reward terms and methods. No torch import."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genreward.rewards.base import TermSpec

# The reward terms: name -> builder, weight knob in `rewards`, schedule (genreward/rewards/terms.py).
TERMS: dict[str, TermSpec] = {
    "video": TermSpec("genreward.rewards.terms:VideoReward.build", weight="alpha"),
    "frame": TermSpec("genreward.rewards.terms:FrameReward.build", weight="beta", per_step="frame_per_step"),
    "clip": TermSpec("genreward.rewards.terms:CLIPReward.build", weight="clip_weight", schedule="step"),
    "goal_pixels": TermSpec("genreward.rewards.terms:GoalDistance.build_pixels", weight="goal_distance_weight"),
    "goal_latent": TermSpec("genreward.rewards.terms:GoalDistance.build_latent", weight="goal_distance_weight"),
    "tadpole": TermSpec(
        "genreward.rewards.diffusion_terms:TadpoleReward.build", weight="tadpole_weight", schedule="step"
    ),
    "viper": TermSpec("genreward.rewards.diffusion_terms:ViperReward.build", weight="viper_weight"),
}
# The methods (`rl.methods`): name -> the terms added to the env reward. The one list of method names.
METHODS: dict[str, tuple[str, ...]] = {
    "genreward": ("video", "frame"),
    "video_only": ("video",),
    "frame_only": ("frame",),
    "env_only": (),
    "clip_reward": ("clip",),
    # baselines (docs/rewards.md): diffusion rewards on the same video model, and the naive goal-frame floor
    "tadpole": ("tadpole",),
    "viper": ("viper",),
    "goal_distance": ("goal_pixels",),
    "goal_distance_latent": ("goal_latent",),
}

# Reference rows of the reward benchmark (stage evaluate_rewards), not methods an agent trains with.
REFERENCES: dict[str, str] = {
    "dense": "Meta-World's dense reward (the ceiling)",
    "random": "seeded Gaussian noise per step (the floor)",
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


def build_terms(names, cfg, task: str, inputs, device: str) -> tuple[dict, dict[str, str]]:
    """The named terms of ``task``, each built through its registry entry from the run's config
    and the stage's input paths (each reads only what it needs); plus the hashes of what they read."""
    terms, hashes = {}, {}
    for name in names:
        terms[name], term_hashes = term_spec(name).builder()(cfg, task, inputs, device)
        hashes.update(term_hashes)
    return terms, hashes


class DiffusionTermConfig(BaseModel):
    """The video model as a scorer (``rewards.diffusion``): the tadpole and viper baselines.

    Timesteps are fractions of the scheduler's training timesteps (t = round(f·(T−1))).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tadpole_noise: tuple[float, float] = Field(
        (0.4, 0.5), description="tadpole: range of t/T, drawn once per episode (with one noise draw)"
    )
    tadpole_align: float = Field(100.0, gt=0.0, description="tadpole: w_a in symlog(w_a·‖ε̂_c − ε̂_u‖²)")
    tadpole_recon: float = Field(100.0, gt=0.0, description="tadpole: w_r in symlog(w_r·(‖ε̂_u − ε‖² − ‖ε̂_c − ε‖²))")
    viper_noise: tuple[float, ...] = Field(
        (0.1, 0.3, 0.5, 0.7, 0.9), min_length=1, description="viper: the fixed t/T of the denoising lower bound"
    )
    seed: int = Field(0, ge=0, description="noise of both terms (tadpole: with the episode's first frame)")

    @field_validator("tadpole_noise")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, got {list(v)}")
        return v

    @field_validator("viper_noise")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0.0 <= f <= 1.0 for f in v):
            raise ValueError(f"fractions of the training timesteps must lie in [0, 1], got {list(v)}")
        return v


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
        0.25, ge=0.0, description="weight β of the frame-level FB reward (paper code: 1e-5 on the raw F·z)"
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
    video_baseline: Literal["none", "reset"] = Field(
        "reset",
        description="video term: none = cosine of the latents (the paper); reset = cosine of what moved, the "
        "window's latent minus a still clip of the reset frame against the goal's minus its first frame",
    )
    video_score: Literal["cosine", "progress"] = Field(
        "progress",
        description="video term: cosine = cosine of the window's latent and the goal video's (the paper); "
        "progress = how far along the goal video the window's newest frame is (soft-argmax over the goal "
        "frames of the cosine of single-frame latents, as a fraction of the video, in [0, 1])",
    )
    video_temperature: float = Field(
        0.2, gt=0.0, le=10.0, description="softmax temperature over cosines of video_score=progress"
    )
    normalize: bool = Field(True, description="running z-score of each generated term before weighting")
    goal_distance_weight: float = Field(1.0, ge=0.0, description="weight of the goal-frame distance baseline")
    tadpole_weight: float = Field(1.0, ge=0.0, description="weight of the tadpole baseline (Video-TADPoLe-style)")
    viper_weight: float = Field(1.0, ge=0.0, description="weight of the viper baseline (VIPER-style likelihood)")
    diffusion: DiffusionTermConfig = DiffusionTermConfig()


class BenchmarkConfig(BaseModel):
    """Stage evaluate_rewards (``benchmark:``): every method scored offline on the probe episodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: tuple[str, ...] = Field(
        (
            "genreward",
            "video_only",
            "frame_only",
            "tadpole",
            "viper",
            "goal_distance",
            "goal_distance_latent",
            "random",
            "dense",
        ),
        min_length=1,
        description="reward methods (rl.methods names) and the references random (floor) and dense (ceiling)",
    )
    stride: int = Field(16, ge=1, description="evaluation steps: transitions t with (t+1) % stride == 0")
    confusion: bool = Field(True, description="score each task's reward on the other tasks' expert episodes")
    seed: int = Field(0, ge=0, description="seed of the random-reward floor")
    beta_sweep: tuple[float, ...] = Field(
        (0.0, 0.1, 0.25, 0.5, 1.0),
        description="frame weights β the combined reward (genreward, α as set) is also scored with, from the "
        "same raw terms (report section beta_sweep); choose β on a held-out probe set (another probes.seed)",
    )

    @field_validator("beta_sweep")
    @classmethod
    def _betas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(b < 0 or not math.isfinite(b) for b in v):
            raise ValueError(f"frame weights must be finite and >= 0, got {list(v)}")
        return tuple(sorted(set(v)))

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            if m not in METHODS and m not in REFERENCES:
                raise ValueError(f"unknown method {m!r}; choose from {', '.join([*METHODS, *REFERENCES])}")
            if m in METHODS and not METHODS[m]:
                raise ValueError(f"{m!r} adds no generated reward (its ceiling is the reference 'dense')")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate methods in {list(v)}")
        return v
