"""What a model costs to serve at long context: the exact accounting of a model (parameters, FLOPs, cache bytes, taken
from the modules: mixer and FFN `num_params`, `flops_per_token`, `decode_flops`, `cache_bytes`; HybridLM's
aggregates) put on a roofline serving model of a `hardware.Hardware`.

    Assumptions / assumptions()   every assumption of the serving model (printed with the results)
    serving_point(model, L, ...)  devices, max batch, prefill time and decode throughput at context L
    model_summary(model, spec)    the parameter and layout figures of one model
The tables, plot, article and JSON report built from these are in cost_report.py; the command in cli/commands/cost.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .hardware import Hardware

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


@dataclass
class Assumptions:
    weights_dtype: str = "bf16"
    cache_dtype: str = "bf16"
    state_dtype: str = "fp32"  # Gated DeltaNet state: fp32 as in hybridlm and the fla kernels; vLLM: model dtype
    hbm_fraction: float = 0.9  # share of HBM usable for weights + cache (vLLM's gpu_memory_utilization default)
    usd_per_hour: float | None = None  # per device

    def __post_init__(self) -> None:
        for name in ("weights_dtype", "cache_dtype", "state_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be one of {sorted(DTYPE_BYTES)}")
        if self.weights_dtype not in ("bf16", "fp8"):
            raise ValueError(f"weights_dtype={self.weights_dtype!r}: must be 'bf16' or 'fp8'")
        if not 0 < self.hbm_fraction <= 1:
            raise ValueError(f"hbm_fraction={self.hbm_fraction}: must be in (0, 1]")
        if self.usd_per_hour is not None and self.usd_per_hour <= 0:
            raise ValueError(f"usd_per_hour={self.usd_per_hour}: must be > 0")


def assumptions(a: Assumptions, hw: Hardware) -> list[str]:
    fp8_note = (" (this chip has no FP8 matmul: the bf16 peak is used)"
                if a.weights_dtype == "fp8" and hw.fp8_flops is None else "")
    return [
        "Roofline bounds at the datasheet peaks (dense); real kernels reach a fraction of them, none is assumed.",
        (f"Weights in {a.weights_dtype} ({DTYPE_BYTES[a.weights_dtype]} B/param) for every non-MTP parameter, "
         f"matmuls at the {a.weights_dtype} peak{fp8_note}; the MTP module is not loaded (no speculative decoding)."),
        (f"KV cache and conv windows in {a.cache_dtype}; Gated DeltaNet recurrent state in {a.state_dtype} "
         "(hybridlm keeps it in fp32; vLLM keeps it in the model dtype: use --state-dtype bf16 for that)."),
        (f"Devices = ceil((weights + one sequence's cache) / ({a.hbm_fraction:g} x HBM)); the rest of that usable HBM "
         "holds more sequences' cache (max batch). Activations and fragmentation are not costed beyond the fraction."),
        "Tensor parallelism over the devices is ideal: FLOPs and bytes split evenly, communication takes no time.",
        ("FLOPs: 2 per multiply-add over the matmuls (projections, experts, attention scores and values, the delta "
         "rule's state products); elementwise ops (norms, gates, softmax, RoPE) are not counted."),
        ("Prefill of one sequence: max(FLOPs / (devices x peak), (all weights + its cache) / (devices x "
         "bandwidth)), compute-bound but for short prompts; attention FLOPs averaged over causal positions "
         "(kernels skip masked blocks); logits for the last position only."),
        ("Decode step for B sequences: max(B x FLOPs per token / (devices x peak), (weights read + B x cache traffic) "
         "/ (devices x bandwidth)). Weights read: all but the input embedding (B rows gathered) and routed experts "
         "no token picked; a MoE layer with E experts, top-k, touches E(1-(1-k/E)^B) distinct experts in "
         "expectation (uniform, independent routing). Cache traffic per sequence: the KV cache read once, conv "
         "windows and recurrent state read and written once."),
        ("$ per million tokens = $/hour per device x devices / tokens per hour: output tokens decoded at the max "
         "batch, input tokens from the prefill time of one sequence."),
        "Contexts beyond the model's max_position_embeddings are marked '*' (costed anyway).",
        "Numbers are shown to 3 significant figures; parameter counts and cache bytes are exact.",
    ]


# -- parsing ------------------------------------------------------------------------------------------------
def parse_contexts(text: str) -> list[int]:
    """'8K,128K,1M' -> [8192, 131072, 1048576] (K = 1024, M = 1024^2, as context lengths are quoted)."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", part)
        if not m:
            raise ValueError(f"--context {text!r}: {part.strip()!r} is not a positive context like 4096, 8K or 1M")
        n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[m.group(2).lower()]
        if n < 1:
            raise ValueError(f"--context {text!r}: contexts must be >= 1")
        out.append(n)
    return out


def context_label(n: int) -> str:
    for unit, scale in (("M", 1024 ** 2), ("K", 1024)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)



