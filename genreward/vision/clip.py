"""CLIP key-frame scoring over open_clip: I* = argmax_i cos(text(G), image(frame_i)).

The text side averages the L2-normalised embeddings of the task prompt and any extra prompts
(and renormalises). ``last_fraction`` restricts the argmax to the final part of the video
(a temporal prior: the goal is reached at the end). Weights come from an open_clip tag (the
Hugging Face cache, never downloaded when offline) or a local checkpoint file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from genreward.video.io import validate_video
from genreward.vision.config import KeyframeConfig

log = logging.getLogger(__name__)


class CLIPWeightsError(RuntimeError):
    pass


@dataclass
class KeyframeChoice:
    index: int
    scores: np.ndarray  # float32 [T]; NaN where a frame was not scored (selector "last")
    selector: str
    model: dict


def select_index(scores: np.ndarray, last_fraction: float = 1.0) -> int:
    """Argmax of ``scores`` over the last ``last_fraction`` of frames (NaNs never win)."""
    t = len(scores)
    if t == 0:
        raise ValueError("no frames to choose from")
    start = min(t - 1, int(np.floor(t * (1.0 - last_fraction))))
    window = np.where(np.isnan(scores[start:]), -np.inf, scores[start:])
    return start + int(np.argmax(window))


class CLIPScorer:
    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        device: str = "cpu",
        batch_size: int = 32,
    ):
        import open_clip
        import torch

        import genreward  # noqa: F401  (torchvision import step)

        self.model_name, self.pretrained, self.device, self.batch_size = model_name, pretrained, device, batch_size
        if model_name not in open_clip.list_models():
            raise CLIPWeightsError(
                f"unknown open_clip model {model_name!r} (keyframes.clip_model); e.g. ViT-B-32, ViT-B-16, ViT-L-14"
            )
        if pretrained is not None and _looks_like_path(pretrained) and not Path(pretrained).expanduser().is_file():
            raise CLIPWeightsError(
                f"CLIP checkpoint not found: {Path(pretrained).expanduser().resolve()} (keyframes.clip_pretrained)"
            )
        try:
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=str(Path(pretrained).expanduser())
                if pretrained and _looks_like_path(pretrained)
                else pretrained,
            )
        except Exception as e:
            raise CLIPWeightsError(self._weights_error(e)) from None
        self.model = model.eval().to(device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._torch = torch

    def _weights_error(self, err: Exception) -> str:
        hf_home = os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))
        first = str(err).strip().splitlines()[0][:300]
        return (
            f"could not load open_clip {self.model_name} weights {self.pretrained!r}: {first}. Looked in the "
            f"Hugging Face cache ({hf_home}/hub); nothing is downloaded when offline. Fix: download "
            "open_clip_pytorch_model.bin for this tag on a machine with internet and set "
            "keyframes.clip_pretrained=/path/to/open_clip_pytorch_model.bin, or use keyframes.selector=last"
        )

    def identity(self) -> dict:
        return {"library": "open_clip", "model": self.model_name, "pretrained": self.pretrained}

    def encode_text(self, prompts: Sequence[str]):
        torch = self._torch
        texts = [p for p in prompts if p and p.strip()]
        if not texts:
            raise ValueError("CLIP scoring needs at least one non-empty prompt")
        with torch.no_grad():
            emb = self.model.encode_text(self.tokenizer(texts).to(self.device)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(0)
        return mean / mean.norm()

    def encode_frames(self, video: np.ndarray):
        from PIL import Image

        torch = self._torch
        video = validate_video(video, "goal video")
        out = []
        with torch.no_grad():
            for i in range(0, len(video), self.batch_size):
                batch = torch.stack([self.preprocess(Image.fromarray(f)) for f in video[i : i + self.batch_size]])
                emb = self.model.encode_image(batch.to(self.device)).float()
                out.append(emb / emb.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    @staticmethod
    def similarity(frame_emb, text_emb) -> np.ndarray:
        """Cosine similarities [T] of normalised frame embeddings with one normalised text embedding."""
        return (frame_emb @ text_emb).cpu().numpy().astype(np.float32)

    def score(self, video: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        return self.similarity(self.encode_frames(video), self.encode_text(prompts))


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or s.endswith((".bin", ".pt", ".pth", ".safetensors"))


def choose_keyframe(
    video: np.ndarray, prompt: str, cfg: KeyframeConfig, device: str = "cpu", scorer: CLIPScorer | None = None
) -> KeyframeChoice:
    video = validate_video(video, "goal video", min_frames=2)
    if cfg.selector == "last":
        scores = np.full(len(video), np.nan, np.float32)
        return KeyframeChoice(len(video) - 1, scores, "last", {"selector": "last"})
    scorer = scorer or CLIPScorer(cfg.clip_model, cfg.clip_pretrained, device, cfg.batch_size)
    scores = scorer.score(video, [prompt, *cfg.extra_prompts])
    index = select_index(scores, cfg.last_fraction)
    return KeyframeChoice(
        index,
        scores,
        "clip",
        {**scorer.identity(), "last_fraction": cfg.last_fraction, "texts": [prompt, *cfg.extra_prompts]},
    )
