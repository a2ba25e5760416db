"""Reward terms, their combination, replay relabelling, and the online trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genreward.agents.replay import EpisodeReplay
from genreward.rewards.base import TermSpec
from genreward.rewards.combine import RewardModel, RunningStats
from genreward.rewards.config import METHODS, TERMS, RewardConfig
from genreward.rewards.terms import (
    NextFrameScores,
    RewardInputError,
    TransitionScores,
    WindowScores,
    window_frames,
)

L = 16  # steps per test episode


def _episode(seed: int, length: int = L, size: int = 8):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length + 1, 3, size, size), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(length + 1)  # frame index, readable after stacking
    actions = rng.uniform(-1, 1, (length, 4)).astype(np.float32)
    env_r = rng.uniform(0, 1, length).astype(np.float32)
    return frames, actions, env_r


class StubVideo(WindowScores):
    """Window reward = index of the window's last frame + window length / 100 (checkable)."""

    def windows(self, windows):
        return np.array([w[-1, 0, 0, 0] + len(w) / 100 for w in windows], np.float32)


class StubFrame(TransitionScores):
    """Frame reward = 10 × frame index + the action's first component."""

    def steps(self, frames, actions):
        return (10.0 * frames[:, 0, 0, 0] + actions[:, 0]).astype(np.float32)

    def identity(self):
        return {"stub": "frame"}


class StubClip(NextFrameScores):
    """Clip reward = mean brightness of s_{t+1} in [0, 1]."""

    def steps(self, frames):
        return (frames.reshape(len(frames), -1).mean(1) / 255).astype(np.float32)


def _model(method="genreward", **kw):
    cfg = RewardConfig(**{"alpha": 1.0, "beta": 1.0, "interval": 8, "window": 4, "normalize": False, **kw})
    return RewardModel(method, cfg, {"video": StubVideo(), "frame": StubFrame()})


def test_interval_rewards_are_paid_at_the_right_steps_with_the_right_windows():
    frames, actions, env_r = _episode(0)
    er = _model().episode(frames, actions, env_r)
    paid = np.array([7, 15])  # (t+1) % 8 == 0
    # Video: the window ends at s_{t+1} (frame t+1) and holds `window` frames.
    np.testing.assert_allclose(er.terms["video"][paid], paid + 1 + 0.04, rtol=1e-6)
    np.testing.assert_allclose(er.terms["frame"][paid], 10 * paid + actions[paid, 0], rtol=1e-6)
    others = np.setdiff1d(np.arange(L), paid)
    assert not er.terms["video"][others].any() and not er.terms["frame"][others].any()
    np.testing.assert_allclose(er.total, env_r + er.terms["video"] + er.terms["frame"], rtol=1e-6)
    # A window reaching before the episode start is padded with the reset frame, never wraps around.
    short = _model(window=64).episode(frames, actions, env_r)
    np.testing.assert_allclose(short.terms["video"][7], 8 + 0.64, rtol=1e-6)
    padded = window_frames(frames, 7, 64)
    assert (
        len(padded) == 64 and (padded[:56, 0, 0, 0] == 0).all() and padded[56:, 0, 0, 0].tolist() == list(range(1, 9))
    )


def test_weights_env_weight_per_step_and_methods():
    frames, actions, env_r = _episode(1)
    raw = _model().raw_terms(frames, actions)
    m = _model(alpha=0.01, beta=1e-5)
    np.testing.assert_allclose(m.combine(raw, env_r), env_r + 0.01 * raw["video"] + 1e-5 * raw["frame"], rtol=1e-6)
    no_env = _model(env_weight=0.0).episode(frames, actions, env_r)
    np.testing.assert_allclose(no_env.total, no_env.terms["video"] + no_env.terms["frame"], rtol=1e-6)
    per_step = _model(frame_per_step=True).episode(frames, actions, env_r)
    np.testing.assert_allclose(per_step.terms["frame"], 10 * np.arange(L) + actions[:, 0], rtol=1e-6)
    np.testing.assert_allclose(_model("env_only").episode(frames, actions, env_r).total, env_r)
    assert set(_model("video_only").episode(frames, actions, env_r).terms) == {"video"}
    with pytest.raises(ValueError, match="needs the clip reward model"):
        RewardModel("clip_reward", RewardConfig())
    with pytest.raises(ValueError, match="unknown method"):
        RewardModel("genreward_v2", RewardConfig())
    with pytest.raises(RewardInputError, match="needs 17 frames"):
        _model().episode(frames[:-1], actions, env_r)


