"""Video latents from the CogVideoX 3D causal VAE: one encoder for goal videos and agent windows.

``encode(clip uint8 [T,H,W,3]) -> float32 [C, t, h, w]``: frames are uniformly subsampled to
``num_frames``, resized to ``size``, scaled to [-1, 1], encoded, and the posterior mean (or a
seeded sample) is multiplied by the VAE's scaling factor. The video-level reward is the cosine
similarity of flattened latents (:func:`latent_cosine`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from genreward.store.hashing import hash_array, hash_tree_memo, tree_signature
from genreward.video.config import LatentConfig
from genreward.video.io import VideoError, resample_frames, validate_video

log = logging.getLogger(__name__)


class LatentEncoderError(RuntimeError):
    pass


def latent_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two latents (flattened). Shapes must match."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"latent shapes differ: {a.shape} vs {b.shape}")
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 0.0


def _nbytes(value) -> int:
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if value is None:
        return 0
    if isinstance(value, (np.ndarray, np.generic)):
        return value.nbytes
    return value.element_size() * value.nelement()  # a torch tensor


class LatentMemo:
    """What an encoder made of inputs it has already seen, by content: a least-recently-used store of
    at most ``max_bytes`` (0: nothing kept).

    A benchmark scores the same probe clips with every task's reward (the confusion matrix), and
    the encoding does not depend on the task: with a memo each clip is encoded once. ``map`` calls
    ``encode`` once, on the inputs not seen before, in order (a repeat within the call once), so
    which inputs share a batch can differ from an encoding without the memo (float rounding only).
    Only for deterministic encodings (a posterior mean, not a sample).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(x: np.ndarray, settings: tuple) -> tuple:
        return settings, hash_array(x)

    def map(self, inputs: Sequence[np.ndarray], encode: Callable[[list], Sequence], settings: tuple = ()) -> list:
        """``encode(inputs) -> one output per input``, for every input, from the memo where it can."""
        keys = [self.key(x, settings) for x in inputs]
        todo: dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in self._items and k not in todo:
                todo[k] = i
        fresh = dict(zip(todo, encode([inputs[i] for i in todo.values()]))) if todo else {}
        if len(fresh) != len(todo):
            raise RuntimeError(f"encode returned {len(fresh)} outputs for {len(todo)} inputs")
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        out = []
        for k in keys:
            if k in fresh:
                out.append(fresh[k])
            else:
                self._items.move_to_end(k)
                out.append(self._items[k])
        for k, v in fresh.items():
            self._put(k, v)
        return out

    def _put(self, key: tuple, value) -> None:
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= _nbytes(old)

    def __len__(self) -> int:
        return len(self._items)


def vae_pixels(clip: np.ndarray, height: int, width: int):
    """uint8 [T, H, W, 3] -> float32 tensor [3, T, height, width] in [-1, 1], the VAE's input
    (resized bilinearly with antialiasing where the size differs)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()  # T,3,H,W
    if tuple(x.shape[-2:]) != (height, width):
        x = torch.nn.functional.interpolate(
            x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3)


class VideoLatentEncoder:
    def __init__(self, vae, cfg: LatentConfig, device: str = "cpu", identity: dict | None = None):
        import torch

        self.cfg = cfg
        self.device = device
        dtype_name = cfg.dtype if cfg.dtype != "auto" else ("float16" if device.startswith("cuda") else "float32")
        self.dtype = getattr(torch, dtype_name)
        current = next(vae.parameters()).dtype
        self.vae = (vae.to(device=device) if current == self.dtype else vae.to(device=device, dtype=self.dtype)).eval()
        if cfg.vae_tiling:
            self.vae.enable_tiling()
        self.scaling = float(getattr(vae.config, "scaling_factor", 1.0))
        self._identity = {
            **(identity or {}),
            "num_frames": cfg.num_frames,
            "size": cfg.size,
            "sample": cfg.sample,
            "dtype": dtype_name,
            "seed": cfg.seed if cfg.sample else None,
        }
        self._torch = torch
        self.memo = LatentMemo(cfg.memo_mb << 20)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        cfg: LatentConfig,
        generator_model: str | None = None,
        device: str = "cpu",
        memo_file: str | Path | None = None,
    ) -> "VideoLatentEncoder":
        import genreward  # noqa: F401

        if cfg.vae == "random":
            import torch

            from genreward.video.cogvideox_build import build_vae

            torch.manual_seed(cfg.seed)
            return cls(build_vae(), cfg, device, {"vae": "random", "init_seed": cfg.seed})
        source = vae_source(cfg, generator_model)
        if not source:
            raise LatentEncoderError(
                "latents.vae=path needs latents.path (a diffusers pipeline folder or a VAE folder)"
                if cfg.vae == "path"
                else "latents.vae=generator needs goal_video.diffusers.model"
            )
        vae, ident = load_cogvideox_vae(source, memo_file)
        return cls(vae, cfg, device, ident)

    def identity(self) -> dict:
        return dict(self._identity)

    # -- encoding ----------------------------------------------------------------------------
    def prepare(self, clip: np.ndarray):
        """uint8 [T,H,W,3] -> float tensor [3, num_frames, size, size] in [-1, 1]."""
        try:
            clip = validate_video(clip, "clip", min_frames=2)
        except VideoError as e:
            raise LatentEncoderError(str(e)) from None
        return vae_pixels(resample_frames(clip, self.cfg.num_frames), self.cfg.size, self.cfg.size)

    def encode_batch(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Encode several clips: float32 [B, C, t, h, w]."""
        if len(clips) == 0:
            raise LatentEncoderError("no clips to encode")
        if self.cfg.sample:  # a sample's noise depends on the batch: never from the memo
            return self._encode_clips(clips)
        rows = self.memo.map(list(clips), self._encode_clips, ("clip", self.cfg.num_frames, self.cfg.size))
        return np.stack(rows)

    def _encode_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        torch = self._torch
        out = []
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed) if self.cfg.sample else None
        with torch.inference_mode():
            for i in range(0, len(clips), self.cfg.batch_size):
                x = torch.stack([self.prepare(c) for c in clips[i : i + self.cfg.batch_size]])
                dist = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
                if self.cfg.sample:
                    noise = torch.randn(dist.mean.shape, generator=gen).to(dist.mean.device, dist.mean.dtype)
                    z = dist.mean + dist.std * noise
                else:
                    z = dist.mean
                out.append((z * self.scaling).float().cpu().numpy())
        return np.concatenate(out)

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Encode single frames uint8 [N, H, W, 3], each as a one-frame clip: float32 [N, C, h, w]."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
            raise LatentEncoderError(f"frames: expected uint8 [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        return np.stack(self.memo.map(list(frames), self._encode_frames, ("frame", self.cfg.size)))

    def _encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.cfg.batch_size):
                batch = frames[i : i + self.cfg.batch_size]
                x = torch.stack([vae_pixels(f[None], self.cfg.size, self.cfg.size) for f in batch])  # [B, 3, 1, H, W]
                z = self.vae.encode(x.to(self.device, self.dtype)).latent_dist.mean[:, :, 0]
                out.append((z * self.scaling).float().cpu().numpy())
        return np.concatenate(out)

    def encode(self, clip: np.ndarray) -> np.ndarray:
        """Encode one clip: float32 [C, t, h, w]."""
        return self.encode_batch([clip])[0]


