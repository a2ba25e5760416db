"""Run one short finetune_rl item (env_only, reach-v3) and print its evaluation returns as JSON.

``python -m tests.rl_rerun DATA_DIR [override ...]``: a separate process per run, so that each
run starts from a fresh interpreter (test_rl_stages: the deterministic mode)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    import pandas as pd

    from genreward.config import load_config
    from stages.finetune_rl import STAGE
    from stages.table import Item

    data, *extra = sys.argv[1:]
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(
        repo / "params.yaml",
        overrides=[
            f"store.data_dir={data}",
            "tasks=[reach-v3]",
            "prompts.reach-v3=reach",
            "rl.tasks=[reach-v3]",
            "rl.methods=[env_only]",
            "rl.seeds=[0]",
            "rl.steps=128",
            "rl.seed_steps=32",
            "rl.eval_every=64",
            "rl.eval_episodes=2",
            "rl.gif_episodes=0",
            "rl.drqv2.batch_size=16",
            "rl.drqv2.hidden_dim=32",
            "rl.drqv2.feature_dim=16",
            "rl.drqv2.update_every=1",
            "env.image_size=32",
            "env.episode_length=32",
            "runtime.progress=false",
            *extra,
        ],
    )
    item = Item("reach-v3", "env_only", 0)
    STAGE.run_item(cfg, item)
    evals = pd.read_parquet(STAGE.paths(cfg, item)[1]["run"] / "eval.parquet")
    print(json.dumps({"returns": evals["return_mean"].tolist(), "threads": __import__("torch").get_num_threads()}))
