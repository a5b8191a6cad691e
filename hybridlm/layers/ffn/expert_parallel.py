"""Expert parallelism: a MoE's routed experts split over the ranks of an `ep` process group, each assignment sent to
the rank that holds its expert by all-to-all and its output sent back the same way (torch.distributed).

Shape legend: N assignments on this rank (sorted by global expert id, as MoE.forward sorts them), D model dim,
R ranks in the ep group, El = E / R experts per rank, M assignments this rank's experts receive.

    dispatch(x_ND, counts_E, group) -> (x_MD, counts_El, Route)   rows to their experts' ranks, regrouped by expert
    combine(y_MD, route) -> y_ND                                    outputs back, in the sender's original row order

Rank j holds global experts [j*El, (j+1)*El), so the sorted assignments bound for rank j are one contiguous block.
What a rank receives is grouped by sender, then by expert; `dispatch` regroups it by expert (stable, so within an
expert the rows keep sender order) for `MoE.run_experts`, and `combine` undoes both steps. Both collectives carry
autograd (torch.distributed.nn's synchronous `all_to_all_single`, not the functional collectives' asynchronous
one): the backward of a dispatch is the reverse all-to-all of the gradients.

Gradient scale. A rank's expert gradient sums the contributions of every ep rank's tokens (they all came through
the all-to-all), while the data-parallel reduction of the expert weights (FSDP2 over the dp ranks that hold the same
experts) averages over dp only. With the loss a mean over all world = dp * R ranks, the expert gradient must also be
divided by R: `scale_grad(w, 1 / R)` is the identity forward and multiplies the gradient by 1/R.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_to_all_single


@dataclass
class Route:
    """What `combine` needs to send outputs back: the splits of both all-to-alls and the regrouping permutation."""

    send_R: list[int]  # rows this rank sent to each ep rank
    recv_R: list[int]  # rows this rank received from each ep rank
    order_M: Tensor  # received row order -> grouped by local expert
    group: dist.ProcessGroup


def dispatch(x_ND: Tensor, counts_E: Tensor, group: dist.ProcessGroup) -> tuple[Tensor, Tensor, Route]:
    """x_ND sorted by global expert, counts_E[e] rows for expert e (this rank's tokens) -> (rows for this rank's
    experts grouped by local expert [M, D], counts per local expert [El], the route back)."""
    R = dist.get_world_size(group)
    E = counts_E.numel()
    El = E // R
    counts_RE = counts_E.view(R, El)  # row j: what this rank sends to rank j, per expert of rank j
    recv_RE = torch.empty_like(counts_RE)
    dist.all_to_all_single(recv_RE, counts_RE, group=group)  # recv_RE[s, e]: rows rank s sends to my expert e
    send_R = counts_RE.sum(1).tolist()  # one host sync each: the all-to-all needs the splits on the host
    recv_R = recv_RE.sum(1).tolist()
    x_MD = _all_to_all(x_ND, recv_R, send_R, group)  # grouped by sender, then by local expert
    expert_M = torch.repeat_interleave(torch.arange(El, device=x_ND.device).repeat(R), recv_RE.reshape(-1))
    order_M = torch.argsort(expert_M, stable=True)
    return x_MD.index_select(0, order_M), recv_RE.sum(0), Route(send_R, recv_R, order_M, group)


def combine(y_MD: Tensor, route: Route) -> Tensor:
    """Outputs in `dispatch`'s expert-grouped order -> this rank's assignments [N, D], in its sorted order."""
    unsorted_MD = torch.empty_like(y_MD).index_copy(0, route.order_M, y_MD)  # undo the regrouping
    return _all_to_all(unsorted_MD, route.send_R, route.recv_R, route.group)


def _all_to_all(x: Tensor, recv: list[int], send: list[int], group: dist.ProcessGroup) -> Tensor:
    """Rows send[j] of x to rank j, recv[j] rows from rank j (concatenated in rank order), with autograd."""
    out = x.new_empty(sum(recv), *x.shape[1:])
    return all_to_all_single(out, x.contiguous(), output_split_sizes=recv, input_split_sizes=send, group=group)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """x in the forward; its gradient times `scale` in the backward."""
    return x if scale == 1.0 else _ScaleGrad.apply(x, scale)
