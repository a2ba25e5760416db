"""Probe episodes: held-out Meta-World episodes with known outcomes, for scoring reward methods offline.

Per task, a fixed mix of episode kinds (``probes:`` in params.yaml, :class:`ProbeConfig`):

- ``expert``: the scripted expert (``metaworld.policies``) without noise;
- ``noisy``: the expert with Gaussian action noise, at each of ``noise_stds`` (a mix of
  successes and failures);
- ``near_miss``: the noise-free expert for the first ``drift_step`` steps, then uniform random
  actions. ``drift_step`` is a fraction, drawn per episode from ``near_miss_fraction``, of the
  agent steps the noise-free expert needs to first succeed from the same seed (found by a
  render-free pass; the whole episode length when it never succeeds). The expert part alone
  therefore never reaches success; the random drift usually loses the object;
- ``random``: uniform random actions in [-1, 1].

Every episode runs the full episode (``env.agent_steps``, no early stop at success), so all
episodes have equal length. Frames are the agent's observation as the RL replay stores it: the
latest ``[3, H, W]`` uint8 frame of the configured camera and image size (channels first,
upright). Rewards are the env's dense reward, ``success`` the env's success per agent step.

Env seeds (:func:`probe_seed`): ``2_000_000_000 + 5_000_000 * probes.seed + 100_000 * (the
task's index in METAWORLD_V3_TASKS) + episode``. They are far above every other stage's seeds
for seeds below 1000 (domain videos < 3e7, exploration < 1.1e7, RL training < 1.1e9, RL
evaluation < 1.1e7; tests/test_probes.py checks the formulas), and depend only on the task's
own name, not on the configured task list. The action noise and the random actions come from
``numpy.random.default_rng(env seed)``, so a config gives bit-identical episodes whatever the
number of worker processes.

This module imports no MuJoCo at import time (the config loads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genreward.envs.config import EnvConfig
from genreward.envs.tasks import METAWORLD_V3_TASKS, check_task
from genreward.envs.workers import ExpertEnvs, rollout

KIND = "probes"  # artifact kind of the stage's Zarr store
KINDS = ("expert", "noisy", "near_miss", "random")  # episode kind codes are indices into this
EXPERT, NOISY, NEAR_MISS, RANDOM = range(len(KINDS))

SEED_BASE = 2_000_000_000  # every probe env seed is at least this
SEED_STRIDE = 5_000_000  # per value of probes.seed (= len(METAWORLD_V3_TASKS) * TASK_STRIDE)
TASK_STRIDE = 100_000  # per Meta-World task index; episodes per task stay below it
MAX_SEED = 20  # probes.seed bound: every env seed stays below 2**31
MAX_EPISODES = 1000  # bound of each episode count


class ProbeConfig(BaseModel):
    """Stage collect_probes: held-out episodes with known outcomes per task (see genreward/envs/probes.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expert_episodes: int = Field(3, ge=0, le=MAX_EPISODES, description="noise-free scripted-expert episodes per task")
    noise_stds: tuple[float, ...] = Field(
        (0.3, 1.0),
        max_length=16,
        description="std of the expert's Gaussian action noise, one level each (in (0, 2]), for the noisy episodes",
    )
    noisy_episodes_per_level: int = Field(
        2, ge=0, le=MAX_EPISODES, description="noisy-expert episodes per task at each of noise_stds"
    )
    near_miss_episodes: int = Field(
        2, ge=0, le=MAX_EPISODES, description="near misses per task: the expert, then uniform random actions"
    )
    near_miss_fraction: tuple[float, float] = Field(
        (0.5, 0.9),
        description=(
            "near misses drift after this fraction (drawn uniformly per episode from [low, high], 0 <= low <= "
            "high < 1) of the steps the noise-free expert needs to first succeed from the same seed"
        ),
    )
    random_episodes: int = Field(2, ge=0, le=MAX_EPISODES, description="uniform-random-action episodes per task")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description=(
            "probe set: env seeds are 2e9 + 5e6*seed + 1e5*(task's Meta-World index) + episode, "
            "disjoint from every other stage's seeds"
        ),
    )

    @field_validator("noise_stds")
    @classmethod
    def _noise(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [x for x in v if not 0.0 < x <= 2.0]
        if bad:
            raise ValueError(f"noise levels must lie in (0, 2] (the noise-free expert is expert_episodes), got {bad}")
        return v

    @field_validator("near_miss_fraction")
    @classmethod
    def _fraction(cls, v: tuple[float, float]) -> tuple[float, float]:
        low, high = v
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"need 0 <= low <= high < 1, got [{low}, {high}]")
        return v

    @model_validator(mode="after")
    def _some_episodes(self) -> "ProbeConfig":
        if self.episodes_per_task < 1:
            raise ValueError("no probe episodes: set expert_episodes, noisy_episodes_per_level, ... above 0")
        return self

    @property
    def episodes_per_task(self) -> int:
        return (
            self.expert_episodes
            + len(self.noise_stds) * self.noisy_episodes_per_level
            + self.near_miss_episodes
            + self.random_episodes
        )


