"""Stage encode_goal_latents: the goal video in the 3D-VAE latent space (video-level reward target).

inputs:  ``<data>/goal_videos/<task>.zarr``
outputs: ``<data>/goal_latents/<task>.zarr`` (``latent[C,t,h,w] float32``; attrs: encoder identity)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genreward.config import Config
from genreward.store.artifacts import add_array, artifact_hash, open_artifact, read_array, write_artifact
from genreward.video.latents import encoder_from_config
from stages.common import task_paths

log = logging.getLogger(__name__)


def io_for(cfg: Config, task: str) -> tuple[dict[str, Path], dict[str, Path]]:
    d = cfg.store.data_dir
    return {"goal_video": d / "goal_videos" / f"{task}.zarr"}, {"latent": d / "goal_latents" / f"{task}.zarr"}


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    encoder = encoder_from_config(cfg)
    summary = {}
    for task in cfg.tasks:
        default_in, default_out = io_for(cfg, task)
        ins, outs = task_paths(inputs, task, default_in), task_paths(outputs, task, default_out)
        video = read_array(open_artifact(ins["goal_video"], "goal_video"), "video", ndim=4, dtype=np.uint8)
        latent = encoder.encode(video)
        with write_artifact(outs["latent"], "goal_latents", params=cfg.section("latents"),
                            inputs={"goal_video": artifact_hash(ins["goal_video"])},
                            attrs={"task": task, "encoder": encoder.identity()}) as g:
            add_array(g, "latent", latent.astype(np.float32), chunks=latent.shape)
        log.info("%s: goal latent %s", task, tuple(latent.shape))
        summary[task] = {"shape": list(latent.shape)}
    return summary
