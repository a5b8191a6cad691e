"""Rank 0: what every layer builds on. The config base (field errors, the layer-pattern grammar, JSON type checks),
RMSNorm, RoPE and the process runtime (threads, load governor, memory probe). Imports nothing above it."""
