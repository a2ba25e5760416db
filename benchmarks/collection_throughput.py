"""Collection throughput: our two collectors vs raw Meta-World step+render, same run.

Target: collector env-steps/s >= 0.9 x (workers x single-process raw step+render rate), with a
uniform-random policy so that agent updates do not enter the comparison; the collector's cost
includes worker start-up and shut-down, IPC, frame stacking and the Zarr episode writes. The
policy-free collector (random and scripted-expert episodes, each worker running whole episodes)
and the lock-step collector (an agent in the main process acting on every step, RND; its envs
in two groups, acting for one group while the other steps) are both held to
it; the lock-step collector's rate over its rounds alone is printed too. Each repeat
measures the raw rate before, between and after the two collectors (which take turns going
first); a collector's baseline is the mean of the raw rates just before and after it, and the
medians over the repeats are the result. The env workers' fork server (started once per process,
genreward.envs.vector.worker_processes) is started before the first measurement, as it is after a
stage's first collection.

    python benchmarks/collection_throughput.py [--workers 2] [--episodes-per-worker 8] [--size 64] [--repeats 4]

The default, 8 episodes per worker, is a short collection: the stage's random baseline is 40
episodes in one pool of workers (20 each); with 2 per worker the ~2.5 s worker start-up is
counted once per 4 episodes.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_rate(task: str, size: int, steps: int, before_timing=None) -> float:
    """Single-process raw step+render rate; ``before_timing()`` is called once the env and its GL
    context exist, just before the clock starts."""
    from env_throughput import raw_env, time_raw  # same directory: the one raw baseline

    from genreward.envs.config import ACTION_DIM

    env = raw_env(task, size, "corner", fast=True)
    try:
        if before_timing is not None:
            env.reset()
            env.render()  # the GL context exists before the clock starts
            before_timing()
        return time_raw(env, np.random.default_rng(0).uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32))
    finally:
        env.close()


def _raw_in_process(task: str, size: int, steps: int, barrier, out) -> None:
    # all processes step at once (a sibling that failed breaks the barrier)
    out.put(raw_rate(task, size, steps, before_timing=lambda: barrier.wait(timeout=300)))


def concurrent_raw_rate(task: str, size: int, steps: int, processes: int) -> float:
    """Raw step+render in ``processes`` spawned processes at once (the collectors' workers'
    environment, one render thread each), summed: what the cores give with no collector."""
    import multiprocessing as mp

    from genreward.envs.vector import worker_environment

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    with worker_environment():
        procs = [
            ctx.Process(target=_raw_in_process, args=(task, size, steps, barrier, out), daemon=True)
            for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
    rates = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    return float(sum(rates))


def descendants_cpu() -> float:
    """CPU seconds of this process's descendants, finished or running (Linux): its finished
    children's, plus each running child's own and its finished children's. Env workers forked
    from the fork server are its children, not ours: the server's share counts them once they
    end."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total, me, tick = kids.ru_utime + kids.ru_stime, os.getpid(), os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == me:  # fields from the state on: ppid, ..., utime, stime, cutime, cstime
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


