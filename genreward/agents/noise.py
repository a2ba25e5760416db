"""Temporally correlated ("coloured") Gaussian action noise.

Power-law noise with spectrum S(f) ∝ f^-β over one episode (β = 0: white, 1: pink, 2: red),
generated per env and per action dimension by shaping white Gaussian noise in the frequency
domain, then scaled to unit variance. Pink noise moves a manipulator much further than white
noise of the same per-step variance, which is what reward-free exploration needs to reach and
push objects (Eberhard et al., "Pink noise is all you need", ICLR 2023). Written from the idea,
not from any implementation.
"""

from __future__ import annotations

import numpy as np


def powerlaw_noise(beta: float, n: int, dims: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise sequences [n, horizon, dims] with spectrum ∝ f^-beta."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if beta == 0 or horizon < 4:
        return rng.standard_normal((n, horizon, dims))
    freqs = np.fft.rfftfreq(horizon)
    freqs[0] = freqs[1]  # keep a finite (lowest-frequency) amplitude for the mean
    amp = freqs ** (-beta / 2.0)
    spec = amp[None, :, None] * (
        rng.standard_normal((n, len(freqs), dims)) + 1j * rng.standard_normal((n, len(freqs), dims))
    )
    x = np.fft.irfft(spec, n=horizon, axis=1)
    # Scale each sequence to unit mean square (the per-step power of white N(0, 1) noise); its
    # mean is kept, since a slow drift is the point of coloured noise.
    rms = np.sqrt((x**2).mean(axis=1, keepdims=True))
    return x / np.where(rms > 0, rms, 1.0)


class ColoredNoise:
    """Per-env noise process: ``reset()`` at episode start draws fresh sequences; ``sample()``
    returns the next step's [n, dims] standard-normal-like noise (white after ``horizon``).

    Each env keeps its own step index, so envs that act at different times (a collector stepping
    its envs in groups) each get their own sequence in order: ``sample(envs)`` returns the rows of
    ``envs`` only and advances those envs alone."""

    def __init__(self, beta: float, n: int, dims: int, horizon: int, rng: np.random.Generator):
        self.beta, self.n, self.dims, self.horizon, self.rng = float(beta), n, dims, horizon, rng
        self.reset()

    def reset(self, n: int | None = None) -> None:
        self.n = self.n if n is None else n
        self._seq = powerlaw_noise(self.beta, self.n, self.dims, self.horizon, self.rng)
        self._t = np.zeros(self.n, np.int64)
        self._tails: list[np.random.Generator] | None = None  # per env, past the horizon

    def steps_taken(self, envs: np.ndarray | slice | None = None) -> np.ndarray:
        """How many samples each of ``envs`` (all: ``None``) has drawn since the last reset."""
        return self._t[slice(None) if envs is None else envs].copy()

    def sample(self, envs: np.ndarray | slice | None = None) -> np.ndarray:
        idx = np.arange(self.n)[slice(None) if envs is None else envs]
        t = self._t[idx]
        live = t < self.horizon
        if live.all():
            out = self._seq[idx, t]
        else:  # past the horizon: white noise, from each env's own generator (any call order)
            if self._tails is None:
                self._tails = self.rng.spawn(self.n)
            out = np.empty((len(idx), self.dims))
            out[live] = self._seq[idx[live], t[live]]
            for row in np.flatnonzero(~live):
                out[row] = self._tails[idx[row]].standard_normal(self.dims)
        self._t[idx] += 1
        return out
