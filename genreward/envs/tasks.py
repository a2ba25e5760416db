"""Meta-World v3 task names, validated without importing MuJoCo (config loading stays fast).

``tests/test_envs.py`` checks this list against the installed ``metaworld`` package.
"""

from __future__ import annotations

import difflib

PAPER_TASKS: tuple[str, ...] = (
    "pick-place-v3",
    "pick-out-of-hole-v3",
    "bin-picking-v3",
    "shelf-place-v3",
    "disassemble-v3",
)

METAWORLD_V3_TASKS: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-close-v3",
    "faucet-open-v3",
    "hammer-v3",
    "hand-insert-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "pick-place-wall-v3",
    "plate-slide-back-side-v3",
    "plate-slide-back-v3",
    "plate-slide-side-v3",
    "plate-slide-v3",
    "push-back-v3",
    "push-v3",
    "push-wall-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "soccer-v3",
    "stick-pull-v3",
    "stick-push-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-close-v3",
    "window-open-v3",
)


class UnknownTaskError(ValueError):
    pass


def check_task(name: str) -> str:
    """Return ``name`` if it is a Meta-World v3 task, else raise with the closest names."""
    if name in METAWORLD_V3_TASKS:
        return name
    close = difflib.get_close_matches(name, METAWORLD_V3_TASKS, n=3, cutoff=0.6)
    if not close and not name.endswith("-v3"):
        close = [t for t in METAWORLD_V3_TASKS if t == f"{name}-v3"]
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownTaskError(
        f"unknown task {name!r}: {hint}valid: Meta-World v3 names such as "
        f"{', '.join(PAPER_TASKS)} (all {len(METAWORLD_V3_TASKS)} in genreward.envs.tasks)"
    )


def check_task_texts(texts: dict[str, str], what: str = "prompt") -> dict[str, str]:
    """Validate a task -> text mapping (goal prompts, training captions): known tasks, non-empty texts.
    Raises ``ValueError`` naming the task."""
    for task, text in texts.items():
        try:
            check_task(task)
        except UnknownTaskError as e:
            raise ValueError(f"{task}: {e}") from None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{task}: empty {what}")
    return texts
