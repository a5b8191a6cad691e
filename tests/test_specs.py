"""The model-spec resolver: each kind of spec is told apart, resolves to its ModelConfig and loads the same model
the CLI loads; a user's mistake (unknown preset, missing config file) is a one-line ValueError."""

import pytest
import torch
from test_train import small_config

from hybridlm import HybridLM
from hybridlm.interop.checkpoint import save
from hybridlm.interop.specs import Spec, load_model, resolve


def _checkpoint(tmp_path):
    cfg = small_config()
    torch.manual_seed(1)
    model = HybridLM(cfg)
    save(tmp_path / "run", 3, model_state=model.state_dict(), optim_state={"state": {}, "param_groups": []},
         trainer={"scheduler": {"step": 3}}, model_config_json=cfg.to_json(), train_config={},
         rng={"cpu": torch.get_rng_state()[None]})
    return model, tmp_path / "run"


def test_preset_seeded_and_meta():
    s = resolve("tiny-hybrid")
    assert s == Spec("tiny-hybrid", "preset", None) and not s.trained
    assert s.model_config().name == "tiny-hybrid"
    a, tok = load_model("tiny-hybrid", seed=3)
    b, _ = load_model(s, seed=3)
    assert tok is None
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    m, _ = load_model("tiny-hybrid", meta=True)
    assert next(m.parameters()).is_meta


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'no-such-model'"):
        resolve("no-such-model").model_config()
    with pytest.raises(ValueError, match="unknown preset"):
        load_model("no-such-model")


def test_config_file(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(small_config().to_json())
    s = resolve(f)
    assert (s.kind, s.path) == ("config", f)
    assert s.model_config() == small_config()
    model, tok = load_model(str(f))
    assert tok is None and model.config == small_config()


def test_missing_config_file(tmp_path):
    s = resolve(tmp_path / "missing.json")
    assert s.kind == "config"
    with pytest.raises(ValueError, match="no such config file"):
        s.model_config()
    with pytest.raises(ValueError, match="no such config file"):
        load_model(s)


def test_checkpoint(tmp_path):
    model, run = _checkpoint(tmp_path)
    s = resolve(run)
    assert s.kind == "checkpoint" and s.trained
    assert s.model_config() == small_config()
    loaded, tok = load_model(run)
    assert tok.name == "step_000003"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    meta, tok2 = load_model(run, meta=True)
    assert next(meta.parameters()).is_meta and tok2 == tok


def test_hf_directory(tmp_path):
    torch.manual_seed(2)
    model = HybridLM(small_config())
    model.save_hf(tmp_path / "hf")
    s = resolve(tmp_path / "hf")
    assert s.kind == "hf" and s.trained
    assert s.model_config().num_layers == 2
    loaded, tok = load_model(s)
    assert tok == tmp_path / "hf"
    x = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(loaded(x).logits, model(x).logits)
    meta, _ = load_model(s, meta=True)
    assert next(meta.parameters()).is_meta
