"""Structured pruning that shrinks the model: attention heads (transformers' prune_heads),
FFN neurons (rows of the up-projection and columns of the down-projection, via
transformers' prune_linear_layer) and whole layers. Importance is weight magnitude or
first-order Taylor (|gradient x weight|) on real batches."""

from __future__ import annotations

from typing import Any

import torch

from edgeslim.errors import InputError

SUPPORTED = ("bert", "roberta", "xlm-roberta", "electra")


def _check(model: Any) -> None:
    if model.config.model_type not in SUPPORTED:
        raise InputError(
            f"structured pruning supports {', '.join(SUPPORTED)}; this model is {model.config.model_type}"
        )


def _blocks(model: Any) -> Any:
    return getattr(model, model.base_model_prefix).encoder.layer


def head_importance(model: Any, batches: list[dict[str, Any]] | None) -> list[torch.Tensor]:
    """Per layer, (heads,) importance of its remaining heads: Taylor |grad x weight| of the
    head's Q/K/V rows and output columns, else their L2 norm."""
    _check(model)
    if batches:
        _accumulate_grads(model, batches)
    scores = []
    for block in _blocks(model):
        attn = block.attention
        heads, size = attn.self.num_attention_heads, attn.self.attention_head_size
        weights = [attn.self.query.weight, attn.self.key.weight, attn.self.value.weight]
        layer = torch.zeros(heads)
        for h in range(heads):
            rows = slice(h * size, (h + 1) * size)
            parts = [w[rows] for w in weights] + [attn.output.dense.weight[:, rows]]
            if batches:
                grads = [w.grad[rows] for w in weights] + [attn.output.dense.weight.grad[:, rows]]
                layer[h] = sum(float((p * g).detach().abs().sum()) for p, g in zip(parts, grads, strict=True))
            else:
                layer[h] = sum(float(p.detach().norm()) for p in parts)
        scores.append(layer)
    model.zero_grad()
    return scores


def ffn_importance(model: Any, batches: list[dict[str, Any]] | None) -> list[torch.Tensor]:
    """Per layer, (intermediate,) importance of each FFN neuron (Taylor or magnitude)."""
    _check(model)
    if batches:
        _accumulate_grads(model, batches)
    result = []
    for block in _blocks(model):
        up, down = block.intermediate.dense, block.output.dense
        if batches:
            score = (up.weight * up.weight.grad).abs().sum(1) + (down.weight * down.weight.grad).abs().sum(0)
        else:
            score = up.weight.norm(dim=1) * down.weight.norm(dim=0)
        result.append(score.detach())
    model.zero_grad()
    return result


def _accumulate_grads(model: Any, batches: list[dict[str, Any]]) -> None:
    """Gradients of the task loss summed over `batches` (model must have a head and labels)."""
    model.zero_grad()
    model.train()
    for batch in batches:
        loss = model(**batch).loss
        if loss is None:
            raise InputError("Taylor importance needs labelled data for the model's head: pass --data")
        loss.backward()
    model.eval()


def prune_heads_(
    model: Any, ratio: float, scores: list[torch.Tensor], scope: str = "layer"
) -> dict[int, list[int]]:
    """Remove the lowest-scoring `ratio` of the remaining heads: of each layer (scope "layer"),
    or of the whole model ranked together (scope "global": layers lose different numbers of
    heads, at least one stays in each).

    Returns, per layer, the removed heads as indices of the original model (what transformers'
    prune_heads and config.pruned_heads use, also when heads were pruned before)."""
    blocks = list(_blocks(model))
    if scope == "global":
        ranked = sorted((float(v), i, h) for i, score in enumerate(scores) for h, v in enumerate(score))
        budget, left = int(round(ratio * len(ranked))), [s.numel() for s in scores]
        chosen: dict[int, list[int]] = {i: [] for i in range(len(scores))}
        for _, i, h in ranked:
            if budget and left[i] > 1:
                chosen[i].append(h)
                left[i] -= 1
                budget -= 1
        drops = chosen
    else:
        drops = {}
        for i, score in enumerate(scores):
            heads = score.numel()
            drop = int(round(ratio * heads))
            if drop >= heads:
                raise InputError(
                    f"--heads {ratio} would remove all {heads} heads of layer {i}: remove the layer "
                    "instead (--keep-layers) or prune fewer heads"
                )
            drops[i] = [int(h) for h in score.argsort()[:drop]]
    plan: dict[int, list[int]] = {}
    for i, block in enumerate(blocks):
        original = sorted(set(range(model.config.num_attention_heads)) - set(block.attention.pruned_heads))
        plan[i] = sorted(original[h] for h in drops[i])
    model.prune_heads({i: hs for i, hs in plan.items() if hs})
    return plan


def prune_ffn_(model: Any, ratio: float, scores: list[torch.Tensor]) -> list[int]:
    """Keep the top (1 - ratio) FFN neurons of every layer; returns the new sizes."""
    from transformers.pytorch_utils import prune_linear_layer

    sizes = []
    for block, score in zip(_blocks(model), scores, strict=True):
        keep = max(1, int(round(score.numel() * (1 - ratio))))
        index = score.argsort(descending=True)[:keep].sort().values
        block.intermediate.dense = prune_linear_layer(block.intermediate.dense, index, dim=0)  # type: ignore[arg-type]
        block.output.dense = prune_linear_layer(block.output.dense, index, dim=1)  # type: ignore[arg-type]
        sizes.append(keep)
    if len(set(sizes)) == 1:
        model.config.intermediate_size = sizes[0]
    return sizes


def count(model: Any) -> int:
    """Parameters."""
    return sum(p.numel() for p in model.parameters())


def zipped_size(path: Any) -> int:
    """Bytes of `path` after DEFLATE: what sparsity saves when an artifact is shipped compressed."""
    import zlib

    compressor, size = zlib.compressobj(6), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            size += len(compressor.compress(block))
    return size + len(compressor.flush())
