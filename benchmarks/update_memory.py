"""Agent updates/s before vs after the allocator settings and the copy-free augmentation, same run.

Measures the FB update at the ``paper`` profile's ``fb:`` values (d=64, hidden 512, batch 1024,
single 64 px frames as pretrain_fb samples them) and the DrQ-v2 update at the ``paper``
profile's ``rl:`` values (batch 256, hidden 1024, 3 stacked 64 px frames), on the CPU, one
fixed pre-sampled batch (no data loading). Each measurement runs in its own process, since
the allocator settings are process-wide:

- before: today's code path before the change: glibc's default allocator, torch's default
  thread count, and the old augmentation and pixel normalisation (padded copy + channels-last
  gather + ``.contiguous()`` on float frames; kept below, labelled, as the reference);
- after: :func:`genreward.runtime.configure_process` (thread count, allocator settings) and
  the library's current augmentation.

Prints updates/s, the ratio after/before, minor page faults per update (``ru_minflt``) and
kernel (system) CPU time per update. Targets: FB >= 2x, DrQ-v2 >= 1.4x. Rounds alternate
before/after to cancel drift. Nothing else should run on the machine meanwhile (other
training, test suites, builds): they share the cores and the memory bandwidth.

    python benchmarks/update_memory.py [--rounds 2] [--updates 10]
    python benchmarks/update_memory.py --quick      # ~15 s: checks that it runs, measures nothing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# variables that would change what "before" measures: the thread count or the allocator
SCRUBBED = ("GENREWARD_THREADS", "GENREWARD_THREAD_SHARE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
AGENTS = ("fb", "drqv2")


# -- "before": the augmentation and normalisation as they were (reference only) -----------------
def old_random_shift(x, pad: int):
    """OLD RandomShift.forward (genreward/agents/nets.py before the change), on float frames."""
    import torch
    from torch import nn

    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # b,h
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # b,w
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # b,h,w,c
    return out.permute(0, 3, 1, 2).contiguous()


def old_encoder_forward(self, obs):
    """OLD PixelEncoder.forward: three full-size float tensors per call."""
    x = obs.float() / 255.0 - 0.5
    return self.convs(x).flatten(1)


def use_old_code(agent) -> None:
    """Put the old augmentation back: the agents called it on ``obs.float()``."""
    from torch import nn

    from genreward.agents.nets import PixelEncoder

    class OldShift(nn.Module):
        def __init__(self, pad: int):
            super().__init__()
            self.pad = pad

        def forward(self, x):
            return old_random_shift(x.float(), self.pad) if self.pad else x.float()

    PixelEncoder.forward = old_encoder_forward
    agent.aug = OldShift(agent.aug.pad)


# -- one measurement (a child process) -----------------------------------------------------------
def build(name: str, quick: bool):
    """The agent and its update closure at the paper profile's values (tiny with ``quick``)."""
    import torch

    from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config
    from genreward.agents.fb import FBAgent
    from genreward.config import load_config
    from genreward.envs.config import ACTION_DIM

    paper = load_config(REPO / "params.yaml", profile="paper")
    size = 32 if quick else paper.env.image_size
    gen = torch.Generator().manual_seed(0)
    if name == "fb":
        fb = paper.fb.model_copy(update={"batch_size": 64} if quick else {})
        agent = FBAgent((3, size, size), ACTION_DIM, fb)
        b, shape = fb.batch_size, (3, size, size)
    else:
        rl = paper.rl.drqv2.model_copy(update={"batch_size": 32, "hidden_dim": 64} if quick else {})
        agent = DrQV2Agent((3 * paper.env.frame_stack, size, size), ACTION_DIM, DrQV2Config.from_section(rl))
        b, shape = rl.batch_size, (3 * paper.env.frame_stack, size, size)
    obs = torch.randint(0, 256, (b, *shape), dtype=torch.uint8, generator=gen)
    next_obs = torch.randint(0, 256, (b, *shape), dtype=torch.uint8, generator=gen)
    action = torch.rand(b, ACTION_DIM, generator=gen) * 2 - 1
    reward = torch.rand(b, generator=gen)
    if name == "fb":
        return (
            agent,
            f"FB d={fb.z_dim} hidden={fb.hidden_dim} batch={b} {size}px",
            lambda: agent.update(obs, action, next_obs),
        )
    return (
        agent,
        f"DrQ-v2 hidden={rl.hidden_dim} batch={b} {shape[0]}x{size}px",
        lambda: agent.update(obs, action, reward, next_obs, step=0),
    )


