"""Collection throughput: our vectorised collector vs raw Meta-World step+render, same run.

Target: collector env-steps/s >= 0.9 x (workers x single-process raw step+render rate), with a
uniform-random policy so that agent updates do not enter the comparison; the collector's cost
includes worker start-up and shut-down, IPC, frame stacking and the Zarr episode writes. A
second line gives the rate of the resets and steps alone, which a long collection approaches.

    python benchmarks/collection_throughput.py [--workers 2] [--episodes-per-worker 2] [--size 64]
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
    p.add_argument("--episodes-per-worker", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--task", default="pick-place-v3")
    args = p.parse_args()

    from genreward.agents.collect import Plan, collect
    from genreward.agents.config import ExplorationConfig
    from genreward.agents.explore import RandomExplorer
    from genreward.envs import EnvConfig
    from genreward.store.episodes import EpisodeWriter

    single = raw_rate(args.task, args.size, 512)
    env_cfg = EnvConfig(image_size=args.size)
    episodes = args.workers * args.episodes_per_worker
    with tempfile.TemporaryDirectory() as d:
        # the stage's chunking (collect_exploration passes exploration.chunk_rows)
        writer = EpisodeWriter(Path(d) / "bench.zarr", {"bench": 1}, chunk_rows=ExplorationConfig().chunk_rows)
        t0 = time.perf_counter()
        explorer = RandomExplorer()
        stats = collect(
            writer,
            lambda task_id: (explorer, None),
            Plan([args.task], episodes),
            env_cfg,
            args.workers,
            seed=0,
            update_every=1,
        )
        wall = time.perf_counter() - t0
    ours = stats.env_steps / wall
    print(f"{args.task}, {args.size}px, {args.workers} workers, {episodes} episodes x 256 steps (incl. env start-up)")
    print(
        f"raw step+render, 1 process: {single:.1f} steps/s -> ideal "
        f"{args.workers} x = {args.workers * single:.1f} steps/s"
    )
    print(f"collector (random policy, Zarr writes): {ours:.1f} steps/s")
    print(f"ratio vs workers x single-process raw: {ours / (args.workers * single):.3f}  (goal >= 0.9)")
    # Without the fixed costs (worker start-up, first GL context, Zarr writes, shut-down):
    # resets and steps only, i.e. the rate a long collection approaches.
    stepping = stats.env_steps / stats.seconds_env
    print(
        f"stepping only (resets + steps, {stats.seconds_env:.2f} of {wall:.2f} s): {stepping:.1f} steps/s, "
        f"ratio {stepping / (args.workers * single):.3f}"
    )


if __name__ == "__main__":
    main()
