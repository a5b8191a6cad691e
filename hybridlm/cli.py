"""The `hybridlm` command line: presets, info, generate (more commands register themselves below).

Every command takes a model spec: a preset name, a config .json file, or a checkpoint directory
(Hugging Face: config.json + safetensors)."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

from . import runtime


def load_model(spec: str, device: str = "cpu", meta: bool = False, seed: int = 0):
    """-> (model, tokenizer_dir or None). Random weights (seeded) for presets and config files."""
    from .config import ModelConfig
    from .model import HybridLM
    from .presets import get_config
    p = Path(spec)
    from .checkpoint import Checkpoint, is_checkpoint
    if is_checkpoint(p):  # a hybridlm training run or step directory: its weights and tokenizer
        ckpt = Checkpoint.open(p)
        if meta:
            return HybridLM(ckpt.model_config(), device="meta"), ckpt.path
        return ckpt.load_model(device), ckpt.path
    if p.is_dir():
        if meta:
            from .hf import checked_config, read_config
            return HybridLM(checked_config(p, read_config(p)), device="meta"), p
        return HybridLM.from_hf(p, device=device), p
    cfg = ModelConfig.from_json(p) if p.suffix == ".json" else get_config(spec)
    if meta:
        return HybridLM(cfg, device="meta"), None
    runtime.check_fits(cfg)
    torch.manual_seed(seed)
    return HybridLM(cfg, device=device), None


def console():
    """Rich console; wide when output is not a terminal, so piped tables are not truncated."""
    from rich.console import Console
    return Console() if sys.stdout.isatty() else Console(width=200)


def _fmt(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(int(n))


def cmd_presets(args) -> None:
    from rich.table import Table
    from .model import HybridLM
    from .presets import ALIASES, PRESETS, get_config
    table = Table(title="hybridlm presets (parameters counted on the meta-device model)")
    for col in ("preset", "layers", "mixers", "total (no MTP)", "total (+MTP)", "active (emb+head)"):
        table.add_column(col, justify="right" if col not in ("preset", "mixers") else "left")
    aliases = {v: k for k, v in ALIASES.items()}
    for name in PRESETS:
        m = HybridLM(get_config(name), device="meta")
        label = name + (f" (= {aliases[name]})" if name in aliases else "")
        table.add_row(label, str(m.config.num_layers), m.config.mixer_pattern, _fmt(m.num_params(mtp=False)),
                      _fmt(m.num_params()), _fmt(m.active_params()))
    console().print(table)


def cmd_info(args) -> None:
    from rich.table import Table
    model, _ = load_model(args.model, meta=True)
    cfg = model.config
    con = console()
    con.print(f"[bold]{cfg.name}[/]: d_model={cfg.d_model}, vocab={cfg.vocab_size}, layers={cfg.num_layers}, "
                  f"mixer_pattern={cfg.mixer_pattern!r}, ffn_pattern={cfg.ffn_pattern!r}, mtp_depth={cfg.mtp_depth}")
    table = Table(title="per-layer plan")
    for col in ("layer", "mixer", "ffn", "params", "active"):
        table.add_column(col)
    for i, block in enumerate(model.layers):
        total = sum(p.numel() for p in block.parameters())
        active = total - getattr(block.ffn, "num_params", lambda: 0)() + getattr(block.ffn, "active_params", lambda: 0)()
        table.add_row(str(i), f"{block.mixer_letter}: {_describe(cfg.mixers[block.mixer_letter])}",
                      f"{block.ffn_letter}: {_describe(cfg.ffns[block.ffn_letter])}", _fmt(total), _fmt(active))
    con.print(table)
    con.print(f"total parameters: {model.num_params(mtp=False):,} (without MTP), {model.num_params():,} (with MTP)")
    con.print(f"active per token: {model.active_params():,} (with embedding and head), "
                  f"{model.active_params(embedding=False):,} (head only), "
                  f"{model.active_params(embedding=False, head=False):,} (neither)")


def _describe(c) -> str:
    return c.describe()


def cmd_generate(args) -> int:
    from .tokenizer import tokenizer_for
    model, tok_dir = load_model(args.model, device=args.device, seed=args.seed)
    model.eval()
    tok = tokenizer_for(tok_dir)
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt encodes to no tokens")
    if max(ids) >= model.config.vocab_size:
        raise ValueError(f"tokenizer {tok.name} produced id {max(ids)} >= model vocab_size {model.config.vocab_size}")
    prompt = torch.tensor([ids], device=args.device)
    tokens = model.stream(prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, stop_tokens=args.stop, seed=args.seed,
                          max_len=args.max_len)
    out: list[int] = []
    shown = ""
    try:
        first = next(tokens, None)  # the limits are checked before the prompt is echoed
        sys.stdout.write(args.prompt)
        for tok_ids in itertools.chain([first] if first is not None else [], tokens):
            out.append(int(tok_ids[0]))
            text = tok.decode(out)
            sys.stdout.write(text[len(shown):])  # stream: print only what the new token completed
            sys.stdout.flush()
            shown = text
    except KeyboardInterrupt:  # Ctrl-C: keep what was generated, say so, exit like an interrupted shell command
        sys.stdout.write("\n")
        print(f"hybridlm generate: interrupted after {len(out)} new tokens", file=sys.stderr)
        return 130
    sys.stdout.write("\n")
    return 0


def _token_ids(text: str) -> list[int]:
    """--stop '0,13' -> [0, 13]."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of token ids like 0,13") from None
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"{text!r}: token ids must be >= 0")
    return ids


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return n


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 0")
    return n


class Parser(argparse.ArgumentParser):
    """argparse with two traps closed: no abbreviations (`--step 5` must not silently mean `--steps 5`), and a
    value that starts with '-' and a digit (`--context -8K`) reaches its flag's checks instead of being taken
    for an unknown option ("expected one argument"). No hybridlm flag starts with a digit."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _parse_optional(self, arg_string):
        if len(arg_string) > 1 and arg_string[0] == "-" and arg_string[1].isdigit():
            return None
        return super()._parse_optional(arg_string)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hybridlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)  # subcommand parsers are Parsers too
    sub.add_parser("presets", help="list presets with total and active parameters").set_defaults(fn=cmd_presets)
    p = sub.add_parser("info", help="the per-layer plan of a preset, config file or checkpoint directory")
    p.add_argument("model")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("generate", help="generate text (random weights for presets; real ones from a checkpoint)")
    p.add_argument("model")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=_count, default=64)
    p.add_argument("--max-len", type=_positive_int, default=None,
                   help="most positions (prompt + new tokens); default: the model's max_seq_len")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--stop", type=_token_ids, default=[], help="comma-separated stop token ids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_generate)
    from .cost import add_cost_parser; add_cost_parser(sub)  # noqa: E702 (one line per registered command)
    from .train import add_train_parser; add_train_parser(sub)  # noqa: E702 (registers train and export)
    from .compare import add_compare_parser; add_compare_parser(sub)  # noqa: E702
    return parser


def main(argv: list[str] | None = None) -> int:
    """-> exit code: 0, 1 when a command ran but part of it failed (compare: a model), 2 for a user's mistake
    or a file the program cannot read or write (one line naming it), 130 on Ctrl-C."""
    runtime.configure_threads()
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, OSError) as e:  # a user's mistake or an unreadable/unwritable file: say what, no traceback
        text = " ".join(str(e).split())  # one line
        print(f"hybridlm {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hybridlm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
