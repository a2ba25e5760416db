"""Pixel envs in worker processes with a lean per-step exchange, several envs per process.

The lock-step collector's envs (:func:`genreward.agents.collect.collect`): ``num_workers``
worker processes holding ``num_envs`` envs between them, env ``i`` in worker
``i % num_workers``. Per step the main process writes an env's action into shared memory and
sends a few bytes naming the env; the worker steps it, writes the newest frame, the state and
the success flag into shared memory and answers with the env's index. Nothing else crosses the
pipe: no pickled actions or info dicts, no stacked frames (the caller stacks them), and no
copy of the observation in between. A worker runs its commands in the order they come, so with
two envs per worker the main process acts for one while the worker steps the other and the
worker does not wait for actions.

Workers start light and render on one thread each (:func:`genreward.envs.vector.worker_processes`:
forked from a server that has Meta-World loaded, no torch, ``LP_NUM_THREADS=0``, one torch
thread), and run under Linux's batch scheduling policy (:func:`_batch_scheduling`). A worker
that raises answers with its error, which :meth:`EnvPool.wait` raises in the main process; a
worker that dies (killed, out of memory) is noticed through a pidfd (:meth:`EnvPool._end_fd`).
"""

from __future__ import annotations

import os
import select
import struct
from typing import Iterable, Sequence

import numpy as np

from genreward.envs.config import ACTION_DIM, STATE_DIM, EnvConfig

_COMMAND = struct.Struct("<cHq")  # operation, env index, reset seed
_FINISHED = struct.Struct("<cH")  # _DONE, the env index (the start-up answer is _DONE alone)
_STEP, _RESET, _CLOSE = b"s", b"r", b"q"
_DONE, _ERROR = b"k", b"e"


class EnvWorkerError(RuntimeError):
    """An env worker raised or died."""


def _shared(ctx, typecode: str, shape: tuple[int, ...], dtype) -> tuple:
    raw = ctx.RawArray(typecode, int(np.prod(shape)))
    return raw, shape, dtype


def _view(spec: tuple) -> np.ndarray:
    raw, shape, dtype = spec
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _error(summary: str, details: str) -> bytes:
    return _ERROR + summary.encode(errors="replace") + b"\0" + details.encode(errors="replace")


