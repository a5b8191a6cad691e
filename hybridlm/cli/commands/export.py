"""`hybridlm export`: a training checkpoint (run or step directory) -> a Hugging Face checkpoint directory."""

from __future__ import annotations


def cmd_export(args) -> None:
    from ...interop import checkpoint as ckpt
    path = ckpt.export_hf(args.checkpoint, args.hf_dir, drop_expert_bias=args.drop_expert_bias)
    print(f"wrote {path} (loads with HybridLM.from_hf / transformers)")


def register(sub) -> None:
    e = sub.add_parser("export", help="write a training checkpoint as a Hugging Face checkpoint directory")
    e.add_argument("checkpoint", help="a run directory (uses its latest checkpoint) or a step_XXXXXX directory")
    e.add_argument("hf_dir", help="output directory (config.json + model.safetensors [+ tokenizer.json])")
    e.add_argument("--drop-expert-bias", action="store_true",
                   help="export even though the aux-loss-free expert bias moved (the HF format has no such bias)")
    e.set_defaults(fn=cmd_export)
