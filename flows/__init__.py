"""Prefect flows: one per stage. Each loads params.yaml, then calls ``stages.<name>.run``.

The API: ``PREFECT_API_URL`` when set, else the server ``genreward server start`` started
(``flows/server.py``), else an ephemeral one per process.
"""

import os

# Library/stage log lines reach a run through flows.artifacts.library_logs (inside each stage
# task, whatever process runs it), not PREFECT_LOGGING_EXTRA_LOGGERS, which only works when set
# before Prefect is imported and then also sends logs made outside any run.

# No telemetry attempts on offline machines.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import logging as _logging

for _name in ("genreward", "stages"):
    if _logging.getLogger(_name).level == _logging.NOTSET:
        _logging.getLogger(_name).setLevel(_logging.INFO)