def _batch_scheduling() -> None:
    """Linux: this process never preempts another when it wakes up (``SCHED_BATCH``; same
    priority otherwise, no privileges needed). A worker is woken by the main process's command:
    with the default policy it could take the core from the main process in the middle of
    sending commands, which then waited for the next scheduler tick (measured on 2 cores, two
    workers: ~1 % of sends took 1-8 ms, 0.2-0.3 s in all per 4,096 env steps; with this the
    longest took 2.5-2.9 ms, and those over 1 ms 3-4 ms in all)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed here: the default policy
        pass


def _worker(conn, environ: dict, task: str, cfg: EnvConfig, env_ids: list[int], seed: int, shared: dict) -> None:
    from genreward.envs.vector import adopt_environment
    from genreward.runtime import configure_worker

    adopt_environment(environ)
    configure_worker()  # one torch thread, if anything imports torch
    _batch_scheduling()
    import traceback

    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from genreward.envs.probes import probe_env_config

    frames, states, successes, actions = (_view(shared[k]) for k in ("frames", "states", "successes", "actions"))
    envs: dict[int, MetaWorldPixelEnv] = {}
    try:
        try:
            one_frame = probe_env_config(cfg)  # the newest frame is all that crosses; the caller stacks
            for i in env_ids:
                envs[i] = MetaWorldPixelEnv(task, one_frame, seed + i, info_keys=("success",))
        except Exception as err:
            conn.send_bytes(_error(f"making its envs: {type(err).__name__}: {err}", traceback.format_exc()))
            return
        conn.send_bytes(_DONE)
        while True:
            op, i, reset_seed = _COMMAND.unpack(conn.recv_bytes())
            if op == _CLOSE:
                return
            try:
                if op == _RESET:
                    obs, _ = envs[i].reset(seed=int(reset_seed))
                    success = False
                else:
                    obs, _, _, _, info = envs[i].step(actions[i])
                    success = bool(info["success"])
                frames[i] = obs["pixels"]
                states[i] = obs["state"]
                successes[i] = success
            except Exception as err:
                what = "resetting" if op == _RESET else "stepping"
                conn.send_bytes(_error(f"{what} env {i}: {type(err).__name__}: {err}", traceback.format_exc()))
                return
            conn.send_bytes(_FINISHED.pack(_DONE, i))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):  # the main process is gone or interrupted
        return
    finally:
        for env in envs.values():
            env.close()  # GL contexts freed before the interpreter tears down


class EnvPool:
    """``num_envs`` pixel envs of one task in ``num_workers`` worker processes.

    ``frames`` (uint8 ``[num_envs, 3, H, W]``, each env's newest frame, upright), ``states``
    (float32 ``[num_envs, STATE_DIM]``) and ``successes`` (bool ``[num_envs]``, success on the
    last step; False after a reset) are shared memory: env ``i``'s entries hold the result of
    its last finished command until the next command for it is sent. Env ``i`` is made with seed
    ``seed + i``. Use as a context manager, or call :meth:`close`. ``context`` names a
    multiprocessing start method to use instead of :func:`~genreward.envs.vector.worker_processes`'s.
    """

    def __init__(
        self, task: str, cfg: EnvConfig, num_envs: int, num_workers: int, seed: int = 0, context: str | None = None
    ):
        import multiprocessing as mp

        from genreward.envs.tasks import check_task
        from genreward.envs.vector import worker_processes

        task = check_task(task)
        if num_workers < 1 or num_envs < num_workers:
            raise ValueError(f"EnvPool: needs 1 <= num_workers <= num_envs, got {num_workers} workers, {num_envs} envs")
        self.task, self.cfg, self.num_envs, self.num_workers = task, cfg, num_envs, num_workers
        size = cfg.image_size
        shared = {  # plain shared memory (no lock), whatever the start method
            "frames": _shared(mp, "B", (num_envs, 3, size, size), np.uint8),
            "states": _shared(mp, "f", (num_envs, STATE_DIM), np.float32),
            "successes": _shared(mp, "B", (num_envs,), np.bool_),
            "actions": _shared(mp, "f", (num_envs, ACTION_DIM), np.float32),
        }
        self.frames, self.states, self.successes, self.actions = (
            _view(shared[k]) for k in ("frames", "states", "successes", "actions")
        )
        self._conns, self._procs, self._pidfds = [], [], []
        # Commands sent to each worker and not answered yet. The first answer of each worker says
        # its envs are made: commands sent before it wait in the pipe, so a worker that is ready
        # starts on them without waiting for the others (a failure to make the envs is raised by
        # the first wait()).
        self._pending = [1] * num_workers
        self.closed, self._stopping = False, False
        try:
            with worker_processes() as (ctx, environ):
                if context is not None:
                    ctx = mp.get_context(context)
                for w in range(num_workers):
                    parent, child = ctx.Pipe()
                    self._conns.append(parent)  # closed by close(), whatever happens next
                    ids = list(range(w, num_envs, num_workers))
                    try:
                        proc = ctx.Process(
                            target=_worker,
                            args=(child, environ, task, cfg, ids, seed, shared),
                            name=f"env-worker-{w}",
                            daemon=True,
                        )
                        proc.start()
                    finally:
                        child.close()  # the worker's end lives on in the worker only
                    self._procs.append(proc)
            self._poller = select.poll()  # one for the pool's life: no selector built per wait
            self._fds: dict[int, tuple[int, bool]] = {}  # fd -> (worker, is its process's end)
            for w, (conn, proc) in enumerate(zip(self._conns, self._procs)):
                for fd, sentinel in ((conn.fileno(), False), (self._end_fd(proc), True)):
                    self._poller.register(fd, select.POLLIN)
                    self._fds[fd] = (w, sentinel)
        except BaseException:
            self.close(terminate=True)
            raise

    def _end_fd(self, proc) -> int:
        """A file descriptor that reads as ready once ``proc`` has ended. On Linux a pidfd: the
        sentinel of a worker forked from the fork server is the server's status pipe, which
        also reads as ready if the server dies while the worker runs."""
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux (>= 5.3), or the process is gone already
            return proc.sentinel
        self._pidfds.append(fd)
        return fd

    def worker_of(self, env: int) -> int:
        return env % self.num_workers

    def reset(self, envs: Iterable[int], seeds: Sequence[int]) -> None:
        """Start resetting ``envs`` with ``seeds`` (one each); :meth:`wait` reports them done."""
        for i, s in zip(envs, seeds, strict=True):
            self._send(int(i), _RESET, int(s))

    def step(self, envs: Iterable[int], actions: np.ndarray) -> None:
        """Start stepping ``envs`` with ``actions`` (one row each); :meth:`wait` reports them done."""
        for i, a in zip(envs, actions, strict=True):
            self.actions[i] = a
            self._send(int(i), _STEP, 0)

    def wait(self, timeout: float | None = None) -> list[int]:
        """Envs whose command finished (at most one per worker per call, as many as are back);
        blocks until there is one (or ``timeout`` seconds pass: then ``[]``). Raises
        :class:`EnvWorkerError` if a worker failed or died; the pool is then of no further use
        (close it)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not any(self._pending):
                raise RuntimeError("EnvPool.wait: no command is in flight")
            left = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            done, ended = [], []
            for fd, _ in self._poller.poll(left):
                w, sentinel = self._fds[fd]
                if sentinel:
                    ended.append(w)
                elif (i := self._answer(w)) >= 0:
                    done.append(i)
            for w in ended:  # a worker that ended: its answers still in the pipe, then its end
                if not done and (i := self._answer(w)) >= 0:
                    done.append(i)
            if done:
                return done
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def _send(self, env: int, op: bytes, seed: int) -> None:
        w = self.worker_of(env)
        try:
            self._conns[w].send_bytes(_COMMAND.pack(op, env, seed))
        except OSError:  # the worker is gone: its own error (or its end) is what to report
            while True:
                self._answer(w)  # raises once the pipe holds no more answers
        self._pending[w] += 1

    def _answer(self, w: int) -> int:
        """Worker ``w``'s next answer: the env it finished (-1 for the start-up answer)."""
        try:
            msg = self._conns[w].recv_bytes()
        except (EOFError, OSError):
            self._procs[w].join(timeout=5)
            raise EnvWorkerError(
                f"env worker {w} ({self.task}) exited (code {self._procs[w].exitcode}) without being asked to; "
                "it was killed or ran out of memory"
            ) from None
        self._pending[w] -= 1
        if msg[:1] == _ERROR:
            summary, _, details = msg[1:].decode(errors="replace").partition("\0")
            err = EnvWorkerError(f"env worker {w} ({self.task}) failed {summary}")
            err.add_note(f"the worker's traceback:\n{details}")
            raise err
        return -1 if len(msg) == 1 else _FINISHED.unpack(msg)[1]

    def close(self, terminate: bool = False, wait: bool = True) -> None:
        """Stop the workers (each frees its envs, after the commands it was sent). ``wait=False``
        asks them to stop and returns at once (a later ``close()`` waits for them);
        ``terminate``: after an error, end them without waiting for commands in flight."""
        if self.closed:
            return
        if not (terminate or self._stopping):
            self._stopping = True
            for conn in self._conns:
                try:
                    conn.send_bytes(_COMMAND.pack(_CLOSE, 0, 0))
                except OSError:  # a worker that is gone
                    pass
        if not wait and not terminate:
            return
        self.closed = True
        for conn, proc in zip(self._conns, self._procs):
            if not terminate:
                proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            conn.close()
        for fd in self._pidfds:
            os.close(fd)

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(terminate=exc_type is not None)
