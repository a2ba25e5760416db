from __future__ import annotations

import numpy as np
import pytest

import genreward  # noqa: F401
from genreward.config import load_config
from genreward.store import open_artifact
from genreward.video.config import LatentConfig
from genreward.video.io import VideoError
from genreward.video.latents import LatentEncoderError, VideoLatentEncoder, latent_cosine
from genreward.vision.clip import CLIPScorer, CLIPWeightsError, choose_keyframe, select_index
from genreward.vision.config import KeyframeConfig

from .conftest import REPO

PROMPT = "a robot arm picks up the puck and places it at the target"


@pytest.fixture(scope="module")
def scorer():
    import torch

    torch.manual_seed(0)
    return CLIPScorer("ViT-B-32", pretrained=None)  # real open_clip model, random weights


def _optimised_frame(scorer, text_emb, steps=25):
    """A 224x224 frame optimised so that its CLIP embedding points at ``text_emb``."""
    import torch

    mean = torch.tensor(scorer.model.visual.preprocess_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(scorer.model.visual.preprocess_cfg["std"]).view(3, 1, 1)
    x = torch.full((1, 3, 224, 224), 0.0, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    for _ in range(steps):
        pixels = torch.sigmoid(x)
        emb = scorer.model.encode_image((pixels - mean) / std)
        loss = -torch.nn.functional.cosine_similarity(emb, text_emb[None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (torch.sigmoid(x)[0].permute(1, 2, 0).detach().numpy() * 255).round().astype(np.uint8)


def test_clip_argmax_finds_the_frame_that_matches_the_prompt(scorer):
    text = scorer.encode_text([PROMPT])
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    video[5] = _optimised_frame(scorer, text)
    choice = choose_keyframe(video, PROMPT, KeyframeConfig(selector="clip", clip_pretrained=None), scorer=scorer)
    assert choice.index == 5 and choice.selector == "clip"
    others = np.delete(choice.scores, 5)
    assert choice.scores[5] > others.max() + 0.05, choice.scores
    assert choice.model["model"] == "ViT-B-32" and choice.model["texts"] == [PROMPT]
    # Temporal prior: only the last 25% (frames 6, 7) may be chosen.
    late = choose_keyframe(
        video, PROMPT, KeyframeConfig(selector="clip", clip_pretrained=None, last_fraction=0.25), scorer=scorer
    )
    assert late.index in (6, 7) and late.index == 6 + int(np.argmax(late.scores[6:]))


def test_extra_prompts_average_normalised_embeddings(scorer):
    import torch

    a, b = scorer.encode_text(["a robot"]), scorer.encode_text(["a red cube on a shelf"])
    both = scorer.encode_text(["a robot", "a red cube on a shelf"])
    expected = (a + b) / (a + b).norm()
    assert torch.allclose(both, expected, atol=1e-5) and abs(float(both.norm()) - 1) < 1e-5
    with pytest.raises(ValueError, match="non-empty prompt"):
        scorer.encode_text(["  "])


def test_select_index_and_last_selector():
    assert select_index(np.array([0.1, 0.9, 0.2, 0.3], np.float32)) == 1
    assert select_index(np.array([0.1, 0.9, 0.2, 0.3], np.float32), last_fraction=0.5) == 3
    assert select_index(np.array([np.nan, 0.2, np.nan], np.float32)) == 1
    video = np.zeros((7, 16, 16, 3), np.uint8)
    last = choose_keyframe(video, PROMPT, KeyframeConfig(selector="last"))
    assert last.index == 6 and np.isnan(last.scores).all() and last.selector == "last"
    with pytest.raises(VideoError, match="need at least 2"):
        choose_keyframe(video[:1], PROMPT, KeyframeConfig(selector="last"))


def test_missing_clip_weights_are_clear(tmp_path, monkeypatch):
    with pytest.raises(CLIPWeightsError, match="CLIP checkpoint not found: .*missing.bin"):
        CLIPScorer("ViT-B-32", str(tmp_path / "missing.bin"))
    with pytest.raises(CLIPWeightsError, match="unknown open_clip model 'ViT-Q-99'"):
        CLIPScorer("ViT-Q-99", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CLIPWeightsError) as info:
        CLIPScorer("ViT-B-32", "laion2b_s34b_b79k")
    msg = str(info.value)
    assert "laion2b_s34b_b79k" in msg and str(tmp_path / "hf") in msg and "keyframes.clip_pretrained=" in msg


@pytest.fixture(scope="module")
def expert_videos():
    from genreward.envs import EnvConfig
    from genreward.video.base import VideoSpec
    from genreward.video.config import ScriptedConfig
    from genreward.video.scripted import ScriptedGenerator

    g = ScriptedGenerator(ScriptedConfig(), EnvConfig())

    def spec(task):
        return VideoSpec(prompt="x", num_frames=17, height=64, width=64, seed=0, task=task)

    return {t: g.generate(spec(t)) for t in ("pick-place-v3", "shelf-place-v3")}


@pytest.fixture(scope="module")
def encoder():
    return VideoLatentEncoder.from_config(LatentConfig(vae="random", num_frames=16, size=64))


def test_latent_shapes_determinism_and_similarity(encoder, expert_videos):
    v = expert_videos["pick-place-v3"]
    fresh = VideoLatentEncoder.from_config(LatentConfig(vae="random", num_frames=16, size=64, memo_mb=0))
    a, b = encoder.encode(v), fresh.encode(v)  # the same random VAE (seeded); b without a memo
    assert len(fresh.memo) == 0
    assert a.shape == (4, 4, 8, 8) and a.dtype == np.float32  # 16 frames -> 4 latent frames, 64 px -> 8
    np.testing.assert_array_equal(a, b)
    assert latent_cosine(a, b) == pytest.approx(1.0, abs=1e-9)
    shuffled = encoder.encode(v[np.random.default_rng(0).permutation(len(v))])
    other = encoder.encode(expert_videos["shelf-place-v3"])
    assert latent_cosine(a, shuffled) < 0.95
    assert latent_cosine(a, other) < 0.99
    batch = encoder.encode_batch([v, expert_videos["shelf-place-v3"]])
    np.testing.assert_allclose(batch[0], a, atol=1e-5)
    assert encoder.identity()["vae"] == "random" and encoder.identity()["num_frames"] == 16


def test_memo_encodes_each_input_once_and_drops_the_least_recently_used(expert_videos):
    from genreward.video.latents import LatentMemo

    enc = VideoLatentEncoder.from_config(LatentConfig(vae="random", num_frames=16, size=64))
    calls = []
    encode = enc.vae.encode
    enc.vae.encode = lambda x: calls.append(len(x)) or encode(x)
    v, w = expert_videos["pick-place-v3"], expert_videos["shelf-place-v3"]
    first = enc.encode_batch([v, w, v])  # the repeat is encoded once
    assert calls == [2] and (enc.memo.misses, enc.memo.hits) == (2, 1)
    np.testing.assert_array_equal(first[0], first[2])
    again = enc.encode_batch([w, v])
    assert calls == [2] and enc.memo.hits == 3  # nothing encoded: both from the memo
    np.testing.assert_array_equal(again, first[[1, 0]])
    frames = enc.encode_frames(v[:5])  # single frames: their own entries (another setting)
    assert calls == [2, 5] and len(enc.memo) == 7
    np.testing.assert_array_equal(enc.encode_frames(v[3:5]), frames[3:5])
    assert calls == [2, 5]

    memo = LatentMemo(max_bytes=3 * 8)  # room for three float64 scalars
    seen = []

    def square(xs):
        seen.extend(int(x[0]) for x in xs)
        return [np.float64(x[0]) ** 2 for x in xs]

    inputs = [np.array([k], np.uint8) for k in range(5)]
    assert memo.map(inputs[:3], square) == [0, 1, 4] and seen == [0, 1, 2]
    assert memo.map([inputs[0]], square) == [0] and seen == [0, 1, 2]  # 0 is now the most recent
    memo.map([inputs[3]], square)  # full: 1, the least recently used, goes
    assert memo.map([inputs[1], inputs[0]], square) == [1, 0] and seen == [0, 1, 2, 3, 1]
    assert len(LatentMemo(0).map(inputs, square)) == 5  # 0 bytes: nothing kept, every call encodes
    with pytest.raises(RuntimeError, match="returned 1 outputs for 2 inputs"):
        LatentMemo(100).map(inputs[:2], lambda xs: [0.0])


def test_encoder_from_config_is_shared_until_its_vae_files_change(tmp_path):
    from genreward.video.cogvideox_build import build_cogvideox_pipeline
    from genreward.video.latents import encoder_from_config

    build_cogvideox_pipeline([PROMPT], "t2v").save_pretrained(tmp_path / "model")
    cfg = load_config(
        REPO / "params.yaml",
        overrides=["latents.vae=path", f"latents.path={tmp_path / 'model'}", f"store.cache_dir={tmp_path / 'cache'}"],
    )
    a = encoder_from_config(cfg)
    assert encoder_from_config(cfg) is a  # one load per process: every task's terms share it
    weights = next((tmp_path / "model" / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # the same bytes, a new mtime: loaded again
    b = encoder_from_config(cfg)
    assert b is not a and len(b.memo) == 0


def test_posterior_sampling_is_seeded(expert_videos):
    v = expert_videos["pick-place-v3"]
    s1 = VideoLatentEncoder.from_config(LatentConfig(vae="random", sample=True, seed=3)).encode(v)
    s2 = VideoLatentEncoder.from_config(LatentConfig(vae="random", sample=True, seed=3)).encode(v)
    mean = VideoLatentEncoder.from_config(LatentConfig(vae="random", sample=False, seed=3)).encode(v)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, mean)


def test_encoder_loads_the_vae_of_a_pipeline_folder(tmp_path, expert_videos):
    from genreward.video.cogvideox_build import build_cogvideox_pipeline

    pipe = build_cogvideox_pipeline([PROMPT], "t2v")
    pipe.save_pretrained(tmp_path / "model")
    enc = VideoLatentEncoder.from_config(LatentConfig(vae="generator"), generator_model=str(tmp_path / "model"))
    assert enc.identity()["vae"].endswith("vae") and len(enc.identity()["weights_sha256"]) == 64
    assert enc.encode(expert_videos["pick-place-v3"]).shape == (4, 4, 8, 8)
    with pytest.raises(LatentEncoderError, match="no CogVideoX VAE in"):
        VideoLatentEncoder.from_config(LatentConfig(vae="path", path=tmp_path))
    with pytest.raises(LatentEncoderError, match="needs latents.path"):
        VideoLatentEncoder.from_config(LatentConfig(vae="path"))


@pytest.mark.parametrize(
    "clip, match",
    [
        (np.zeros((0, 16, 16, 3), np.uint8), "0 frame"),
        (np.zeros((1, 16, 16, 3), np.uint8), "1 frame"),
        (np.zeros((4, 16, 16, 3), np.int64), "dtype int64"),
        (np.zeros((4, 16, 16), np.uint8), "expected 4 dims"),
    ],
)
def test_bad_clips_are_clear_errors(encoder, clip, match):
    with pytest.raises(LatentEncoderError, match=match):
        encoder.encode(clip)


def test_stages_write_keyframes_plot_and_latents(tmp_path, expert_videos):
    from genreward.store import add_array, write_artifact
    from stages import encode_goal_latents, select_keyframes

    cfg = load_config(
        REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}", "tasks=[pick-place-v3]", "latents.vae=random"]
    )
    with write_artifact(tmp_path / "goal_videos" / "pick-place-v3.zarr", "goal_video", attrs={"oracle": True}) as g:
        add_array(g, "video", expert_videos["pick-place-v3"])
    k = select_keyframes.STAGE.execute(cfg)
    assert k == {"pick-place-v3": {"index": 16, "frames": 17, "selector": "last"}}
    kf = open_artifact(tmp_path / "keyframes" / "pick-place-v3.zarr", "keyframes")
    np.testing.assert_array_equal(kf["frame"][...], expert_videos["pick-place-v3"][16])
    assert int(kf["index"][0]) == 16 and kf.attrs["selector"] == "last" and kf.attrs["goal_video_oracle"] is True
    assert kf.attrs["genreward"]["inputs"]["goal_video"]
    png = tmp_path / "keyframes" / "plots" / "pick-place-v3.png"
    from PIL import Image

    assert Image.open(png).size[0] > 400
    encode_goal_latents.STAGE.execute(cfg)
    lat = open_artifact(tmp_path / "goal_latents" / "pick-place-v3.zarr", "goal_latents")
    assert lat["latent"].shape == (4, 4, 8, 8) and lat.attrs["encoder"]["vae"] == "random"
    # A wrong-kind input is refused with a clear message.
    with pytest.raises(Exception, match="expected a 'goal_video' artifact, found 'keyframes'"):
        select_keyframes.run(
            cfg,
            {"goal_video": tmp_path / "keyframes" / "pick-place-v3.zarr"},
            {"keyframe": tmp_path / "k2.zarr", "plot": tmp_path / "k2.png"},
        )


def test_a_missing_local_vae_folder_is_reported_missing_never_looked_up_on_the_hub(tmp_path, monkeypatch):
    """The default latents.path is relative (data/video_model/pipeline): absent, it is a missing
    local folder (which the stage table maps to the stage that writes it), not a hub id."""
    from genreward.video.latents import load_cogvideox_vae

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="CogVideoX VAE folder not found: .*data/video_model/pipeline") as info:
        load_cogvideox_vae("data/video_model/pipeline")
    assert info.value.filename == "data/video_model/pipeline"
