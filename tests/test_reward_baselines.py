"""The baseline reward terms (tadpole, viper, goal distance) and the video model as a scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from genreward.config import config_from_dict
from genreward.rewards.base import RewardInputError
from genreward.rewards.combine import RewardModel

PROMPT = "a robot arm reaches the target"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from genreward.video.cogvideox_build import build_cogvideox_pipeline

    folder = tmp_path_factory.mktemp("video_model") / "pipeline"
    build_cogvideox_pipeline([PROMPT, "a robot arm"], "t2v").save_pretrained(str(folder))
    return folder


def _cfg(model: Path, **rewards):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tasks"] = ["reach-v3"]
    raw["prompts"]["reach-v3"] = PROMPT
    raw["domain_videos"]["captions"]["reach-v3"] = PROMPT
    raw["env"]["image_size"] = 16
    raw["goal_video"].update(num_frames=9, height=32, width=32)
    raw["goal_video"]["diffusers"].update(model=str(model), use_adapted=False, max_sequence_length=16)
    raw["latents"].update(size=16, num_frames=8, vae="random")
    raw["rewards"].update(interval=8, window=8, **rewards)
    return config_from_dict(raw)


def _episode(length: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length + 1, 3, 16, 16), dtype=np.uint8)
    return frames, rng.uniform(-1, 1, (length, 4)).astype(np.float32)


def test_eps_from_v_prediction_matches_the_schedulers_own_velocity(tiny_model):
    import torch
    from diffusers import CogVideoXDDIMScheduler

    from genreward.video.diffusion import eps_from_prediction, training_target

    sched = CogVideoXDDIMScheduler.from_pretrained(tiny_model.parent / "pipeline", subfolder="scheduler")
    assert sched.config.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 4, 4, generator=g), torch.randn(3, 2, 4, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    noisy = sched.add_noise(x0, noise, t)
    v = training_target(sched, x0, noise, t)  # the scheduler's get_velocity
    torch.testing.assert_close(eps_from_prediction(sched, noisy, v, t), noise, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(eps_from_prediction(sched, noisy, v, t.flip(0)), noise, atol=1e-2)  # t matters


def test_latent_frame_cover_of_a_causal_vae():
    from genreward.rewards.diffusion_terms import latent_frame_of

    # 9 frames kept as 9: frame 0 alone, then 4 frames per latent frame
    assert latent_frame_of(9, 9).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    # 17 frames subsampled to 9: each frame goes with its nearest subsampled frame (ties to the even one)
    assert latent_frame_of(17, 9).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]


def test_tadpole_term_through_the_tiny_pipeline(tiny_model):
    from genreward.rewards.diffusion_terms import TadpoleReward

    cfg = _cfg(tiny_model)
    term, hashes = TadpoleReward.build(cfg, "reach-v3", {}, "cpu")
    assert len(hashes["video_model"]) == 64 and term.identity()["prompt"] == PROMPT
    frames, actions = _episode()
    every = np.arange(len(actions))
    r = term.scores(frames, actions, every, window=8)
    assert r.shape == (20,) and np.isfinite(r).all() and (r != 0).all()
    # one value per latent frame, spread over the frames it covers: chunk [0, 8) -> frames 1..8 of 9
    assert np.unique(r[:8]).size <= 3 and np.array_equal(r, term.scores(frames, actions, every, window=8))
    assert not np.array_equal(r, term.scores(frames[::-1].copy(), actions, every, window=8))
    # only the chunks of paid steps are scored
    part = term.scores(frames, actions, np.array([3]), window=8)
    assert np.array_equal(part[:8], r[:8]) and not part[8:].any()
    # paid every step in RL
    assert RewardModel("tadpole", cfg.rewards, {"tadpole": term}).paid_mask("tadpole", 20).all()
    # the prompt as its own negative: align = recon = 0 exactly, so r = 0
    same = TadpoleReward(term.scorer, PROMPT, PROMPT, cfg.rewards.diffusion, {})
    assert not same.scores(frames, actions, every, window=8).any()


def test_viper_term_and_the_baseline_methods_through_the_reward_model(tiny_model):
    cfg = _cfg(tiny_model)
    from genreward.rewards.diffusion_terms import ViperReward

    term, _ = ViperReward.build(cfg, "reach-v3", {}, "cpu")
    frames, actions = _episode()
    w = term.windows([frames[:9], frames[5:14], frames[:9]])
    assert w.dtype == np.float32 and (w < 0).all() and w[0] == w[2] and w[0] != w[1]
    rm = RewardModel("viper", cfg.rewards, {"viper": term})
    out = rm.episode(frames, actions, np.zeros(20, np.float32), update_stats=False)
    assert np.flatnonzero(out.terms["viper"]).tolist() == [7, 15]  # paid every rewards.interval steps
    # transition 7 is scored on the window of rewards.window frames ending at s_8
    assert out.terms["viper"][7] == pytest.approx(term.windows([frames[1:9]])[0], rel=1e-5)


def test_goal_distance_in_pixels_and_latents(tmp_path):
    from genreward.rewards.terms import GoalDistance
    from genreward.video.config import LatentConfig
    from genreward.video.latents import VideoLatentEncoder

    frames, actions = _episode(6)
    goal = frames[3]
    pixels = GoalDistance(goal)
    r = pixels.scores(frames, actions, np.arange(6), 8)
    assert r[2] == 0.0 and (np.delete(r, 2) < -0.2).all()  # transition 2 reaches frame 3, the goal
    half = np.clip(goal.astype(int) + 51, 0, 255).astype(np.uint8)  # +0.2 where not clipped
    assert pixels.steps(half[None])[0] == pytest.approx(-np.sqrt(((half / 255.0 - goal / 255.0) ** 2).mean()))
    enc = VideoLatentEncoder.from_config(LatentConfig(vae="random", size=16))
    latent = GoalDistance(goal, enc)
    assert latent.name == "goal_latent" and latent.identity()["encoder"]["vae"] == "random"
    z = latent.scores(frames, actions, np.arange(6), 8)
    assert z[2] == pytest.approx(0.0, abs=1e-5) and (np.delete(z, 2) < -1e-3).all()


def test_video_term_with_the_reset_baseline_compares_what_moved():
    from genreward.rewards.terms import VideoReward
    from genreward.video.config import LatentConfig
    from genreward.video.latents import VideoLatentEncoder

    enc = VideoLatentEncoder.from_config(LatentConfig(vae="random", size=16, num_frames=8))
    rng = np.random.default_rng(0)
    goal = np.repeat(np.linspace(0, 255, 17).astype(np.uint8)[:, None, None, None], 16, 1).repeat(16, 2).repeat(3, 3)
    goal = (goal + rng.integers(0, 20, goal.shape)).astype(np.uint8)  # [T, H, W, 3]: brightening
    frames = goal.transpose(0, 3, 1, 2).copy()  # an episode that is the goal video, 16 transitions
    actions = np.zeros((16, 4), np.float32)
    term = VideoReward(enc, enc.encode(goal), goal_start=frames[0], baseline="reset")
    assert term.identity()["baseline"] == "reset" and "goal_first_frame_sha256" in term.identity()
    r = term.scores(frames, actions, np.array([0, 15]), window=17)
    assert r[15] == pytest.approx(1.0, abs=1e-5)  # the whole goal motion, from the same start
    still = np.repeat(frames[:1], 17, axis=0)  # an agent that never moves scores 0: nothing moved
    assert term.scores(still, actions, np.array([15]), window=17)[15] == 0.0
    plain = VideoReward(enc, enc.encode(goal))
    assert plain.identity()["baseline"] == "none" and plain.scores(still, actions, np.array([15]), 17)[15] > 0.5
    with pytest.raises(RewardInputError, match="needs the goal video's first frame"):
        VideoReward(enc, enc.encode(goal), baseline="reset")


def test_video_progress_pays_how_far_along_the_goal_video_the_agent_is():
    from genreward.rewards.terms import VideoReward
    from genreward.video.config import LatentConfig
    from genreward.video.latents import VideoLatentEncoder

    enc = VideoLatentEncoder.from_config(LatentConfig(vae="random", size=16))
    rng = np.random.default_rng(0)
    # the goal video: a bright square that slides from the left edge to the right edge over 9 frames
    goal = np.full((9, 3, 16, 16), 40, np.uint8)
    for k in range(9):
        goal[k, :, 4:10, k : k + 6] = 220
    goal = np.clip(goal.astype(int) + rng.integers(0, 6, goal.shape), 0, 255).astype(np.uint8)
    term = VideoReward(enc, baseline="reset", score="progress", goal_frames=goal, temperature=0.01)
    ident = term.identity()
    assert ident["score"] == "progress" and ident["temperature"] == 0.01 and "goal_frames_sha256" in ident
    assert term.goal.shape[0] == 8  # the first goal frame is the baseline, dropped
    actions = np.zeros((8, 4), np.float32)
    r = term.scores(goal, actions, np.arange(8), window=4)  # an agent that replays the goal video
    assert r[-1] == pytest.approx(1.0, abs=0.02) and r[0] < 0.3
    assert (np.diff(r) > 0).all()  # every step further along pays more
    # halfway along pays about half, whatever the episode's own start looked like
    halfway = np.stack([goal[0], goal[4]])
    assert term.scores(halfway, actions[:1], np.array([0]), 2)[0] == pytest.approx(0.5, abs=0.1)
    plain = VideoReward(enc, score="progress", goal_frames=goal, temperature=0.05)  # baseline none: 9 frames
    assert plain.goal.shape[0] == 9 and plain.scores(goal, actions, np.array([7]), 2)[7] > 0.8
    with pytest.raises(RewardInputError, match="needs the goal video's frames"):
        VideoReward(enc, score="progress")
    with pytest.raises(RewardInputError, match="a goal video that does not move"):
        VideoReward(enc, baseline="reset", score="progress", goal_frames=np.repeat(goal[:1], 3, axis=0))
