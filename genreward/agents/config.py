"""Agent/exploration configuration (``exploration:`` in params.yaml). No torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genreward.rewards.config import METHODS, method_terms


class ExplorationConfig(BaseModel):
    """Reward-free data collection for FB (``exploration:`` in params.yaml; stage collect_exploration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["rnd", "random"] = Field(
        "rnd", description="rnd: RND intrinsic reward on a DrQ-v2 actor-critic (URLB/ExORL); random: uniform actions"
    )
    episodes_per_task: int = Field(
        8, ge=1, le=1_000_000, description="exploration episodes per task (env.episode_length steps each)"
    )
    baseline_random_episodes: int = Field(
        8, ge=0, le=1_000_000, description="uniform-random episodes per task for the coverage comparison (0: none)"
    )
    expert_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of noisy scripted-expert episodes (demo data, not reward-free: default off)",
    )
    expert_noise: float = Field(
        0.3,
        ge=0.0,
        le=2.0,
        description="std of the Gaussian noise added to the expert's actions (expert episodes only)",
    )
    agent_per_task: bool = Field(True, description="a fresh RND agent per task (false: one agent carried across tasks)")
    noise_beta: float = Field(
        1.0, ge=0.0, le=2.0, description="exploration-noise colour: 0 white (DrQ-v2), 1 pink, 2 red"
    )
    seed_steps: int = Field(512, ge=0, description="uniform-random agent steps before the agent acts")
    update_every: int = Field(8, ge=1, description="vector-env steps between agent updates")
    batch_size: int = Field(64, ge=2, le=65536, description="transitions per agent/RND update")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Adam learning rate of the agent and the RND predictor")
    feature_dim: int = Field(50, ge=4, le=4096, description="agent actor/critic trunk width after the conv encoder")
    hidden_dim: int = Field(256, ge=8, le=8192, description="hidden width of the agent's MLPs and of the RND networks")
    std_start: float = Field(
        1.0, ge=0.0, le=5.0, description="exploration-noise std at the first agent step (linearly annealed)"
    )
    std_end: float = Field(0.2, ge=0.0, le=5.0, description="exploration-noise std after std_steps")
    std_steps: int = Field(
        5000, ge=1, description="agent steps over which the noise std anneals from std_start to std_end"
    )
    discount: float = Field(0.99, ge=0.0, le=1.0, description="discount of the agent's critic (intrinsic reward)")
    chunk_rows: int = Field(
        257, ge=1, le=1_000_000, description="Zarr chunk length in rows (observations) of the dataset"
    )


