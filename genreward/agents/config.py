"""Agent/exploration configuration (``exploration:`` in params.yaml). No torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExplorationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["rnd", "random"] = "rnd"
    episodes_per_task: int = Field(8, ge=1, le=1_000_000)
    baseline_random_episodes: int = Field(8, ge=0, le=1_000_000, description="random-agent episodes per task for the coverage comparison (0: none)")
    expert_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of noisy scripted-expert episodes (demo data! default off)")
    expert_noise: float = Field(0.3, ge=0.0, le=2.0)
    agent_per_task: bool = Field(True, description="a fresh RND agent per task (False: one agent carried across tasks)")
    noise_beta: float = Field(1.0, ge=0.0, le=2.0, description="exploration-noise colour: 0 white, 1 pink, 2 red")
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


class RLConfig(BaseModel):
    """Online RL fine-tuning with generated rewards (``rl:`` in params.yaml; stage finetune_rl).

    Runs are the product tasks × seeds × methods (a DVC ``matrix``). Methods: ``genreward``
    (video + frame rewards), ``video_only``, ``frame_only``, ``env_only`` (dense env reward, no
    prior) and ``clip_reward`` (per-step CLIP similarity to the prompt; needs CLIP weights).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(("pick-place-v3",), min_length=1, description="subset of `tasks` to fine-tune on")
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    methods: tuple[Literal["genreward", "video_only", "frame_only", "env_only", "clip_reward"], ...] = Field(
        ("genreward", "env_only"), min_length=1)
    agent: Literal["drqv2"] = Field("drqv2", description="online agent (DreamerV3: a later option behind the same interface)")
    steps: int = Field(100_000, ge=1, description="agent steps (env steps / action_repeat)")
    seed_steps: int = Field(4000, ge=0, description="uniform-random steps before the agent acts and learns")
    update_every: int = Field(2, ge=1, description="agent steps between updates")
    batch_size: int = Field(256, ge=2, le=65536)
    n_step: int = Field(3, ge=1, le=64)
    lr: float = Field(1e-4, gt=0, le=1.0)
    feature_dim: int = Field(50, ge=4, le=4096)
    hidden_dim: int = Field(1024, ge=8, le=8192)
    discount: float = Field(0.99, ge=0.0, lt=1.0)
    std_start: float = Field(1.0, ge=0.0, le=5.0)
    std_end: float = Field(0.1, ge=0.0, le=5.0)
    std_steps: int = Field(100_000, ge=1)
    replay_episodes: int = Field(4000, ge=1, description="replay capacity in episodes (oldest replaced)")
    init_encoder_from_fb: bool = Field(False, description="start the agent's conv encoder from the pretrained FB encoder")
    eval_every: int = Field(10_000, ge=1, description="agent steps between evaluations")
    eval_episodes: int = Field(10, ge=1)
    gif_episodes: int = Field(1, ge=0, description="final evaluation episodes saved as GIF")

    @model_validator(mode="after")
    def _distinct(self) -> "RLConfig":
        from genreward.envs.tasks import UnknownTaskError, check_task

        for i, t in enumerate(self.tasks):
            try:
                check_task(t)
            except UnknownTaskError as e:
                raise ValueError(f"tasks[{i}]: {e}") from None
        for name in ("tasks", "seeds", "methods"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {list(values)}")
        return self
