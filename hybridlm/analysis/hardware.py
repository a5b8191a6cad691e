"""Accelerators for the roofline serving model in hybridlm/analysis/accounting.py: peak dense matmul throughput, HBM bandwidth
and capacity, each with where the figure comes from.

Conventions: dense (no 2:4 sparsity) tensor-core peaks in FLOP/s, 2 FLOPs per multiply-add, as the vendors count
them; decimal units as the datasheets print them (1 TB/s = 1e12 B/s, 1 GB = 1e9 B). `fp8_flops` is None where
the chip has no FP8 matmul (costing fp8 weights there falls back to the bf16 peak; the output says so).
Vendor datasheets quote sparse peaks in the headline; the dense figure is half of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Hardware:
    key: str
    name: str
    bf16_flops: float  # peak dense BF16 matmul FLOP/s
    fp8_flops: float | None  # peak dense FP8 matmul FLOP/s; None = not supported
    hbm_bandwidth: float  # bytes/s
    hbm_capacity: float  # bytes
    source: str
    note: str = ""

    def peak_flops(self, dtype: str) -> float:
        """Peak for matmuls in `dtype` ('bf16' or 'fp8'); fp8 on a chip without it runs at the bf16 peak."""
        if dtype == "fp8" and self.fp8_flops is not None:
            return self.fp8_flops
        return self.bf16_flops

    def to_dict(self) -> dict:
        return asdict(self)


HARDWARE: dict[str, Hardware] = {h.key: h for h in [
    Hardware(
        "h100", "NVIDIA H100 SXM5 80GB", 989e12, 1979e12, 3.35e12, 80e9,
        "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column: BF16 1,979 TFLOPS and FP8 3,958 TFLOPS 'with "
        "sparsity', GPU memory 80GB, bandwidth 3.35TB/s); https://www.nvidia.com/en-us/data-center/h100/",
    ),
    Hardware(
        "h200", "NVIDIA H200 SXM 141GB", 989e12, 1979e12, 4.8e12, 141e9,
        "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column: BF16 1,979 TFLOPS and FP8 3,958 TFLOPS 'with "
        "sparsity', GPU memory 141GB HBM3e, bandwidth 4.8TB/s); https://www.nvidia.com/en-us/data-center/h200/",
    ),
    Hardware(
        "b200", "NVIDIA B200 (HGX B200, 1000 W)", 2.25e15, 4.5e15, 8e12, 180e9,
        "NVIDIA DGX B200 / HGX B200 datasheet (8 GPUs: FP8 72 PFLOPS and BF16 36 PFLOPS sparse, 1,440GB HBM3e, "
        "64TB/s, i.e. per GPU 4.5 / 2.25 PFLOPS dense, 180GB, 8TB/s); "
        "https://www.nvidia.com/en-us/data-center/hgx/",
        note="the B200 package carries 192GB; HGX/DGX B200 systems expose 180GB per GPU",
    ),
    Hardware(
        "mi300x", "AMD Instinct MI300X", 1307.4e12, 2614.9e12, 5.3e12, 192e9,
        "AMD Instinct MI300X data sheet (peak BF16 1,307.4 TFLOPS and FP8 2,614.9 TFLOPS dense, 192GB HBM3, "
        "5.3TB/s); https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html",
    ),
    Hardware(
        "910b", "Huawei Ascend 910B", 320e12, None, 1.6e12, 64e9,
        "Huawei publishes no per-chip datasheet for the 910B; commonly reported figures: ~320 TFLOPS FP16/BF16, "
        "64GB HBM2e (4 stacks, ~1.6TB/s), no FP8 (e.g. boardor.com 'Huawei Ascend 910B outperforms H20'; "
        "HBM2e stack bandwidth per JEDEC JESD235C)",
        note="secondary sources; bins differ (reported 280-400 TFLOPS); treat as approximate",
    ),
    Hardware(
        "910c", "Huawei Ascend 910C", 780e12, None, 3.2e12, 128e9,
        "Huawei publishes no per-chip datasheet for the 910C (two 910B-class dies); TechPowerUp citing DigiTimes, "
        "21 Apr 2025: 780 TFLOPS BF16, eight HBM2E stacks, 3,200 GB/s; 128GB; ~800 TFLOPS FP16 per Huawei "
        "Connect 2025 roadmap coverage; no FP8 (FP8 arrives with the Ascend 950)",
        note="secondary sources; treat as approximate (aiwiki.ai 'Huawei Ascend 910C', citing SemiAnalysis, Reuters, "
             "the FT: 780-800 TFLOPS BF16, ~128GB, 3.2-3.5 TB/s)",
    ),
]}


@dataclass(frozen=True)
class Price:
    usd_per_hour: float  # one device-hour
    source: str


# Rental prices per device-hour for the $/Mtok columns of `hybridlm compare`'s full-scale table; only where a figure or
# a stated assumption exists (`hybridlm cost` takes --usd-per-hour instead).
PRICES: dict[str, Price] = {
    "h100": Price(2.50, "on-demand H100 SXM rental, specialty clouds, 2026: $2.49-3.99/h (pricegpu.pages.dev 'H100 vs "
                        "A100 cloud pricing': CoreWeave, Lambda, Crusoe, RunPod) and $2.50-3.50/h (mercatus-ai.com "
                        "'cloud GPU pricing', May 2026); the low end of both ranges"),
    "910c": Price(2.50, "assumption: no public per-hour rental price for the 910C was found; its reported purchase "
                        "price (~$28,600: 70,000 chips worth ~$2 billion, Tom's Hardware citing the South China Morning "
                        "Post, 2024) is close to the H100's ($25,000-30,000, awesomeagents.ai 'NVIDIA H100 SXM'), so it is "
                        "priced as the H100 is; the $/Mtok difference is then throughput per device-hour alone"),
}
ALIASES = {"h100-sxm": "h100", "h200-sxm": "h200", "ascend910b": "910b", "ascend-910b": "910b",
           "ascend910c": "910c", "ascend-910c": "910c"}


def get_hardware(key: str) -> Hardware:
    k = key.lower()
    k = ALIASES.get(k, k)
    if k not in HARDWARE:
        raise ValueError(f"--hardware {key!r}: unknown; known: {', '.join(HARDWARE)}")
    return HARDWARE[k]
