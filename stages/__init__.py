"""Pipeline stages: one module per stage, each with ``run(cfg, inputs, outputs) -> dict``.

Stages import the library and the config, never Prefect; flows/ wraps them.
"""
