"""The video model as a scorer: its noise predictions on agent clips (diffusion-based rewards).

One forward path serves training (``genreward.adapt.train.diffusion_loss``) and scoring:
:func:`model_prediction` runs ``pipe.transformer`` on noisy latents the way the pipeline samples
(its own T5 prompt encoding, rotary embeddings and, for image-to-video, the first frame's latent
zero-padded on the channels), and :func:`eps_from_prediction` turns a ``v_prediction`` into the
noise estimate with the scheduler's own ᾱ_t (x_t = √ᾱ·x₀ + √(1−ᾱ)·ε, v = √ᾱ·ε − √(1−ᾱ)·x₀, so
ε = √ᾱ·v + √(1−ᾱ)·x_t).

:class:`DiffusionScorer` holds a loaded pipeline and scores uint8 clips: encode (the VAE's
posterior mean, scaled), noise at given timesteps with given noise, predict ε conditioned on a
prompt. The reward terms ``tadpole`` and ``viper`` (genreward/rewards/diffusion_terms.py) use it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from genreward.video.io import resample_frames
from genreward.video.latents import LatentMemo, vae_pixels


def prompt_embeds(pipe, prompts: Sequence[str], max_text_len: int, device, dtype):
    """The pipeline's own T5 embeddings of ``prompts`` ([B, L, D])."""
    return pipe._get_t5_prompt_embeds(
        prompt=list(prompts), max_sequence_length=max_text_len, device=device, dtype=dtype
    )


def model_prediction(pipe, noisy, t, embeds, first=None, height: int = 0, width: int = 0):
    """``pipe.transformer``'s output for noisy latents [B, F, C, h, w] at timesteps ``t`` [B]
    with text ``embeds`` [B, L, D]; ``first``: scaled first-frame latents [B, 1, C, h, w]
    (image-to-video). ``height``/``width``: the clips' pixel size (rotary embeddings)."""
    import torch

    b, frames = noisy.shape[0], noisy.shape[1]
    model_in = noisy
    if first is not None:
        first = first.to(noisy.device, noisy.dtype)
        pad = torch.zeros((b, frames - 1) + tuple(noisy.shape[2:]), device=noisy.device, dtype=noisy.dtype)
        model_in = torch.cat([noisy, torch.cat([first, pad], dim=1)], dim=2)
    rotary = (
        pipe._prepare_rotary_positional_embeddings(height, width, frames, noisy.device)
        if pipe.transformer.config.use_rotary_positional_embeddings
        else None
    )
    kwargs = {}
    if getattr(pipe.transformer.config, "ofs_embed_dim", None):
        kwargs["ofs"] = noisy.new_full((b,), 2.0)
    return pipe.transformer(
        hidden_states=model_in,
        encoder_hidden_states=embeds,
        timestep=t,
        image_rotary_emb=rotary,
        return_dict=False,
        **kwargs,
    )[0]


def training_target(scheduler, latents, noise, t):
    """What the transformer is trained to predict: v (``v_prediction``) or ε (``epsilon``)."""
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "epsilon":
        return noise
    raise ValueError(f"scheduler prediction_type {kind!r} is not supported (v_prediction or epsilon)")


def eps_from_prediction(scheduler, noisy, pred, t):
    """The noise estimate ε̂ from the model output ``pred`` at noisy latents x_t and timesteps ``t``."""
    import torch

    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return pred
    if kind != "v_prediction":
        raise ValueError(f"scheduler prediction_type {kind!r} is not supported (v_prediction or epsilon)")
    abar = scheduler.alphas_cumprod.to(device=noisy.device, dtype=torch.float64)[t].to(noisy.dtype)
    abar = abar.reshape((-1,) + (1,) * (noisy.ndim - 1))
    return abar.sqrt() * pred + (1 - abar).sqrt() * noisy