def child(name: str, mode: str, updates: int, quick: bool) -> None:
    import torch

    settings = None
    if mode == "after":
        from genreward.runtime import configure_process

        settings = configure_process()
    torch.manual_seed(0)
    agent, label, update = build(name, quick)
    if mode == "before":
        use_old_code(agent)
    for _ in range(3):  # warm up (the tuned heap grows to its size once)
        update()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(updates):
        update()
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "label": label,
        "updates_per_s": updates / seconds,
        "faults": (r1.ru_minflt - r0.ru_minflt) / updates,
        "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime) / updates,
        "user_ms": 1e3 * (r1.ru_utime - r0.ru_utime) / updates,
        "threads": torch.get_num_threads(),
        "malloc_tuning": bool(settings and settings["malloc_tuning"]),
    }
    print("RESULT " + json.dumps(result), flush=True)


def measure(name: str, mode: str, updates: int, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("MALLOC_")}
    cmd = [sys.executable, __file__, "--child", name, "--mode", mode, "--updates", str(updates)]
    run = subprocess.run(cmd + ["--quick"] * quick, env=env, cwd=REPO, capture_output=True, text=True)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    if run.returncode != 0 or not lines:
        sys.exit(f"{name} {mode} failed:\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="before/after pairs per agent (alternating)")
    p.add_argument("--updates", type=int, default=10, help="timed updates per measurement")
    p.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 round, 3 updates: a smoke check")
    p.add_argument("--child", choices=AGENTS, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("before", "after"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.mode, args.updates, args.quick)
    if args.quick:
        args.rounds, args.updates = 1, 3
    targets = {"fb": 2.0, "drqv2": 1.4}
    set_vars = [k for k in os.environ if k in SCRUBBED or k.startswith("MALLOC_")]
    if set_vars:
        print(f"(left out of the measured processes: {', '.join(sorted(set_vars))})")
    print(f"{os.cpu_count()} CPUs, {args.rounds} round(s) of {args.updates} updates{' (--quick)' * args.quick}")
    summary = []
    for name in args.agents:
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for mode in ("before", "after"):
                runs[mode].append(measure(name, mode, args.updates, args.quick))
        print(f"\n{runs['after'][0]['label']}")
        print(
            f"{'':8}{'updates/s':>11}{'faults/update':>15}{'system ms/update':>18}{'user ms/update':>16}{'threads':>9}"
        )
        mean = {}
        for mode, rs in runs.items():
            mean[mode] = {k: sum(r[k] for r in rs) / len(rs) for k in ("updates_per_s", "faults", "sys_ms", "user_ms")}
            m = mean[mode]
            print(
                f"{mode:8}{m['updates_per_s']:11.3f}{m['faults']:15.0f}{m['sys_ms']:18.1f}{m['user_ms']:16.1f}"
                f"{rs[0]['threads']:9d}"
            )
        ratio = mean["after"]["updates_per_s"] / mean["before"]["updates_per_s"]
        ok = "not judged with --quick" if args.quick else "ok" if ratio >= targets[name] else "BELOW TARGET"
        print(f"after/before updates/s: {ratio:.2f} (target >= {targets[name]}: {ok})")
        summary.append(f"{name} {ratio:.2f}x")
    print(f"\nafter/before: {', '.join(summary)}" + ("   [--quick: tiny sizes, not a measurement]" * args.quick))


if __name__ == "__main__":
    main()
