"""Recipes that adapt the video model to the domain clips, and its quality check.

``from_scratch``: a small CogVideoX (:func:`~genreward.video.cogvideox_build.build_cogvideox_pipeline`)
trained in two phases, the VAE first, then the transformer (and the T5 text encoder) on its
latents. ``lora``: a peft LoRA on the transformer of ``goal_video.diffusers.model``, loaded
through the goal-video generator's own loading path, t2v or i2v.

Each recipe takes a :class:`Job` (the configs, the clips, the work folder, the device), trains
with :func:`genreward.training.train_loop` in the work folder (one resumable checkpoint folder per
phase; from scratch also keeps the untrained pipeline there, the quality baseline) and returns a
:class:`TrainedVideoModel`. Sample clips taken during training go to the job's
``on_sample(tag, step, clips)``; the recipes write nothing else.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from genreward.adapt import train
from genreward.adapt.config import VideoModelConfig
from genreward.adapt.domain import TRAIN, VAL, DomainClips
from genreward.store.atomic import atomic_dir
from genreward.video.config import GoalVideoConfig

log = logging.getLogger(__name__)

OnSample = Callable[[str, int, list[np.ndarray]], None]  # (phase tag, update, one clip per sampled task)


class Sampler:
    """Videos from an in-memory pipeline with the goal-video settings (eval mode while sampling)."""

    def __init__(
        self,
        pipe,
        gv: GoalVideoConfig,
        prompts: Sequence[str],
        max_text_len: int,
        images: dict[int, np.ndarray] | None = None,
    ):
        self.pipe, self.gv, self.prompts, self.max_text_len, self.images = pipe, gv, list(prompts), max_text_len, images

    def __call__(self, task_id: int, seed: int) -> np.ndarray:
        from genreward.video.diffusers_backend import generate_with
        from genreward.video.generate import goal_spec

        image = None if self.images is None else self.images[task_id]
        spec = goal_spec(self.gv, self.prompts[task_id], seed, image=image)
        modules = [self.pipe.transformer, self.pipe.text_encoder, self.pipe.vae]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            return generate_with(self.pipe, spec, "t2v" if self.images is None else "i2v", self.max_text_len)
        finally:
            for m, t in zip(modules, modes):
                m.train(t)


class WithoutAdapter:
    """A LoRA pipeline's sampler with the adapter disabled while sampling: the base model."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def __call__(self, task_id: int, seed: int) -> np.ndarray:
        tr = self.sampler.pipe.transformer
        tr.disable_adapters()
        try:
            return self.sampler(task_id, seed)
        finally:
            tr.enable_adapters()


@dataclass
class TrainedVideoModel:
    """What a recipe returns."""

    mode: str  # "from_scratch" | "lora"
    pipe: Any  # the trained diffusers pipeline, its modules in eval mode
    histories: dict[str, list[dict]]  # logged rows per phase: "vae", "transformer"
    max_text_len: int  # T5 tokens the prompts are encoded with
    untrained_dir: Path | None = None  # from scratch: the initial pipeline (saved in the work folder)
    images: dict[int, np.ndarray] | None = None  # i2v: task id -> conditioning frame

    def sampler(self, gv: GoalVideoConfig, prompts: Sequence[str]) -> Sampler:
        return Sampler(self.pipe, gv, prompts, self.max_text_len, self.images)

    def untrained_sampler(
        self, gv: GoalVideoConfig, prompts: Sequence[str], device: str
    ) -> Callable[[int, int], np.ndarray]:
        """The same model before training: the saved initial pipeline (from scratch) or the base
        model with the adapter disabled (LoRA)."""
        if self.untrained_dir is not None:
            pipe = type(self.pipe).from_pretrained(str(self.untrained_dir)).to(device)
            return Sampler(pipe, gv, prompts, self.max_text_len, self.images)
        return WithoutAdapter(self.sampler(gv, prompts))

    def save(self, folder: Path) -> None:
        """Into ``folder``: ``pipeline/`` (a complete diffusers pipeline, from scratch) or ``lora/``
        (diffusers' LoRA layout)."""
        if self.mode == "from_scratch":
            self.pipe.save_pretrained(str(Path(folder) / "pipeline"))
        else:
            train.save_lora(self.pipe, Path(folder) / "lora")


def check_clips(clips: DomainClips, tasks: Sequence[str], gv: GoalVideoConfig) -> None:
    """The clips cover ``tasks`` and have the goal videos' frames and size."""
    missing = [t for t in tasks if t not in clips.tasks]
    if missing:
        raise ValueError(f"{clips.path} has no clips of {', '.join(missing)}; re-run collect_domain_videos")
    if clips.video.shape[1:4] != (gv.num_frames, gv.height, gv.width):
        raise ValueError(
            f"domain clips are {clips.video.shape[1:4]} (frames, height, width) but goal videos are "
            f"{(gv.num_frames, gv.height, gv.width)}: set domain_videos.num_frames/height/width to match"
        )


