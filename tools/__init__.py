"""Repository tooling outside the science library: the stage scheduler and opt-in DVC speed-ups.

Nothing under ``src/`` or ``stages/`` imports this package; run its tools from the repo root
(``python -m tools.scheduler``, ``python -m tools.dvc_params_cache``).
"""
