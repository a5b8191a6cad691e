"""What `hybridlm compare` knows about each family beyond its config: the lab it comes from (for --group-by origin),
its full-scale counterpart (for the report's full-scale table) and its layout class (for the verdict's claims).

    LABS, ORIGINS        lab -> origin; the two origins as the brief frames the two paths
    TINY                 tiny preset -> (lab or None for the project's own baselines, full-scale preset or None)
    lab_of(label, cfg)   TINY first, then the config's hf_model_type (MODEL_TYPE_LAB), else None
    layout(cfg)          attention / linear layer counts, MoE sparsity and the shared non-mixer "base"

Labs are the publishers named on the model cards (Hugging Face organisations) of the models each tiny preset
shrinks; nothing else is claimed about them.
"""

from __future__ import annotations

import hashlib
import json

ORIGINS = {
    "china": "Chinese labs (the compute-constrained path)",
    "west": "Western labs (the compute-abundant path)",
}
LABS = {  # lab -> origin
    "Qwen (Alibaba)": "china", "DeepSeek": "china", "Kimi (Moonshot AI)": "china", "MiniMax": "china",
    "Meta (Llama 4)": "west", "AI21 Labs (Jamba)": "west", "NVIDIA (Nemotron-H)": "west", "IBM (Granite)": "west",
    "Microsoft (SambaY)": "west", "Google (Titans)": "west",
}
BASELINE = "project baselines (no lab)"

# tiny preset -> (lab, full-scale preset). tiny-attention / tiny-gdn are this project's all-attention / all-linear
# baselines of tiny-hybrid: no lab; tiny-attention's counterpart is Qwen3's all-attention MoE (the layout Qwen3-Next
# and Qwen3.5 replace 3 of 4 attention layers of), tiny-gdn has none (no all-linear model is published at scale).
TINY: dict[str, tuple[str | None, str | None]] = {
    "tiny-hybrid": ("Qwen (Alibaba)", "qwen3.5-397b-a17b"),
    "tiny-attention": (None, "qwen3-235b-a22b"),
    "tiny-gdn": (None, None),
    "tiny-llama4": ("Meta (Llama 4)", "llama4-maverick-17b-128e"),
    "tiny-deepseek": ("DeepSeek", "deepseek-v3"),
    "tiny-deepseek-v4": ("DeepSeek", "deepseek-v4-pro"),
    "tiny-jamba": ("AI21 Labs (Jamba)", "jamba-1.5-large"),
    "tiny-mamba2-hybrid": ("NVIDIA (Nemotron-H)", "nemotron-h-56b"),
    "tiny-sambay": ("Microsoft (SambaY)", "phi-4-mini-flash"),
    "tiny-samba": ("Microsoft (SambaY)", None),  # Samba's own 3.8B (arXiv 2406.07522) is not a preset here
    "tiny-titans-mal": ("Google (Titans)", None),  # the paper publishes no widths or weights at any scale
    "tiny-titans-mag": ("Google (Titans)", None),
    "tiny-titans-mac": ("Google (Titans)", None),
    "tiny-minimax": ("MiniMax", "minimax-m1"),
    "tiny-kimi-linear": ("Kimi (Moonshot AI)", "kimi-linear-48b-a3b"),
}
# Families not in TINY (a new preset, a checkpoint) get their lab from the HF model_type of their config.
MODEL_TYPE_LAB = {
    "qwen3_next": "Qwen (Alibaba)", "qwen3_5_moe": "Qwen (Alibaba)", "qwen3_5": "Qwen (Alibaba)",
    "qwen3_moe": "Qwen (Alibaba)", "deepseek_v3": "DeepSeek", "deepseek_v32": "DeepSeek", "deepseek_v4": "DeepSeek",
    "kimi_k2": "Kimi (Moonshot AI)", "kimi_linear": "Kimi (Moonshot AI)", "llama4_text": "Meta (Llama 4)", "llama4": "Meta (Llama 4)",
    "jamba": "AI21 Labs (Jamba)", "nemotron_h": "NVIDIA (Nemotron-H)", "granitemoehybrid": "IBM (Granite)",
    "minimax": "MiniMax",
}

