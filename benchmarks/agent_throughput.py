"""DreamerV3 (sheeprl) next to DrQ-v2: agent steps/s and updates/s of a short run, same machine, one run.

Each agent trains through its registry runner (``genreward.agents.registry``) on the same task,
reward (``env_only``: no model inputs needed), budget and device, in its own process, one after
the other (alternating over ``--rounds``). Measured per run:

- **updates/s**: gradient updates over the time spent inside them (DrQ-v2: ``agent.update``;
  DreamerV3: sheeprl's ``dreamer_v3.train``, one call per gradient step, world model + actor
  + critic);
- **env steps/s**: agent steps over the rest of the run outside updates and evaluations
  (acting, stepping, rendering, replay writes);
- the whole run's wall time.

The budgets come from params.yaml (``--profile``, ``--set``) with ``rl.steps``, ``rl.seed_steps``
and the evaluation cadence overridden below. Prints the numbers of each run and the ratios
DreamerV3 / DrQ-v2. With ``--deterministic-cost`` it runs DrQ-v2 twice instead, with the
automatic thread count and in deterministic mode (``rl.deterministic``: one thread,
deterministic algorithms), and prints deterministic / default. Nothing else should run on the
machine meanwhile.

    python benchmarks/agent_throughput.py [--steps 768] [--seed-steps 256] [--rounds 1]
    python benchmarks/agent_throughput.py --device cuda            # on a GPU machine
    python benchmarks/agent_throughput.py --quick                  # ~1 min: checks that it runs
    python benchmarks/agent_throughput.py --deterministic-cost     # what rl.deterministic costs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGENTS = ("drqv2", "dreamerv3")


def child(args) -> dict:
    import tempfile

    from genreward.agents.config import DREAMERV3_TINY
    from genreward.agents.registry import RLRun, agent_spec
    from genreward.config import load_config
    from genreward.rewards.combine import RewardModel
    from genreward.runtime import configure_process

    sets = [
        f"rl.agent={args.child}",
        f"rl.steps={args.steps}",
        f"rl.seed_steps={args.seed_steps}",
        f"rl.eval_every={args.steps}",
        "rl.eval_episodes=1",
        "rl.gif_episodes=0",
        f"runtime.device={args.device}",
        *(args.set or []),
    ]
    if args.quick:
        sets += ["env.episode_length=64", "rl.dreamerv3.batch_size=2", "rl.dreamerv3.sequence_length=8"]
        sets += [f"rl.dreamerv3.overrides=[{','.join(DREAMERV3_TINY)}]", "rl.drqv2.batch_size=8"]
    cfg = load_config(REPO / "params.yaml", overrides=sets, profile=args.profile)
    settings = configure_process(cfg.runtime.threads, malloc_tuning=cfg.runtime.malloc_tuning)
    if cfg.rl.deterministic:  # as stage finetune_rl does
        from genreward.runtime import deterministic

        settings = {**settings, **deterministic(0)}
    timer = {"n": 0, "s": 0.0}

    def timed(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timer["n"] += 1
                timer["s"] += time.perf_counter() - t0

        return wrapper

    if args.child == "dreamerv3":
        from sheeprl.algos.dreamer_v3 import dreamer_v3

        dreamer_v3.train = timed(dreamer_v3.train)  # main() looks it up in its module at each call
    else:
        from genreward.agents.drqv2 import DrQV2Agent

        DrQV2Agent.update = timed(DrQV2Agent.update)
    model = RewardModel("env_only", cfg.rewards, {})
    with tempfile.TemporaryDirectory() as tmp:
        run = RLRun(args.task, 0, cfg.rl, cfg.env, model, cfg.resolve_device(), Path(tmp) / "agent")
        t0 = time.perf_counter()
        res = agent_spec(args.child).train_fn()(run)
        wall = time.perf_counter() - t0
    eval_s = float(res.timing.get("eval_s", 0.0))
    outside = wall - timer["s"] - eval_s
    return {
        "agent": args.child,
        "threads": settings["threads"],
        "steps": args.steps,
        "updates": timer["n"],
        "update_s": timer["s"],
        "eval_s": eval_s,
        "wall_s": wall,
        "updates_per_s": timer["n"] / max(timer["s"], 1e-9),
        "env_steps_per_s": args.steps / max(outside, 1e-9),
        "final_return": res.evals[-1]["return_mean"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="pick-place-v3")
    ap.add_argument("--steps", type=int, default=768)
    ap.add_argument("--seed-steps", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--set", action="append", help="more params overrides (KEY=VALUE)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--deterministic-cost", action="store_true", help="DrQ-v2 default vs rl.deterministic")
    ap.add_argument("--child", choices=AGENTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.seed_steps = 128, 64
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return
    if args.deterministic_cost:  # (label, agent, extra overrides); the ratio is the second over the first
        variants = [("default", "drqv2", []), ("deterministic", "drqv2", ["rl.deterministic=true"])]
    else:
        variants = [(agent, agent, []) for agent in AGENTS]
    rows = []
    for _ in range(args.rounds):
        for label, agent, extra in variants:
            cmd = [sys.executable, __file__, "--child", agent, "--task", args.task, "--steps", str(args.steps)]
            cmd += ["--seed-steps", str(args.seed_steps), "--device", args.device]
            cmd += (["--profile", args.profile] if args.profile else []) + (["--quick"] if args.quick else [])
            for s in [*(args.set or []), *extra]:
                cmd += ["--set", s]
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                sys.exit(f"{label} run failed:\n{out.stderr[-3000:]}")
            rows.append({**json.loads(line[-1][len("RESULT ") :]), "label": label})
            r = rows[-1]
            print(
                f"{label:13s} {r['steps']} steps, {r['threads']} thread(s): {r['updates']} updates, "
                f"{r['updates_per_s']:.3f} updates/s, {r['env_steps_per_s']:.1f} env steps/s, wall {r['wall_s']:.1f} s "
                f"(updates {r['update_s']:.1f} s, evaluation {r['eval_s']:.1f} s), final return {r['final_return']!r}"
            )
    keys = ("updates_per_s", "env_steps_per_s", "wall_s")
    mean = {v[0]: {k: sum(r[k] for r in rows if r["label"] == v[0]) / args.rounds for k in keys} for v in variants}
    (base, _, _), (other, _, _) = variants
    d, q = mean[other], mean[base]
    print(
        f"{other} / {base} ({args.device}): updates/s {d['updates_per_s'] / q['updates_per_s']:.3f}, "
        f"env steps/s {d['env_steps_per_s'] / q['env_steps_per_s']:.3f}, run wall time {d['wall_s'] / q['wall_s']:.3f}"
    )


if __name__ == "__main__":
    main()
