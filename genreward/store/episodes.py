"""Episode datasets in Zarr: append per episode, crash-safe, resumable; fast uniform sampling.

Layout (one row per observation; an episode of L agent steps has L+1 rows)::

    obs[N, 3, H, W] uint8     the frame at this step (frame stacks are rebuilt on sampling)
    state[N, S] float32       Meta-World state, S = STATE_DIM (relabel rewards)
    action[N, A] float32      action taken here, A = ACTION_DIM (0 on last rows)
    valid[N] bool             a transition (row -> row+1) starts here (False on last rows)
    episode_start[N] bool, episode[N] int64, task_id[N] int16, success[N] bool (diagnostics only)

(``STATE_DIM``, ``ACTION_DIM``: :mod:`genreward.envs.config`.)

Crash safety: rows are appended past ``attrs["committed_rows"]`` and the counter moves only
after a whole episode is written, so a killed writer leaves at most an uncommitted tail that a
resuming writer truncates and a reader never sees. While collecting, the store lives at a
hidden "partial" path; only a finished dataset is renamed to its real path (marked complete,
with the integrity manifest of its files computed at that moment: see
:func:`genreward.store.artifacts.finalise`). A writer resuming a partial store drops any
completion block a killed ``finish`` left there, and ``finish`` computes a fresh one.

The row layout also defines sampling: :func:`stack_frames` (frame stacks never cross an
episode start) and :func:`sample_transitions` serve this dataset and the in-memory buffers of
:mod:`genreward.agents.replay` alike.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from genreward.store.artifacts import (
    FORMAT_VERSION,
    META_KEY,
    ArtifactError,
    Verify,
    check_finite,
    finalise,
    open_artifact,
)
from genreward.store.atomic import replace_dir
from genreward.store.hashing import canonical_json
from genreward.store.provenance import code_version, runtime_info, utc_now

KIND = "exploration"
FIELDS = ("obs", "state", "action", "valid", "episode_start", "episode", "task_id", "success")
FINITE_FIELDS = ("state", "action")  # float fields a reader requires finite


@dataclass
class Episode:
    """One episode of L steps: L+1 observations, L actions."""

    obs: np.ndarray  # uint8 [L+1, 3, H, W]
    state: np.ndarray  # float32 [L+1, S]
    action: np.ndarray  # float32 [L, A]
    success: np.ndarray  # bool [L+1] (row 0 False)
    task_id: int

    def rows(self, episode_index: int) -> dict[str, np.ndarray]:
        n = len(self.obs)
        if len(self.action) != n - 1 or len(self.state) != n or len(self.success) != n:
            raise ValueError("episode arrays disagree on length (need L+1 observations and L actions)")
        action = np.concatenate([self.action, np.zeros((1, self.action.shape[1]), np.float32)])
        valid = np.ones(n, bool)
        valid[-1] = False
        start = np.zeros(n, bool)
        start[0] = True
        return {
            "obs": self.obs,
            "state": self.state.astype(np.float32),
            "action": action.astype(np.float32),
            "valid": valid,
            "episode_start": start,
            "episode": np.full(n, episode_index, np.int64),
            "task_id": np.full(n, self.task_id, np.int16),
            "success": self.success.astype(bool),
        }


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.partial"


class EpisodeWriter:
    """Append episodes to ``<path>.partial``; ``finish()`` promotes it to ``path`` atomically.

    Re-opening with the same ``fingerprint`` resumes after the last committed episode; a
    different fingerprint (other params) starts over.
    """

    def __init__(
        self,
        path: str | Path,
        fingerprint: Mapping[str, Any],
        chunk_rows: int = 256,
        attrs: Mapping[str, Any] | None = None,
    ):
        import zarr

        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.chunk_rows = chunk_rows
        self.fingerprint = json.loads(canonical_json(dict(fingerprint)))
        self._zarr = zarr
        self._arrays: dict[str, Any] = {}  # field -> its array, as _ensure opened it
        self.group = None
        if self.partial.exists():
            try:
                g = zarr.open_group(str(self.partial), mode="r+", zarr_format=3)
                if g.attrs.get("fingerprint") == self.fingerprint:
                    self.group = g
                    self._truncate_uncommitted()
                    if META_KEY in g.attrs:  # a finish() killed before its rename: redone at the end
                        del g.attrs[META_KEY]
            except Exception:
                self.group = None
            if self.group is None:
                shutil.rmtree(self.partial)
        if self.group is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self.group = zarr.open_group(str(self.partial), mode="w", zarr_format=3)
            self.group.attrs.update(
                {
                    "fingerprint": self.fingerprint,
                    "committed_rows": 0,
                    "committed_episodes": 0,
                    **json.loads(canonical_json(dict(attrs or {}))),
                }
            )

    @property
    def committed_rows(self) -> int:
        return int(self.group.attrs["committed_rows"])

    @property
    def committed_episodes(self) -> int:
        return int(self.group.attrs["committed_episodes"])

    def _truncate_uncommitted(self) -> None:
        n = self.committed_rows
        for name in FIELDS:
            if name in self.group and self.group[name].shape[0] != n:
                arr = self.group[name]
                arr.resize((n,) + arr.shape[1:])

    def _ensure(self, name: str, sample: np.ndarray) -> Any:
        """Field ``name``'s array, made on first use. The writer keeps each array it opened (one
        metadata read per field, not one per write) and writes every chunk it is given: Zarr's
        default compares each chunk with the fill value first, to skip empty ones, which cost
        more than compressing it (episode chunks are rarely all zeros; such a one is stored)."""
        arr = self._arrays.get(name)
        if arr is not None:
            return arr
        if name not in self.group:
            from zarr.codecs import ZstdCodec

            chunk = (self.chunk_rows,) + sample.shape[1:]
            self.group.create_array(
                name,
                shape=(0,) + sample.shape[1:],
                dtype=sample.dtype,
                chunks=chunk,
                compressors=ZstdCodec(level=3),
                fill_value=0,
            )
        arr = self._arrays[name] = self.group[name].with_config({"write_empty_chunks": True})
        return arr

    def append(self, episode: Episode) -> int:
        """Write one episode and commit it. Returns its episode index."""
        return self.extend([episode])[0]

    def extend(self, episodes: Sequence[Episode]) -> list[int]:
        """Write ``episodes`` and commit them together (one resize and one write per field,
        one commit: cheaper than an append each). Returns their episode indices."""
        first = self.committed_episodes
        parts = [ep.rows(first + j) for j, ep in enumerate(episodes)]
        if not parts:
            return []
        start = self.committed_rows
        stop = start + sum(len(p["obs"]) for p in parts)
        for name in FIELDS:
            rows = parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts])
            arr = self._ensure(name, rows)
            if arr.shape[0] != start:  # an earlier crash between resize and commit
                arr.resize((start,) + arr.shape[1:])
            arr.resize((stop,) + arr.shape[1:])
            arr[start:stop] = rows
        # Commit last: a crash before this line leaves an uncommitted tail only.
        self.group.attrs.update({"committed_rows": stop, "committed_episodes": first + len(parts)})
        return list(range(first, first + len(parts)))

    def finish(self, params: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> Path:
        """Mark complete (provenance attrs with the manifest of the files as they are now) and
        move the partial store to ``path``."""
        meta = {
            "kind": KIND,
            "format": FORMAT_VERSION,
            "created": utc_now(),
            "code": code_version(),
            "runtime": runtime_info(),
            "params": dict(params),
            "inputs": {},
        }
        finalise(self.group, self.partial, meta, attrs)
        replace_dir(self.partial, self.path)
        return self.path


def stack_frames(read_obs, start_row: np.ndarray, rows: np.ndarray, frame_stack: int) -> np.ndarray:
    """uint8 [B, frame_stack*3, H, W]: frames rows-k+1..rows, clamped at each row's episode start."""
    idx = rows[:, None] - np.arange(frame_stack - 1, -1, -1)[None, :]
    idx = np.maximum(idx, start_row[rows][:, None])
    flat = read_obs(idx.ravel())
    b = len(rows)
    return flat.reshape(b, frame_stack * flat.shape[1], *flat.shape[2:])


