from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import genreward  # noqa: F401  (before diffusers/transformers)
from genreward.config import load_config
from genreward.envs import EnvConfig
from genreward.store import ContentCache, open_artifact
from genreward.video.base import GenerationError, VideoSpec
from genreward.video.cogvideox_build import build_cogvideox_pipeline
from genreward.video.config import DEFAULT_PROMPTS, DiffusersConfig, FileConfig, ScriptedConfig
from genreward.video.diffusers_backend import DiffusersGenerator
from genreward.video.file import FileGenerator
from genreward.video.generate import generate_cached
from genreward.video.io import VideoError, read_video, validate_video, write_gif, write_mp4
from genreward.video.latents import LatentEncoderError
from genreward.video.scripted import ScriptedGenerator

from .conftest import REPO, run_cli

PROMPT = DEFAULT_PROMPTS["pick-place-v3"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny T2V and I2V CogVideoX pipelines saved in the standard diffusers layout."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for mode in ("t2v", "i2v"):
        build_cogvideox_pipeline(DEFAULT_PROMPTS.values(), mode).save_pretrained(root / mode)
        paths[mode] = root / mode
    return paths


def _gen(path, mode="t2v", **kw):
    kw = {"use_adapted": False, **kw}
    return DiffusersGenerator(
        DiffusersConfig(model=str(path), mode=mode, max_sequence_length=16, **kw), device="cpu", progress=False
    )


def _spec(seed=0, image=None, prompt=PROMPT, frames=9):
    return VideoSpec(
        prompt=prompt,
        num_frames=frames,
        height=32,
        width=32,
        steps=3,
        guidance=6.0,
        seed=seed,
        task="pick-place-v3",
        image=image,
    )


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_diffusers_generates_through_from_pretrained_deterministically(tiny_models, mode):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8) if mode == "i2v" else None
    a = _gen(tiny_models[mode], mode).generate(_spec(0, image))
    b = _gen(tiny_models[mode], mode).generate(_spec(0, image))  # a fresh load: same bytes
    c = _gen(tiny_models[mode], mode).generate(_spec(1, image))
    assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0  # another seed, another video
    if mode == "i2v":
        other = _gen(tiny_models[mode], mode).generate(_spec(0, 255 - image))
        assert not np.array_equal(a, other)  # the conditioning image matters


def test_prompt_changes_the_video(tiny_models):
    g = _gen(tiny_models["t2v"])
    a = g.generate(_spec(0, prompt=DEFAULT_PROMPTS["pick-place-v3"]))
    b = g.generate(_spec(0, prompt=DEFAULT_PROMPTS["shelf-place-v3"]))
    assert not np.array_equal(a, b)


def test_cache_hit_returns_identical_bytes_without_building_a_pipeline(tiny_models, tmp_path, monkeypatch):
    cache = ContentCache(tmp_path, "goal_videos")
    first_gen = _gen(tiny_models["t2v"])
    first = generate_cached(first_gen, _spec(0), cache)
    assert not first.hit and first_gen.loads == 1 and first.seconds > 0

    def no_load(self):
        raise AssertionError("a cache hit must not construct a pipeline")

    monkeypatch.setattr(DiffusersGenerator, "_load", no_load)
    second_gen = _gen(tiny_models["t2v"])
    second = generate_cached(second_gen, _spec(0), cache)
    assert second.hit and second_gen.loads == 0 and second.seconds == 0
    assert second.key == first.key
    assert second.video.tobytes() == first.video.tobytes()
    assert len(cache.entries()) == 1


def test_cache_key_covers_what_determines_the_video(tiny_models, tmp_path):
    from genreward.video.generate import cache_inputs

    cache = ContentCache(tmp_path, "goal_videos")
    g = _gen(tiny_models["t2v"])
    base = cache.key(cache_inputs(g, _spec(0)))
    variants = [
        cache_inputs(g, _spec(1)),
        cache_inputs(g, _spec(0, prompt="a robot arm opens the drawer")),
        cache_inputs(g, _spec(0, frames=17)),
        cache_inputs(_gen(tiny_models["i2v"], "i2v"), _spec(0)),  # other weights
        cache_inputs(_gen(tiny_models["t2v"], dtype="bfloat16"), _spec(0)),
        cache_inputs(g, _spec(0, image=np.zeros((32, 32, 3), np.uint8))),
    ]
    keys = {cache.key(v) for v in variants}
    assert base not in keys and len(keys) == len(variants)
    assert cache.key(cache_inputs(_gen(tiny_models["t2v"]), _spec(0))) == base  # stable across instances