# -- the serving model --------------------------------------------------------------------------------------
def expected_experts(num_experts: int, top_k: int, batch: int) -> float:
    """Distinct experts B tokens touch in expectation when each picks top_k of E uniformly and independently."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** batch)


def weight_params_read(model, batch: int) -> float:
    """Parameters a decode step over `batch` sequences reads (see assumptions())."""
    D = model.config.d_model
    n = float(model.num_params(mtp=False))
    if model.lm_head is not None:  # untied: the embedding is gathered, B rows; tied: it is the head, read whole
        n -= model.embed.weight.numel() - batch * D
    for b in model.layers:
        c = b.ffn.cfg
        if c.kind == "moe":
            n -= (c.num_experts - expected_experts(c.num_experts, c.top_k, batch)) * 3 * c.expert_size * D
    return n


def serving_point(model, context: int, hw: Hardware, a: Assumptions) -> dict:
    wb = DTYPE_BYTES[a.weights_dtype]
    kinds = model.cache_bytes_by_kind(context, 1, DTYPE_BYTES[a.cache_dtype], DTYPE_BYTES[a.state_dtype])
    # 'kv' here is every cache that grows with context and is read once per step: KV and MLA latent ('latent')
    kv, rec = sum(v for k, v in kinds.items() if k != "recurrent"), kinds.get("recurrent", 0)
    cache_seq, traffic_seq = kv + rec, kv + 2 * rec
    weights = model.num_params(mtp=False) * wb
    usable = hw.hbm_capacity * a.hbm_fraction
    devices = math.ceil((weights + cache_seq) / usable)
    max_batch = math.floor((devices * usable - weights) / cache_seq)
    peak, bandwidth = devices * hw.peak_flops(a.weights_dtype), devices * hw.hbm_bandwidth
    prefill_flops, decode_flops = model.prefill_flops(context), model.decode_flops(context)

    def step(batch: int) -> tuple[float, str]:
        compute = batch * decode_flops / peak
        memory = (weight_params_read(model, batch) * wb + batch * traffic_seq) / bandwidth
        return max(compute, memory), ("compute" if compute > memory else "memory")

    t1, bound1 = step(1)
    tb, bound = step(max_batch)
    # a long prompt routes to (nearly) every expert: prefill reads all weights once and writes its cache
    prefill_compute, prefill_memory = prefill_flops / peak, (weights + cache_seq) / bandwidth
    prefill_s = max(prefill_compute, prefill_memory)
    per_device = max_batch / tb / devices
    usd = a.usd_per_hour
    return {
        "context": context,
        "within_max_seq_len": context <= model.config.max_seq_len,
        "cache_bytes": {"kv": kv, "recurrent": rec, "total": cache_seq},
        "prefill_flops_per_token": prefill_flops / context,
        "prefill_flops": prefill_flops,
        "decode_flops_per_token": decode_flops,
        "weights_bytes": weights,
        "devices": devices,
        "max_batch": max_batch,
        "prefill_seconds": prefill_s,
        "prefill_bound": "compute" if prefill_compute >= prefill_memory else "memory",
        "decode": {
            "batch1_tokens_per_s": 1.0 / t1, "batch1_bound": bound1,
            "max_batch_tokens_per_s_per_seq": 1.0 / tb, "max_batch_bound": bound,
            "tokens_per_s_per_device": per_device,
        },
        "usd_per_million_output_tokens": None if usd is None else usd / (per_device * 3600) * 1e6,
        "usd_per_million_input_tokens": None if usd is None else usd * devices * prefill_s / 3600 / context * 1e6,
    }


def describe_layout(cfg) -> str:
    counts: dict[str, int] = {}
    for letter in cfg.layer_mixers:
        label = cfg.mixers[letter].describe(brief=True)
        counts[label] = counts.get(label, 0) + 1
    return " + ".join(f"{n} {label}" for label, n in counts.items())


def model_summary(model, spec: str) -> dict:
    """Layout and parameter figures; checkpoint_total is what a Hugging Face checkpoint of the model stores
    (parameters + stored buffers + the MTP's own embedding / head copies), None where no converter writes it."""
    from ..interop.hf import checkpoint_total
    cfg = model.config
    return {
        "name": cfg.name, "spec": spec, "layers": cfg.num_layers, "mixer_pattern": cfg.mixer_pattern,
        "ffn_pattern": cfg.ffn_pattern, "layout": describe_layout(cfg), "max_seq_len": cfg.max_seq_len,
        "params": {"total_without_mtp": model.num_params(mtp=False), "total_with_mtp": model.num_params(mtp=True),
                   "mtp": model.num_params(mtp=True) - model.num_params(mtp=False),
                   "checkpoint_total": checkpoint_total(cfg)},
        "active_params": {"embedding_and_head": model.active_params(),
                          "head_only": model.active_params(embedding=False),
                          "neither": model.active_params(embedding=False, head=False)},
    }


def load_meta(spec: str):
    from ..interop.specs import load_model
    model, _ = load_model(spec, meta=True)
    return model
