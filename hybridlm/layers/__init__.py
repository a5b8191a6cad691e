"""Rank 2: the layers a decoder is assembled from. Token mixers (mixers/<kind>.py), FFNs (ffn/), the Mixer and FFN
protocols (protocol.py), the per-forward context (context.py) and the HybridCache container (cache.py). Imports only
core, ops and the registry."""