@dataclass(frozen=True)
class Job:
    """What a recipe trains on and with: the configs, the clips, the work folder (its resumable
    checkpoints), the device, and where sample clips taken during training go."""

    vm: VideoModelConfig
    gv: GoalVideoConfig
    clips: DomainClips
    workdir: Path
    device: str
    progress: bool = False
    on_sample: OnSample | None = None

    def phase(self):
        """``train_loop`` with the video model's checkpoint and log cadence, device and progress bar."""
        from genreward.training import train_loop

        vm = self.vm
        return functools.partial(
            train_loop, every=vm.checkpoint_every, log_every=vm.log_every, progress=self.progress, device=self.device
        )

    def train_split(self) -> tuple[np.ndarray, list[str]]:
        """The training clips and each one's prompt."""
        clips = self.clips
        idx = clips.indices(TRAIN)
        return clips.video[idx], [clips.prompts[t] for t in clips.task_id[idx]]

    def sample_hook(self, sampler: Sampler, task_ids: list[int], tag: str) -> Callable[[int], None] | None:
        """An ``on_step`` that hands ``on_sample`` a clip per task every ``sample_every`` updates."""
        if self.on_sample is None:
            return None
        on_sample, every = self.on_sample, self.vm.sample_every

        def on_step(step: int) -> None:
            if step % every == 0:
                on_sample(tag, step, [sampler(t, 0) for t in task_ids])

        return on_step


def train_from_scratch(job: Job) -> TrainedVideoModel:
    """A small CogVideoX over the clips' prompts: the VAE, then the transformer (and text encoder)."""
    import torch

    from genreward.video.cogvideox_build import TinyCogVideoXConfig, build_cogvideox_pipeline

    vm, gv, clips, workdir, device = job.vm, job.gv, job.clips, job.workdir, job.device
    phase = job.phase()
    sc = vm.from_scratch
    train_video, clip_prompts = job.train_split()
    prompts = clips.prompts
    arch = TinyCogVideoXConfig.from_section(sc, gv.num_frames, gv.height, gv.width)
    pipe = build_cogvideox_pipeline(prompts, "t2v", arch, seed=vm.seed)
    untrained_dir = workdir / "untrained"
    if not (untrained_dir / "model_index.json").exists():
        with atomic_dir(untrained_dir) as tmp:
            pipe.save_pretrained(str(tmp))
    pipe.to(device)
    vae = pipe.vae.train()
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=sc.vae_lr, weight_decay=0.0)
    gen = torch.Generator()

    crop = min(sc.vae_frames, train_video.shape[1])

    def vae_step(step: int) -> dict:
        rng = np.random.default_rng([vm.seed, 1, step])
        gen.manual_seed(int(rng.integers(2**62)))
        idx = rng.integers(0, len(train_video), sc.vae_batch_size)
        start = rng.integers(0, train_video.shape[1] - crop + 1, sc.vae_batch_size)
        batch = np.stack([train_video[c, s : s + crop] for c, s in zip(idx, start)])
        return train.vae_update(vae, vae_opt, batch, sc.kl_weight, gen, device)

    vae_hist = phase(
        vae_step,
        sc.vae_steps,
        workdir / "vae",
        {"vae": vae},
        {"vae": vae_opt},
        desc="video VAE",
        hint="lower video_model.from_scratch.vae_lr",
    )
    vae.eval().requires_grad_(False)
    scale = train.latent_scale(vae, train_video, sc.vae_batch_size, device)
    vae.register_to_config(scaling_factor=scale)
    pipe.vae_scaling_factor_image = scale
    latents, first = train.encode_clips(vae, train_video, sc.vae_batch_size, device, seed=vm.seed)
    log.info("video VAE: %d updates, scaling factor %.4f, latents %s", sc.vae_steps, scale, tuple(latents.shape))

    tr, te = pipe.transformer.train(), pipe.text_encoder
    te.train(sc.train_text_encoder).requires_grad_(sc.train_text_encoder)
    params = list(tr.parameters()) + (list(te.parameters()) if sc.train_text_encoder else [])
    opt = torch.optim.AdamW(params, lr=sc.lr, weight_decay=0.01)
    sample = train.batch_sampler(latents, first, clip_prompts, sc.batch_size, sc.p_uncond, vm.seed, image_cond=False)

    def step_fn(step: int) -> dict:
        gen.manual_seed(int(np.random.default_rng([vm.seed, 2, step]).integers(2**62)))
        return train.denoiser_update(pipe, params, opt, sample(step), sc.max_text_len, gen, device, gv.height, gv.width)

    sampler = Sampler(pipe, gv, prompts, sc.max_text_len)
    dit_hist = phase(
        step_fn,
        sc.steps,
        workdir / "transformer",
        {"transformer": tr, "text_encoder": te},
        {"opt": opt},
        desc="video transformer",
        hint="lower video_model.from_scratch.lr",
        on_step=job.sample_hook(sampler, list(range(len(prompts))), "transformer"),
    )
    for m in (tr, te):
        m.eval().requires_grad_(False)
    return TrainedVideoModel(
        "from_scratch", pipe, {"vae": vae_hist, "transformer": dit_hist}, sc.max_text_len, untrained_dir=untrained_dir
    )


