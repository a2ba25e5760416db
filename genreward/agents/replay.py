"""In-memory replay for the RL agents: a transition buffer while collecting, episode replay online.

Both store episodes in the row layout of the on-disk episode dataset
(:mod:`genreward.store.episodes`: one row per observation, frames stored once) and rebuild frame
stacks with its :func:`~genreward.store.episodes.stack_frames`, so a batch from memory and a
batch from disk are the same thing.
"""

from __future__ import annotations

import numpy as np

from genreward.store.episodes import Episode, episode_start_rows, sample_transitions, stack_frames


class TransitionBuffer:
    """Preallocated in-memory episode storage with the dataset's sampling (used while collecting)."""

    def __init__(self, capacity_rows: int, frame_shape: tuple[int, ...], state_dim: int, action_dim: int):
        self.obs = np.zeros((capacity_rows, *frame_shape), np.uint8)
        self.state = np.zeros((capacity_rows, state_dim), np.float32)
        self.action = np.zeros((capacity_rows, action_dim), np.float32)
        self.valid = np.zeros(capacity_rows, bool)
        self.episode_start = np.zeros(capacity_rows, bool)
        self.n = 0

    def add(self, episode: Episode) -> None:
        rows = episode.rows(0)
        k = len(rows["obs"])
        if self.n + k > len(self.obs):
            raise ValueError(f"buffer full ({len(self.obs)} rows)")
        for name in ("obs", "state", "action", "valid", "episode_start"):
            getattr(self, name)[self.n : self.n + k] = rows[name]
        self.n += k

    def sample(self, batch_size: int, rng: np.random.Generator, frame_stack: int = 3) -> dict[str, np.ndarray]:
        start_row = episode_start_rows(self.episode_start[: self.n])
        valid_index = np.flatnonzero(self.valid[: self.n])
        return sample_transitions(
            lambda name, r: getattr(self, name)[r], start_row, valid_index, batch_size, rng, frame_stack
        )


class EpisodeReplay:
    """Online replay of fixed-length episodes (Meta-World truncates every episode at L steps).

    Slot ``i`` holds one whole episode: frames ``obs[i]`` uint8 [L+1, 3, H, W] (stored once;
    frame stacks are rebuilt when sampling), ``action[i]`` [L, A], the env's dense reward
    ``env_reward[i]`` [L] and the learning reward ``reward[i]`` [L]. Keeping the frames and the
    env reward lets a reward model relabel the buffer. When full, the oldest episode is replaced.
    Sampling gives n-step returns, truncated at the episode end with the matching discount
    (time-limit truncation, so the last state is bootstrapped).
    """

    def __init__(self, capacity_episodes: int, length: int, frame_shape: tuple[int, int, int], action_dim: int):
        if capacity_episodes < 1 or length < 1:
            raise ValueError("replay needs capacity_episodes >= 1 and length >= 1")
        self.length = length
        self.obs = np.zeros((capacity_episodes, length + 1, *frame_shape), np.uint8)
        self.action = np.zeros((capacity_episodes, length, action_dim), np.float32)
        self.env_reward = np.zeros((capacity_episodes, length), np.float32)
        self.reward = np.zeros((capacity_episodes, length), np.float32)
        self.size, self.next_slot, self.added = 0, 0, 0
        # Flat row view for stack_frames: row = slot * (L+1) + t; each row's episode starts at its slot's row 0.
        self._start_row = np.repeat(np.arange(capacity_episodes) * (length + 1), length + 1)

    @property
    def capacity(self) -> int:
        return len(self.obs)

    def add(self, obs: np.ndarray, action: np.ndarray, env_reward: np.ndarray, reward: np.ndarray) -> int:
        if obs.shape != self.obs.shape[1:] or action.shape != self.action.shape[1:]:
            raise ValueError(
                f"episode shapes obs {list(obs.shape)} / action {list(action.shape)} do not match the replay's "
                f"{list(self.obs.shape[1:])} / {list(self.action.shape[1:])}"
            )
        i = self.next_slot
        self.obs[i], self.action[i], self.env_reward[i], self.reward[i] = obs, action, env_reward, reward
        self.next_slot = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1
        return i

    def stacked(self, ep: np.ndarray, t: np.ndarray, frame_stack: int) -> np.ndarray:
        flat = self.obs.reshape(-1, *self.obs.shape[2:])
        return stack_frames(lambda r: flat[r], self._start_row, ep * (self.length + 1) + t, frame_stack)

    def sample(
        self, batch_size: int, rng: np.random.Generator, frame_stack: int = 3, n_step: int = 1, discount: float = 0.99
    ) -> dict[str, np.ndarray]:
        if self.size == 0:
            raise ValueError("replay is empty")
        ep = rng.integers(0, self.size, batch_size)
        t = rng.integers(0, self.length, batch_size)
        n = np.minimum(n_step, self.length - t)
        k = np.arange(n_step)[None, :]
        steps = np.minimum(t[:, None] + k, self.length - 1)
        ret = (self.reward[ep[:, None], steps] * (discount**k) * (k < n[:, None])).sum(1)
        return {
            "obs": self.stacked(ep, t, frame_stack),
            "action": self.action[ep, t],
            "reward": ret.astype(np.float32),
            "discount": (discount**n).astype(np.float32),
            "next_obs": self.stacked(ep, t + n, frame_stack),
        }
