"""Imported by the env workers' fork server (:func:`genreward.envs.vector.worker_processes`):
the modules every env worker would import itself. One that fails to import is left to the
workers, whose error says what is wrong (the fork server would die on it and report nothing)."""

import importlib

from genreward.envs.vector import WORKER_PRELOAD

for _name in WORKER_PRELOAD:
    try:
        importlib.import_module(_name)
    except Exception:  # reported by the worker that needs it
        pass
