"""Prefect flows: one per stage. Each loads params.yaml, then calls ``stages.<name>.run``.

Ephemeral Prefect API by default; a server when ``PREFECT_API_URL`` is set.
"""

import os

# Library/stage loggers go to Prefect's handlers (and so to the UI when a server is used).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "genreward,stages")
# No telemetry attempts on offline machines.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import logging as _logging

for _name in ("genreward", "stages"):
    if _logging.getLogger(_name).level == _logging.NOTSET:
        _logging.getLogger(_name).setLevel(_logging.INFO)