def test_running_normalisation_z_scores_only_paid_steps():
    stats = RunningStats()
    xs = np.random.default_rng(0).normal(5.0, 3.0, 10_000)
    for chunk in np.array_split(xs, 37):
        stats.update(chunk)
    assert stats.mean == pytest.approx(xs.mean(), abs=1e-9) and stats.std == pytest.approx(xs.std(), rel=1e-9)
    m = _model(normalize=True)
    for seed in range(20):
        er = m.episode(*_episode(seed))
    frames, actions, env_r = _episode(99)
    er = m.episode(frames, actions, env_r, update_stats=False)
    gen = er.total - env_r
    assert not gen[np.setdiff1d(np.arange(L), [7, 15])].any()  # nothing paid between intervals
    # Frame rewards are ~70 and ~150 raw; normalised they are O(1).
    assert np.abs(gen[[7, 15]]).max() < 5 and m.stats["frame"].n == 40


def test_the_term_loop_gives_the_totals_of_the_per_term_implementation():
    # Totals of the 5th of 5 episodes (stats updated on all five), computed by the RewardModel
    # before terms became plug-ins (one branch per term in raw_terms/paid_mask/combine).
    old = {
        ("genreward", False): [
            0.8958324193954468, 0.3752502501010895, 0.578471302986145, -0.5114040374755859,
            0.42182108759880066, 0.8076625466346741, 0.032837338745594025, 1.3233420848846436,
        ],
        ("genreward", True): [
            -0.20078599452972412, -0.3738035261631012, 0.1457429826259613, 0.026045754551887512,
            0.5610108375549316, 1.2506425380706787, 0.7862445712089539, 1.6982790231704712,
        ],
        ("clip_reward", False): [
            0.8043506145477295, -0.023478686809539795, 1.0346007347106934, 0.7995796799659729,
            -0.5793845653533936, 1.2559542655944824, 0.18798992037773132, 1.4709229469299316,
        ],
    }  # fmt: skip
    kw = dict(alpha=0.3, beta=0.7, clip_weight=0.5, env_weight=0.9, interval=4, window=3, normalize=True)
    for (method, per_step), expected in old.items():
        cfg = RewardConfig(**kw, frame_per_step=per_step)
        m = RewardModel(method, cfg, {"video": StubVideo(), "frame": StubFrame(), "clip": StubClip()})
        for seed in range(5):
            er = m.episode(*_episode(seed, length=8))
        np.testing.assert_array_equal(er.total, np.array(expected, np.float32))
    assert m.stats["clip"].state() == {"n": 40, "mean": 0.4975097045302391, "m2": 0.01527903186807746}


class Brightness(NextFrameScores):
    """A toy term: the mean brightness of s_{t+1} in [0, 1], built from nothing."""

    name = "brightness"

    @classmethod
    def build(cls, cfg, task, inputs, device):
        return cls(), {"brightness": f"{task}@{device}"}

    def identity(self):
        return {"scale": 255}

    def steps(self, frames):
        return frames.reshape(len(frames), -1).mean(1) / 255


class BrightnessConfig(RewardConfig):
    brightness_weight: float = 1.0
    brightness_per_step: bool = False


@pytest.fixture
def brightness(monkeypatch):
    """The toy term registered (weight knob brightness_weight) with a method using it."""
    monkeypatch.setitem(
        TERMS, "brightness", TermSpec(Brightness.build, weight="brightness_weight", per_step="brightness_per_step")
    )
    monkeypatch.setitem(METHODS, "bright", ("frame", "brightness"))
    term, hashes = TERMS["brightness"].builder()(None, "reach-v3", {}, "cpu")
    assert isinstance(term, Brightness) and hashes == {"brightness": "reach-v3@cpu"}
    return term


