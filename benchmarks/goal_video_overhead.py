"""Time per goal video: genreward's diffusers generator vs calling the diffusers pipeline directly.

Both sides use the same loaded pipeline object and the exact same call arguments
(``DiffusersGenerator.call_kwargs``), so the ratio isolates genreward's own overhead
(spec handling, output validation and conversion). Rounds alternate A/B.

    python benchmarks/goal_video_overhead.py                      # a tiny CogVideoX built here (CPU)
    python benchmarks/goal_video_overhead.py --model /path/to/CogVideoX-2b --device cuda \
        --dtype bfloat16 --frames 49 --height 480 --width 720 --steps 50     # the GPU check
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

import genreward  # noqa: F401


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="diffusers pipeline folder or hub id (default: build a tiny one)")
    p.add_argument("--mode", default="t2v", choices=["t2v", "i2v"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    for name, default in {"frames": 9, "height": 32, "width": 32, "steps": 8, "rounds": 5}.items():
        p.add_argument(f"--{name}", type=int, default=default)
    args = p.parse_args()

    import torch

    from genreward.video.base import VideoSpec
    from genreward.video.config import DEFAULT_PROMPTS, DiffusersConfig
    from genreward.video.diffusers_backend import DiffusersGenerator

    model, seq = args.model, 226
    if model is None:
        from genreward.video.cogvideox_build import build_cogvideox_pipeline

        model = tempfile.mkdtemp()
        build_cogvideox_pipeline(DEFAULT_PROMPTS.values(), args.mode).save_pretrained(model)
        seq = 16
    gen = DiffusersGenerator(
        DiffusersConfig(model=model, mode=args.mode, dtype=args.dtype, max_sequence_length=seq, use_adapted=False),
        device=args.device,
        progress=False,
    )
    image = np.zeros((args.height, args.width, 3), np.uint8) if args.mode == "i2v" else None
    spec = VideoSpec(
        prompt=DEFAULT_PROMPTS["pick-place-v3"],
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        steps=args.steps,
        image=image,
    )
    pipe = gen.pipeline()

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def direct():
        with torch.inference_mode():
            return pipe(**gen.call_kwargs(spec)).frames

    gen.generate(spec)  # warm-up both paths
    direct()
    ours, raw = [], []
    for _ in range(args.rounds):
        sync()
        t0 = time.perf_counter()
        gen.generate(spec)
        sync()
        ours.append(time.perf_counter() - t0)
        sync()
        t0 = time.perf_counter()
        direct()
        sync()
        raw.append(time.perf_counter() - t0)
    o, r = float(np.median(ours)), float(np.median(raw))
    print(
        f"model={args.model or 'tiny (built here)'} device={args.device} dtype={gen.torch_dtype_name} "
        f"{args.frames}x{args.height}x{args.width}, {args.steps} steps, {args.rounds} rounds"
    )
    print(
        f"genreward generator: {o:.4f} s/video   diffusers direct: {r:.4f} s/video   ratio: {o / r:.3f} (goal <= 1.05)"
    )


if __name__ == "__main__":
    main()