def task_index(task: str) -> int:
    """``task``'s index in Meta-World v3's task list (stable whatever tasks a config runs)."""
    return METAWORLD_V3_TASKS.index(check_task(task))


def probe_seed(task: str, episode: int, seed: int = 0) -> int:
    """The env seed of probe ``episode`` of ``task`` in probe set ``seed`` (module docstring)."""
    if not 0 <= episode < TASK_STRIDE:
        raise ValueError(f"probe episode index {episode} outside [0, {TASK_STRIDE})")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"probes.seed {seed} outside [0, {MAX_SEED}]")
    return SEED_BASE + SEED_STRIDE * seed + TASK_STRIDE * task_index(task) + episode


@dataclass(frozen=True)
class ProbeJob:
    task: str
    index: int  # episode index within the task: its row in the store
    kind: int  # EXPERT | NOISY | NEAR_MISS | RANDOM
    noise_std: float  # the noisy expert's action-noise std; 0 for the other kinds
    seed: int  # env seed


def plan_probes(task: str, cfg: ProbeConfig) -> list[ProbeJob]:
    """``task``'s probe episodes in store order: experts, noisy (by level), near misses, random."""
    kinds: list[tuple[int, float]] = [(EXPERT, 0.0)] * cfg.expert_episodes
    for std in cfg.noise_stds:
        kinds += [(NOISY, float(std))] * cfg.noisy_episodes_per_level
    kinds += [(NEAR_MISS, 0.0)] * cfg.near_miss_episodes + [(RANDOM, 0.0)] * cfg.random_episodes
    return [ProbeJob(task, i, k, std, probe_seed(task, i, cfg.seed)) for i, (k, std) in enumerate(kinds)]


@dataclass
class ProbeEpisode:
    job: ProbeJob
    frames: np.ndarray  # uint8 [L+1, 3, H, W]; frames[0] is the reset observation
    actions: np.ndarray  # float32 [L, 4]
    rewards: np.ndarray  # float32 [L]
    successes: np.ndarray  # bool [L]
    drift_step: int  # near misses: the first non-expert step; -1 otherwise

    @property
    def success(self) -> bool:
        return bool(self.successes.any())

    @property
    def first_success(self) -> int:
        hits = np.flatnonzero(self.successes)
        return int(hits[0]) if hits.size else -1


def probe_env_config(env_cfg: EnvConfig) -> EnvConfig:
    """The env of the probes: the RL env's settings, one frame per observation."""
    return env_cfg.model_copy(update={"frame_stack": 1})


def _state(s: Any) -> np.ndarray:
    return np.asarray(s, dtype=np.float32)  # what the pixel env hands the policy (obs["state"])


def expert_steps_to_success(env, policy, seed: int) -> int | None:
    """Agent steps the noise-free expert needs to first succeed from ``seed`` (None: never within
    the episode), stepping the physics without rendering, as ``env.step`` would."""
    obs, _ = env.reset(seed=seed)
    raw, state = env.unwrapped_metaworld, obs["state"]
    for t in range(env.cfg.agent_steps):
        action = np.clip(policy(state), -1.0, 1.0).astype(np.float32)
        success = False
        for _ in range(env.cfg.action_repeat):
            s, _, _, _, info = raw.step(action)
            success = success or bool(info.get("success", 0.0))
        state = _state(s)
        if success:
            return t + 1
    return None


