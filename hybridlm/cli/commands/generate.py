"""`hybridlm generate SPEC --prompt TEXT`: stream a continuation (random weights for presets and configs)."""

from __future__ import annotations

import itertools
import sys

from ..arguments import add_quantize, count, positive_int, token_ids


def run(args) -> int:
    import torch

    from ...interop.specs import load_model
    from ...interop.tokenizer import tokenizer_for
    model, tok_dir = load_model(args.model, device=args.device, seed=args.seed)
    model.eval()
    if args.quantize:
        from ...layers.ffn.moe import QUANTIZATIONS
        q = QUANTIZATIONS[args.quantize](model)
        if not q.moe_layers:
            raise ValueError(f"--quantize {args.quantize}: {model.config.name} has no routed experts (no MoE layer)")
        print(f"hybridlm generate: {args.quantize}: {q.expert_weights:,} routed expert weights in {q.moe_layers} MoE "
              f"layers to int8, tensors {q.bytes_before / 2**20:.1f} -> {q.bytes_after / 2**20:.1f} MiB",
              file=sys.stderr)
    tok = tokenizer_for(tok_dir)
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt encodes to no tokens")
    if max(ids) >= model.config.vocab_size:
        raise ValueError(f"tokenizer {tok.name} produced id {max(ids)} >= model vocab_size {model.config.vocab_size}")
    prompt = torch.tensor([ids], device=args.device)
    timings: dict = {}
    tokens = model.stream(prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, stop_tokens=args.stop, seed=args.seed,
                          max_len=args.max_len, compile=args.compile, timings=timings)
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
    if args.compile and timings.get("first_step_s") is not None:
        step = timings["step_s"]
        print(f"hybridlm generate: --compile: first decode step {timings['first_step_s']:.1f} s (tracing and "
              f"compiling, or loading torch's cached graph), then "
              + (f"{1e3 * step:.2f} ms/token" if step is not None else "no further steps"), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text (random weights for presets; real ones from a checkpoint)")
    p.add_argument("model")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=count, default=64)
    p.add_argument("--max-len", type=positive_int, default=None,
                   help="most positions (prompt + new tokens); default: the model's max_seq_len")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--stop", type=token_ids, default=[], help="comma-separated stop token ids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="run the decode steps through torch.compile (a one-off warm-up, then several times faster "
                        "per token; docs/decode.md)")
    p.add_argument("--device", default="cpu")
    add_quantize(p, "applied after the weights are loaded")
    p.set_defaults(fn=run)
