"""Key-frame selection configuration (``keyframes:`` in params.yaml). No torch import."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class KeyframeConfig(BaseModel):
    """Stage select_keyframes: the goal video's key frame (paper: OpenCLIP ViT-B-32 laion2b_s34b_b79k)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: Literal["clip", "last"] = Field(
        "last", description="clip: argmax CLIP similarity to the prompt; last: the final frame (offline fallback)"
    )
    clip_model: str = Field("ViT-B-32", description="open_clip model name")
    clip_pretrained: Optional[str] = Field(
        "laion2b_s34b_b79k",
        description="open_clip pretrained tag (HF cache) or a local checkpoint file; null = random weights",
    )
    extra_prompts: tuple[str, ...] = Field(
        (), description="more texts; their embeddings are averaged with the task prompt's (normalised)"
    )
    last_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="temporal prior: the argmax runs only over this last fraction of frames"
    )
    batch_size: int = Field(32, ge=1, le=4096, description="frames per CLIP forward pass")
