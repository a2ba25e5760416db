"""Make ``import torchvision`` work on CPU-only torch when torchvision's compiled ops cannot load.

Why: the only torchvision release built for torch 2.13 (0.28.0) ships a CUDA-linked ``_C.so``.
With the CPU build of torch that library fails to load; torchvision then still registers
fake kernels for ``torchvision::nms`` / ``torchvision::qnms`` at import time and dies with
``operator torchvision::nms does not exist``. transformers imports torchvision whenever it is
installed, so CogVideoX's T5 and open_clip would break with it.

What: if (and only if) the compiled library cannot be loaded, define the two op *schemas*
(no kernels) before torchvision is imported. Everything genreward uses from torchvision —
transforms and model definitions — is pure Python. Calling a compiled op (``ops.nms``) still
fails, with torchvision's own "Couldn't load custom C++ ops" message. With a matching
CUDA pair (``GENREWARD_TORCH=cuda ./setup.sh``) the library loads and this is a no-op.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_state: dict[str, object] = {}


def ensure_importable() -> str:
    """Idempotent. Returns one of ``"absent"``, ``"native"``, ``"schemas-only"``, ``"already-imported"``."""
    if "status" in _state:
        return str(_state["status"])
    import sys

    if "torchvision" in sys.modules:
        status = "already-imported"
    else:
        spec = importlib.util.find_spec("torchvision")
        if "status" in _state:  # the find ran genreward's import hook, which prepared torchvision already
            return str(_state["status"])
        if spec is None or spec.origin is None:
            status = "absent"
        else:
            status = _load_or_define(Path(spec.origin).parent)
    _state["status"] = status
    return status


def _load_or_define(pkg_dir: Path) -> str:
    import torch

    libs = sorted(pkg_dir.glob("_C*.so")) + sorted(pkg_dir.glob("_C*.pyd"))
    if libs:
        try:
            torch.ops.load_library(str(libs[0]))
            return "native"
        except (OSError, RuntimeError) as exc:
            log.debug("torchvision compiled ops unavailable (%s); registering schemas only", exc)
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not _op_exists(name):
            lib.define(schema)
    _state["lib"] = lib  # keep the registration alive
    return "schemas-only"


def _op_exists(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False
