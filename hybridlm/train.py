"""Moved: TrainConfig / TrainResult / NonFiniteLossError / model_config -> hybridlm.training.config, train / evaluate
-> hybridlm.training.loop (setup helpers: training.distributed, metrics: training.metrics), the `train` and `export`
commands -> hybridlm/cli/commands/{train,export}.py. This shim keeps the old import path until the final import
rewrite of issue 11; the old CLI names resolve lazily, so importing it does not import the CLI."""

from .training.config import NonFiniteLossError, TrainConfig, TrainResult, model_config
from .training.loop import evaluate, train

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "evaluate", "model_config", "train"]


def __getattr__(name: str):
    from .cli.commands import export as _export
    from .cli.commands import train as _train
    if name == "add_train_parser":
        return lambda sub: (_train.register(sub), _export.register(sub))[0]
    if name in ("cmd_train", "config_from_args"):
        return getattr(_train, name)
    if name == "cmd_export":
        return _export.cmd_export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
