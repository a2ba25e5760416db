"""Video-model adaptation configuration (``domain_videos:`` and ``video_model:``). No torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genreward.video.config import DEFAULT_PROMPTS, check_cogvideox_shape


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainVideoConfig(_Section):
    """Stage collect_domain_videos: scripted- and noisy-expert Meta-World clips with their caption.

    Captions are the training text of the video model, separate from the goal ``prompts`` (the
    paper's domain videos come with their own captions too): editing a goal prompt re-generates
    that task's goal video without retraining the model. A task without a caption trains on its
    goal prompt."""

    captions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS), description="task -> caption")
    episodes_per_task: int = Field(24, ge=1, le=100_000, description="training clips per task")
    val_episodes_per_task: int = Field(4, ge=0, le=10_000, description="validation clips per task (disjoint seeds)")
    noise_stds: tuple[float, ...] = Field((0.0, 0.1, 0.2), min_length=1, description="expert action noise, cycled over episodes")
    num_frames: int = Field(17, ge=2, le=1024, description="frames per clip (CogVideoX: 8k+1)")
    height: int = Field(64, ge=16, le=2048)
    width: int = Field(64, ge=16, le=2048)
    tail_frames: int = Field(8, ge=0, le=256, description="env steps kept after the first success")
    keep_failures: bool = Field(False, description="keep clips whose expert never succeeded")
    max_attempts: int = Field(4, ge=1, le=100, description="tries per wanted clip before giving up (failed experts)")
    seed: int = Field(0, ge=0)

    @field_validator("captions")
    @classmethod
    def _captions(cls, v: dict[str, str]) -> dict[str, str]:
        from genreward.envs.tasks import check_task_texts

        return check_task_texts(v, "caption")

    @field_validator("noise_stds")
    @classmethod
    def _noise(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [x for x in v if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"noise levels must lie in [0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "DomainVideoConfig":
        check_cogvideox_shape(self.num_frames, self.height, self.width)
        return self


class ScratchConfig(_Section):
    """A small CogVideoX-architecture model trained from scratch on CPU (VAE first, then the transformer)."""

    # architecture (see genreward.video.cogvideox_build.TinyCogVideoXConfig)
    text_dim: int = Field(64, ge=8, le=4096)
    text_layers: int = Field(1, ge=1, le=48)
    text_heads: int = Field(4, ge=1, le=64)
    max_text_len: int = Field(24, ge=4, le=512, description="tokens per prompt (also the generator's max_sequence_length)")
    vae_channels: tuple[int, ...] = Field((8, 16, 32, 32), min_length=3, max_length=5)
    vae_layers_per_block: int = Field(1, ge=1, le=4)
    vae_groups: int = Field(4, ge=1, le=64)
    latent_channels: int = Field(8, ge=1, le=64)
    heads: int = Field(4, ge=1, le=64)
    head_dim: int = Field(16, ge=8, le=256)
    layers: int = Field(4, ge=1, le=64)
    time_embed_dim: int = Field(64, ge=4, le=4096)
    patch_size: int = Field(2, ge=1, le=8)
    # training
    vae_steps: int = Field(1000, ge=0, le=10_000_000)
    vae_lr: float = Field(2e-3, gt=0, le=1.0)
    vae_batch_size: int = Field(2, ge=1, le=1024)
    vae_frames: int = Field(9, ge=1, le=1024, description="VAE training crops: this many consecutive frames (8k+1)")
    kl_weight: float = Field(1e-6, ge=0, le=1.0)
    steps: int = Field(6000, ge=0, le=10_000_000, description="transformer (+ text encoder) updates")
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(16, ge=1, le=4096)
    p_uncond: float = Field(0.1, ge=0.0, le=1.0, description="prompt dropout (classifier-free guidance)")
    train_text_encoder: bool = True

    @model_validator(mode="after")
    def _check(self) -> "ScratchConfig":
        if self.text_dim % self.text_heads:
            raise ValueError(f"text_dim={self.text_dim} must be a multiple of text_heads={self.text_heads}")
        if (self.vae_frames - 1) % 8:
            raise ValueError(f"vae_frames={self.vae_frames}: the causal VAE decodes 8k+1 frames back to themselves; "
                             "use 1, 9, 17, ...")
        if any(c % self.vae_groups for c in self.vae_channels):
            raise ValueError(f"vae_channels {list(self.vae_channels)} must be multiples of vae_groups={self.vae_groups}")
        return self


class LoraConfig(_Section):
    """LoRA on the transformer of the pretrained ``goal_video.diffusers.model`` (peft; GPUs)."""

    rank: int = Field(64, ge=1, le=1024)
    alpha: float = Field(64.0, gt=0)
    target_modules: tuple[str, ...] = Field(("to_q", "to_k", "to_v", "to_out.0"), min_length=1)
    steps: int = Field(2000, ge=0, le=10_000_000)
    lr: float = Field(1e-4, gt=0, le=1.0)
    batch_size: int = Field(1, ge=1, le=1024)
    p_uncond: float = Field(0.1, ge=0.0, le=1.0, description="prompt dropout (classifier-free guidance)")
    gradient_checkpointing: bool = True


class VideoModelConfig(_Section):
    """Stage adapt_video_model. ``from_scratch`` (CPU laptop default) or ``lora`` (the paper's path)."""

    mode: Literal["none", "from_scratch", "lora"] = "from_scratch"
    from_scratch: ScratchConfig = ScratchConfig()
    lora: LoraConfig = LoraConfig()
    checkpoint_every: int = Field(250, ge=1, le=10_000_000, description="updates between resumable checkpoints")
    sample_every: int = Field(1000, ge=1, le=10_000_000, description="updates between sample GIFs")
    log_every: int = Field(25, ge=1, le=1_000_000)
    eval_seeds: int = Field(4, ge=1, le=64, description="quality check: sampling seeds per task prompt")
    seed: int = Field(0, ge=0)
