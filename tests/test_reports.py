"""What a finished stage item shows (stages/reports.py), progress reports (genreward/progress.py),
and the one error that names every missing input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO


def test_key_numbers_flatten_scalars_and_drop_what_is_not_a_number():
    from stages.reports import artifact_key, key_numbers

    rows = key_numbers(
        {"a": 1, "b": {"c": 0.5, "d": float("nan"), "e": [1, 2]}, "big": list(range(100)), "flag": True, "s": "x"}
    )
    assert rows == [
        {"key": "a", "value": 1},
        {"key": "b.c", "value": 0.5},
        {"key": "b.d", "value": None},  # NaN is not a number a table can show
        {"key": "b.e", "value": "1, 2"},
        {"key": "flag", "value": True},
        {"key": "s", "value": "x"},
    ]
    assert len(key_numbers({f"k{i}": i for i in range(100)}, limit=7)) == 7
    assert artifact_key("finetune_rl", "pick-place-v3/genreward/seed0", "evaluations") == (
        "finetune-rl-pick-place-v3-genreward-seed0-evaluations"
    )


def _fake_rl_run(tmp_path: Path):
    """A finished finetune_rl run folder as the stage writes it (eval.parquet, a rollout GIF)."""
    import pandas as pd
    from PIL import Image

    from genreward.config import load_config
    from stages.finetune_rl import STAGE
    from stages.table import Item

    cfg = load_config(REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}"])
    item = Item("pick-place-v3", "genreward", 0)
    inputs, outputs = STAGE.paths(cfg, item)
    run = outputs["run"]
    run.mkdir(parents=True)
    pd.DataFrame(
        {"step": [0, 256], "return_mean": [1.5, 7.25], "return_std": [0.5, 1.0], "success_rate": [0.0, 0.5]}
    ).to_parquet(run / "eval.parquet")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(run / "rollout.gif")
    summary = {"task": "pick-place-v3", "final_return_mean": 7.25, "final_success_rate": 0.5, "timing": {"fps": 3.0}}
    return STAGE, cfg, item, inputs, outputs, summary


def test_an_rl_run_shows_its_final_return_and_success_its_curve_and_its_rollout(tmp_path):
    from stages.reports import Image, Markdown, Table, item_report

    records = item_report(*_fake_rl_run(tmp_path))
    by_key = {r.key: r for r in records}
    summary = by_key["finetune-rl-pick-place-v3-genreward-seed0"]
    assert isinstance(summary, Markdown)
    assert "**final_return_mean** 7.25 · **final_success_rate** 0.5" in summary.text  # the first line, no file opened
    assert "| goal_latent | `" in summary.text and "| missing |" in summary.text  # inputs with their state
    numbers = by_key["finetune-rl-pick-place-v3-genreward-seed0-numbers"]
    assert isinstance(numbers, Table) and {"key": "timing.fps", "value": "3"} in numbers.rows
    curve = by_key["finetune-rl-pick-place-v3-genreward-seed0-evaluations"]
    assert isinstance(curve, Table)
    assert curve.rows == [
        {"step": "0", "return_mean": "1.5", "return_std": "0.5", "success_rate": "0"},
        {"step": "256", "return_mean": "7.25", "return_std": "1", "success_rate": "0.5"},
    ]
    images = [r for r in records if isinstance(r, Image)]
    assert [im.path.name for im in images] == ["rollout.gif"]


def test_progress_reports_are_throttled_reach_the_end_and_never_stop_the_work():
    from genreward.progress import progress_bar, progress_sink

    calls = []
    with progress_sink(lambda desc, done, total: calls.append((desc, done, total))):
        with progress_bar(1000, "train", enabled=False) as bar:
            for _ in range(1000):
                bar.update()
    assert calls[0] == ("train", 0, 1000) and calls[-1] == ("train", 1000, 1000)
    assert len(calls) == 1 + 1000 // 20  # one report per 2 % of the work (and the start)
    assert [d for _, d, _ in calls[1:]] == list(range(20, 1001, 20))

    def broken(desc, done, total):
        raise ConnectionError("API down")

    with progress_sink(broken):
        bar = progress_bar(10, "x", enabled=False)
        for _ in range(10):
            bar.update()  # no exception: a failed report drops the sink
        bar.close()
    assert bar.done == 10
    outside = progress_bar(5, "y", enabled=False)  # no sink installed outside the context
    assert outside._sink is None


def test_a_stage_with_missing_inputs_names_all_of_them_and_who_writes_them(tmp_path):
    from genreward.config import load_config
    from stages.finetune_rl import STAGE
    from stages.table import Item, MissingInputError

    cfg = load_config(REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}", f"store.reports_dir={tmp_path}"])
    with pytest.raises(MissingInputError) as info:
        STAGE.run_item(cfg, Item("pick-place-v3", "genreward", 0))  # fails at the first input it reads
    msg = str(info.value)
    for name in ("goal_latents/pick-place-v3.zarr", "goal_videos/pick-place-v3.zarr", "keyframes/pick-place-v3.zarr"):
        assert f"{tmp_path}/{name}" in msg
    assert f"{tmp_path}/fb" in msg and "are missing" in msg
    assert (
        "run `dvc repro encode_goal_latents generate_goal_videos select_keyframes pretrain_fb adapt_video_model` first"
        in msg
    )
    assert "'select-keyframes/select_keyframes'" in msg


def test_the_readme_lists_what_each_deployment_reads(repo_root):
    from flows.deployments import needs_table

    readme = (repo_root / "README.md").read_text()
    block = readme.split("<!-- needs:begin -->\n", 1)[1].split("<!-- needs:end -->", 1)[0]
    assert block == needs_table(str(repo_root / "params.yaml"))
    assert "| `evaluate/evaluate` | `finetune_rl` |" in block


def test_publish_sends_markdown_tables_and_inline_previews(tmp_path, monkeypatch):
    """The Prefect side, with Prefect's artifact functions recorded instead of sent."""
    import prefect.artifacts as pa
    from PIL import Image as PILImage

    from flows.artifacts import publish
    from stages.reports import Image, Markdown, Table

    sent = []
    monkeypatch.setattr(pa, "create_markdown_artifact", lambda text, key, description: sent.append(("md", key, text)))
    monkeypatch.setattr(pa, "create_table_artifact", lambda rows, key, description: sent.append(("table", key, rows)))
    png = tmp_path / "a.png"
    PILImage.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(png)
    n = publish(
        [
            Markdown("s", "# hi"),
            Table("t", [{"key": "x", "value": "1"}]),
            Table("empty", []),
            Image("s-image-0", png, "a"),
            Image("s-image-1", tmp_path / "gone.png", "b"),
        ]
    )
    assert n == 3 and [k for _, k, _ in sent] == ["s", "t", "s-previews"]
    previews = sent[-1][2]
    assert previews.count("data:image/png;base64,") == 1 and "gone.png` (missing)" in previews
    assert json.loads(json.dumps(sent[1][2])) == [{"key": "x", "value": "1"}]


def test_progress_artifacts_one_per_loop_created_once_then_updated(monkeypatch):
    import prefect.artifacts as pa

    from flows.artifacts import progress_artifacts

    calls = []
    monkeypatch.setattr(
        pa, "create_progress_artifact", lambda p, key, description: calls.append(("create", key, p)) or key
    )
    monkeypatch.setattr(
        pa, "update_progress_artifact", lambda artifact_id, p, description: calls.append(("update", artifact_id, p))
    )
    sink = progress_artifacts("pretrain_fb")
    sink("fb", 0, 400)
    sink("fb", 200, 400)
    sink("check", 1, 4)
    assert calls == [
        ("create", "pretrain-fb-progress", 0.0),
        ("update", "pretrain-fb-progress", 50.0),
        ("create", "pretrain-fb-progress-2", 25.0),
    ]
