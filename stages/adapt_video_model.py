"""Stage adapt_video_model: a video diffusion model adapted to the domain clips.

inputs:  ``<data>/domain_videos.zarr`` (stage collect_domain_videos)
outputs: ``<data>/video_model/`` — ``pipeline/`` (a complete diffusers CogVideoX pipeline,
         mode ``from_scratch``) or ``lora/`` (``pytorch_lora_weights.safetensors``, mode ``lora``),
         and ``meta.json`` (mode, params, dataset hash, quality metrics);
         ``<data>/video_model_curves/{vae,transformer}.csv`` (DVC plots);
         ``<data>/video_model_samples/`` (sample GIFs: every ``sample_every`` updates, final, baselines);
         ``<data>/video_model_metrics.json`` (DVC metrics: the quality check).

Modes (``video_model.mode``):
- ``from_scratch``: a small CogVideoX (``AutoencoderKLCogVideoX`` + ``CogVideoXTransformer3DModel``
  + a T5 text encoder over the prompts' words) trained on CPU: the VAE first, then the
  transformer and text encoder on its latents. ``goal_video.diffusers.use_adapted`` makes
  generate_goal_videos load the saved folder with the same ``from_pretrained`` code as real weights.
- ``lora``: peft LoRA on the transformer of ``goal_video.diffusers.model`` (loaded through the
  goal-video generator's own loading path), t2v or i2v; the generator applies it on top.
- ``none``: nothing is trained (``meta.json`` says so).
Training resumes from ``<data>/.video_model.partial/`` (checkpoints every ``checkpoint_every``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from genreward.adapt.domain import TRAIN, VAL, DomainClips
from genreward.agents.checkpoint import resume_dir
from genreward.config import Config
from genreward.store.artifacts import artifact_hash
from genreward.store.atomic import atomic_dir, write_csv_atomic, write_text_atomic
from genreward.store.hashing import stable_hash
from genreward.store.provenance import code_version
from genreward.video.io import write_gif

log = logging.getLogger(__name__)


def default_io(cfg: Config) -> tuple[dict[str, Path], dict[str, Path]]:
    d = cfg.store.data_dir
    return ({"dataset": d / "domain_videos.zarr"},
            {"model": cfg.video_model_dir(), "curves": d / "video_model_curves", "samples": d / "video_model_samples",
             "metrics": d / "video_model_metrics.json"})


def _write_csv(path: Path, rows: list[dict]) -> None:
    write_csv_atomic(path, rows or [{"step": 0, "loss": float("nan")}])  # a phase that did not run: one NaN row


def _strip(clips: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(clips, axis=2)  # side by side


class _Sampler:
    """Videos from an in-memory pipeline with the goal-video settings (eval mode while sampling)."""

    def __init__(self, pipe, cfg: Config, prompts: list[str], max_text_len: int, images: dict[int, np.ndarray] | None = None):
        self.pipe, self.cfg, self.prompts, self.max_text_len, self.images = pipe, cfg, prompts, max_text_len, images

    def __call__(self, task_id: int, seed: int) -> np.ndarray:
        from genreward.video.base import VideoSpec
        from genreward.video.diffusers_backend import generate_with

        gv = self.cfg.goal_video
        spec = VideoSpec(prompt=self.prompts[task_id], num_frames=gv.num_frames, height=gv.height, width=gv.width,
                         seed=seed, steps=gv.steps, guidance=gv.guidance, negative_prompt=gv.negative_prompt,
                         image=None if self.images is None else self.images[task_id])
        modules = [self.pipe.transformer, self.pipe.text_encoder, self.pipe.vae]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            return generate_with(self.pipe, spec, "t2v" if self.images is None else "i2v", self.max_text_len)
        finally:
            for m, t in zip(modules, modes):
                m.train(t)


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    vm = cfg.video_model
    ins, outs = default_io(cfg)
    ins.update(inputs), outs.update(outputs)
    if vm.mode == "none":
        with atomic_dir(outs["model"]) as tmp:
            (tmp / "meta.json").write_text(json.dumps({"mode": "none"}, indent=2))
        for k in ("curves", "samples"):
            outs[k].mkdir(parents=True, exist_ok=True)
        _write_csv(outs["curves"] / "vae.csv", [])
        _write_csv(outs["curves"] / "transformer.csv", [])
        write_text_atomic(outs["metrics"], json.dumps({"mode": "none"}, indent=2))
        return {"mode": "none"}

    ds = DomainClips(ins["dataset"])
    missing = [t for t in cfg.tasks if t not in ds.tasks]
    if missing:
        raise ValueError(f"{ins['dataset']} has no clips of {', '.join(missing)}; re-run collect_domain_videos")
    gv = cfg.goal_video
    if ds.video.shape[1:4] != (gv.num_frames, gv.height, gv.width):
        raise ValueError(f"domain clips are {ds.video.shape[1:4]} (frames, height, width) but goal videos are "
                         f"{(gv.num_frames, gv.height, gv.width)}: set domain_videos.num_frames/height/width to match")
    device = cfg.resolve_device()
    train_idx, val_idx = ds.indices(TRAIN), ds.indices(VAL)
    train_video = ds.video[train_idx]
    clip_prompts = [ds.prompts[t] for t in ds.task_id[train_idx]]
    dataset_hash = artifact_hash(ins["dataset"])
    params = cfg.section("video_model", "domain_videos")
    if vm.mode == "lora":
        params["goal_video.diffusers"] = cfg.goal_video.diffusers.model_dump(mode="json")
    partial = resume_dir(outs["model"].parent / f".{outs['model'].name}.partial",
                         stable_hash({"params": params, "dataset": dataset_hash, "seed": vm.seed}))
    for k in ("curves", "samples"):
        outs[k].mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if vm.mode == "from_scratch":
        pipe, untrained_dir, histories, max_text_len = _train_from_scratch(cfg, train_video, clip_prompts, ds.prompts,
                                                                           partial, outs, device)
        images = None
    else:
        pipe, untrained_dir, histories, max_text_len, images = _train_lora(cfg, ds, train_video, clip_prompts, partial,
                                                                          outs, device)
    train_seconds = time.perf_counter() - t0
    _write_csv(outs["curves"] / "vae.csv", histories.get("vae", []))
    _write_csv(outs["curves"] / "transformer.csv", histories.get("transformer", []))

    # quality check: the trained model vs the untrained one and the mean training clip
    from genreward.adapt.quality import quality_report

    real = ds.video[val_idx] if len(val_idx) else train_video
    finals, final_tasks = ds.video[:, -1], ds.task_id
    task_ids = [ds.tasks.index(t) for t in cfg.tasks]
    seeds = list(range(vm.eval_seeds))
    if untrained_dir is not None:  # from scratch: the saved initial pipeline
        untrained = _Sampler(type(pipe).from_pretrained(str(untrained_dir)).to(device), cfg, ds.prompts, max_text_len,
                             images)
    else:  # LoRA: the base model, adapter disabled while sampling
        untrained = _WithoutAdapter(_Sampler(pipe, cfg, ds.prompts, max_text_len, images))
    t1 = time.perf_counter()
    report = quality_report(_Sampler(pipe, cfg, ds.prompts, max_text_len, images), untrained, task_ids, seeds,
                            real, finals, final_tasks, train_video.mean(axis=0).round().astype(np.uint8))
    eval_seconds = time.perf_counter() - t1
    samples = report.pop("samples")
    write_gif(outs["samples"] / "final.gif", _strip([samples[t][0] for t in task_ids]), fps=gv.fps, scale=2)
    metrics = {"mode": vm.mode, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "train_clips": int(len(train_idx)), "val_clips": int(len(val_idx)), "eval_seeds": seeds,
               "tasks": [ds.tasks[t] for t in task_ids], **report}
    for name, h in histories.items():
        if h:
            metrics[f"final_{name}_loss"] = float(np.mean([r["loss"] for r in h[-4:]]))

    with atomic_dir(outs["model"]) as tmp:
        if vm.mode == "from_scratch":
            pipe.save_pretrained(str(tmp / "pipeline"))
        else:
            from genreward.adapt.train import save_lora

            save_lora(pipe, tmp / "lora")
        (tmp / "meta.json").write_text(json.dumps(
            {"mode": vm.mode, "params": params, "inputs": {"domain_videos": dataset_hash}, "metrics": metrics,
             "code": code_version()},
            indent=2, default=str))
    write_text_atomic(outs["metrics"], json.dumps(metrics, indent=2, sort_keys=True))
    shutil.rmtree(partial, ignore_errors=True)
    m = report["model"]
    log.info("video model (%s): trained in %.0f s; nearest-clip MSE %.4f (mean clip %.4f, untrained %s); "
             "task accuracy %.2f (chance %.2f)", vm.mode, train_seconds, m["nearest_clip_mse"],
             report["mean_clip"]["nearest_clip_mse"],
             f"{report['untrained']['nearest_clip_mse']:.4f}" if "untrained" in report else "n/a",
             m["task_accuracy"], report["chance_accuracy"])
    return metrics


class _WithoutAdapter:
    def __init__(self, sampler: _Sampler):
        self.sampler = sampler

    def __call__(self, task_id: int, seed: int) -> np.ndarray:
        tr = self.sampler.pipe.transformer
        tr.disable_adapters()
        try:
            return self.sampler(task_id, seed)
        finally:
            tr.enable_adapters()


def _sample_hook(cfg: Config, sampler: _Sampler, task_ids: list[int], folder: Path, tag: str):
    vm = cfg.video_model

    def on_step(step: int) -> None:
        if step % vm.sample_every == 0:
            clips = [sampler(t, 0) for t in task_ids]
            write_gif(folder / f"{tag}_step{step:06d}.gif", _strip(clips), fps=cfg.goal_video.fps, scale=2)

    return on_step


def _train_from_scratch(cfg: Config, train_video: np.ndarray, clip_prompts: list[str], prompts: list[str],
                        partial: Path, outs: dict[str, Path], device: str):
    import torch

    from genreward.adapt.train import batch_sampler, denoiser_update, encode_clips, latent_scale, vae_update
    from genreward.agents.checkpoint import train_loop
    from genreward.video.cogvideox_build import TinyCogVideoXConfig, build_cogvideox_pipeline

    vm, sc, gv = cfg.video_model, cfg.video_model.from_scratch, cfg.goal_video
    arch = TinyCogVideoXConfig.from_section(sc, gv.num_frames, gv.height, gv.width)
    pipe = build_cogvideox_pipeline(prompts, "t2v", arch, seed=vm.seed)
    untrained_dir = partial / "untrained"
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
        clips = rng.integers(0, len(train_video), sc.vae_batch_size)
        start = rng.integers(0, train_video.shape[1] - crop + 1, sc.vae_batch_size)
        batch = np.stack([train_video[c, s:s + crop] for c, s in zip(clips, start)])
        return vae_update(vae, vae_opt, batch, sc.kl_weight, gen, device)

    vae_hist = train_loop(vae_step, sc.vae_steps, partial / "vae", {"vae": vae}, {"vae": vae_opt},
                          every=vm.checkpoint_every, log_every=vm.log_every, progress=cfg.runtime.progress,
                          desc="video VAE", hint="lower video_model.from_scratch.vae_lr", device=device)
    vae.eval().requires_grad_(False)
    scale = latent_scale(vae, train_video, sc.vae_batch_size, device)
    vae.register_to_config(scaling_factor=scale)
    pipe.vae_scaling_factor_image = scale
    latents, first = encode_clips(vae, train_video, sc.vae_batch_size, device, seed=vm.seed)
    log.info("video VAE: %d updates, scaling factor %.4f, latents %s", sc.vae_steps, scale, tuple(latents.shape))

    tr, te = pipe.transformer.train(), pipe.text_encoder
    te.train(sc.train_text_encoder).requires_grad_(sc.train_text_encoder)
    params = list(tr.parameters()) + (list(te.parameters()) if sc.train_text_encoder else [])
    opt = torch.optim.AdamW(params, lr=sc.lr, weight_decay=0.01)
    sample = batch_sampler(latents, first, clip_prompts, sc.batch_size, sc.p_uncond, vm.seed, image_cond=False)

    def step_fn(step: int) -> dict:
        gen.manual_seed(int(np.random.default_rng([vm.seed, 2, step]).integers(2**62)))
        return denoiser_update(pipe, params, opt, sample(step), sc.max_text_len, gen, device, gv.height, gv.width)

    sampler = _Sampler(pipe, cfg, prompts, sc.max_text_len)
    task_ids = list(range(len(prompts)))
    modules = {"transformer": tr, "text_encoder": te}
    dit_hist = train_loop(step_fn, sc.steps, partial / "transformer", modules, {"opt": opt},
                          every=vm.checkpoint_every, log_every=vm.log_every, progress=cfg.runtime.progress,
                          desc="video transformer", hint="lower video_model.from_scratch.lr", device=device,
                          on_step=_sample_hook(cfg, sampler, task_ids, outs["samples"], "transformer"))
    for m in (tr, te):
        m.eval().requires_grad_(False)
    return pipe, untrained_dir, {"vae": vae_hist, "transformer": dit_hist}, sc.max_text_len


def _train_lora(cfg: Config, ds: DomainClips, train_video: np.ndarray, clip_prompts: list[str], partial: Path,
                outs: dict[str, Path], device: str):
    import torch

    from genreward.adapt.train import add_lora, batch_sampler, denoiser_update, encode_clips, parameter_module
    from genreward.agents.checkpoint import train_loop
    from genreward.video.diffusers_backend import DiffusersGenerator

    vm, lc, gv = cfg.video_model, cfg.video_model.lora, cfg.goal_video
    base = cfg.goal_video.diffusers.model_copy(update={"use_adapted": False, "lora": None, "offload": "none"})
    pipe = DiffusersGenerator(base, device=device, progress=cfg.runtime.progress).pipeline()
    i2v = base.mode == "i2v"
    batch = max(1, min(lc.batch_size, 4))
    latents, first = encode_clips(pipe.vae, train_video, batch, device, seed=vm.seed)
    latents, first = latents.to(pipe.transformer.dtype), first.to(pipe.transformer.dtype)
    params = add_lora(pipe.transformer, lc.rank, lc.alpha, lc.target_modules)
    if lc.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    pipe.transformer.train()
    plist = list(params.values())
    for p in plist:  # LoRA weights train in fp32 even on a bf16 base
        p.data = p.data.float()
    opt = torch.optim.AdamW(plist, lr=lc.lr, weight_decay=0.0)
    sample = batch_sampler(latents, first, clip_prompts, lc.batch_size, lc.p_uncond, vm.seed, image_cond=i2v)
    gen = torch.Generator()
    max_text_len = base.max_sequence_length

    def step_fn(step: int) -> dict:
        gen.manual_seed(int(np.random.default_rng([vm.seed, 3, step]).integers(2**62)))
        return denoiser_update(pipe, plist, opt, sample(step), max_text_len, gen, device, gv.height, gv.width)

    images = None
    if i2v:  # condition on each task's first validation (else training) clip's first frame
        images = {}
        for tid in range(len(ds.tasks)):
            rows = np.flatnonzero((ds.task_id == tid) & (ds.split == VAL)) if (ds.split == VAL).any() \
                else np.flatnonzero(ds.task_id == tid)
            images[tid] = ds.video[rows[0], 0]
    sampler = _Sampler(pipe, cfg, ds.prompts, max_text_len, images)
    task_ids = [ds.tasks.index(t) for t in cfg.tasks]
    hist = train_loop(step_fn, lc.steps, partial / "lora", {"lora": parameter_module(params)}, {"opt": opt},
                      every=vm.checkpoint_every, log_every=vm.log_every, progress=cfg.runtime.progress,
                      desc="video LoRA", hint="lower video_model.lora.lr", device=device,
                      on_step=_sample_hook(cfg, sampler, task_ids, outs["samples"], "lora"))
    pipe.transformer.eval()
    return pipe, None, {"transformer": hist}, max_text_len, images