def sample_transitions(
    read,
    start_row: np.ndarray,
    valid_index: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    frame_stack: int,
    extra: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Uniform (s, a, s') minibatch; ``read(name, rows)`` fetches rows of one field."""
    if len(valid_index) == 0:
        raise ValueError("no transitions to sample")
    rows = rng.choice(valid_index, size=batch_size)
    out = {
        "obs": stack_frames(lambda r: read("obs", r), start_row, rows, frame_stack),
        "action": read("action", rows),
        "next_obs": stack_frames(lambda r: read("obs", r), start_row, rows + 1, frame_stack),
        "rows": rows,
    }
    for name in extra:
        out[name] = read(name, rows)
        out[f"next_{name}"] = read(name, rows + 1)
    return out


def episode_start_rows(episode_start: np.ndarray) -> np.ndarray:
    """For every row, the row where its episode starts."""
    return np.maximum.accumulate(np.where(episode_start, np.arange(len(episode_start)), 0))


class ExplorationDataset:
    """Read a complete exploration dataset; sample (s, a, s') transitions uniformly.

    Opening checks the store's integrity (:func:`~genreward.store.artifacts.open_artifact`,
    ``verify``) and that every state and action is finite; those two fields are then held in
    memory (they are small next to ``obs``)."""

    def __init__(
        self,
        path: str | Path,
        in_memory: bool | None = None,
        max_memory_bytes: int = 8 << 30,
        verify: Verify = "auto",
    ):
        self.path = Path(path)
        self.group = open_artifact(self.path, KIND, verify=verify)
        self.n = int(self.group.attrs["committed_rows"])
        for name in ("obs", "action", "valid", "episode_start"):
            if name not in self.group:
                raise ArtifactError(f"{self.path}: missing array {name!r}")
        obs = self.group["obs"]
        if obs.shape[0] < self.n:
            raise ArtifactError(f"{self.path}: obs has {obs.shape[0]} rows, attrs say {self.n}")
        nbytes = self.n * int(np.prod(obs.shape[1:]))
        self.in_memory = nbytes <= max_memory_bytes if in_memory is None else in_memory
        self._cache: dict[str, np.ndarray] = {}
        for name in FINITE_FIELDS:
            if name in self.group:
                self._cache[name] = check_finite(self.group[name][: self.n], self.path, name)
        self.valid_index = np.flatnonzero(self.group["valid"][: self.n])
        self.episode_start = self.group["episode_start"][: self.n]
        # Row of each row's episode start (frame stacking never crosses an episode boundary).
        self.start_row = episode_start_rows(self.episode_start)

    def restrict(self, keep_episodes: np.ndarray) -> None:
        """Sample transitions only from these episode indices (e.g. hold others out)."""
        episode = self.array("episode")
        self.valid_index = self.valid_index[np.isin(episode[self.valid_index], keep_episodes)]

    def array(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self.group[name][: self.n]
        return self._cache[name]

    def _rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        if self.in_memory or name in self._cache:
            return self.array(name)[rows]
        return read_rows(self.group[name], rows)

    def stacked_obs(self, rows: np.ndarray, frame_stack: int) -> np.ndarray:
        return stack_frames(lambda r: self._rows("obs", r), self.start_row, rows, frame_stack)

    def sample(
        self, batch_size: int, rng: np.random.Generator, frame_stack: int = 3, extra: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        if len(self.valid_index) == 0:
            raise ArtifactError(f"{self.path}: no transitions")
        return sample_transitions(self._rows, self.start_row, self.valid_index, batch_size, rng, frame_stack, extra)


def read_rows(arr, rows: np.ndarray) -> np.ndarray:
    """Rows of an on-disk array, reading each touched chunk once (grouped random access)."""
    rows = np.asarray(rows)
    chunk = arr.chunks[0]
    out = np.empty((len(rows),) + arr.shape[1:], arr.dtype)
    chunk_of = rows // chunk
    order = np.argsort(chunk_of, kind="stable")
    sorted_chunks = chunk_of[order]
    bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
    for group in np.split(order, bounds):
        c = int(chunk_of[group[0]])
        block = arr[c * chunk : min((c + 1) * chunk, arr.shape[0])]
        out[group] = block[rows[group] - c * chunk]
    return out
