"""CogVideoX goal videos through diffusers: text-to-video and image-to-video.

The pipeline is loaded lazily on the first ``generate`` call, so a cache hit never builds one.
Loading uses the standard ``from_pretrained`` path for both hub ids and local folders (the
adapted laptop model and test fixtures are saved with ``save_pretrained`` and load the same
way as real CogVideoX weights).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from genreward.store.hashing import hash_tree_memo
from genreward.video.base import GenerationError, VideoSpec
from genreward.video.config import DiffusersConfig
from genreward.video.io import VideoError, validate_video

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


# A hub id is NAME or OWNER/NAME (huggingface_hub's rule, without its length and '--'/'..' checks).
_HUB_ID = re.compile(r"[\w.\-]+(/[\w.\-]+)?")


def is_local(model: str) -> bool:
    """``model`` names a local folder: one that exists, an explicit path (``/``, ``./``, ``../``,
    ``~``), or a path no hub id can be (``data/video_model/pipeline``: a hub id has one ``/`` at
    most), so that a missing local folder is reported as missing, not looked up on the hub."""
    return (
        Path(model).expanduser().exists()
        or model.startswith(("/", "./", "../", "~"))
        or _HUB_ID.fullmatch(model) is None
    )


def pipeline_problem(folder: str | Path, component: str | None = None) -> str | None:
    """What keeps the diffusers pipeline folder ``folder`` from loading, in a phrase (None: its
    layout looks complete): no ``model_index.json``, or a sub-model folder that ``model_index.json``
    lists (``component``: only that one, e.g. ``"vae"``) is missing."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        return "no model_index.json"
    try:
        listed = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        return f"model_index.json is unreadable ({type(e).__name__})"
    names = [
        name
        for name, value in listed.items()
        if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None
    ]
    missing = [n for n in names if (component is None or n == component) and not (folder / n).is_dir()]
    if not missing:
        return None
    subfolders = ", ".join(f"{n}/" for n in missing)
    return f"the pipeline's {subfolders} subfolder{'s are' if len(missing) > 1 else ' is'} missing"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


