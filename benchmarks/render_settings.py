"""Render time per frame under each of ``env.fast_render``'s settings, in one run.

Raw Meta-World envs (no wrapper), one per task and setting, rendered at the pixel env's size
from the same reset state; the rounds alternate between the settings, so drift cancels. Prints
ms/frame for Meta-World's defaults, for shadows and offscreen multisampling off, and for
reflections off as well (``env.fast_render: true``), the ratios, and the share of pixels each
step changes. Without a GPU MuJoCo renders with Mesa's llvmpipe; the env workers render on one
thread (``LP_NUM_THREADS=0``), as here.

    python benchmarks/render_settings.py [--size 64] [--frames 50] [--rounds 3] [--tasks ...]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("LP_NUM_THREADS", "0")  # as in the env workers (genreward.envs.vector)

from genreward.envs import PAPER_TASKS, gl  # noqa: E402


def current(env):
    """``env.render`` in the env's own GL context (several envs live in this process)."""
    env.render()  # creates the viewer and its context
    viewer = env.mujoco_renderer._viewers["rgb_array"]
    viewer.make_context_current()
    return env.render


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=50, help="frames per round and setting")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--camera", default="corner")
    p.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS))
    args = p.parse_args()

    from genreward.envs.metaworld_env import make_metaworld

    names = ["Meta-World defaults", "no shadows/MSAA", "fast_render"]
    print(f"GL backend {gl.configure()}, {args.size} px, {args.frames} frames x {args.rounds} rounds per setting")
    totals = {n: [] for n in names}
    for task in args.tasks:
        envs = {}
        for n in names:  # one env per setting: shadow and sample settings take effect in a new GL context
            env = make_metaworld(task, args.camera, args.size, args.size, episode_length=256, fast_render=False)
            if n != names[0]:
                env.model.vis.quality.shadowsize = env.model.vis.quality.offsamples = 0
            if n == "fast_render":
                env.model.mat_reflectance[:] = 0.0
            env.reset(seed=0)
            envs[n] = env
        reflectance = envs[names[0]].model.mat_reflectance.copy()
        ms = {n: [] for n in names}
        frames = {}
        for _ in range(args.rounds):
            for n, env in envs.items():
                render = current(env)
                frames[n] = render().copy()
                t0 = time.perf_counter()
                for _ in range(args.frames):
                    render()
                ms[n].append((time.perf_counter() - t0) / args.frames * 1e3)
        # what reflections add, in one env and state: the fast env drawn again with Meta-World's reflectances
        fast = envs["fast_render"]
        render = current(fast)
        without = render().copy()
        fast.model.mat_reflectance[:] = reflectance
        with_reflections = render().copy()
        fast.model.mat_reflectance[:] = 0.0
        for env in envs.values():
            env.close()
        med = {n: float(np.median(v)) for n, v in ms.items()}
        for n in names:
            totals[n].append(med[n])
        shadows = float((np.abs(frames[names[0]].astype(int) - frames[names[1]]).sum(-1) > 0).mean())
        reflections = float((np.abs(with_reflections.astype(int) - without).sum(-1) > 0).mean())
        print(
            f"{task}: "
            + ", ".join(f"{n} {med[n]:.2f} ms" for n in names)
            + f"; share of pixels changed by shadows/MSAA off {shadows:.4f} (two envs, same reset seed),"
            f" by reflections off {reflections:.6f} (one env, one state)"
        )
    mean = {n: float(np.mean(v)) for n, v in totals.items()}
    print(
        "mean ms/frame: "
        + ", ".join(f"{n} {mean[n]:.2f}" for n in names)
        + f"; fast_render / no shadows+MSAA {mean['fast_render'] / mean['no shadows/MSAA']:.3f}"
        + f"; fast_render / defaults {mean['fast_render'] / mean['Meta-World defaults']:.3f}"
    )


if __name__ == "__main__":
    main()
