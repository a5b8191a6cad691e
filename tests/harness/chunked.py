"""An op's chunked form against its token-by-token reference (LAYOUT.md: ops/<op>.py holds a naive reference, a
chunked form and a one-step decode). Convention: an op takes sequence tensors [B, T, ...] positionally, then the
initial state, and returns (output [B, T, ...], final state); its step form takes the [B, ...] slices at one time
and the state."""

import torch


def _close(got, want, atol, rtol, msg=None):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=msg)


def assert_forms_match(reference, candidate, seqs, state, atol: float, rtol: float = 0.0, ref_kw=None, **kw):
    """candidate(*seqs, state, **kw) returns reference(*seqs, state, **ref_kw)'s output and state; returns the
    candidate's (output, state)."""
    o_ref, s_ref = reference(*seqs, state, **(ref_kw or {}))
    o, s = candidate(*seqs, state, **kw)
    _close(o, o_ref, atol, rtol)
    _close(s, s_ref, atol, rtol)
    return o, s


def assert_steps_match(reference, step, seqs, state, atol: float, rtol: float = 0.0):
    """One step at a time from `state` gives the reference's output and final state; returns the final state."""
    o_ref, s_ref = reference(*seqs, state)
    s, outs = state, []
    for t in range(seqs[0].shape[1]):
        o_t, s = step(*(x[:, t] for x in seqs), s)
        outs.append(o_t)
    _close(torch.stack(outs, dim=1), o_ref, atol, rtol)
    _close(s, s_ref, atol, rtol)
    return s


def assert_state_carry(chunked, seqs, state, split: int, atol: float, rtol: float = 0.0, **kw):
    """Running [0, split) then [split, T) from the first part's final state equals one run over [0, T)."""
    o_all, s_all = chunked(*seqs, state, **kw)
    o1, s1 = chunked(*(x[:, :split] for x in seqs), state, **kw)
    o2, s2 = chunked(*(x[:, split:] for x in seqs), s1, **kw)
    _close(torch.cat([o1, o2], dim=1), o_all, atol, rtol)
    _close(s2, s_all, atol, rtol)


def assert_gradients_match(reference, candidate, seqs, state, names, atol: float, rtol: float = 0.0, **kw):
    """Gradients of a random linear function of (output, final state) agree for every input and the initial state."""
    leaves = [x.clone().requires_grad_() for x in (*seqs, state)]
    o_ref, s_ref = reference(*leaves)
    w_o, w_s = torch.randn_like(o_ref), torch.randn_like(s_ref)

    def grads(fn, **fkw):
        o, s = fn(*leaves, **fkw)
        return torch.autograd.grad((o * w_o).sum() + (s * w_s).sum(), leaves)

    g_ref = grads(reference)
    g = grads(candidate, **kw)
    for name, a, b in zip(names, g, g_ref):
        _close(a, b, atol, rtol, msg=name)
