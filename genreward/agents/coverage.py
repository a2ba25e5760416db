"""Coverage diagnostics of an exploration dataset, from its state vectors (no task reward).

Meta-World state layout: [0:3] end-effector xyz, [3] gripper, [4:7] main object xyz, ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genreward.viz import pyplot, save_figure

MOVED_M = 0.02  # an object "moved" if it got 2 cm away from where the episode started
VOXEL_M = 0.05


def episode_slices(episode_start: np.ndarray) -> list[slice]:
    starts = np.flatnonzero(episode_start)
    ends = list(starts[1:]) + [len(episode_start)]
    return [slice(int(a), int(b)) for a, b in zip(starts, ends)]


def coverage(state: np.ndarray, episode_start: np.ndarray, success: np.ndarray) -> dict[str, float]:
    eps = episode_slices(episode_start)
    disp = np.array([np.linalg.norm(state[s, 4:7] - state[s.start, 4:7], axis=1).max() for s in eps])
    ee = state[:, 0:3]
    voxels = np.unique(np.floor(ee / VOXEL_M).astype(np.int64), axis=0)
    return {
        "episodes": len(eps),
        "object_moved_fraction": float((disp > MOVED_M).mean()) if len(eps) else 0.0,
        "object_max_displacement_mean_m": float(disp.mean()) if len(eps) else 0.0,
        "object_max_displacement_p90_m": float(np.percentile(disp, 90)) if len(eps) else 0.0,
        "ee_voxels_5cm": int(len(voxels)),
        "success_events": int(success.sum()),
        "episodes_with_success": int(sum(success[s].any() for s in eps)),
    }


def object_displacements(state: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
    return np.array(
        [np.linalg.norm(state[s, 4:7] - state[s.start, 4:7], axis=1).max() for s in episode_slices(episode_start)]
    )


def plot_coverage(datasets: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """End-effector x-y occupancy per dataset + histogram of per-episode object displacement."""
    plt = pyplot()

    n = len(datasets)
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 3.6), dpi=100)
    bins = [np.linspace(-0.5, 0.5, 41), np.linspace(0.3, 1.0, 29)]
    for ax, (name, (state, starts)) in zip(axes, datasets.items()):
        h, _, _ = np.histogram2d(state[:, 0], state[:, 1], bins=bins)
        ax.imshow(np.log1p(h.T), origin="lower", extent=[-0.5, 0.5, 0.3, 1.0], aspect="auto", cmap="viridis")
        ax.set_title(f"{name}: end-effector x-y (log count)", fontsize=9)
        ax.set_xlabel("x (m)"), ax.set_ylabel("y (m)")
    ax = axes[-1]
    hist_bins = np.linspace(0, 0.3, 31)
    for name, (state, starts) in datasets.items():
        ax.hist(np.clip(object_displacements(state, starts), 0, 0.3), bins=hist_bins, alpha=0.6, label=name)
    ax.axvline(MOVED_M, color="k", ls="--", lw=1)
    ax.set_xlabel("max object displacement per episode (m)"), ax.set_ylabel("episodes"), ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
