"""Stage runs handed to the stage runner vs stage runs in a process of their own, same run.

Each stage command runs ``--repeats`` times in each mode, alternating which goes first: in a
process of its own (``GENREWARD_STAGE_RUNNER=0``: it imports torch, Prefect, diffusers, ...
itself) and handed to the stage runner (a fork of a process that imported them already). The
wall time of the whole ``genreward stage`` command is measured, as DVC sees it. Prints each
stage's times, the median ratio handed-over / own-process, and the time saved per run.

Run it from a repository whose ``dvc repro`` has finished (the stages' inputs exist), with a
server and runner started from the same shell::

    genreward server start
    python benchmarks/stage_runner.py [--repeats 3] [--stage "select_keyframes --task pick-place-v3"] ...
    genreward server stop

The stages rewrite their own outputs with the same content; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_STAGES = (
    "select_keyframes --task pick-place-v3",
    "generate_goal_videos --task pick-place-v3",
    "encode_goal_latents --task pick-place-v3",
    "evaluate",
)


def run(stage: str, handed_over: bool) -> float:
    exe = shutil.which("genreward") or str(Path(sys.executable).parent / "genreward")
    env = dict(os.environ)
    env.pop("GENREWARD_STAGE_RUNNER", None)
    if not handed_over:
        env["GENREWARD_STAGE_RUNNER"] = "0"
    t0 = time.perf_counter()
    res = subprocess.run([exe, "stage", *stage.split()], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"`genreward stage {stage}` failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stage", action="append", help="a stage command line (repeatable); default: four stages")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from flows import runner

    if not runner.ready():
        raise SystemExit("no stage runner answers: run `genreward server start` in this shell first")
    print(f"{'stage':<45}{'own process (s)':>28}{'handed over (s)':>28}{'ratio':>8}{'saved':>8}")
    saved = []
    for stage in args.stage or DEFAULT_STAGES:
        own, handed = [], []
        for r in range(args.repeats):
            for mode in (False, True) if r % 2 == 0 else (True, False):
                (handed if mode else own).append(run(stage, mode))
        ratio = statistics.median(handed) / statistics.median(own)
        saved.append(statistics.median(own) - statistics.median(handed))
        fmt = ", ".join
        print(
            f"{stage:<45}{fmt(f'{t:.2f}' for t in own):>28}{fmt(f'{t:.2f}' for t in handed):>28}"
            f"{ratio:>8.3f}{saved[-1]:>7.2f}s"
        )
    print(f"median saved per stage run: {statistics.median(saved):.2f} s")


if __name__ == "__main__":
    main()