def train_lora(job: Job, task_ids: list[int]) -> TrainedVideoModel:
    """A LoRA on the transformer of ``gv.diffusers.model``; samples show ``task_ids``."""
    import torch

    from genreward.video.diffusers_backend import DiffusersGenerator

    vm, gv, clips, workdir, device = job.vm, job.gv, job.clips, job.workdir, job.device
    phase = job.phase()
    lc = vm.lora
    train_video, clip_prompts = job.train_split()
    base = gv.diffusers.model_copy(update={"use_adapted": False, "lora": None, "offload": "none"})
    pipe = DiffusersGenerator(base, device=device, progress=job.progress).pipeline()
    i2v = base.mode == "i2v"
    batch = max(1, min(lc.batch_size, 4))
    latents, first = train.encode_clips(pipe.vae, train_video, batch, device, seed=vm.seed)
    latents, first = latents.to(pipe.transformer.dtype), first.to(pipe.transformer.dtype)
    params = train.add_lora(pipe.transformer, lc.rank, lc.alpha, lc.target_modules)
    if lc.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    pipe.transformer.train()
    plist = list(params.values())
    for p in plist:  # LoRA weights train in fp32 even on a bf16 base
        p.data = p.data.float()
    opt = torch.optim.AdamW(plist, lr=lc.lr, weight_decay=0.0)
    sample = train.batch_sampler(latents, first, clip_prompts, lc.batch_size, lc.p_uncond, vm.seed, image_cond=i2v)
    gen = torch.Generator()
    max_text_len = base.max_sequence_length

    def step_fn(step: int) -> dict:
        gen.manual_seed(int(np.random.default_rng([vm.seed, 3, step]).integers(2**62)))
        return train.denoiser_update(pipe, plist, opt, sample(step), max_text_len, gen, device, gv.height, gv.width)

    images = None
    if i2v:  # condition on each task's first validation (else training) clip's first frame
        images = {}
        has_val = (clips.split == VAL).any()
        for tid in range(len(clips.tasks)):
            rows = (
                np.flatnonzero((clips.task_id == tid) & (clips.split == VAL))
                if has_val
                else np.flatnonzero(clips.task_id == tid)
            )
            images[tid] = clips.video[rows[0], 0]
    sampler = Sampler(pipe, gv, clips.prompts, max_text_len, images)
    hist = phase(
        step_fn,
        lc.steps,
        workdir / "lora",
        {"lora": train.parameter_module(params)},
        {"opt": opt},
        desc="video LoRA",
        hint="lower video_model.lora.lr",
        on_step=job.sample_hook(sampler, task_ids, "lora"),
    )
    pipe.transformer.eval()
    return TrainedVideoModel("lora", pipe, {"transformer": hist}, max_text_len, images=images)


def train_video_model(
    vm: VideoModelConfig,
    gv: GoalVideoConfig,
    clips: DomainClips,
    tasks: Sequence[str],
    workdir: Path,
    device: str,
    progress: bool = False,
    on_sample: OnSample | None = None,
) -> TrainedVideoModel:
    """The recipe of ``vm.mode`` (``from_scratch`` or ``lora``) on ``clips`` (see :func:`check_clips`)."""
    job = Job(vm, gv, clips, workdir, device, progress, on_sample)
    if vm.mode == "from_scratch":
        return train_from_scratch(job)
    if vm.mode == "lora":
        return train_lora(job, [clips.tasks.index(t) for t in tasks])
    raise ValueError(f"video_model.mode {vm.mode!r} trains nothing")


def quality_check(
    trained: TrainedVideoModel,
    gv: GoalVideoConfig,
    clips: DomainClips,
    task_ids: Sequence[int],
    seeds: Sequence[int],
    device: str,
) -> dict:
    """:func:`~genreward.adapt.quality.quality_report` of the trained model against the untrained
    one and the mean training clip, on the validation clips (the training clips when there are none)."""
    from genreward.adapt.quality import quality_report

    train_video = clips.video[clips.indices(TRAIN)]
    val_idx = clips.indices(VAL)
    real = clips.video[val_idx] if len(val_idx) else train_video
    return quality_report(
        trained.sampler(gv, clips.prompts),
        trained.untrained_sampler(gv, clips.prompts, device),
        task_ids,
        seeds,
        real,
        clips.video[:, -1],
        clips.task_id,
        train_video.mean(axis=0).round().astype(np.uint8),
    )
