"""Video-model adaptation configuration (``domain_videos:`` and ``video_model:``). No torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from genreward.fields import PromptDropout, Rate, Section
from genreward.video.config import DEFAULT_PROMPTS, check_cogvideox_shape


class DomainVideoConfig(Section):
    """Stage collect_domain_videos: scripted- and noisy-expert Meta-World clips with their caption.

    Captions are the training text of the video model, separate from the goal ``prompts`` (the
    paper's domain videos come with their own captions too): editing a goal prompt re-generates
    that task's goal video without retraining the model. A task without a caption trains on its
    goal prompt."""

    captions: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PROMPTS),
        description=(
            "task -> training caption of its clips (the goal `prompts` are only used "
            "to generate); a task without one trains on its prompt"
        ),
    )
    episodes_per_task: int = Field(
        24, ge=1, le=100_000, description="training clips per task (scripted expert, cycling through noise_stds)"
    )
    val_episodes_per_task: int = Field(4, ge=0, le=10_000, description="validation clips per task (disjoint seeds)")
    noise_stds: tuple[float, ...] = Field(
        (0.0, 0.1, 0.2),
        min_length=1,
        description="std of the expert's Gaussian action noise, each in [0, 1], cycled over episodes",
    )
    num_frames: int = Field(
        17, ge=2, le=1024, description="frames per clip (CogVideoX: 8k+1; from-scratch: = goal_video.num_frames)"
    )
    height: int = Field(
        64, ge=16, le=2048, description="clip height in pixels (a multiple of 16; from-scratch: = goal_video.height)"
    )
    width: int = Field(
        64, ge=16, le=2048, description="clip width in pixels (a multiple of 16; from-scratch: = goal_video.width)"
    )
    tail_frames: int = Field(8, ge=0, le=256, description="env steps kept after the first success")
    keep_failures: bool = Field(False, description="keep clips whose expert never succeeded")
    max_attempts: int = Field(4, ge=1, le=100, description="tries per wanted clip before giving up (failed experts)")
    seed: int = Field(0, ge=0, description="base of the clips' env seeds (train and validation seeds are disjoint)")

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


class ScratchConfig(Section):
    """A small CogVideoX-architecture model trained from scratch on CPU (VAE first, then the transformer)."""

    # architecture (see genreward.video.cogvideox_build.TinyCogVideoXConfig)
    text_dim: int = Field(64, ge=8, le=4096, description="width of the T5 text encoder (a multiple of text_heads)")
    text_layers: int = Field(1, ge=1, le=48, description="T5 text-encoder layers")
    text_heads: int = Field(4, ge=1, le=64, description="T5 text-encoder attention heads")
    max_text_len: int = Field(
        24, ge=4, le=512, description="tokens per prompt (replaces goal_video.diffusers.max_sequence_length)"
    )
    vae_channels: tuple[int, ...] = Field(
        (8, 16, 32, 32),
        min_length=3,
        max_length=5,
        description="VAE channels per block, multiples of vae_groups; 4 blocks: 8x spatial, "
        "4x temporal compression (as CogVideoX)",
    )
    vae_layers_per_block: int = Field(1, ge=1, le=4, description="ResNet layers per VAE block")
    vae_groups: int = Field(4, ge=1, le=64, description="GroupNorm groups in the VAE")
    latent_channels: int = Field(8, ge=1, le=64, description="channels of the VAE latent")
    heads: int = Field(4, ge=1, le=64, description="transformer attention heads")
    head_dim: int = Field(16, ge=8, le=256, description="transformer width per attention head")
    layers: int = Field(4, ge=1, le=64, description="transformer blocks")
    time_embed_dim: int = Field(64, ge=4, le=4096, description="width of the diffusion-timestep embedding")
    patch_size: int = Field(
        2, ge=1, le=8, description="spatial patch size of the transformer on the latent (latent pixels)"
    )
    # training
    vae_steps: int = Field(400, ge=0, le=10_000_000, description="VAE updates (trained first)")
    vae_lr: Rate = Field(2e-3, description="AdamW learning rate of the VAE")
    vae_batch_size: int = Field(2, ge=1, le=1024, description="clips per VAE update (and per encode call)")
    vae_frames: int = Field(9, ge=1, le=1024, description="VAE training crops: this many consecutive frames (8k+1)")
    kl_weight: float = Field(1e-6, ge=0, le=1.0, description="weight of the VAE's KL term (reconstruction: L1 + MSE)")
    steps: int = Field(
        1500, ge=0, le=10_000_000, description="transformer (+ text encoder) updates (v-prediction, as CogVideoX)"
    )
    lr: Rate = Field(1e-3, description="AdamW learning rate of the transformer (+ text encoder)")
    batch_size: int = Field(16, ge=1, le=4096, description="clips per transformer update")
    p_uncond: PromptDropout = 0.1
    train_text_encoder: bool = Field(
        True, description="train the text encoder with the transformer (false: frozen at its random init)"
    )

    @model_validator(mode="after")
    def _check(self) -> "ScratchConfig":
        if self.text_dim % self.text_heads:
            raise ValueError(f"text_dim={self.text_dim} must be a multiple of text_heads={self.text_heads}")
        if (self.vae_frames - 1) % 8:
            raise ValueError(
                f"vae_frames={self.vae_frames}: the causal VAE decodes 8k+1 frames back to themselves; "
                "use 1, 9, 17, ..."
            )
        if any(c % self.vae_groups for c in self.vae_channels):
            raise ValueError(
                f"vae_channels {list(self.vae_channels)} must be multiples of vae_groups={self.vae_groups}"
            )
        return self


class LoraConfig(Section):
    """LoRA on the transformer of the pretrained ``goal_video.diffusers.model`` (peft; GPUs)."""

    rank: int = Field(64, ge=1, le=1024, description="LoRA rank r")
    alpha: float = Field(64.0, gt=0, description="LoRA alpha (the update is scaled by alpha / rank)")
    target_modules: tuple[str, ...] = Field(
        ("to_q", "to_k", "to_v", "to_out.0"), min_length=1, description="transformer layer names that get LoRA adapters"
    )
    steps: int = Field(2000, ge=0, le=10_000_000, description="LoRA updates")
    lr: Rate = Field(1e-4, description="learning rate of the LoRA weights")
    batch_size: int = Field(1, ge=1, le=1024, description="clips per update")
    p_uncond: PromptDropout = 0.1
    gradient_checkpointing: bool = Field(
        True, description="recompute activations in the backward pass (less GPU memory, slower)"
    )


class VideoModelConfig(Section):
    """Stage adapt_video_model. ``from_scratch`` (CPU laptop default) or ``lora`` (the paper's path)."""

    mode: Literal["none", "from_scratch", "lora"] = Field(
        "from_scratch",
        description="from_scratch: a small CogVideoX trained on CPU; lora: peft LoRA on goal_video.diffusers.model; "
        "none: no adaptation",
    )
    from_scratch: ScratchConfig = ScratchConfig()
    lora: LoraConfig = LoraConfig()
    checkpoint_every: int = Field(250, ge=1, le=10_000_000, description="updates between resumable checkpoints")
    sample_every: int = Field(
        1000, ge=1, le=10_000_000, description="updates between sample GIFs (in data/video_model_samples)"
    )
    log_every: int = Field(25, ge=1, le=1_000_000, description="updates between logged training-curve rows")
    eval_seeds: int = Field(4, ge=1, le=64, description="quality check: sampling seeds per task prompt")
    seed: int = Field(0, ge=0, description="seed of the initialisation, batch sampling and diffusion noise")
