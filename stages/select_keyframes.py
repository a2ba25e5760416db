"""Stage select_keyframes: the key goal frame of each goal video (CLIP argmax, or the last frame).

Per task. inputs:  ``<data>/goal_videos/<task>.zarr``
outputs: ``<data>/keyframes/<task>.zarr`` (``scores[T]``, ``index``, ``frame[H,W,3]``; attrs:
         selector, model, texts) and ``<data>/keyframes/plots/<task>.png`` (frame strip + scores)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genreward.config import Config
from genreward.store.artifacts import add_array, artifact_hash, open_artifact, read_array, write_artifact
from genreward.vision.clip import KeyframeChoice, choose_keyframe
from genreward.viz import pyplot, save_figure
from stages.table import Stage

log = logging.getLogger(__name__)


def plot_choice(video: np.ndarray, choice: KeyframeChoice, title: str, path: Path, max_frames: int = 12) -> Path:
    plt = pyplot()

    t = len(video)
    shown = sorted(set(np.round(np.linspace(0, t - 1, min(t, max_frames))).astype(int).tolist()) | {choice.index})
    fig = plt.figure(figsize=(1.3 * len(shown), 3.6), dpi=100)
    grid = fig.add_gridspec(2, len(shown), height_ratios=[1, 1.1])
    for k, i in enumerate(shown):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(video[i])
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{i}", fontsize=8, color="red" if i == choice.index else "black")
        if i == choice.index:
            for side in ax.spines.values():
                side.set_color("red"), side.set_linewidth(3)
    ax = fig.add_subplot(grid[1, :])
    if np.all(np.isnan(choice.scores)):
        ax.text(
            0.5,
            0.5,
            f"selector '{choice.selector}': no CLIP scores; key frame = {choice.index}",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_xlim(0, t - 1)
    else:
        ax.plot(np.arange(t), choice.scores, marker="o", ms=3)
        ax.set_ylabel("CLIP cosine")
    ax.axvline(choice.index, color="red", ls="--", label=f"key frame {choice.index}")
    ax.set_xlabel("frame")
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    (task,) = cfg.tasks
    group = open_artifact(inputs["goal_video"], "goal_video")
    video = read_array(group, "video", ndim=4, dtype=np.uint8)
    prompt = cfg.prompt(task)
    # only CLIP needs a device: resolving "auto" imports torch (~1.5 s of this stage's start)
    device = cfg.resolve_device() if cfg.keyframes.selector == "clip" else "cpu"
    choice = choose_keyframe(video, prompt, cfg.keyframes, device=device)
    attrs = {
        "task": task,
        "prompt": prompt,
        "selector": choice.selector,
        "model": choice.model,
        "index": choice.index,
        "goal_video_oracle": bool(group.attrs.get("oracle", False)),
    }
    with write_artifact(
        outputs["keyframe"],
        "keyframes",
        params=cfg.section("keyframes"),
        inputs={"goal_video": artifact_hash(inputs["goal_video"])},
        attrs=attrs,
    ) as g:
        add_array(g, "scores", choice.scores)
        add_array(g, "index", np.asarray([choice.index], np.int64))
        add_array(g, "frame", video[choice.index], chunks=video[choice.index].shape)
    plot_choice(video, choice, f'{task} — {choice.selector}: "{prompt}"', outputs["plot"])
    log.info("%s: key frame %d of %d (%s)", task, choice.index, len(video), choice.selector)
    return {"index": choice.index, "frames": len(video), "selector": choice.selector}


STAGE = Stage(
    "select_keyframes",
    "Key goal frame per task (CLIP argmax over the goal video, or its last frame)",
    run,
    over="task",
    inputs={"goal_video": "{data}/goal_videos/{task}.zarr"},
    outputs={"keyframe": "{data}/keyframes/{task}.zarr", "plot": "{data}/keyframes/plots/{task}.png"},
    params=("keyframes", "prompts/{task}"),
)
