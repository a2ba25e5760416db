"""Per-process runtime settings: torch's thread count and the C allocator's thresholds.

Every process that runs torch work calls :func:`configure_process` before its work starts. The
generic stage entry (``stages.table.Stage.run_item``) does, so every stage item is covered,
whether it runs under ``dvc repro``, ``genreward stage`` or in a Dask worker of the pipeline
flow. Env worker processes call :func:`configure_worker` (one thread each: they step
simulators, not networks); :mod:`genreward.envs.vector` also starts them without torch and with
one render thread each.

**Threads.** torch starts one intra-op thread per core of the machine in every process, so two
processes on the same cores oversubscribe them (measured: two training loops on 2 cores with
2 threads each run 2.7x slower each than with 1 thread each). The count per process is, highest
precedence first:

1. the environment variable ``GENREWARD_THREADS`` (a count for a whole job, set by a cluster
   scheduler or a test runner; ``0`` asks for the automatic count);
2. ``runtime.threads`` (params.yaml) when it is > 0;
3. automatic: the cores this process may use (``os.sched_getaffinity``, lowered to a cgroup v2
   CPU quota when there is one) divided among the processes that run at once, at least 1. Who
   runs at once is the ``share`` argument, else the environment variable
   ``GENREWARD_THREAD_SHARE`` (e.g. the number of Dask worker processes per machine, each
   running a stage), else 1. A stage's env workers do not count: they are idle while the
   stage's own process updates its networks, and take one thread each.

``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are outputs, not inputs: they are set to the chosen
count so that child processes start with it (and torch, if it is imported after this call).
When torch is imported (``import genreward`` imports it when torchvision is installed),
``torch.set_num_threads`` applies the count; ``torch.set_num_interop_threads`` too, while torch
still allows it (once per process, before any inter-op parallel work). Call it before the
process's first torch work: torch's thread pools then never grow past the count.

**Allocator (glibc).** glibc's malloc serves every block above its mmap threshold (at most
32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on free. A training update of a
pixel agent allocates float tensors of tens of MB every step (38-126 MB for DrQ-v2 at batch
256 and FB at batch 1024), so each update maps, page-faults in and unmaps them again
(measured: ~200k minor page faults and a third of the CPU time in the kernel per DrQ-v2 update
at batch 256). With ``malloc_tuning`` (``runtime.malloc_tuning``, on by default)
:func:`configure_process` calls ``mallopt(M_MMAP_MAX, 0)`` (large blocks come from the heap,
and their pages are reused by the next update) and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``
(the heap's free top is not returned to the OS). The trade: the process keeps the memory it
freed for reuse instead of returning it to the OS, so its resident size stays near its peak
until it exits. This is what starting the process with ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` does; it applies to this process only (child processes are
not changed). On other C libraries (macOS, musl) it does nothing. Once set, it stays for the
life of the process. Dask starts its worker processes with ``MALLOC_TRIM_THRESHOLD_=65536`` so
that they hand freed memory back; a stage run in a Dask worker replaces that. Where a worker's
memory limit matters more than update speed, set ``runtime.malloc_tuning: false``.

Calling :func:`configure_process` again is cheap and safe; it re-applies the thread count.

**Exit.** :func:`skip_exit_collection` spares a short-lived command the interpreter's last
garbage collections (see there); the ``genreward`` command line calls it first.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import math
import os
import platform
import sys
from pathlib import Path
from typing import Iterator

THREADS_ENV = "GENREWARD_THREADS"
SHARE_ENV = "GENREWARD_THREAD_SHARE"
CHILD_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest value it accepts

_settings: dict = {}
_malloc_tuned = False
_interop_set = False
_exit_collection_skipped = False


def _env_int(name: str, minimum: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{name}={raw!r}: expected a whole number >= {minimum}")
    return value


def cgroup_cpu_limit(path: str | Path = "/sys/fs/cgroup/cpu.max") -> int | None:
    """Whole CPUs a cgroup v2 quota allows (rounded up), or None when there is no quota."""
    try:
        quota, period = Path(path).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, lowered to its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def resolve_threads(threads: int = 0, share: int | None = None) -> dict:
    """The thread count :func:`configure_process` would choose, and why (see the module docstring).

    Returns ``{"threads", "source", "cores", "share"}``; ``source`` is ``GENREWARD_THREADS``,
    ``runtime.threads`` or ``auto``. Raises ``ValueError`` for a bad value, naming its source."""
    if threads < 0:
        raise ValueError(f"runtime.threads={threads}: expected a whole number >= 0 (0: automatic)")
    if share is not None and share < 1:
        raise ValueError(f"share={share}: expected a whole number >= 1")
    cores = usable_cores()
    share = share if share is not None else (_env_int(SHARE_ENV, 1) or 1)
    override = _env_int(THREADS_ENV, 0)
    if override:
        n, source = override, THREADS_ENV
    elif override is None and threads > 0:
        n, source = threads, "runtime.threads"
    else:
        n, source = max(1, cores // share), "auto"
    return {"threads": n, "source": source, "cores": cores, "share": share}


def _apply_threads(n: int) -> int | None:
    """Set ``n`` intra-op threads (and inter-op, once) in torch if it is loaded, and the thread
    variables for child processes and a later torch import. Returns the inter-op count or None."""
    global _interop_set
    for var in CHILD_THREAD_VARS:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # torch already ran inter-op work (or another caller set it)
            pass
    return torch.get_num_interop_threads()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the count (nothing without
    torch loaded). For small work between waits, such as an agent choosing the actions of a few
    envs while their worker processes step: one thread does it faster than two, and idle
    threads left spinning after each call take the cores the workers step on."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else n
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def tune_malloc() -> bool:
    """``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` on glibc (see the
    module docstring). True when they are in effect; False elsewhere (macOS, musl) or on failure."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success
    _malloc_tuned = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _malloc_tuned


def skip_exit_collection() -> None:
    """Let this process exit without collecting its whole heap.

    At exit CPython runs the ``atexit`` handlers, flushes the streams, then collects garbage over
    everything still alive while it tears the modules down. With torch, Prefect and pydantic
    loaded that last pass is most of a command's exit: about 1 s of a ~6 s ``genreward stage``
    run (docs/results.md). This registers ``gc.freeze`` as an exit handler. Handlers run last
    registered first, so it runs after every handler registered later (call it before the work
    that registers them), and moves what is alive to the permanent generation, which those
    collections skip. Exit handlers, stream flushes, the exit code and
    the finalizers of objects freed by reference counting are unchanged; objects that only a
    reference cycle keeps alive at exit are not finalized (CPython does not promise that anyway).
    Call it early in a command's main function, once; a second call does nothing.
    """
    global _exit_collection_skipped
    if not _exit_collection_skipped:
        _exit_collection_skipped = True
        atexit.register(gc.freeze)


def configure_process(threads: int = 0, share: int | None = None, *, malloc_tuning: bool = True) -> dict:
    """Set this process's torch thread count and (``malloc_tuning``) the allocator's thresholds.

    ``threads``: ``runtime.threads`` (0: automatic); ``share``: the processes running at once
    (None: ``GENREWARD_THREAD_SHARE``, else 1). ``GENREWARD_THREADS`` overrides both. Returns
    what was chosen: ``threads``, ``source``, ``cores``, ``share``, ``interop_threads`` (None
    while torch is not imported) and ``malloc_tuning`` (whether the allocator settings are in
    effect in this process). ``malloc_tuning=False`` leaves the allocator as it is.
    """
    choice = resolve_threads(threads, share)
    interop = _apply_threads(choice["threads"])
    tuned = tune_malloc() if malloc_tuning else _malloc_tuned
    _settings.clear()
    _settings.update(choice, interop_threads=interop, malloc_tuning=tuned)
    return dict(_settings)


def configure_worker() -> dict:
    """Env worker processes: one torch thread, whatever the overrides say; allocator untouched.

    Call it first in a worker's initialiser: before torch is imported the thread variables make
    torch start with one thread; after, ``torch.set_num_threads(1)`` applies."""
    interop = _apply_threads(1)
    _settings.clear()
    _settings.update(
        threads=1, source="worker", cores=usable_cores(), share=1, interop_threads=interop, malloc_tuning=_malloc_tuned
    )
    return dict(_settings)


def process_settings() -> dict:
    """What the last :func:`configure_process` / :func:`configure_worker` call chose in this
    process (empty when neither was called)."""
    return dict(_settings)


def deterministic(seed: int) -> dict:
    """Make this process's torch work reproducible for ``seed`` (``rl.deterministic``).

    On CPU the result of a convolution or matrix product depends on how many threads split its
    sums (measured: a DrQ-v2 run's evaluation returns differ in the 5th digit between 1 and 2
    threads, and the difference grows with training), so the automatic thread count, which
    depends on the machine and on what else runs, makes reruns differ. This sets one intra-op
    thread (the count no longer depends on the machine or ``GENREWARD_THREADS``), turns on
    ``torch.use_deterministic_algorithms`` (an op without a deterministic version raises instead
    of running), sets ``CUBLAS_WORKSPACE_CONFIG`` for CUDA, and seeds python's, numpy's and
    torch's global generators. Reruns are then equal on the same machine, library versions and
    device; another CPU (instruction set) or device may still round differently. The cost is
    speed on a multi-core machine (docs/results.md). Returns what it set, for provenance.
    """
    import random

    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible workspace
    _apply_threads(1)
    torch.use_deterministic_algorithms(True)
    if hasattr(torch.backends, "cudnn"):
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    _settings.update(threads=1, source="rl.deterministic", interop_threads=torch.get_num_interop_threads())
    return {"deterministic": True, "threads": 1, "seed": seed}