class DiffusersGenerator:
    name = "diffusers"

    def __init__(
        self, cfg: DiffusersConfig, device: str = "cpu", memo_file: str | Path | None = None, progress: bool = True
    ):
        self.cfg = cfg
        self.device = device
        self.memo_file = memo_file
        self.progress = progress
        self.local = is_local(cfg.model)
        self.model_path = Path(cfg.model).expanduser() if self.local else None
        adapt_hint = (
            "run stage adapt_video_model first (`dvc repro adapt_video_model` or `genreward stage adapt_video_model`)"
        )
        if cfg.use_adapted and self.local and not self.model_path.exists():
            raise GenerationError(f"adapted video model not found at {self.model_path.resolve()}: {adapt_hint}")
        if cfg.use_adapted and cfg.lora is not None and not Path(cfg.lora).exists():
            raise GenerationError(f"adapted LoRA weights not found at {Path(cfg.lora).resolve()}: {adapt_hint}")
        if self.local and not self.model_path.exists():
            raise GenerationError(
                f"video model folder not found: {self.model_path.resolve()} "
                "(set goal_video.diffusers.model to a diffusers pipeline folder or a hub id)"
            )
        if cfg.lora is not None and not Path(cfg.lora).exists():
            raise GenerationError(f"LoRA weights not found: {Path(cfg.lora).resolve()} (goal_video.diffusers.lora)")
        self._pipe = None
        self._identity: dict[str, Any] | None = None
        self.loads = 0  # pipelines built by this generator (tests assert cache hits build none)

    # -- identity (cheap, no model load) ---------------------------------------------------
    @property
    def local_files_only(self) -> bool:
        if self.cfg.local_files_only is not None:
            return self.cfg.local_files_only
        return self.local or offline()

    @property
    def torch_dtype_name(self) -> str:
        if self.cfg.dtype != "auto":
            return self.cfg.dtype
        return "bfloat16" if self.device.startswith("cuda") else "float32"

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            ident: dict[str, Any] = {"backend": self.name, "mode": self.cfg.mode, "dtype": self.torch_dtype_name}
            if self.local:
                ident["weights_sha256"] = hash_tree_memo(self.model_path, self.memo_file)
            else:
                ident.update(model=self.cfg.model, revision=self.cfg.revision, commit=self._hub_commit())
            ident["lora_sha256"] = None if self.cfg.lora is None else hash_tree_memo(self.cfg.lora, self.memo_file)
            ident["lora_scale"] = self.cfg.lora_scale if self.cfg.lora is not None else None
            ident["max_sequence_length"] = self.cfg.max_sequence_length
            self._identity = ident
        return dict(self._identity)

    def _hub_commit(self) -> str | None:
        """The commit of the locally cached snapshot, if any (exact identity for hub ids)."""
        try:
            from huggingface_hub import snapshot_download

            path = snapshot_download(self.cfg.model, revision=self.cfg.revision, local_files_only=True)
            return Path(path).name
        except Exception:
            return None

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "model": self.cfg.model,
            "revision": self.cfg.revision,
            "oracle": False,
            "lora": None if self.cfg.lora is None else str(self.cfg.lora),
            "device": self.device,
        }

    # -- loading ---------------------------------------------------------------------------
    def pipeline(self):
        if self._pipe is None:
            self._pipe = self._load()
            self.loads += 1
        return self._pipe

    def _load(self):
        source = str(self.model_path) if self.local else self.cfg.model
        if self.local and (problem := pipeline_problem(source)) is not None:
            # diffusers would name the wrong folder ("no file named config.json found in <folder>")
            raise GenerationError(self._load_error(source, problem))
        import torch
        from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

        import genreward  # noqa: F401  (torchvision import step before transformers)

        cls = CogVideoXImageToVideoPipeline if self.cfg.mode == "i2v" else CogVideoXPipeline
        dtype = getattr(torch, self.torch_dtype_name)
        import diffusers
        from packaging.version import Version

        # diffusers 0.42 renamed torch_dtype -> dtype (the old name is deprecated).
        dtype_kw = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"
        try:
            pipe = cls.from_pretrained(
                source, revision=self.cfg.revision, local_files_only=self.local_files_only, **{dtype_kw: dtype}
            )
        except Exception as e:
            raise GenerationError(self._load_error(source, e)) from None
        in_ch = pipe.transformer.config.in_channels
        lat_ch = pipe.vae.config.latent_channels
        if self.cfg.mode == "i2v" and in_ch != 2 * lat_ch:
            raise GenerationError(
                f"{source} is a text-to-video model (transformer in_channels={in_ch}); "
                "use goal_video.diffusers.mode=t2v or an image-to-video checkpoint (e.g. THUDM/CogVideoX-5b-I2V)"
            )
        if self.cfg.mode == "t2v" and in_ch != lat_ch:
            raise GenerationError(f"{source} is an image-to-video model; set goal_video.diffusers.mode=i2v")
        if self.cfg.lora is not None:
            try:
                pipe.load_lora_weights(str(self.cfg.lora), adapter_name="genreward")
                pipe.set_adapters(["genreward"], [self.cfg.lora_scale])
            except Exception as e:
                raise GenerationError(f"could not apply LoRA {self.cfg.lora}: {type(e).__name__}: {e}") from None
        if self.cfg.vae_tiling:
            pipe.vae.enable_tiling()
        if self.cfg.vae_slicing:
            pipe.vae.enable_slicing()
        if self.cfg.offload == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.cfg.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=not self.progress, leave=False)
        log.info(
            "loaded %s from %s (%s, %s) on %s", cls.__name__, source, self.cfg.mode, self.torch_dtype_name, self.device
        )
        return pipe

    def _load_error(self, source: str, err: Exception | str) -> str:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if self.local:
            where = f"local folder {Path(source).resolve()}"
            fix = (
                "it must be a diffusers pipeline folder (model_index.json, "
                "transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
            )
            if self.cfg.use_adapted and self.cfg.lora is None:  # the adapted model: its stage rebuilds it
                fix += "; rebuild it with `dvc repro -f -s adapt_video_model`"
        else:
            hf_home = os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))
            mode = "offline (local cache only)" if self.local_files_only else "hub"
            where = f"hub id {source!r} (revision {self.cfg.revision or 'main'}, {mode}, cache {hf_home})"
            fix = (
                "download the weights on a machine with internet (`huggingface-cli download "
                f"{source} --local-dir /path/to/{source.split('/')[-1]}`) and set "
                "goal_video.diffusers.model=/path/to/that/folder, or point HF_HOME at a cache that holds them"
            )
        return f"could not load the CogVideoX pipeline from {where}: {first}. Fix: {fix}"

    # -- generation ------------------------------------------------------------------------
    def call_kwargs(self, spec: VideoSpec) -> dict[str, Any]:
        """The exact diffusers call for ``spec`` (also used by the direct-diffusers benchmark)."""
        return call_kwargs(spec, self.cfg.mode, self.cfg.max_sequence_length)

    def generate(self, spec: VideoSpec) -> np.ndarray:
        return generate_with(self.pipeline(), spec, self.cfg.mode, self.cfg.max_sequence_length)


def call_kwargs(spec: VideoSpec, mode: str, max_sequence_length: int) -> dict[str, Any]:
    """Keyword arguments of a CogVideoX pipeline call for ``spec`` (``mode``: t2v | i2v)."""
    import torch

    kwargs: dict[str, Any] = dict(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt or None,
        num_frames=spec.num_frames,
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance,
        max_sequence_length=max_sequence_length,
        output_type="np",
        # CPU generator: the same initial noise on every device.
        generator=torch.Generator(device="cpu").manual_seed(spec.seed),
    )
    if mode == "i2v":
        if spec.image is None:
            raise GenerationError("image-to-video needs a conditioning image (goal_video.condition=first_frame)")
        from PIL import Image

        kwargs["image"] = Image.fromarray(np.asarray(spec.image))
    return kwargs


def generate_with(pipe, spec: VideoSpec, mode: str, max_sequence_length: int) -> np.ndarray:
    """Run ``pipe`` (a loaded or in-training CogVideoX pipeline) for ``spec``: uint8 [T,H,W,3], validated."""
    import torch

    with torch.inference_mode():
        frames = pipe(**call_kwargs(spec, mode, max_sequence_length)).frames
    try:
        video = validate_video(np.asarray(frames)[0], name="generated video")
    except VideoError as e:
        raise GenerationError(str(e)) from None
    expected = (spec.num_frames, spec.height, spec.width, 3)
    if video.shape != expected:
        raise GenerationError(f"generated video has shape {video.shape}, expected {expected}")
    return video
