"""Agent/exploration configuration (``exploration:`` in params.yaml). No torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExplorationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["rnd", "random"] = "rnd"
    episodes_per_task: int = Field(8, ge=1, le=1_000_000)
    baseline_random_episodes: int = Field(8, ge=0, le=1_000_000, description="random-agent episodes per task for the coverage comparison (0: none)")
    expert_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of noisy scripted-expert episodes (demo data! default off)")
    expert_noise: float = Field(0.3, ge=0.0, le=2.0)
    seed_steps: int = Field(512, ge=0, description="uniform-random env steps before the agent acts")
    update_every: int = Field(8, ge=1, description="vector steps between agent updates")
    batch_size: int = Field(64, ge=2, le=65536)
    lr: float = Field(1e-4, gt=0, le=1.0)
    feature_dim: int = Field(50, ge=4, le=4096)
    hidden_dim: int = Field(256, ge=8, le=8192)
    std_start: float = Field(1.0, ge=0.0, le=5.0)
    std_end: float = Field(0.2, ge=0.0, le=5.0)
    std_steps: int = Field(5000, ge=1)
    discount: float = Field(0.99, ge=0.0, le=1.0)
    chunk_rows: int = Field(257, ge=1, le=1_000_000, description="Zarr chunk length (rows)")


class FBConfig(BaseModel):
    """Forward-backward representation (``fb:`` in params.yaml). Paper values: d=64, hidden 512,
    batch 1024, lr 1e-4, tau 0.01."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    z_dim: int = Field(64, ge=2, le=1024)
    hidden_dim: int = Field(512, ge=8, le=8192)
    feature_dim: int = Field(50, ge=4, le=4096, description="encoder trunk size")
    batch_size: int = Field(1024, ge=4, le=65536)
    lr: float = Field(1e-4, gt=0, le=1.0)
    tau: float = Field(0.01, gt=0, le=1.0)
    discount: float = Field(0.98, ge=0.0, lt=1.0)
    ortho_coef: float = Field(1.0, ge=0.0)
    z_mix_ratio: float = Field(0.5, ge=0.0, le=1.0, description="share of z taken from B(dataset states)")
    actor_std: float = Field(0.2, ge=0.0, le=2.0)
    std_clip: float = Field(0.3, ge=0.0, le=2.0)
    aug_pad: int = Field(4, ge=0, le=16)
    # training schedule (stage pretrain_fb)
    updates: int = Field(1_000_000, ge=1, description="gradient updates")
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="episodes held out for the goal-reaching check")
    eval_stride: int = Field(4, ge=1, description="steps between evaluated states in the goal-reaching check")
