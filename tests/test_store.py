from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from genreward.store import (
    ArtifactError,
    ContentCache,
    add_array,
    artifact_hash,
    canonical_json,
    hash_array,
    open_artifact,
    provenance,
    read_array,
    stable_hash,
    write_artifact,
)
from genreward.store.atomic import clean_stale

from .conftest import run_cli


def _video(seed=0, t=9):
    return np.random.default_rng(seed).integers(0, 256, (t, 16, 16, 3), dtype=np.uint8)


def _write(path, video, **kw):
    with write_artifact(
        path, "goal_video", params={"env": {"image_size": 16}}, inputs={"prompt": "abc"}, attrs={"prompt": "p"}, **kw
    ) as g:
        add_array(g, "video", video)


def test_metrics_json_refuses_nan_naming_the_keys_and_keeps_the_old_file(tmp_path):
    from genreward.store.atomic import non_finite, write_json_atomic

    path = tmp_path / "metrics.json"
    assert write_json_atomic(path, {"b": 1.5, "a": None}) == {"b": 1.5, "a": None}
    old = path.read_text()
    assert json.loads(old) == {"a": None, "b": 1.5}
    bad = {"fb_loss": 0.25, "q_z_corr": float("nan"), "per_task": {"reach": [1.0, float("-inf")]}}
    with pytest.raises(ValueError) as info:
        write_json_atomic(path, bad)
    assert str(info.value) == (
        f"{path}: not written, non-finite value (NaN or infinity) at q_z_corr, per_task.reach[1]"
    )
    assert path.read_text() == old and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert non_finite([float("nan")] * 7) == [f"[{i}]" for i in range(7)] and non_finite(float("inf")) == [
        "(top level)"
    ]
    write_json_atomic(path, bad, allow_nan=True)  # explicit opt-in only
    assert '"q_z_corr": NaN' in path.read_text()


def test_round_trip_with_provenance(tmp_path):
    v = _video()
    _write(tmp_path / "a.zarr", v)
    g = open_artifact(tmp_path / "a.zarr", "goal_video")
    np.testing.assert_array_equal(read_array(g, "video", ndim=4, dtype=np.uint8), v)
    meta = provenance(tmp_path / "a.zarr")
    assert meta["kind"] == "goal_video" and meta["complete"] is True and meta["format"] == 1
    assert meta["params"] == {"env": {"image_size": 16}} and meta["inputs"] == {"prompt": "abc"}
    assert meta["code"]["package"] and "python" in meta["runtime"]
    assert g.attrs["prompt"] == "p"
    # Zarr v3 on disk, and per-frame chunks inside one shard file.
    assert json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())["zarr_format"] == 3
    assert g["video"].chunks == (1, 16, 16, 3) and g["video"].shards == (9, 16, 16, 3)
    assert len([p for p in (tmp_path / "a.zarr" / "video").rglob("*") if p.is_file() and p.name != "zarr.json"]) == 1


