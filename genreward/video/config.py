"""Goal-video configuration (``goal_video:`` and ``prompts:`` in params.yaml). No torch import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PROMPTS: dict[str, str] = {
    "pick-place-v3": "a robot arm picks up the puck and places it at the target",
    "pick-out-of-hole-v3": "a robot arm picks the peg out of the hole and lifts it to the target",
    "bin-picking-v3": "a robot arm picks up the cube from one bin and places it into the other bin",
    "shelf-place-v3": "a robot arm picks up the block and places it on the shelf",
    "disassemble-v3": "a robot arm grasps the wrench and pulls it off the peg",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusersConfig(_Section):
    """CogVideoX through diffusers (text-to-video or image-to-video)."""

    model: str = Field("THUDM/CogVideoX-2b", description="hub id or local folder of a diffusers pipeline")
    revision: Optional[str] = Field(None, description="hub revision (branch, tag or commit)")
    mode: Literal["t2v", "i2v"] = Field(
        "t2v", description="t2v: text-to-video; i2v: image-to-video (conditioned on goal_video.condition)"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="weights dtype; auto: bfloat16 on CUDA, float32 on CPU"
    )
    offload: Literal["none", "model", "sequential"] = Field(
        "none",
        description=(
            "accelerate CPU offload, a GPU memory saver: none, model (whole sub-models) or sequential (layer by layer)"
        ),
    )
    vae_tiling: bool = Field(False, description="decode the video in spatial tiles (less GPU memory, large frames)")
    vae_slicing: bool = Field(False, description="decode the batch one video at a time (less GPU memory)")
    lora: Optional[Path] = Field(None, description="LoRA weights folder/file (peft) applied on top")
    lora_scale: float = Field(1.0, ge=0.0, le=4.0, description="strength of the LoRA weights (0: base model)")
    max_sequence_length: int = Field(
        226,
        ge=1,
        le=4096,
        description=(
            "T5 prompt tokens (CogVideoX: 226; the from-scratch model uses video_model.from_scratch.max_text_len)"
        ),
    )
    local_files_only: Optional[bool] = Field(
        None, description="never download from the hub; null: true when HF_HUB_OFFLINE=1 or model is a local folder"
    )
    use_adapted: bool = Field(
        True,
        description="use the output of stage adapt_video_model: its pipeline folder (video_model.mode=from_scratch) "
        "replaces `model`, or its LoRA (mode=lora) is applied on top of `model`",
    )


class ScriptedConfig(_Section):
    """Meta-World scripted-expert rollouts as goal videos (an oracle, not a generated video)."""

    noise_std: float = Field(0.0, ge=0.0, le=1.0, description="Gaussian action noise of the expert")
    tail_frames: int = Field(8, ge=0, le=256, description="env steps kept after the first success")


class FileConfig(_Section):
    """User-supplied goal videos (.mp4/.gif/.npy), one path per task."""

    paths: dict[str, Path] = Field(default_factory=dict, description="task -> goal video file (.mp4, .gif or .npy)")


def check_cogvideox_shape(num_frames: int, height: int, width: int) -> None:
    """The clip shapes CogVideoX accepts: 8k+1 frames, height and width multiples of 16."""
    if (num_frames - 1) % 8:
        raise ValueError(f"num_frames={num_frames}: CogVideoX needs 8k+1 frames (9, 17, 25, ..., 49)")
    if height % 16 or width % 16:
        raise ValueError(f"height/width {height}x{width}: CogVideoX needs multiples of 16")


class GoalVideoConfig(_Section):
    """Stage generate_goal_videos: one goal video per task prompt."""

    backend: Literal["diffusers", "scripted", "file"] = Field(
        "diffusers",
        description="diffusers: CogVideoX generation; scripted: expert rollout (an oracle, offline); "
        "file: user-supplied videos (goal_video.file.paths)",
    )
    num_frames: int = Field(17, ge=2, le=1024, description="frames per goal video (diffusers: 8k+1)")
    height: int = Field(64, ge=8, le=2048, description="goal-video height in pixels (diffusers: a multiple of 16)")
    width: int = Field(64, ge=8, le=2048, description="goal-video width in pixels (diffusers: a multiple of 16)")
    seed: int = Field(0, ge=0, description="sampling seed (and the seed of the first-frame env reset)")
    steps: int = Field(50, ge=1, le=1000, description="denoising steps")
    guidance: float = Field(4.0, ge=0.0, le=50.0, description="classifier-free guidance scale (paper: 7.5)")
    negative_prompt: str = Field("", description="text guided away from by classifier-free guidance (empty: none)")
    condition: Literal["none", "first_frame"] = Field(
        "first_frame", description="i2v conditioning image: first_frame = the task's first rendered observation; none"
    )
    fps: float = Field(8.0, gt=0, le=120, description="frame rate of the preview GIF/MP4")
    diffusers: DiffusersConfig = DiffusersConfig()
    scripted: ScriptedConfig = ScriptedConfig()
    file: FileConfig = FileConfig()

    @model_validator(mode="after")
    def _check(self) -> "GoalVideoConfig":
        if self.backend == "diffusers":
            check_cogvideox_shape(self.num_frames, self.height, self.width)
        return self


class LatentConfig(_Section):
    """The 3D causal VAE that encodes goal videos and agent windows (``latents:``)."""

    vae: Literal["generator", "path", "random"] = Field(
        "generator",
        description="generator: the VAE of the goal-video model (the adapted one with use_adapted); path: `path`; "
        "random: a small randomly initialised CogVideoX VAE (random features; offline smoke runs only)",
    )
    path: Optional[Path] = Field(None, description="diffusers pipeline folder (vae/ inside) or a VAE folder")
    num_frames: int = Field(
        16,
        ge=1,
        le=256,
        description="uniform temporal subsampling to this many frames "
        "(paper: the 128-step agent window subsampled to 16)",
    )
    size: int = Field(64, ge=8, le=1024, description="frames are resized to size x size")
    sample: bool = Field(False, description="sample the posterior instead of taking its mean")
    seed: int = Field(0, ge=0, description="posterior sampling and random-VAE init")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="VAE dtype; auto: float16 on CUDA, float32 on CPU"
    )
    batch_size: int = Field(8, ge=1, le=1024, description="clips per VAE encode call")
    vae_tiling: bool = Field(False, description="encode in spatial tiles (less GPU memory, large frames)")
    memo_mb: int = Field(
        256,
        ge=0,
        le=1 << 20,
        description="latents of clips/frames already encoded in this process, kept by content (least recently "
        "used out first) so a clip scored by several tasks' rewards is encoded once; 0: off",
    )
