"""Rank 3: the model. ModelConfig (config.py), HybridLM / Block / MTP (model.py), DeepSeek-V4's mHC (hyper.py) and
sampling (generate.py). `from hybridlm.model import HybridLM` keeps working from the days model.py was one file."""

from ..layers.ffn import build_ffn
from ..registry import FFNS
from .config import ModelConfig
from .model import MTP, Block, HybridLM, ModelOutput, check_fits

__all__ = ["FFNS", "MTP", "Block", "HybridLM", "ModelConfig", "ModelOutput", "build_ffn", "check_fits"]
