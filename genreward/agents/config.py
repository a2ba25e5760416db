"""Agent/exploration configuration (``exploration:`` in params.yaml). No torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from genreward.agents.registry import AGENTS
from genreward.envs.config import EnvReward
from genreward.fields import (
    ActionNoise,
    AnnealedStd,
    BatchSize,
    FeatureDim,
    Fraction,
    HiddenDim,
    ProperFraction,
    Rate,
    Section,
    StdEnd,
    StdSteps,
)
from genreward.rewards.config import METHODS, method_terms


class ExplorationConfig(Section):
    """Reward-free data collection for FB (``exploration:`` in params.yaml; stage collect_exploration)."""

    algorithm: Literal["rnd", "random"] = Field(
        "rnd", description="rnd: RND intrinsic reward on a DrQ-v2 actor-critic (URLB/ExORL); random: uniform actions"
    )
    episodes_per_task: int = Field(
        8, ge=1, le=1_000_000, description="exploration episodes per task (env.episode_length steps each)"
    )
    baseline_random_episodes: int = Field(
        8, ge=0, le=1_000_000, description="uniform-random episodes per task for the coverage comparison (0: none)"
    )
    expert_fraction: Fraction = Field(
        0.0, description="share of noisy scripted-expert episodes (demo data, not reward-free: default off)"
    )
    expert_noise: ActionNoise = Field(
        0.3, description="std of the Gaussian noise added to the expert's actions (expert episodes only)"
    )
    agent_per_task: bool = Field(True, description="a fresh RND agent per task (false: one agent carried across tasks)")
    noise_beta: ActionNoise = Field(1.0, description="exploration-noise colour: 0 white (DrQ-v2), 1 pink, 2 red")
    seed_steps: int = Field(512, ge=0, description="uniform-random agent steps before the agent acts")
    update_every: int = Field(16, ge=1, description="vector-env steps between agent updates")
    batch_size: BatchSize = Field(64, description="transitions per agent/RND update")
    lr: Rate = Field(1e-4, description="Adam learning rate of the agent and the RND predictor")
    feature_dim: FeatureDim = Field(50, description="agent actor/critic trunk width after the conv encoder")
    hidden_dim: HiddenDim = Field(256, description="hidden width of the agent's MLPs and of the RND networks")
    std_start: AnnealedStd = Field(1.0, description="exploration-noise std at the first agent step (linearly annealed)")
    std_end: StdEnd = 0.2
    std_steps: StdSteps = 5000
    discount: float = Field(0.99, ge=0.0, le=1.0, description="discount of the agent's critic (intrinsic reward)")
    chunk_rows: int = Field(
        257, ge=1, le=1_000_000, description="Zarr chunk length in rows (observations) of the dataset"
    )


class FBConfig(Section):
    """Forward-backward representation (``fb:`` in params.yaml; stage pretrain_fb). Paper values:
    d=64, hidden 512, batch 1024, lr 1e-4, tau 0.01 (the ``paper`` profile)."""

    z_dim: int = Field(
        32, ge=2, le=1024, description="dimension d of the task embedding z (z lies on the sphere of radius sqrt(d))"
    )
    hidden_dim: HiddenDim = Field(256, description="hidden width of the F, B and actor MLPs")
    feature_dim: FeatureDim = Field(50, description="width of the trunk after the conv encoder")
    batch_size: int = Field(64, ge=4, le=65536, description="transitions per gradient update")
    lr: Rate = Field(3e-4, description="Adam learning rate of F, B and the actor")
    tau: Rate = Field(0.01, description="Polyak rate of the target networks (per update)")
    discount: ProperFraction = Field(0.95, description="discount of the successor measure")
    ortho_coef: float = Field(1.0, ge=0.0, description="weight of the orthonormality loss on B")
    z_mix_ratio: Fraction = Field(
        0.5, description="share of training z taken from B(dataset states); the rest uniform on the sphere"
    )
    actor_std: ActionNoise = Field(
        0.2, description="std of the Gaussian smoothing noise on the actor's actions (FB target and actor loss)"
    )
    std_clip: ActionNoise = Field(0.3, description="clip of that noise (absolute value)")
    aug_pad: int = Field(4, ge=0, le=16, description="random-shift augmentation pad in pixels (0: off)")
    # training schedule (stage pretrain_fb)
    updates: int = Field(400, ge=1, description="gradient updates of stage pretrain_fb")
    checkpoint_every: int = Field(100, ge=1, description="updates between resumable checkpoints")
    log_every: int = Field(20, ge=1, description="updates between logged training-curve rows")
    holdout_fraction: ProperFraction = Field(
        0.1, description="share of each task's episodes held out (at least one per task) for the goal-reaching check"
    )
    eval_stride: int = Field(4, ge=1, description="steps between evaluated states in the goal-reaching check")


class DrQV2Section(Section):
    """DrQ-v2's knobs (``rl.drqv2`` in params.yaml): the agent of ``rl.agent: drqv2``."""

    update_every: int = Field(4, ge=1, description="agent steps between updates")
    batch_size: BatchSize = Field(64, description="transitions per agent update")
    n_step: int = Field(3, ge=1, le=64, description="n of the n-step TD return")
    lr: Rate = Field(1e-4, description="Adam learning rate of encoder, actor and critic")
    feature_dim: FeatureDim = Field(50, description="actor/critic trunk width after the conv encoder")
    hidden_dim: HiddenDim = Field(256, description="hidden width of the actor and critic MLPs")
    discount: ProperFraction = Field(0.99, description="discount factor gamma")
    std_start: AnnealedStd = Field(1.0, description="exploration-noise std at step 0 (linearly annealed)")
    std_end: StdEnd = 0.1
    std_steps: StdSteps = 5000
    replay_episodes: int = Field(100, ge=1, description="replay capacity in episodes (oldest replaced)")
    init_encoder_from_fb: bool = Field(
        False, description="start the agent's conv encoder from the pretrained FB encoder"
    )


