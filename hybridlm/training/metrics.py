"""What a run reports: one fixed-format line per logged step (step, loss, lr, grad norm, tok/s, expert imbalance),
a line per validation, metrics.jsonl (and TensorBoard) on rank 0, and the progress bar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..interop import checkpoint as ckpt


@dataclass
class StepStats:
    """One optimizer step, averaged over micro-batches and ranks."""

    loss: float  # the total: ce + aux_loss_weight * aux + mtp_loss_weight * mtp
    ce: float
    aux: float  # unweighted sum of the aux losses (MoE balance, trained indexers' KL)
    mtp: float
    lr: float  # the lr this step used
    gnorm: float  # the global gradient norm before clipping
    imbalance: list[float]  # per MoE: max / mean expert load over the step

    @property
    def mean_imbalance(self) -> float:
        return sum(self.imbalance) / len(self.imbalance) if self.imbalance else 1.0


def step_line(step: int, s: StepStats, tok_s: float) -> str:
    return (f"step {step:05d} | loss {s.loss:.4f} | lr {s.lr:.2e} | gnorm {s.gnorm:.2f} | "
            f"tok/s {tok_s:.0f} | imb {s.mean_imbalance:.2f}")


def step_record(step: int, s: StepStats, tok_s: float) -> dict:
    return {"step": step, "loss": s.loss, "ce": s.ce, "aux": s.aux, "mtp": s.mtp, "lr": s.lr, "gnorm": s.gnorm,
            "tok_s": tok_s, "imbalance": s.mean_imbalance}


def val_line(record: dict) -> str:
    return f"val  {record['step']:05d} | loss {record['val_loss']:.4f} | bpb {record['val_bpb']:.4f}"


class Metrics:
    """metrics.jsonl (and TensorBoard) on rank 0; on resume, records after the checkpoint's step are dropped."""

    def __init__(self, out: Path, resume_step: int, tensorboard: bool, enabled: bool):
        self.enabled, self.path, self.tb = enabled, out / "metrics.jsonl", None
        if not enabled:
            return
        if self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            ckpt.replace_text(self.path, "".join(ln + "\n" for ln in kept))
        self.file = self.path.open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def progress_bar(enabled: bool):
    """A transient rich progress bar, or None when disabled (other ranks, --no-progress)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=True)
