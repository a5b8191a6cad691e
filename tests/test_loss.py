"""The total loss is defined once, on the model: ce + aux_loss_weight * sum(aux) + mtp_loss_weight * mtp.

The reference below is the trainer's objective as train._loss computed it (every module with an aux_loss, the
MTP block's included), written out independently so the model's own total can be held against it."""

from __future__ import annotations

import pytest
import torch

from hybridlm import AttentionConfig, GatedDeltaNetConfig, HybridLM, ModelConfig, MoEConfig


def _config(**over) -> ModelConfig:
    return ModelConfig(
        vocab_size=61, d_model=24, num_layers=3, mixer_pattern="GA A", ffn_pattern="M*3",
        mixers={"G": GatedDeltaNetConfig(num_qk_heads=2, num_v_heads=2, head_k_dim=8, head_v_dim=8, chunk_size=4),
                "A": AttentionConfig(num_heads=3, num_kv_heads=1, head_dim=8)},
        ffns={"M": MoEConfig(num_experts=4, top_k=2, expert_size=10, aux_loss_coef=0.01)},
        mtp_depth=1, **over)


def _reference(model: HybridLM, out) -> torch.Tensor:
    aux_mods = [m for m in model.modules() if hasattr(m, "aux_loss") and not callable(m.aux_loss)]
    aux = [m.aux_loss for m in aux_mods if m.aux_loss is not None]
    loss = out.ce_loss
    if aux:
        loss = loss + model.config.aux_loss_weight * torch.stack(aux).sum()
    if out.mtp_loss is not None:
        loss = loss + model.config.mtp_loss_weight * out.mtp_loss
    return loss


@pytest.mark.parametrize("aux_w, mtp_w", [(1.0, 0.3), (0.25, 1.0), (0.0, 0.0), (3.0, 0.5)])
def test_forward_loss_is_the_trainers_objective(aux_w, mtp_w):
    torch.manual_seed(0)
    model = HybridLM(_config(aux_loss_weight=aux_w, mtp_loss_weight=mtp_w))
    ids = torch.randint(0, 61, (2, 11))
    out = model(ids, labels=ids)
    assert out.mtp_loss is not None and model.mtp.block.ffn.aux_loss is not None  # every part is present
    assert torch.equal(out.loss, _reference(model, out))  # same terms, same order: bit for bit
    if aux_w == 0.0 and mtp_w == 0.0:
        assert torch.equal(out.loss, out.ce_loss)
    # out.aux_loss stays the main stack's unweighted sum; the MTP block's aux counts in the total only
    expect = out.ce_loss + aux_w * (out.aux_loss + model.mtp.block.ffn.aux_loss) + mtp_w * out.mtp_loss
    torch.testing.assert_close(out.loss, expect)


def test_aux_loss_weight_round_trips_and_is_validated():
    cfg = _config(aux_loss_weight=0.5)
    back = ModelConfig.from_json(cfg.to_json())
    assert back.aux_loss_weight == 0.5 and back.to_dict() == cfg.to_dict()
    assert ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "aux_loss_weight"}
                                 ).aux_loss_weight == 1.0  # configs written before the field keep weight 1
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="aux_loss_weight"):
            _config(aux_loss_weight=bad)
    with pytest.raises(ValueError, match="aux_loss_weight"):
        ModelConfig.from_dict({**cfg.to_dict(), "aux_loss_weight": "1"})