def test_crash_mid_write_leaves_nothing_and_keeps_previous(tmp_path):
    target = tmp_path / "a.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with write_artifact(target, "goal_video") as g:
            add_array(g, "video", _video())
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []

    _write(target, _video(1))
    with pytest.raises(KeyboardInterrupt):
        with write_artifact(target, "goal_video") as g:
            add_array(g, "video", _video(2))
            raise KeyboardInterrupt
    np.testing.assert_array_equal(open_artifact(target)["video"][...], _video(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_replacing_an_artifact_swaps_content(tmp_path):
    _write(tmp_path / "a.zarr", _video(1))
    _write(tmp_path / "a.zarr", _video(2))
    np.testing.assert_array_equal(open_artifact(tmp_path / "a.zarr")["video"][...], _video(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_reader_rejects_missing_foreign_incomplete_and_wrong_kind(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        open_artifact(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="not a Zarr v3 store"):
        open_artifact(tmp_path / "plain")
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    foreign.create_array("x", shape=(2,), dtype="f4")
    with pytest.raises(ArtifactError, match="not a genreward artifact"):
        open_artifact(tmp_path / "foreign.zarr")
    _write(tmp_path / "a.zarr", _video())
    meta_file = tmp_path / "a.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["genreward"]["complete"] = False
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="incomplete artifact"):
        open_artifact(tmp_path / "a.zarr")
    _write(tmp_path / "b.zarr", _video())
    with pytest.raises(ArtifactError, match="expected a 'keyframes' artifact, found 'goal_video'"):
        open_artifact(tmp_path / "b.zarr", "keyframes")
    meta_file = tmp_path / "b.zarr" / "zarr.json"
    meta_file.write_text("{ not json")
    with pytest.raises(ArtifactError, match="unreadable Zarr store"):
        open_artifact(tmp_path / "b.zarr")


def test_read_array_checks_shape_and_dtype(tmp_path):
    _write(tmp_path / "a.zarr", _video())
    g = open_artifact(tmp_path / "a.zarr")
    with pytest.raises(ArtifactError, match="expected 3 dims"):
        read_array(g, "video", ndim=3)
    with pytest.raises(ArtifactError, match="expected float32"):
        read_array(g, "video", dtype=np.float32)
    with pytest.raises(ArtifactError, match="missing array 'frames'"):
        read_array(g, "frames")


def test_stale_temp_of_dead_writer_is_cleaned(tmp_path):
    target = tmp_path / "a.zarr"
    dead = tmp_path / ".a.zarr.tmp-999999999-deadbeef"
    live = tmp_path / f".a.zarr.tmp-{os.getpid()}-cafecafe"
    dead.mkdir()
    live.mkdir()
    assert clean_stale(target) == [dead]
    assert live.exists()


def test_stable_hash_is_canonical():
    a = {"prompt": "x", "steps": 50, "guidance": 7.5, "size": [64, 64]}
    b = {"size": (64, 64), "guidance": 7.5, "steps": 50.0, "prompt": "x"}
    assert stable_hash(a) == stable_hash(b)
    assert stable_hash(a) != stable_hash({**a, "guidance": 7.0})
    assert stable_hash({"img": np.zeros((2, 2), np.uint8)}) != stable_hash({"img": np.ones((2, 2), np.uint8)})
    assert hash_array(np.zeros(4, np.uint8)) != hash_array(np.zeros(4, np.int8))
    assert canonical_json({"b": 1, "a": Path("x")}) == '{"a":"x","b":1}'
    with pytest.raises(ValueError, match="non-finite"):
        stable_hash({"x": float("nan")})


def test_artifact_hash_follows_content(tmp_path):
    _write(tmp_path / "a.zarr", _video(1))
    _write(tmp_path / "b.zarr", _video(1))
    _write(tmp_path / "c.zarr", _video(2))
    assert (
        artifact_hash(tmp_path / "a.zarr") == artifact_hash(tmp_path / "b.zarr") != artifact_hash(tmp_path / "c.zarr")
    )


def test_cache_miss_then_hit_without_building(tmp_path):
    cache = ContentCache(tmp_path, "goal_videos")
    calls = []

    def create(folder: Path):
        calls.append(folder)
        _write(folder / "video.zarr", _video(3))

    inputs = {"backend": "scripted", "prompt": "pick", "seed": 0}
    first = cache.get_or_create(inputs, create)
    second = cache.get_or_create(dict(reversed(list(inputs.items()))), create)
    assert (first.hit, second.hit) == (False, True) and len(calls) == 1
    assert first.path == second.path and first.key == cache.key(inputs)
    np.testing.assert_array_equal(open_artifact(second.path / "video.zarr")["video"][...], _video(3))
    assert cache.get_or_create({**inputs, "seed": 1}, create).hit is False and len(calls) == 2
    entry = json.loads((first.path / "entry.json").read_text())
    assert entry["inputs"] == inputs and entry["key"] == first.key
    assert list((tmp_path / "goal_videos" / ".locks").iterdir()) == []  # no lock file left per entry


def test_cache_failed_build_leaves_no_entry(tmp_path):
    cache = ContentCache(tmp_path, "goal_videos")

    def broken(folder: Path):
        (folder / "partial").write_text("x")
        raise ValueError("generator crashed")

    with pytest.raises(ValueError):
        cache.get_or_create({"a": 1}, broken)
    assert cache.entries() == [] and cache.get(cache.key({"a": 1})) is None


def _concurrent_writer(root: str, log_dir: str, barrier_file: str) -> str:
    cache = ContentCache(root, "goal_videos")
    while not Path(barrier_file).exists():
        time.sleep(0.005)

    def create(folder: Path):
        (Path(log_dir) / f"build-{os.getpid()}").write_text("1")
        time.sleep(0.5)  # widen the race window
        _write(folder / "video.zarr", _video(4))

    res = cache.get_or_create({"prompt": "same"}, create)
    return res.key


def test_concurrent_writers_produce_one_entry(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    barrier = tmp_path / "go"
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        jobs = [
            pool.apply_async(_concurrent_writer, (str(tmp_path / "cache"), str(logs), str(barrier))) for _ in range(2)
        ]
        time.sleep(1.0)
        barrier.write_text("go")
        keys = [j.get(timeout=120) for j in jobs]
    assert keys[0] == keys[1]
    assert len(list(logs.iterdir())) == 1  # one build, the other process got a hit
    entries = ContentCache(tmp_path / "cache", "goal_videos").entries()
    assert [e.key for e in entries] == [keys[0]]
    assert [p.name for p in (tmp_path / "cache" / "goal_videos").iterdir() if not p.name.startswith(".")] == [keys[0]]
    assert list((tmp_path / "cache" / "goal_videos" / ".locks").iterdir()) == []


def test_cache_cli_ls_show_rm(tmp_path):
    cache = ContentCache(tmp_path, "goal_videos")
    res = cache.get_or_create({"prompt": "pick the puck", "seed": 3}, lambda f: _write(f / "video.zarr", _video()))
    ls = run_cli("cache", "ls", "--root", str(tmp_path))
    assert ls.returncode == 0 and f"goal_videos/{res.key[:12]}" in ls.stdout and "prompt=pick the puck" in ls.stdout
    show = run_cli("cache", "show", f"goal_videos/{res.key[:6]}", "--root", str(tmp_path))
    assert show.returncode == 0 and json.loads(show.stdout)["inputs"]["seed"] == 3
    bad = run_cli("cache", "show", "goal_videos/zzzz", "--root", str(tmp_path))
    assert bad.returncode == 2 and "no goal_videos cache entry" in bad.stderr
    rm = run_cli("cache", "rm", f"goal_videos/{res.key[:6]}", "--root", str(tmp_path))
    assert rm.returncode == 0 and cache.entries() == []