def test_a_term_registered_in_a_test_is_paid_on_its_schedule_with_its_weight(brightness):
    frames, actions, env_r = _episode(0, length=8)
    frames[1:] = (10 * np.arange(1, 9, dtype=np.uint8))[:, None, None, None]  # s_k: every pixel 10·k
    light = np.array([0, 0, 0, 40, 0, 0, 0, 80], np.float32) / 255  # s_{t+1} at t = 3, 7 ((t+1) % 4 == 0)

    cfg = BrightnessConfig(interval=4, brightness_weight=2.0, beta=0.0, normalize=False)
    terms = {"frame": StubFrame(), "brightness": brightness}
    m = RewardModel("bright", cfg, terms)
    er = m.episode(frames, actions, env_r)
    assert m.terms == ("frame", "brightness") and m.term("brightness") is brightness
    np.testing.assert_allclose(er.terms["brightness"], light, rtol=1e-6)
    np.testing.assert_allclose(er.terms["frame"], np.where(light > 0, [0, 0, 0, 300, 0, 0, 0, 700] + actions[:, 0], 0))
    np.testing.assert_allclose(er.total, env_r + 2.0 * light, rtol=1e-6)  # beta = 0: the frame term adds nothing
    assert m.identity() == {"frame": {"stub": "frame"}, "brightness": {"scale": 255}}

    # Normalised: the two paid values (40/255, 80/255) z-score to -1 and +1, weighted by 2.
    m = RewardModel("bright", cfg.model_copy(update={"normalize": True}), terms)
    er = m.episode(frames, actions, env_r)
    np.testing.assert_allclose(er.total - env_r, [0, 0, 0, -2, 0, 0, 0, 2], atol=1e-5)
    assert m.stats["brightness"].n == 2 and m.stats["brightness"].mean == pytest.approx(60 / 255)

    # Its per-step knob pays it on every transition; the frame term stays on its interval.
    m = RewardModel("bright", cfg.model_copy(update={"brightness_per_step": True}), terms)
    er = m.episode(frames, actions, env_r)
    np.testing.assert_allclose(er.terms["brightness"], 10 * np.arange(1, 9) / 255, rtol=1e-6)
    np.testing.assert_allclose(er.total, env_r + 2.0 * 10 * np.arange(1, 9) / 255, rtol=1e-6)
    assert not er.terms["frame"][[0, 1, 2, 4, 5, 6]].any()


def test_method_names_have_one_source(brightness):
    from genreward.agents.config import RLConfig

    with pytest.raises(ValueError, match=r"methods\[1\]: unknown method 'genreward_v2'; choose one of") as e:
        RLConfig(methods=("genreward", "genreward_v2"))
    assert e.value.errors()[0]["msg"].split("choose one of ")[1] == ", ".join(METHODS)
    assert e.value.errors()[0]["msg"].endswith(", bright")  # the method registered by the fixture is valid at once
    assert RLConfig(methods=("bright", "env_only")).methods == ("bright", "env_only")


def test_registry_methods_use_registered_terms_weighted_by_rewards_knobs():
    assert {t for terms in METHODS.values() for t in terms} <= set(TERMS)
    for spec in TERMS.values():
        assert spec.weight in RewardConfig.model_fields and spec.per_step in (None, *RewardConfig.model_fields)
        assert callable(spec.builder())
    assert [TERMS[t].weight for t in ("video", "frame", "clip")] == ["alpha", "beta", "clip_weight"]


