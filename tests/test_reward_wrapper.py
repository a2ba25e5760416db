"""GenRewardWrapper: the reward model paid transition by transition inside a gymnasium env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from genreward.rewards import GenRewardWrapper
from genreward.rewards.combine import RewardModel
from genreward.rewards.config import RewardConfig
from tests.test_rewards import StubClip, StubFrame, StubVideo

SIZE, STACK, A = 8, 3, 4


def _episode(seed: int, length: int, size: int = SIZE):
    """A recorded episode from a seeded generator: frames uint8 [L+1, 3, H, W] (pixel [0, 0, 0] =
    frame index, so the stub terms' values are checkable), actions [L, A], env rewards [L]."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length + 1, 3, size, size), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(length + 1)
    actions = rng.uniform(-1, 1, (length, A)).astype(np.float32)
    env_r = rng.uniform(0, 1, length).astype(np.float32)
    return frames, actions, env_r


class ReplayEnv(gym.Env):
    """Replays recorded episodes (one per reset, in turn) like the project's pixel env: a dict
    ``{"pixels": uint8 [3·stack, H, W] (oldest frame first), "state"}``, or (``hwc``) the bare
    newest frame [H, W, 3]; ``render()`` gives the newest frame [H, W, 3]. Truncates at the
    episode's end and ignores the actions."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, episodes, hwc: bool = False):
        self.episodes, self.hwc, self.k, self.t = episodes, hwc, -1, 0
        shape = episodes[0][0].shape[1:]
        if hwc:
            self.observation_space = gym.spaces.Box(0, 255, (shape[1], shape[2], 3), np.uint8)
        else:
            self.observation_space = gym.spaces.Dict(
                {
                    "pixels": gym.spaces.Box(0, 255, (3 * STACK, *shape[1:]), np.uint8),
                    "state": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32),
                }
            )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)

    def _obs(self):
        frames = self.episodes[self.k][0]
        if self.hwc:
            return frames[self.t].transpose(1, 2, 0).copy()
        stack = [frames[max(self.t - i, 0)] for i in reversed(range(STACK))]
        return {"pixels": np.concatenate(stack), "state": np.array([self.t], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = (self.k + 1) % len(self.episodes), 0
        return self._obs(), {}

    def step(self, action):
        env_r = self.episodes[self.k][2]
        r = float(env_r[self.t])
        self.t += 1
        return self._obs(), r, False, self.t == len(env_r), {"success": False}

    def render(self):
        return self.episodes[self.k][0][self.t].transpose(1, 2, 0).copy()


def _model(method="genreward", **kw) -> RewardModel:
    cfg = RewardConfig(**{"alpha": 0.5, "beta": 2.0, "interval": 8, "window": 4, "normalize": False, **kw})
    return RewardModel(method, cfg, {"video": StubVideo(), "frame": StubFrame(), "clip": StubClip()})


def _play(env: gym.Env, actions: np.ndarray):
    """One episode through ``env`` with the recorded actions: rewards [L], infos, observations."""
    obs, _ = env.reset()
    rewards, infos, observations = [], [], [obs]
    for t, a in enumerate(actions):
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        infos.append(info)
        observations.append(obs)
        assert (term or trunc) == (t == len(actions) - 1)
    return np.asarray(rewards, np.float32), infos, observations


def test_per_step_rewards_equal_the_whole_episode_computation():
    # 21 transitions, Δt = 8: the video and frame terms are paid at t = 7 and 15 (2 intervals);
    # t = 16..20, a partial interval, is not paid, at truncation either.
    L = 21
    episode = _episode(0, L)
    frames, actions, env_r = episode
    for method, kw in [
        ("genreward", {}),
        ("genreward", {"frame_per_step": True}),
        ("video_only", {"window": 64}),  # windows reaching before s_0 (padded with it)
        ("clip_reward", {}),
        ("env_only", {"env_weight": 0.3}),
    ]:
        model = _model(method, **kw)
        expected = model.episode(frames, actions, env_r)
        for inner, opts in [
            (ReplayEnv([episode]), {}),  # dict obs, a stack of 3 frames channels-first
            (ReplayEnv([episode], hwc=True), {}),  # the bare frame, channels-last
            (ReplayEnv([episode]), {"source": "render"}),
        ]:
            rewards, infos, _ = _play(GenRewardWrapper(inner, model, **opts), actions)
            np.testing.assert_array_equal(rewards, expected.total, err_msg=f"{method} {kw} {opts}")
            for name, values in expected.terms.items():
                np.testing.assert_array_equal([i["genreward"]["terms"][name] for i in infos], values)
    # The numbers: at t = 7 the video window ends at frame 8 (4 frames: 8 + 0.04), the frame term is
    # 10·7 + a_7[0]; nothing is paid between the intervals nor after the last one.
    model = _model()
    rewards, infos, _ = _play(GenRewardWrapper(ReplayEnv([episode]), model), actions)
    paid = [7, 15]
    assert [t for t in range(L) if infos[t]["genreward"]["paid"]["video"]] == paid
    np.testing.assert_allclose(
        rewards[paid],
        env_r[paid] + 0.5 * (np.array(paid) + 1 + 0.04) + 2.0 * (10 * np.array(paid) + actions[paid, 0]),
        rtol=1e-6,
    )
    unpaid = np.setdiff1d(np.arange(L), paid)
    np.testing.assert_array_equal(rewards[unpaid], env_r[unpaid])
    assert rewards[15] > 300  # 0.5·16.04 + 2·(150 + a) + env_r: a real term, not the env reward


def test_normalised_rewards_use_the_statistics_of_the_episodes_before():
    L = 13
    episodes = [_episode(seed, L) for seed in range(3)]
    kw = {"normalize": True, "interval": 4, "window": 3, "frame_per_step": True}
    model, twin = _model(**kw), _model(**kw)
    env = GenRewardWrapper(ReplayEnv(episodes), model)
    for k, (frames, actions, env_r) in enumerate(episodes):
        expected = twin.episode(frames, actions, env_r, update_stats=False).total  # stats before the episode
        rewards, _, _ = _play(env, actions)
        np.testing.assert_array_equal(rewards, expected)
        twin.episode(frames, actions, env_r)  # the trainer's update: the episode's paid terms
        for name in model.terms:
            assert model.stats[name].state() == twin.stats[name].state()
    # Real numbers: the frame term (~10·t, every step) after 3 episodes of 13 steps; the video term
    # paid 3 times per episode. The third episode's rewards were z-scored, so they are O(1).
    assert model.stats["frame"].n == 39 and model.stats["video"].n == 9
    assert model.stats["frame"].mean == pytest.approx(60.0, abs=1.0)
    assert np.abs(rewards - episodes[2][2]).max() < 5
    # Frozen statistics (update_stats=False) stay as they are.
    before = {name: s.state() for name, s in model.stats.items()}
    _play(GenRewardWrapper(ReplayEnv(episodes[:1]), model, update_stats=False), episodes[0][1])
    assert {name: s.state() for name, s in model.stats.items()} == before


def test_reset_clears_the_buffer():
    L = 19
    episodes = [_episode(seed, L) for seed in (1, 2)]
    model = _model(frame_per_step=True)
    env = GenRewardWrapper(ReplayEnv(episodes), model)
    run = [_play(env, ep[1])[0] for ep in episodes]  # two episodes in a row through one wrapper
    fresh = [_play(GenRewardWrapper(ReplayEnv([ep]), model), ep[1])[0] for ep in episodes]
    for a, b, ep in zip(run, fresh, episodes):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, model.episode(*ep).total)
    assert not np.array_equal(run[0], run[1])
    # What the wrapper holds after an episode: exactly that episode; after reset, only s_0.
    frames, actions, env_r = env.buffered()
    np.testing.assert_array_equal(frames, episodes[1][0])
    np.testing.assert_array_equal(actions, episodes[1][1])
    np.testing.assert_array_equal(env_r, episodes[1][2])
    env.reset()
    frames, actions, env_r = env.buffered()
    assert frames.shape == (1, 3, SIZE, SIZE) and len(actions) == 0 and len(env_r) == 0
    # An episode cut short by reset() leaves nothing behind either.
    for a in episodes[0][1][:11]:
        env.step(a)
    np.testing.assert_array_equal(_play(env, episodes[1][1])[0], fresh[1])
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(episodes[0][1][0])


def test_info_carries_the_raw_terms_and_the_env_reward_and_obs_is_unchanged():
    L = 17
    episode = _episode(3, L)
    frames, actions, env_r = episode
    rewards, infos, observations = _play(GenRewardWrapper(ReplayEnv([episode]), _model()), actions)
    _, _, plain = _play(ReplayEnv([episode]), actions)
    for o, p in zip(observations, plain):
        np.testing.assert_array_equal(o["pixels"], p["pixels"])
        np.testing.assert_array_equal(o["state"], p["state"])
    g = infos[7]["genreward"]
    assert g["step"] == 7 and g["paid"] == {"video": True, "frame": True}
    assert g["env_reward"] == pytest.approx(float(env_r[7]))
    assert g["terms"]["video"] == pytest.approx(8.04, rel=1e-6)  # window of 4 ending at frame 8
    assert g["terms"]["frame"] == pytest.approx(70 + float(actions[7, 0]), rel=1e-6)
    assert g["reward"] == rewards[7] == pytest.approx(float(env_r[7]) + 0.5 * 8.04 + 2.0 * g["terms"]["frame"])
    g = infos[8]["genreward"]
    assert g["terms"] == {"video": 0.0, "frame": 0.0} and g["paid"] == {"video": False, "frame": False}
    assert g["reward"] == pytest.approx(float(env_r[8])) and g["env_reward"] == pytest.approx(float(env_r[8]))
    assert infos[8]["success"] is False  # the wrapped env's info is kept


def test_vector_env_wraps_each_sub_env():
    L = 10
    episodes = [_episode(seed, L) for seed in (4, 5)]
    model = _model(interval=5, window=3)
    envs = gym.vector.SyncVectorEnv([lambda ep=ep: GenRewardWrapper(ReplayEnv([ep]), model) for ep in episodes])
    envs.reset()
    actions = np.stack([ep[1] for ep in episodes], axis=1)  # [L, 2, A]
    rewards = np.stack([envs.step(a)[1] for a in actions], axis=1)  # [2, L]
    for r, ep in zip(rewards, episodes):
        np.testing.assert_array_equal(r.astype(np.float32), model.episode(*ep).total)
    envs.close()


def test_what_cannot_be_paid_step_by_step_is_refused():
    class Chunk:  # scores a transition from frames after it (like the tadpole term)
        name = "tadpole"

        def scores(self, frames, actions, paid_steps, window):
            return np.zeros(len(actions), np.float32)

    model = RewardModel("tadpole", RewardConfig(), {"tadpole": Chunk()})
    with pytest.raises(ValueError, match="tadpole term .* cannot be paid step by step"):
        GenRewardWrapper(ReplayEnv([_episode(0, 4)]), model)
    env = GenRewardWrapper(ReplayEnv([_episode(0, 4)], hwc=True), _model(), layout="chw")
    with pytest.raises(ValueError, match="not RGB frames"):
        env.reset()


def test_real_video_and_frame_terms_step_by_step():
    """The default video term (progress along the goal video, reset baseline) on a random VAE and
    an FB model's frame term: per step they agree with the batched episode to float32 rounding."""
    import torch

    from genreward.agents.config import FBConfig
    from genreward.agents.fb import FBModel
    from genreward.rewards.terms import FrameReward, VideoReward
    from genreward.video.config import LatentConfig
    from genreward.video.latents import VideoLatentEncoder

    torch.manual_seed(0)
    enc = VideoLatentEncoder.from_config(LatentConfig(vae="random", size=16, num_frames=8))
    L, size = 11, 16
    frames, actions, env_r = _episode(6, L, size)
    goal = np.random.default_rng(7).integers(0, 256, (6, 3, size, size), dtype=np.uint8)
    fb = FBModel((3, size, size), A, FBConfig(z_dim=8, hidden_dim=32, feature_dim=16, batch_size=8))
    cfg = RewardConfig(interval=3, window=4, normalize=False, frame_per_step=True)
    videos = {
        "progress": VideoReward(enc, goal_frames=goal, baseline="reset", score="progress"),
        "cosine": VideoReward(enc, enc.encode(goal.transpose(0, 2, 3, 1)), goal[0], baseline="reset"),
    }
    for score, video in videos.items():
        model = RewardModel("genreward", cfg, {"video": video, "frame": FrameReward(fb, goal[-1])})
        expected = model.episode(frames, actions, env_r)
        rewards, infos, _ = _play(GenRewardWrapper(ReplayEnv([(frames, actions, env_r)]), model), actions)
        np.testing.assert_allclose(rewards, expected.total, rtol=1e-5, atol=1e-5, err_msg=score)
        for name in ("video", "frame"):
            got = np.array([i["genreward"]["terms"][name] for i in infos])
            np.testing.assert_allclose(got, expected.terms[name], rtol=1e-5, atol=1e-5, err_msg=f"{score} {name}")
        assert np.count_nonzero(expected.terms["video"]) == 3 and np.abs(expected.terms["frame"]).min() > 0
