"""lm-evaluation-harness adapter: any hybridlm preset, checkpoint or Hugging Face directory as lm_eval model
`hybridlm` (`pip install 'hybridlm[lm-eval]'`).

    lm_eval --model hybridlm --model_args pretrained=runs/tiny --tasks TASK       (importing this module registers it)
    python -c "import hybridlm.analysis.lm_eval_adapter, lm_eval.__main__ as m; m.cli_evaluate()" --model hybridlm ...

The class works without lm_eval too (requests only need `.args`), which is how it is tested where lm_eval is absent.
Loglikelihood: context and continuation are encoded separately and concatenated (the harness's convention), the
window is the last `max_length` tokens, and the score is the sum of log-softmax over the continuation tokens plus
whether each was the greedy choice. generate_until: greedy `model.generate`, cut at the first stop string.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from lm_eval.api.model import LM as _Base
    from lm_eval.api.registry import register_model
except ImportError:  # lm_eval not installed: a plain base class, no registration
    _Base = object

    def register_model(*names):
        return lambda cls: cls


@register_model("hybridlm")
class HybridLMEval(_Base):
    def __init__(self, pretrained: str = "tiny-hybrid", device: str = "cpu", max_length: int | None = None,
                 max_gen_toks: int = 64, batch_size: int | str = 1, model=None, tokenizer=None, **kwargs):
        if _Base is not object:
            super().__init__()
        if model is None:
            from ..interop.specs import load_model
            from ..interop.tokenizer import tokenizer_for
            model, tok_dir = load_model(pretrained, device=device)
            tokenizer = tokenizer_for(tok_dir)
        elif tokenizer is None:
            from ..interop.tokenizer import ByteTokenizer
            tokenizer = ByteTokenizer()
        self.model, self.tok = model.eval(), tokenizer
        self._device = torch.device(device)
        self.max_length = int(max_length or model.config.max_seq_len)
        self.max_gen_toks = int(max_gen_toks)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
        args.update({k: v for k, v in (additional_config or {}).items() if v is not None and k == "device"})
        return cls(**args)

    # -- scoring -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, context_ids: list[int], cont_ids: list[int]) -> tuple[float, bool]:
        ids = (context_ids + cont_ids)[-(self.max_length + 1):]
        x = torch.tensor([ids[:-1]], device=self._device)
        logp = F.log_softmax(self.model(x).logits[0].float(), dim=-1)[-len(cont_ids):]  # [n, V]
        y = torch.tensor(cont_ids, device=self._device)
        return float(logp.gather(1, y[:, None]).sum()), bool((logp.argmax(-1) == y).all())

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            context, continuation = req.args[0], req.args[1]
            cont = self.tok.encode(continuation)
            ctx = self.tok.encode(context) or [cont[0]]  # no context: condition on the first token (as HF LM does)
            if not context:
                cont = cont[1:] or cont
            out.append(self._score(ctx, cont))
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for req in requests:
            ids = self.tok.encode(req.args[0])
            total = 0.0
            for s in range(1, len(ids), self.max_length):  # disjoint windows, each conditioned on what precedes it
                ll, _ = self._score(ids[max(0, s - self.max_length):s], ids[s:s + self.max_length])
                total += ll
            out.append(total)
        return out

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args[0], (req.args[1] if len(req.args) > 1 else {}) or {}
            until = gen_kwargs.get("until", []) or []
            until = [until] if isinstance(until, str) else list(until)
            n = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            ids = self.tok.encode(context)[-(self.max_length - n):] or [0]
            prompt = torch.tensor([ids], device=self._device)
            new = self.model.generate(prompt, max_new_tokens=n)[0, len(ids):].tolist()
            text = self.tok.decode(new)
            for stop in until:
                if stop and stop in text:
                    text = text[:text.index(stop)]
            out.append(text)
        return out
