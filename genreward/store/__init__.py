"""Artifact storage: atomic Zarr v3 artifacts with provenance, stable hashes, content cache."""

from genreward.store.artifacts import (
    ArtifactError,
    add_array,
    artifact_hash,
    check_finite,
    open_artifact,
    provenance,
    read_array,
    write_artifact,
)
from genreward.store.cache import CacheResult, ContentCache
from genreward.store.hashing import canonical_json, hash_array, hash_file, hash_tree, stable_hash

__all__ = [
    "ArtifactError",
    "CacheResult",
    "ContentCache",
    "add_array",
    "artifact_hash",
    "canonical_json",
    "check_finite",
    "hash_array",
    "hash_file",
    "hash_tree",
    "open_artifact",
    "provenance",
    "read_array",
    "stable_hash",
    "write_artifact",
]
