"""Collection throughput: our two collectors vs raw Meta-World step+render, same run.

Target: collector env-steps/s >= 0.9 x (workers x single-process raw step+render rate), with a
uniform-random policy so that agent updates do not enter the comparison; the collector's cost
includes worker start-up and shut-down, IPC, frame stacking and the Zarr episode writes. The
policy-free collector (random and scripted-expert episodes, each worker running whole episodes)
and the lock-step collector (an agent in the main process acting on every step, RND; its envs
in two groups stepped in turn, acting for one group while the other steps) are both held to
it; the lock-step collector's rate of resets and steps alone is printed too. Each repeat
measures the raw rate before, between and after the two collectors; a collector's baseline is
the mean of the raw rates just before and after it, and the medians over the repeats are the
result.

    python benchmarks/collection_throughput.py [--workers 2] [--episodes-per-worker 8] [--size 64] [--repeats 3]

The default, 8 episodes per worker, is a short collection: the stage's random baseline is 40
episodes in one pool of workers (20 each); with 2 per worker the ~2.5 s worker start-up is
counted once per 4 episodes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_rate(task: str, size: int, steps: int) -> float:
    from env_throughput import raw_env, time_raw  # same directory: the one raw baseline

    from genreward.envs.config import ACTION_DIM

    env = raw_env(task, size, "corner", fast=True)
    try:
        return time_raw(env, np.random.default_rng(0).uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32))
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--episodes-per-worker", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--task", default="pick-place-v3")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from genreward.agents.collect import Plan, collect, collect_policy_free
    from genreward.agents.config import ExplorationConfig
    from genreward.agents.explore import RandomExplorer
    from genreward.envs import EnvConfig
    from genreward.store.episodes import EpisodeWriter

    env_cfg = EnvConfig(image_size=args.size)
    episodes = args.workers * args.episodes_per_worker
    plan = Plan([args.task], episodes)

    def run(which: str):
        with tempfile.TemporaryDirectory() as d:
            # the stage's chunking (collect_exploration passes exploration.chunk_rows)
            writer = EpisodeWriter(Path(d) / "bench.zarr", {"bench": 1}, chunk_rows=ExplorationConfig().chunk_rows)
            t0 = time.perf_counter()
            if which == "policy_free":
                stats = collect_policy_free(writer, plan, env_cfg, args.workers, seed=0)
            else:
                explorer = RandomExplorer()
                stats = collect(writer, lambda task_id: (explorer, None), plan, env_cfg, args.workers, 0, 1)
            return stats, time.perf_counter() - t0

    # Raw rate before, between and after the collectors of each repeat; a collector's baseline is
    # the mean of the raw rates measured just before and just after it (the machine's speed drifts
    # by up to ~25 % between measurements a minute apart on a shared 2-core VM).
    rows = []
    for r in range(args.repeats):
        raw = [raw_rate(args.task, args.size, 512)]
        row = {}
        for which in ("policy_free", "lock_step"):
            stats, wall = run(which)
            raw.append(raw_rate(args.task, args.size, 512))
            ideal = args.workers * float(np.mean(raw[-2:]))
            row[which] = (stats.env_steps / wall / ideal, stats.env_steps / stats.seconds_env / ideal, wall)
        rows.append(row)
        print(
            f"repeat {r + 1}: raw {' / '.join(f'{x:.1f}' for x in raw)} steps/s; policy-free ratio "
            f"{row['policy_free'][0]:.3f} ({row['policy_free'][2]:.2f} s); lock-step ratio {row['lock_step'][0]:.3f} "
            f"({row['lock_step'][2]:.2f} s; resets + steps only {row['lock_step'][1]:.3f})",
            flush=True,
        )
    print(f"{args.task}, {args.size}px, {args.workers} workers, {episodes} episodes x 256 steps (incl. env start-up)")
    print("ratio = collector env steps/s / (workers x single-process raw step+render), median of the repeats:")
    for which, label in (
        ("policy_free", "policy-free collector (random actions, whole episodes per worker, Zarr writes)"),
        ("lock_step", "lock-step collector (the one an agent that learns uses; random actions)"),
    ):
        print(f"{label}: {np.median([row[which][0] for row in rows]):.3f}  (goal >= 0.9)")
    # Without the fixed costs (worker start-up, first GL context, Zarr writes, shut-down):
    # resets and steps only, i.e. the rate a long lock-step collection approaches.
    print(f"lock-step, resets + steps only: {np.median([row['lock_step'][1] for row in rows]):.3f}")


if __name__ == "__main__":
    main()
