"""`hybridlm export`: a training checkpoint (run or step directory, either layout) -> a Hugging Face checkpoint
directory (the default), or -> a run directory in hybridlm's single-directory layout (`--format hybridlm`: how a
sharded `dcp` checkpoint becomes one model.safetensors + optimizer.safetensors; read in this one process)."""

from __future__ import annotations


def cmd_export(args) -> None:
    from ...interop import checkpoint as ckpt
    if args.format == "hybridlm":
        path = ckpt.export_full(args.checkpoint, args.out)
        print(f"wrote {path} (single-directory layout; continue it with --out {args.out} --resume)")
        return
    path = ckpt.export_hf(args.checkpoint, args.out, drop_expert_bias=args.drop_expert_bias)
    print(f"wrote {path} (loads with HybridLM.from_hf / transformers)")


def register(sub) -> None:
    e = sub.add_parser("export", help="write a training checkpoint as a Hugging Face checkpoint directory, or in "
                                      "hybridlm's single-directory layout")
    e.add_argument("checkpoint", help="a run directory (uses its latest checkpoint) or a step_XXXXXX directory, "
                                      "in either layout (full, or dcp shards from any number of ranks)")
    e.add_argument("out", metavar="OUT", help="--format hf: output directory (config.json + model.safetensors "
                                              "[+ tokenizer.json]); --format hybridlm: a new run directory "
                                              "(OUT/step_XXXXXX + OUT/latest)")
    e.add_argument("--format", choices=("hf", "hybridlm"), default="hf",
                   help="hf (default): a Hugging Face checkpoint; hybridlm: the single-directory training checkpoint "
                        "(whole tensors, optimizer, RNG, data position), resumable on any world size")
    e.add_argument("--drop-expert-bias", action="store_true",
                   help="--format hf: export even though the aux-loss-free expert bias moved (the HF format has no "
                        "such bias)")
    e.set_defaults(fn=cmd_export)
