"""`hybridlm train`: pretrain any preset or config file on the built-in corpus or the user's text.

    TrainConfig          every knob of a run; the CLI's flags are generated from its fields (help from metadata)
    train(cfg)           the loop: data -> model (FSDP2 under torchrun) -> AdamW/Muon + warmup-cosine ->
                         log / validate / checkpoint; resumes exactly from OUT/latest with resume=True
    add_train_parser     registers `hybridlm train` and `hybridlm export` (checkpoint -> Hugging Face dir, or
                         a sharded checkpoint -> the single-directory layout)

Per optimizer step: `batch_size` sequences (global, over all ranks) = world x grad_accum micro-batches.
loss = CE + aux_loss_weight * sum(aux losses: MoE balance, trained indexers' KL) + mtp_loss_weight * CE(token after
next); every MoE's aux-loss-free expert bias is updated after every optimizer step. A non-finite loss or gradient norm stops the run
before the optimizer step, naming the step and the last good checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Literal

from ...training import TrainConfig, train


def _arg_type(tp):
    """-> (argparse type, choices) for a TrainConfig annotation."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Literal:
        return str, list(typing.get_args(tp))
    if args:  # X | None
        return _arg_type(args[0])
    return tp, None


def register(sub) -> None:
    """Register `hybridlm train`: one flag per TrainConfig field (help from its metadata)."""
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