def median_interval(values, level: float = 0.95, draws: int = 10_000) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``values``: how far the median of a few
    repeats on a noisy machine can be trusted (the goal is on the median itself)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, (draws, len(values))), axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--episodes-per-worker", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--task", default="pick-place-v3")
    p.add_argument("--repeats", type=int, default=4)  # even: each collector goes first equally often
    args = p.parse_args()

    from genreward.agents.collect import Plan, collect, collect_policy_free
    from genreward.agents.config import ExplorationConfig
    from genreward.agents.explore import RandomExplorer
    from genreward.envs import EnvConfig
    from genreward.store.episodes import EpisodeWriter

    env_cfg = EnvConfig(image_size=args.size)
    episodes = args.workers * args.episodes_per_worker
    plan = Plan([args.task], episodes)

    def cpu_seconds() -> tuple[float, float]:  # this process's, and all its descendants'
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime, descendants_cpu()

    def run(which: str):
        """(stats, wall seconds, main-process CPU seconds, worker CPU seconds) of one collection."""
        cpu0 = cpu_seconds()
        with tempfile.TemporaryDirectory() as d:
            # the stage's chunking (collect_exploration passes exploration.chunk_rows)
            writer = EpisodeWriter(Path(d) / "bench.zarr", {"bench": 1}, chunk_rows=ExplorationConfig().chunk_rows)
            t0 = time.perf_counter()
            if which == "policy_free":
                stats = collect_policy_free(writer, plan, env_cfg, args.workers, seed=0)
            else:
                explorer = RandomExplorer()
                stats = collect(writer, lambda task_id: (explorer, None), plan, env_cfg, args.workers, 0, 1)
            wall = time.perf_counter() - t0
        cpu1 = cpu_seconds()  # the workers have exited: their CPU time is counted
        return stats, wall, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]

    # The env workers are forked from a server that has Meta-World loaded, started once per
    # process (the stage collects several times in one process): started here, before any timing.
    from genreward.envs.pool import EnvPool

    t0 = time.perf_counter()
    with EnvPool(args.task, env_cfg, 1, 1) as pool:
        pool.reset([0], [0])
        pool.wait()
    print(f"worker fork server started and one env worker made in {time.perf_counter() - t0:.2f} s (once per process)")

    # Raw rate before, between and after the collectors of each repeat; a collector's baseline is
    # the mean of the raw rates measured just before and just after it (the machine's speed drifts
    # by up to ~25 % between measurements a minute apart on a shared 2-core VM).
    rows, cpu = [], {"policy_free": [], "lock_step": []}
    for r in range(args.repeats):
        raw = [raw_rate(args.task, args.size, 512)]
        row = {}
        # the collectors take turns going first (the machine's speed drifts within a repeat)
        for which in ("policy_free", "lock_step")[:: 1 if r % 2 == 0 else -1]:
            stats, wall, main_cpu, worker_cpu = run(which)
            raw.append(raw_rate(args.task, args.size, 512))
            ideal = args.workers * float(np.mean(raw[-2:]))
            row[which] = (stats.env_steps / wall / ideal, stats.env_steps / stats.seconds_env / ideal, wall, ideal)
            cpu[which].append((main_cpu, worker_cpu, (main_cpu + worker_cpu) / wall, stats.env_steps))
        both = concurrent_raw_rate(args.task, args.size, 512, args.workers)
        row["concurrent_raw"] = both / (args.workers * float(np.mean(raw[-2:])))
        row["lock_vs_concurrent"] = row["lock_step"][0] * row["lock_step"][3] / both  # its rate / both
        rows.append(row)
        print(
            f"repeat {r + 1} ({'policy-free' if r % 2 == 0 else 'lock-step'} first): raw "
            f"{' / '.join(f'{x:.1f}' for x in raw)} steps/s; policy-free ratio "
            f"{row['policy_free'][0]:.3f} ({row['policy_free'][2]:.2f} s); lock-step ratio {row['lock_step'][0]:.3f} "
            f"({row['lock_step'][2]:.2f} s; rounds only {row['lock_step'][1]:.3f}); raw in "
            f"{args.workers} processes at once {row['concurrent_raw']:.3f} of {args.workers} x single",
            flush=True,
        )
    print(f"{args.task}, {args.size}px, {args.workers} workers, {episodes} episodes x 256 steps (incl. env start-up)")
    print("ratio = collector env steps/s / (workers x single-process raw step+render), median of the repeats:")
    for which, label in (
        ("policy_free", "policy-free collector (random actions, whole episodes per worker, Zarr writes)"),
        ("lock_step", "lock-step collector (the one an agent that learns uses; random actions)"),
    ):
        ratios = [row[which][0] for row in rows]
        lo, hi = median_interval(ratios)
        print(
            f"{label}: {np.median(ratios):.3f}  (goal >= 0.9; 95 % bootstrap interval of the median "
            f"{lo:.3f}-{hi:.3f}; repeats {', '.join(f'{x:.3f}' for x in ratios)})"
        )
    # The lock-step collector's rounds alone (CollectStats.seconds_env): without starting and
    # closing the pool and without waiting for episode writes. The workers making their envs and
    # first GL contexts (~0.5 s) is still in it: the first round waits for it.
    print(f"lock-step, rounds only (env making included): {np.median([row['lock_step'][1] for row in rows]):.3f}")
    print(
        f"raw step+render in {args.workers} processes at once, no collector: "
        f"{np.median([row['concurrent_raw'] for row in rows]):.3f} of {args.workers} x single-process raw; "
        f"the lock-step collector reaches {np.median([row['lock_vs_concurrent'] for row in rows]):.3f} of it"
    )
    # Where the lock-step collector's time goes beyond the policy-free one's: CPU of the main
    # process and of the env workers per env step, and how many of the cores were busy.
    for which in ("policy_free", "lock_step"):
        c = np.array(cpu[which])
        print(
            f"{which}: CPU per env step, main process {1e3 * np.median(c[:, 0] / c[:, 3]):.3f} ms, workers "
            f"{1e3 * np.median(c[:, 1] / c[:, 3]):.3f} ms; cores busy {np.median(c[:, 2]):.2f} of {args.workers}"
        )


if __name__ == "__main__":
    main()
