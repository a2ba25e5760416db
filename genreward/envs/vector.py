"""Vectorised Meta-World pixel envs: one process and one renderer per env (gymnasium's AsyncVectorEnv)."""

from __future__ import annotations

import os
from functools import partial
from typing import Sequence

from genreward.envs.config import EnvConfig
from genreward.envs.tasks import check_task


def _make(task: str, cfg: EnvConfig, seed: int, parent_pid: int | None = None):
    # In an AsyncVectorEnv worker process (not in the parent, which builds one env for the
    # spaces): one torch thread.
    if parent_pid is not None and os.getpid() != parent_pid:
        from genreward.runtime import configure_worker

        configure_worker()
    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    return MetaWorldPixelEnv(task, cfg, seed)


def make_vector_env(
    tasks: str | Sequence[str],
    cfg: EnvConfig,
    num_envs: int,
    seed: int = 0,
    asynchronous: bool = True,
    context: str = "spawn",
):
    """``num_envs`` envs; env ``i`` runs ``tasks[i % len(tasks)]`` with seed ``seed + i``.

    ``spawn`` is the default start method: a forked child must never inherit a live GL context.
    Envs use gymnasium's default autoreset mode (the step after a truncation returns the reset).
    """
    import gymnasium as gym

    from genreward.envs import gl

    gl.configure()  # children inherit MUJOCO_GL through the environment
    task_list = [tasks] if isinstance(tasks, str) else list(tasks)
    if not task_list:
        raise ValueError("make_vector_env: no tasks given")
    for t in task_list:
        check_task(t)
    if num_envs < 1:
        raise ValueError(f"make_vector_env: num_envs must be >= 1, got {num_envs}")
    parent_pid = os.getpid() if asynchronous else None
    fns = [partial(_make, task_list[i % len(task_list)], cfg, seed + i, parent_pid) for i in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context=context)
    return gym.vector.SyncVectorEnv(fns)
