"""Vectorised, resumable collection of reward-free episodes into an exploration dataset.

Two collectors, both writing through an :class:`EpisodeWriter` (each episode's commit is atomic)
and both giving episode ``k`` of the dataset the env seed ``seed + k``, so a killed and resumed
run collects the same episodes it would have collected without the kill:

- :func:`collect`, for explorers that act from pixels and learn (RND): envs run in worker
  processes (gymnasium AsyncVectorEnv, one renderer each), in two groups that each get their
  next action from the agent in the main process as soon as their step is back. All Meta-World
  episodes last exactly ``episode_length`` steps, so a round resets every env, steps them to the
  end, and appends the finished episodes one by one.
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


def env_groups(num_envs: int) -> list[np.ndarray]:
    """The lock-step collector's env groups: two (one when ``num_envs`` is 1), contiguous and in
    order; each is stepped as soon as its previous step is back, so that acting for one overlaps
    the other's stepping."""
    if num_envs < 1:
        raise ValueError(f"the lock-step collector needs >= 1 env, got {num_envs}")
    return [g for g in np.array_split(np.arange(num_envs), min(2, num_envs))]


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
    explorer defines ``act(obs, step, rng, envs)`` and ``update(buffer, step, rng)``, and may
    define ``reset(n, rng)``, called at the start of every round of ``n`` episodes. ``envs`` are
    the round's envs whose observations ``obs`` holds, and ``rng`` is their group's generator:
    ``act`` must give the same actions whichever group it is called for first (per-env state,
    no shared random stream), because the groups act in the order their steps come back.

    The envs are split into two groups (:func:`env_groups`), each its own vector env: a group
    that is back from its step is given its next action at once, while the other steps, so the
    workers do not wait for the slowest env of the round nor for the agent acting for another
    group. Updates are due every ``update_every`` steps; before one, every group finishes
    acting for that step, and the update runs while their steps are in flight. So the data is
    the same whatever the timing: round ``r``'s group ``j`` draws from its own generator
    ``[seed, first episode of r, first env of j]``, updates and ``reset`` from the collector's.
    """
    import time

    from genreward.envs.experts import expert_policy
    from genreward.envs.vector import close_vector_envs, make_vector_env_groups

    stats = CollectStats()
    rng = np.random.default_rng([seed, writer.committed_episodes])
    step_count = writer.committed_rows  # the collector's clock: paces updates (explorers keep their own)
    k = writer.committed_episodes
    groups = env_groups(num_envs)
    while k < plan.total:
        task_id = plan.task_id(k)
        task = plan.tasks[task_id]
        last_of_task = (task_id + 1) * plan.episodes_per_task
        explorer, buffer = explorer_for_task(task_id)
        expert = expert_policy(task) if plan.expert_fraction > 0 else None
        # observations are copied below: the vector envs need not copy them
        venvs = make_vector_env_groups(
            task, env_cfg, [len(g) for g in groups], seed, info_keys=("success",), copy=False
        )
        try:
            while k < last_of_task:
                n = min(num_envs, last_of_task - k)
                # a round's spare envs (the task's last episodes are fewer than the envs) stay idle
                # when a whole group is spare, and otherwise run padding episodes that are not kept
                active = [(g, venv) for g, venv in zip(groups, venvs) if g[0] < n]
                m = int(active[-1][0][-1]) + 1  # envs stepped this round (n of them kept)
                seeds = [seed + k + i for i in range(n)] + [seed + 10_000_000 + k + i for i in range(m - n)]
                experts = np.array([expert is not None and plan.is_expert(k + i) if i < n else False for i in range(m)])
                t0 = time.perf_counter()
                for g, venv in active:
                    venv.reset_async(seed=[seeds[i] for i in g])
                first = [venv.reset_wait()[0] for _, venv in active]
                if hasattr(explorer, "reset"):
                    explorer.reset(m, rng)
                group_rngs = [np.random.default_rng([seed, k, int(g[0])]) for g, _ in active]

                def act(gi: int, o: dict, t: int) -> np.ndarray:
                    g = active[gi][0]
                    a = explorer.act(o["pixels"], step_count + t * n, group_rngs[gi], envs=g)
                    for j in np.flatnonzero(experts[g]):
                        noisy = expert(o["state"][j]) + group_rngs[gi].normal(0, expert_noise, ACTION_DIM)
                        a[j] = np.clip(noisy, -1, 1)
                    return a

                def update(t: int) -> float:
                    t1 = time.perf_counter()
                    stats.last_metrics = explorer.update(buffer, step_count + (t + 1) * n, rng)
                    stats.updates += bool(stats.last_metrics)
                    return time.perf_counter() - t1

                due = []
                if buffer is not None and buffer.n > 0:  # after step t, as the collector's clock passes a multiple
                    due = [t for t in range(env_cfg.agent_steps) if (step_count + (t + 1) * n) % (update_every * n) < n]
                record, seconds_update = _round([venv for _, venv in active], first, act, update, due, env_cfg)
                stats.seconds_update += seconds_update
                stats.seconds_env += time.perf_counter() - t0 - seconds_update
                step_count += env_cfg.agent_steps * n
                stats.env_steps += env_cfg.agent_steps * m * env_cfg.action_repeat
                f, s, a, ok = (np.concatenate([np.stack(r[field], 1) for r in record]) for field in range(4))
                for i in range(n):
                    ep = Episode(obs=f[i], state=s[i], action=a[i], success=ok[i], task_id=task_id)
                    writer.append(ep)
                    if buffer is not None:
                        buffer.add(ep)
                    stats.episodes += 1
                    k += 1
                    if progress is not None:
                        progress(1)
        except BaseException:
            close_vector_envs(venvs, terminate=True)  # a failed or dead worker: do not wait for it
            raise
        close_vector_envs(venvs)
    return stats


def _round(venvs: list, first: list[dict], act, update, due: list[int], env_cfg: EnvConfig):
    """One round of episodes on the vector envs ``venvs`` (their resets ``first`` given): each
    group acts (``act(group, obs, t)``) as soon as its step ``t - 1`` is back; ``update(t)`` runs
    for every ``t`` in ``due`` once every group has sent step ``t`` and before any acts for
    ``t + 1``. Returns per group ``(frames, states, actions, successes)`` lists and the seconds
    spent updating."""
    from multiprocessing.connection import wait

    steps = env_cfg.agent_steps
    record = [
        ([o["pixels"][:, -3:].copy()], [o["state"].copy()], [], [np.zeros(venv.num_envs, bool)])
        for o, venv in zip(first, venvs)
    ]
    obs = list(first)
    t_next = [0] * len(venvs)
    in_flight: set[int] = set()
    ready: set = set()  # pipes of in-flight groups whose answer has arrived
    barriers = iter(sorted(set(due) | {steps - 1}))
    barrier = next(barriers)  # no group acts past this step until it is passed
    seconds_update = 0.0
    while True:
        for gi, venv in enumerate(venvs):
            if gi not in in_flight and t_next[gi] <= barrier:
                action = act(gi, obs[gi], t_next[gi])
                venv.step_async(action)
                record[gi][2].append(action)
                t_next[gi] += 1
                in_flight.add(gi)
        if all(t == barrier + 1 for t in t_next):
            if barrier in due:  # every group's step is in flight meanwhile
                seconds_update += update(barrier)
            if barrier == steps - 1:
                break
            barrier = next(barriers)
            continue
        # one wait for whichever step comes back first (a group is back when all its envs are)
        ready.update(wait([p for gi in in_flight for p in venvs[gi].parent_pipes if p not in ready]))
        for gi in sorted(in_flight):
            if ready.issuperset(venvs[gi].parent_pipes):
                ready.difference_update(venvs[gi].parent_pipes)
                _receive(venvs[gi], record[gi], obs, gi)
                in_flight.discard(gi)
    for gi in sorted(in_flight):
        _receive(venvs[gi], record[gi], obs, gi)
    return record, seconds_update


def _receive(venv, record: tuple, obs: list, gi: int) -> None:
    o, _, _, _, info = venv.step_wait()
    obs[gi] = o
    frames, states, _, successes = record
    frames.append(o["pixels"][:, -3:].copy())
    states.append(o["state"].copy())
    successes.append(np.asarray(info["success"], bool).copy())


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
