"""Two training loops sharing the cores: slowdown when run at once, torch's default threads vs ours.

Two heavy inner loops, each in its own process:

- ``vae``: a training step of a small 3D conv VAE like the laptop profile's video VAE
  (``video_model.from_scratch``: channels 8-16-32-32, GroupNorm with 4 groups, SiLU, 8 latent
  channels, batch 2 clips of 9 frames at 64x64), Adam;
- ``drqv2``: a DrQ-v2 update (genreward/agents/drqv2.py) at the ``paper`` profile's ``rl:``
  values (batch 256, hidden 1024, 3 stacked 64 px frames), on a fixed batch.

Each runs alone, then both at once (started together, both timed over the same window), in
two modes, in one run:

- before: torch's default thread count (every core, in each process);
- after: :func:`genreward.runtime.configure_process` with ``share`` = the loops running at
  once (1 alone, 2 together), as a stage under the pipeline flow's Dask workers gets it.

Prints ms/update per loop and the slowdown concurrent/alone per mode. Two loops on N cores can
at best each take 2x their time alone (each gets half the cores); oversubscribed threads do
worse. Target: concurrent/alone <= 2.3 for each loop with the new setting. The allocator
settings are left out (``--malloc-tuning`` adds them to "after"; benchmarks/update_memory.py
measures them). Nothing else should run on the machine meanwhile (other training, test
suites, builds): they take cores from the loops and make the ratios meaningless.

    python benchmarks/thread_sharing.py [--seconds 15] [--malloc-tuning]
    python benchmarks/thread_sharing.py --quick      # ~30 s: checks that it runs, measures nothing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOPS = ("vae", "drqv2")
SCRUBBED = ("GENREWARD_THREADS", "GENREWARD_THREAD_SHARE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TARGET = 2.3


# -- the loops (run in child processes) ---------------------------------------------------------
def vae_step(quick: bool):
    """A laptop-VAE-like training step: conv3d encoder/decoder with GroupNorm + SiLU, MSE + KL."""
    import torch
    from torch import nn

    chans, groups, latent = (8, 16, 32, 32), 4, 8

    def block(cin: int, cout: int, stride=1) -> list[nn.Module]:
        return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(groups, cout), nn.SiLU()]

    enc: list[nn.Module] = block(3, chans[0])
    for cin, cout in zip(chans, chans[1:]):
        enc += block(cin, cout, stride=(1, 2, 2))  # 8x spatial compression over the 3 steps
    enc.append(nn.Conv3d(chans[-1], 2 * latent, 1))
    dec: list[nn.Module] = block(latent, chans[-1])
    for cin, cout in zip(chans[::-1], chans[::-1][1:]):
        dec += [nn.Upsample(scale_factor=(1, 2, 2)), *block(cin, cout)]
    dec.append(nn.Conv3d(chans[0], 3, 3, padding=1))
    encoder, decoder = nn.Sequential(*enc), nn.Sequential(*dec)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=2e-3)
    frames, size = (3, 16) if quick else (9, 64)
    video = torch.rand(2, 3, frames, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def step() -> None:
        mean, logvar = encoder(video).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = nn.functional.mse_loss(decoder(z), video) + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def drqv2_step(quick: bool):
    import torch

    from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config
    from genreward.config import load_config
    from genreward.envs.config import ACTION_DIM

    paper = load_config(REPO / "params.yaml", profile="paper")
    rl = paper.rl.drqv2.model_copy(update={"batch_size": 16, "hidden_dim": 64} if quick else {})
    size, channels = (32 if quick else paper.env.image_size), 3 * paper.env.frame_stack
    agent = DrQV2Agent((channels, size, size), ACTION_DIM, DrQV2Config.from_section(rl))
    gen = torch.Generator().manual_seed(0)
    b = rl.batch_size
    obs = torch.randint(0, 256, (b, channels, size, size), dtype=torch.uint8, generator=gen)
    next_obs = torch.randint(0, 256, (b, channels, size, size), dtype=torch.uint8, generator=gen)
    action, reward = torch.rand(b, ACTION_DIM, generator=gen) * 2 - 1, torch.rand(b, generator=gen)
    return lambda: agent.update(obs, action, reward, next_obs, step=0)


def child(loop: str, mode: str, share: int, seconds: float, quick: bool, malloc_tuning: bool) -> None:
    """Build the loop, warm up, say ``READY``, wait for ``GO`` on stdin, time the updates that
    finish within ``seconds``, then keep stepping (untimed) for a fifth of that: the other loop's
    last timed update still runs beside this one."""
    import torch

    if mode == "after":
        from genreward.runtime import configure_process

        configure_process(share=share, malloc_tuning=malloc_tuning)
    torch.manual_seed(0)
    step = vae_step(quick) if loop == "vae" else drqv2_step(quick)
    for _ in range(2):
        step()
    print("READY", flush=True)
    sys.stdin.readline()
    n, timed, t0 = 0, 0.0, time.perf_counter()
    while time.perf_counter() - t0 < 1.2 * seconds or n == 0:
        step()
        if time.perf_counter() - t0 <= seconds or n == 0:
            n, timed = n + 1, time.perf_counter() - t0
    print("RESULT " + json.dumps({"ms": 1e3 * timed / n, "updates": n, "threads": torch.get_num_threads()}))


# -- the driver ---------------------------------------------------------------------------------
def run_together(loops: tuple[str, ...], mode: str, args) -> dict[str, dict]:
    """Start one process per loop, wait until all are warm, start them at once, collect results."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("MALLOC_")}
    procs = {}
    for loop in loops:
        cmd = [sys.executable, __file__, "--child", loop, "--mode", mode, "--share", str(len(loops))]
        cmd += ["--seconds", str(args.seconds)] + ["--quick"] * args.quick + ["--malloc-tuning"] * args.malloc_tuning
        procs[loop] = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for loop, proc in procs.items():
        said = []
        for line in proc.stdout:
            if line.startswith("READY"):
                break
            said.append(line)
        else:
            sys.exit(f"{loop} ({mode}) failed before it started:\n{''.join(said)[-3000:]}")
    for proc in procs.values():
        proc.stdin.write("GO\n")
        proc.stdin.flush()
    results = {}
    for loop, proc in procs.items():
        out, _ = proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{loop} ({mode}) failed:\n{out[-3000:]}")
        results[loop] = json.loads(lines[-1][len("RESULT ") :])
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0, help="timed window of each phase")
    p.add_argument("--malloc-tuning", action="store_true", help="'after' also applies the allocator settings")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 s windows: a smoke check")
    p.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("before", "after"), help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.mode, args.share, args.seconds, args.quick, args.malloc_tuning)
    if args.quick:
        args.seconds = 1.0
    set_vars = [k for k in os.environ if k in SCRUBBED or k.startswith("MALLOC_")]
    if set_vars:
        print(f"(left out of the measured processes: {', '.join(sorted(set_vars))})")
    print(
        f"{os.cpu_count()} CPUs, {args.seconds:g} s per phase{' (--quick: tiny sizes)' * args.quick}"
        f"{', after includes the allocator settings' * args.malloc_tuning}"
    )
    print(f"{'mode':8}{'loop':7}{'threads':>9}{'alone ms/update':>17}{'together ms/update':>20}{'together/alone':>16}")
    verdicts = []
    for mode in ("before", "after"):
        alone = {loop: run_together((loop,), mode, args)[loop] for loop in LOOPS}
        together = run_together(LOOPS, mode, args)
        for loop in LOOPS:
            a, t = alone[loop], together[loop]
            ratio = t["ms"] / a["ms"]
            threads = f"{a['threads']}/{t['threads']}"
            print(f"{mode:8}{loop:7}{threads:>9}{a['ms']:17.1f}{t['ms']:20.1f}{ratio:16.2f}")
            if mode == "after":
                verdicts.append(f"{loop} {ratio:.2f}" + ("" if ratio <= TARGET else " ABOVE"))
    note = "not judged with --quick" if args.quick else ", ".join(verdicts)
    print(f"threads: alone/together. Target with the new setting: together/alone <= {TARGET} ({note})")


if __name__ == "__main__":
    main()