def test_n_step_sampling_truncates_at_the_episode_end():
    replay = EpisodeReplay(4, L, (3, 8, 8), 4)
    for seed in range(3):
        frames, actions, env_r = _episode(seed)
        frames[:, 1, 0, 0] = seed  # which episode a sample came from
        replay.add(frames, actions, env_r, np.arange(L, dtype=np.float32) + 100 * seed)
    b = replay.sample(4096, np.random.default_rng(0), frame_stack=3, n_step=3, discount=0.5)
    t = b["obs"][:, -3, 0, 0].astype(int)  # frame index of s_t (channel 0 of the newest frame)
    ep = b["obs"][:, -2, 0, 0].astype(int)
    n = np.minimum(3, L - t)
    expected = sum(np.where(k < n, 0.5**k * (t + k + 100 * ep), 0.0) for k in range(3))
    np.testing.assert_allclose(b["reward"], expected, rtol=1e-6)
    np.testing.assert_allclose(b["discount"], 0.5**n)
    assert np.all(b["next_obs"][:, -3, 0, 0] == t + n)  # s_{t+n}, never past the last frame
    assert np.all(b["obs"][:, 0, 0, 0] == np.maximum(t - 2, 0))  # stacks clamp at the episode start
    assert set(t.tolist()) == set(range(L)) and set(ep.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(b["action"], replay.action[ep, t])


def test_replay_relabelled_with_another_reward_model_matches_direct_computation():
    replay = EpisodeReplay(3, L, (3, 8, 8), 4)
    env_only = _model("env_only")
    episodes = [_episode(s) for s in range(5)]  # 5 episodes into 3 slots: the oldest two are replaced
    for frames, actions, env_r in episodes:
        replay.add(frames, actions, env_r, env_only.episode(frames, actions, env_r).total)
    np.testing.assert_allclose(replay.reward[: replay.size], replay.env_reward[: replay.size])
    genreward = _model("genreward")
    assert genreward.relabel(replay) == 3
    for slot, (frames, actions, env_r) in zip([2, 0, 1], episodes[2:]):
        np.testing.assert_array_equal(replay.obs[slot], frames)
        np.testing.assert_allclose(replay.reward[slot], genreward.episode(frames, actions, env_r).total)
        assert replay.reward[slot][7] != env_r[7]


def test_real_video_and_frame_terms():
    import torch

    from genreward.agents.config import FBConfig
    from genreward.agents.fb import FBModel
    from genreward.rewards.terms import FrameReward, VideoReward, to_agent_frame
    from genreward.store.hashing import hash_array
    from genreward.video.config import LatentConfig
    from genreward.video.latents import VideoLatentEncoder

    enc = VideoLatentEncoder.from_config(LatentConfig(vae="random", size=16, num_frames=8))
    rng = np.random.default_rng(0)
    goal = np.repeat(np.linspace(0, 255, 24).astype(np.uint8)[:, None, None, None], 16, 1).repeat(16, 2).repeat(3, 3)
    goal = (goal + rng.integers(0, 20, goal.shape)).astype(np.uint8)  # [T,H,W,3], brightening over time
    video = VideoReward(enc, enc.encode(goal))
    same = goal.transpose(0, 3, 1, 2)
    r = video.windows([same, same[::-1].copy(), rng.integers(0, 256, same.shape, dtype=np.uint8)])
    assert r[0] == pytest.approx(1.0, abs=1e-5) and r[1] < 0.999 and r[2] < r[0]
    with pytest.raises(RewardInputError, match=r"uint8 \[T, 3, H, W\]"):
        video.windows([goal])  # channels-last is rejected with a message

    torch.manual_seed(0)
    fb = FBModel((3, 16, 16), 4, FBConfig(z_dim=8, hidden_dim=32, feature_dim=16, batch_size=8))
    key = to_agent_frame(goal[-1], 16)
    assert key.shape == (3, 16, 16)
    frame = FrameReward(fb, key)
    obs = rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    act = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    np.testing.assert_allclose(frame.steps(obs, act), fb.frame_reward(obs, act, goal_frame=key), rtol=1e-5)
    with pytest.raises(RewardInputError, match="does not match the FB model's input"):
        FrameReward(fb, to_agent_frame(goal[-1], 32))
    with pytest.raises(RewardInputError, match=r"actions: expected \[5, 4\]"):
        frame.steps(obs, act[:, :2])
    # Their identities (recorded in run.json) name what determines the scores.
    ident = json.loads(json.dumps({"video": video.identity(), "frame": frame.identity()}))
    assert ident["video"]["encoder"]["vae"] == "random" and ident["frame"]["fb_config"]["z_dim"] == 8
    assert ident["video"]["goal_latent_sha256"] == hash_array(video.goal)
    assert ident["frame"]["goal_frame_sha256"] == hash_array(key)
    with torch.no_grad():
        next(fb.forward_net.parameters()).add_(1.0)  # other weights, another identity
    assert FrameReward(fb, key).identity()["fb_weights_sha256"] != ident["frame"]["fb_weights_sha256"]


def _tiny_rl(**kw):
    from genreward.agents.config import RLConfig
    from genreward.envs.config import EnvConfig

    drqv2 = {"update_every": 4, "batch_size": 8, "hidden_dim": 32, "feature_dim": 16, "std_steps": 100_000}
    rl = RLConfig(
        **{
            "tasks": ("reach-v3",),
            "steps": 96,
            "seed_steps": 32,
            "eval_every": 48,
            "eval_episodes": 2,
            "gif_episodes": 1,
            "drqv2": drqv2,
            **kw,
        }
    )
    return rl, EnvConfig(image_size=32, episode_length=32)


def _train(rl, env, model, agent_dir):
    from genreward.agents.online import train
    from genreward.agents.registry import RLRun

    return train(RLRun("reach-v3", 0, rl, env, model, "cpu", agent_dir))


def test_online_training_evaluates_checkpoints_and_times_the_reward(tmp_path):
    from genreward.agents.online import make_agent
    from genreward.training import load_checkpoint

    rl, env = _tiny_rl()
    res = _train(rl, env, _model("genreward", interval=16, window=8), tmp_path / "agent")
    assert [e["step"] for e in res.evals] == [0, 64, 96]  # evaluations at episode boundaries, and at the end
    assert all(len(e["returns"]) == 2 and e["return_mean"] > 0 for e in res.evals)
    assert len(res.train) == 3 and res.train[-1]["step"] == 96
    # Generated terms went into the learning reward: per episode, two interval payments.
    assert all(row["reward_return"] != pytest.approx(row["env_return"]) for row in res.train)
    assert res.gif_frames[0].shape == (33, 32, 32, 3)
    t = res.timing
    assert t["updates"] == (96 - 32) // 4 and t["reward_s"] > 0 and 0 < t["reward_share_of_step_and_update"] < 1
    agent = make_agent(rl.drqv2, (9, 32, 32), "cpu")
    meta = load_checkpoint(tmp_path / "agent", {"agent": agent})
    assert meta["step"] == 96 and len(meta["evals"]) == 3


def test_online_training_learns_from_the_sparse_env_reward_and_reports_the_dense_one(tmp_path):
    rl, env = _tiny_rl(env_reward="sparse", sparse_interval=16, steps=64, eval_every=64)
    res = _train(rl, env, RewardModel("env_only", RewardConfig(normalize=False), {}), tmp_path / "agent")
    for row in res.train:  # reach-v3's dense reward is positive at every step; 2 of 32 steps pay it
        assert row["reward_return"] == pytest.approx(row["env_reward_return"])
        assert 0 < row["env_reward_return"] < row["env_return"] / 4
    assert all(np.isfinite(e["final_obj_to_target"]) and e["final_obj_to_target"] > 0 for e in res.evals)


def test_online_training_stops_on_a_non_finite_reward_and_keeps_the_checkpoint(tmp_path):
    from genreward.agents.registry import RLDiverged

    class NaNFrame(TransitionScores):
        def steps(self, frames, actions):
            return np.full(len(frames), np.nan, np.float32)

    rl, env = _tiny_rl(steps=64, eval_every=16)
    model = RewardModel("frame_only", RewardConfig(interval=16, beta=1e-5, normalize=False), {"frame": NaNFrame()})
    with pytest.raises(RLDiverged, match="non-finite reward.*last good checkpoint .*is kept"):
        _train(rl, env, model, tmp_path / "agent")
    assert (tmp_path / "agent" / "weights.safetensors").exists()


def test_online_training_stops_on_any_non_finite_number_the_agent_reports(tmp_path, monkeypatch):
    """Not only the losses: a NaN Q estimate stops the run too, naming it."""
    from genreward.agents.drqv2 import DrQV2Agent
    from genreward.agents.registry import RLDiverged

    real = DrQV2Agent.update

    def update(self, *args, **kwargs):
        m = real(self, *args, **kwargs)
        return {**m, "target_q": float("nan")}

    monkeypatch.setattr(DrQV2Agent, "update", update)
    rl, env = _tiny_rl(steps=64, eval_every=16)
    model = RewardModel("env_only", RewardConfig(interval=16, normalize=False), {})
    with pytest.raises(RLDiverged, match=r"non-finite target_q at step \d+ .*last good checkpoint"):
        _train(rl, env, model, tmp_path / "agent")


def test_agent_encoder_initialised_from_the_fb_encoder():
    import torch

    from genreward.agents.nets import PixelEncoder
    from genreward.agents.online import make_agent

    rl, _ = _tiny_rl()
    torch.manual_seed(0)
    fb_enc = PixelEncoder(3, 32)
    agent = make_agent(rl.drqv2, (9, 32, 32), "cpu", fb_encoder=fb_enc)
    x = torch.randint(0, 256, (2, 3, 32, 32)).float()
    # A static frame stack gives exactly the FB encoder's features.
    torch.testing.assert_close(agent.encoder(x.repeat(1, 3, 1, 1)), fb_enc(x), rtol=1e-4, atol=1e-4)
