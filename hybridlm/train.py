"""`hybridlm train`: pretrain any preset or config file on the built-in corpus or the user's text.

    TrainConfig          every knob of a run; the CLI's flags are generated from its fields (help from metadata)
    train(cfg)           the loop: data -> model (FSDP2 under torchrun) -> AdamW/Muon + warmup-cosine ->
                         log / validate / checkpoint; resumes exactly from OUT/latest with resume=True
    add_train_parser     registers `hybridlm train` and `hybridlm export` (checkpoint -> Hugging Face dir)

Per optimizer step: `batch_size` sequences (global, over all ranks) = world x grad_accum micro-batches.
loss = CE + aux_loss_weight * sum(aux losses: MoE balance, trained indexers' KL) + mtp_loss_weight * CE(token after
next); every MoE's aux-loss-free expert bias is updated after every optimizer step. A non-finite loss or gradient norm stops the run
before the optimizer step, naming the step and the last good checkpoint.
"""

# Moved: TrainConfig / TrainResult / NonFiniteLossError / model_config -> hybridlm.training.config, train / evaluate
# -> hybridlm.training.loop, setup helpers -> hybridlm.training.distributed, metrics -> hybridlm.training.metrics.
# This module re-exports them for the old import path until the final import rewrite of issue 11.

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Literal

from . import checkpoint as ckpt
from .training.config import NonFiniteLossError, TrainConfig, TrainResult, model_config
from .training.loop import evaluate, train

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "add_train_parser", "cmd_export", "cmd_train",
           "config_from_args", "evaluate", "model_config", "train"]


# -- CLI -----------------------------------------------------------------------------------------------------
def _arg_type(tp):
    """-> (argparse type, choices) for a TrainConfig annotation."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Literal:
        return str, list(typing.get_args(tp))
    if args:  # X | None
        return _arg_type(args[0])
    return tp, None


def add_train_parser(sub) -> None:
    """Register `hybridlm train` (flags generated from TrainConfig) and `hybridlm export`."""
    p = sub.add_parser("train", help="train a preset or config on the built-in corpus or your data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        help_text = f.metadata.get("help", "")
        if f.name == "model":
            p.add_argument("model", nargs="?", default=argparse.SUPPRESS, help=f"{help_text} (default: {f.default})")
            continue
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {f.default})")
        else:
            tp, choices = _arg_type(hints[f.name])
            p.add_argument(flag, type=tp, choices=choices, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {f.default})")
    p.add_argument("--train-config", default=None, help="a TrainConfig .json; flags given here override it")
    p.set_defaults(fn=cmd_train)
    e = sub.add_parser("export", help="write a training checkpoint as a Hugging Face checkpoint directory")
    e.add_argument("checkpoint", help="a run directory (uses its latest checkpoint) or a step_XXXXXX directory")
    e.add_argument("hf_dir", help="output directory (config.json + model.safetensors [+ tokenizer.json])")
    e.add_argument("--drop-expert-bias", action="store_true",
                   help="export even though the aux-loss-free expert bias moved (the HF format has no such bias)")
    e.set_defaults(fn=cmd_export)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict = {}
    if args.train_config:
        p = Path(args.train_config)
        if not p.is_file():
            raise ValueError(f"--train-config {p}: no such file")
        try:
            values = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--train-config {p}: not valid JSON ({e})") from None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return TrainConfig.from_dict(values)


def cmd_train(args) -> None:
    train(config_from_args(args))


def cmd_export(args) -> None:
    path = ckpt.export_hf(args.checkpoint, args.hf_dir, drop_expert_bias=args.drop_expert_bias)
    print(f"wrote {path} (loads with HybridLM.from_hf / transformers)")

