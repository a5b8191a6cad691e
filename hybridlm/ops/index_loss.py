"""The lightning indexer's training objective (DeepSeek-V3.2 report, section 2.1, the sparse training stage), shared by
V3.2's MLA indexer (keys = tokens) and V4's CSA indexer (keys = compressed entries).

    L_I = mean_t KL( p_t,S_t || softmax(I_t,S_t) )
    p_t = the main attention's weights on query t's selected keys S_t, summed over heads, L1-normalised over S_t

The indexer's input is detached and p is a constant, so L_I trains the indexer only and the language-model loss
never reaches it (the top-k selection passes no gradient either). The dense warm-up stage (main model frozen, KL over
every causal key) is not built.
Shapes: B batch, T queries, S keys.
"""

from __future__ import annotations

import torch


def index_kl_loss(index_BTS: torch.Tensor, target_BTS: torch.Tensor, selected_BTS: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3.2's sparse-stage indexer objective (DeepSeek-V3.2 report, section 2.1): for each query t,
    KL(p_t || softmax(I_t)) over its selected set S_t, where p_t is the main attention's weight on those keys summed
    over heads and L1-normalised over S_t (a constant: pass it detached). Mean over the queries with a selected key."""
    p_BTS = target_BTS.float().masked_fill(~selected_BTS, 0.0)
    mass_BT1 = p_BTS.sum(-1, keepdim=True)
    rows_BT = mass_BT1.squeeze(-1) > 0
    if not rows_BT.any():
        return index_BTS.sum() * 0.0
    p_BTS = p_BTS / mass_BT1.clamp_min(1e-30)
    log_q_BTS = index_BTS.float().masked_fill(~selected_BTS, float("-inf")).log_softmax(-1)
    log_q_BTS = log_q_BTS.masked_fill(~selected_BTS, 0.0)  # p = 0 there: no NaN from 0 * -inf
    kl_BT = (p_BTS * (p_BTS.clamp_min(1e-30).log() - log_q_BTS)).sum(-1)
    return kl_BT[rows_BT].mean()


