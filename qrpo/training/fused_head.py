"""Token log-probs through the output projection, chunk by chunk, without the [tokens, vocab] logits.

log pi(token | context) = logits[token] - logsumexp(logits) with logits = h @ W^T (+ b), where h is
the final hidden state at the scoring position and W the LM head. Formed for all scored tokens at
once, the logits are a [tokens, vocab] float32 tensor (1,352 tokens x 49,152 = 266 MB for a batch of
8 completions of 169 tokens with SmolLM2), plus a log-softmax and a gradient of the same size.
`token_logps` instead goes through the tokens in chunks of rows (`chunk_rows`, by default about
2^24 logits per chunk) and keeps, per token, only its log-prob and logsumexp; the backward pass
recomputes each chunk's logits and turns them into the gradient in place:
d logp / d logits = onehot(target) - softmax(logits), so grad_h = g (onehot - p) @ W and
grad_W += (g (onehot - p))^T @ h. Memory is O(chunk x vocab) instead of O(tokens x vocab), for one
extra head matmul in the backward.

The matmuls run in `compute_dtype` (what the model's own head ran in: bf16 under autocast), the
logsumexp and softmax in float32 (or wider). A tied head (embeddings = W) needs nothing special: W
is the same Parameter, and autograd adds both uses' gradients.

`output_head` decides whether a model's log-probs can be computed this way, and `head_inputs`
captures the hidden states the head would have seen during an ordinary forward call of the model,
wrapped or not (DDP's forward and its gradient hooks stay in the loop). See `qrpo.training.logprobs`.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MiB in float32
# config fields of models that transform the logits after the head (softcapping, scaling)
_POST_HEAD_FIELDS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # head -> its model's logits are head(hidden)


def default_chunk_rows(vocab: int) -> int:
    return max(16, min(4096, CHUNK_ELEMENTS // max(1, vocab)))


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or the dtype itself when wider (float64 in gradient checks)."""
    return torch.promote_types(dtype, torch.float32)


def _no_autocast(device: torch.device):
    """The matmul dtypes here are explicit; ambient autocast must not change them."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class _TokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, compute_dtype, chunk_rows):
        n = hidden.shape[0]
        with _no_autocast(hidden.device):
            w = weight.to(compute_dtype)
            b = None if bias is None else bias.to(compute_dtype)
            out = hidden.new_empty(n, dtype=_wide(compute_dtype))
            lse = torch.empty_like(out)
            for s in range(0, n, chunk_rows):
                e = min(n, s + chunk_rows)
                logits = F.linear(hidden[s:e].to(compute_dtype), w, b).to(out.dtype)  # [n_chunk, V]
                lse[s:e] = torch.logsumexp(logits, dim=1)
                out[s:e] = logits.gather(1, targets[s:e, None]).squeeze(1)
            out -= lse
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.compute_dtype, ctx.chunk_rows = compute_dtype, chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype, n = ctx.compute_dtype, hidden.shape[0]
        grad_h = grad_w = grad_b = None
        with _no_autocast(hidden.device):
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            g = grad_out.to(lse.dtype)
            if need_h:
                grad_h = torch.empty_like(hidden)
            if need_w:
                grad_w = torch.zeros_like(weight, dtype=_wide(weight.dtype))
            if need_b:
                grad_b = torch.zeros_like(bias, dtype=_wide(bias.dtype))
            for s in range(0, n, ctx.chunk_rows):
                e = min(n, s + ctx.chunk_rows)
                h = hidden[s:e].to(dtype)
                p = F.linear(h, w, b).to(lse.dtype).sub_(lse[s:e, None]).exp_()  # softmax [n_chunk, V]
                # g * (onehot(target) - softmax), in place
                d = p.mul_(-g[s:e, None]).scatter_add_(1, targets[s:e, None], g[s:e, None]).to(dtype)
                if need_h:
                    grad_h[s:e] = d @ w
                if need_w and grad_w.dtype == dtype:
                    grad_w.addmm_(d.T, h)  # in place: no [V, H] temporary per chunk
                elif need_w:
                    grad_w += d.T @ h  # bf16 product, accumulated in float32
                if need_b:
                    grad_b += d.sum(0)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                compute_dtype: torch.dtype | None = None, chunk_rows: int | None = None) -> torch.Tensor:
    """log softmax(hidden @ weight^T + bias)[targets] for hidden [N, H], weight [V, H], targets [N]:
    [N] in float32 (or float64 for float64 inputs), differentiable in hidden, weight and bias."""
    dtype = compute_dtype or weight.dtype
    return _TokenLogps.apply(hidden, weight, bias, targets, dtype, chunk_rows or default_chunk_rows(weight.shape[0]))


# --- which models, and their hidden states --------------------------------------------------------


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def output_head(model) -> torch.nn.Linear | None:
    """The model's LM head when log-probs can go through `token_logps`, else None (then the caller
    takes the model's logits). Yes for a plain `nn.Linear` head (also under DDP and PEFT, whose LoRA
    leaves the output layer alone) with ordinary weights. No when: the head is not a plain Linear (a
    LoRA-wrapped head, a custom module), the model's config says it transforms its logits after the
    head (softcapping, logit scaling), the parameters may be sharded or partitioned (FSDP, DeepSpeed:
    the head's weight is only whole inside the head's own forward), the weights are on `meta` (their
    values cannot be checked), or an earlier check found the model's logits differ from head(hidden)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        model = model.module
    if type(model).__name__ in ("DeepSpeedEngine", "FullyShardedDataParallel") or not hasattr(model, "get_output_embeddings"):
        return None
    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):  # a model without an output-embedding accessor: take its logits
        return None
    if type(head) is not torch.nn.Linear:
        return None
    weight = head.weight
    if type(weight.data) is not torch.Tensor or weight.dim() != 2 or weight.numel() == 0 or weight.device.type == "meta":
        return None
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _POST_HEAD_FIELDS):
        return None
    return None if _checked.get(head) is False else head


@contextlib.contextmanager
def head_inputs(head: torch.nn.Linear):
    """Within the block, the model's forward hands `head` only the last position (its logits are a
    [..., 1, V] slice, used by `head_matches`) and `seen` receives the full input `hidden` [..., T, H]
    and `dtype`, the autocast dtype the head would have run in (None: the weight's)."""
    seen: dict = {}

    def hook(module, args):
        hidden = args[0]
        seen["hidden"], seen["dtype"] = hidden, _autocast_dtype(hidden.device)
        return (hidden[..., -1:, :],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def head_matches(head: torch.nn.Linear, seen: dict, logits: torch.Tensor) -> bool:
    """Whether the model's logits (last position) are head(hidden), checked the first time a head is
    seen: False for a model that changes its logits after the head in a way its config does not name,
    or whose head input is not the final hidden state. Remembered per head."""
    known = _checked.get(head)
    if known is None:
        hidden = seen["hidden"][..., -1, :]
        dtype = seen["dtype"] or head.weight.dtype
        bias = None if head.bias is None else head.bias.to(dtype)
        with _no_autocast(hidden.device):
            expected = F.linear(hidden.to(dtype), head.weight.to(dtype), bias).float()
        got = logits[..., -1, :].float()
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        known = got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=tol, atol=tol))
        _checked[head] = known
    return known
