"""Diffusion-model reward baselines on our own video model (the paper's TADPoLe and VIPER comparisons).

Both read the agent's frames through the same CogVideoX pipeline the goal videos come from
(:class:`genreward.video.diffusion.DiffusionScorer`); neither reads a goal video. They are
"-style" re-implementations (docs/rewards.md says how they differ from the originals):

- ``tadpole`` (Video-TADPoLe, Luo et al. 2024): the episode is cut into consecutive chunks of
  ``rewards.window`` transitions; each chunk is encoded, noised at one timestep t (drawn once per
  episode from ``rewards.diffusion.tadpole_noise``) with one noise draw ε, and denoised with the
  task prompt (ε̂_c) and the negative prompt (ε̂_u). Per latent frame: align = mean‖ε̂_c − ε̂_u‖²,
  recon = mean‖ε̂_u − ε‖² − mean‖ε̂_c − ε‖², r = symlog(w_a·align) + symlog(w_r·recon); each
  transition t gets the value of the latent frame that covers s_{t+1}. Paid every step.
- ``viper`` (VIPER-style likelihood, Escontrela et al. 2023, with a diffusion model's evidence
  lower bound in place of an autoregressive likelihood): r = −Σ_k mean‖ε̂_c(x_{t_k}, t_k) − ε_k‖²
  over the fixed timesteps ``rewards.diffusion.viper_noise`` for the window of ``rewards.window``
  frames ending at s_{t+1}. Paid every ``rewards.interval`` steps.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from genreward.rewards.terms import WindowScores, _frames


def symlog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def latent_frame_of(length: int, num_frames: int, temporal_ratio: int = 4) -> np.ndarray:
    """For each of ``length`` frames of a clip subsampled to ``num_frames``: the index of the latent
    frame of a causal video VAE (first frame alone, then ``temporal_ratio`` frames each) that covers it."""
    sampled = np.linspace(0, num_frames - 1, length)  # position of each clip frame in the subsampled clip
    k = np.round(sampled).astype(int)
    return np.where(k == 0, 0, (k - 1) // temporal_ratio + 1)


def _timestep(fraction: float, num_train_timesteps: int) -> int:
    return int(round(fraction * (num_train_timesteps - 1)))


class _DiffusionTerm:
    def __init__(self, scorer, prompt: str, negative_prompt: str, cfg, model_identity: dict):
        self.scorer, self.prompt, self.negative_prompt, self.cfg = scorer, prompt, negative_prompt, cfg
        self.model_identity = model_identity

    @classmethod
    def build(cls, cfg, task: str, inputs: dict[str, Path], device: str):
        """The adapted video model (stage adapt_video_model; ``goal_video.diffusers``) and the task's prompt."""
        from genreward.video.diffusion import scorer_from_config

        scorer, ident = scorer_from_config(cfg, device)
        term = cls(scorer, cfg.prompt(task), cfg.goal_video.negative_prompt, cfg.rewards.diffusion, ident)
        return term, {"video_model": ident.get("weights_sha256") or ident.get("commit") or ident.get("model", "")}

    def identity(self) -> dict:
        s = self.scorer
        return {
            "video_model": self.model_identity,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "clip": [s.num_frames, s.height, s.width],
            "diffusion": self.cfg.model_dump(mode="json"),
        }


class TadpoleReward(_DiffusionTerm):
    name = "tadpole"

    def scores(self, frames: np.ndarray, actions: np.ndarray, paid_steps: np.ndarray, window: int) -> np.ndarray:
        frames = _frames(frames)
        length = len(actions)
        r = np.zeros(length, np.float32)
        paid = np.asarray(paid_steps, int)
        if not len(paid):
            return r
        # one timestep and one noise draw per episode, a function of the config seed and the reset frame
        seed = [self.cfg.seed, zlib.crc32(np.ascontiguousarray(frames[0]).tobytes())]
        rng = np.random.default_rng(seed)
        t = _timestep(rng.uniform(*self.cfg.tadpole_noise), self.scorer.num_train_timesteps)
        chunks = sorted({int(p) // window for p in paid})  # chunk k: transitions [k·window, (k+1)·window)
        spans = [(k * window, min((k + 1) * window, length)) for k in chunks]
        clips = [frames[a : b + 1].transpose(0, 2, 3, 1) for a, b in spans]  # frames s_a .. s_b
        # chunk by chunk: a chunk's value does not depend on which other chunks are scored with it
        values = [self.latent_frame_rewards([clip], t, seed)[0] for clip in clips]
        for (a, b), v in zip(spans, values):
            cover = latent_frame_of(b - a + 1, self.scorer.num_frames, self.scorer.temporal_ratio)
            r[a:b] = v[np.minimum(cover[1:], len(v) - 1)]  # transition t -> frame t+1
        return r

    def latent_frame_rewards(self, clips: Sequence[np.ndarray], t: int, seed) -> list[np.ndarray]:
        """Per latent frame rewards [F] for each clip uint8 [T, H, W, 3], at timestep ``t``."""
        s = self.scorer
        latents, first = s.encode(clips)
        noise = s.noise_like(latents[:1], seed).expand_as(latents)
        steps = np.full(len(latents), t)
        eps_c = s.predict_eps(latents, first, noise, steps, self.prompt)
        eps_u = s.predict_eps(latents, first, noise, steps, self.negative_prompt)
        noise = noise.to(eps_c.device)
        dims = (2, 3, 4)  # mean over channels and space: one value per latent frame
        align = ((eps_c - eps_u) ** 2).mean(dims).cpu().numpy()
        recon = (((eps_u - noise) ** 2).mean(dims) - ((eps_c - noise) ** 2).mean(dims)).cpu().numpy()
        r = symlog(self.cfg.tadpole_align * align) + symlog(self.cfg.tadpole_recon * recon)
        return [row.astype(np.float32) for row in r]


class ViperReward(_DiffusionTerm, WindowScores):
    name = "viper"

    def windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """−Σ_k mean‖ε̂_c(x_{t_k}, t_k) − ε_k‖² for N windows of frames uint8 [T, 3, H, W]."""
        s = self.scorer
        latents, first = s.encode([_frames(w, "viper window").transpose(0, 2, 3, 1) for w in windows])
        total = np.zeros(len(latents), np.float64)
        for k, fraction in enumerate(self.cfg.viper_noise):
            noise = s.noise_like(latents[:1], [self.cfg.seed, k]).expand_as(latents)
            t = np.full(len(latents), _timestep(fraction, s.num_train_timesteps))
            eps = s.predict_eps(latents, first, noise, t, self.prompt)
            total -= ((eps - noise.to(eps.device)) ** 2).mean((1, 2, 3, 4)).cpu().numpy()
        return total.astype(np.float32)
