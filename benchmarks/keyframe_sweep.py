"""The frame term's quality with every goal-video frame as its key frame (reward benchmark metrics).

For each task: the FB model (stage pretrain_fb) scores the probe episodes (stage collect_probes)
with each frame of the goal video (stage generate_goal_videos) as the goal, and prints the frame
term's VOC on successful expert episodes and its success AUROC per key-frame index, next to
the indices two label-free rules choose: ``last`` (the laptop default) and ``fb_far`` (the
frame whose FB goal embedding z = B(frame) is furthest from the first frame's). It also prints
the frame-to-frame motion of the goal video (mean absolute pixel change), which a
motion-settling rule would read. A diagnostic of the key-frame choice, not a timing.

    python benchmarks/keyframe_sweep.py [--data data] [--tasks pick-place-v3 ...] [--stride 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from genreward.agents.fb import load_fb
    from genreward.config import load_config
    from genreward.envs.probes import read_probes
    from genreward.rewards.benchmark import eval_steps, quality, term_scores
    from genreward.rewards.terms import FrameReward, to_agent_frame
    from genreward.store.artifacts import open_artifact, read_array

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data", help="the pipeline's data folder")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--tasks", nargs="*", help="default: every task of params.yaml")
    ap.add_argument("--stride", type=int, default=None, help="default: benchmark.stride")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    cfg = load_config(args.params)
    data = Path(args.data)
    fb = load_fb(data / "fb", "cpu")
    out = {}
    for task in args.tasks or cfg.tasks:
        t0 = time.perf_counter()
        probes = read_probes(data / "probes" / f"{task}.zarr", task)
        steps = eval_steps(probes.length, args.stride or cfg.benchmark.stride)
        video = read_array(open_artifact(data / "goal_videos" / f"{task}.zarr", "goal_video"), "video", ndim=4)
        goals = [to_agent_frame(f, cfg.env.image_size) for f in video]
        z = np.stack([fb.goal_z(g).detach().cpu().numpy().ravel() for g in goals])
        motion = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        rows = []
        for i, goal in enumerate(goals):
            raw = term_scores(FrameReward(fb, goal), probes, range(len(probes.kinds)), steps, cfg.rewards.window)
            q = quality(raw, probes, steps)
            rows.append({"index": i, "voc": q["voc"].value, "auroc": q["auroc"].value})
        fb_far = int(np.argmax(np.linalg.norm(z - z[0], axis=1)))
        out[task] = {"rows": rows, "last": len(goals) - 1, "fb_far": fb_far, "motion": motion.tolist()}
        best = max(rows, key=lambda r: r["voc"])
        print(f"{task}: {len(goals)} frames, {time.perf_counter() - t0:.1f} s")
        print("  index  " + " ".join(f"{r['index']:>6d}" for r in rows))
        print("  VOC    " + " ".join(f"{r['voc']:6.3f}" for r in rows))
        print("  AUROC  " + " ".join(f"{r['auroc']:6.3f}" for r in rows))
        print("  motion " + " ".join(f"{m:6.2f}" for m in motion))
        print(
            f"  last (frame {len(goals) - 1}): VOC {rows[-1]['voc']!r}; fb_far (frame {fb_far}): VOC "
            f"{rows[fb_far]['voc']!r}; best frame {best['index']}: VOC {best['voc']!r}"
        )
    for rule in ("last", "fb_far"):
        vocs = [v["rows"][v[rule]]["voc"] for v in out.values()]
        aurocs = [v["rows"][v[rule]]["auroc"] for v in out.values()]
        print(f"mean over tasks, rule {rule}: VOC {float(np.mean(vocs))!r}, AUROC {float(np.mean(aurocs))!r}")
    best = [max(r["voc"] for r in v["rows"]) for v in out.values()]
    print(f"mean over tasks, best frame per task (an oracle, chosen on these probes): VOC {float(np.mean(best))!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
