"""Students made from a teacher: some of its layers (DistilBERT/TinyBERT style), and optionally a
narrower width (hidden size, heads, FFN) initialised from the most important slices of its
weights; the layer maps; and Student, the wrapper distillation trains (student + projections)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import torch

from edgeslim import models
from edgeslim.errors import InputError
from edgeslim.train.config import DistillConfig

INIT = ("every-other", "first-k", "last-k")


def layer_map(num_teacher: int, keep: int | None, init: str) -> list[int]:
    """Teacher layer indices the student's layers are copied from, in order.

    `init` is every-other, first-k, last-k, or an explicit comma list such as "0,2,4".
    """
    if init not in INIT:
        try:
            chosen = [int(x) for x in init.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"--init '{init}': use {', '.join(INIT)} or a layer list like 0,2,4") from None
        bad = [i for i in chosen if not 0 <= i < num_teacher]
        if bad or not chosen:
            raise InputError(
                f"layer map {init} is outside the teacher's {num_teacher} layers (0..{num_teacher - 1})"
            )
        if chosen != sorted(set(chosen)):
            raise InputError(f"layer map {init} must list distinct layers in increasing order")
        return chosen
    if keep is None or not 0 < keep <= num_teacher:
        raise InputError(f"--student-layers must be between 1 and the teacher's {num_teacher} layers")
    if init == "first-k":
        return list(range(keep))
    if init == "last-k":
        return list(range(num_teacher - keep, num_teacher))
    return uniform_map(keep, num_teacher)  # every-other for keep = n/2


def uniform_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer each student layer imitates (or is copied from), spread evenly and ending
    at the top; distinct and increasing while student_layers <= teacher_layers."""
    step = teacher_layers / student_layers
    return [min(teacher_layers - 1, round((i + 1) * step) - 1) for i in range(student_layers)]


