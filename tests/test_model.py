"""The model: generation and sampling, losses, building on the meta device. (The per-family checks, cached decode
and chunked prefill against a full forward and cache memory, are in tests/families/test_tiny.py.)"""

import pytest
import torch
from harness.tiny import tiny_config as _tiny

from hybridlm import HybridLM, get_config


def test_generate_greedy_equals_argmax_of_full_forward():
    model = HybridLM(_tiny()).eval()
    prompt = torch.randint(0, 97, (2, 9))
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 15) and torch.equal(out[:, :9], prompt)
    with torch.no_grad():
        for t in range(9, 15):  # each new token is the argmax of a full forward over what came before
            assert torch.equal(model(out[:, :t]).logits[:, -1].argmax(-1), out[:, t])


def test_stop_tokens_and_streaming():
    model = HybridLM(_tiny()).eval()
    prompt = torch.randint(0, 97, (1, 5))
    free = model.generate(prompt, max_new_tokens=8)
    stop = int(free[0, 7])  # the third generated token
    streamed = list(model.stream(prompt, max_new_tokens=8, stop_tokens=[stop]))
    first = next(i for i, t in enumerate(free[0, 5:].tolist()) if t == stop)
    assert [int(t) for t in streamed] == free[0, 5:5 + first + 1].tolist()


def test_sampling_filters():
    from hybridlm.model.generate import sample_next
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {0, 1}
    draws = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 < 0.7 so token 1 is needed; 0.8 >= 0.7 so token 2 is not
    assert int(sample_next(logits, 0.0)) == 0
    with pytest.raises(ValueError, match="top_p=1.5"):
        sample_next(logits, 1.0, top_p=1.5)


def test_loss_parts_and_bad_inputs():
    model = HybridLM(_tiny())
    ids = torch.randint(0, 97, (2, 12))
    out = model(ids, labels=ids)
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.ce_loss, ce)
    torch.testing.assert_close(out.loss, out.ce_loss + out.aux_loss + 0.3 * out.mtp_loss
                               + model.mtp.block.ffn.aux_loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match=r"ids outside \[0, vocab_size=97\)"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, time\]"):
        model(torch.tensor([1, 2]))


def test_meta_build_then_init_is_finite():
    model = HybridLM(get_config("tiny-hybrid"), device="meta")
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.init_weights(seed=1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model(torch.randint(0, 256, (1, 70))).logits).all()


def test_empty_sublayers_have_no_norm_no_params_and_no_cache():
    """'-' in a pattern is a layer without that sublayer (Nemotron-H's one-sublayer layers): the block builds no
    norm for it, adds nothing to the residual, and the cache and the accounting leave it out."""
    from hybridlm import AttentionConfig, DenseFFNConfig, ModelConfig
    cfg = ModelConfig(vocab_size=64, d_model=32, num_layers=3, mixer_pattern="A-A", ffn_pattern="-D-",
                      mixers={"A": AttentionConfig(num_heads=2, num_kv_heads=1)},
                      ffns={"D": DenseFFNConfig(intermediate_size=48)})
    assert cfg.mixers["-"].kind == "none" and cfg.ffns["-"].kind == "none"
    assert type(cfg).from_dict(cfg.to_dict()).layer_mixers == ["A", "-", "A"]
    torch.manual_seed(0)
    m = HybridLM(cfg)
    names = {n for n, _ in m.named_parameters()}
    assert "layers.1.mixer_norm.weight" not in names and "layers.0.ffn_norm.weight" not in names
    assert "layers.1.ffn_norm.weight" in names and "layers.0.mixer_norm.weight" in names
    assert m.num_params() == m.num_params_analytic()
    ids = torch.randint(0, 64, (1, 9))
    # layer 1 is the FFN alone: x + ffn(norm(x)), nothing from a mixer
    x = m.layers[0](m.embed(ids))
    want = x + m.layers[1].ffn(m.layers[1].ffn_norm(x))
    assert torch.equal(m.layers[1](x), want)
    cache = m.new_cache()
    m(ids, cache=cache)
    assert cache.layers[1] is None and set(cache.memory_by_kind()) == {"kv"}
    assert set(m.cache_bytes_by_kind(9)) == {"kv"}
    with pytest.raises(ValueError, match=r"mixers\['-'\]"):
        ModelConfig(vocab_size=64, d_model=32, num_layers=1, mixer_pattern="-", ffn_pattern="D",
                    mixers={"-": AttentionConfig(num_heads=2, num_kv_heads=1)},
                    ffns={"D": DenseFFNConfig(intermediate_size=48)})


def test_model_scalars_scale_embedding_residual_and_logits():
    """Granite 4.0's multipliers: x = embed * m_e; x += m_r * sublayer(norm(x)); logits = head(h) / s."""
    from hybridlm import AttentionConfig, DenseFFNConfig, ModelConfig
    base = dict(vocab_size=64, d_model=32, num_layers=2, mixer_pattern="AA", ffn_pattern="DD",
                mixers={"A": AttentionConfig(num_heads=2, num_kv_heads=1)}, ffns={"D": DenseFFNConfig(48)})
    torch.manual_seed(0)
    plain = HybridLM(ModelConfig(**base))
    scaled = HybridLM(ModelConfig(**base, embedding_multiplier=3.0, residual_multiplier=0.5, logits_scaling=4.0))
    scaled.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 64, (1, 7))
    x = plain.embed(ids) * 3.0
    for blk in plain.layers:
        x = x + 0.5 * blk.mixer(blk.mixer_norm(x))
        x = x + 0.5 * blk.ffn(blk.ffn_norm(x))
    want = plain.logits(plain.norm(x)) / 4.0
    torch.testing.assert_close(scaled(ids).logits, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain(ids).logits, want, atol=1e-3)
    for field, bad in (("embedding_multiplier", 0.0), ("residual_multiplier", float("nan")), ("logits_scaling", -1)):
        with pytest.raises(ValueError, match=field):
            ModelConfig(**base, **{field: bad})
    with pytest.raises(ValueError, match="softmax_scale"):
        ModelConfig(**{**base, "mixers": {"A": AttentionConfig(num_heads=2, num_kv_heads=1, softmax_scale=0.0)}})
