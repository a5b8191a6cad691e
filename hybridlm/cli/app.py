"""`hybridlm`: the parser, built from the command modules, and main(). A command is one module in commands/
with `register(sub)`, which adds its subparser(s) with `set_defaults(fn=...)`; fn returns an exit code or None.

Every command takes a model spec: a preset name, a config .json file, a training checkpoint or a Hugging Face
checkpoint directory (interop/specs.py resolves them)."""

from __future__ import annotations

import sys

from ..core import runtime
from .arguments import Parser
from .commands import compare, cost, export, generate, info, presets, train

COMMANDS = (presets, info, generate, cost, train, export, compare)


def build_parser() -> Parser:
    parser = Parser(prog="hybridlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)  # subcommand parsers are Parsers too
    for command in COMMANDS:
        command.register(sub)
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
