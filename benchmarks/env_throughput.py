"""Env throughput: genreward's pixel wrapper vs raw Meta-World step+render, same run, same cores.

Both sides step the same Meta-World task class with the same camera and resolution and render
one frame per step. "raw (same render settings)" applies the wrapper's fast-render settings
(no shadows, no offscreen MSAA) to the raw env, so the ratio isolates the wrapper's own cost
(row flip, frame stack, state copy, success bookkeeping). "raw (Meta-World defaults)" is what
a user gets without those settings. Each measurement alternates A/B rounds to cancel drift.

    python benchmarks/env_throughput.py [--steps 300] [--size 64] [--rounds 3] [--tasks ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from genreward.envs import PAPER_TASKS, EnvConfig, gl
from genreward.envs.config import ACTION_DIM


def raw_env(task: str, size: int, camera: str, fast: bool):
    from genreward.envs.metaworld_env import make_metaworld

    env = make_metaworld(task, camera, size, size, episode_length=256, fast_render=fast)
    env.seed(0)
    return env


def time_raw(env, actions) -> float:
    env.reset()
    env.render()
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
        env.render()
        if env.curr_path_length >= env.max_path_length:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def time_wrapper(env, actions) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        _, _, _, trunc, _ = env.step(a)
        if trunc:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS))
    args = p.parse_args()
    backend = gl.configure()
    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    print(backend.describe(), f"| {args.size} px, camera corner, {args.steps} steps x {args.rounds} rounds")
    print(f"{'task':<22}{'wrapper':>10}{'raw same':>10}{'raw dflt':>10}{'ratio same':>12}{'ratio dflt':>12}")
    ratios_same, ratios_default = [], []
    for task in args.tasks:
        actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, ACTION_DIM)).astype(np.float32)
        ours = MetaWorldPixelEnv(task, EnvConfig(image_size=args.size), seed=0)
        same = raw_env(task, args.size, "corner", fast=True)
        dflt = raw_env(task, args.size, "corner", fast=False)
        w, s, d = [], [], []
        for _ in range(args.rounds):
            w.append(time_wrapper(ours, actions))
            s.append(time_raw(same, actions))
            d.append(time_raw(dflt, actions))
        for e in (ours, same, dflt):
            e.close()
        wm, sm, dm = (float(np.median(x)) for x in (w, s, d))
        ratios_same.append(wm / sm)
        ratios_default.append(wm / dm)
        print(f"{task:<22}{wm:>10.1f}{sm:>10.1f}{dm:>10.1f}{wm / sm:>12.3f}{wm / dm:>12.3f}")
    print(
        f"geometric mean ratio vs raw (same render settings): {np.exp(np.mean(np.log(ratios_same))):.3f}  (goal >= 0.9)"
    )
    print(f"geometric mean ratio vs raw (Meta-World defaults):  {np.exp(np.mean(np.log(ratios_default))):.3f}")


if __name__ == "__main__":
    main()