class FBConfig(BaseModel):
    """Forward-backward representation (``fb:`` in params.yaml; stage pretrain_fb). Paper values:
    d=64, hidden 512, batch 1024, lr 1e-4, tau 0.01 (the ``paper`` profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    z_dim: int = Field(
        32, ge=2, le=1024, description="dimension d of the task embedding z (z lies on the sphere of radius sqrt(d))"
    )
    hidden_dim: int = Field(256, ge=8, le=8192, description="hidden width of the F, B and actor MLPs")
    feature_dim: int = Field(50, ge=4, le=4096, description="width of the trunk after the conv encoder")
    batch_size: int = Field(64, ge=4, le=65536, description="transitions per gradient update")
    lr: float = Field(3e-4, gt=0, le=1.0, description="Adam learning rate of F, B and the actor")
    tau: float = Field(0.01, gt=0, le=1.0, description="Polyak rate of the target networks (per update)")
    discount: float = Field(0.95, ge=0.0, lt=1.0, description="discount of the successor measure")
    ortho_coef: float = Field(1.0, ge=0.0, description="weight of the orthonormality loss on B")
    z_mix_ratio: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of training z taken from B(dataset states); the rest uniform on the sphere",
    )
    actor_std: float = Field(
        0.2,
        ge=0.0,
        le=2.0,
        description="std of the Gaussian smoothing noise on the actor's actions (FB target and actor loss)",
    )
    std_clip: float = Field(0.3, ge=0.0, le=2.0, description="clip of that noise (absolute value)")
    aug_pad: int = Field(4, ge=0, le=16, description="random-shift augmentation pad in pixels (0: off)")
    # training schedule (stage pretrain_fb)
    updates: int = Field(400, ge=1, description="gradient updates of stage pretrain_fb")
    checkpoint_every: int = Field(100, ge=1, description="updates between resumable checkpoints")
    log_every: int = Field(20, ge=1, description="updates between logged training-curve rows")
    holdout_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of episodes held out for the goal-reaching check"
    )
    eval_stride: int = Field(4, ge=1, description="steps between evaluated states in the goal-reaching check")


class RLConfig(BaseModel):
    """Online RL fine-tuning with generated rewards (``rl:`` in params.yaml; stage finetune_rl).

    Runs are the product tasks × seeds × methods (a DVC ``matrix``). Methods are the names in
    ``METHODS`` (genreward/rewards/config.py), e.g. ``genreward`` (video + frame rewards) and
    ``env_only`` (dense env reward, no prior).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(
        ("pick-place-v3",), min_length=1, description="run axis: subset of `tasks` to fine-tune on"
    )
    seeds: tuple[int, ...] = Field((0,), min_length=1, description="run axis: training seeds, one run each")
    methods: tuple[str, ...] = Field(
        ("genreward", "video_only", "frame_only", "env_only"),
        min_length=1,
        description="run axis: reward methods compared (clip_reward needs CLIP weights)",
        json_schema_extra={"choices": list(METHODS)},
    )
    agent: Literal["drqv2"] = Field(
        "drqv2", description="online agent (DreamerV3: a later option behind the same interface)"
    )
    steps: int = Field(2048, ge=1, description="agent steps per run (env steps / action_repeat)")
    seed_steps: int = Field(
        512, ge=0, description="uniform-random agent steps before the agent acts and learns (replay prefill)"
    )
    update_every: int = Field(2, ge=1, description="agent steps between updates")
    batch_size: int = Field(64, ge=2, le=65536, description="transitions per agent update")
    n_step: int = Field(3, ge=1, le=64, description="n of the n-step TD return")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Adam learning rate of encoder, actor and critic")
    feature_dim: int = Field(50, ge=4, le=4096, description="actor/critic trunk width after the conv encoder")
    hidden_dim: int = Field(256, ge=8, le=8192, description="hidden width of the actor and critic MLPs")
    discount: float = Field(0.99, ge=0.0, lt=1.0, description="discount factor gamma")
    std_start: float = Field(1.0, ge=0.0, le=5.0, description="exploration-noise std at step 0 (linearly annealed)")
    std_end: float = Field(0.1, ge=0.0, le=5.0, description="exploration-noise std after std_steps")
    std_steps: int = Field(
        5000, ge=1, description="agent steps over which the noise std anneals from std_start to std_end"
    )
    replay_episodes: int = Field(100, ge=1, description="replay capacity in episodes (oldest replaced)")
    init_encoder_from_fb: bool = Field(
        False, description="start the agent's conv encoder from the pretrained FB encoder"
    )
    eval_every: int = Field(1024, ge=1, description="agent steps between evaluations (at the next episode boundary)")
    eval_episodes: int = Field(2, ge=1, description="episodes per evaluation (deterministic policy)")
    gif_episodes: int = Field(1, ge=0, description="final evaluation episodes saved as GIF")

    @model_validator(mode="after")
    def _distinct(self) -> "RLConfig":
        from genreward.envs.tasks import UnknownTaskError, check_task

        for i, t in enumerate(self.tasks):
            try:
                check_task(t)
            except UnknownTaskError as e:
                raise ValueError(f"tasks[{i}]: {e}") from None
        for i, m in enumerate(self.methods):
            try:
                method_terms(m)
            except ValueError as e:
                raise ValueError(f"methods[{i}]: {e}") from None
        for name in ("tasks", "seeds", "methods"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {list(values)}")
        return self
