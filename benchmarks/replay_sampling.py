"""Replay sampling throughput: (s, a, s') minibatches of 1024 with 3-frame stacks from the
exploration dataset, vs an in-memory numpy array baseline, measured in one run.

The baseline is plain fancy indexing on contiguous in-memory arrays (no episode-boundary
handling). Ours: the dataset loaded in memory, and read from disk with chunk-grouped access.

    python benchmarks/replay_sampling.py [--episodes 40] [--size 64] [--batch 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()

    from genreward.envs.config import ACTION_DIM, STATE_DIM
    from genreward.store.episodes import Episode, EpisodeWriter, ExplorationDataset

    rng = np.random.default_rng(0)
    L = 256
    with tempfile.TemporaryDirectory() as d:
        w = EpisodeWriter(Path(d) / "ds.zarr", {"bench": 1}, chunk_rows=L + 1)
        for k in range(args.episodes):
            w.append(
                Episode(
                    obs=rng.integers(0, 256, (L + 1, 3, args.size, args.size), dtype=np.uint8),
                    state=rng.normal(size=(L + 1, STATE_DIM)).astype(np.float32),
                    action=rng.uniform(-1, 1, (L, ACTION_DIM)).astype(np.float32),
                    success=np.zeros(L + 1, bool),
                    task_id=0,
                )
            )
        w.finish({})
        mem = ExplorationDataset(Path(d) / "ds.zarr", in_memory=True)
        disk = ExplorationDataset(Path(d) / "ds.zarr", in_memory=False)
        obs, act = mem.array("obs"), mem.array("action")  # the numpy baseline's arrays
        valid = mem.valid_index

        def baseline():
            rows = rng.choice(valid, size=args.batch)
            idx = rows[:, None] - np.array([2, 1, 0])[None, :]
            s = obs[np.maximum(idx, 0)].reshape(args.batch, 9, args.size, args.size)
            s2 = obs[idx + 1].reshape(args.batch, 9, args.size, args.size)
            return s, act[rows], s2

        def timed(fn, iters):
            fn()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            return iters * args.batch / (time.perf_counter() - t0)

        base = timed(baseline, args.iters)
        ours_mem = timed(lambda: mem.sample(args.batch, rng, 3), args.iters)
        ours_disk = timed(lambda: disk.sample(args.batch, rng, 3), max(2, args.iters // 10))
    n = args.episodes * (L + 1)
    print(f"{n} rows ({n * 3 * args.size * args.size / 1e6:.0f} MB of frames), batch {args.batch}, 3-frame stacks")
    print(f"numpy in-memory baseline: {base:,.0f} transitions/s")
    print(f"dataset, in memory:       {ours_mem:,.0f} transitions/s  (ratio {ours_mem / base:.3f})")
    print(f"dataset, from disk:       {ours_disk:,.0f} transitions/s  (ratio {ours_disk / base:.3f})")


if __name__ == "__main__":
    main()
