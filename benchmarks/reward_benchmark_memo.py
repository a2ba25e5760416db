"""The reward benchmark (stage evaluate_rewards) with and without the latent memo, in one run.

Every task's reward terms score its own probe episodes and, for the confusion matrix, the other
tasks' expert episodes; the VAE encoding of a clip does not depend on the task, so with the memo
(``latents.memo_mb``, default 256) each clip is encoded once per process. This runs the stage on
the data of a finished ``dvc repro`` (inputs unchanged) as a whole process, first with
``latents.memo_mb=0`` and then with the memo, and prints both wall times, their ratio, and
whether the two reports agree number for number (timings per step aside). The second run leaves
the reports as ``dvc repro`` wrote them.

    dvc repro && python benchmarks/reward_benchmark_memo.py

Run nothing else heavy meanwhile (the machine's cores are what is measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _numbers(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            if "ms_per_step" not in k:  # a measured time, not a score
                yield from _numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, x


def run(memo_mb: int | None, report: Path) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "flows.cli", "stage", "evaluate_rewards"]
    if memo_mb is not None:
        cmd += ["--set", f"latents.memo_mb={memo_mb}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd[2:])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0, json.loads(report.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", default="reports/reward_quality.json", help="the stage's metrics file")
    args = p.parse_args()
    report = Path(args.report)
    if not report.exists():
        sys.exit(f"error: {report} is missing; run `dvc repro evaluate_rewards` first")
    off, a = run(0, report)
    on, b = run(None, report)
    na, nb = dict(_numbers(a)), dict(_numbers(b))
    differ = [k for k in na if na[k] != nb.get(k)] + [k for k in nb if k not in na]
    print(f"evaluate_rewards, whole process: memo off {off:.2f} s, memo on {on:.2f} s, ratio on/off {on / off:.3f}")
    print(f"reports: {len(na)} values compared, {len(differ)} differ" + (f" (first: {differ[0]})" if differ else ""))


if __name__ == "__main__":
    main()
