"""Stage pretrain_fb: a forward-backward representation from the reward-free exploration data.

inputs:  ``<data>/exploration.zarr``
outputs: ``<data>/fb/`` (``weights.safetensors`` + ``meta.json``: the inference model),
         ``<data>/fb_curves.csv`` (DVC plots), ``<data>/fb_plots/curves.png``, ``<data>/fb_metrics.json``
Training resumes from ``<data>/.fb.partial/`` (checkpoints every ``fb.checkpoint_every``); a
non-finite loss stops it with a message (the update, and fb.lr to lower) and keeps the last good
checkpoint there. A degenerate result (a NaN or infinite final metric, e.g. ``q_z_corr`` when F
collapsed to a constant) fails the stage too: no output is written, an earlier one stays.

Goal-reaching check (held-out episodes, the same share of every task's,
:func:`genreward.agents.fb.split_heldout` and :func:`genreward.agents.fb.goal_reaching`): for
each, the goal is its last frame; Spearman's ρ between r_FB(s_t, a_t) and the steps left to the goal,
averaged over episodes (goal: ρ < −0.5).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from genreward.config import Config
from genreward.envs.config import ACTION_DIM
from genreward.store.artifacts import artifact_hash
from genreward.store.atomic import non_finite, write_csv_atomic, write_json_atomic
from genreward.store.episodes import ExplorationDataset
from genreward.store.hashing import stable_hash
from genreward.training import TrainingDiverged, resume_dir
from genreward.viz import pyplot, save_figure
from stages.table import Stage

log = logging.getLogger(__name__)


def plot_curves(history: list[dict], path: Path) -> None:
    plt = pyplot()

    keys = ["fb_loss", "ortho_loss", "actor_loss", "b_cov_diag_std", "b_cov_offdiag", "z_goal_cos", "q_z_corr"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), dpi=100)
    steps = [h["step"] for h in history]
    for ax, k in zip(axes, keys):
        ax.plot(steps, [h[k] for h in history])
        ax.set_title(k, fontsize=9), ax.set_xlabel("update")
    fig.tight_layout()
    save_figure(fig, path)


# What a non-finite final metric means: the representation is degenerate (collapsed) or diverged.
_DEGENERATE = {
    "q_z_corr": "Q_z(s, a) is constant over the batch: F ignores the state and action",
    "goal_reaching_spearman_mean": "r_FB is constant on every held-out episode",
    "goal_reaching_spearman_median": "r_FB is constant on every held-out episode",
}


def check_result(metrics: dict, updates: int, lr: float) -> None:
    """Raise :class:`TrainingDiverged` when a final metric is NaN or infinite: the trained model is
    degenerate or diverged, and the stage writes nothing (no model, curves or metrics)."""
    bad = non_finite(metrics)
    if not bad:
        return
    why = sorted({_DEGENERATE[k] for k in bad if k in _DEGENERATE})
    raise TrainingDiverged(
        f"stage pretrain_fb: the FB representation is degenerate after update {updates}: "
        + ", ".join(f"{k} = {metrics.get(k, 'nan')}" for k in bad)
        + (f" ({'; '.join(why)})" if why else "")
        + f"; no output was written; lower fb.lr (now {lr}) or check the exploration data"
    )


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    import torch

    from genreward.agents.fb import (
        TRAIN_CHECKPOINT_FORMAT,
        FBAgent,
        goal_reaching,
        save_fb,
        split_heldout,
        train_fb,
    )

    fb = cfg.fb
    device = cfg.resolve_device()
    ds = ExplorationDataset(inputs["dataset"])
    episode, task_id = ds.array("episode"), ds.array("task_id")
    episode_task = np.zeros(int(episode.max()) + 1, np.int64)
    episode_task[episode] = task_id
    rng = np.random.default_rng(cfg.seed)
    held, train = split_heldout(episode_task, fb.holdout_fraction, rng)
    ds.restrict(train)
    frame_shape = tuple(ds.group["obs"].shape[1:])
    torch.manual_seed(cfg.seed)
    agent = FBAgent(frame_shape, ACTION_DIM, fb, device)

    def sample():
        b = ds.sample(fb.batch_size, rng, frame_stack=1)
        return (
            torch.as_tensor(b["obs"], device=device),
            torch.as_tensor(b["action"], device=device),
            torch.as_tensor(b["next_obs"], device=device),
        )

    dataset_hash = artifact_hash(inputs["dataset"])
    partial = resume_dir(
        outputs["model"].parent / f".{outputs['model'].name}.partial",
        stable_hash(
            {
                "fb": fb.model_dump(mode="json"),
                "dataset": dataset_hash,
                "seed": cfg.seed,
                "holdout": "by_task",  # the training episodes: a checkpoint of another split is not resumed
                "checkpoint_format": TRAIN_CHECKPOINT_FORMAT,
            }
        ),
    )
    try:
        history = train_fb(
            agent,
            sample,
            fb.updates,
            partial / "ckpt",
            every=fb.checkpoint_every,
            log_every=fb.log_every,
            progress=cfg.runtime.progress,
        )
    except TrainingDiverged as e:
        log.error("FB training diverged; last good checkpoint kept in %s", partial / "ckpt")
        raise TrainingDiverged(f"stage pretrain_fb: {e} (fb.lr is {fb.lr}); no output was written") from None
    model = agent.model.eval()
    metrics = {
        "updates": fb.updates,
        "train_episodes": int(len(train)),
        "heldout_episodes": int(len(held)),
        **{k: v for k, v in history[-1].items() if k != "step"},
    }
    if len(held):
        metrics.update(goal_reaching(model, ds, held, fb.eval_stride))
    check_result(metrics, fb.updates, fb.lr)
    save_fb(outputs["model"], model, {"dataset": dataset_hash, "params": cfg.section("fb"), "metrics": metrics})
    write_csv_atomic(outputs["curves"], history)
    outputs["plots"].mkdir(parents=True, exist_ok=True)
    plot_curves(history, outputs["plots"] / "curves.png")
    write_json_atomic(outputs["metrics"], metrics)
    shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "FB: %d updates, goal-reaching Spearman %.3f over %d held-out episodes",
        fb.updates,
        metrics.get("goal_reaching_spearman_mean", float("nan")),
        len(held),
    )
    return metrics


STAGE = Stage(
    "pretrain_fb",
    "Forward-backward representation pretrained on the exploration data + goal-reaching check",
    run,
    inputs={"dataset": "{data}/exploration.zarr"},
    outputs={
        "model": "{data}/fb",
        "curves": "{data}/fb_curves.csv",
        "plots": "{data}/fb_plots",
        "metrics": "{data}/fb_metrics.json",
    },
    params=("seed", "fb"),
)
