"""`hybridlm info SPEC`: the per-layer plan, totals and active parameters, on the meta device."""

from __future__ import annotations


def run(args) -> None:
    from rich.table import Table

    from ...interop.hf import checkpoint_total
    from ...interop.specs import load_model
    from ..format import console, fmt_count
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
        table.add_row(str(i), f"{block.mixer_letter}: {cfg.mixers[block.mixer_letter].describe()}",
                      f"{block.ffn_letter}: {cfg.ffns[block.ffn_letter].describe()}", fmt_count(total),
                      fmt_count(active))
    con.print(table)
    con.print(f"total parameters: {model.num_params(mtp=False):,} (without MTP), {model.num_params():,} (with MTP)")
    stored = checkpoint_total(cfg)
    if stored is not None:
        con.print(f"checkpoint total: {stored:,} (parameters + stored buffers + the MTP's own embedding/head copies, "
                  f"as the Hugging Face checkpoint holds them)")
    con.print(f"active per token: {model.active_params():,} (with embedding and head), "
              f"{model.active_params(embedding=False):,} (head only), "
              f"{model.active_params(embedding=False, head=False):,} (neither)")


def register(sub) -> None:
    p = sub.add_parser("info", help="the per-layer plan of a preset, config file or checkpoint directory")
    p.add_argument("model")
    p.set_defaults(fn=run)
