"""Stage finetune_rl: online RL with GenReward rewards (and the baselines), per task × seed × method.

inputs:  ``<data>/goal_latents/<task>.zarr`` (video reward), ``<data>/keyframes/<task>.zarr`` and
         ``<data>/fb/`` (frame reward); only what the method needs is read
outputs: ``<data>/rl/<task>/<method>/seed<k>/``: ``eval.parquet`` (one row per evaluation),
         ``train.csv`` (one row per training episode), ``rollout.gif``, ``agent/`` (safetensors),
         ``run.json`` (params, input hashes, final metrics, timing)
A run is written to a hidden ``.seed<k>.partial`` folder and renamed when complete; a run that
diverges stops with a message and leaves its last good checkpoint there.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from genreward.config import Config
from genreward.rewards.combine import RewardModel
from genreward.rewards.config import build_terms, method_terms
from genreward.store.atomic import replace_dir
from genreward.store.hashing import hash_tree
from genreward.store.provenance import code_version, runtime_info, utc_now
from stages.table import Stage

log = logging.getLogger(__name__)


def reward_model(cfg: Config, task: str, method: str, ins: dict[str, Path]) -> tuple[RewardModel, dict[str, str]]:
    """The method's reward model, its terms built through the registry (each reads only its own
    inputs); plus the hashes of the inputs they read."""
    terms, hashes = build_terms(method_terms(method), cfg, task, ins, cfg.resolve_device())
    return RewardModel(method, cfg.rewards, terms), hashes


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    """One run: ``cfg.rl`` narrowed to one task, method and seed."""
    import pandas as pd

    from genreward.agents.registry import RLRun, agent_spec
    from genreward.video.io import write_gif

    (task,), (method,), (seed,) = cfg.rl.tasks, cfg.rl.methods, cfg.rl.seeds
    cfg.check_rl_tasks()
    ins, out = inputs, outputs["run"]
    rm, hashes = reward_model(cfg, task, method, ins)
    fb_encoder = None
    if getattr(cfg.rl.agent_section, "init_encoder_from_fb", False):
        from genreward.agents.fb import FBModel, load_fb

        # reuse the FB model a reward term (the frame term) already loaded and hashed
        loaded = [t.model for t in map(rm.term, rm.terms) if isinstance(getattr(t, "model", None), FBModel)]
        fb_encoder = (loaded[0] if loaded else load_fb(ins["fb"])).encoder
        if "fb" not in hashes:
            hashes["fb"] = hash_tree(ins["fb"])
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # runs are not resumed: the replay is not checkpointed
    partial.mkdir(parents=True)
    agent = cfg.rl.agent
    if cfg.rl.deterministic:
        from genreward.runtime import deterministic

        deterministic(seed)
    res = agent_spec(agent).train_fn()(
        RLRun(
            task, seed, cfg.rl, cfg.env, rm, cfg.resolve_device(), partial / "agent", fb_encoder, cfg.runtime.progress
        )
    )
    evals = pd.DataFrame([{k: v for k, v in e.items() if k != "returns"} for e in res.evals])
    ids = (("task", task), ("method", method), ("seed", seed), ("agent", agent), ("env_reward", cfg.rl.env_reward))
    for i, (name, value) in enumerate(ids):
        evals.insert(i, name, value)
    evals.to_parquet(partial / "eval.parquet", index=False)
    pd.DataFrame(res.train).to_csv(partial / "train.csv", index=False)
    for i, frames in enumerate(res.gif_frames):
        write_gif(partial / ("rollout.gif" if i == 0 else f"rollout_{i}.gif"), frames, fps=cfg.goal_video.fps, scale=2)
    final = res.evals[-1]
    summary = {
        "task": task,
        "method": method,
        "seed": seed,
        "agent": agent,
        "env_reward": cfg.rl.env_reward,
        "deterministic": cfg.rl.deterministic,
        "final_return_mean": final["return_mean"],
        "final_success_rate": final["success_rate"],
        "final_obj_to_target": dist if math.isfinite(dist := float(final.get("final_obj_to_target", "nan"))) else None,
        "steps": final["step"],
        "timing": res.timing,
        "reward_stats": {k: s.state() for k, s in rm.stats.items()},
    }
    meta = {
        "kind": "rl_run",
        "complete": True,
        "created": utc_now(),
        "code": code_version(),
        "runtime": runtime_info(),
        "params": cfg.section("rl", "rewards", "env", "latents", "seed"),
        "inputs": hashes,
        "reward_terms": rm.identity(),
        **summary,
    }
    (partial / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    replace_dir(partial, out)
    share = res.timing.get("reward_share_of_step_and_update")
    log.info(
        "%s %s seed %d (%s): final return %.1f, success %.0f%%%s",
        task,
        method,
        seed,
        agent,
        final["return_mean"],
        100 * final["success_rate"],
        "" if share is None else f", reward overhead {100 * share:.1f}% of step+update",
    )
    return summary


def report(cfg: Config, item, inputs: dict[str, Path], outputs: dict[str, Path], summary: dict) -> list:
    """The run's evaluations of the noise-free policy, as a table (the learning curve)."""
    import pandas as pd

    from stages.reports import Table, artifact_key, rows_of

    evals = pd.read_parquet(outputs["run"] / "eval.parquet")
    columns = [
        c for c in ("step", "return_mean", "return_std", "success_rate", "final_obj_to_target") if c in evals.columns
    ]
    return [
        Table(
            artifact_key("finetune_rl", item.label, "evaluations"),
            rows_of(evals.to_dict("records"), columns),
            f"{item.label}: evaluations of the noise-free policy (dense env return, success rate, final "
            f"object-to-goal distance); trained on the {cfg.rl.env_reward} env reward",
        )
    ]


STAGE = Stage(
    "finetune_rl",
    "Online RL on the generated rewards (and the baselines), per task × method × seed",
    run,
    over="run",
    # everything a method may read (DVC tracks them all); a run reads only what its terms need
    inputs={
        "goal_latent": "{data}/goal_latents/{task}.zarr",
        "goal_video": "{data}/goal_videos/{task}.zarr",
        "keyframe": "{data}/keyframes/{task}.zarr",
        "fb": "{data}/fb",
        "video_model": "{video_model}",
    },
    outputs={"run": "{data}/rl/{task}/{method}/seed{seed}"},
    params=("env", "goal_video", "video_model", "rl", "rewards", "latents", "keyframes"),
    report=report,
)
