"""The `hybridlm` command line. app.py builds the parser from the command modules in commands/ and runs one;
format.py and arguments.py are what the commands share. Nothing outside this package imports it."""

from .app import build_parser, main

__all__ = ["build_parser", "main"]
