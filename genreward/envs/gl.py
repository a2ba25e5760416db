"""Choose the headless OpenGL backend for MuJoCo before mujoco is imported.

Rules: a user's ``MUJOCO_GL`` is always respected and never overwritten. Otherwise use ``egl``
when libEGL is present, else ``osmesa`` when libOSMesa is present, else fail with the Debian
packages to install. MuJoCo reads the variable at import, so call :func:`configure` before
importing ``mujoco``/``gymnasium.envs.mujoco``/``metaworld`` (``genreward.envs`` does).
"""

from __future__ import annotations

import ctypes.util
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

_LIBS = {"egl": ("EGL", "libEGL.so.1"), "osmesa": ("OSMesa", "libOSMesa.so.8")}
INSTALL_HINT = (
    "install the EGL (or OSMesa) libraries, e.g. on Debian/Ubuntu: "
    "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 "
    "(./setup.sh does this), or set MUJOCO_GL yourself"
)


class GLBackendError(RuntimeError):
    pass


@dataclass(frozen=True)
class GLBackend:
    name: str
    source: str  # "user" (MUJOCO_GL was set) or "auto"

    def describe(self) -> str:
        how = "set by you (MUJOCO_GL)" if self.source == "user" else "auto-selected"
        return f"MuJoCo GL backend: {self.name} ({how})"


def _available(backend: str) -> bool:
    short, soname = _LIBS[backend]
    if ctypes.util.find_library(short):
        return True
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def configure() -> GLBackend:
    """Idempotent; sets ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) only when the user did not."""
    user = os.environ.get("MUJOCO_GL")
    if user:
        return GLBackend(user, "user")
    for name in ("egl", "osmesa"):
        if _available(name):
            os.environ["MUJOCO_GL"] = name
            os.environ.setdefault("PYOPENGL_PLATFORM", name)
            backend = GLBackend(name, "auto")
            log.info(backend.describe())
            return backend
    raise GLBackendError(f"no headless OpenGL library found for MuJoCo rendering: {INSTALL_HINT}")
