"""GenReward as a gymnasium wrapper: any agent that steps a gymnasium env can learn from it.

:class:`GenRewardWrapper` wraps one env whose observations are (or whose ``render()`` gives) RGB
frames, keeps the episode's frames and actions, and adds a :class:`RewardModel`'s reward in
``step()``. It pays every term at the transitions where :meth:`RewardModel.episode` pays it and
with the same value, so an agent trained through the wrapper sees the rewards the project's own
trainer (``genreward/agents/online.py``) stores, computed while the episode runs instead of after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from genreward.rewards.base import RewardInputError
from genreward.rewards.combine import RewardModel, weighted_terms
from genreward.rewards.terms import NextFrameScores, TransitionScores, WindowScores

# Bases whose score of transition t reads only s_0 .. s_{t+1} and a_t (genreward/rewards/terms.py).
CAUSAL_BASES = (WindowScores, TransitionScores, NextFrameScores)
Layout = Literal["auto", "chw", "hwc"]


class _Growing:
    """An array that grows along its first axis (capacity doubled when full); ``view()`` is the filled part."""

    def __init__(self, shape: tuple[int, ...], dtype, capacity: int):
        self.data, self.n = np.zeros((capacity, *shape), dtype), 0

    def append(self, x) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n] = x
        self.n += 1

    def view(self) -> np.ndarray:
        return self.data[: self.n]


class GenRewardWrapper(gym.Wrapper):
    """Adds ``model``'s reward to a single env's reward, transition by transition.

    **Frames.** One RGB frame per observation, uint8. With ``source="obs"`` it is read from the
    observation: ``obs[frame_key]`` when the observation is a dict (the project's pixel env,
    ``genreward/envs/metaworld_env.py``: ``{"pixels": uint8 [3k, H, W], "state": ...}``), else the
    observation itself. With ``source="render"`` it is ``env.render()`` (an env made with
    ``render_mode="rgb_array"``; note that the project's env renders again for that, so prefer
    ``"obs"`` there). A frame is channels-first ``[3k, H, W]`` or channels-last ``[H, W, 3k]``
    (``layout``; ``"auto"``: the first or last axis whose size is a multiple of 3, the smaller one
    when both are; set it where that guesses wrong, e.g. for frames of 6 pixels); of a
    stack of k frames the newest, the last 3 channels, is the frame, as in the project's trainer.
    The frame of the observation ``reset()`` returns is s_0; ``step(a_t)`` records a_t and the new
    frame s_{t+1}, and transition t (s_t, a_t -> s_{t+1}) is rewarded. The terms expect frames
    of the size they were built for (``env.image_size`` of the config); the wrapper does not resize.

    **Reward.** ``r_t = env_weight·r_env_t + Σ_term [t paid]·weight_term·x_term_t``, the formula of
    :meth:`RewardModel.combine`. A term is paid at transition t when :meth:`RewardModel.paid_mask`
    says so: every step for a ``"step"`` term, at (t+1) % ``rewards.interval`` == 0 for an
    ``"interval"`` term (the video term scores the window of ``rewards.window`` frames ending at
    s_{t+1}). Termination and truncation change nothing: an episode whose length is not a
    multiple of Δt leaves its last, partial interval unpaid, as :meth:`RewardModel.episode` does.
    Only terms that read nothing after s_{t+1} can be paid while the episode runs (those built
    on ``WindowScores``, ``TransitionScores`` or ``NextFrameScores``); a model with another term
    (``tadpole`` scores a transition from a clip that runs past it) is refused: reward such
    episodes afterwards with :meth:`RewardModel.episode` or :meth:`RewardModel.relabel`.

    **Normalisation** (``rewards.normalize``). :meth:`RewardModel.episode` z-scores an episode's
    terms with running statistics that already include that episode. The wrapper cannot see the
    rest of the episode, so it z-scores with the statistics of the episodes before, and when an
    episode ends (terminated or truncated) adds its paid terms to ``model.stats`` exactly as
    :meth:`RewardModel.combine` does (``update_stats=False``: the statistics stay as they are,
    e.g. restored from a run's ``run.json``). So each step's reward equals
    ``model.episode(frames, actions, env_rewards, update_stats=False).total[t]`` under the
    statistics the episode started with, and after it ``model.stats`` are what
    ``model.episode(..., update_stats=True)`` would have left. Without normalisation the rewards
    equal ``model.episode(...).total``. An episode cut short by ``reset()`` leaves the statistics
    alone. Neural terms (VAE, FB model) scoring one window or frame at a time may differ from a
    batched :meth:`RewardModel.episode` by float32 rounding only.

    **Info.** Every ``step`` adds ``info["genreward"]``: ``reward`` (the total returned, float),
    ``env_reward`` (the wrapped env's reward), ``terms`` ({term: raw value, unweighted and
    unnormalised, 0.0 where not paid}, as in ``EpisodeReward.terms``), ``paid`` ({term: bool})
    and ``step`` (the transition index t). The observation is passed on unchanged. ``buffered()``
    gives the episode so far (frames, actions, env rewards), e.g. to store or relabel it.

    **Vector envs.** The wrapper wraps a single env. For a vector env wrap each sub-env in its
    factory, gymnasium's usual pattern: ``SyncVectorEnv([lambda: GenRewardWrapper(make(), model), ...])``
    (with ``AsyncVectorEnv`` each worker builds its own model in the factory). Sub-envs that share
    one model share its running statistics.
    """

    def __init__(
        self,
        env: gym.Env,
        model: RewardModel,
        *,
        source: Literal["obs", "render"] = "obs",
        frame_key: str = "pixels",
        layout: Layout = "auto",
        update_stats: bool = True,
        capacity: int = 256,
    ):
        super().__init__(env)
        if source not in ("obs", "render"):
            raise ValueError(f"source {source!r}: choose obs or render")
        if layout not in ("auto", "chw", "hwc"):
            raise ValueError(f"layout {layout!r}: choose auto, chw or hwc")
        for name in model.terms:
            if not isinstance(model.term(name), CAUSAL_BASES):
                raise ValueError(
                    f"the {name} term of method {model.method!r} is not built on WindowScores, TransitionScores "
                    "or NextFrameScores, so it may read frames after a transition and cannot be paid step by "
                    "step; reward whole episodes with RewardModel.episode / RewardModel.relabel instead"
                )
        self.model, self.source, self.frame_key, self.layout = model, source, frame_key, layout
        self.update_stats, self.capacity = update_stats, max(int(capacity), 2)
        self._frames: _Growing | None = None  # s_0 .. s_t, uint8 [t+1, 3, H, W]
        self._actions: _Growing | None = None  # a_0 .. a_{t-1}, float32 [t, A]
        self._env_reward: list[float] = []
        self._raw: dict[str, list[float]] = {}
        self._masks: dict[str, np.ndarray] = {}  # paid_mask of each term, extended as the episode grows
        self._over = True

    # -- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        frame = self._frame(obs)
        self._frames = _Growing(frame.shape, np.uint8, self.capacity)
        self._frames.append(frame)
        self._actions = None
        self._env_reward = []
        self._raw = {name: [] for name in self.model.terms}
        self._over = False
        return obs, info

    def step(self, action):
        if self._over or self._frames is None:
            raise RuntimeError("GenRewardWrapper: the episode is over or was never started; call reset()")
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        a = np.asarray(action, np.float32).reshape(-1)
        if self._actions is None:
            self._actions = _Growing(a.shape, np.float32, self.capacity)
        frame = self._frame(obs)
        if frame.shape != self._frames.data.shape[1:]:
            raise RewardInputError(
                f"frame {list(frame.shape)} differs from the episode's {list(self._frames.data.shape[1:])}"
            )
        self._actions.append(a)
        self._frames.append(frame)
        self._env_reward.append(float(env_reward))
        t = self._actions.n - 1
        total, raw, paid = self._reward(t)
        info = dict(info)
        info["genreward"] = {
            "reward": total,
            "env_reward": float(env_reward),
            "terms": raw,
            "paid": paid,
            "step": t,
        }
        self._over = bool(terminated or truncated)
        if self._over and self.update_stats:
            self._update_stats()
        return obs, total, terminated, truncated, info

    # -- the episode so far --------------------------------------------------------------
    def buffered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the episode so far: frames uint8 [t+1, 3, H, W], actions float32 [t, A] and
        the env's rewards float32 [t] (the arguments of :meth:`RewardModel.episode`)."""
        if self._frames is None:
            raise RuntimeError("GenRewardWrapper: no episode yet; call reset()")
        frames = self._frames.view().copy()
        if self._actions is None:
            actions = np.zeros((0, 0), np.float32)
        else:
            actions = self._actions.view().copy()
        return frames, actions, np.asarray(self._env_reward, np.float32)

    # -- internals -----------------------------------------------------------------------
    def _frame(self, obs) -> np.ndarray:
        """The newest RGB frame of an observation (or of ``render()``) as uint8 [3, H, W]."""
        if self.source == "render":
            x, what = self.env.render(), "env.render()"
        elif isinstance(obs, Mapping):
            if self.frame_key not in obs:
                raise RewardInputError(f"observation has no {self.frame_key!r} (keys: {list(obs)}); set frame_key")
            x, what = obs[self.frame_key], f"obs[{self.frame_key!r}]"
        else:
            x, what = obs, "the observation"
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.ndim != 3:
            raise RewardInputError(
                f"{what}: expected a uint8 RGB frame [3k, H, W] or [H, W, 3k], got {x.dtype} {list(x.shape)}"
            )
        layout = self.layout
        if layout == "auto":
            first, last = x.shape[0] % 3 == 0, x.shape[-1] % 3 == 0
            if first and last and x.shape[0] == x.shape[-1]:
                raise RewardInputError(f"{what} {list(x.shape)}: channels first or last? set layout='chw' or 'hwc'")
            layout = "chw" if first and (not last or x.shape[0] < x.shape[-1]) else "hwc"
        channels = x.shape[0] if layout == "chw" else x.shape[-1]
        if channels % 3:
            raise RewardInputError(f"{what} {list(x.shape)} ({layout}): {channels} channels are not RGB frames")
        return x[-3:] if layout == "chw" else x[..., -3:].transpose(2, 0, 1)

    def _paid(self, name: str, t: int) -> bool:
        """``model.paid_mask(name, length)[t]`` (the model's rule), the mask computed for a length
        past t and grown with the episode; a transition's schedule does not depend on what follows it."""
        mask = self._masks.get(name)
        if mask is None or len(mask) <= t:
            mask = self._masks[name] = self.model.paid_mask(name, max(2 * (t + 1), self.capacity))
        return bool(mask[t])

    def _reward(self, t: int) -> tuple[float, dict[str, float], dict[str, bool]]:
        """Transition t's total and each term's raw value, the model's terms scored on the episode's
        frames s_0 .. s_{t+1} and actions a_0 .. a_t at ``paid_steps=[t]``."""
        model = self.model
        frames, actions = self._frames.view(), self._actions.view()
        raw, masks = {}, {}
        for name in model.terms:
            masks[name] = np.array([self._paid(name, t)])
            value = np.float32(0)
            if masks[name][0]:
                scores = np.asarray(model.term(name).scores(frames, actions, np.array([t]), model.cfg.window))
                if scores.shape != (t + 1,):
                    raise RewardInputError(f"the {name} term scored {list(scores.shape)}, expected [{t + 1}]")
                value = np.float32(scores[t])
            raw[name] = np.array([value], np.float32)
            self._raw[name].append(float(value))
        env = np.asarray([self._env_reward[t]], np.float32)
        cfg = model.cfg
        total = weighted_terms(model.terms, raw, cfg, model.stats, masks, start=cfg.env_weight * env)
        if not np.isfinite(total).all():
            raise FloatingPointError(
                f"{model.method}: non-finite reward at step {t} "
                f"(terms: { {k: bool(np.isfinite(v).all()) for k, v in raw.items()} })"
            )
        return (
            float(np.float32(total[0])),
            {k: float(v[0]) for k, v in raw.items()},
            {k: bool(m[0]) for k, m in masks.items()},
        )

    def _update_stats(self) -> None:
        """Add the finished episode's paid terms to the model's running statistics (through
        :meth:`RewardModel.combine`, the one place that does it)."""
        raw = {name: np.asarray(v, np.float32) for name, v in self._raw.items()}
        self.model.combine(raw, np.asarray(self._env_reward, np.float32), update_stats=True)
