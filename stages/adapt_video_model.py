"""Stage adapt_video_model: a video diffusion model adapted to the domain clips.

inputs:  ``<data>/domain_videos.zarr`` (stage collect_domain_videos)
outputs: ``<data>/video_model/`` — ``pipeline/`` (a complete diffusers CogVideoX pipeline,
         mode ``from_scratch``) or ``lora/`` (``pytorch_lora_weights.safetensors``, mode ``lora``),
         and ``meta.json`` (mode, params, dataset hash, quality metrics);
         ``<data>/video_model_curves/{vae,transformer}.csv`` (DVC plots);
         ``<data>/video_model_samples/`` (sample GIFs: every ``sample_every`` updates, final, baselines);
         ``<data>/video_model_metrics.json`` (DVC metrics: the quality check).

Modes (``video_model.mode``):
- ``from_scratch``: a small CogVideoX (``AutoencoderKLCogVideoX`` + ``CogVideoXTransformer3DModel``
  + a T5 text encoder over the prompts' words) trained on CPU: the VAE first, then the
  transformer and text encoder on its latents. ``goal_video.diffusers.use_adapted`` makes
  generate_goal_videos load the saved folder with the same ``from_pretrained`` code as real weights.
- ``lora``: peft LoRA on the transformer of ``goal_video.diffusers.model`` (loaded through the
  goal-video generator's own loading path), t2v or i2v; the generator applies it on top.
- ``none``: nothing is trained (``meta.json`` says so).
The recipes are :mod:`genreward.adapt.recipes`; this stage reads the clips and writes the outputs.
Training resumes from ``<data>/.video_model.partial/`` (checkpoints every ``checkpoint_every``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from genreward.adapt.domain import TRAIN, VAL, DomainClips
from genreward.adapt.recipes import check_clips, quality_check, train_video_model
from genreward.config import Config
from genreward.store.artifacts import artifact_hash
from genreward.store.atomic import atomic_dir, write_csv_atomic, write_json_atomic, write_text_atomic
from genreward.store.hashing import stable_hash
from genreward.store.provenance import code_version
from genreward.video.io import write_gif
from stages.table import Stage

log = logging.getLogger(__name__)


def _write_csv(path: Path, rows: list[dict]) -> None:
    write_csv_atomic(path, rows or [{"step": 0, "loss": float("nan")}])  # a phase that did not run: one NaN row


def _strip(clips: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(clips, axis=2)  # side by side


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    vm, gv = cfg.video_model, cfg.goal_video
    if vm.mode == "none":
        with atomic_dir(outputs["model"]) as tmp:
            (tmp / "meta.json").write_text(json.dumps({"mode": "none"}, indent=2))
        for k in ("curves", "samples"):
            outputs[k].mkdir(parents=True, exist_ok=True)
        _write_csv(outputs["curves"] / "vae.csv", [])
        _write_csv(outputs["curves"] / "transformer.csv", [])
        write_text_atomic(outputs["metrics"], json.dumps({"mode": "none"}, indent=2))
        return {"mode": "none"}

    ds = DomainClips(inputs["dataset"])
    check_clips(ds, cfg.tasks, gv)
    device = cfg.resolve_device()
    dataset_hash = artifact_hash(inputs["dataset"])
    params = cfg.section("video_model", "domain_videos")
    if vm.mode == "lora":
        params["goal_video.diffusers"] = gv.diffusers.model_dump(mode="json")
    from genreward.training import resume_dir  # imports torch: only when the stage runs

    partial = resume_dir(
        outputs["model"].parent / f".{outputs['model'].name}.partial",
        stable_hash({"params": params, "dataset": dataset_hash, "seed": vm.seed}),
    )
    for k in ("curves", "samples"):
        outputs[k].mkdir(parents=True, exist_ok=True)

    def on_sample(tag: str, step: int, clips: list[np.ndarray]) -> None:
        write_gif(outputs["samples"] / f"{tag}_step{step:06d}.gif", _strip(clips), fps=gv.fps, scale=2)

    t0 = time.perf_counter()
    trained = train_video_model(vm, gv, ds, cfg.tasks, partial, device, cfg.runtime.progress, on_sample)
    train_seconds = time.perf_counter() - t0
    _write_csv(outputs["curves"] / "vae.csv", trained.histories.get("vae", []))
    _write_csv(outputs["curves"] / "transformer.csv", trained.histories.get("transformer", []))

    # quality check: the trained model vs the untrained one and the mean training clip
    task_ids = [ds.tasks.index(t) for t in cfg.tasks]
    seeds = list(range(vm.eval_seeds))
    t1 = time.perf_counter()
    report = quality_check(trained, gv, ds, task_ids, seeds, device)
    eval_seconds = time.perf_counter() - t1
    samples = report.pop("samples")
    write_gif(outputs["samples"] / "final.gif", _strip([samples[t][0] for t in task_ids]), fps=gv.fps, scale=2)
    metrics = {
        "mode": vm.mode,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "train_clips": int(len(ds.indices(TRAIN))),
        "val_clips": int(len(ds.indices(VAL))),
        "eval_seeds": seeds,
        "tasks": [ds.tasks[t] for t in task_ids],
        **report,
    }
    for name, h in trained.histories.items():
        if h:
            metrics[f"final_{name}_loss"] = float(np.mean([r["loss"] for r in h[-4:]]))

    with atomic_dir(outputs["model"]) as tmp:
        trained.save(tmp)
        (tmp / "meta.json").write_text(
            json.dumps(
                {
                    "mode": vm.mode,
                    "params": params,
                    "inputs": {"domain_videos": dataset_hash},
                    "metrics": metrics,
                    "code": code_version(),
                },
                indent=2,
                default=str,
            )
        )
    write_json_atomic(outputs["metrics"], metrics)
    shutil.rmtree(partial, ignore_errors=True)
    m = report["model"]
    log.info(
        "video model (%s): trained in %.0f s; nearest-clip MSE %.4f (mean clip %.4f, untrained %s); "
        "task accuracy %.2f (chance %.2f)",
        vm.mode,
        train_seconds,
        m["nearest_clip_mse"],
        report["mean_clip"]["nearest_clip_mse"],
        f"{report['untrained']['nearest_clip_mse']:.4f}" if "untrained" in report else "n/a",
        m["task_accuracy"],
        report["chance_accuracy"],
    )
    return metrics


STAGE = Stage(
    "adapt_video_model",
    "Video diffusion model adapted to the domain clips (from scratch or LoRA) + quality check",
    run,
    inputs={"dataset": "{data}/domain_videos.zarr"},
    outputs={
        "model": "{video_model}",
        "curves": "{data}/video_model_curves",
        "samples": "{data}/video_model_samples",
        "metrics": "{data}/video_model_metrics.json",
    },
    params=("tasks", "video_model", "goal_video", "runtime"),
)
