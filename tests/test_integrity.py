"""Artifact integrity: manifests of chunk files (missing, resized, changed chunks) and finite checks."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from genreward.store import ArtifactError, ContentCache, add_array, open_artifact, read_array, write_artifact
from genreward.store import artifacts as artifacts_mod
from genreward.store.episodes import EpisodeWriter, ExplorationDataset, partial_path
from genreward.store.provenance import producer

from .conftest import REPO
from .test_exploration import _episode


def _episode_store(path, episodes=None, stage="collect_exploration"):
    """3 episodes of 7 rows in chunks of 4 rows (6 chunks per array), written under ``stage``."""
    w = EpisodeWriter(path, {"a": 1}, chunk_rows=4)
    for k, ep in enumerate(episodes or [_episode(k) for k in range(3)]):
        w.append(ep)
    with producer(stage=stage):
        w.finish({"p": 1})
    return path


def _video(t=9):
    return np.random.default_rng(0).integers(0, 256, (t, 16, 16, 3), dtype=np.uint8)


def _goal_video(path, video=None):
    with write_artifact(path, "goal_video", attrs={"oracle": True}) as g:
        add_array(g, "video", _video() if video is None else video)
    return path


def _raises(fragments, fn, *args, **kw):
    """``fn`` raises an ArtifactError whose one-line message contains every fragment."""
    with pytest.raises(ArtifactError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return info.value


def test_every_writer_records_a_manifest_of_its_files(tmp_path):
    store = _episode_store(tmp_path / "d.zarr")
    meta = open_artifact(store).attrs["genreward"]
    m = meta["manifest"]
    assert meta["stage"] == "collect_exploration" and meta["complete"] is True
    assert m["hash"] == "sha256/128" and m["files"] == len(m["entries"])
    files = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    assert sorted(m["entries"]) == [f for f in files if f != "zarr.json"]  # every file but the root one
    assert "obs/c/5/0/0/0" in m["entries"] and "action/c/4/0" in m["entries"] and "obs/zarr.json" in m["entries"]
    # episode 0's actions are all 0, the fill value: the writer stores that chunk too, so a
    # missing chunk file is always damage, never an empty chunk Zarr skipped
    assert "action/c/0/0" in m["entries"] and (store / "action/c/0/0").exists()
    size, digest = m["entries"]["episode/c/1"]
    assert size == (store / "episode/c/1").stat().st_size and len(digest) == 32
    assert m["bytes"] == sum(s for s, _ in m["entries"].values())

    video = _goal_video(tmp_path / "v.zarr")
    meta = open_artifact(video, "goal_video").attrs["genreward"]
    assert sorted(meta["manifest"]["entries"]) == ["video/c/0/0/0/0", "video/zarr.json"]  # one shard file
    assert "stage" not in meta  # written outside a stage run


@pytest.mark.parametrize("chunk", ["obs/c/1/0/0/0", "episode/c/2", "action/c/1/0"])
def test_deleted_chunk_of_an_episode_store_is_refused(tmp_path, chunk):
    store = _episode_store(tmp_path / "d.zarr")
    (store / chunk).unlink()
    expected = [f"{store}: damaged artifact: chunk {chunk} is missing", "; re-run `dvc repro collect_exploration`"]
    _raises(expected, open_artifact, store, "exploration", verify="size")
    _raises(expected, ExplorationDataset, store)  # what pretrain_fb opens


def test_deleted_chunk_of_a_goal_video_is_refused(tmp_path):
    video = _goal_video(tmp_path / "v.zarr")
    (video / "video/c/0/0/0/0").unlink()
    e = _raises([f"{video}: damaged artifact: chunk video/c/0/0/0/0 is missing"], open_artifact, video, "goal_video")
    assert e.path == video and e.rerun  # no stage recorded: the stage layer names it


def test_resized_and_flipped_chunks(tmp_path):
    video = _goal_video(tmp_path / "v.zarr")
    shard = video / "video/c/0/0/0/0"
    data = bytearray(shard.read_bytes())
    shard.write_bytes(bytes(data[:-7]))
    _raises(
        [f"chunk video/c/0/0/0/0 has size {len(data) - 7} != {len(data)} recorded"], open_artifact, video, verify="size"
    )
    data[len(data) // 2] ^= 0xFF  # same size, other content
    shard.write_bytes(bytes(data))
    assert open_artifact(video, verify="size")  # the stat-only check cannot see it...
    flipped = ["chunk video/c/0/0/0/0 has a hash mismatch (same size, other content)"]
    _raises(flipped, open_artifact, video, verify="hash")  # ...the hash check does
    _raises(flipped, open_artifact, video)  # and "auto" hashes small artifacts


def test_auto_verification_hashes_only_small_artifacts(tmp_path, monkeypatch):
    video = _goal_video(tmp_path / "v.zarr")
    shard = video / "video/c/0/0/0/0"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))
    monkeypatch.setattr(artifacts_mod, "HASH_VERIFY_MAX_BYTES", len(data) - 1)
    assert open_artifact(video)  # above the threshold: sizes only
    monkeypatch.setattr(artifacts_mod, "HASH_VERIFY_MAX_BYTES", len(data) + 10_000)
    _raises(["hash mismatch"], open_artifact, video)


def test_extra_file_damaged_metadata_and_many_problems(tmp_path):
    store = _episode_store(tmp_path / "d.zarr")
    extra = store / "action/c/0/1"  # a chunk key the array does not have
    assert not extra.exists()
    shutil.copy(store / "action/c/1/0", extra)
    assert open_artifact(store, verify="size")
    _raises(["unexpected file action/c/0/1 (not in the manifest)"], open_artifact, store, verify="hash")
    extra.unlink()
    (store / "state/zarr.json").unlink()
    for chunk in ("obs/c/2/0/0/0", "obs/c/3/0/0/0"):
        (store / chunk).unlink()
    _raises(
        [f"{store}: damaged artifact: metadata file state/zarr.json is missing (and 2 more damaged file(s))"],
        open_artifact,
        store,
        verify="size",
    )
    shutil.rmtree(store / "obs")
    shutil.rmtree(store / "action")
    _raises(["damaged artifact: metadata file action/zarr.json is missing (and 14 more"], open_artifact, store)


def test_artifact_without_manifest_is_refused_as_older(tmp_path):
    video = _goal_video(tmp_path / "v.zarr")
    meta_file = video / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["attributes"]["genreward"]["manifest"]
    meta_file.write_text(json.dumps(meta))
    e = _raises(
        [f"{video}: no integrity manifest (written by an older genreward); re-run the stage that writes it"],
        open_artifact,
        video,
    )
    assert e.rerun


def test_cache_entry_errors_name_the_entry_to_remove(tmp_path):
    cache = ContentCache(tmp_path / "cache", "goal_videos")

    def create(folder):
        _goal_video(folder / "video.zarr")

    with producer(stage="generate_goal_videos"):
        res = cache.get_or_create({"prompt": "x"}, create)
    meta = open_artifact(res.path / "video.zarr").attrs["genreward"]
    assert meta["cache_entry"] == f"goal_videos/{res.key}" and meta["stage"] == "generate_goal_videos"
    (res.path / "video.zarr/video/c/0/0/0/0").unlink()
    _raises(
        [
            "chunk video/c/0/0/0/0 is missing; remove the cache entry "
            f"(`genreward cache rm goal_videos/{res.key}`) and re-run `dvc repro generate_goal_videos`"
        ],
        open_artifact,
        res.path / "video.zarr",
    )


def test_resume_after_a_kill_inside_finish_rebuilds_the_manifest(tmp_path):
    from genreward.store.artifacts import finalise

    path = tmp_path / "d.zarr"
    w = EpisodeWriter(path, {"a": 1}, chunk_rows=4)
    w.append(_episode(0))
    finalise(w.group, w.partial, {"kind": "exploration", "format": 1})  # killed after this, before the rename
    del w
    w2 = EpisodeWriter(path, {"a": 1}, chunk_rows=4)
    assert "genreward" not in w2.group.attrs and w2.committed_episodes == 1  # the stale block is dropped
    w2.append(_episode(1))
    w2.finish({})
    assert not partial_path(path).exists()
    entries = open_artifact(path, "exploration", verify="hash").attrs["genreward"]["manifest"]["entries"]
    assert "obs/c/3/0/0/0" in entries  # rows 12-13: written after the resume
    ds = ExplorationDataset(path)
    assert ds.n == 14 and ds.array("obs")[13, 0, 0, 0] == 16


def test_non_finite_action_or_state_is_refused(tmp_path):
    bad = _episode(1)
    bad.action[3, 2] = np.nan
    store = _episode_store(tmp_path / "d.zarr", [_episode(0), bad, _episode(2)])
    open_artifact(store, "exploration", verify="hash")  # intact: the writer stored the NaN
    # row 7 starts episode 1, so its action row 3 is row 10
    _raises(
        [f"{store}: array 'action' holds 1 non-finite value(s), the first (nan) at index (10, 2)"],
        ExplorationDataset,
        store,
    )
    worse = _episode(0)
    worse.state[5, 7] = np.inf
    store = _episode_store(tmp_path / "e.zarr", [worse])
    _raises(
        [f"{store}: array 'state' holds 1 non-finite value(s), the first (inf) at index (5, 7)"],
        ExplorationDataset,
        store,
    )


def test_read_array_finite_option(tmp_path):
    latent = np.zeros((4, 4, 2, 2), np.float32)
    latent[2, 1, 0, 1] = -np.inf
    with write_artifact(tmp_path / "l.zarr", "goal_latents") as g:
        add_array(g, "latent", latent, chunks=latent.shape)
    g = open_artifact(tmp_path / "l.zarr", "goal_latents")
    assert read_array(g, "latent").shape == (4, 4, 2, 2)  # off by default
    _raises(
        [f"{tmp_path / 'l.zarr'}: array 'latent' holds 1 non-finite value(s), the first (-inf) at index (2, 1, 0, 1)"],
        read_array,
        g,
        "latent",
        finite=True,
    )


def test_stages_refuse_damaged_inputs_and_record_themselves(tmp_path):
    """Through real stage entry points: the damaged input fails the stage (no output, no exit 0)."""
    from genreward.config import load_config
    from stages import pretrain_fb, select_keyframes

    cfg = load_config(REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}", "tasks=[pick-place-v3]"])
    video = _goal_video(tmp_path / "goal_videos" / "pick-place-v3.zarr", _video(17))
    assert select_keyframes.STAGE.execute(cfg)["pick-place-v3"]["index"] == 16
    kf = open_artifact(tmp_path / "keyframes" / "pick-place-v3.zarr", "keyframes").attrs["genreward"]
    assert kf["stage"] == "select_keyframes" and "frame/c/0/0/0" in kf["manifest"]["entries"]

    shutil.rmtree(tmp_path / "keyframes")
    (video / "video/c/0/0/0/0").unlink()
    # the goal video was written outside a stage: the stage table names the one that writes it
    _raises(
        [
            f"{video}: damaged artifact: chunk video/c/0/0/0/0 is missing; re-run the stage that writes it "
            "(`dvc repro -f -s generate_goal_videos`)"
        ],
        select_keyframes.STAGE.execute,
        cfg,
    )
    assert not (tmp_path / "keyframes" / "pick-place-v3.zarr").exists()

    store = _episode_store(tmp_path / "exploration.zarr")
    (store / "obs/c/4/0/0/0").unlink()
    e = _raises(
        [f"{store}: damaged artifact: chunk obs/c/4/0/0/0 is missing; re-run `dvc repro collect_exploration`"],
        pretrain_fb.STAGE.execute,
        cfg,
    )
    assert not re.search(r"-f -s", str(e))  # the recorded stage is used as is
    assert not (tmp_path / "fb").exists() and not (tmp_path / "fb_metrics.json").exists()


def test_stages_name_the_stage_to_run_for_a_missing_or_unreadable_input(tmp_path):
    """A missing declared input names the stage that writes it; unreadable FB weights name the
    file and the stage that rebuilds them."""
    from genreward.agents.fb import FBModel, save_fb
    from genreward.config import load_config
    from stages import finetune_rl, pretrain_fb
    from stages.table import MissingInputError

    cfg = load_config(REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}", "tasks=[pick-place-v3]"])
    with pytest.raises(MissingInputError) as info:
        pretrain_fb.STAGE.execute(cfg)
    assert str(info.value) == (
        f"{tmp_path / 'exploration.zarr'} is missing; run `dvc repro collect_exploration` first "
        "(Prefect deployment 'collect-exploration/collect_exploration')"
    )

    model = FBModel((3, 64, 64), 4, cfg.fb, "cpu")
    save_fb(tmp_path / "fb", model)
    weights = tmp_path / "fb" / "weights.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    run_cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={tmp_path}",
            "tasks=[pick-place-v3]",
            "rl.tasks=[pick-place-v3]",
            "rl.methods=[env_only]",
            "rl.seeds=[0]",
            "rl.drqv2.init_encoder_from_fb=true",
        ],
    )
    _raises(
        [f"{weights}: not a readable safetensors file (SafetensorError: ", "(`dvc repro -f -s pretrain_fb`)"],
        finetune_rl.STAGE.execute,
        run_cfg,
    )
    assert not (tmp_path / "rl").exists() or not any((tmp_path / "rl").rglob("run.json"))
