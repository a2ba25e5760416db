"""Env jobs in worker processes, each holding its own envs (and GL contexts).

:func:`run_jobs` yields ``worker(job)`` for every job, in any order (jobs start in their order,
at most two per worker ahead), with ``worker`` built once per process by ``make_worker`` (a
picklable callable, e.g. ``functools.partial(ClipWorker, cfg, env_cfg)``); ``workers <= 1`` runs
inline. The workers start as :func:`genreward.envs.vector.worker_processes` says (forked from a
server that never renders: no worker inherits a GL context). Each worker's ``close()`` frees its
envs when the process ends. Each worker process runs one torch thread
(:func:`genreward.runtime.configure_worker`). :func:`rollout` is the one episode loop of the
workers that run whole episodes (probes, policy-free exploration).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator

_WORKER: Any = None


def _init_worker(make_worker: Callable[[], Any], environ: dict[str, str]) -> None:
    global _WORKER
    from multiprocessing.util import Finalize

    from genreward.envs.vector import adopt_environment
    from genreward.runtime import configure_worker

    adopt_environment(environ)
    configure_worker()  # one torch thread, before the worker's first torch work
    _WORKER = make_worker()
    # Run as the worker process ends, before the interpreter's exit handlers (a GL library's
    # own, e.g. EGL's eglTerminate, would end the display under the contexts still open: every
    # worker printed a traceback at exit), and also where the process ends without them (a
    # worker forked from the server leaves with os._exit).
    Finalize(None, _WORKER.close, exitpriority=10)


def _run_job(job: Any) -> Any:
    assert _WORKER is not None
    return _WORKER(job)


def run_jobs(
    make_worker: Callable[[], Any], jobs: Iterable[Any], workers: int = 1, progress: bool = False, desc: str = "jobs"
) -> Iterator[Any]:
    """Yield ``worker(job)`` per job (any order), in ``workers`` worker processes (1: inline)."""
    from genreward.progress import progress_bar

    jobs = list(jobs)
    bar = progress_bar(len(jobs), desc, enabled=progress)
    if workers <= 1:
        worker = make_worker()
        try:
            for job in jobs:
                yield worker(job)
                bar.update()
        finally:
            worker.close()
            bar.close()
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from genreward.envs.vector import worker_processes

    todo = iter(jobs)
    with worker_processes() as (ctx, environ):
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(make_worker, environ))
        # At most 2 jobs per worker in flight, in job order: a result is dropped once handed out,
        # so a long run holds a few results in memory, not all of them. These first submissions
        # start the workers inside this block (the executor starts one per submission unless one
        # is idle; any started later still adopt `environ`).
        try:
            running = {pool.submit(_run_job, job) for job in itertools.islice(todo, 2 * workers)}
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    with pool:
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                running |= {pool.submit(_run_job, job) for job in itertools.islice(todo, len(done))}
                for fut in done:
                    yield fut.result()
                    bar.update()
        finally:
            for fut in running:
                fut.cancel()
            bar.close()


class ExpertEnvs:
    """Base of env workers: one pixel env (``env_cfg``, rendered at ``render_size``) and the
    scripted expert per task, made on first use; ``close()`` frees them."""

    def __init__(self, env_cfg, render_size: tuple[int, int] | None = None):
        self.env_cfg, self.render_size = env_cfg, render_size
        self._envs: dict[str, tuple[Any, Any]] = {}

    def expert_env(self, task: str) -> tuple[Any, Any]:
        """``(env, expert policy)`` of ``task``."""
        if task not in self._envs:
            from genreward.envs.experts import expert_policy
            from genreward.envs.metaworld_env import MetaWorldPixelEnv

            self._envs[task] = (
                MetaWorldPixelEnv(task, self.env_cfg, render_size=self.render_size),
                expert_policy(task),
            )
        return self._envs[task]

    def close(self) -> None:
        for env, _ in self._envs.values():
            env.close()
        self._envs.clear()


def rollout(env, seed: int, act: Callable[[int, dict], Any]) -> dict[str, Any]:
    """One whole episode of ``env`` (a :class:`~genreward.envs.metaworld_env.MetaWorldPixelEnv`)
    from ``reset(seed=seed)``, ``env.cfg.agent_steps`` long; ``act(t, obs)`` gives step t's
    action, clipped to [-1, 1] as float32. Returns ``frames`` uint8 [L+1, 3, H, W] (each
    observation's newest frame), ``states`` float32 [L+1, S], ``actions`` float32 [L, A],
    ``rewards`` float32 [L] and ``successes`` bool [L] (success on each step)."""
    import numpy as np

    obs, _ = env.reset(seed=seed)
    frames, states, actions, rewards, successes = [obs["pixels"][-3:]], [obs["state"]], [], [], []
    for t in range(env.cfg.agent_steps):
        action = np.clip(act(t, obs), -1.0, 1.0).astype(np.float32)
        obs, reward, _, _, info = env.step(action)
        frames.append(obs["pixels"][-3:])
        states.append(obs["state"])
        actions.append(action)
        rewards.append(reward)
        successes.append(bool(info["success"]))
    return {
        "frames": np.stack(frames).astype(np.uint8),
        "states": np.stack(states).astype(np.float32),
        "actions": np.stack(actions),
        "rewards": np.asarray(rewards, np.float32),
        "successes": np.asarray(successes, bool),
    }