def run_probe(env, policy, job: ProbeJob, cfg: ProbeConfig) -> ProbeEpisode:
    """One probe episode in ``env`` (a MetaWorldPixelEnv with frame_stack 1), the full episode long."""
    rng = np.random.default_rng(job.seed)
    length = env.cfg.agent_steps
    drift = -1
    if job.kind == NEAR_MISS:
        fraction = float(rng.uniform(*cfg.near_miss_fraction))
        needed = expert_steps_to_success(env, policy, job.seed)
        drift = int(fraction * (needed if needed is not None else length))

    def act(t: int, obs: dict) -> np.ndarray:
        if job.kind == RANDOM or (job.kind == NEAR_MISS and t >= drift):
            return rng.uniform(-1.0, 1.0, size=4)
        action = policy(obs["state"])
        if job.kind == NOISY:
            action = action + rng.normal(0.0, job.noise_std, size=action.shape)
        return action

    ep = rollout(env, job.seed, act)
    return ProbeEpisode(
        job=job,
        frames=ep["frames"],
        actions=ep["actions"],
        rewards=ep["rewards"],
        successes=ep["successes"],
        drift_step=drift,
    )


class ProbeWorker(ExpertEnvs):
    """Runs probe episodes; keeps one env per task (used in worker processes and inline)."""

    def __init__(self, env_cfg: EnvConfig, cfg: ProbeConfig):
        super().__init__(probe_env_config(env_cfg))
        self.cfg = cfg

    def __call__(self, job: ProbeJob) -> ProbeEpisode:
        env, policy = self.expert_env(job.task)
        return run_probe(env, policy, job, self.cfg)


def run_probes(
    jobs: list[ProbeJob], env_cfg: EnvConfig, cfg: ProbeConfig, workers: int = 1, progress: bool = False
) -> Iterator[ProbeEpisode]:
    """Yield a :class:`ProbeEpisode` per job (any order), in ``workers`` worker processes (1: inline)."""
    from functools import partial

    from genreward.envs.workers import run_jobs

    return run_jobs(partial(ProbeWorker, env_cfg, cfg), jobs, workers, progress, "probe episodes")


def collect_probes(
    task: str, env_cfg: EnvConfig, cfg: ProbeConfig, workers: int = 1, progress: bool = False
) -> dict[str, np.ndarray]:
    """Every probe episode of ``task``, as the stored arrays (:data:`ARRAYS`), in plan order."""
    jobs = plan_probes(task, cfg)
    done = {ep.job.index: ep for ep in run_probes(jobs, env_cfg, cfg, min(workers, len(jobs)), progress)}
    eps = [done[j.index] for j in jobs]
    return {
        "frames": np.stack([e.frames for e in eps]),
        "action": np.stack([e.actions for e in eps]),
        "reward": np.stack([e.rewards for e in eps]),
        "success": np.stack([e.successes for e in eps]),
        "kind": np.array([e.job.kind for e in eps], np.int8),
        "noise_std": np.array([e.job.noise_std for e in eps], np.float32),
        "seed": np.array([e.job.seed for e in eps], np.int64),
        "episode_success": np.array([e.success for e in eps], bool),
        "first_success": np.array([e.first_success for e in eps], np.int32),
        "drift_step": np.array([e.drift_step for e in eps], np.int32),
    }


# name -> (rank, dtype) of the stored arrays (N episodes of L agent steps)
ARRAYS: dict[str, tuple[int, Any]] = {
    "frames": (5, np.uint8),  # [N, L+1, 3, H, W]
    "action": (3, np.float32),  # [N, L, 4]
    "reward": (2, np.float32),  # [N, L] dense env reward
    "success": (2, bool),  # [N, L] success on this step
    "kind": (1, np.int8),  # [N] index into KINDS
    "noise_std": (1, np.float32),  # [N] noisy episodes' action-noise std, else 0
    "seed": (1, np.int64),  # [N] env seed
    "episode_success": (1, bool),  # [N] success at any step
    "first_success": (1, np.int32),  # [N] first successful step, -1 if none
    "drift_step": (1, np.int32),  # [N] near misses' first random step, -1 otherwise
}


