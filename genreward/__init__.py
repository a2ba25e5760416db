"""genreward: goal-driven rewards from video diffusion models for reinforcement learning."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _prepare_torchvision() -> None:
    # Must run before anything imports torchvision (transformers, open_clip, timm do).
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        from genreward.compat.torchvision_ops import ensure_importable

        ensure_importable()


class _PrepareBeforeTorchvision:
    """Import hook: runs :func:`_prepare_torchvision` when torchvision is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _prepare_torchvision()
        return None  # the regular finders import it


# The preparation imports torch (about 1.3 s of CPU): it waits until something imports torchvision
# (transformers, open_clip and timm do), so a process that never needs torch (an env worker, a
# stage that only steps simulators, the CLI's quick commands) does not pay it.
sys.meta_path.insert(0, _PrepareBeforeTorchvision())
