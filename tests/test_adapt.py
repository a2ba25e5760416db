"""collect_domain_videos + adapt_video_model: clips, from-scratch training, LoRA, quality metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genreward.config import ConfigError, load_config

from .conftest import REPO

TASKS = "[pick-place-v3, shelf-place-v3]"


def _cfg(data: Path, *extra: str):
    return load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={data}",
            f"store.cache_dir={data}/cache",
            f"tasks={TASKS}",
            "runtime.progress=false",
            "domain_videos.episodes_per_task=2",
            "domain_videos.val_episodes_per_task=1",
            "domain_videos.num_frames=9",
            "domain_videos.height=32",
            "domain_videos.width=32",
            "goal_video.num_frames=9",
            "goal_video.height=32",
            "goal_video.width=32",
            "goal_video.steps=2",
            "video_model.from_scratch.vae_steps=4",
            "video_model.from_scratch.steps=6",
            "video_model.from_scratch.vae_channels=[8,8,8,8]",
            "video_model.from_scratch.layers=1",
            "video_model.from_scratch.batch_size=4",
            "video_model.from_scratch.vae_batch_size=2",
            "video_model.checkpoint_every=2",
            "video_model.sample_every=3",
            "video_model.log_every=1",
            "video_model.eval_seeds=1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    from stages import collect_domain_videos

    data = tmp_path_factory.mktemp("domain")
    cfg = _cfg(data)
    metrics = collect_domain_videos.STAGE.execute(cfg)
    return data, cfg, metrics


def test_restored_frames_equal_live_renders():
    """The clip renderer restores recorded physics states: its frames are the live frames."""
    from genreward.envs.config import EnvConfig
    from genreward.envs.experts import expert_clip, expert_policy, rollout
    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from genreward.video.io import resample_indices

    env_cfg = EnvConfig().model_copy(update={"frame_stack": 1})
    live_env = MetaWorldPixelEnv("pick-place-v3", env_cfg, render_size=(32, 32))
    clip_env = MetaWorldPixelEnv("pick-place-v3", env_cfg, render_size=(32, 32))
    try:
        ep = rollout(live_env, expert_policy("pick-place-v3"), seed=3, stop_on_success=True)
        video, success, steps = expert_clip(clip_env, expert_policy("pick-place-v3"), 3, 0.0, 9, tail_frames=0)
    finally:
        live_env.close(), clip_env.close()
    assert success and ep.success and steps == ep.first_success + 1 == len(ep.frames) - 1
    expected = ep.frames[resample_indices(len(ep.frames), 9)]
    assert video.shape == (9, 32, 32, 3)
    assert np.abs(video.astype(int) - expected.astype(int)).max() == 0
    assert np.abs(video[0].astype(int) - video[-1].astype(int)).mean() > 1.0  # the arm moved


def test_collect_domain_videos_writes_labelled_split_clips(domain):
    from genreward.adapt.domain import TRAIN, VAL, DomainClips

    data, cfg, metrics = domain
    ds = DomainClips(data / "domain_videos.zarr")
    assert ds.video.shape == (6, 9, 32, 32, 3) and ds.video.dtype == np.uint8
    assert ds.tasks == ["pick-place-v3", "shelf-place-v3"]
    assert ds.prompts == [cfg.domain_videos.captions[t] for t in ds.tasks]
    assert list(ds.task_id) == [0, 0, 0, 1, 1, 1] and list(ds.split) == [TRAIN, TRAIN, VAL] * 2
    seeds = ds.group["seed"][:]
    assert len(set(seeds.tolist())) == 6  # no clip shares its initial state with another
    assert list(ds.group["noise_std"][:]) == pytest.approx([0.0, 0.1, 0.0, 0.0, 0.1, 0.0])
    assert metrics["success_rate"] == 1.0 and metrics["per_task"]["shelf-place-v3"]["train_clips"] == 2
    # different tasks look different: final frames of two tasks differ more than two clips of one task
    f = ds.video[:, -1].astype(np.float32)
    within = np.abs(f[0] - f[1]).mean()
    across = np.abs(f[0] - f[3]).mean()
    assert across > within
    assert (data / "domain_videos_previews" / "pick-place-v3.gif").stat().st_size > 1000


def test_quality_metrics_on_known_clips():
    from genreward.adapt.quality import evaluate_samples, frame_distances, nearest_task

    real = np.zeros((3, 2, 4, 4, 3), np.uint8)
    real[1] += 255
    real[2, :, :2] = 255  # half white
    clip = np.full((2, 4, 4, 3), 255, np.uint8)
    assert frame_distances(clip, real) == pytest.approx([1.0, 0.0, 0.5])
    finals, tasks = real[:, -1], np.array([0, 1, 1])
    assert nearest_task(clip[-1], finals, tasks) == 1
    rep = evaluate_samples({0: [clip], 1: [clip]}, real, finals, tasks)
    assert rep["task_accuracy"] == 0.5 and rep["nearest_clip_mse"] == 0.0
    assert rep["confusion"] == {"0": {"1": 1}, "1": {"1": 1}}


def test_adapted_model_config_errors(tmp_path):
    cfg = load_config(REPO / "params.yaml", overrides=["tasks=[reach-v3]", "prompts.reach-v3=reach it"])
    assert cfg.domain_videos.captions["reach-v3"] == "reach it"  # no caption: the model trains on the prompt
    assert cfg.domain_videos.captions["pick-place-v3"] == cfg.prompt("pick-place-v3")
    with pytest.raises(ConfigError, match=r"domain_videos.captions: reach-v4: unknown task"):
        load_config(REPO / "params.yaml", overrides=["domain_videos.captions.reach-v4=reach"])
    with pytest.raises(ConfigError, match=r"goal_video: the from-scratch video model is trained on 17x64x64"):
        load_config(REPO / "params.yaml", overrides=["goal_video.num_frames=9"])
    with pytest.raises(ConfigError, match=r"use_adapted: video_model.mode is none"):
        load_config(REPO / "params.yaml", overrides=["video_model.mode=none"])
    with pytest.raises(ConfigError, match=r"vae_frames=5: the causal VAE decodes 8k\+1"):
        load_config(REPO / "params.yaml", overrides=["video_model.from_scratch.vae_frames=5"])
    # the adapted model is missing: the generator says where it looked and what to run
    from genreward.video.base import GenerationError
    from stages.generate_goal_videos import plan

    cfg = load_config(REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}", "tasks=[pick-place-v3]"])
    with pytest.raises(
        GenerationError,
        match=r"adapted video model not found at .*video_model/pipeline: run stage "
        r"adapt_video_model first",
    ):
        plan(cfg, "pick-place-v3")


def test_from_scratch_trains_resumes_and_generates_through_the_production_path(domain, monkeypatch):
    import genreward.adapt.train as train
    from stages import adapt_video_model, encode_goal_latents, generate_goal_videos

    data, cfg, _ = domain
    real_update = train.denoiser_update
    calls = {"n": 0}

    def crash_at_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return real_update(*a, **k)

    monkeypatch.setattr(train, "denoiser_update", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        adapt_video_model.STAGE.execute(cfg)
    partial = data / ".video_model.partial"
    assert not (data / "video_model").exists()  # nothing a later stage could read as valid
    assert json.loads((partial / "transformer" / "meta.json").read_text())["meta"]["step"] == 4
    assert json.loads((partial / "vae" / "meta.json").read_text())["meta"]["step"] == 4
    monkeypatch.setattr(train, "denoiser_update", real_update)
    calls["n"] = 0
    seen = []
    monkeypatch.setattr(train, "denoiser_update", lambda *a, **k: seen.append(1) or real_update(*a, **k))
    metrics = adapt_video_model.STAGE.execute(cfg)
    assert len(seen) == 2  # resumed at update 4 of 6: the VAE phase was not repeated either
    assert not partial.exists()
    pipe_dir = data / "video_model" / "pipeline"
    assert {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"} <= {
        p.name for p in pipe_dir.iterdir()
    }
    assert set(metrics["model"]) >= {"nearest_clip_mse", "task_accuracy"} and "untrained" in metrics
    assert metrics["chance_accuracy"] == 0.5 and metrics["model"]["samples"] == 2
    curves = (data / "video_model_curves" / "transformer.csv").read_text().splitlines()
    assert curves[0].startswith("step,loss") and len(curves) == 1 + 6
    assert (data / "video_model_samples" / "transformer_step000003.gif").exists()
    saved = json.loads((data / "video_model_metrics.json").read_text())
    assert saved["model"]["task_accuracy"] == metrics["model"]["task_accuracy"]

    # generate_goal_videos loads the saved folder with the same from_pretrained code as real CogVideoX
    gcfg = cfg.for_task("pick-place-v3")
    generator, spec, _ = generate_goal_videos.plan(gcfg, "pick-place-v3")
    assert generator.cfg.model == str(pipe_dir) and generator.cfg.max_sequence_length == 24
    summary = generate_goal_videos.STAGE.execute(gcfg)
    assert summary["pick-place-v3"]["cache_hit"] is False and generator.identity()["weights_sha256"]
    from genreward.store.artifacts import open_artifact, read_array

    video = read_array(open_artifact(data / "goal_videos" / "pick-place-v3.zarr", "goal_video"), "video")
    assert video.shape == (9, 32, 32, 3) and video.std() > 1.0
    # the latent encoder of the video reward is the adapted VAE
    encode_goal_latents.STAGE.execute(gcfg)
    lat = open_artifact(data / "goal_latents" / "pick-place-v3.zarr", "goal_latents")
    assert lat.attrs["encoder"]["vae"].endswith("video_model/pipeline/vae") and lat.attrs["encoder"]["weights_sha256"]
    assert read_array(lat, "latent").shape[0] == 8  # the adapted VAE's latent channels


def test_from_scratch_recipe_returns_a_trained_video_model(domain, tmp_path):
    from genreward.adapt.domain import DomainClips
    from genreward.adapt.recipes import Job, Sampler, TrainedVideoModel, train_from_scratch

    data, cfg, _ = domain
    clips = DomainClips(data / "domain_videos.zarr")
    sampled = []
    trained = train_from_scratch(
        Job(
            cfg.video_model,
            cfg.goal_video,
            clips,
            tmp_path / "work",
            "cpu",
            on_sample=lambda tag, step, c: sampled.append((tag, step, [x.shape for x in c])),
        )
    )
    assert isinstance(trained, TrainedVideoModel) and trained.mode == "from_scratch" and trained.images is None
    assert [len(trained.histories[k]) for k in ("vae", "transformer")] == [4, 6]  # log_every=1
    assert trained.max_text_len == cfg.video_model.from_scratch.max_text_len
    assert (
        trained.untrained_dir == tmp_path / "work" / "untrained"
        and (trained.untrained_dir / "model_index.json").exists()
    )
    assert not trained.pipe.transformer.training and not trained.pipe.vae.training
    # samples every sample_every=3 updates, one clip per prompt of the clips, handed to the caller
    assert sampled == [("transformer", s, [(9, 32, 32, 3)] * len(clips.prompts)) for s in (3, 6)]
    untrained = trained.untrained_sampler(cfg.goal_video, clips.prompts, "cpu")
    assert isinstance(untrained, Sampler) and untrained.pipe is not trained.pipe
    trained.save(tmp_path / "out")
    assert (tmp_path / "out" / "pipeline" / "model_index.json").exists() and not (tmp_path / "out" / "lora").exists()


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_lora_on_a_saved_pretrained_style_pipeline(domain, tmp_path, mode):
    from genreward.video.base import VideoSpec
    from genreward.video.cogvideox_build import build_cogvideox_pipeline
    from genreward.video.diffusers_backend import DiffusersGenerator
    from stages import adapt_video_model

    src, _, _ = domain
    base = tmp_path / f"base-{mode}"
    build_cogvideox_pipeline(["a robot arm", "puck shelf"], mode).save_pretrained(str(base))
    data = tmp_path / "data"
    data.mkdir()
    (data / "domain_videos.zarr").symlink_to(src / "domain_videos.zarr")
    cfg = _cfg(
        data,
        "video_model.mode=lora",
        "video_model.lora.steps=3",
        "video_model.lora.rank=4",
        "video_model.lora.gradient_checkpointing=false",
        f"goal_video.diffusers.model={base}",
        f"goal_video.diffusers.mode={mode}",
        "goal_video.diffusers.max_sequence_length=16",
    )
    metrics = adapt_video_model.STAGE.execute(cfg)
    lora = data / "video_model" / "lora" / "pytorch_lora_weights.safetensors"
    assert lora.exists() and metrics["mode"] == "lora" and "untrained" in metrics
    from safetensors.torch import load_file

    weights = load_file(str(lora))
    assert (
        any("lora_B" in k for k in weights)
        and max(float(v.abs().max()) for k, v in weights.items() if "lora_B" in k) > 0
    )
    d = cfg.diffusers_config()
    assert d.lora == data / "video_model" / "lora" and d.model == str(base)
    image = np.zeros((32, 32, 3), np.uint8) if mode == "i2v" else None
    spec = VideoSpec(
        prompt="a robot arm", num_frames=9, height=32, width=32, seed=0, steps=2, guidance=1.0, image=image
    )
    with_lora = DiffusersGenerator(d).generate(spec)
    without = DiffusersGenerator(d.model_copy(update={"lora": None, "use_adapted": False})).generate(spec)
    assert with_lora.shape == without.shape == (9, 32, 32, 3)
    assert np.abs(with_lora.astype(int) - without.astype(int)).max() > 0  # the adapter changes the output