ATTENTION_KINDS = {"attention", "mla", "compressed_attention"}  # caches that grow with the context
LINEAR_KINDS = {"gated_deltanet", "kda", "lightning", "mamba", "mamba2", "titans"}  # a fixed-size recurrent state (Titans: its memory)


def lab_of(label: str, model_type: str | None = None) -> str | None:
    if label in TINY:
        return TINY[label][0]
    return MODEL_TYPE_LAB.get(model_type or "")


def origin_group(label: str, model_type: str | None = None) -> str:
    """ORIGINS' text for the model's lab, BASELINE for the project's baselines, or 'origin unknown'."""
    lab = lab_of(label, model_type)
    if lab is None:
        return BASELINE if label in TINY else "origin unknown (add it to analysis/families.py)"
    return ORIGINS[LABS[lab]]


def full_scale_of(label: str) -> str | None:
    return TINY.get(label, (None, None))[1]


def layout(cfg) -> dict:
    """The layout facts the verdict's claims need, stored per model in results.json: attention and linear layer
    counts (empty sublayers counted in neither), the mixer plan, routed-expert sparsity, and `base`: a digest of
    everything but the mixers (width, depth, FFNs, vocabulary), equal for models that differ only in token mixers."""
    kinds = [cfg.mixers[x].kind for x in cfg.layer_mixers]
    moe = [cfg.ffns[x] for x in cfg.layer_ffns if getattr(cfg.ffns[x], "kind", "") == "moe"]
    base = {"d_model": cfg.d_model, "layers": cfg.num_layers, "vocab": cfg.vocab_size, "ffn_pattern": cfg.ffn_pattern,
            "ffns": {k: repr(v) for k, v in sorted(cfg.ffns.items())}}
    return {"attention": sum(k in ATTENTION_KINDS for k in kinds), "linear": sum(k in LINEAR_KINDS for k in kinds),
            "mixers": " ".join(cfg.layer_mixers), "model_type": cfg.hf_model_type,
            "moe_layers": len(moe), "experts": max((m.num_experts for m in moe), default=0),
            "top_k": max((m.top_k for m in moe), default=0),
            "base": hashlib.sha1(json.dumps(base, sort_keys=True).encode()).hexdigest()[:12]}


FULL_SCALE_CONTEXTS = (128 * 1024, 1024 ** 2)
FULL_SCALE_HARDWARE = ("h100", "910c")


def full_scale(labels: list[str]) -> list[dict]:
    """For each tiny family among `labels` its full-scale counterpart's active and total parameters, cache per
    sequence (bf16 KV, fp32 recurrent state) and decode $/M output tokens at FULL_SCALE_CONTEXTS on each of
    FULL_SCALE_HARDWARE (accounting.serving_point at hardware.PRICES, default Assumptions otherwise); analytic,
    on the meta device. A family without one gets {"label", "full_scale": None}."""
    from .accounting import Assumptions, load_meta, serving_point
    from .hardware import PRICES, get_hardware
    rows = []
    for label in labels:
        name = full_scale_of(label)
        if name is None:
            if label in TINY:
                rows.append({"label": label, "full_scale": None})
            continue
        model = load_meta(name)
        row = {"label": label, "full_scale": name, "lab": lab_of(label), "active": model.active_params(),
               "total": model.num_params(mtp=False), "cache_bytes": {}, "usd_per_mtok": {}, "devices": {}}
        for key in FULL_SCALE_HARDWARE:
            hw, price = get_hardware(key), PRICES[key]
            for L in FULL_SCALE_CONTEXTS:
                p = serving_point(model, L, hw, Assumptions(usd_per_hour=price.usd_per_hour))
                row["cache_bytes"][str(L)] = p["cache_bytes"]["total"]
                row["usd_per_mtok"][f"{key}@{L}"] = p["usd_per_million_output_tokens"]
                row["devices"][f"{key}@{L}"] = p["devices"]
        rows.append(row)
    return rows
