"""Reward overhead per agent step vs env step + agent update, on one profile's settings (CPU).

Measures, in one run and on the same cores:
  env      MetaWorldPixelEnv.step (physics + render) per agent step
  update   one DrQ-v2 update (rl.batch_size, n-step sampling from the replay) / rl.update_every
  reward   RewardModel.episode for the `genreward` method (video latent cosine every Δt, FB
           frame reward every Δt or every step) / episode length
and prints reward / (env + update). The goal on the laptop profile is <= 0.10. The models are
built from the config (random-init VAE/FB of the configured sizes: inference cost does not
depend on the weights), so no pipeline artifacts are needed.

    python benchmarks/reward_overhead.py [--profile laptop] [--episodes 3] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default=None)
    ap.add_argument("--task", default="pick-place-v3")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    import torch

    import genreward  # noqa: F401
    from genreward.agents.fb import FBModel
    from genreward.agents.online import make_agent
    from genreward.agents.replay import EpisodeReplay
    from genreward.config import load_config
    from genreward.envs.config import ACTION_DIM
    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from genreward.rewards.combine import RewardModel
    from genreward.rewards.terms import FrameReward, VideoReward
    from genreward.video.latents import encoder_from_config

    cfg = load_config("params.yaml", overrides=args.set or None, profile=args.profile)
    rl, env_cfg, device = cfg.rl.drqv2, cfg.env, cfg.resolve_device()
    L, size, stack = env_cfg.agent_steps, env_cfg.image_size, env_cfg.frame_stack
    env = MetaWorldPixelEnv(args.task, env_cfg)
    rng = np.random.default_rng(0)

    # env: whole episodes of random actions
    episodes, t_env = [], 0.0
    for k in range(args.episodes):
        obs, _ = env.reset(seed=k)
        frames, actions, rewards = [obs["pixels"][-3:]], [], []
        t0 = time.perf_counter()
        for _ in range(L):
            a = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
            obs, r, _, _, _ = env.step(a)
            frames.append(obs["pixels"][-3:]), actions.append(a), rewards.append(r)
        t_env += time.perf_counter() - t0
        episodes.append((np.stack(frames), np.stack(actions), np.asarray(rewards, np.float32)))
    env.close()
    env_per_step = t_env / (args.episodes * L)

    # update: DrQ-v2 on the replay
    agent = make_agent(rl, (3 * stack, size, size), device)
    replay = EpisodeReplay(len(episodes), L, (3, size, size), ACTION_DIM)
    for f, a, r in episodes:
        replay.add(f, a, r, r)

    def one_update():
        b = replay.sample(rl.batch_size, rng, stack, rl.n_step, rl.discount)
        agent.update(
            *(torch.as_tensor(b[k], device=device) for k in ("obs", "action", "reward", "next_obs")),
            10**6,
            discount=torch.as_tensor(b["discount"], device=device),
        )

    for _ in range(3):
        one_update()
    t0 = time.perf_counter()
    for _ in range(args.updates):
        one_update()
    update_per_step = (time.perf_counter() - t0) / args.updates / rl.update_every

    # reward: the full genreward model
    encoder = encoder_from_config(cfg)
    goal = episodes[0][0].transpose(0, 2, 3, 1)
    fb = FBModel((3, size, size), ACTION_DIM, cfg.fb, device).eval()
    terms = {"video": VideoReward(encoder, encoder.encode(goal)), "frame": FrameReward(fb, episodes[0][0][-1])}
    model = RewardModel("genreward", cfg.rewards, terms)
    model.episode(*episodes[0])  # warm-up
    t0 = time.perf_counter()
    for f, a, r in episodes:
        model.episode(f, a, r)
    reward_per_step = (time.perf_counter() - t0) / (args.episodes * L)

    base = env_per_step + update_per_step
    print(
        f"profile {cfg.profile}, {args.task}, {size}px, episode {L} steps, Δt {cfg.rewards.interval}, "
        f"window {cfg.rewards.window}, frame_per_step "
        f"{cfg.rewards.frame_per_step}, VAE {cfg.latents.vae}, device {device}"
    )
    print(f"env step            {1000 * env_per_step:8.3f} ms/step")
    print(
        f"agent update        {1000 * update_per_step:8.3f} ms/step (batch "
        f"{rl.batch_size}, every {rl.update_every} steps)"
    )
    print(f"genreward reward    {1000 * reward_per_step:8.3f} ms/step")
    print(f"reward / (env + update) = {reward_per_step / base:.4f}  (goal <= 0.10)")


if __name__ == "__main__":
    main()
