"""Training: `TrainConfig` (config.py), the loop `train(cfg)` (loop.py), distributed setup (distributed.py), step
lines and metrics.jsonl (metrics.py), AdamW/Muon + warmup-cosine (optim.py) and the data pipeline (data.py)."""

from .config import NonFiniteLossError, TrainConfig, TrainResult, model_config
from .loop import evaluate, train

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "evaluate", "model_config", "train"]
