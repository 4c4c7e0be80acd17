"""Tune's own tooling from the spec's `run` section: its loggers and the user's callbacks.

Our Parquet results are always written (dfa_ray.tune.callbacks); these are extras for the
tools a lab already uses: TensorBoard (`tensorboard`, needs tensorboardX), MLflow (`mlflow`),
Weights & Biases (`wandb`), and Tune's CSV / JSON trial logs (`csv`, `json`). Each is Tune's
own callback from `ray.tune.logger` or `ray.air.integrations`, built with the spec's
`run.logger_options.<logger>`; `run.callbacks` names further `package.module:Class` Tune
callbacks, built without arguments. The spec checks names, options and installed packages
when it is validated, so nothing here has to report a user mistake.
"""

from __future__ import annotations

import importlib
from typing import Any


def _logger(name: str, options: dict[str, Any]) -> Any:
    if name == "csv":
        from ray.tune.logger import CSVLoggerCallback

        return CSVLoggerCallback(**options)
    if name == "json":
        from ray.tune.logger import JsonLoggerCallback

        return JsonLoggerCallback(**options)
    if name == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return TBXLoggerCallback(**options)
    if name == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return MLflowLoggerCallback(**options)
    if name == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return WandbLoggerCallback(**options)
    raise ValueError(f"unknown logger {name!r}")  # the spec's validator lists the known ones


def load_callback_class(path: str) -> type:
    """`package.module:Class` -> the class (ImportError / AttributeError when it is not there)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def tune_callbacks(run: Any) -> list:
    """The Tune callbacks of a spec's `run` section (dfa_ray.spec.RunSpec), in the order given."""
    out = [_logger(name, run.logger_kwargs(name)) for name in run.loggers]
    out += [load_callback_class(path)() for path in run.callbacks]
    return out
