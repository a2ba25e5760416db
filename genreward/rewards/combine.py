"""Combine the terms into the reward an agent learns from (Eq. 10 of the paper, arXiv 2512.00961).

``RewardModel.episode(frames, actions, env_reward)`` rewards one episode from its stored frames:
transition t (s_t, a_t -> s_{t+1}) gets

    r_t = env_weight·r_env_t + Σ_term [t paid by the term's schedule]·weight_term·r_term_t

over the method's terms (``METHODS``); each term's weight knob and schedule come from ``TERMS``
(genreward/rewards/config.py). For ``genreward``: α·r_video(window ending at s_{t+1}) +
β·r_FB(s_t, a_t) at (t+1) ≡ 0 mod Δt (``frame_per_step``: β·r_FB on every step); the clip
baseline: clip_weight·r_CLIP(s_{t+1}) every step. Because rewards are a function of stored
frames only, :meth:`RewardModel.relabel` can re-reward a replay buffer with another model
without collecting again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from genreward.rewards.base import RewardInputError, Schedule, Term
from genreward.rewards.config import RewardConfig, method_terms, term_spec


class RunningStats:
    """Running mean / variance (Chan et al. parallel update) for per-term normalisation."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        if x.size == 0:
            return
        n, mean, m2 = x.size, float(x.mean()), float(((x - x.mean()) ** 2).sum())
        delta, tot = mean - self.mean, self.n + n
        self.mean += delta * n / tot
        self.m2 += m2 + delta**2 * self.n * n / tot
        self.n = tot

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n > 1 else 1.0

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / max(self.std, 1e-6)).astype(np.float32)

    def state(self) -> dict:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}


def paid_steps(length: int, every: int) -> np.ndarray:
    """The transitions t < ``length`` with (t+1) % ``every`` == 0."""
    return np.arange(every - 1, length, every)


def weighted_terms(
    names, raw: Mapping[str, np.ndarray], cfg: RewardConfig, stats: Mapping[str, RunningStats], masks=None, start=0.0
) -> np.ndarray:
    """``start`` + Σ_term weight_term·x_term over ``names``; with ``cfg.normalize`` each x is
    z-scored with ``stats[term]`` (only where ``masks[term]``, zero elsewhere, when masks are given)."""
    total = start
    for term in names:
        x = raw[term]
        if cfg.normalize:
            z = stats[term].normalize(x)
            x = z if masks is None else np.where(masks[term], z, 0.0)
        total = total + term_spec(term).weight_for(cfg) * x
    return np.asarray(total)


@dataclass
class EpisodeReward:
    total: np.ndarray  # float32 [L], what the agent learns from
    terms: dict[str, np.ndarray] = field(default_factory=dict)  # raw (unweighted, unnormalised) terms, [L]


class RewardModel:
    """One method's reward: its terms (``terms``: their names), weighted and (optionally)
    normalised with running statistics per term (``stats``)."""

    def __init__(self, method: str, cfg: RewardConfig, terms: Mapping[str, Term] | None = None):
        names = method_terms(method)
        given = dict(terms or {})
        for name in names:
            term_spec(name)  # fails naming the registered terms if `name` is not one
            if given.get(name) is None:
                raise ValueError(f"method {method!r} needs the {name} reward model")
        self.method, self.cfg, self.terms = method, cfg, names
        self._terms: dict[str, Term] = {name: given[name] for name in names}
        self.stats = {t: RunningStats() for t in self.terms}

    def term(self, name: str) -> Term:
        """The term object ``name`` of this method."""
        if name not in self._terms:
            raise KeyError(f"method {self.method!r} has no {name} term (its terms: {list(self.terms)})")
        return self._terms[name]

    def identity(self) -> dict[str, dict]:
        """Each term's identity (what determines its scores), for provenance."""
        return {name: term.identity() for name, term in self._terms.items()}

    def schedule(self, term: str) -> Schedule:
        return term_spec(term).schedule_for(self.cfg)

    def reward_steps(self, length: int) -> np.ndarray:
        """Transition indices t where the interval rewards are paid ((t+1) % Δt == 0)."""
        return paid_steps(length, self.cfg.interval)

    def raw_terms(self, frames: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Unweighted terms [L] (zero where a term is not paid) for one episode's frames [L+1, 3, H, W]."""
        frames, actions = np.asarray(frames), np.asarray(actions, np.float32)
        length = len(actions)
        if len(frames) != length + 1:
            raise RewardInputError(f"an episode of {length} actions needs {length + 1} frames, got {len(frames)}")
        out: dict[str, np.ndarray] = {}
        for name, term in self._terms.items():
            mask = self.paid_mask(name, length)
            r = np.asarray(term.scores(frames, actions, np.flatnonzero(mask), self.cfg.window), np.float32)
            if r.shape != (length,):
                raise RewardInputError(f"the {name} term scored {list(r.shape)}, expected [{length}]")
            out[name] = np.where(mask, r, np.float32(0))
        return out

    def paid_mask(self, term: str, length: int) -> np.ndarray:
        """Where ``term`` is paid in an episode of ``length`` transitions (the one rule for it)."""
        mask = np.zeros(length, bool)
        if self.schedule(term) == "step":
            mask[:] = True
        else:
            mask[self.reward_steps(length)] = True
        return mask

    def combine(self, raw: dict[str, np.ndarray], env_reward: np.ndarray, update_stats: bool = True) -> np.ndarray:
        cfg = self.cfg
        env_reward = np.asarray(env_reward, np.float32)
        masks = {term: self.paid_mask(term, len(env_reward)) for term in self.terms}
        if cfg.normalize and update_stats:
            for term in self.terms:
                self.stats[term].update(raw[term][masks[term]])
        total = weighted_terms(self.terms, raw, cfg, self.stats, masks, start=cfg.env_weight * env_reward)
        if not np.isfinite(total).all():
            raise FloatingPointError(
                f"{self.method}: non-finite reward (terms: { {k: bool(np.isfinite(v).all()) for k, v in raw.items()} })"
            )
        return total.astype(np.float32)

    def episode(
        self, frames: np.ndarray, actions: np.ndarray, env_reward: np.ndarray, update_stats: bool = True
    ) -> EpisodeReward:
        raw = self.raw_terms(frames, actions)
        return EpisodeReward(self.combine(raw, env_reward, update_stats), raw)

    def relabel(self, replay) -> int:
        """Recompute every stored episode's rewards with this model (an :class:`EpisodeReplay`);
        returns how many episodes were relabelled."""
        for i in range(replay.size):
            replay.reward[i] = self.episode(replay.obs[i], replay.action[i], replay.env_reward[i]).total
        return replay.size
