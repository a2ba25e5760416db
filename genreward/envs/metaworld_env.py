"""Meta-World v3 as a pixel environment with the paper's conventions.

Observation convention (one, everywhere in genreward): a dict
  ``pixels``: uint8 ``[frame_stack * 3, H, W]`` (channels-first, oldest frame first, upright),
  ``state``:  float32 ``[39]`` Meta-World's fully observable state vector (hand, gripper,
              objects, previous step, goal), kept for logging and reward relabelling.
Episodes last ``episode_length`` *environment* steps (paper: 256) and are truncated exactly
there; with ``action_repeat = k`` one agent step is k env steps. Meta-World never terminates.
``info["success"]`` is success on this agent step (any of its repeats), and
``info["episode_success"]`` is success at any step so far (the paper's success metric).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np

from genreward.envs import gl
from genreward.envs.config import ACTION_DIM, STATE_DIM, EnvConfig
from genreward.envs.tasks import check_task


def _gym():
    gl.configure()
    import gymnasium

    return gymnasium


def make_metaworld(task: str, camera: str, height: int, width: int, episode_length: int, fast_render: bool):
    """The raw Meta-World v3 env configured as genreward uses it (no wrapper)."""
    gl.configure()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS[check_task(task)](render_mode="rgb_array", camera_name=camera, width=width, height=height)
    # Fully observable state (goal included), per-reset randomisation from a seeded RNG.
    env._partially_observable = False
    # sawyer_observation_space is a cached property computed in partially observable mode;
    # step() clips observations to it, which would zero the goal position.
    env.__dict__.pop("sawyer_observation_space", None)
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.max_path_length = episode_length
    if fast_render:
        apply_fast_render(env.model)
    return env


def apply_fast_render(model) -> None:
    """Render settings for speed on a software rasteriser (llvmpipe: EGL/OSMesa without a GPU):
    no shadow maps, no offscreen multisampling, no reflections. Meta-World's materials with
    reflectance make MuJoCo draw the scene a second time, mirrored, for ~40% of a 64 px frame's
    time, and change about 6 of its 4,096 pixels (``python benchmarks/render_settings.py``)."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0.0


def pixel_spaces(cfg: EnvConfig, height: int | None = None, width: int | None = None):
    """The pixel env's ``(observation_space, action_space)``, built without MuJoCo."""
    gym = _gym()
    height = cfg.image_size if height is None else height
    width = cfg.image_size if width is None else width
    observation_space = gym.spaces.Dict(
        {
            "pixels": gym.spaces.Box(0, 255, (3 * cfg.frame_stack, height, width), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        }
    )
    return observation_space, gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


class EpisodeOver(RuntimeError):
    pass


class MetaWorldPixelEnv(_gym().Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(
        self,
        task: str,
        cfg: EnvConfig | None = None,
        seed: int | None = None,
        render_size: tuple[int, int] | None = None,
        info_keys: Sequence[str] | None = None,
    ):
        """``render_size=(height, width)`` overrides the square ``cfg.image_size`` (e.g. for goal
        videos). ``info_keys`` keeps only those keys of ``info`` (a vector env's workers send every
        step's info to the main process; a collector that reads ``success`` alone asks for that)."""
        self.task = check_task(task)
        self.cfg = cfg or EnvConfig()
        c = self.cfg
        self.render_mode = "rgb_array"
        height, width = render_size or (c.image_size, c.image_size)
        self._env = make_metaworld(self.task, c.camera, height, width, c.episode_length, c.fast_render)
        self._frames: deque[np.ndarray] = deque(maxlen=c.frame_stack)
        self._t = 0
        self._episode_success = False
        self._needs_reset = True
        self._seeded_once = False
        self.info_keys = None if info_keys is None else tuple(info_keys)

        self.observation_space, self.action_space = pixel_spaces(c, height, width)
        if seed is not None:
            self._seed(seed)

    # -- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed(seed)
        elif not self._seeded_once:
            self._seed(int(self.np_random.integers(2**31 - 1)))
        state, info = self._env.reset()
        if not self.cfg.randomize:
            self._env._freeze_rand_vec = True  # keep this seed's object/goal positions
        frame = self.render()
        self._frames.clear()
        for _ in range(self.cfg.frame_stack):
            self._frames.append(frame)
        self._t = 0
        self._episode_success = False
        self._needs_reset = False
        return self._obs(state), self._info(dict(info))

    def step(self, action):
        if self._needs_reset:
            raise EpisodeOver(
                f"{self.task}: the episode is over (truncated at {self.cfg.episode_length} env steps) "
                "or was never started; call reset()"
            )
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(ACTION_DIM), -1.0, 1.0)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.task}: action has non-finite values: {action}")
        total = 0.0
        success = False
        info: dict[str, Any] = {}
        for _ in range(self.cfg.action_repeat):
            state, reward, _, _, info = self._env.step(action)
            total += float(reward)
            success = success or bool(info.get("success", 0.0))
            self._t += 1
        self._episode_success = self._episode_success or success
        self._frames.append(self.render())
        truncated = self._t >= self.cfg.episode_length
        self._needs_reset = truncated
        info = dict(info)
        info.update(success=success, episode_success=self._episode_success, env_steps=self._t)
        return self._obs(state), total, False, truncated, self._info(info)

    def render(self) -> np.ndarray:
        """The current camera frame, upright, uint8 ``[H, W, 3]``.

        Rendered in this env's own GL context: gymnasium's MuJoCo renderer makes its context
        current only when it is created, so with several envs in one process (a training and an
        evaluation env) each would render in whichever context was made current last, and once
        one env is closed the others would render black frames."""
        viewer = getattr(getattr(self._env, "mujoco_renderer", None), "_viewers", {}).get("rgb_array")
        if viewer is not None:
            viewer.make_context_current()
        frame = self._env.render()
        return np.ascontiguousarray(frame[::-1])

    def close(self):
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None

    # -- extras --------------------------------------------------------------------------
    @property
    def unwrapped_metaworld(self):
        return self._env

    def physics_state(self) -> np.ndarray:
        """MuJoCo ``qpos`` and ``qvel`` concatenated (float64), for exact replays."""
        return np.concatenate([self._env.data.qpos, self._env.data.qvel]).copy()

    def _seed(self, seed: int) -> None:
        self._env.seed(int(seed))
        self._env._freeze_rand_vec = False
        self._seeded_once = True

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        """``info`` (this env's own dict), or only its ``info_keys``."""
        if self.info_keys is None:
            return info
        return {k: info[k] for k in self.info_keys if k in info}

    def _obs(self, state: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.concatenate([f.transpose(2, 0, 1) for f in self._frames], axis=0)
        return {"pixels": pixels, "state": np.asarray(state, dtype=np.float32)}
