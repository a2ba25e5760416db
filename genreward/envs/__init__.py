"""Meta-World pixel environments. Importing this package does not import MuJoCo.

Use ``genreward.envs.make_env`` (lazy) or import ``genreward.envs.metaworld_env`` directly.
"""

from __future__ import annotations

from genreward.envs.config import EnvConfig
from genreward.envs.tasks import METAWORLD_V3_TASKS, PAPER_TASKS, UnknownTaskError, check_task


def make_env(task: str, cfg: EnvConfig | None = None, seed: int | None = None):
    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    return MetaWorldPixelEnv(task, cfg, seed)


__all__ = ["EnvConfig", "METAWORLD_V3_TASKS", "PAPER_TASKS", "UnknownTaskError", "check_task", "make_env"]
