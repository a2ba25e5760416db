"""Vectorised, resumable collection of reward-free episodes into an exploration dataset.

Two collectors, both writing through an :class:`EpisodeWriter` (each episode's commit is atomic)
and both giving episode ``k`` of the dataset the env seed ``seed + k``, so a killed and resumed
run collects the same episodes it would have collected without the kill:

- :func:`collect`, for explorers that act from pixels and learn (RND): envs run in worker
  processes (gymnasium AsyncVectorEnv, one renderer each) in lock-step with the agent in the
  main process. All Meta-World episodes last exactly ``episode_length`` steps, so a round resets
  every env, steps them together, and appends the finished episodes one by one.
- :func:`collect_policy_free`, for uniform-random (and scripted-expert) episodes: each worker
  process runs whole episodes on its own, with no per-step exchange with the main process and
  no waiting for the slowest env of a round; the main process only writes the episodes, in
  order. Episode ``k``'s actions come from its own generator (``[seed, k]``), so the data does
  not depend on the number of workers either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from genreward.agents.replay import TransitionBuffer
from genreward.envs.config import ACTION_DIM, EnvConfig
from genreward.envs.workers import ExpertEnvs, rollout
from genreward.store.episodes import Episode, EpisodeWriter

log = logging.getLogger(__name__)


@dataclass
class CollectStats:
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    seconds_env: float = 0.0
    seconds_update: float = 0.0
    last_metrics: dict = field(default_factory=dict)


@dataclass
class Plan:
    """Which task and policy each dataset episode uses (episode index -> (task_id, kind))."""

    tasks: Sequence[str]
    episodes_per_task: int
    expert_fraction: float = 0.0

    @property
    def total(self) -> int:
        return len(self.tasks) * self.episodes_per_task

    def task_id(self, k: int) -> int:
        return k // self.episodes_per_task

    def is_expert(self, k: int) -> bool:
        n_expert = int(round(self.expert_fraction * self.episodes_per_task))
        return (k % self.episodes_per_task) < n_expert


def collect(
    writer: EpisodeWriter,
    explorer_for_task: Callable[[int], tuple[object, TransitionBuffer | None]],
    plan: Plan,
    env_cfg: EnvConfig,
    num_envs: int,
    seed: int,
    update_every: int,
    expert_noise: float = 0.3,
    progress: Callable[[int], None] | None = None,
) -> CollectStats:
    """Collect episodes ``writer.committed_episodes .. plan.total-1`` (resuming where it stopped).

    ``explorer_for_task(task_id)`` is called when a task's block of episodes starts and returns
    the explorer to act with and the replay buffer it learns from (``None``: no learning). The
    explorer may define ``reset(n, rng)``, called at the start of every round of episodes.
    """
    import time

    from genreward.envs.experts import expert_policy
    from genreward.envs.vector import make_vector_env

    stats = CollectStats()
    rng = np.random.default_rng([seed, writer.committed_episodes])
    step_count = writer.committed_rows  # the collector's clock: paces updates (explorers keep their own)
    k = writer.committed_episodes
    while k < plan.total:
        task_id = plan.task_id(k)
        task = plan.tasks[task_id]
        last_of_task = (task_id + 1) * plan.episodes_per_task
        explorer, buffer = explorer_for_task(task_id)
        venv = make_vector_env(task, env_cfg, num_envs=num_envs, seed=seed)
        expert = expert_policy(task) if plan.expert_fraction > 0 else None
        try:
            while k < last_of_task:
                n = min(num_envs, last_of_task - k)
                seeds = [seed + k + i for i in range(n)] + [seed + 10_000_000 + k + i for i in range(num_envs - n)]
                t0 = time.perf_counter()
                obs, _ = venv.reset(seed=seeds)
                frames, states, actions, successes = (
                    [obs["pixels"][:, -3:]],
                    [obs["state"]],
                    [],
                    [np.zeros(num_envs, bool)],
                )
                if hasattr(explorer, "reset"):
                    explorer.reset(num_envs, rng)
                experts = np.array(
                    [expert is not None and plan.is_expert(k + i) if i < n else False for i in range(num_envs)]
                )
                for _ in range(env_cfg.agent_steps):
                    action = explorer.act(obs["pixels"], step_count, rng)
                    if experts.any():
                        for i in np.flatnonzero(experts):
                            a = expert(obs["state"][i]) + rng.normal(0, expert_noise, ACTION_DIM)
                            action[i] = np.clip(a, -1, 1)
                    obs, _, _, truncated, info = venv.step(action)
                    frames.append(obs["pixels"][:, -3:])
                    states.append(obs["state"])
                    actions.append(action)
                    successes.append(np.asarray(info["success"], bool))
                    step_count += n
                    stats.env_steps += num_envs * env_cfg.action_repeat
                    if buffer is not None and buffer.n > 0 and step_count % (update_every * n) < n:
                        stats.seconds_env += time.perf_counter() - t0
                        t1 = time.perf_counter()
                        stats.last_metrics = explorer.update(buffer, step_count, rng)
                        stats.updates += bool(stats.last_metrics)
                        stats.seconds_update += time.perf_counter() - t1
                        t0 = time.perf_counter()
                stats.seconds_env += time.perf_counter() - t0
                f, s, a, ok = np.stack(frames, 1), np.stack(states, 1), np.stack(actions, 1), np.stack(successes, 1)
                for i in range(n):
                    ep = Episode(obs=f[i], state=s[i], action=a[i], success=ok[i], task_id=task_id)
                    writer.append(ep)
                    if buffer is not None:
                        buffer.add(ep)
                    stats.episodes += 1
                    k += 1
                    if progress is not None:
                        progress(1)
        finally:
            venv.close()
    return stats


@dataclass(frozen=True)
class EpisodeJob:
    """Episode ``index`` of a policy-free collection: its task, and whether the expert acts."""

    index: int
    task: str
    task_id: int
    expert: bool


class PolicyFreeWorker(ExpertEnvs):
    """Runs whole episodes with uniform-random actions, or the task's scripted expert plus
    Gaussian noise; keeps one env per task (in a worker process, or inline)."""

    def __init__(self, env_cfg: EnvConfig, seed: int, expert_noise: float):
        from genreward.envs.probes import probe_env_config

        super().__init__(probe_env_config(env_cfg))  # one frame per observation: what the store keeps
        self.seed, self.expert_noise = seed, expert_noise

    def __call__(self, job: EpisodeJob) -> tuple[int, Episode]:
        env, expert = self.expert_env(job.task)
        rng = np.random.default_rng([self.seed, job.index])

        def act(t: int, obs: dict) -> np.ndarray:
            if job.expert:
                return expert(obs["state"]) + rng.normal(0.0, self.expert_noise, ACTION_DIM)
            return rng.uniform(-1.0, 1.0, ACTION_DIM)

        ep = rollout(env, self.seed + job.index, act)
        success = np.concatenate([[False], ep["successes"]])  # one row per observation
        return job.index, Episode(
            obs=ep["frames"], state=ep["states"], action=ep["actions"], success=success, task_id=job.task_id
        )


def collect_policy_free(
    writer: EpisodeWriter,
    plan: Plan,
    env_cfg: EnvConfig,
    num_workers: int,
    seed: int,
    expert_noise: float = 0.3,
    progress: Callable[[int], None] | None = None,
) -> CollectStats:
    """Collect episodes ``writer.committed_episodes .. plan.total-1`` without a learning agent:
    uniform-random actions, or the scripted expert with ``expert_noise`` for the plan's expert
    episodes. Workers finish episodes in any order; they are committed in index order (at most
    two jobs per worker are in flight, so only a few finished episodes wait in memory)."""
    import contextlib
    import time
    from functools import partial

    from genreward.envs.vector import worker_environment
    from genreward.envs.workers import run_jobs

    stats = CollectStats()
    first = writer.committed_episodes
    jobs = [
        EpisodeJob(k, plan.tasks[plan.task_id(k)], plan.task_id(k), plan.is_expert(k)) for k in range(first, plan.total)
    ]
    if not jobs:
        return stats
    pending: dict[int, Episode] = {}
    nxt = first
    t0 = time.perf_counter()
    spawned = worker_environment() if num_workers > 1 else contextlib.nullcontext()
    results = run_jobs(partial(PolicyFreeWorker, env_cfg, seed, expert_noise), jobs, num_workers)
    with spawned, contextlib.closing(results):  # an error here stops the workers too
        for index, episode in results:
            pending[index] = episode
            while nxt in pending:
                writer.append(pending.pop(nxt))
                nxt += 1
                stats.episodes += 1
                stats.env_steps += env_cfg.agent_steps * env_cfg.action_repeat
                if progress is not None:
                    progress(1)
    stats.seconds_env = time.perf_counter() - t0
    return stats
