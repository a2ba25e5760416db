"""Vectorised, resumable collection of reward-free episodes into an exploration dataset.

Two collectors, both writing through an :class:`EpisodeWriter` (each episode's commit is atomic)
and both giving episode ``k`` of the dataset the env seed ``seed + k``, so a killed and resumed
run collects the same episodes it would have collected without the kill:

- :func:`collect`, for explorers that act from pixels and learn (RND): envs run in worker
  processes (:class:`~genreward.envs.pool.EnvPool`, one renderer each), in two groups that each
  get their next action from the agent in the main process as soon as their step is back. All
  Meta-World episodes last exactly ``episode_length`` steps, so a round resets every env, steps
  them to the end, and commits the round's episodes together (written by a thread while the
  next round runs).
- :func:`collect_policy_free`, for uniform-random (and scripted-expert) episodes: each worker
  process runs whole episodes on its own, with no per-step exchange with the main process and
  no waiting for the slowest env of a round; the main process only writes the episodes, in
  order. Episode ``k``'s actions come from its own generator (``[seed, k]``), so the data does
  not depend on the number of workers either.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

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


# While the lock-step collector runs, a thread that holds the GIL (the episode writer, Zarr's
# I/O thread) gives it up this soon after the main loop asks for it: the main loop answers a
# worker whose step is back within this time, not within Python's default 5 ms. Measured on 2
# cores, 2 workers, 16 episodes, interleaved: wall time 0.996, 0.932, 0.940, 0.904 of the
# default's (median 0.936).
GIL_SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def _gil_switch_interval(seconds: float) -> Iterator[None]:
    """The interpreter's thread switch interval at most ``seconds`` inside the block (it is one
    setting per process), restored afterwards."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


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

    Each env runs in its own worker process (:class:`~genreward.envs.pool.EnvPool`: per step
    the action goes out and the newest frame, state and success come back through shared
    memory; the frames are stacked here). The envs are split into two groups
    (:func:`env_groups`): a group that is back from its step is given its next action at once,
    while the other steps, so the workers do not wait for the slowest env of the round nor for
    the agent acting for another group. Updates are due every ``update_every`` steps; before
    one, every group finishes acting for that step, and the update runs while their steps are
    in flight. So the data is the same whatever the timing: round ``r``'s group ``j`` draws from
    its own generator ``[seed, first episode of r, first env of j]``, updates and ``reset`` from
    the collector's. A round's episodes are committed together, after the round.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from genreward.envs.experts import expert_policy
    from genreward.envs.pool import EnvPool

    stats = CollectStats()
    rng = np.random.default_rng([seed, writer.committed_episodes])
    step_count = writer.committed_rows  # the collector's clock: paces updates (explorers keep their own)
    k = writer.committed_episodes
    groups = env_groups(num_envs)
    # A round's episodes are written by one thread while the next round runs, in order; a write
    # in flight when something fails still finishes (each write commits its episodes at once).
    writes = ThreadPoolExecutor(1, thread_name_prefix="episode-writer")
    writing = None  # (write in flight, its episodes)

    def written() -> None:  # wait for the write in flight; its episodes count as collected
        nonlocal writing
        if writing is not None:
            (future, count), writing = writing, None
            future.result()
            if progress is not None:
                progress(count)

    with writes, _gil_switch_interval(GIL_SWITCH_INTERVAL):
        while k < plan.total:
            task_id = plan.task_id(k)
            task = plan.tasks[task_id]
            last_of_task = (task_id + 1) * plan.episodes_per_task
            explorer, buffer = explorer_for_task(task_id)
            expert = expert_policy(task) if plan.expert_fraction > 0 else None

            def round_of(k: int):
                """Round starting at episode ``k``: (episodes kept, active groups, env seeds)."""
                n = min(num_envs, last_of_task - k)
                # a round's spare envs (the task's last episodes are fewer than the envs) stay idle
                # when a whole group is spare, and otherwise run padding episodes that are not kept
                active = [g for g in groups if g[0] < n]
                m = int(active[-1][-1]) + 1  # envs stepped (n of them kept)
                return (
                    n,
                    active,
                    [seed + k + i for i in range(n)] + [seed + 10_000_000 + k + i for i in range(m - n)],
                )

            with EnvPool(task, env_cfg, num_envs, num_envs, seed) as pool:
                n, active, seeds = round_of(k)
                pool.reset(range(len(seeds)), seeds)
                back: list[int] = []  # envs whose reset for the round is back already
                while k < last_of_task:
                    m = len(seeds)
                    experts = np.array(
                        [expert is not None and plan.is_expert(k + i) if i < n else False for i in range(m)]
                    )
                    following = round_of(k + n) if k + n < last_of_task else None
                    t0 = time.perf_counter()
                    if hasattr(explorer, "reset"):
                        explorer.reset(m, rng)
                    group_rngs = [np.random.default_rng([seed, k, int(g[0])]) for g in active]
                    expert_rows = [np.flatnonzero(experts[g]) for g in active]  # each group's expert envs

                    def act(gi: int, o: dict, t: int) -> np.ndarray:
                        a = explorer.act(o["pixels"], step_count + t * n, group_rngs[gi], envs=active[gi])
                        for j in expert_rows[gi]:
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
                        due = [
                            t for t in range(env_cfg.agent_steps) if (step_count + (t + 1) * n) % (update_every * n) < n
                        ]
                    record, seconds_update, back = _round(
                        pool, active, act, update, due, env_cfg, back, following[2] if following else None
                    )
                    stats.seconds_update += seconds_update
                    stats.seconds_env += time.perf_counter() - t0 - seconds_update
                    step_count += env_cfg.agent_steps * n
                    stats.env_steps += env_cfg.agent_steps * m * env_cfg.action_repeat
                    frames, states, actions, successes = record
                    episodes = [
                        Episode(
                            obs=frames[i], state=states[i], action=actions[i], success=successes[i], task_id=task_id
                        )
                        for i in range(n)
                    ]
                    if following is None:
                        pool.close(wait=False)  # the workers free their envs while the last episodes are written
                    written()
                    writing = (writes.submit(writer.extend, episodes), len(episodes))  # while the next round runs
                    for ep in episodes:
                        if buffer is not None:
                            buffer.add(ep)
                        stats.episodes += 1
                        k += 1
                    if following is not None:
                        n, active, seeds = following
        written()
    return stats