class DreamerV3Section(Section):
    """DreamerV3's knobs (``rl.dreamerv3`` in params.yaml): the agent of ``rl.agent: dreamerv3``,
    sheeprl's implementation (``genreward/agents/dreamer.py``). The run's length, random prefill
    (``rl.seed_steps``, sheeprl's ``learning_starts``) and evaluations are ``rl``'s."""

    size: Literal["XS", "S", "M", "L", "XL"] = Field(
        "XS", description="model size preset of sheeprl (dreamer_v3_<size>): XS 256-unit layers ... XL"
    )
    replay_ratio: float = Field(
        0.5,
        gt=0.0,
        le=64.0,
        description="gradient steps per agent step; DreamerV3's train ratio 512 = 0.5 x batch 16 x sequence 64",
    )
    batch_size: int = Field(4, ge=1, le=4096, description="sequences per world-model update (the paper: 16)")
    sequence_length: int = Field(
        16, ge=2, le=4096, description="steps per sequence of a world-model update (the paper: 64)"
    )
    buffer_size: int = Field(0, ge=0, description="replay capacity in agent steps (0: the whole run, rl.steps)")
    log_every: int = Field(1000, ge=1, description="agent steps between logged training metrics (metrics.csv)")
    overrides: tuple[str, ...] = Field(
        (),
        description="more sheeprl settings as its hydra overrides (KEY=VALUE), applied last, e.g. "
        "algo.world_model.optimizer.lr=1e-4 or fabric.devices=2 fabric.strategy=ddp",
    )


# A DreamerV3 smaller than sheeprl's XS preset, for smoke runs (tests, `benchmarks/agent_throughput.py --quick`):
# pass as rl.dreamerv3.overrides. It checks the wiring, not learning.
DREAMERV3_TINY = (
    "algo.dense_units=32",
    "algo.mlp_layers=1",
    "algo.world_model.encoder.cnn_channels_multiplier=4",
    "algo.world_model.recurrent_model.recurrent_state_size=32",
    "algo.world_model.transition_model.hidden_size=32",
    "algo.world_model.representation_model.hidden_size=32",
    "algo.world_model.stochastic_size=4",
    "algo.world_model.discrete_size=4",
)


class RLConfig(Section):
    """Online RL fine-tuning with generated rewards (``rl:`` in params.yaml; stage finetune_rl).

    Runs are the product tasks × seeds × methods (a DVC ``matrix``). Methods are the names in
    ``METHODS`` (genreward/rewards/config.py), e.g. ``genreward`` (video + frame rewards) and
    ``env_only`` (dense env reward, no prior). What every agent shares (the run's length, its
    random prefill, the evaluations) is here; each agent's own knobs are in its sub-section
    (``rl.drqv2``), read only when ``rl.agent`` names it (``genreward.agents.registry``).
    """

    tasks: tuple[str, ...] = Field(
        ("pick-place-v3",), min_length=1, description="run axis: subset of `tasks` to fine-tune on"
    )
    seeds: tuple[int, ...] = Field((0,), min_length=1, description="run axis: training seeds, one run each")
    methods: tuple[str, ...] = Field(
        ("genreward", "env_only"),
        min_length=1,
        description="run axis: reward methods compared (clip_reward needs CLIP weights)",
        json_schema_extra={"choices": list(METHODS)},
    )
    agent: str = Field(
        "drqv2",
        description="online agent, a name of the agent registry (genreward.agents.registry); "
        "its knobs are the sub-section of that name",
        json_schema_extra={"choices": list(AGENTS)},
    )
    steps: int = Field(
        1024,
        ge=1,
        description="agent steps per run (env steps / action_repeat): whole episodes "
        "(a multiple of env.episode_length / env.action_repeat), at least seed_steps",
    )
    seed_steps: int = Field(
        512, ge=0, description="uniform-random agent steps before the agent acts and learns (replay prefill)"
    )
    eval_every: int = Field(1024, ge=1, description="agent steps between evaluations (at the next episode boundary)")
    eval_episodes: int = Field(2, ge=1, description="episodes per evaluation (deterministic policy)")
    gif_episodes: int = Field(1, ge=0, description="final evaluation episodes saved as GIF")
    env_reward: EnvReward = Field(
        "dense",
        description="what the agent learns from the env's reward (genreward/envs/reward_setting.py): dense (every "
        "step), sparse (only at (t+1) % sparse_interval == 0, the paper's sparse setting), success (1 on success "
        "steps); evaluations always report the dense return and success",
    )
    sparse_interval: int = Field(128, ge=1, description="env_reward: sparse pays the env reward every this many steps")
    deterministic: bool = Field(
        False,
        description="one seed reruns to the same numbers: one torch thread, torch's deterministic algorithms, "
        "seeded python/numpy/torch (genreward/runtime.py: deterministic); slower on a multi-core CPU",
    )
    drqv2: DrQV2Section = DrQV2Section()
    dreamerv3: DreamerV3Section = DreamerV3Section()

    @field_validator("agent")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in AGENTS:
            raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
        return name

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
        if self.steps < self.seed_steps:
            raise ValueError(
                f"steps ({self.steps}) is less than seed_steps ({self.seed_steps}): the agent would only ever "
                f"act at random and never learn; set rl.steps >= {self.seed_steps} or lower rl.seed_steps"
            )
        return self

    @property
    def agent_section(self) -> Section:
        """The knobs of the agent ``rl.agent`` names (the sub-section its registry entry names)."""
        return getattr(self, AGENTS[self.agent].section)
