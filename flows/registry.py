"""Stage name -> flow, for ``genreward stage NAME`` (names as in dvc.yaml)."""

from __future__ import annotations

import importlib

FLOWS: dict[str, str] = {
    "env_check": "flows.env_check:env_check_flow",
    "collect_domain_videos": "flows.collect_domain_videos:collect_domain_videos_flow",
    "adapt_video_model": "flows.adapt_video_model:adapt_video_model_flow",
    "generate_goal_videos": "flows.generate_goal_videos:generate_goal_videos_flow",
    "select_keyframes": "flows.select_keyframes:select_keyframes_flow",
    "encode_goal_latents": "flows.encode_goal_latents:encode_goal_latents_flow",
    "collect_exploration": "flows.collect_exploration:collect_exploration_flow",
    "pretrain_fb": "flows.pretrain_fb:pretrain_fb_flow",
    "finetune_rl": "flows.finetune_rl:finetune_rl_flow",
    "evaluate": "flows.evaluate:evaluate_flow",
}


def get_flow(stage: str):
    if stage not in FLOWS:
        raise KeyError(f"unknown stage {stage!r}; valid: {', '.join(sorted(FLOWS))}")
    module, attr = FLOWS[stage].split(":")
    return getattr(importlib.import_module(module), attr)
