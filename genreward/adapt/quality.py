"""Quality of a video model on the domain: closeness to real clips and task conditioning.

(a) ``nearest_distance``: per-frame mean squared pixel error (pixels in [0, 1]) of a generated
    clip to its nearest real clip, compared with the same for baselines (the mean training clip,
    and samples of the untrained model).
(b) ``task_accuracy``: the last generated frame is assigned to the task whose real final
    frames hold its nearest neighbour; accuracy over prompts x seeds (chance: 1 / tasks).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _f(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32) / 255.0


def frame_distances(clip: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Mean per-frame squared error of ``clip [T,H,W,3]`` to each of ``real [N,T,H,W,3]`` -> ``[N]``."""
    if clip.shape != real.shape[1:]:
        raise ValueError(f"clip shape {clip.shape} differs from the real clips' {real.shape[1:]}")
    d = (_f(real) - _f(clip)[None]) ** 2
    return d.reshape(len(real), -1).mean(axis=1)


def nearest_distance(clip: np.ndarray, real: np.ndarray) -> float:
    return float(frame_distances(clip, real).min())


def nearest_task(frame: np.ndarray, finals: np.ndarray, final_tasks: np.ndarray) -> int:
    """Task id of the real final frame nearest to ``frame`` (``finals [N,H,W,3]``)."""
    d = ((_f(finals) - _f(frame)[None]) ** 2).reshape(len(finals), -1).mean(axis=1)
    return int(final_tasks[int(np.argmin(d))])


def evaluate_samples(
    samples: dict[int, list[np.ndarray]], real: np.ndarray, finals: np.ndarray, final_tasks: np.ndarray
) -> dict:
    """Metrics for ``samples`` (task id -> generated clips) against the real clips."""
    dists, correct, total = [], 0, 0
    confusion: dict[int, dict[int, int]] = {}
    for tid, clips in samples.items():
        for clip in clips:
            dists.append(nearest_distance(clip, real))
            pred = nearest_task(clip[-1], finals, final_tasks)
            confusion.setdefault(tid, {}).setdefault(pred, 0)
            confusion[tid][pred] += 1
            correct += int(pred == tid)
            total += 1
    return {
        "nearest_clip_mse": float(np.mean(dists)),
        "task_accuracy": correct / max(total, 1),
        "samples": total,
        "confusion": {str(k): {str(p): n for p, n in v.items()} for k, v in confusion.items()},
    }


def quality_report(
    generate: Callable[[int, int], np.ndarray],
    untrained: Callable[[int, int], np.ndarray] | None,
    task_ids: Sequence[int],
    seeds: Sequence[int],
    real: np.ndarray,
    finals: np.ndarray,
    final_tasks: np.ndarray,
    mean_clip: np.ndarray,
) -> dict:
    """``generate(task_id, seed) -> clip`` for every task x seed; the same for ``untrained``."""
    gen = {t: [generate(t, s) for s in seeds] for t in task_ids}
    report = {
        "model": evaluate_samples(gen, real, finals, final_tasks),
        "mean_clip": {"nearest_clip_mse": nearest_distance(mean_clip, real)},
        "chance_accuracy": 1.0 / len(set(int(t) for t in final_tasks)),
    }
    if untrained is not None:
        report["untrained"] = evaluate_samples(
            {t: [untrained(t, s) for s in seeds] for t in task_ids}, real, finals, final_tasks
        )
    report["samples"] = gen
    return report
