"""FB updates/s at a given batch size, with data loading excluded and included (same run).

"excluded" reuses one pre-sampled batch; "included" samples every batch from an exploration
dataset in memory (3-frame-free, single frames as pretrain_fb uses). The ratio shows whether
the loader is a bottleneck.

    python benchmarks/fb_updates.py [--batch 1024] [--size 64] [--device cpu|cuda] [--z 64 --hidden 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--z", type=int, default=64)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()

    import torch

    from genreward.agents.config import FBConfig
    from genreward.agents.fb import FBAgent
    from genreward.envs.config import ACTION_DIM, STATE_DIM
    from genreward.store.episodes import Episode, EpisodeWriter, ExplorationDataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        w = EpisodeWriter(Path(d) / "ds.zarr", {"bench": 1})
        for _ in range(8):
            w.append(
                Episode(
                    obs=rng.integers(0, 256, (257, 3, args.size, args.size), dtype=np.uint8),
                    state=np.zeros((257, STATE_DIM), np.float32),
                    action=rng.uniform(-1, 1, (256, ACTION_DIM)).astype(np.float32),
                    success=np.zeros(257, bool),
                    task_id=0,
                )
            )
        w.finish({})
        ds = ExplorationDataset(Path(d) / "ds.zarr", in_memory=True)
        agent = FBAgent(
            (3, args.size, args.size),
            ACTION_DIM,
            FBConfig(z_dim=args.z, hidden_dim=args.hidden, batch_size=args.batch),
            args.device,
        )

        def batch():
            b = ds.sample(args.batch, rng, frame_stack=1)
            return tuple(torch.as_tensor(b[k], device=args.device) for k in ("obs", "action", "next_obs"))

        def sync():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        fixed = batch()
        agent.update(*fixed)
        sync()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            agent.update(*fixed)
        sync()
        excl = args.iters / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            agent.update(*batch())
        sync()
        incl = args.iters / (time.perf_counter() - t0)
    print(f"FB d={args.z} hidden={args.hidden} batch={args.batch} {args.size}px on {args.device}")
    print(f"updates/s, data loading excluded: {excl:.3f}   included: {incl:.3f}   ratio: {incl / excl:.3f}")


if __name__ == "__main__":
    main()
