"""`hybridlm presets`: every preset with its total and active parameters (meta device) and checkpoint total."""

from __future__ import annotations


def run(args) -> None:
    from rich.table import Table

    from ...interop.hf import checkpoint_total
    from ...model import HybridLM
    from ...presets import ALIASES, PRESETS, get_config
    from ..format import console, fmt_count
    table = Table(title="hybridlm presets (parameters counted on the meta-device model)")
    cols = ("preset", "layers", "mixers", "total (no MTP)", "total (+MTP)", "active (emb+head)", "checkpoint total")
    for col in cols:
        table.add_column(col, justify="right" if col not in ("preset", "mixers") else "left")
    aliases = {v: k for k, v in ALIASES.items()}
    for name in PRESETS:
        m = HybridLM(get_config(name), device="meta")
        label = name + (f" (= {aliases[name]})" if name in aliases else "")
        stored = checkpoint_total(m.config)
        table.add_row(label, str(m.config.num_layers), m.config.mixer_pattern, fmt_count(m.num_params(mtp=False)),
                      fmt_count(m.num_params()), fmt_count(m.active_params()),
                      fmt_count(stored) if stored is not None else "-")
    console().print(table)


def register(sub) -> None:
    sub.add_parser("presets", help="list presets with total and active parameters").set_defaults(fn=run)
