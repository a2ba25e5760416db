"""Video arrays: validation, resizing, temporal resampling, and file I/O (npy, gif, mp4).

The in-memory convention everywhere in genreward: ``uint8 [T, H, W, 3]``, upright RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genreward.store.atomic import atomic_file


class VideoError(ValueError):
    pass


def validate_video(video, name: str = "video", min_frames: int = 1) -> np.ndarray:
    """Return ``video`` as uint8 ``[T,H,W,3]`` or raise :class:`VideoError` saying what is wrong.

    Accepts uint8, or float in [0, 1]; RGBA is reduced to RGB. Anything else is an error.
    """
    try:
        arr = np.asarray(video)
    except Exception as e:  # ragged lists etc.
        raise VideoError(f"{name}: cannot be read as an array ({e})") from None
    if arr.dtype == object:
        raise VideoError(f"{name}: ragged frames (frames must all have one shape)")
    if arr.ndim != 4:
        raise VideoError(f"{name}: expected 4 dims [T, H, W, 3], got shape {arr.shape}")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.shape[-1] != 3:
        raise VideoError(f"{name}: expected 3 colour channels last [T, H, W, 3], got shape {arr.shape}")
    t, h, w = arr.shape[:3]
    if t < min_frames:
        raise VideoError(f"{name}: {t} frame(s), need at least {min_frames}")
    if h < 2 or w < 2:
        raise VideoError(f"{name}: frames of {h}x{w} pixels are too small")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise VideoError(f"{name}: contains NaN or inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise VideoError(f"{name}: float video must be in [0, 1], found [{lo:.3g}, {hi:.3g}]")
        return np.ascontiguousarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))
    raise VideoError(f"{name}: dtype {arr.dtype} not supported (use uint8 or float in [0, 1])")


def resample_frames(video: np.ndarray, num_frames: int) -> np.ndarray:
    """Uniformly pick ``num_frames`` frames (first and last kept); repeats frames if fewer."""
    return video[resample_indices(len(video), num_frames)]


def resample_indices(length: int, num_frames: int) -> np.ndarray:
    """The frame indices :func:`resample_frames` picks from a video of ``length`` frames."""
    return np.round(np.linspace(0, length - 1, num_frames)).astype(int)


def resize_video(video: np.ndarray, height: int, width: int) -> np.ndarray:
    if video.shape[1:3] == (height, width):
        return video
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in video])


def read_video(path: str | Path) -> np.ndarray:
    """Read ``.npy``, ``.gif``, ``.mp4``/``.webm``/``.avi`` (imageio-ffmpeg) into uint8 ``[T,H,W,3]``."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: video file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix in (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv"):
            import imageio.v3 as iio

            data = iio.imread(path, index=None)
            if data.ndim == 3:  # a single-frame gif
                data = data[None]
        else:
            raise VideoError(f"{path}: unsupported video format {suffix!r} (use .npy, .gif or .mp4)")
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(f"{path}: not a readable {suffix} video ({_decoder_reason(e)})") from None
    return validate_video(data, name=str(path))


def _decoder_reason(err: Exception) -> str:
    """One line on why a decoder refused a file. ffmpeg's errors carry its whole log (the build
    banner first): keep the log's last line, which says what was wrong with the input."""
    text = str(err)
    if "=== stderr ===" in text:
        lines = [ln.strip() for ln in text.split("=== stderr ===", 1)[1].splitlines() if ln.strip()]
        if lines:
            return f"ffmpeg: {lines[-1].rsplit(': ', 1)[-1][:200]}"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def write_gif(path: str | Path, video: np.ndarray, fps: float = 8.0, scale: int = 1) -> Path:
    import imageio.v3 as iio

    path = Path(path)
    frames = validate_video(video, str(path))
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def write_mp4(path: str | Path, video: np.ndarray, fps: float = 8.0) -> Path:
    import imageio.v3 as iio

    path = Path(path)
    frames = validate_video(video, str(path))
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = frames[:, : h - h % 2, : w - w % 2]
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
    return path
