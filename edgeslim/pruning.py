"""Structured pruning that shrinks the model: attention heads (transformers' prune_heads),
FFN neurons (rows of the up-projection and columns of the down-projection, via
transformers' prune_linear_layer) and whole layers. Importance is weight magnitude or
first-order Taylor (|gradient x weight|) on real batches."""

from __future__ import annotations

from typing import Any

import torch

from edgeslim.errors import InputError

SUPPORTED = ("bert", "roberta", "xlm-roberta", "electra")


def check_supported(model: Any) -> None:
    """InputError unless structured pruning supports the model's architecture."""
    if model.config.model_type not in SUPPORTED:
        raise InputError(
            f"structured pruning supports {', '.join(SUPPORTED)}; this model is {model.config.model_type}"
        )


def blocks(model: Any) -> Any:
    """The ModuleList of encoder blocks (BERT-family layout)."""
    return getattr(model, model.base_model_prefix, model).encoder.layer


def head_importance(model: Any, batches: list[dict[str, Any]] | None) -> list[torch.Tensor]:
    """Per layer, (heads,) importance of its remaining heads: Taylor |grad x weight| of the
    head's Q/K/V rows and output columns, else their L2 norm."""
    check_supported(model)
    if batches:
        _accumulate_grads(model, batches)
    scores = []
    for block in blocks(model):
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
    check_supported(model)
    if batches:
        _accumulate_grads(model, batches)
    result = []
    for block in blocks(model):
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
    return remove_heads_(model, drops)


def remove_heads_(model: Any, drops: dict[int, list[int]]) -> dict[int, list[int]]:
    """Remove, per layer, the heads at these positions among its remaining heads; returns them as
    indices of the original model (see prune_heads_)."""
    plan: dict[int, list[int]] = {}
    for i, block in enumerate(blocks(model)):
        original = sorted(set(range(model.config.num_attention_heads)) - set(block.attention.pruned_heads))
        plan[i] = sorted(original[h] for h in drops.get(i, []))
    model.prune_heads({i: hs for i, hs in plan.items() if hs})
    return plan


def prune_ffn_(model: Any, ratio: float, scores: list[torch.Tensor]) -> list[int]:
    """Keep the top (1 - ratio) FFN neurons of every layer; returns the new sizes."""
    kept = [top(score, max(1, int(round(score.numel() * (1 - ratio))))) for score in scores]
    return keep_ffn_(model, kept)


