"""Stage collect_probes: held-out episodes with known outcomes per task, for scoring reward methods offline.

inputs:  none (config: env, probes)
outputs: ``<data>/probes/<task>.zarr`` (kind ``probes``; N episodes of L = env.agent_steps steps):
         ``frames[N,L+1,3,H,W] uint8`` (the agent's single-frame observation, as the RL replay
         stores it; one chunk per episode), ``action[N,L,4] float32``, ``reward[N,L] float32``
         (dense env reward), ``success[N,L] bool``; per episode ``kind[N] int8`` (index into
         attrs ``kinds``: expert, noisy, near_miss, random), ``noise_std[N] float32``,
         ``seed[N] int64`` (env seed), ``episode_success[N] bool``, ``first_success[N] int32``
         and ``drift_step[N] int32`` (-1: none); ``<data>/probes/<task>.json`` (per kind: count,
         success rate, mean return, mean first-success step).
Episodes run in ``runtime.num_workers`` spawned processes; the store is written atomically once
all exist, in plan order (experts, noisy by level, near misses, random) whatever order the
workers finish in. The episode kinds and the seed scheme: ``genreward/envs/probes.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from genreward.config import Config
from genreward.envs.probes import (
    ARRAYS,
    KIND,
    KINDS,
    SEED_BASE,
    SEED_STRIDE,
    TASK_STRIDE,
    collect_probes,
    probe_env_config,
    summarize,
)
from genreward.store.artifacts import add_array, write_artifact
from genreward.store.atomic import write_json_atomic
from stages.table import Stage

log = logging.getLogger(__name__)


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    (task,) = cfg.tasks
    pc = cfg.probes
    arrays = collect_probes(
        task, cfg.env, pc, workers=min(cfg.runtime.num_workers, pc.episodes_per_task), progress=cfg.runtime.progress
    )
    summary = {"task": task, **summarize(arrays)}
    env = probe_env_config(cfg.env)
    attrs = {
        "task": task,
        "kinds": list(KINDS),
        "episode_length": env.agent_steps,
        "action_repeat": env.action_repeat,
        "camera": env.camera,
        "image_size": env.image_size,
        "near_miss_drift": "uniform random actions",
        "seed_scheme": f"{SEED_BASE} + {SEED_STRIDE}*probes.seed + {TASK_STRIDE}*(Meta-World task index) + episode",
        "summary": summary,
    }
    assert set(arrays) == set(ARRAYS)
    with write_artifact(outputs["probes"], KIND, params=cfg.section("env", "probes"), attrs=attrs) as g:
        for name, value in arrays.items():
            array_attrs = {"names": list(KINDS)} if name == "kind" else None
            add_array(g, name, value, attrs=array_attrs)  # 3+-D arrays: one chunk per episode
    log.info(
        "%s: %d probe episodes of %d steps -> %s; success rate %s",
        task,
        summary["episodes"],
        summary["episode_length"],
        outputs["probes"],
        ", ".join(f"{k} {v['success_rate']:.2f}" for k, v in summary["per_kind"].items() if v["count"]),
    )
    return write_json_atomic(outputs["summary"], summary)


STAGE = Stage(
    "collect_probes",
    "Held-out expert/noisy/near-miss/random episodes per task, for scoring rewards offline",
    run,
    over="task",
    outputs={"probes": "{data}/probes/{task}.zarr", "summary": "{data}/probes/{task}.json"},
    params=("env", "probes"),
)
