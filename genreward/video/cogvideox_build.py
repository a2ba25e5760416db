"""Build CogVideoX-architecture pipelines from configs, offline (no downloaded weights).

Used for the laptop profile's self-trained video model and for tests: the result is a real
``CogVideoXPipeline``/``CogVideoXImageToVideoPipeline`` that ``save_pretrained`` writes in the
standard diffusers layout, so the production ``from_pretrained`` path loads it unchanged.
The tokenizer is a T5 (Unigram) tokenizer whose vocabulary is built in code from the words
of the prompts, plus single characters so unseen words still tokenize.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable

SPECIAL = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]


def prompt_words(prompts: Iterable[str]) -> list[str]:
    words: list[str] = []
    for p in prompts:
        for w in re.findall(r"[A-Za-z0-9']+", p):
            if w not in words:
                words.append(w)
    return words


def word_tokenizer(words: Iterable[str]):
    """A ``T5Tokenizer`` (transformers >= 5) over whole words plus character fallback."""
    from transformers import T5Tokenizer

    import genreward  # noqa: F401

    pieces = list(SPECIAL) + [("\u2581", -2.0)]
    seen = {p for p, _ in pieces}
    for w in words:
        piece = "\u2581" + w
        if piece not in seen:
            pieces.append((piece, -1.0))
            seen.add(piece)
    for c in string.ascii_letters + string.digits + "'-.,":
        if c not in seen:
            pieces.append((c, -8.0))
            seen.add(c)
    return T5Tokenizer(vocab=pieces, extra_ids=0)


@dataclass(frozen=True)
class TinyCogVideoXConfig:
    """Sizes of a small CogVideoX. Defaults: a model that runs in ~0.1 s per video on CPU."""

    text_dim: int = 32
    text_layers: int = 1
    text_heads: int = 4
    vae_channels: tuple[int, ...] = (8, 8, 8, 8)  # 4 blocks: spatial /8, temporal /4
    vae_layers_per_block: int = 1
    vae_groups: int = 2
    latent_channels: int = 4
    heads: int = 2
    head_dim: int = 16
    layers: int = 1
    time_embed_dim: int = 8
    patch_size: int = 2
    max_text_len: int = 16
    sample_height: int = 32  # pixels; sets the positional-embedding grid
    sample_width: int = 32
    sample_frames: int = 9

    @classmethod
    def from_section(cls, sc, num_frames: int, height: int, width: int) -> "TinyCogVideoXConfig":
        """From ``video_model.from_scratch`` (:class:`genreward.adapt.config.ScratchConfig`) and the clip size."""
        names = {f for f in cls.__dataclass_fields__} - {"sample_height", "sample_width", "sample_frames"}
        return cls(
            **{n: getattr(sc, n) for n in names}, sample_height=height, sample_width=width, sample_frames=num_frames
        )


# The scheduler settings of the released CogVideoX checkpoints (v-prediction, zero terminal SNR,
# trailing timesteps); the from-scratch model is trained with the same objective.
SCHEDULER_CONFIG = dict(
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
    clip_sample=False,
    set_alpha_to_one=True,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    snr_shift_scale=3.0,
    num_train_timesteps=1000,
)


def build_vae(cfg: TinyCogVideoXConfig | None = None):
    """A randomly initialised ``AutoencoderKLCogVideoX`` (eval mode) of the given sizes."""
    from diffusers import AutoencoderKLCogVideoX

    import genreward  # noqa: F401

    c = cfg or TinyCogVideoXConfig()
    blocks = len(c.vae_channels)
    return AutoencoderKLCogVideoX(
        block_out_channels=c.vae_channels,
        latent_channels=c.latent_channels,
        layers_per_block=c.vae_layers_per_block,
        norm_num_groups=c.vae_groups,
        temporal_compression_ratio=4,
        sample_height=c.sample_height,
        sample_width=c.sample_width,
        down_block_types=("CogVideoXDownBlock3D",) * blocks,
        up_block_types=("CogVideoXUpBlock3D",) * blocks,
    ).eval()


def build_cogvideox_pipeline(
    prompts: Iterable[str], mode: str = "t2v", cfg: TinyCogVideoXConfig | None = None, seed: int = 0
):
    """A randomly initialised CogVideoX pipeline (eval mode) with a tokenizer over ``prompts``."""
    import torch
    from diffusers import (
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    import genreward  # noqa: F401

    if mode not in ("t2v", "i2v"):
        raise ValueError(f"mode must be t2v or i2v, got {mode!r}")
    c = cfg or TinyCogVideoXConfig()
    tokenizer = word_tokenizer(prompt_words(prompts))
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=c.text_dim,
            d_kv=c.text_dim // c.text_heads,
            d_ff=2 * c.text_dim,
            num_layers=c.text_layers,
            num_heads=c.text_heads,
            dropout_rate=0.0,
        )
    ).eval()
    spatial = 2 ** (len(c.vae_channels) - 1)
    vae = build_vae(c)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=c.heads,
        attention_head_dim=c.head_dim,
        in_channels=c.latent_channels * (2 if mode == "i2v" else 1),
        out_channels=c.latent_channels,
        time_embed_dim=c.time_embed_dim,
        text_embed_dim=c.text_dim,
        num_layers=c.layers,
        sample_width=c.sample_width // spatial,
        sample_height=c.sample_height // spatial,
        sample_frames=c.sample_frames,
        patch_size=c.patch_size,
        temporal_compression_ratio=4,
        max_text_seq_length=c.max_text_len,
        use_rotary_positional_embeddings=True,
        dropout=0.0,
    ).eval()
    cls = CogVideoXImageToVideoPipeline if mode == "i2v" else CogVideoXPipeline
    return cls(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(**SCHEDULER_CONFIG),
    )