def top(score: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` largest scores, in increasing order."""
    return score.argsort(descending=True)[:keep].sort().values


def keep_ffn_(model: Any, kept: list[torch.Tensor]) -> list[int]:
    """Keep these FFN neurons (indices into each layer's current ones); returns the new sizes."""
    from transformers.pytorch_utils import prune_linear_layer

    sizes = []
    for block, index in zip(blocks(model), kept, strict=True):
        block.intermediate.dense = prune_linear_layer(block.intermediate.dense, index, dim=0)  # type: ignore[arg-type]
        block.output.dense = prune_linear_layer(block.output.dense, index, dim=1)  # type: ignore[arg-type]
        sizes.append(len(index))
    if len(set(sizes)) == 1:
        model.config.intermediate_size = sizes[0]
    return sizes


def taylor_scores(model: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, from the gradients now in `.grad` (none: 0): |grad x weight| summed over each
    remaining head's Q/K/V rows and output columns (heads,), and over each FFN neuron's up row and
    down column (intermediate,), as head_importance and ffn_importance score them."""

    def taylor(linear: Any) -> torch.Tensor:
        w = linear.weight
        return (w * w.grad).abs() if w.grad is not None else torch.zeros_like(w)

    heads, ffn = [], []
    with torch.no_grad():
        for block in blocks(model):
            attn = block.attention
            n = attn.self.num_attention_heads
            rows = sum(taylor(x).sum(1) for x in (attn.self.query, attn.self.key, attn.self.value))
            per_dim = rows + taylor(attn.output.dense).sum(0)  # (n * head size,)
            heads.append(per_dim.view(n, -1).sum(1))
            up, down = block.intermediate.dense, block.output.dense
            ffn.append(taylor(up).sum(1) + taylor(down).sum(0))
    return heads, ffn


class Pruner:
    """Trainer hook: remove heads and FFN neurons while the model trains (distills).

    After every (synchronised) backward it adds the Taylor importance |grad x weight| of each
    head and FFN neuron, from the training's own gradients (no extra passes); at each scheduled
    event it removes the least important ones, so the model shrinks and training goes on with
    the rest. Events: `events` of them, evenly spaced up to `at` x the run's steps, removing a
    cubic share of the final fractions by each (1 - (1 - k/N)^3: most early, Zhu & Gupta 2017).
    after_step returns True when parameters were replaced (the trainer rebuilds its optimizer);
    load_state_dict replays the events on a fresh model, so a resume rebuilds the pruned shape.
    """

    def __init__(self, model: Any, heads: float, ffn: float, at: float = 0.5, events: int = 1) -> None:
        check_supported(model)
        self.model, self.heads, self.ffn, self.at, self.events = model, heads, ffn, at, events
        layers = blocks(model)
        self.start_heads = [b.attention.self.num_attention_heads for b in layers]
        self.start_ffn = [b.intermediate.dense.out_features for b in layers]
        for i, n in enumerate(self.start_heads):
            if n - round(heads * n) < 1:
                raise InputError(
                    f"--prune-heads {heads} would remove all {n} heads of the student's layer {i}: "
                    "prune fewer heads or build a student with fewer layers"
                )
        self.head_scores = [torch.zeros(n) for n in self.start_heads]
        self.ffn_scores = [torch.zeros(n) for n in self.start_ffn]
        self.steps_scored = 0
        self.done: list[dict[str, Any]] = []
        self.kept_ffn: list[list[torch.Tensor]] = []  # per event, per layer: what keep_ffn_ kept

    def describe(self) -> dict[str, Any]:
        return {"prune_heads": self.heads, "prune_ffn": self.ffn, "prune_at": self.at, "events": self.events}

    def schedule(self, total: int) -> list[tuple[int, float]]:
        """(step, share of the final fractions removed by then) of each event."""
        n = self.events
        return [(max(1, round(self.at * total * k / n)), 1 - (1 - k / n) ** 3) for k in range(1, n + 1)]

    def after_backward(self) -> None:
        heads, ffn = taylor_scores(self.model)
        for acc, new in zip(self.head_scores + self.ffn_scores, heads + ffn, strict=True):
            acc += new
        self.steps_scored += 1

    def after_step(self, step: int, total: int) -> bool:
        """Prune when an event is due; True when the model's parameters were replaced."""
        due = [
            share
            for k, (when, share) in enumerate(self.schedule(total))
            if k >= len(self.done) and step >= when
        ]
        for share in due:
            self._prune(step, share)
        return bool(due)

    def _prune(self, step: int, share: float) -> None:
        drops, kept = {}, []
        for i, (n0, score) in enumerate(zip(self.start_heads, self.head_scores, strict=True)):
            drop = round(share * self.heads * n0) - (n0 - score.numel())
            drops[i] = [int(h) for h in score.argsort()[:drop]]
            stay = torch.tensor(sorted(set(range(score.numel())) - set(drops[i])), dtype=torch.long)
            self.head_scores[i] = score[stay]
        removed = remove_heads_(self.model, drops)
        if self.ffn:
            for i, (n0, score) in enumerate(zip(self.start_ffn, self.ffn_scores, strict=True)):
                kept.append(top(score, n0 - round(share * self.ffn * n0)))
                self.ffn_scores[i] = score[kept[-1]]
            keep_ffn_(self.model, kept)
        self.kept_ffn.append(kept)
        self.done.append({"step": step, "removed_heads": {str(i): h for i, h in removed.items() if h}})
        self.done[-1] |= self._shape()

    def _shape(self) -> dict[str, Any]:
        layers = blocks(self.model)
        return {
            "heads": [b.attention.self.num_attention_heads for b in layers],
            "ffn": [b.intermediate.dense.out_features for b in layers],
            "parameters": count(self.model),
        }

    def report(self) -> dict[str, Any]:
        """The prune events (step, what was removed, the shape after) and how importance was scored."""
        return {
            "importance": "taylor |grad x weight|",
            "steps_scored": self.steps_scored,
            "events": self.done,
        }

    def state_dict(self) -> dict[str, Any]:
        """Flat: score and kept-index tensors, the events as JSON values."""
        state: dict[str, Any] = {"events": self.done, "steps_scored": self.steps_scored}
        state |= {f"head_scores.{i}": s for i, s in enumerate(self.head_scores)}
        state |= {f"ffn_scores.{i}": s for i, s in enumerate(self.ffn_scores)}
        for k, kept in enumerate(self.kept_ffn):
            state |= {f"kept_ffn.{k}.{i}": index for i, index in enumerate(kept)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Replay the saved events on this (unpruned) model, then take the saved scores; True when
        it was pruned. KeyError/ValueError when the state does not fit the model."""
        events = list(state["events"])
        layers = len(self.start_heads)
        for k, event in enumerate(events):
            self.model.prune_heads({int(i): list(h) for i, h in event["removed_heads"].items()})
            kept = [state[f"kept_ffn.{k}.{i}"].long() for i in range(layers)] if self.ffn else []
            if kept:
                keep_ffn_(self.model, kept)
            self.kept_ffn.append(kept)
            if self._shape() != {key: event[key] for key in ("heads", "ffn", "parameters")}:
                raise ValueError(f"prune event {k} does not rebuild the saved shape")
        self.done, self.steps_scored = events, int(state["steps_scored"])
        self.head_scores = [state[f"head_scores.{i}"] for i in range(layers)]
        self.ffn_scores = [state[f"ffn_scores.{i}"] for i in range(layers)]
        now = self._shape()
        if [s.numel() for s in self.head_scores] != now["heads"] or [
            s.numel() for s in self.ffn_scores
        ] != now["ffn"]:
            raise ValueError("pruning scores do not match the model's shape")
        return bool(events)


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