def vae_source(cfg: LatentConfig, generator_model: str | None) -> str | None:
    """Where ``latents.vae`` loads the VAE from: ``latents.path`` or the goal-video model (None:
    the random VAE, or the setting it needs is missing)."""
    if cfg.vae == "path":
        return None if cfg.path is None else str(cfg.path)
    return generator_model if cfg.vae == "generator" else None


_ENCODERS: dict[str, VideoLatentEncoder] = {}


def encoder_from_config(cfg) -> VideoLatentEncoder:
    """The run's latent encoder (``latents:``), shared by encode_goal_latents and the video reward.

    Loaded once per process and setting (one held at a time; a local VAE folder whose files
    changed is loaded again), so every task's reward terms share one encoder and its memo."""
    model, device = cfg.diffusers_config().model, cfg.resolve_device()
    source = vae_source(cfg.latents, model)
    local = Path(source).expanduser() if source else None
    signature = tree_signature(local) if local is not None and local.exists() else None
    key = json.dumps([cfg.latents.model_dump(mode="json"), model, device, signature], sort_keys=True, default=str)
    if key not in _ENCODERS:
        encoder = VideoLatentEncoder.from_config(
            cfg.latents, model, device=device, memo_file=cfg.store.cache_dir / "weight_hashes.json"
        )
        _ENCODERS.clear()
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


class FolderMissing(FileNotFoundError):
    """A local model folder that does not exist; ``filename`` is the path as configured."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.filename = path

    def __str__(self) -> str:
        return self.args[0]


def load_cogvideox_vae(source: str, memo_file: str | Path | None = None):
    """``AutoencoderKLCogVideoX`` from a pipeline folder (``vae/``), a VAE folder, or a hub id."""
    from diffusers import AutoencoderKLCogVideoX

    import genreward  # noqa: F401
    from genreward.video.diffusers_backend import is_local

    path = Path(source).expanduser()
    if not path.exists() and is_local(source):  # a local folder that is not there: never a hub lookup
        raise FolderMissing(
            f"CogVideoX VAE folder not found: {path.resolve()} (latents.path names a local folder; "
            "the pipeline's adapted video model is written by stage adapt_video_model)",
            str(path),
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        if path.exists():
            folder = path / "vae" if (path / "vae" / "config.json").exists() else path
            if folder == path and (path / "model_index.json").is_file():  # a pipeline folder without its VAE
                from genreward.video.diffusers_backend import pipeline_problem

                problem = pipeline_problem(path, "vae") or "its vae/ subfolder has no config.json"
                raise LatentEncoderError(
                    f"diffusers pipeline folder {path.resolve()}: {problem} (the latent encoder loads vae/); "
                    "copy the complete pipeline folder, or set latents.vae=path and latents.path to a VAE folder"
                )
            if not (folder / "config.json").exists():
                raise LatentEncoderError(
                    f"no CogVideoX VAE in {path.resolve()} (expected vae/config.json or config.json)"
                )
            vae = AutoencoderKLCogVideoX.from_pretrained(folder, local_files_only=True)
            ident = {"vae": str(folder), "weights_sha256": hash_tree_memo(folder, memo_file)}
        else:
            vae = AutoencoderKLCogVideoX.from_pretrained(source, subfolder="vae", local_files_only=offline)
            ident = {"vae": source, "subfolder": "vae"}
    except LatentEncoderError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise LatentEncoderError(
            f"could not load the CogVideoX VAE from {source!r}: {first}. Fix: set latents.path to a local diffusers "
            "pipeline folder (with vae/) and latents.vae=path, or latents.vae=random for an offline smoke run"
        ) from None
    return vae, ident
