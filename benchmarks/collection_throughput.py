"""Collection throughput: our two collectors vs raw Meta-World step+render, same run.

Target: collector env-steps/s >= 0.9 x (workers x single-process raw step+render rate), with a
uniform-random policy so that agent updates do not enter the comparison; the collector's cost
includes worker start-up and shut-down, IPC, frame stacking and the Zarr episode writes. The
policy-free collector (random and scripted-expert episodes, each worker running whole episodes)
is the one the target is for; the lock-step collector (an agent in the main process acting on
every step, RND) is printed beside it, with the rate of its resets and steps alone. The raw rate
is measured before and after the collectors; their mean is the baseline.

    python benchmarks/collection_throughput.py [--workers 2] [--episodes-per-worker 8] [--size 64]

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

    raw = [raw_rate(args.task, args.size, 512)]
    free, free_wall = run("policy_free")
    lock, lock_wall = run("lock_step")
    raw.append(raw_rate(args.task, args.size, 512))  # again after: the mean is the baseline
    ideal = args.workers * float(np.mean(raw))
    print(f"{args.task}, {args.size}px, {args.workers} workers, {episodes} episodes x 256 steps (incl. env start-up)")
    print(
        f"raw step+render, 1 process: {raw[0]:.1f} and {raw[1]:.1f} steps/s (before, after) -> ideal "
        f"{args.workers} x mean = {ideal:.1f} steps/s"
    )
    rate = free.env_steps / free_wall
    print(f"policy-free collector (random actions, whole episodes per worker, Zarr writes): {rate:.1f} steps/s")
    print(f"ratio vs workers x single-process raw: {rate / ideal:.3f}  (goal >= 0.9)")
    rate = lock.env_steps / lock_wall
    print(f"lock-step collector (the one an agent that learns uses; random actions): {rate:.1f} steps/s")
    print(f"ratio vs workers x single-process raw: {rate / ideal:.3f}")
    # Without the fixed costs (worker start-up, first GL context, Zarr writes, shut-down):
    # resets and steps only, i.e. the rate a long lock-step collection approaches.
    stepping = lock.env_steps / lock.seconds_env
    print(
        f"lock-step, stepping only (resets + steps, {lock.seconds_env:.2f} of {lock_wall:.2f} s): "
        f"{stepping:.1f} steps/s, ratio {stepping / ideal:.3f}"
    )


if __name__ == "__main__":
    main()