class DiffusionScorer:
    """Noise predictions of a CogVideoX pipeline on uint8 clips ``[T, H, W, 3]``.

    Clips are uniformly subsampled to ``num_frames`` (the model's clip length) and resized to
    ``height`` x ``width`` before encoding; latents are the VAE posterior means times its
    scaling factor, in the transformer's layout [F, C, h, w].
    """

    def __init__(
        self,
        pipe,
        num_frames: int,
        height: int,
        width: int,
        max_text_len: int,
        device: str = "cpu",
        image_cond: bool = False,
        batch_size: int = 8,
        memo: LatentMemo | None = None,
    ):
        import torch

        self.pipe, self.device, self.batch_size = pipe, device, batch_size
        self.num_frames, self.height, self.width, self.max_text_len = num_frames, height, width, max_text_len
        self.image_cond = image_cond
        self.dtype = next(pipe.transformer.parameters()).dtype
        self.scale = float(pipe.vae.config.scaling_factor)
        self.num_train_timesteps = int(pipe.scheduler.config.num_train_timesteps)
        self.temporal_ratio = int(getattr(pipe, "vae_scale_factor_temporal", 4))  # frames per latent frame
        self._embeds: dict[str, object] = {}
        self._torch = torch
        self.memo = memo if memo is not None else LatentMemo(0)  # scorer_from_config passes latents.memo_mb's

    def _pixels(self, clip: np.ndarray):
        return vae_pixels(resample_frames(np.asarray(clip), self.num_frames), self.height, self.width)

    def encode(self, clips: Sequence[np.ndarray]):
        """Scaled latents [B, F, C, h, w] and, for image-to-video, first-frame latents [B, 1, C, h, w]
        (from :attr:`memo` for clips encoded before)."""
        torch = self._torch
        settings = ("diffusion", self.num_frames, self.height, self.width, self.image_cond)
        rows = self.memo.map(list(clips), self._encode, settings)
        lat = torch.stack([r[0] for r in rows])
        first = torch.stack([r[1] for r in rows]) if self.image_cond else None
        return lat, first

    def _encode(self, clips: Sequence[np.ndarray]) -> list:
        torch = self._torch
        vae = self.pipe.vae
        lats, firsts = [], []
        with torch.inference_mode():
            for i in range(0, len(clips), self.batch_size):
                x = torch.stack([self._pixels(c) for c in clips[i : i + self.batch_size]]).to(self.device, vae.dtype)
                lats.append(vae.encode(x).latent_dist.mean.float())
                if self.image_cond:
                    firsts.append(vae.encode(x[:, :, :1]).latent_dist.mean.float())
        lat = (torch.cat(lats).permute(0, 2, 1, 3, 4) * self.scale).to(self.dtype)
        first = (torch.cat(firsts).permute(0, 2, 1, 3, 4) * self.scale).to(self.dtype) if self.image_cond else None
        return [(lat[i].clone(), None if first is None else first[i].clone()) for i in range(len(lat))]

    def embeds(self, prompt: str, batch: int):
        if prompt not in self._embeds:
            with self._torch.inference_mode():
                self._embeds[prompt] = prompt_embeds(self.pipe, [prompt], self.max_text_len, self.device, self.dtype)
        e = self._embeds[prompt]
        return e.expand(batch, *e.shape[1:])

    def predict_eps(self, latents, first, noise, t, prompt: str):
        """ε̂ (float32) for clean ``latents`` [B, F, C, h, w] noised with ``noise`` (from
        :meth:`noise_like`) at integer timesteps ``t`` [B]; ``batch_size`` clips per forward pass."""
        torch = self._torch
        sched = self.pipe.scheduler
        t = torch.as_tensor(t, device=self.device, dtype=torch.long)
        noise = noise.to(self.device, latents.dtype)
        out = []
        with torch.inference_mode():
            for i in range(0, len(latents), self.batch_size):
                sl = slice(i, i + self.batch_size)
                noisy = sched.add_noise(latents[sl], noise[sl], t[sl])
                cond = None if first is None else first[sl]
                embeds = self.embeds(prompt, len(noisy))
                pred = model_prediction(self.pipe, noisy, t[sl], embeds, cond, self.height, self.width)
                out.append(eps_from_prediction(sched, noisy.float(), pred.float(), t[sl]))
        return torch.cat(out)

    def noise_like(self, latents, seed: int | Sequence[int]):
        """Standard normal noise of ``latents``' shape and dtype (float32 on the CPU; what
        :meth:`predict_eps` adds, so ε̂ − noise compares like with like) from a seeded generator."""
        torch = self._torch
        g = torch.Generator(device="cpu").manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        return torch.randn(latents.shape, generator=g).to(latents.dtype).float()


_PIPES: dict[str, tuple[object, dict]] = {}


def scorer_from_config(cfg, device: str) -> tuple[DiffusionScorer, dict]:
    """The run's video model (``goal_video.diffusers``, the adapted one with ``use_adapted``) as a
    scorer, and its identity. A pipeline is loaded once per process and model."""
    import json

    from genreward.video.diffusers_backend import DiffusersGenerator

    d = cfg.diffusers_config()
    key = json.dumps([d.model_dump(mode="json"), device], sort_keys=True)
    if key not in _PIPES:
        gen = DiffusersGenerator(d, device, memo_file=cfg.store.cache_dir / "weight_hashes.json", progress=False)
        _PIPES.clear()  # hold one pipeline at a time
        _PIPES[key] = (gen.pipeline(), gen.identity(), LatentMemo(cfg.latents.memo_mb << 20))
    pipe, ident, memo = _PIPES[key]  # the memo: the pipeline's latents of clips it has seen, for every task
    gv = cfg.goal_video
    scorer = DiffusionScorer(
        pipe,
        gv.num_frames,
        gv.height,
        gv.width,
        d.max_sequence_length,
        device,
        image_cond=d.mode == "i2v",
        batch_size=cfg.latents.batch_size,
        memo=memo,
    )
    return scorer, dict(ident)
