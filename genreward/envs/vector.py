"""Vectorised Meta-World pixel envs: one process and one renderer per env (gymnasium's AsyncVectorEnv).

:func:`make_vector_env` is the gymnasium vector-env API of the pixel envs; the lock-step
collector uses the leaner :class:`genreward.envs.pool.EnvPool`. Both start their workers
through :func:`worker_processes`. Start-up is part of every use's cost, so the worker
processes start light:

- ``AsyncVectorEnv`` builds one env in the parent only to read its spaces and metadata; here
  the parent gets :class:`SpacesOnlyEnv` instead (no MuJoCo model, no renderer). The vector
  env still checks that every worker's spaces equal it.
- ``import genreward`` does not import torch (about 1.3 s of CPU per process) until something
  imports torchvision: a worker steps simulators and never loads it.

Workers render on one thread each: they start with ``LP_NUM_THREADS=0`` unless it is set
already, so Mesa's software rasteriser (llvmpipe, which EGL and OSMesa use when there is no
GPU) draws in the worker's own thread instead of starting one rasteriser thread per core in
every worker. The workers step in lock-step, so without this all their rasteriser threads
wake at once and contend for the cores (measured on 2 cores, 2 workers, 64 px: 16.1-16.4 ms
per vector step with the default, 13.9-14.0 ms with one thread each; one process alone
renders at the same speed either way). A GPU's EGL driver ignores the variable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from functools import partial
from typing import Any, Iterator, Sequence

from genreward.envs.config import EnvConfig
from genreward.envs.tasks import check_task

# Set in the workers' environment: (name, value, whether a value already set is kept). One
# OpenBLAS thread, always: numpy's and scipy's OpenBLAS would otherwise start idle threads in
# every worker, and in the fork server, which must hold no threads when it forks.
WORKER_ENVIRONMENT = (("LP_NUM_THREADS", "0", True), ("OPENBLAS_NUM_THREADS", "1", False))
# Imported once by the fork server the workers start from (genreward.envs._preload; see
# worker_processes).
WORKER_PRELOAD = ("numpy", "metaworld", "genreward.envs.metaworld_env", "genreward.envs.pool", "genreward.envs.probes")
# Read when those modules load: a worker forked from the server keeps the values it had then.
_LOAD_TIME_VARIABLES = ("MUJOCO_GL", "PYOPENGL_PLATFORM")
# Our fork server: the load-time variables it started with and its pid, or "foreign": True when
# something else had started multiprocessing's fork server first.
_fork_server: dict[str, Any] = {}
_fork_server_lock = threading.RLock()  # also keeps two threads from changing os.environ at once


def _spaces_only_env(cfg: EnvConfig):
    import gymnasium as gym

    from genreward.envs.metaworld_env import MetaWorldPixelEnv, pixel_spaces

    class SpacesOnlyEnv(gym.Env):
        """The spaces and metadata of :class:`MetaWorldPixelEnv` with no simulator behind them."""

        metadata = MetaWorldPixelEnv.metadata
        render_mode = "rgb_array"

        def __init__(self, cfg: EnvConfig):
            self.observation_space, self.action_space = pixel_spaces(cfg)

    return SpacesOnlyEnv(cfg)


def _make(
    task: str, cfg: EnvConfig, seed: int, parent_pid: int | None = None, info_keys=None, environ: dict | None = None
):
    if parent_pid is not None:
        if os.getpid() == parent_pid:  # AsyncVectorEnv reads the spaces from one env in the parent
            return _spaces_only_env(cfg)
        # In an AsyncVectorEnv worker process: the environment of its start, one torch thread.
        from genreward.runtime import configure_worker

        if environ is not None:
            adopt_environment(environ)
        configure_worker()
    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    return MetaWorldPixelEnv(task, cfg, seed, info_keys=info_keys)


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """Processes started inside this block get :data:`WORKER_ENVIRONMENT`; the parent's own
    environment is restored afterwards."""
    before = {name: os.environ.get(name) for name, _, _ in WORKER_ENVIRONMENT}
    for name, value, keep_set in WORKER_ENVIRONMENT:
        if not (keep_set and before[name] is not None):
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def worker_processes() -> Iterator[tuple[Any, dict[str, str]]]:
    """Start env worker processes inside this block: it yields the multiprocessing context to
    start them from and the environment they must run with; each worker calls
    :func:`adopt_environment` with it first (before it makes an env or imports torch).

    On Linux the context is ``forkserver``: a server process, started once per process with
    :data:`WORKER_ENVIRONMENT` and the modules of :data:`WORKER_PRELOAD` imported, forks each
    worker, so a worker does not import Meta-World (with scipy) itself. Measured on 2 cores, an
    EnvPool of 2 envs at 64 px, interleaved: spawned, 1.139-2.007 s from the pool's start to both
    envs reset and 0.168-0.274 s to close; forked from the server, 0.528-0.617 s and
    0.019-0.031 s (a forked worker skips the interpreter's teardown). The server never renders:
    no GL context is ever forked, the reason workers were never plain forks of the main
    process. A worker forked from the server would still carry the environment the server
    started with, hence :func:`adopt_environment`; the variables read when the preloaded modules
    load (``MUJOCO_GL``, ``PYOPENGL_PLATFORM``) cannot change afterwards, so if they differ from
    the server's the workers are spawned instead. Elsewhere they are spawned (on macOS a fork
    after the system's frameworks have loaded is not safe). The fork server is
    ``multiprocessing``'s one per process: if something else started it first (with its own
    modules and environment), the workers are spawned; if it died, it is started again here. A
    module that fails to load in the server is left to the workers, whose error then says what
    is wrong. MPI variables (set under ``srun``) are cleared, or the workers' libraries would
    think they are MPI ranks. One thread at a time runs this block.
    """
    from gymnasium.vector.utils import clear_mpi_env_vars

    from genreward.envs import gl

    gl.configure()  # MUJOCO_GL is read when mujoco loads: set before the server imports it
    with _fork_server_lock, worker_environment(), clear_mpi_env_vars():
        environ = dict(os.environ)
        yield _start_context(environ), environ


def _server_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)


def _start_context(environ: dict[str, str]):
    """The fork server's context if it is ours and was started with ``environ``'s load-time
    variables, else spawn (see :func:`worker_processes`)."""
    import multiprocessing as mp
    from multiprocessing import forkserver

    if not sys.platform.startswith("linux"):
        return mp.get_context("spawn")
    loaded = tuple(environ.get(name) for name in _LOAD_TIME_VARIABLES)
    if not _fork_server and _server_pid() is not None:
        _fork_server["foreign"] = True  # started by something else, with its modules and environment
    if not _fork_server.get("foreign") and _fork_server.get("pid") == _server_pid():
        # ours, or none yet: started here (again, as ours, if it died); the server imports in the
        # background and the first fork waits for it
        mp.set_forkserver_preload(["genreward.envs._preload"])
        forkserver.ensure_running()
        if "pid" not in _fork_server or _server_pid() != _fork_server["pid"]:
            _fork_server.update(loaded=loaded, pid=_server_pid())
    # A server started again elsewhere (after it died) is not ours any more: spawn from then on.
    ours = not _fork_server.get("foreign") and _fork_server["pid"] == _server_pid()
    return mp.get_context("forkserver" if ours and _fork_server["loaded"] == loaded else "spawn")


def adopt_environment(environ: dict[str, str]) -> None:
    """In a worker process, before anything else: run with ``environ`` (from
    :func:`worker_processes`) as the environment."""
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)


def _task_list(tasks: str | Sequence[str], caller: str) -> list[str]:
    from genreward.envs import gl

    gl.configure()  # children inherit MUJOCO_GL through the environment
    task_list = [tasks] if isinstance(tasks, str) else list(tasks)
    if not task_list:
        raise ValueError(f"{caller}: no tasks given")
    for t in task_list:
        check_task(t)
    return task_list


def _env_fns(task_list, cfg, num_envs: int, seed: int, parent_pid, info_keys, environ=None) -> list:
    """Env ``i < num_envs`` runs ``task_list[i % len]`` with seed ``seed + i``."""
    return [
        partial(_make, task_list[i % len(task_list)], cfg, seed + i, parent_pid, info_keys, environ)
        for i in range(num_envs)
    ]


def make_vector_env(
    tasks: str | Sequence[str],
    cfg: EnvConfig,
    num_envs: int,
    seed: int = 0,
    asynchronous: bool = True,
    context: str | None = None,
    info_keys: Sequence[str] | None = None,
    copy: bool = True,
):
    """``num_envs`` envs; env ``i`` runs ``tasks[i % len(tasks)]`` with seed ``seed + i``.

    Asynchronous envs run in worker processes started by :func:`worker_processes` (on Linux
    forked from a server that has Meta-World loaded and never renders: a worker never inherits
    a GL context), each with the environment of its start; ``context`` names a multiprocessing
    start method to use instead (``fork`` would copy any GL context this process holds). Envs
    use gymnasium's default autoreset mode (the step after a truncation returns the reset).
    ``info_keys`` keeps only those keys of each env's info (less to send and batch per step);
    ``copy=False`` returns observations that the next step overwrites (gymnasium's shared
    memory), for callers that copy what they keep.
    """
    import gymnasium as gym

    task_list = _task_list(tasks, "make_vector_env")
    if num_envs < 1:
        raise ValueError(f"make_vector_env: num_envs must be >= 1, got {num_envs}")
    if not asynchronous:
        return gym.vector.SyncVectorEnv(_env_fns(task_list, cfg, num_envs, seed, None, info_keys), copy=copy)
    with worker_processes() as (ctx, environ):
        fns = _env_fns(task_list, cfg, num_envs, seed, os.getpid(), info_keys, environ)
        return gym.vector.AsyncVectorEnv(fns, context=context or ctx.get_start_method(), copy=copy)