def summarize(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per kind (and per noise level of the noisy episodes): count, success rate, mean return,
    mean first-success step of the successful episodes (None if none)."""

    def stats(sel: np.ndarray) -> dict[str, Any]:
        ok = arrays["episode_success"][sel]
        first = arrays["first_success"][sel][ok]
        return {
            "count": int(sel.sum()),
            "success_rate": float(ok.mean()) if sel.any() else None,
            "mean_return": float(arrays["reward"][sel].sum(axis=1).mean()) if sel.any() else None,
            "mean_first_success": float(first.mean()) if first.size else None,
        }

    kind = arrays["kind"]
    out: dict[str, Any] = {
        "episodes": int(len(kind)),
        "episode_length": int(arrays["action"].shape[1]),
        "per_kind": {name: stats(kind == code) for code, name in enumerate(KINDS)},
        "noisy_per_level": {
            f"{std:g}": stats((kind == NOISY) & (arrays["noise_std"] == std))
            for std in sorted(set(arrays["noise_std"][kind == NOISY].tolist()))
        },
    }
    return out


@dataclass
class Probes:
    """One task's ``collect_probes`` store, read back by :func:`read_probes`."""

    task: str
    frames: np.ndarray  # uint8 [N, L+1, 3, H, W]
    actions: np.ndarray  # float32 [N, L, 4]
    dense: np.ndarray  # float32 [N, L] dense env reward
    success: np.ndarray  # bool [N, L]
    kinds: list[str]  # [N]: each episode's kind name (expert, noisy, near_miss, random)
    noise_std: np.ndarray | None = None  # float32 [N]
    seed: np.ndarray | None = None  # int64 [N] env seeds
    first_success: np.ndarray | None = None  # int32 [N], -1 if none
    drift_step: np.ndarray | None = None  # int32 [N], -1 unless a near miss
    attrs: dict[str, Any] = field(default_factory=dict)  # the store's attrs (provenance under "genreward")

    @property
    def length(self) -> int:
        return self.actions.shape[1]

    @property
    def episode_success(self) -> np.ndarray:
        return self.success.any(axis=1)

    def expert_successes(self) -> np.ndarray:
        """Indices of the successful scripted-expert episodes."""
        return np.flatnonzero((np.asarray(self.kinds) == "expert") & self.episode_success)

    def __len__(self) -> int:
        return len(self.kinds)


def read_probes(path: str | Path, task: str | None = None) -> Probes:
    """The ``collect_probes`` store at ``path``, validated (complete, kind ``probes``, the arrays of
    :data:`ARRAYS` with agreeing shapes, and ``task``'s when given). Raises ``ArtifactError``."""
    from genreward.store.artifacts import ArtifactError, open_artifact, read_array

    g = open_artifact(path, KIND)
    attrs = dict(g.attrs)
    # float arrays (actions, dense rewards, noise levels) must be finite
    a = {
        name: read_array(g, name, ndim=nd, dtype=dt, finite=np.dtype(dt).kind == "f")
        for name, (nd, dt) in ARRAYS.items()
    }
    if task is not None and attrs.get("task") != task:
        raise ArtifactError(f"{path}: probes of {attrs.get('task')!r}, expected {task!r}")
    n, length = a["action"].shape[:2]
    if a["frames"].shape[:2] != (n, length + 1) or any(len(v) != n for v in a.values()):
        raise ArtifactError(f"{path}: probe arrays disagree on episodes/length")
    names = list(attrs["kinds"])
    if a["kind"].size and not 0 <= int(a["kind"].min()) <= int(a["kind"].max()) < len(names):
        raise ArtifactError(f"{path}: kind codes outside attrs['kinds'] ({names})")
    return Probes(
        task=attrs["task"],
        frames=a["frames"],
        actions=a["action"],
        dense=a["reward"],
        success=a["success"],
        kinds=[names[k] for k in a["kind"].tolist()],
        noise_std=a["noise_std"],
        seed=a["seed"],
        first_success=a["first_success"],
        drift_step=a["drift_step"],
        attrs=attrs,
    )
