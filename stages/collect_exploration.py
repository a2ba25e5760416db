"""Stage collect_exploration: a reward-free exploration dataset for FB pretraining.

inputs:  none (config: tasks, env, exploration, runtime)
outputs: ``<data>/exploration.zarr`` (the agent's episodes), ``<data>/exploration_baseline.zarr``
         (uniform-random episodes, for the coverage comparison), ``<data>/exploration_coverage/``
         (``<task>.png`` plots) and ``<data>/exploration_metrics.json``
A killed run resumes from its last committed episode (hidden ``.<name>.partial`` stores).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from genreward.agents.collect import Plan, collect, collect_policy_free
from genreward.agents.config import ExplorationConfig
from genreward.agents.coverage import coverage, plot_coverage
from genreward.agents.explore import RandomExplorer, RNDExplorer
from genreward.agents.replay import TransitionBuffer
from genreward.config import Config
from genreward.envs.config import ACTION_DIM, STATE_DIM
from genreward.store.artifacts import check_finite, open_artifact
from genreward.store.atomic import atomic_dir, write_json_atomic
from genreward.store.episodes import EpisodeWriter
from stages.table import Stage

log = logging.getLogger(__name__)


def _explorers(cfg: Config, algorithm: str, plan: Plan, writer: EpisodeWriter, seed: int):
    """``task_id -> (explorer, replay buffer)`` for :func:`collect`.

    RND with ``agent_per_task`` builds a fresh agent and buffer when each task starts (seeded by
    task, so a resumed run rebuilds the same agent); otherwise one agent learns across all tasks.
    A resumed run refills the buffer with the committed episodes that agent had seen.
    """
    ex, env = cfg.exploration, cfg.env
    if algorithm != "rnd":
        random = RandomExplorer()
        return lambda task_id: (random, None)
    rows_per_ep = env.agent_steps + 1
    obs_shape = (3 * env.frame_stack, env.image_size, env.image_size)
    current: dict[int, tuple] = {}

    def build(task_id: int):
        key = task_id if ex.agent_per_task else 0
        if key in current:
            return current[key]
        current.clear()  # a finished task's agent is not needed any more
        explorer = RNDExplorer(
            obs_shape,
            ex,
            env.frame_stack,
            device=cfg.resolve_device(),
            seed=seed + (1000 * task_id if ex.agent_per_task else 0),
            horizon=env.agent_steps,
        )
        eps = plan.episodes_per_task if ex.agent_per_task else plan.total
        buffer = TransitionBuffer(eps * rows_per_ep, (3, env.image_size, env.image_size), STATE_DIM, ACTION_DIM)
        first = task_id * plan.episodes_per_task if ex.agent_per_task else 0
        lo, hi = first * rows_per_ep, min(writer.committed_rows, (first + eps) * rows_per_ep)
        if hi > lo:  # resuming: refill the agent's replay with what it had already collected
            g = writer.group
            for name in ("obs", "state", "action", "valid", "episode_start"):
                getattr(buffer, name)[: hi - lo] = check_finite(g[name][lo:hi], writer.partial, name)
            buffer.n = hi - lo
            explorer.t = buffer.n // rows_per_ep * env.agent_steps  # the clock it had reached
        current[key] = (explorer, buffer)
        return current[key]

    return build


def _collect_one(
    cfg: Config, path: Path, algorithm: str, episodes_per_task: int, expert_fraction: float, seed: int
) -> dict:
    ex: ExplorationConfig = cfg.exploration
    env = cfg.env
    # no agent in the loop (uniform random): workers run whole episodes on their own
    collector = "policy_free" if algorithm == "random" else "lock_step"
    fingerprint = {
        "algorithm": algorithm,
        "collector": collector,
        "episodes_per_task": episodes_per_task,
        "expert_fraction": expert_fraction,
        "seed": seed,
        "tasks": list(cfg.tasks),
        "env": env.model_dump(mode="json"),
        "exploration": ex.model_dump(mode="json"),
    }
    plan = Plan(cfg.tasks, episodes_per_task, expert_fraction)
    writer = EpisodeWriter(
        path,
        fingerprint,
        chunk_rows=ex.chunk_rows,
        attrs={
            "tasks": list(cfg.tasks),
            "algorithm": algorithm,
            "frame_shape": [3, env.image_size, env.image_size],
            "episode_rows": env.agent_steps + 1,
            "uses_demonstrations": expert_fraction > 0,
        },
    )
    resumed = writer.committed_episodes
    if resumed:
        log.info("%s: resuming after %d committed episodes", path.name, resumed)
    explorer_for_task = _explorers(cfg, algorithm, plan, writer, seed)
    from genreward.progress import progress_bar

    t0 = time.perf_counter()
    with progress_bar(
        plan.total, f"collect {algorithm}", enabled=cfg.runtime.progress, unit="episode", initial=resumed
    ) as bar:
        if collector == "policy_free":
            stats = collect_policy_free(
                writer, plan, env, cfg.runtime.num_workers, seed, ex.expert_noise, progress=bar.update
            )
        else:
            stats = collect(
                writer,
                explorer_for_task,
                plan,
                env,
                cfg.runtime.num_workers,
                seed,
                ex.update_every,
                expert_noise=ex.expert_noise,
                progress=bar.update,
            )
    wall = time.perf_counter() - t0
    params = cfg.section("env", "exploration", "tasks", "runtime")
    writer.finish(params, attrs={"resumed_from_episode": resumed})
    log.info(
        "%s: %d episodes, %d env steps in %.1f s (%.1f steps/s; %d updates in %.1f s)",
        path.name,
        stats.episodes,
        stats.env_steps,
        wall,
        stats.env_steps / max(wall, 1e-9),
        stats.updates,
        stats.seconds_update,
    )
    return {
        "episodes_collected": stats.episodes,
        "env_steps": stats.env_steps,
        "seconds": wall,
        "env_steps_per_s": stats.env_steps / max(wall, 1e-9),
        "updates": stats.updates,
        "update_seconds": stats.seconds_update,
        "resumed_from_episode": resumed,
    }


def _arrays(path: Path) -> dict[str, np.ndarray]:
    g = open_artifact(path, "exploration")
    n = int(g.attrs["committed_rows"])
    return {k: check_finite(g[k][:n], path, k) for k in ("state", "episode_start", "success", "task_id")}


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    ex = cfg.exploration
    metrics: dict = {"algorithm": ex.algorithm, "collection": {}, "coverage": {}}
    metrics["collection"]["dataset"] = _collect_one(
        cfg, outputs["dataset"], ex.algorithm, ex.episodes_per_task, ex.expert_fraction, cfg.seed
    )
    sets = {ex.algorithm: _arrays(outputs["dataset"])}
    if ex.baseline_random_episodes > 0:
        metrics["collection"]["baseline"] = _collect_one(
            cfg, outputs["baseline"], "random", ex.baseline_random_episodes, 0.0, cfg.seed + 1
        )
        sets["random"] = _arrays(outputs["baseline"])
    with atomic_dir(outputs["plots"]) as tmp:
        for tid, task in enumerate(cfg.tasks):
            per = {}
            for name, a in sets.items():
                m = a["task_id"] == tid
                metrics["coverage"].setdefault(task, {})[name] = coverage(
                    a["state"][m], a["episode_start"][m], a["success"][m]
                )
                per[name] = (a["state"][m], a["episode_start"][m])
            plot_coverage(per, f"{task}: exploration coverage", tmp / f"{task}.png")
    for name, a in sets.items():
        metrics["coverage"].setdefault("all", {})[name] = coverage(a["state"], a["episode_start"], a["success"])
    return write_json_atomic(outputs["metrics"], metrics)


STAGE = Stage(
    "collect_exploration",
    "Reward-free exploration dataset (RND by default) and a uniform-random baseline",
    run,
    outputs={
        "dataset": "{data}/exploration.zarr",
        "baseline": "{data}/exploration_baseline.zarr",
        "plots": "{data}/exploration_coverage",
        "metrics": "{data}/exploration_metrics.json",
    },
    params=("tasks", "seed", "env", "exploration", "runtime"),
)
