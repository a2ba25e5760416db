"""Latent-encoding throughput for agent windows: this bounds the video-level reward's cost in RL.

An agent window is 128 env steps of 64x64 frames, uniformly subsampled to 16 frames and
encoded by the 3D VAE. Prints clips/s and the cost per env step when one window is encoded
every Δt = 128 steps (the paper's schedule), next to the env's own step+render rate.

    python benchmarks/latent_throughput.py [--vae random|full-random|/path/to/pipeline] [--batch 8] [--device cpu]

``random`` is the laptop profile's small VAE; ``full-random`` has CogVideoX's real VAE
architecture (randomly initialised, so the cost is real and the features are not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import genreward  # noqa: F401


def measure_env_step(size: int, steps: int = 200) -> float:
    from genreward.envs import EnvConfig, make_env
    from genreward.envs.config import ACTION_DIM

    env = make_env("pick-place-v3", EnvConfig(image_size=size), seed=0)
    try:
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32)
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        return (time.perf_counter() - t0) / steps
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", default="random", help="random, full-random, or a diffusers pipeline/VAE folder")
    p.add_argument("--device", default="cpu")
    for name, default in {"size": 64, "window": 128, "frames": 16, "batch": 8, "rounds": 3}.items():
        p.add_argument(f"--{name}", type=int, default=default)
    args = p.parse_args()

    from genreward.video.config import LatentConfig
    from genreward.video.latents import VideoLatentEncoder

    if args.vae in ("random", "full-random"):
        cfg = LatentConfig(vae="random", num_frames=args.frames, size=args.size, batch_size=args.batch)
    else:
        cfg = LatentConfig(vae="path", path=args.vae, num_frames=args.frames, size=args.size, batch_size=args.batch)
    if args.vae == "full-random":
        from diffusers import AutoencoderKLCogVideoX

        enc = VideoLatentEncoder(
            AutoencoderKLCogVideoX(), cfg, args.device, {"vae": "full-size CogVideoX VAE (random init)"}
        )
    else:
        enc = VideoLatentEncoder.from_config(cfg, device=args.device)
    env_step = measure_env_step(args.size)
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, 256, (args.window, args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batch)]
    enc.encode_batch(windows[:1])  # warm-up
    single, batched = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        enc.encode(windows[0])
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc.encode_batch(windows)
        batched.append((time.perf_counter() - t0) / len(windows))
    s, b = float(np.median(single)), float(np.median(batched))
    print(
        f"encoder={enc.identity().get('vae')} device={args.device} "
        f"window={args.window} steps -> {args.frames} frames at {args.size}px"
    )
    print(
        f"one window: {s * 1e3:.1f} ms ({1 / s:.1f} clips/s)   batch of "
        f"{args.batch}: {b * 1e3:.1f} ms/clip ({1 / b:.1f} clips/s)"
    )
    per_step = s / args.window
    print(f"env step+render (pick-place-v3, {args.size}px, measured now): {env_step * 1e3:.2f} ms")
    print(
        f"latent cost per env step at one window every {args.window} steps: {per_step * 1e3:.3f} ms "
        f"= {per_step / env_step:.3f} x env step time"
    )


if __name__ == "__main__":
    main()
