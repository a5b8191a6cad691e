"""The shared test harness every family's test file (tests/families/test_<family>.py) parametrises:

- hf_parity:     transformers' tiny model -> from_hf logits, the save_hf round trip, greedy generate
- cached_decode: cached decode and chunked prefill against one full forward
- flops:         the analytic FLOP count against what torch's FlopCounterMode sees
- cache_bytes:   HybridCache.memory_bytes measured against the model's analytic cache_bytes
- chunked:       an op's chunked (and one-step) form against its token-by-token reference, values and gradients

Each helper asserts what the family tests asserted before the harness existed; family-specific checks stay in the
family's file."""
