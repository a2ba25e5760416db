"""Stage encode_goal_latents: the goal video in the 3D-VAE latent space (video-level reward target).

inputs:  ``<data>/goal_videos/<task>.zarr``
outputs: ``<data>/goal_latents/<task>.zarr`` (``latent[C,t,h,w] float32``; attrs: encoder identity)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genreward.config import Config
from genreward.store.artifacts import add_array, artifact_hash, check_finite, open_artifact, read_array, write_artifact
from genreward.video.latents import encoder_from_config
from stages.table import Stage

log = logging.getLogger(__name__)


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    (task,) = cfg.tasks
    encoder = encoder_from_config(cfg)
    video = read_array(open_artifact(inputs["goal_video"], "goal_video"), "video", ndim=4, dtype=np.uint8)
    # a NaN latent would make every video reward NaN: refuse to write it
    latent = check_finite(np.asarray(encoder.encode(video), np.float32), outputs["latent"], "latent")
    with write_artifact(
        outputs["latent"],
        "goal_latents",
        params=cfg.section("latents"),
        inputs={"goal_video": artifact_hash(inputs["goal_video"])},
        attrs={"task": task, "encoder": encoder.identity()},
    ) as g:
        add_array(g, "latent", latent, chunks=latent.shape)
    log.info("%s: goal latent %s", task, tuple(latent.shape))
    return {"shape": list(latent.shape)}


STAGE = Stage(
    "encode_goal_latents",
    "Goal video in the 3D-VAE latent space (the video-level reward's target)",
    run,
    over="task",
    # the adapted video model: its VAE encodes when ``latents.vae: generator``
    inputs={"goal_video": "{data}/goal_videos/{task}.zarr", "video_model": "{video_model}"},
    outputs={"latent": "{data}/goal_latents/{task}.zarr"},
    params=("latents", "goal_video", "video_model"),
)
