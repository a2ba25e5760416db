"""Episode writes: the EpisodeWriter as it is vs Zarr's defaults (each write re-opens the field's
array and compares every chunk with the fill value before writing it), same run.

Both write the same rounds of pixel episodes (the lock-step collector's ``extend`` of one round)
into fresh stores, alternating, and report wall and CPU time (all threads: Zarr encodes on its
own threads) per ``extend``. The collectors write while their env workers step, on the same
cores, so the CPU time is what a write takes away from the envs.

    python benchmarks/episode_writes.py [--episodes-per-write 2] [--writes 20] [--rounds 3] [--size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from genreward.envs.config import ACTION_DIM, STATE_DIM
from genreward.store.episodes import Episode, EpisodeWriter


class ZarrDefaultsWriter(EpisodeWriter):
    """The writer with Zarr's defaults: each write opens the field's array from the group's
    metadata, and Zarr compares each chunk with the fill value to skip empty ones."""

    def _ensure(self, name, sample):
        super()._ensure(name, sample)  # makes the array on first use
        return self.group[name]


def episodes(n: int, size: int, rows: int, rng) -> list[Episode]:
    """Episodes shaped like a collection's (a static background with a moving patch, random
    states and actions), so the frames compress as real ones do."""
    out = []
    for _ in range(n):
        frames = np.full((rows, 3, size, size), 90, np.uint8)
        frames[:, :, size // 4 : size // 2, size // 4 : size // 2] = rng.integers(0, 255, (rows, 3, 1, 1), np.uint8)
        out.append(
            Episode(
                obs=frames,
                state=rng.normal(size=(rows, STATE_DIM)).astype(np.float32),
                action=rng.uniform(-1, 1, (rows - 1, ACTION_DIM)).astype(np.float32),
                success=np.zeros(rows, bool),
                task_id=0,
            )
        )
    return out


def time_writes(cls, batch: list[Episode], writes: int, chunk_rows: int) -> tuple[float, float]:
    """(wall, CPU) seconds per ``extend`` of ``batch``, over ``writes`` writes into a fresh store
    (the first write, which makes the arrays, is not timed)."""
    with tempfile.TemporaryDirectory() as d:
        writer = cls(Path(d) / "bench.zarr", {"bench": 1}, chunk_rows=chunk_rows)
        writer.extend(batch)
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(writes):
            writer.extend(batch)
        return (time.perf_counter() - t0) / writes, (time.process_time() - c0) / writes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes-per-write", type=int, default=2)  # the laptop collection's round
    p.add_argument("--writes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()

    from genreward.agents.config import ExplorationConfig
    from genreward.envs import EnvConfig

    rows = EnvConfig().agent_steps + 1
    batch = episodes(args.episodes_per_write, args.size, rows, np.random.default_rng(0))
    chunk_rows = ExplorationConfig().chunk_rows
    results = {"writer": [], "zarr_defaults": []}
    for r in range(args.rounds):
        for name, cls in (("writer", EpisodeWriter), ("zarr_defaults", ZarrDefaultsWriter))[:: 1 if r % 2 == 0 else -1]:
            results[name].append(time_writes(cls, batch, args.writes, chunk_rows))
    print(
        f"{args.episodes_per_write} episodes of {rows} rows at {args.size}px per extend, "
        f"{args.writes} writes x {args.rounds} rounds"
    )
    for name, label in (("writer", "EpisodeWriter"), ("zarr_defaults", "Zarr's defaults")):
        wall, cpu = np.array(results[name]).T * 1e3
        print(
            f"{label}: wall {', '.join(f'{x:.1f}' for x in wall)} ms; "
            f"CPU {', '.join(f'{x:.1f}' for x in cpu)} ms per extend"
        )
    ratio = np.median(np.array(results["writer"]), axis=0) / np.median(np.array(results["zarr_defaults"]), axis=0)
    print(f"EpisodeWriter / Zarr's defaults (medians): wall {ratio[0]:.3f}, CPU {ratio[1]:.3f}")


if __name__ == "__main__":
    main()