def _round(
    pool,
    groups: list[np.ndarray],
    act,
    update,
    due: list[int],
    env_cfg: EnvConfig,
    back: Sequence[int] = (),
    following: Sequence[int] | None = None,
):
    """One round of episodes on ``pool``'s envs ``0 .. groups[-1][-1]``, whose resets were sent
    (``back``: those already back): each group acts (``act(group, obs, t)``) as soon as its step
    ``t - 1`` (or its reset) is back; ``update(t)`` runs for every ``t`` in ``due`` once every
    group has acted for step ``t`` and before any acts for ``t + 1``. ``following``: the next
    round's env seeds (one per env it steps); a group's envs are reset for it as soon as the
    group's last step is back, while the other groups finish.

    Returns ``(frames, states, actions, successes)`` (one row per env), the seconds spent
    updating, and the envs whose reset for the next round is back already."""
    steps, stack = env_cfg.agent_steps, env_cfg.frame_stack
    m = int(groups[-1][-1]) + 1
    frames = np.empty((m, steps + 1) + pool.frames.shape[1:], np.uint8)
    states = np.empty((m, steps + 1) + pool.states.shape[1:], np.float32)
    actions = np.empty((m, steps) + pool.actions.shape[1:], np.float32)
    successes = np.zeros((m, steps + 1), bool)
    # The per-step path runs on a core a worker has just left (its caches cold), between a
    # worker's answer and its next command: plain ints and lists, no array built per step.
    spans = [(int(g[0]), int(g[-1]) + 1) for g in groups]  # groups are contiguous
    group_of = [gi for gi, (lo, hi) in enumerate(spans) for _ in range(lo, hi)]
    pixels_shape = (3 * stack,) + frames.shape[3:]
    # the observation at step t: frames t-stack+1 .. t, oldest first; before step stack-1 the first
    # frame is repeated (rows listed here), from then on a view of `frames`
    first_rows = [np.maximum(np.arange(t - stack + 1, t + 1), 0) for t in range(stack - 1)]
    t_next = [0] * len(groups)  # the step each group acts for next (the row its in-flight command returns)
    waiting = [len(g) for g in groups]  # envs of each group whose command is in flight (the resets first)
    resetting: set[int] = set()  # envs reset for the next round
    early: list[int] = []  # ... whose reset is back

    def done(i: int) -> None:  # env i's command is back
        if i in resetting:
            early.append(i)
            return
        gi = group_of[i]
        t = t_next[gi]
        frames[i, t], states[i, t] = pool.frames[i], pool.states[i]
        if t:  # no success before the first step (the row stays False)
            successes[i, t] = pool.successes[i]
        waiting[gi] -= 1
        if not waiting[gi] and t == steps and following is not None:  # the group's round is over
            ahead = [int(e) for e in groups[gi] if e < len(following)]
            pool.reset(ahead, [following[e] for e in ahead])
            resetting.update(ahead)

    for i in back:
        done(i)
    barriers = iter(sorted(set(due) | {steps - 1}))
    barrier = next(barriers)  # no group acts past this step until it is passed
    seconds_update = 0.0
    while True:
        for gi, (lo, hi) in enumerate(spans):
            t = t_next[gi]
            if not waiting[gi] and t <= barrier:
                recent = frames[lo:hi, t - stack + 1 : t + 1] if t >= stack - 1 else frames[lo:hi, first_rows[t]]
                pixels = recent.reshape((hi - lo,) + pixels_shape)
                actions[lo:hi, t] = act(gi, {"pixels": pixels, "state": states[lo:hi, t]}, t)
                pool.step(range(lo, hi), actions[lo:hi, t])
                t_next[gi], waiting[gi] = t + 1, hi - lo
        if all(t == barrier + 1 for t in t_next):  # every group's step `barrier` is in flight
            if barrier in due:
                seconds_update += update(barrier)
            if barrier == steps - 1:
                break
            barrier = next(barriers)
            continue
        for i in pool.wait():
            done(i)
    while any(waiting):
        for i in pool.wait():
            done(i)
    return (frames, states, actions, successes), seconds_update, early


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
    results = run_jobs(partial(PolicyFreeWorker, env_cfg, seed, expert_noise), jobs, num_workers)
    with contextlib.closing(results):  # an error here stops the workers too
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
