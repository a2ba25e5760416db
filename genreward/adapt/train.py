"""Training a CogVideoX pipeline on domain clips: from scratch (VAE, then transformer) or LoRA.

Both modes train the pipeline's own modules with the objective the pipeline samples with:
the scheduler's ``add_noise`` at a uniform timestep, the transformer's prediction compared to
the scheduler's target (``v_prediction``: ``get_velocity``; ``epsilon``: the noise), text
through the pipeline's own T5 prompt encoding, rotary embeddings from the pipeline's own
helper and, for image-to-video, the first frame's latent zero-padded and concatenated on the
channels exactly like ``CogVideoXImageToVideoPipeline.prepare_latents``. Prompts are dropped
with probability ``p_uncond`` (an empty prompt, which is what classifier-free guidance uses).

Data order and noise are functions of (seed, step), so a resumed run continues the same stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def clips_to_tensor(video: np.ndarray, device: str = "cpu", dtype=None):
    """uint8 ``[B, T, H, W, 3]`` -> float ``[B, 3, T, H, W]`` in [-1, 1] (the VAE's input)."""
    import torch

    x = torch.as_tensor(np.ascontiguousarray(video), device=device).permute(0, 4, 1, 2, 3)
    return x.to(dtype or torch.float32).div(127.5).sub(1.0)


def _sample(posterior, generator):
    """A reparameterised sample of a diagonal-Gaussian posterior, noise from ``generator`` (CPU)."""
    import torch

    mean = posterior.mean
    return mean + posterior.std * torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)


def _check_finite(loss, what: str) -> None:
    if not bool(loss.isfinite()):
        raise FloatingPointError(f"non-finite {what} ({float(loss)})")


# -- VAE -----------------------------------------------------------------------------------
def vae_update(vae, opt, video: np.ndarray, kl_weight: float, generator, device: str) -> dict[str, float]:
    """One VAE step: L1 + MSE reconstruction of the clips plus ``kl_weight`` x KL."""
    import torch

    x = clips_to_tensor(video, device)
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(_sample(posterior, generator)).sample
    l1 = (recon - x).abs().mean()
    mse = ((recon - x) ** 2).mean()
    kl = posterior.kl().mean() / float(np.prod(x.shape[1:]))
    loss = l1 + mse + kl_weight * kl
    _check_finite(loss, "VAE loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    opt.step()
    return {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def latent_scale(vae, video: np.ndarray, batch_size: int, device: str) -> float:
    """1 / std of the posterior means over ``video``: the VAE's ``scaling_factor``."""
    import torch

    with torch.no_grad():
        means = [
            vae.encode(clips_to_tensor(video[i : i + batch_size], device)).latent_dist.mean.float().cpu()
            for i in range(0, len(video), batch_size)
        ]
    std = float(torch.cat(means).std())
    return 1.0 / max(std, 1e-6)


def encode_clips(vae, video: np.ndarray, batch_size: int, device: str, seed: int = 0):
    """Scaled latents ``[N, F, C, h, w]`` (the transformer's layout) of uint8 clips, and the
    scaled first-frame latents ``[N, 1, C, h, w]`` (image-to-video conditioning)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    scale = float(vae.config.scaling_factor)
    lats, firsts = [], []
    with torch.no_grad():
        for i in range(0, len(video), batch_size):
            x = clips_to_tensor(video[i : i + batch_size], device, vae.dtype)
            lats.append(_sample(vae.encode(x).latent_dist, g).float().cpu())
            firsts.append(_sample(vae.encode(x[:, :, :1]).latent_dist, g).float().cpu())
    lat = torch.cat(lats).permute(0, 2, 1, 3, 4) * scale
    first = torch.cat(firsts).permute(0, 2, 1, 3, 4) * scale
    return lat.contiguous(), first.contiguous()


# -- transformer -----------------------------------------------------------------------------
@dataclass
class DenoiserBatch:
    latents: object  # [B, F, C, h, w] scaled
    prompts: list[str]
    first: object | None = None  # [B, 1, C, h, w] scaled first-frame latents (i2v)


def diffusion_loss(pipe, batch: DenoiserBatch, max_text_len: int, generator, device: str, height: int, width: int):
    """The training loss of ``pipe.transformer`` on ``batch`` (see the module docstring)."""
    import torch

    from genreward.video.diffusion import model_prediction, prompt_embeds, training_target

    latents = batch.latents.to(device)
    b = latents.shape[0]
    sched = pipe.scheduler
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
    noisy = sched.add_noise(latents, noise, t)
    target = training_target(sched, latents, noise, t)
    embeds = prompt_embeds(pipe, batch.prompts, max_text_len, device, latents.dtype)
    pred = model_prediction(pipe, noisy, t, embeds, batch.first, height, width)
    return ((pred.float() - target.float()) ** 2).mean()


def denoiser_update(
    pipe,
    params: Sequence,
    opt,
    batch: DenoiserBatch,
    max_text_len: int,
    generator,
    device: str,
    height: int,
    width: int,
) -> dict[str, float]:
    import torch

    loss = diffusion_loss(pipe, batch, max_text_len, generator, device, height, width)
    _check_finite(loss, "diffusion loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return {"loss": loss.item(), "grad_norm": float(gnorm)}


def batch_sampler(
    latents, first, clip_prompts: Sequence[str], batch_size: int, p_uncond: float, seed: int, image_cond: bool
) -> Callable[[int], DenoiserBatch]:
    """``step -> DenoiserBatch``: clips drawn with replacement, prompts dropped with ``p_uncond``."""

    def sample(step: int) -> DenoiserBatch:
        rng = np.random.default_rng([seed, step])
        idx = rng.integers(0, len(latents), batch_size)
        drop = rng.random(batch_size) < p_uncond
        prompts = ["" if d else clip_prompts[i] for i, d in zip(idx, drop)]
        return DenoiserBatch(latents[idx], prompts, first[idx] if image_cond else None)

    return sample


# -- LoRA ----------------------------------------------------------------------------------
def add_lora(transformer, rank: int, alpha: float, target_modules: Sequence[str]):
    """Attach a trainable peft LoRA adapter to ``transformer``; returns its parameters (name -> p)."""
    from peft import LoraConfig

    import genreward  # noqa: F401

    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=True)
    )
    params = {n: p for n, p in transformer.named_parameters() if "lora_" in n}
    if not params:
        raise ValueError(f"no LoRA parameters were created: target_modules {list(target_modules)} match no layer")
    for p in params.values():
        p.requires_grad_(True)
    return params


def parameter_module(params: dict):
    """An ``nn.Module`` that holds (shares) ``params``: checkpoints of the trainable subset only."""
    from torch import nn

    m = nn.Module()
    for name, p in params.items():
        m.register_parameter(name.replace(".", "__"), p)
    return m


def save_lora(pipe, folder) -> None:
    """Write the transformer's LoRA in diffusers' layout (``pipe.load_lora_weights`` reads it)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(pipe.transformer)
    type(pipe).save_lora_weights(str(folder), transformer_lora_layers=state)
