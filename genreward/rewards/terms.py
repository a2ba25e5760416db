"""The individual reward terms, each a pure function of stored frames (and actions).

Frames are the agent's single RGB observations, uint8 ``[T, 3, H, W]`` as stored in replay. Each
term has the :class:`~genreward.rewards.base.Term` interface and an entry in ``TERMS``
(genreward/rewards/config.py). How a term scores an episode's transition t (s_t, a_t -> s_{t+1})
comes from one of three bases: :class:`WindowScores` (the window of frames ending at s_{t+1}),
:class:`TransitionScores` ((s_t, a_t)) and :class:`NextFrameScores` (s_{t+1}).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from genreward.rewards.base import RewardInputError
from genreward.rewards.config import RewardConfig
from genreward.store.hashing import hash_array, hash_tree, stable_hash


def _frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise RewardInputError(f"{name}: expected uint8 [T, 3, H, W] frames, got {frames.dtype} {list(frames.shape)}")
    if len(frames) == 0:
        raise RewardInputError(f"{name}: no frames")
    return frames


def to_agent_frame(frame_hwc: np.ndarray, size: int) -> np.ndarray:
    """A goal-video frame uint8 [H, W, 3] -> the agent's observation format uint8 [3, size, size]."""
    from genreward.video.io import resize_video

    frame = np.asarray(frame_hwc)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise RewardInputError(f"goal frame: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    return resize_video(frame[None], size, size)[0].transpose(2, 0, 1).copy()


def key_frame(cfg, inputs: dict[str, Path]) -> tuple[np.ndarray, dict[str, str]]:
    """The task's key goal frame (stage select_keyframes) in the agent's format, and its hash."""
    from genreward.store.artifacts import artifact_hash, open_artifact, read_array

    frame = read_array(open_artifact(inputs["keyframe"], "keyframes"), "frame", ndim=3, dtype=np.uint8)
    return to_agent_frame(frame, cfg.env.image_size), {"keyframe": artifact_hash(inputs["keyframe"])}


def window_frames(frames: np.ndarray, t: int, window: int) -> np.ndarray:
    """The ``window`` frames ending at s_{t+1}; near the episode start, padded with copies of the
    reset frame s_0 (as if the agent had stood still before it), so every window spans the same
    time and a clip subsampled from it plays at the same speed."""
    start = t + 2 - window
    if start >= 0:
        return frames[start : t + 2]
    return np.concatenate([np.repeat(frames[:1], -start, axis=0), frames[: t + 2]])


def frame_latents(encoder, frames: np.ndarray) -> np.ndarray:
    """Flattened single-frame VAE latents float32 [N, D] of frames uint8 [N, 3, H, W]."""
    return encoder.encode_frames(frames.transpose(0, 2, 3, 1)).reshape(len(frames), -1)


class WindowScores:
    """Scores transition t from the window of ``window`` frames ending at s_{t+1}
    (:func:`window_frames`); subclasses define ``windows(list of uint8 [T, 3, H, W]) -> float32 [N]``."""

    def scores(self, frames: np.ndarray, actions: np.ndarray, paid_steps: np.ndarray, window: int) -> np.ndarray:
        r = np.zeros(len(actions), np.float32)
        if len(paid_steps):
            r[paid_steps] = self.windows([window_frames(frames, int(t), window) for t in paid_steps])
        return r


class TransitionScores:
    """Scores transition t from (s_t, a_t); subclasses define ``steps(frames [N,3,H,W], actions [N,A]) -> [N]``."""

    def scores(self, frames: np.ndarray, actions: np.ndarray, paid_steps: np.ndarray, window: int) -> np.ndarray:
        r = np.zeros(len(actions), np.float32)
        if len(paid_steps):
            r[paid_steps] = self.steps(frames[paid_steps], actions[paid_steps])
        return r


class NextFrameScores:
    """Scores transition t from s_{t+1}; subclasses define ``steps(frames [N, 3, H, W]) -> [N]``."""

    def scores(self, frames: np.ndarray, actions: np.ndarray, paid_steps: np.ndarray, window: int) -> np.ndarray:
        r = np.zeros(len(actions), np.float32)
        if len(paid_steps):
            r[paid_steps] = self.steps(frames[paid_steps + 1])
        return r


class VideoReward(WindowScores):
    """The video-level term: the agent's window against the goal video (``rewards.video_score``).

    ``score="cosine"`` (the paper): cosine similarity between the VAE latent of the window and the
    goal video's latent. ``score="progress"``: how far along the goal video the window's newest frame
    s_{t+1} is, the soft-argmax (``temperature``) over the goal frames k = 0..K-1 of the cosine
    between single-frame VAE latents, as k / (K-1) in [0, 1]: the goal video is read as a
    reset-to-success timeline and the agent is paid for where it has got to on it.

    ``baseline="reset"`` (``rewards.video_baseline``) compares what moved instead of whole scenes:
    the agent's latent minus that of its episode's reset frame s_0 against the goal's minus that of
    its first frame (with cosine, whole clips: the window minus a still clip of s_0 against the goal
    latent minus a still clip of the goal's first frame; with progress, single frames, the goal's
    first frame then being dropped as a zero vector). ``"none"`` is the paper's formulation.
    """

    name = "video"

    def __init__(
        self,
        encoder,
        goal_latent: np.ndarray | None = None,
        goal_start: np.ndarray | None = None,
        baseline: str = "none",
        score: str = "cosine",
        goal_frames: np.ndarray | None = None,
        temperature: float = RewardConfig.model_fields["video_temperature"].default,
    ):
        if baseline not in ("none", "reset"):
            raise RewardInputError(f"video baseline {baseline!r}: choose none or reset")
        if score not in ("cosine", "progress"):
            raise RewardInputError(f"video score {score!r}: choose cosine or progress")
        self.encoder, self.baseline, self.score, self.temperature = encoder, baseline, score, float(temperature)
        if score == "progress":
            if goal_frames is None:
                raise RewardInputError("video_score=progress needs the goal video's frames")
            self.goal_frames = _frames(np.asarray(goal_frames), "goal video")
            if len(self.goal_frames) < 2:
                raise RewardInputError("video_score=progress needs a goal video of at least 2 frames")
            codes = self._frame_codes(self.goal_frames)
            self.positions = np.arange(len(codes), dtype=np.float64) / (len(codes) - 1)
            if baseline == "reset":
                codes, self.positions = codes[1:] - codes[0], self.positions[1:]
            self.goal = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
        else:
            if goal_latent is None:
                raise RewardInputError("video_score=cosine needs the goal video's latent")
            self.goal = np.asarray(goal_latent, np.float32).ravel()
            if baseline == "reset":
                if goal_start is None:
                    raise RewardInputError("video_baseline=reset needs the goal video's first frame")
                self.goal_start = _frames(np.asarray(goal_start)[None], "goal first frame")[0]
                self.goal = self.goal - self.still_latent(self.goal_start)
        if not np.isfinite(self.goal).all() or not np.abs(self.goal).sum(axis=-1).any():
            raise RewardInputError(
                "goal latent is empty, zero or not finite (a goal video that does not move?); "
                "re-run encode_goal_latents / generate_goal_videos"
            )
        self._reset: tuple[bytes, np.ndarray] | None = None  # (s_0 bytes, its latent) of the last episode

    @classmethod
    def build(cls, cfg, task: str, inputs: dict[str, Path], device: str) -> tuple["VideoReward", dict[str, str]]:
        """The latent encoder (``latents:``) and the task's goal: for ``video_score=cosine`` its
        goal latent (stage encode_goal_latents) and, with ``video_baseline=reset``, the goal video's
        first frame; for ``progress`` the goal video's frames (stage generate_goal_videos)."""
        from genreward.store.artifacts import artifact_hash, open_artifact, read_array
        from genreward.video.latents import encoder_from_config

        r = cfg.rewards
        hashes, latent, start, frames = {}, None, None, None
        if r.video_score == "cosine":
            latent = read_array(open_artifact(inputs["goal_latent"], "goal_latents"), "latent", dtype=np.float32)
            hashes["goal_latent"] = artifact_hash(inputs["goal_latent"])
        if r.video_score == "progress" or r.video_baseline == "reset":
            video = read_array(open_artifact(inputs["goal_video"], "goal_video"), "video", ndim=4, dtype=np.uint8)
            frames = video.transpose(0, 3, 1, 2).copy()
            start = frames[0]
            hashes["goal_video"] = artifact_hash(inputs["goal_video"])
        encoder = encoder_from_config(cfg)
        return cls(encoder, latent, start, r.video_baseline, r.video_score, frames, r.video_temperature), hashes

    def identity(self) -> dict:
        out = {
            "encoder": self.encoder.identity(),
            "score": self.score,
            "goal_latent_sha256": hash_array(self.goal),
            "baseline": self.baseline,
        }
        if self.score == "progress":
            out["temperature"] = self.temperature
            out["goal_frames_sha256"] = hash_array(self.goal_frames)
        elif self.baseline == "reset":
            out["goal_first_frame_sha256"] = hash_array(self.goal_start)
        return out

    def _frame_codes(self, frames: np.ndarray) -> np.ndarray:
        return frame_latents(self.encoder, frames).astype(np.float64)

    def still_latent(self, frame: np.ndarray) -> np.ndarray:
        """The flattened latent of a clip that shows ``frame`` uint8 [3, H, W] throughout."""
        return self.encoder.encode(np.repeat(frame.transpose(1, 2, 0)[None], 2, axis=0)).ravel()

    def scores(self, frames: np.ndarray, actions: np.ndarray, paid_steps: np.ndarray, window: int) -> np.ndarray:
        if self.baseline == "reset" and len(paid_steps):
            key = np.ascontiguousarray(frames[0]).tobytes()
            if self._reset is None or self._reset[0] != key:
                s0 = _frames(frames[:1])
                code = self._frame_codes(s0)[0] if self.score == "progress" else self.still_latent(s0[0])
                self._reset = (key, code)
        return super().scores(frames, actions, paid_steps, window)

    def _base(self):
        if self.baseline != "reset":
            return 0.0
        if self._reset is None:
            raise RewardInputError("video_baseline=reset scores windows of an episode: call scores()")
        return self._reset[1]

    def windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Rewards [N] for N windows of frames uint8 [T, 3, H, W] (T >= 2)."""
        windows = [_frames(w, "video-reward window") for w in windows]
        if any(len(w) < 2 for w in windows):
            raise RewardInputError("video-reward windows need at least 2 frames")
        if self.score == "progress":
            return self.progress(np.stack([w[-1] for w in windows]))
        from genreward.video.latents import latent_cosine

        latents = self.encoder.encode_batch([w.transpose(0, 2, 3, 1) for w in windows])
        if latents[0].size != self.goal.size:
            raise RewardInputError(
                f"agent-window latent has {latents[0].size} values, the goal latent {self.goal.size}: "
                "encode both with the same latents config"
            )
        base = self._base()
        return np.array([latent_cosine(z.ravel() - base, self.goal) for z in latents], np.float32)

    def progress(self, frames: np.ndarray) -> np.ndarray:
        """Where frames uint8 [N, 3, H, W] stand on the goal video: soft-argmax position in [0, 1]."""
        codes = self._frame_codes(frames) - self._base()
        if codes.shape[1] != self.goal.shape[1]:
            raise RewardInputError(
                f"frame latent has {codes.shape[1]} values, the goal frames' {self.goal.shape[1]}: "
                "agent frames and goal video must have the same size"
            )
        cos = codes @ self.goal.T / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
        logits = (cos - cos.max(axis=1, keepdims=True)) / self.temperature
        w = np.exp(logits)
        return ((w @ self.positions) / w.sum(axis=1)).astype(np.float32)


class FrameReward(TransitionScores):
    """r_FB(s, a) = min_k F_k(s, a, z)ᵀz, z = B(key frame): how likely (s, a) leads to the goal frame."""

    name = "frame"

    def __init__(self, fb_model, goal_frame: np.ndarray):
        self.model = fb_model
        goal = _frames(np.asarray(goal_frame)[None], "goal frame")[0]
        if tuple(goal.shape) != tuple(fb_model.obs_shape):
            raise RewardInputError(
                f"goal frame shape {list(goal.shape)} does not match the FB model's input {list(fb_model.obs_shape)}"
            )
        self.goal, self.z = goal, fb_model.goal_z(goal)

    @classmethod
    def build(cls, cfg, task: str, inputs: dict[str, Path], device: str) -> tuple["FrameReward", dict[str, str]]:
        """The FB model (stage pretrain_fb) and the task's key frame (stage select_keyframes)."""
        from genreward.agents.fb import load_fb

        fb = Path(inputs["fb"])
        if not (fb / "meta.json").is_file():
            raise FileNotFoundError(f"{fb}: no FB model; run `dvc repro pretrain_fb` first")
        goal, hashes = key_frame(cfg, inputs)
        return cls(load_fb(fb, device), goal), {**hashes, "fb": hash_tree(fb)}

    def identity(self) -> dict:
        weights = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        return {
            "fb_weights_sha256": stable_hash(weights),
            "fb_config": self.model.cfg.model_dump(mode="json"),
            "goal_frame_sha256": hash_array(self.goal),
        }

    def steps(self, frames: np.ndarray, actions: np.ndarray, batch_size: int = 512) -> np.ndarray:
        frames = _frames(frames)
        actions = np.asarray(actions, np.float32)
        if actions.shape != (len(frames), self.model.action_dim):
            raise RewardInputError(
                f"actions: expected [{len(frames)}, {self.model.action_dim}], got {list(actions.shape)}"
            )
        out = [
            self.model.frame_reward(frames[i : i + batch_size], actions[i : i + batch_size], z=self.z)
            for i in range(0, len(frames), batch_size)
        ]
        return np.concatenate(out).astype(np.float32)


class CLIPReward(NextFrameScores):
    """VLM-RM-style baseline: per-step cosine between a frame's CLIP embedding and the prompt's."""

    name = "clip"

    def __init__(self, scorer, prompts: Sequence[str]):
        self.scorer, self.prompts = scorer, list(prompts)
        self.text = scorer.encode_text(self.prompts)

    @classmethod
    def build(cls, cfg, task: str, inputs: dict[str, Path], device: str) -> tuple["CLIPReward", dict[str, str]]:
        """The CLIP model of ``keyframes:`` and the task's prompt (+ ``keyframes.extra_prompts``)."""
        from genreward.vision.clip import CLIPScorer

        k = cfg.keyframes
        scorer = CLIPScorer(k.clip_model, k.clip_pretrained, device, k.batch_size)
        return cls(scorer, [cfg.prompt(task), *k.extra_prompts]), {}

    def identity(self) -> dict:
        return {"clip": self.scorer.identity(), "prompts": self.prompts}

    def steps(self, frames: np.ndarray) -> np.ndarray:
        frames = _frames(frames)
        return self.scorer.similarity(self.scorer.encode_frames(frames.transpose(0, 2, 3, 1)), self.text)


class GoalDistance(NextFrameScores):
    """The naive floor: r(s_{t+1}) = −distance between the frame and the task's key goal frame,
    in pixels (RMS over [0, 1] values) or in the VAE latent of single frames (L2)."""

    def __init__(self, goal_frame: np.ndarray, encoder=None):
        self.goal = _frames(np.asarray(goal_frame)[None], "goal frame")[0]
        self.encoder = encoder
        self.name = "goal_pixels" if encoder is None else "goal_latent"
        self.goal_code = self._codes(self.goal[None])[0]

    @classmethod
    def _build(cls, cfg, inputs: dict[str, Path], latent: bool):
        goal, hashes = key_frame(cfg, inputs)
        if not latent:
            return cls(goal), hashes
        from genreward.video.latents import encoder_from_config

        return cls(goal, encoder_from_config(cfg)), hashes

    @classmethod
    def build_pixels(cls, cfg, task: str, inputs: dict[str, Path], device: str) -> tuple["GoalDistance", dict]:
        """The task's key frame (stage select_keyframes)."""
        return cls._build(cfg, inputs, latent=False)

    @classmethod
    def build_latent(cls, cfg, task: str, inputs: dict[str, Path], device: str) -> tuple["GoalDistance", dict]:
        """The task's key frame and the latent encoder (``latents:``)."""
        return cls._build(cfg, inputs, latent=True)

    def identity(self) -> dict:
        out = {"goal_frame_sha256": hash_array(self.goal)}
        if self.encoder is not None:
            out["encoder"] = self.encoder.identity()
        return out

    def _codes(self, frames: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            return frames.reshape(len(frames), -1).astype(np.float32) / 255.0
        return frame_latents(self.encoder, frames)

    def steps(self, frames: np.ndarray) -> np.ndarray:
        frames = _frames(frames)
        if frames.shape[1:] != self.goal.shape:
            raise RewardInputError(f"frames {list(frames.shape[1:])} and the goal frame {list(self.goal.shape)} differ")
        d = self._codes(frames) - self.goal_code
        if self.encoder is None:
            return -np.sqrt((d**2).mean(axis=1)).astype(np.float32)
        return -np.linalg.norm(d, axis=1).astype(np.float32)
