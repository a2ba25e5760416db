"""The online agents of stage finetune_rl (``rl.agent``), and what a run gives and returns.

No torch or numpy import: config loading validates ``rl.agent`` against ``AGENT_NAMES``.

An agent is one :class:`AgentSpec` in ``AGENTS``: a runner (``"module:function"``, imported
when a run needs it) and the name of its knobs' sub-section of ``rl`` (a field of
``genreward.agents.config.RLConfig``). The runner takes an :class:`RLRun` and returns a
:class:`RunResult`; the stage writes every output from it (``eval.parquet``, ``train.csv``,
``rollout.gif``, ``run.json``), so all agents give the same files. Adding an agent:

1. its knobs as a ``Section`` subclass, a field of that name on ``RLConfig`` and a block in
   params.yaml (profiles may override it);
2. a runner ``train(run: RLRun) -> RunResult`` that steps ``run.env`` tasks, asks
   ``run.reward_model`` for the rewards (``RewardModel.episode`` on an episode's frames, or
   ``genreward.rewards.wrapper.GenRewardWrapper`` inside the env), evaluates the noise-free
   policy every ``rl.eval_every`` steps, saves its weights as safetensors in ``run.agent_dir``
   and raises :class:`RLDiverged` on a non-finite loss or reward;
3. an entry here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class RLDiverged(RuntimeError):
    """A non-finite loss or reward; the last good checkpoint is kept."""


class AgentUnavailable(RuntimeError):
    """The agent's library is not installed."""


@dataclass
class RLRun:
    """One run: ``rl`` narrowed to one task, method and seed, and what the agent needs."""

    task: str
    seed: int
    rl: Any  # genreward.agents.config.RLConfig; the agent's knobs: rl.agent_section
    env: Any  # genreward.envs.config.EnvConfig
    reward_model: Any  # genreward.rewards.combine.RewardModel (``method``, ``episode(...)``)
    device: str
    agent_dir: Path  # the agent's weights (safetensors) and training state
    fb_encoder: Any = None  # a pretrained FB conv encoder, when the agent's knobs ask for it
    progress: bool = False


@dataclass
class RunResult:
    evals: list[dict] = field(default_factory=list)  # step, episode, return_mean, return_std, success_rate, ...
    train: list[dict] = field(default_factory=list)  # one row per training episode
    gif_frames: list = field(default_factory=list)  # uint8 [T, H, W, 3] per saved eval episode
    timing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSpec:
    """A registered agent: its runner and the ``rl`` sub-section with its knobs."""

    runner: str | Callable[[RLRun], RunResult]  # a function or "module:function"
    section: str  # the field of RLConfig with the agent's knobs
    description: str
    requires: str | None = None  # a module the runner needs beyond the base install (checked first)
    extra: str | None = None  # the pip extra of this project that installs it

    def train_fn(self) -> Callable[[RLRun], RunResult]:
        if callable(self.runner):
            return self.runner
        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise AgentUnavailable(
                f"rl.agent needs {self.requires}, which is not installed; ./setup.sh installs it "
                f"(or: pip install -c constraints/cpu.txt -e '.[{self.extra}]')"
            )
        module, _, attr = self.runner.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


AGENTS: dict[str, AgentSpec] = {
    "drqv2": AgentSpec(
        "genreward.agents.online:train",
        section="drqv2",
        description="DrQ-v2 (model-free actor-critic on augmented pixels; genreward.agents.drqv2)",
    ),
    "dreamerv3": AgentSpec(
        "genreward.agents.dreamer:train",
        section="dreamerv3",
        description="DreamerV3 (world model + actor-critic in imagination), sheeprl's implementation",
        requires="sheeprl",
        extra="dreamer",
    ),
}


def agent_spec(name: str) -> AgentSpec:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    return AGENTS[name]
