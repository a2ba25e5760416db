"""Progress of long loops: a terminal bar, and a door for whoever runs the stage to watch it.

Every long loop of the library (video-model and FB training, RL runs, collection) counts its
work through :func:`progress_bar`. It draws a tqdm bar when ``enabled`` (``runtime.progress``),
and whatever is installed with :func:`progress_sink` receives ``(description, done, total)``
— throttled to one call per ``min_fraction`` of the work or ``min_seconds``, plus the last
call at the end. The library knows no orchestrator: the Prefect flows install a sink that
updates a progress artifact (``flows/artifacts.py``); a notebook could install one that
prints. The sink lives in a context variable, so nested or concurrent stages do not mix.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)

Sink = Callable[[str, int, int], None]

_SINK: ContextVar[Optional[Sink]] = ContextVar("genreward_progress_sink", default=None)


@contextmanager
def progress_sink(sink: Sink) -> Iterator[None]:
    """Send the progress of every :func:`progress_bar` opened in this context to ``sink``."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


class ProgressBar:
    """A tqdm bar (when enabled) that also reports to the installed sink. Use as a context
    manager or call :meth:`close`; :meth:`update` takes the amount of work just done."""

    def __init__(
        self,
        total: int,
        desc: str,
        enabled: bool = True,
        unit: str = "it",
        initial: int = 0,
        min_fraction: float = 0.02,
        min_seconds: float = 5.0,
    ):
        from tqdm.auto import tqdm

        self.total, self.desc, self.done = int(total), desc, int(initial)
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled)
        self._sink = _SINK.get()
        self._step = max(1, int(min_fraction * max(self.total, 1)))
        self._min_seconds = min_seconds
        self._last_done, self._last_time = self.done, time.monotonic()
        self._send(force=True)

    def _send(self, force: bool = False) -> None:
        if self._sink is None:
            return
        now = time.monotonic()
        if (
            force
            or self.done - self._last_done >= self._step
            or (now - self._last_time >= self._min_seconds and self.done != self._last_done)
        ):
            self._last_done, self._last_time = self.done, now
            try:
                self._sink(self.desc, self.done, self.total)
            except Exception as e:  # watching the work must never stop it
                log.warning("progress report failed (%s); no more reports for %s", e, self.desc)
                self._sink = None

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self._bar.update(n)
        self._send(force=self.done >= self.total)

    def close(self) -> None:
        if self._last_done != self.done:
            self._send(force=True)
        self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "it", initial: int = 0) -> ProgressBar:
    """A :class:`ProgressBar` over ``total`` units of work, ``initial`` of them already done."""
    return ProgressBar(total, desc, enabled=enabled, unit=unit, initial=initial)