def test_missing_model_and_mode_mismatch_are_clear(tiny_models, tmp_path, monkeypatch):
    with pytest.raises(GenerationError, match="video model folder not found: .*nope"):
        _gen(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenerationError, match=r"local folder .*empty.*diffusers pipeline folder \(model_index.json"):
        _gen(tmp_path / "empty").generate(_spec())
    with pytest.raises(GenerationError, match="text-to-video model.*mode=t2v"):
        _gen(tiny_models["t2v"], "i2v").generate(_spec(image=np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(GenerationError, match="image-to-video needs a conditioning image"):
        _gen(tiny_models["i2v"], "i2v").generate(_spec())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = DiffusersGenerator(DiffusersConfig(model="THUDM/CogVideoX-2b", use_adapted=False), device="cpu")
    assert hub.local_files_only and hub.identity()["commit"] is None
    with pytest.raises(GenerationError) as info:
        hub.generate(_spec())
    msg = str(info.value)
    assert "hub id 'THUDM/CogVideoX-2b'" in msg and "offline" in msg and str(tmp_path / "hf") in msg
    assert "goal_video.diffusers.model=/path/to/that/folder" in msg


def test_pipeline_folder_without_vae_and_missing_local_folders_are_named(tiny_models, tmp_path):
    from genreward.video.diffusers_backend import is_local
    from genreward.video.latents import load_cogvideox_vae

    broken = tmp_path / "pipe"
    shutil.copytree(tiny_models["t2v"], broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(GenerationError) as info:
        _gen(broken).generate(_spec())
    assert f"local folder {broken}: the pipeline's vae/ subfolder is missing" in str(info.value)
    assert "config.json" not in str(info.value)  # diffusers would blame the pipeline folder itself
    with pytest.raises(LatentEncoderError, match=r"pipe: the pipeline's vae/ subfolder is missing"):
        load_cogvideox_vae(str(broken))
    # a relative path that cannot be a hub id is a local folder, reported missing with its stage
    assert is_local("data/video_model/pipeline") and not is_local("THUDM/CogVideoX-2b")
    with pytest.raises(GenerationError, match=r"adapted video model not found at .*: run stage adapt_video_model"):
        DiffusersGenerator(DiffusersConfig(model="data/video_model/pipeline"))
    cfg = load_config(REPO / "params.yaml", overrides=["store.data_dir=."])
    assert cfg.diffusers_config().model == "./video_model/pipeline"  # never read as the hub id video_model/pipeline


def test_empty_prompt_and_bad_spec_rejected():
    with pytest.raises(GenerationError, match="empty prompt"):
        _spec(prompt="   ")
    with pytest.raises(GenerationError, match=r"conditioning image must be uint8 \[H, W, 3\]"):
        _spec(image=np.zeros((32, 32), np.uint8))


def test_config_rejects_frame_counts_cogvideox_cannot_make(repo_root):
    from genreward.config import ConfigError

    with pytest.raises(ConfigError, match="goal_video: num_frames=16: CogVideoX needs 8k\\+1 frames"):
        load_config(repo_root / "params.yaml", overrides=["goal_video.backend=diffusers", "goal_video.num_frames=16"])
    with pytest.raises(ConfigError, match="prompts: pick-place-v3: empty prompt"):
        load_config(repo_root / "params.yaml", overrides=["prompts.pick-place-v3= "])


def test_scripted_oracle_video(tmp_path):
    g = ScriptedGenerator(ScriptedConfig(), EnvConfig())
    spec = VideoSpec(prompt=PROMPT, num_frames=17, height=48, width=64, seed=3, task="pick-place-v3")
    a, b = g.generate(spec), g.generate(spec)
    assert a.shape == (17, 48, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert g.last_success and g.describe()["oracle"] is True
    assert np.abs(a[0].astype(int) - a[-1].astype(int)).mean() > 2  # the scene changed: the task was done


def test_file_backend_reads_validates_and_resamples(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "v.npy", video)
    write_gif(tmp_path / "v.gif", video)
    write_mp4(tmp_path / "v.mp4", video)
    spec = VideoSpec(prompt=PROMPT, num_frames=9, height=32, width=32, task="pick-place-v3")
    for name in ("v.npy", "v.gif", "v.mp4"):
        out = FileGenerator(FileConfig(paths={"pick-place-v3": tmp_path / name}), "pick-place-v3").generate(spec)
        assert out.shape == (9, 32, 32, 3) and out.dtype == np.uint8
    assert read_video(tmp_path / "v.gif").shape == (12, 40, 40, 3)
    np.testing.assert_array_equal(read_video(tmp_path / "v.npy"), video)
    with pytest.raises(GenerationError, match="no entry for 'pick-place-v3'"):
        FileGenerator(FileConfig(), "pick-place-v3")
    with pytest.raises(GenerationError, match="not found"):
        FileGenerator(FileConfig(paths={"pick-place-v3": tmp_path / "missing.mp4"}), "pick-place-v3")


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((4, 8, 8), np.uint8), r"expected 4 dims \[T, H, W, 3\]"),
        (np.zeros((4, 8, 8, 2), np.uint8), "expected 3 colour channels"),
        (np.zeros((0, 8, 8, 3), np.uint8), "0 frame"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN or inf"),
        (np.full((2, 8, 8, 3), 3.0, np.float32), r"must be in \[0, 1\]"),
        (np.zeros((2, 8, 8, 3), np.int64), "dtype int64 not supported"),
    ],
)
def test_bad_videos_are_clear_errors(data, match):
    with pytest.raises(VideoError, match=match):
        validate_video(data)


def test_corrupt_and_unsupported_files(tmp_path):
    (tmp_path / "bad.mp4").write_text("a text file, not a video\n")
    with pytest.raises(VideoError) as info:
        read_video(tmp_path / "bad.mp4")
    msg = str(info.value)  # one line naming the file, not ffmpeg's build banner
    assert msg.startswith(f"{tmp_path / 'bad.mp4'}: not a readable .mp4 video (ffmpeg: ") and "\n" not in msg
    assert "ffmpeg version" not in msg and "configuration:" not in msg
    with pytest.raises(GenerationError, match=r"not a readable \.mp4 video .*set goal_video.file.paths.reach-v3"):
        FileGenerator(FileConfig(paths={"reach-v3": tmp_path / "bad.mp4"}), "reach-v3").generate(_spec())
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(VideoError, match="unsupported video format"):
        read_video(tmp_path / "x.txt")
    np.save(tmp_path / "gray.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(VideoError, match="expected 4 dims"):
        read_video(tmp_path / "gray.npy")


def test_stage_writes_artifact_previews_and_reuses_cache(tmp_path, tiny_models):
    from stages import generate_goal_videos as stage
    from stages.table import Item

    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={tmp_path}/data",
            f"store.cache_dir={tmp_path}/cache",
            "tasks=[pick-place-v3]",
            "goal_video.backend=diffusers",
            f"goal_video.diffusers.model={tiny_models['i2v']}",
            "goal_video.diffusers.mode=i2v",
            "goal_video.diffusers.use_adapted=false",
            "goal_video.num_frames=9",
            "goal_video.height=32",
            "goal_video.width=32",
            "goal_video.steps=2",
            "goal_video.diffusers.max_sequence_length=16",
            "runtime.device=cpu",
            "runtime.progress=false",
        ],
    )
    first = stage.STAGE.execute(cfg)
    second = stage.STAGE.execute(cfg)
    assert first["pick-place-v3"]["cache_hit"] is False and second["pick-place-v3"]["cache_hit"] is True
    assert second["pick-place-v3"]["generation_seconds"] == 0
    _, out = stage.STAGE.paths(cfg, Item("pick-place-v3"))
    g = open_artifact(out["video"], "goal_video")
    assert g["video"].shape == (9, 32, 32, 3)
    attrs = dict(g.attrs)
    assert attrs["prompt"] == PROMPT and attrs["oracle"] is False and attrs["generator"]["mode"] == "i2v"
    assert attrs["cache_key"] == first["pick-place-v3"]["cache_key"] and attrs["seed"] == 0 and attrs["steps"] == 2
    assert attrs["genreward"]["params"]["goal_video"]["diffusers"]["model"] == str(tiny_models["i2v"])
    assert read_video(out["gif"]).shape[0] == 9 and read_video(out["mp4"]).shape[0] == 9


class _WritesMarker:
    """Unpickling this writes ``path``: what a planted pickle record would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.write_text, (Path(self.path), "unpickled"))


def _pickle_record(marker) -> bytes:
    """A Prefect result record that names the pickle serializer; reading it runs its payload."""
    from prefect.results import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    meta = ResultRecordMetadata(serializer=PickleSerializer(), storage_key="planted")
    return ResultRecord(metadata=meta, result=_WritesMarker(marker)).serialize()


@pytest.mark.long(seconds=60)
def test_flow_keeps_no_prefect_records_and_never_reads_planted_ones(tmp_path):
    """The content cache is the only cache: Prefect writes no result record (success or failure)
    into the project's folders, and a pickle record planted where the records used to live
    (``store.cache_dir/prefect-results/goal-video-<key>``) is never read."""
    from prefect.results import ResultRecord

    args = [
        "stage",
        "generate_goal_videos",
        "--task",
        "reach-v3",
        "--set",
        "tasks=[reach-v3]",
        "--set",
        "goal_video.backend=scripted",
        "--set",
        "prompts.reach-v3=a robot arm reaches the red target",
        "--set",
        "goal_video.num_frames=5",
        "--set",
        "goal_video.height=32",
        "--set",
        "goal_video.width=32",
        "--set",
        f"store.data_dir={tmp_path}/data",
        "--set",
        f"store.cache_dir={tmp_path}/cache",
    ]
    records = tmp_path / "cache" / "prefect-results"

    def prefect_files():
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "prefect" in p.name.lower())

    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    key = json.loads(first.stdout[first.stdout.index("{") :])["reach-v3"]["cache_key"]
    assert f"goal video {key[:12]} (generated in" in first.stderr
    assert prefect_files() == []  # no record folder, no record
    artifact = tmp_path / "data/goal_videos/reach-v3.zarr"
    attrs = dict(open_artifact(artifact, "goal_video").attrs)  # the flow generated it: recorded as new
    assert attrs["cache_hit"] is False and attrs["generation_seconds"] > 0 and attrs["cache_key"] == key

    # The planted record is live: Prefect's own reader runs its payload.
    probe = tmp_path / "probe-marker"
    ResultRecord.deserialize(_pickle_record(probe))
    assert probe.read_text() == "unpickled"
    marker = tmp_path / "planted-marker"
    records.mkdir(parents=True)
    (records / f"goal-video-{key}").write_bytes(_pickle_record(marker))

    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not marker.exists()
    assert "Finished in state Cached" not in second.stderr and f"goal video {key[:12]} (cache hit)" in second.stderr
    assert sorted(p.name for p in records.iterdir()) == [f"goal-video-{key}"]  # nothing added beside it
    attrs = dict(open_artifact(artifact, "goal_video").attrs)
    assert attrs["cache_hit"] is True and attrs["generation_seconds"] == 0

    # A failing goal-video task leaves no record in the project's folders (Prefect keeps the failed
    # flow run's exception, as JSON, under its own home)
    shutil.rmtree(records)
    np.save(tmp_path / "one-frame.npy", np.zeros((1, 8, 8, 3), np.uint8))
    failed = run_cli(
        *args, "--set", "goal_video.backend=file", "--set", f"goal_video.file.paths.reach-v3={tmp_path}/one-frame.npy"
    )
    assert failed.returncode != 0 and "needs at least 2 frames, found 1" in failed.stderr
    assert prefect_files() == [] and not marker.exists()
    wrong = run_cli("stage", "env_check", "--task", "pick-place-v3")
    assert wrong.returncode == 2 and "not per-task" in wrong.stderr


def test_lora_weights_apply_on_top(tiny_models, tmp_path):
    """A peft LoRA saved in diffusers' format changes the video; scale 0 gives the base model back."""
    import torch
    from diffusers import CogVideoXPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = CogVideoXPipeline.from_pretrained(tiny_models["t2v"]).transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    CogVideoXPipeline.save_lora_weights(
        tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(transformer)
    )

    base = _gen(tiny_models["t2v"]).generate(_spec())
    lora_gen = _gen(tiny_models["t2v"], lora=tmp_path / "lora")
    with_lora = lora_gen.generate(_spec())
    scale0 = _gen(tiny_models["t2v"], lora=tmp_path / "lora", lora_scale=0.0).generate(_spec())
    assert np.abs(base.astype(int) - with_lora.astype(int)).mean() > 2.0
    np.testing.assert_array_equal(base, scale0)
    assert lora_gen.identity()["lora_sha256"] and lora_gen.identity()["lora_scale"] == 1.0
    with pytest.raises(GenerationError, match="LoRA weights not found"):
        _gen(tiny_models["t2v"], lora=tmp_path / "missing")