def _layers(model: Any) -> Any:
    """The ModuleList of transformer blocks for the supported encoders."""
    base = getattr(model, model.base_model_prefix, model)
    encoder = getattr(base, "encoder", None) or getattr(base, "transformer", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise InputError(
            f"cannot find the layers of {type(model).__name__}: layer reduction supports "
            "BERT, RoBERTa, DistilBERT, ELECTRA, XLM-RoBERTa and DeBERTa-v2"
        )
    return layers


def reduce_layers(teacher: Any, mapping: list[int]) -> Any:
    """A copy of `teacher` keeping the mapped layers (embeddings and heads copied too)."""
    student = copy.deepcopy(teacher)
    layers = _layers(student)
    kept = torch.nn.ModuleList([layers[i] for i in mapping])
    parent = getattr(student, student.base_model_prefix, student)
    container = getattr(parent, "encoder", None) or parent.transformer
    container.layer = kept
    key = "n_layers" if hasattr(student.config, "n_layers") else "num_hidden_layers"
    setattr(student.config, key, len(mapping))
    pruned = getattr(student.config, "pruned_heads", None)
    if pruned:  # keyed by layer: renumber to the student's layers
        student.config.pruned_heads = {i: pruned[j] for i, j in enumerate(mapping) if pruned.get(j)}
    return student


# ---- narrower students: a principled subset of the teacher's width --------------------------
#
# Which slices: activation importance on a few training batches of the teacher (as in Minitron,
# Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation"):
#   hidden channel c  mean |LayerNorm output_c| over real tokens, summed over the kept layers
#                     (one set for the whole residual stream: embeddings, every layer, heads);
#   head h            mean L2 norm of its context vector (the input of attention.output.dense);
#   FFN neuron j      mean |GELU output_j| x ||W_down[:, j]||: its contribution to the output.
# Activations rank what the teacher actually uses on this data, which weight magnitude does not
# see (LayerNorm rescales every channel); random or first-k slices throw that away. When the
# head size shrinks too, Q/K dims are kept by ||W_q row|| x ||W_k row|| and V dims by
# ||W_v row|| x ||W_o column||, and Q is scaled by sqrt(d_s / d_t) so q.k / sqrt(d_s) keeps the
# teacher's 1 / sqrt(d_t) scale.


@dataclass(frozen=True)
class Width:
    """A student's width: hidden size, attention heads, FFN (intermediate) size."""

    hidden: int
    heads: int
    ffn: int


@dataclass
class Importance:
    """Per-unit activation importance of a teacher: hidden (H,), per layer heads (A,) and FFN (I,)."""

    hidden_by_layer: list[Any]  # per layer (H,): its two LayerNorm outputs
    embeddings: Any  # (H,) or None when the embeddings LayerNorm is not on the hidden size
    heads: list[Any]
    ffn: list[Any]

    def hidden(self, mapping: list[int]) -> Any:
        """(H,) over the residual stream the student keeps: embeddings and its mapped layers."""
        total = sum((self.hidden_by_layer[j] for j in mapping), self.hidden_by_layer[0] * 0)
        return total if self.embeddings is None else total + self.embeddings


def shape(model: Any) -> dict[str, Any]:
    """layers, hidden, heads (per layer), ffn (per layer) and parameters of a BERT-like model."""
    blocks = _layers(model)
    heads = [_attention_self(b).num_attention_heads for b in blocks]
    ffn = [b.intermediate.dense.out_features for b in blocks] if hasattr(blocks[0], "intermediate") else []
    return {
        "layers": len(blocks),
        "hidden": _hidden(model.config),
        "heads": heads,
        "ffn": ffn,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _hidden(config: Any) -> int:
    return int(config.hidden_size if hasattr(config, "hidden_size") else config.dim)


def _attention_self(block: Any) -> Any:
    attention = getattr(block, "attention", None)
    return getattr(attention, "self", attention)


def target_width(
    config: dict[str, Any], hidden: int | None, heads: int | None, ffn: int | None
) -> Width | None:
    """The requested width of a student of the teacher with this config.json (None fields: the
    teacher's), checked; None when it is the teacher's own."""
    from edgeslim import pruning

    if hidden is None and heads is None and ffn is None:
        return None
    if config.get("model_type") not in pruning.SUPPORTED:
        raise InputError(
            f"narrower students (--student-hidden/--student-heads/--student-ffn) support "
            f"{', '.join(pruning.SUPPORTED)}; this teacher is {config.get('model_type')}: "
            "use --student-layers only"
        )
    if config.get("pruned_heads"):
        raise InputError(
            "the teacher has pruned heads (config.json pruned_heads): narrow a teacher whose layers "
            "all have the same heads, or use --student-layers only"
        )
    teacher = Width(config["hidden_size"], config["num_attention_heads"], config["intermediate_size"])
    want = Width(hidden or teacher.hidden, heads or teacher.heads, ffn or teacher.ffn)
    for name, a, b in zip(("hidden", "heads", "ffn"), astuple(want), astuple(teacher), strict=True):
        if a > b:
            raise InputError(
                f"--student-{name} {a} is wider than the teacher's {b}: a student copies a subset"
            )
    head_size, teacher_head = want.hidden / want.heads, teacher.hidden // teacher.heads
    if want.hidden % want.heads:
        raise InputError(
            f"--student-hidden {want.hidden} is not divisible by {want.heads} heads: give --student-heads "
            f"(e.g. {max(1, want.hidden // teacher_head)} keeps the teacher's head size {teacher_head})"
        )
    if head_size > teacher_head:
        raise InputError(
            f"{want.heads} heads of {want.hidden} dims are {int(head_size)} wide, wider than the teacher's "
            f"{teacher_head}: use at least {-(-want.hidden // teacher_head)} heads"
        )
    return None if want == teacher else want


def activation_importance(model: Any, batches: list[dict[str, Any]]) -> Importance:
    """Importance of every hidden channel, head and FFN neuron of `model` on `batches` (forward only)."""
    blocks, hidden = _layers(model), model.config.hidden_size
    mask: dict[str, Any] = {}
    sums = {
        "hidden": [torch.zeros(hidden) for _ in blocks],
        "heads": [torch.zeros(_attention_self(b).num_attention_heads) for b in blocks],
        "ffn": [torch.zeros(b.intermediate.dense.out_features) for b in blocks],
        "embeddings": [torch.zeros(hidden)],
    }

    def add(kind: str, i: int, values: Any) -> None:  # values (B, T, n): masked sum over tokens
        m = mask["m"].unsqueeze(-1).to(values.dtype)
        sums[kind][i] += (values.detach() * m).sum((0, 1))

    def layer_hooks(i: int, block: Any) -> list[Any]:
        heads = _attention_self(block).num_attention_heads

        def context(_: Any, args: Any) -> None:  # (B, T, A*d) -> per-head norms (B, T, A)
            x = args[0]
            add("heads", i, x.view(*x.shape[:2], heads, -1).norm(dim=-1))

        def channels(_: Any, __: Any, out: Any) -> None:  # a LayerNorm's output (B, T, H)
            add("hidden", i, out.abs())

        return [
            block.attention.output.LayerNorm.register_forward_hook(channels),
            block.output.LayerNorm.register_forward_hook(channels),
            block.attention.output.dense.register_forward_pre_hook(context),
            block.output.dense.register_forward_pre_hook(lambda _m, a: add("ffn", i, a[0].abs())),
        ]

    handles = [h for i, block in enumerate(blocks) for h in layer_hooks(i, block)]
    embed_norm = model.base_model.embeddings.LayerNorm
    on_hidden = embed_norm.normalized_shape[0] == hidden  # ELECTRA: LayerNorm on embedding_size
    if on_hidden:
        handles.append(embed_norm.register_forward_hook(lambda _m, _a, o: add("embeddings", 0, o.abs())))
    tokens = 0
    try:
        with torch.no_grad():
            for batch in batches:
                mask["m"] = batch["attention_mask"]
                tokens += int(batch["attention_mask"].sum())
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for handle in handles:
            handle.remove()
    scale = 1 / max(tokens, 1)
    ffn = [
        s * scale * b.output.dense.weight.detach().norm(dim=0)
        for s, b in zip(sums["ffn"], blocks, strict=True)
    ]
    return Importance(
        [s * scale for s in sums["hidden"]],
        sums["embeddings"][0] * scale if on_hidden else None,
        [s * scale for s in sums["heads"]],
        ffn,
    )


def _top(score: Any, keep: int) -> Any:
    """Indices of the `keep` largest scores, in increasing order (a slice keeps the layout)."""
    return score.argsort(descending=True)[:keep].sort().values


def width_plan(model: Any, width: Width, importance: Importance, mapping: list[int]) -> dict[str, Any]:
    """What to keep of `model` (already reduced to the mapped layers): hidden channels (Hs,), and per
    layer its kept heads (original ids) with their Q/K and V rows, and its kept FFN neurons."""
    hid = _top(importance.hidden(mapping), width.hidden)
    d_t, d_s = model.config.hidden_size // model.config.num_attention_heads, width.hidden // width.heads
    plan: dict[str, Any] = {"hidden": hid, "heads": [], "qk": [], "v": [], "ffn": []}
    for block, j in zip(_layers(model), mapping, strict=True):
        attn = block.attention
        heads = _top(importance.heads[j], width.heads)
        q, k, v = (w.weight.detach()[:, hid] for w in (attn.self.query, attn.self.key, attn.self.value))
        o = attn.output.dense.weight.detach()[hid]
        qk_rows, v_rows = [], []
        for h in heads.tolist():
            rows = torch.arange(h * d_t, (h + 1) * d_t)
            qk_rows.append(rows[_top(q[rows].norm(dim=1) * k[rows].norm(dim=1), d_s)])
            v_rows.append(rows[_top(v[rows].norm(dim=1) * o[:, rows].norm(dim=0), d_s)])
        plan["heads"].append(heads)
        plan["qk"].append(torch.cat(qk_rows))
        plan["v"].append(torch.cat(v_rows))
        plan["ffn"].append(_top(importance.ffn[j], width.ffn))
    plan["q_scale"] = (d_s / d_t) ** 0.5
    return plan


def _roles(name: str) -> tuple[str, str]:
    """What dims 0 and 1 of a BERT-family parameter index (a bias has dim 0 only)."""
    if re.search(r"attention\.self\.(query|key)\.", name):
        return "qk", "hidden"
    if ".attention.self.value." in name:
        return "v", "hidden"
    if ".attention.output.dense." in name:
        return "hidden", "v"
    if ".intermediate.dense." in name:
        return "ffn", "hidden"
    if re.search(r"layer\.\d+\.output\.dense\.", name):
        return "hidden", "ffn"
    return "hidden", "hidden"  # embeddings, LayerNorms, pooler, task head, ELECTRA's projection


def _slice(name: str, tensor: Any, target: Any, plan: dict[str, Any]) -> Any:
    """`tensor` cut to `target`'s shape along the dims that shrink, with the plan's indices."""
    found = re.search(r"layer\.(\d+)\.", name)
    layer = int(found.group(1)) if found else None
    for dim, role in enumerate(_roles(name)[: tensor.ndim]):
        if tensor.shape[dim] == target.shape[dim]:
            continue
        index = plan[role] if role == "hidden" else plan[role][layer]
        if len(index) != target.shape[dim]:
            raise InputError(f"cannot narrow {name}: {tuple(tensor.shape)} -> {tuple(target.shape)}")
        tensor = tensor.index_select(dim, index)
    if re.search(r"attention\.self\.query\.", name):
        tensor = tensor * plan["q_scale"]
    return tensor


def narrow(model: Any, width: Width, plan: dict[str, Any]) -> Any:
    """A new model of `width` initialised with the plan's slices of `model` (same class, vocabulary,
    positions and task head)."""
    config = copy.deepcopy(model.config)
    config.hidden_size, config.num_attention_heads, config.intermediate_size = astuple(width)
    config.pruned_heads = {}
    student = type(model)(config)
    targets = student.state_dict()
    source = model.state_dict()
    if set(source) != set(targets):
        raise InputError(f"cannot narrow {type(model).__name__}: its parameters are not BERT-like")
    student.load_state_dict({n: _slice(n, t, targets[n], plan) for n, t in source.items()})
    return student


# ---- the student a distill run starts from -------------------------------------------------

IMPORTANCE_BATCHES = 8  # training batches the teacher reads to rank channels, heads and neurons


def build(
    teacher: Any,
    teacher_dir: Path,
    cfg: DistillConfig,
    task: str,
    batches: Callable[[int], list[dict[str, Any]]],
) -> tuple[Any, list[int], Any]:
    """(student, the teacher layer each student layer imitates, the teacher hidden channels a
    narrowed student was copied from or None)."""
    layers = (
        teacher.config.num_hidden_layers
        if hasattr(teacher.config, "num_hidden_layers")
        else (teacher.config.n_layers)
    )
    if cfg.student is not None:
        same_tokenizer(teacher_dir, cfg.student)
        student = models.load(models.resolve(str(cfg.student)), task)
        models.tie_shared_(student)
        s_layers = getattr(student.config, "num_hidden_layers", None) or student.config.n_layers
        return student, uniform_map(s_layers, layers), None
    mapping = layer_map(layers, cfg.student_layers, cfg.init)
    reduced = reduce_layers(teacher, mapping)
    width = target_width(teacher.config.to_dict(), cfg.student_hidden, cfg.student_heads, cfg.student_ffn)
    if width is None:
        return reduced, mapping, None
    importance = activation_importance(teacher, batches(0)[:IMPORTANCE_BATCHES])
    plan = width_plan(reduced, width, importance, mapping)
    return narrow(reduced, width, plan), mapping, plan["hidden"]


def same_tokenizer(teacher: Path, student: Path) -> None:
    """InputError unless a given student shares the teacher's tokenizer files."""
    for name in ("tokenizer.json", "vocab.txt", "vocab.json"):
        a, b = teacher / name, student / name
        if a.exists() or b.exists():
            if not (a.exists() and b.exists() and a.read_bytes() == b.read_bytes()):
                raise InputError(
                    f"teacher and student tokenizers differ ({name}): the student must share the "
                    "teacher's vocabulary; build it with --student-layers, or trim the vocabulary "
                    "of both with 'edgeslim simplify --trim-vocab'"
                )
            return


# ---- the student distillation trains ------------------------------------------------------


class Student(torch.nn.Module):
    """The student plus learned projections to the teacher's width, one Linear(student hidden ->
    teacher hidden) per mapped layer for the hidden-state loss: trained with the student, kept in
    checkpoints (resume), never in the saved student (the trainer saves `.student` only).

    `kept` (Hs,): the teacher channels a narrowed student's channels were copied from; the
    projections then start as that embedding (channel c -> teacher channel kept[c]), so the loss
    starts from the copied alignment instead of a random map."""

    def __init__(
        self, student: Any, teacher_hidden: int, mapped: int, kept: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.student = student
        width = student.config.hidden_size if hasattr(student.config, "hidden_size") else student.config.dim
        self.proj = torch.nn.ModuleList(
            [
                torch.nn.Identity() if width == teacher_hidden else _projection(width, teacher_hidden, kept)
                for _ in range(mapped)
            ]
        )

    def forward(self, **batch: Any) -> Any:
        return self.student(**batch)


def _projection(width: int, teacher_hidden: int, kept: torch.Tensor | None) -> torch.nn.Linear:
    """Linear(width -> teacher_hidden): random, or the embedding of the kept channels."""
    proj = torch.nn.Linear(width, teacher_hidden)
    if kept is not None:
        with torch.no_grad():
            proj.weight.zero_()
            proj.weight[kept, torch.arange(width)] = 1.0
            proj.bias.zero_()
    return proj
