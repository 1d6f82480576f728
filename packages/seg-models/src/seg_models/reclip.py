"""ReCLIP++: a frozen CLIP rectified by a learned bias logit map, and the distilled student segmenter.

Wang, Kang et al., "ReCLIP++: Learn to Rectify the Bias of CLIP for Unsupervised Semantic Segmentation", TPAMI
(Sec. III-A..III-E). CLIP stays frozen in both stages; only the bias extractor and the mask decoder learn.

- **Query** (Sec. III-A): ``Z`` are the dense CLIP features (the MaskCLIP value path,
  :func:`seg_models.dense_clip.dense_clip_features`), L2-normalised per location; the prompt-ensembled, fixed text
  embeddings of the class names ``W_q`` ``[C, D]`` act as a 1x1 segmentation head: ``M_q = cos(Z, W_q)``.
- **Class-preference bias** (Sec. III-B, Eq. 1): a CoOp-style *Reference* text ``R_i = [v_1]...[v_L][CLS_i]`` with
  ``L = n_ctx`` learnable context vectors shared by all classes, run through the frozen text tower
  (:class:`ReferencePrompt`), gives the reference features ``W_r`` ``[C, D]``.
- **Space-preference bias** (Sec. III-B): a 1x1 conv ``pe_proj`` maps the ViT's patch positional embeddings,
  bicubically interpolated to the feature grid, to ``W_p`` ``[D, h, w]``; ``M_b = W_p x W_r^T`` (Eq. 2).
- **Rectified mask generation** (Sec. III-C): ``M = M_q - M_b`` (Eq. 3); a mask decoder (5x5 conv + BatchNorm) on
  ``concat[Z, M]`` gives ``M_o`` (Eq. 4), the prediction. The Gumbel-softmax of Eq. 5 and the contrastive loss of
  Eq. 7 live in ``seg_losses.rectification``; :class:`ReCLIPConfig` carries their ``gumbel_tau`` and
  ``logit_scale`` so a trainer reads one config.
- **Distillation** (Sec. III-E): :class:`ReCLIPStudent`, a DeepLab network whose head output is projected to the
  text space (``Z_hat``), followed by the *inherited and frozen* query head ``W_q``, bias logit map and mask decoder,
  giving the student logits ``M^D``.

Divergences from the official code (dogehhh/ReCLIP), where this module follows the paper or makes a choice:

- *EOT of long class names.* The official reference prompt is ``SOS + 73 context + tokens[1:4]`` of the tokenised
  name and reads the feature at a fixed offset plus the argmax of the name's ids; names of three or more BPE tokens
  lose their end-of-text token, so their feature is read at a name token. Here the sequence is
  ``SOS + n_ctx context + name tokens + EOT`` and the feature is read at the EOT, for any name length. A name too long
  for the context window is truncated (EOT kept last, as open_clip's tokenizer truncates) with a warning.
- *Reference normalisation.* The paper's reference features are per-class unit vectors (``reference_norm=
  "per-class"``); the official code divides the ``C x D`` matrix by its global Frobenius norm (``"global"``).
- *Context length.* The paper sets ``L = 73`` for ViT-B/16's 77-token context (two slots for the name, two for
  SOS/EOT); the default here is 16, sized for the project's tiny synthetic CLIP (32-token context).
- *Context initialisation.* Not in the paper; the official code copies the token embedding of id 0 into every
  context vector (``ctx_init=0`` here). The default here is CoOp's generic initialisation, ``N(0, 0.02^2)``.
- *Positional features are not normalised* (``pe_norm="none"``, as the official code; the paper does not say);
  ``"l2"`` normalises ``W_p`` per location.
- *Logit scale.* The official code multiplies the decoder output by 100 before the hard Gumbel-softmax (tau 1);
  the paper writes only ``Gumbel-Softmax(M_o, tau_1)``. ``logit_scale`` (default 100) records that factor.
- *Dense features* come from :mod:`seg_models.dense_clip` with the CLIP's own LayerNorm eps (the official code
  re-creates the blocks with eps 1e-6) and no stored class-token vector.
- *Student.* The paper uses DeepLab V2 (official: ResNet-50-V1c + ASPP-v2, ReCLIP v1 only); here the DeepLabv3+ of
  :mod:`seg_models.deeplab`, whose head output (``num_classes`` channels, stride 4) a 1x1 conv projects to ``D``.
  The inherited bias logit map is the teacher's bias *function* evaluated on the student's grid (the positional
  embedding interpolated bicubically to that grid, then the teacher's ``pe_proj`` and reference features).
- *Test-time class pruning* (the official ``TEST.PD``, tools/test.py; not in the paper) is an option of the segmenter,
  off by default (:func:`prune_classes`, ``ReCLIPSegmenter(class_pruning=...)``): per image, a class whose largest
  probability over the pixels of ``softmax(10 * M_o)`` (softmax over classes) is below the threshold gets the logit
  -100 everywhere. As the official code, it runs on ``M_o`` at the feature grid, before upsampling (whole-image
  inference); under a sliding-window preset it runs once on the stitched logits instead of per window.

Contents, in order: the config; the reference prompt; the shared head (positional features, bias, rectification,
decoder); the rectifier; the student; the segmenter; saving and loading (``reclip.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import json
import math
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self, cast

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, VisionTransformer
from pydantic import field_validator, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from seg_core import (
    ConceptSet,
    ConfigError,
    MaskRefiner,
    NoBackground,
    Normalization,
    ProtocolPreset,
    SegmentationOutput,
    SegModel,
)
from seg_models.clip import ClipModel, load_clip
from seg_models.deeplab import DeepLabConfig, build_deeplab
from seg_models.dense_clip import (
    DENSE_VARIANTS,
    DenseVariant,
    _pair,
    dense_clip_features,
    interpolate_positional_embedding,
)
from seg_models.inference import (
    check_pixel_images,
    infer,
    normalize_images,
    pad_to_multiple,
    refine_output,
    resize_logits,
    segmentation_from_similarities,
)
from seg_models.refiners import make_refiner
from seg_models.weights import export_tensors, read_method_json, state_mismatch

__all__ = [
    "RECLIP_FILE",
    "WEIGHTS_FILE_NAME",
    "ReCLIPConfig",
    "ReCLIPOutput",
    "ReCLIPRectifier",
    "ReCLIPSegmenter",
    "ReCLIPStudent",
    "ReferencePrompt",
    "bias_logits",
    "load_reclip",
    "load_reclip_student",
    "positional_features",
    "prune_classes",
    "read_reclip_info",
    "rectify_logits",
    "save_reclip",
    "save_reclip_student",
]

RECLIP_FILE = "reclip.json"
"""The description of a saved ReCLIP++ folder (rectifier or student), next to :data:`WEIGHTS_FILE_NAME`."""
WEIGHTS_FILE_NAME = "model.safetensors"

BiasMode = Literal["subtract", "add", "none"]
_PRUNED_LOGIT = -100.0
"""The logit a pruned class gets everywhere (official tools/test.py)."""
_TRAIN_HINT = "train one with `seg train reclip`"

# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


class ReCLIPConfig(SegModel):
    """The ReCLIP++ rectification model (architecture, and the loss constants a trainer reads).

    Attributes:
        architecture: Always ``"reclip"``.
        class_names: The classes, in channel order; the query head, reference prompt and decoder are tied to them.
        n_ctx: Learnable context vectors ``L`` of the reference prompt (Eq. 1). The paper and the official code use
            73 for ViT-B/16 (77-token context); 16 suits the tiny synthetic CLIP (32-token context).
        ctx_init: Initialisation of the context vectors: ``None``, ``N(0, 0.02^2)`` (CoOp's generic context); a
            word, its token embedding copied into every vector (one token) or a phrase of exactly ``n_ctx`` tokens
            (CoOp's phrase initialisation); an int, the token embedding of that id in every vector (official: 0).
        reference_norm: ``"per-class"``: each reference feature L2-normalised (paper); ``"global"``: the ``C x D``
            matrix divided by its Frobenius norm (official code).
        bias: ``"subtract"``: ``M = M_q - M_b`` (Eq. 3, paper); ``"add"``: ``M_q + M_b`` (the Table V ablation);
            ``"none"``: ``M = M_q`` (no rectification).
        pe_norm: ``"none"``: the positional features ``W_p`` enter Eq. 2 unnormalised (official code; the paper does
            not say); ``"l2"``: L2-normalised per location.
        decoder: ``True``: ReCLIP++'s mask decoder (``decoder_kernel`` conv + BatchNorm over ``concat[Z, M]``,
            Eq. 4); ``False``: ``M_o = M`` (the Table III "w/o decoder" ablation, ReCLIP v1 style).
        decoder_kernel: Kernel size of the decoder conv, odd (paper: 5).
        gumbel_tau: ``tau_1`` of the Gumbel-softmax (Eq. 5; paper and official: 1).
        logit_scale: Factor applied to ``M_o`` before the Gumbel-softmax (official: 100; the paper does not scale).
        dense_variant: Dense CLIP features (:func:`seg_models.dense_clip.dense_clip_features`); ``"maskclip"`` is
            the official value path with residual and MLP.
    """

    architecture: Literal["reclip"] = "reclip"
    class_names: tuple[str, ...]
    n_ctx: int = 16
    ctx_init: int | str | None = None
    reference_norm: Literal["per-class", "global"] = "per-class"
    bias: BiasMode = "subtract"
    pe_norm: Literal["none", "l2"] = "none"
    decoder: bool = True
    decoder_kernel: int = 5
    gumbel_tau: float = 1.0
    logit_scale: float = 100.0
    dense_variant: DenseVariant = "maskclip"

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("class_names is empty; give the classes to segment, e.g. ['cow', 'grass', 'sky']")
        blank = [index for index, name in enumerate(names) if not name.strip()]
        if blank:
            raise ValueError(f"class_names has blank names at positions {blank}; every class needs a name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"class_names must be unique, but {duplicates} appear more than once; remove the repeats")
        return names

    @model_validator(mode="after")
    def _check_ranges(self) -> ReCLIPConfig:
        problems: list[str] = []
        if self.n_ctx < 1:
            problems.append(f"n_ctx must be a positive integer, got {self.n_ctx}; use e.g. 16 (73 for ViT-B/16)")
        if self.decoder_kernel < 1 or self.decoder_kernel % 2 == 0:
            problems.append(
                f"decoder_kernel must be a positive odd integer (the decoder keeps the grid size), got "
                f"{self.decoder_kernel}; use 5 (paper)"
            )
        if not self.gumbel_tau > 0:
            problems.append(f"gumbel_tau must be > 0, got {self.gumbel_tau}; use 1.0 (paper)")
        if not self.logit_scale > 0:
            problems.append(f"logit_scale must be > 0, got {self.logit_scale}; use 100.0 (official)")
        if isinstance(self.ctx_init, int) and self.ctx_init < 0:
            problems.append(f"ctx_init as a token id must be >= 0, got {self.ctx_init}; use 0 (official) or None")
        if isinstance(self.ctx_init, str) and not self.ctx_init.strip():
            problems.append("ctx_init is an empty string; give a word such as 'X', a token id, or None")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def num_classes(self) -> int:
        """``C``, the number of classes."""
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------------------------
# The reference prompt
# ---------------------------------------------------------------------------------------------------------------


class _TextTower(NamedTuple):
    """The parts of an open_clip text tower that ``encode_text`` uses."""

    token_embedding: nn.Embedding
    positional_embedding: Tensor
    transformer: nn.Module
    attn_mask: Tensor | None
    ln_final: nn.Module
    text_projection: Tensor | nn.Module | None
    pool_type: str
    eos_id: int | None


def _text_tower(clip: ClipModel) -> _TextTower:
    """The text tower of a ``CLIP`` (parts on the model) or ``CustomTextCLIP`` (a ``TextTransformer`` at ``.text``)."""
    model = clip.model
    text = getattr(model, "text", None)
    owner: nn.Module = text if isinstance(text, TextTransformer) else model
    if isinstance(owner, TextTransformer) and (owner.cls_emb is not None or getattr(owner, "use_pad_mask", False)):
        raise ValueError(
            "the reference prompt needs a CLIP-style text tower (causal mask, EOT pooling); this CLIP's text tower "
            "appends a class token or masks padding (CoCa-style). Use a CLIP model such as ViT-B-16"
        )
    token_embedding = getattr(owner, "token_embedding", None)
    positional = getattr(owner, "positional_embedding", None)
    transformer = getattr(owner, "transformer", None)
    ln_final = getattr(owner, "ln_final", None)
    if not (
        isinstance(token_embedding, nn.Embedding)
        and isinstance(positional, Tensor)
        and isinstance(transformer, nn.Module)
        and isinstance(ln_final, nn.Module)
    ):
        raise ValueError(
            f"{type(model).__name__} has no open_clip text tower (token_embedding, positional_embedding, transformer, "
            "ln_final); the reference prompt needs an open_clip CLIP or CustomTextCLIP with a text transformer"
        )
    attn_mask = getattr(owner, "attn_mask", None)
    projection = getattr(owner, "text_projection", None)
    eos_id = getattr(owner, "text_eos_id", getattr(owner, "eos_id", None))
    pool_type = str(getattr(owner, "text_pool_type", getattr(owner, "pool_type", "argmax")))
    return _TextTower(
        token_embedding=token_embedding,
        positional_embedding=positional,
        transformer=transformer,
        attn_mask=attn_mask if isinstance(attn_mask, Tensor) else None,
        ln_final=ln_final,
        text_projection=projection if isinstance(projection, Tensor | nn.Module) else None,
        pool_type=pool_type,
        eos_id=eos_id if isinstance(eos_id, int) else None,
    )


def _eot_positions(ids: Tensor, tower: _TextTower) -> Tensor:
    """Where the text tower reads the pooled feature of tokenised texts ``[N, L]`` (open_clip's pool rule)."""
    if tower.pool_type == "argmax":
        return ids.argmax(dim=-1)
    if tower.pool_type == "eos" and tower.eos_id is not None:
        return (ids == tower.eos_id).int().argmax(dim=-1)
    raise ValueError(
        f"the text tower pools with {tower.pool_type!r}; the reference prompt supports CLIP's end-of-text pooling "
        "('argmax' or 'eos'). Use a CLIP model such as ViT-B-16"
    )


class ReferencePrompt(nn.Module):
    """CoOp-style learnable reference text (Eq. 1) through a frozen open_clip text tower.

    For class ``i`` the token sequence is ``[SOS][v_1]...[v_L][name_i tokens][EOT]`` followed by padding: the
    ``L = n_ctx`` context vectors ``v_l`` (:attr:`ctx`, shared by all classes, the only parameters) replace the token
    embeddings after ``SOS``. The sequence then goes through the text tower exactly as open_clip's
    ``CLIP.encode_text`` (token + positional embedding, causal transformer, ``ln_final``, the feature at the EOT,
    ``text_projection``). The EOT is found by the tower's own pool rule on the tokenised name, so it is correct for
    names of any length. A name longer than ``context_length - n_ctx - 2`` tokens is truncated (EOT kept last) with a
    warning; the names truncated are listed in :attr:`truncated`.

    The text tower is *not* a submodule: it is passed to :meth:`forward`, so the prompt's ``state_dict`` holds only
    ``ctx`` and the CLIP is never registered twice. Gradients flow through the (frozen) tower to ``ctx``.

    Args:
        clip: The CLIP whose tokenizer and text tower define the prompt (read here for widths and tokens).
        class_names: The ``C`` class names.
        n_ctx: Number of context vectors ``L``.
        ctx_init: See :attr:`ReCLIPConfig.ctx_init`.
        reference_norm: ``"per-class"`` (paper) or ``"global"`` (official) normalisation of :meth:`forward`.
        init_std: Standard deviation of the random initialisation (CoOp: 0.02).

    Attributes:
        ctx: ``[n_ctx, width]`` learnable context vectors (float32).
        token_ids: ``[C, context_length]`` token ids of the reference sequences (context slots hold 0; not saved).
        eot_index: ``[C]`` position of each sequence's EOT (not saved).
        class_names, n_ctx, reference_norm: As given.
        truncated: Names whose tokens were cut to fit the context window.
    """

    token_ids: Tensor
    eot_index: Tensor

    def __init__(
        self,
        clip: ClipModel,
        class_names: Sequence[str],
        n_ctx: int = 16,
        *,
        ctx_init: int | str | None = None,
        reference_norm: Literal["per-class", "global"] = "per-class",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if isinstance(class_names, str) or not class_names:
            raise ValueError(f"class_names must be a non-empty sequence of names, got {class_names!r}")
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be a positive integer, got {n_ctx}")
        if reference_norm not in ("per-class", "global"):
            raise ValueError(f"reference_norm must be 'per-class' or 'global', got {reference_norm!r}")
        tower = _text_tower(clip)
        context_length = int(tower.positional_embedding.shape[0])
        room = context_length - n_ctx - 2  # name tokens that fit between the context and the EOT
        if room < 1:
            raise ValueError(
                f"n_ctx={n_ctx} leaves no room for the class name in the text tower's {context_length}-token context "
                f"(SOS + context + name + EOT); use n_ctx <= {context_length - 3}"
            )
        names = list(class_names)
        tokenized = clip.tokenize(names).cpu()
        eot = _eot_positions(tokenized, tower)
        rows = torch.zeros(len(names), context_length, dtype=torch.long)
        eot_index = torch.zeros(len(names), dtype=torch.long)
        truncated: list[str] = []
        for row, (name, ids, end) in enumerate(zip(names, tokenized, eot.tolist(), strict=True)):
            if end < 1:
                raise ValueError(f"the tokenizer gave no start token before the end of {name!r}; cannot build a prompt")
            name_tokens = ids[1:end]
            if len(name_tokens) > room:
                truncated.append(name)
                name_tokens = name_tokens[:room]
            sequence = torch.cat([ids[:1], torch.zeros(n_ctx, dtype=torch.long), name_tokens, ids[end : end + 1]])
            rows[row, : len(sequence)] = sequence
            eot_index[row] = len(sequence) - 1
        if truncated:
            warnings.warn(
                f"class names {truncated} have more than {room} tokens and were truncated to fit n_ctx={n_ctx} context "
                f"vectors in a {context_length}-token context (the EOT is kept); lower n_ctx to keep whole names",
                stacklevel=2,
            )
        embedding_weight = tower.token_embedding.weight
        self.ctx = nn.Parameter(
            self._initial_context(clip, tower, n_ctx, ctx_init=ctx_init, init_std=init_std, weight=embedding_weight)
        )
        self.register_buffer("token_ids", rows.to(embedding_weight.device), persistent=False)
        self.register_buffer("eot_index", eot_index.to(embedding_weight.device), persistent=False)
        self.class_names: tuple[str, ...] = tuple(names)
        self.n_ctx = n_ctx
        self.reference_norm: Literal["per-class", "global"] = reference_norm
        self.truncated: tuple[str, ...] = tuple(truncated)

    @staticmethod
    def _initial_context(
        clip: ClipModel, tower: _TextTower, n_ctx: int, *, ctx_init: int | str | None, init_std: float, weight: Tensor
    ) -> Tensor:
        width = int(weight.shape[1])
        if ctx_init is None:
            if not init_std > 0:
                raise ValueError(f"init_std must be > 0, got {init_std}; use 0.02 (CoOp)")
            return torch.randn(n_ctx, width, device=weight.device) * init_std
        if isinstance(ctx_init, int):
            if not 0 <= ctx_init < weight.shape[0]:
                raise ValueError(
                    f"ctx_init token id {ctx_init} is outside the vocabulary (0..{weight.shape[0] - 1}); use 0 "
                    "(official) or a word"
                )
            return weight.detach()[ctx_init].float().reshape(1, width).repeat(n_ctx, 1).clone()
        ids = clip.tokenize([ctx_init]).cpu()
        end = int(_eot_positions(ids, tower)[0])
        tokens = ids[0, 1:end]
        if len(tokens) == 1:
            tokens = tokens.repeat(n_ctx)
        elif len(tokens) != n_ctx:
            raise ValueError(
                f"ctx_init {ctx_init!r} is {len(tokens)} tokens but n_ctx={n_ctx}; give a one-token word (copied into "
                f"every context vector) or a phrase of exactly n_ctx tokens, or set n_ctx={len(tokens)}"
            )
        return weight.detach()[tokens.to(weight.device)].float().clone()

    def text_features(self, clip: ClipModel) -> Tensor:
        """Unnormalised reference text features ``[C, D]`` (float32), the text tower run on the reference sequences.

        Args:
            clip: The CLIP this prompt was built for (same tokenizer and text-tower widths).
        """
        tower = _text_tower(clip)
        if tuple(tower.token_embedding.weight.shape[1:]) != tuple(self.ctx.shape[1:]) or int(
            tower.positional_embedding.shape[0]
        ) != int(self.token_ids.shape[1]):
            raise ValueError(
                "this ReferencePrompt was built for a text tower of width "
                f"{int(self.ctx.shape[1])} and context {int(self.token_ids.shape[1])}, but the CLIP given has width "
                f"{int(tower.token_embedding.weight.shape[1])} and context {int(tower.positional_embedding.shape[0])}; "
                "pass the CLIP the prompt was built with"
            )
        get_cast_dtype = getattr(tower.transformer, "get_cast_dtype", None)
        cast_dtype = get_cast_dtype() if callable(get_cast_dtype) else tower.token_embedding.weight.dtype
        count = int(self.token_ids.shape[0])
        x = tower.token_embedding(self.token_ids).to(cast_dtype)  # [C, L, width]
        context = self.ctx.to(cast_dtype).unsqueeze(0).expand(count, -1, -1)
        x = torch.cat([x[:, :1], context, x[:, 1 + self.n_ctx :]], dim=1)
        x = x + tower.positional_embedding.to(cast_dtype)
        x = tower.transformer(x, attn_mask=tower.attn_mask)
        x = tower.ln_final(x)
        pooled: Tensor = x[torch.arange(count, device=x.device), self.eot_index]
        projection = tower.text_projection
        if isinstance(projection, nn.Module):
            pooled = projection(pooled)
        elif isinstance(projection, Tensor):
            pooled = pooled @ projection
        return pooled.float()

    def forward(self, clip: ClipModel) -> Tensor:
        """Reference features ``W_r`` ``[C, D]``: :meth:`text_features` normalised per :attr:`reference_norm`."""
        features = self.text_features(clip)
        if self.reference_norm == "global":
            scaled: Tensor = features / features.norm().clamp_min(1e-12)
            return scaled
        return F.normalize(features, dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# The shared head: positional features, bias logits, rectification, decoder
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReCLIPOutput:
    """What :meth:`ReCLIPRectifier.forward` and :meth:`ReCLIPStudent.forward` return (float32).

    Attributes:
        features: ``Z`` (teacher) or ``Z_hat`` (student), ``[B, D, h, w]``, unit L2 norm per location.
        query_logits: ``M_q = cos(Z, W_q)``, ``[B, C, h, w]``.
        bias_logits: ``M_b = W_p x W_r^T`` (Eq. 2), ``[1, C, h, w]`` (the same for every image).
        rectified_logits: ``M`` (Eq. 3): ``M_q - M_b`` (or ``+``, or ``M_q``, per ``config.bias``), ``[B, C, h, w]``.
        logits: ``M_o`` (Eq. 4), the decoder output, or ``M`` without a decoder; ``[B, C, h, w]``.
        reference_features: ``W_r``, ``[C, D]``.
        positional_features: ``W_p``, ``[1, D, h, w]``.
    """

    features: Tensor
    query_logits: Tensor
    bias_logits: Tensor
    rectified_logits: Tensor
    logits: Tensor
    reference_features: Tensor
    positional_features: Tensor


def positional_features(
    patch_embedding: Tensor,
    source_grid: tuple[int, int],
    target_grid: tuple[int, int],
    pe_proj: nn.Module,
    *,
    pe_norm: Literal["none", "l2"] = "none",
) -> Tensor:
    """``W_p``: patch positional embeddings resized to a grid (bicubic) and projected by ``pe_proj`` (Sec. III-B).

    Args:
        patch_embedding: ``[g0 * g1, width]`` the ViT's positional embedding without the class token.
        source_grid: ``(g0, g1)``, the trained patch grid.
        target_grid: ``(h, w)``, the feature grid.
        pe_proj: The 1x1 conv ``width -> D``.
        pe_norm: ``"l2"`` normalises each location; ``"none"`` (official) does not.

    Returns:
        ``[1, D, h, w]`` float32.
    """
    grid = interpolate_positional_embedding(patch_embedding.float(), source_grid, target_grid, num_prefix_tokens=0)
    grid = grid.transpose(0, 1).reshape(1, -1, target_grid[0], target_grid[1])
    projected: Tensor = pe_proj(grid)
    return F.normalize(projected, dim=1) if pe_norm == "l2" else projected


def bias_logits(positional: Tensor, reference: Tensor) -> Tensor:
    """``M_b = W_p x W_r^T`` (Eq. 2): ``[N, D, h, w]`` positional features, ``[C, D]`` reference -> ``[N, C, h, w]``."""
    if positional.ndim != 4 or reference.ndim != 2 or positional.shape[1] != reference.shape[1]:
        raise ValueError(
            f"positional must be [N, D, h, w] and reference [C, D] with the same D, got {tuple(positional.shape)} "
            f"and {tuple(reference.shape)}"
        )
    return torch.einsum("ndhw,cd->nchw", positional, reference)


def rectify_logits(query: Tensor, bias: Tensor, mode: BiasMode = "subtract") -> Tensor:
    """``M`` (Eq. 3): ``query - bias`` (paper), ``query + bias`` (ablation) or ``query`` (``mode="none"``)."""
    if mode == "subtract":
        return query - bias
    if mode == "add":
        return query + bias
    if mode == "none":
        return query
    raise ValueError(f"mode must be 'subtract', 'add' or 'none', got {mode!r}")


def _check_pruning_threshold(value: object, name: str) -> float:
    """``value`` as a float in (0, 1], or a ValueError naming ``name``, the value and the official settings."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) <= 1.0:
        raise ValueError(
            f"{name} must be a probability in (0, 1] (a class whose largest probability over the image is below it "
            f"is pruned; the official TEST.PD is 1.0 on VOC, 0.85 on Context, 0.5 on ADE and Cityscapes, 0.95 on "
            f"COCO-Stuff), got {value!r}"
        )
    return float(value)


def _check_pruning_scale(value: object, name: str) -> float:
    """``value`` as a positive finite float, or a ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number (10 for ReCLIP++, 100 for ReCLIP v1), got {value!r}")
    return float(value)


def prune_classes(logits: Tensor, threshold: float, scale: float = 10.0) -> Tensor:
    """Test-time class pruning (the official ``TEST.PD`` of ReCLIP++, tools/test.py; not in the paper).

    Per image, the probabilities ``softmax(scale * logits)`` over the classes are taken at every pixel; a class whose
    largest probability over the pixels is below ``threshold`` gets the logit -100 at every pixel. Classes are
    treated alike (a background channel, if the logits have one, is pruned like any other class, as in the official
    code). A class exactly at the threshold is kept; with ``threshold=1.0`` (the official VOC setting) only classes
    whose probability rounds to exactly 1 somewhere are kept. If every class of an image is pruned, all its logits
    are -100 (as the official code).

    Args:
        logits: ``[B, C, H, W]`` or ``[C, H, W]`` class logits (ReCLIP++: ``M_o``, before upsampling).
        threshold: The probability in (0, 1] a class must reach somewhere in the image to be kept.
        scale: Multiplies the logits inside the softmax: 10 for ReCLIP++ (official), 100 for ReCLIP v1.

    Returns:
        A new tensor of the shape and dtype of ``logits``, the pruned classes' logits set to -100. The softmax is
        computed in float32 at least.

    Raises:
        ValueError: ``threshold`` outside (0, 1], ``scale`` not a positive finite number, or ``logits`` not
            ``[B, C, H, W]`` / ``[C, H, W]`` with at least one class and one pixel.
    """
    threshold = _check_pruning_threshold(threshold, "threshold")
    scale = _check_pruning_scale(scale, "scale")
    if logits.ndim not in (3, 4) or logits.shape[-3] == 0 or logits.shape[-2] * logits.shape[-1] == 0:
        raise ValueError(
            f"logits must be [B, C, H, W] or [C, H, W] with C, H and W at least 1, got shape {tuple(logits.shape)}"
        )
    batched = logits if logits.ndim == 4 else logits.unsqueeze(0)
    compute = batched if batched.dtype in (torch.float32, torch.float64) else batched.float()
    best = torch.softmax(scale * compute, dim=1).flatten(2).amax(dim=2)  # [B, C]
    pruned = batched.masked_fill((best < threshold)[:, :, None, None], _PRUNED_LOGIT)
    return pruned if logits.ndim == 4 else pruned.squeeze(0)


def _make_decoder(embed_dim: int, num_classes: int, kernel: int) -> nn.Sequential:
    """The ReCLIP++ mask decoder: ``Conv(k x k, D + C -> C)`` then ``BatchNorm`` (Sec. III-C)."""
    return nn.Sequential(
        nn.Conv2d(embed_dim + num_classes, num_classes, kernel, padding=kernel // 2),
        nn.BatchNorm2d(num_classes),
    )


def _rectified_head(
    features: Tensor,
    query: Tensor,
    positional: Tensor,
    reference: Tensor,
    *,
    config: ReCLIPConfig,
    decoder: nn.Module | None,
) -> ReCLIPOutput:
    """Eqs. 2-4 on L2-normalised features ``[B, D, h, w]``."""
    query_logits = torch.einsum("bdhw,cd->bchw", features, query)
    bias = bias_logits(positional, reference)
    rectified = rectify_logits(query_logits, bias, config.bias)
    logits: Tensor = decoder(torch.cat([features, rectified], dim=1)) if decoder is not None else rectified
    return ReCLIPOutput(
        features=features,
        query_logits=query_logits,
        bias_logits=bias,
        rectified_logits=rectified,
        logits=logits,
        reference_features=reference,
        positional_features=positional,
    )


def _check_query(query_embeddings: Tensor, config: ReCLIPConfig, embed_dim: int) -> Tensor:
    expected = (config.num_classes, embed_dim)
    if tuple(query_embeddings.shape) != expected:
        got = tuple(query_embeddings.shape)
        raise ValueError(
            f"query_embeddings must be [C, D] = {list(expected)} (one prompt-ensembled text embedding per class of "
            f"config.class_names, in that order), got {got}; e.g. clip.concept_embeddings(ConceptSet(names="
            "config.class_names, templates='imagenet85')).embeddings"
        )
    return F.normalize(query_embeddings.detach().float(), dim=-1).clone()


# ---------------------------------------------------------------------------------------------------------------
# The rectifier (rectification stage)
# ---------------------------------------------------------------------------------------------------------------


class ReCLIPRectifier(nn.Module):
    """The rectified CLIP of the rectification stage (Sec. III-A..III-C).

    The CLIP is frozen here (``requires_grad=False`` on all of its parameters, the ``ClipModel`` passed in is
    modified) and stays in eval mode when this module is put in train mode. The dense features ``Z`` are computed
    without autograd (nothing before them learns); the reference features are computed with autograd through the
    frozen text tower. Only :attr:`reference_prompt`, :attr:`pe_proj` and :attr:`decoder` learn
    (:meth:`trainable_parameters`).

    Args:
        clip: A ViT CLIP (:func:`seg_models.clip.load_clip`); ModifiedResNet CLIPs are refused (ReCLIP++ projects
            the ViT's positional embedding).
        query_embeddings: ``W_q``, ``[C, D]`` prompt-ensembled text embeddings of ``config.class_names`` in order
            (L2-normalised here), e.g. :meth:`from_clip` or ``clip.concept_embeddings(...).embeddings``.
        config: The architecture.

    Attributes:
        config, clip: As given.
        query_embeddings: ``[C, D]`` buffer, L2-normalised.
        reference_prompt: The :class:`ReferencePrompt`.
        pe_proj: 1x1 conv from the positional-embedding width to ``D``.
        decoder: The mask decoder (``Conv2d`` + ``BatchNorm2d``) or ``None`` with ``config.decoder=False``.
        patch_size: ``(ph, pw)`` of the ViT.
        positional_grid: The ViT's trained patch grid ``(g0, g1)``.
    """

    query_embeddings: Tensor

    def __init__(self, clip: ClipModel, query_embeddings: Tensor, config: ReCLIPConfig) -> None:
        super().__init__()
        visual = clip.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"ReCLIP++ needs a ViT CLIP (it projects the ViT's positional embedding into the space-preference "
                f"bias), got a {type(visual).__name__} vision tower; load a ViT CLIP such as ViT-B-16"
            )
        if visual.attn_pool is not None:
            raise ValueError(
                "ReCLIP++ needs dense patch features, which a vision tower with an attentional pooler (CoCa-style) "
                "does not give; use a plain CLIP ViT such as ViT-B-16"
            )
        if config.dense_variant not in DENSE_VARIANTS:  # pydantic checks too; keeps a hand-built config honest
            raise ValueError(f"config.dense_variant must be one of {DENSE_VARIANTS}, got {config.dense_variant!r}")
        embed_dim = clip.embed_dim
        query = _check_query(query_embeddings, config, embed_dim)
        self.config = config
        self.clip = clip
        clip.requires_grad_(False)
        clip.eval()
        self.register_buffer("query_embeddings", query.to(clip.device))
        self.reference_prompt = ReferencePrompt(
            clip, config.class_names, config.n_ctx, ctx_init=config.ctx_init, reference_norm=config.reference_norm
        )
        self.patch_size: tuple[int, int] = _pair(visual.patch_size)
        self.positional_grid: tuple[int, int] = _pair(visual.grid_size)
        positional_width = int(visual.positional_embedding.shape[1])
        self.pe_proj = nn.Conv2d(positional_width, embed_dim, 1)
        self.decoder: nn.Sequential | None = (
            _make_decoder(embed_dim, config.num_classes, config.decoder_kernel) if config.decoder else None
        )
        self.pe_proj.to(clip.device)
        if self.decoder is not None:
            self.decoder.to(clip.device)

    @classmethod
    def from_clip(
        cls, clip: ClipModel, config: ReCLIPConfig, *, templates: str | Sequence[str] = "imagenet85"
    ) -> ReCLIPRectifier:
        """Build with ``W_q`` = the prompt-ensembled embeddings of ``config.class_names`` under ``templates``.

        Args:
            clip: A ViT CLIP.
            config: The architecture.
            templates: A template-set name or templates (paper and official: the 85 ImageNet templates).
        """
        concepts = ConceptSet(
            names=config.class_names,
            templates=templates if isinstance(templates, str) else tuple(templates),
            background=NoBackground(),
        )
        return cls(clip, clip.concept_embeddings(concepts).embeddings, config)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The trained classes, in channel order."""
        return self.config.class_names

    @property
    def normalization(self) -> Normalization:
        """The CLIP's pixel normalisation (ReCLIP++ feeds CLIP its own mean/std)."""
        return self.clip.normalization

    @property
    def pad_multiple(self) -> tuple[int, int]:
        """Inputs are padded to multiples of this (the patch size) so feature cells line up with pixels."""
        return self.patch_size

    @property
    def patch_positional_embedding(self) -> Tensor:
        """The ViT's positional embedding without the class token, ``[g0 * g1, width]``."""
        visual = cast(VisionTransformer, self.clip.visual)
        embedding: Tensor = visual.positional_embedding[1:]
        return embedding

    def train(self, mode: bool = True) -> Self:
        """Set train/eval mode on the learnable parts; the CLIP always stays in eval mode."""
        super().train(mode)
        self.clip.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that learn: the reference context, ``pe_proj`` and the decoder."""
        modules: list[nn.Module] = [self.reference_prompt, self.pe_proj]
        if self.decoder is not None:
            modules.append(self.decoder)
        return [parameter for module in modules for parameter in module.parameters()]

    def own_state_dict(self) -> dict[str, Tensor]:
        """The state this module adds to the CLIP: ``state_dict()`` without the ``clip.`` entries."""
        return {key: value for key, value in self.state_dict().items() if not key.startswith("clip.")}

    def reference_features(self) -> Tensor:
        """``W_r``, ``[C, D]`` float32 (with autograd to the context vectors)."""
        features: Tensor = self.reference_prompt(self.clip)
        return features

    def positional_features(self, grid: tuple[int, int]) -> Tensor:
        """``W_p`` on a feature grid, ``[1, D, h, w]``."""
        return positional_features(
            self.patch_positional_embedding, self.positional_grid, grid, self.pe_proj, pe_norm=self.config.pe_norm
        )

    def dense_features(self, images: Tensor) -> Tensor:
        """``Z``: L2-normalised dense CLIP features ``[B, D, H // ph, W // pw]`` (float32, no autograd)."""
        with torch.no_grad():
            features = dense_clip_features(self.clip.visual, images, variant=self.config.dense_variant)
        return F.normalize(features.float(), dim=1)

    def forward(self, images: Tensor) -> ReCLIPOutput:
        """Rectified logits of normalised images.

        Args:
            images: ``[B, 3, H, W]`` normalised with the CLIP's mean/std (any size of at least one patch; pad to
                :attr:`pad_multiple` to keep cells aligned with pixels).

        Returns:
            :class:`ReCLIPOutput` on the ``(H // ph, W // pw)`` grid.
        """
        features = self.dense_features(images)
        grid = (int(features.shape[-2]), int(features.shape[-1]))
        return _rectified_head(
            features,
            self.query_embeddings,
            self.positional_features(grid),
            self.reference_features(),
            config=self.config,
            decoder=self.decoder,
        )


# ---------------------------------------------------------------------------------------------------------------
# The student (distillation stage)
# ---------------------------------------------------------------------------------------------------------------


class ReCLIPStudent(nn.Module):
    """The distillation student (Sec. III-E): a DeepLab feature network and the inherited, frozen ReCLIP++ head.

    ``Z_hat = normalize(proj(head(images)))`` where ``head`` is the DeepLabv3+ of :mod:`seg_models.deeplab` up to its
    classifier (``deeplab_config.num_classes`` channels at stride 4) and ``proj`` a 1x1 conv to ``D``; then the
    query head ``W_q``, the bias logit map and the mask decoder of the teacher, all frozen, give ``M^D``. The bias
    map is the teacher's bias function on the student's grid: the teacher's patch positional embedding (a buffer
    here) resized bicubically to the grid, its ``pe_proj`` and its reference features ``W_r`` (a buffer: the text
    tower is not needed). The decoder's BatchNorm stays in eval mode in training. Only :attr:`deeplab` and
    :attr:`proj` learn. Build it with :meth:`from_rectifier`.

    Args:
        config: The teacher's config.
        deeplab_config: The DeepLab network; ``num_classes`` is the width of the head output ``proj`` reads.
        query_embeddings: ``W_q``, ``[C, D]``.
        reference_features: ``W_r``, ``[C, D]`` (already normalised per ``config.reference_norm``).
        positional_embedding: The teacher's patch positional embedding, ``[g0 * g1, width]``.
        positional_grid: ``(g0, g1)``.
        normalization: Pixel normalisation of the student's input.

    Attributes:
        config, deeplab_config, positional_grid, normalization: As given.
        deeplab: The trainable DeepLabv3+.
        proj: 1x1 conv ``num_classes -> D``, trainable.
        query_embeddings, reference_features, positional_embedding: Frozen buffers.
        pe_proj, decoder: The teacher's, frozen.
    """

    query_embeddings: Tensor
    reference_features: Tensor
    positional_embedding: Tensor

    def __init__(
        self,
        config: ReCLIPConfig,
        deeplab_config: DeepLabConfig,
        *,
        query_embeddings: Tensor,
        reference_features: Tensor,
        positional_embedding: Tensor,
        positional_grid: tuple[int, int],
        normalization: Normalization,
    ) -> None:
        super().__init__()
        if query_embeddings.ndim != 2:
            raise ValueError(f"query_embeddings must be [C, D], got {tuple(query_embeddings.shape)}")
        embed_dim = int(query_embeddings.shape[1])
        query = _check_query(query_embeddings, config, embed_dim)
        if tuple(reference_features.shape) != tuple(query.shape):
            raise ValueError(
                f"reference_features must be [C, D] = {list(query.shape)} like query_embeddings, got "
                f"{tuple(reference_features.shape)}"
            )
        grid = (int(positional_grid[0]), int(positional_grid[1]))
        if positional_embedding.ndim != 2 or positional_embedding.shape[0] != grid[0] * grid[1]:
            raise ValueError(
                f"positional_embedding must be [g0 * g1, width] for positional_grid {grid} (no class token), got "
                f"{tuple(positional_embedding.shape)}"
            )
        self.config = config
        self.deeplab_config = deeplab_config
        self.normalization = normalization
        self.positional_grid: tuple[int, int] = grid
        self.deeplab = build_deeplab(deeplab_config)
        self.proj = nn.Conv2d(deeplab_config.num_classes, embed_dim, 1)
        self.register_buffer("query_embeddings", query)
        self.register_buffer("reference_features", reference_features.detach().float().clone())
        self.register_buffer("positional_embedding", positional_embedding.detach().float().clone())
        self.pe_proj = nn.Conv2d(int(positional_embedding.shape[1]), embed_dim, 1)
        self.decoder: nn.Sequential | None = (
            _make_decoder(embed_dim, config.num_classes, config.decoder_kernel) if config.decoder else None
        )
        self.pe_proj.requires_grad_(False)
        if self.decoder is not None:
            self.decoder.requires_grad_(False)
            self.decoder.eval()

    @classmethod
    def from_rectifier(
        cls,
        rectifier: ReCLIPRectifier,
        deeplab_config: DeepLabConfig,
        *,
        normalization: Normalization | None = None,
    ) -> ReCLIPStudent:
        """A student inheriting (copies of) the teacher's ``W_q``, ``W_r``, positional embedding, ``pe_proj`` and
        decoder, on the teacher's device.

        Args:
            rectifier: The trained teacher.
            deeplab_config: The student network (e.g. ``deeplab_preset("synthetic-64", num_classes=D)``).
            normalization: The student's pixel normalisation; ``None``: the teacher CLIP's (the official distillation
                feeds the ImageNet-pretrained student ImageNet mean/std).
        """
        with torch.no_grad():
            reference = rectifier.reference_features().detach()
        student = cls(
            rectifier.config,
            deeplab_config,
            query_embeddings=rectifier.query_embeddings,
            reference_features=reference,
            positional_embedding=rectifier.patch_positional_embedding.detach(),
            positional_grid=rectifier.positional_grid,
            normalization=normalization if normalization is not None else rectifier.normalization,
        )
        student.query_embeddings.copy_(rectifier.query_embeddings)  # bit-identical, not re-normalised
        student.pe_proj.load_state_dict(rectifier.pe_proj.state_dict())
        if student.decoder is not None and rectifier.decoder is not None:
            student.decoder.load_state_dict(rectifier.decoder.state_dict())
        return student.to(rectifier.query_embeddings.device)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The trained classes, in channel order."""
        return self.config.class_names

    @property
    def pad_multiple(self) -> tuple[int, int]:
        """Inputs are padded to multiples of the backbone's output stride."""
        stride = int(self.deeplab_config.output_stride)
        return stride, stride

    def train(self, mode: bool = True) -> Self:
        """Set train/eval mode on the DeepLab and projection; the inherited decoder always stays in eval mode."""
        super().train(mode)
        if self.decoder is not None:
            self.decoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that learn: the DeepLab network and the projection to ``D``."""
        return [*self.deeplab.parameters(), *self.proj.parameters()]

    def features(self, images: Tensor) -> Tensor:
        """``Z_hat``: L2-normalised student features ``[B, D, ~H/4, ~W/4]``.

        Args:
            images: ``[B, in_chans, H, W]`` normalised images; ``B >= 2`` in training mode (the ASPP image-pooling
                branch batch-normalises one value per image).
        """
        if images.ndim != 4 or images.shape[1] != self.deeplab_config.in_chans:
            raise ValueError(
                f"images must be [B, {self.deeplab_config.in_chans}, H, W] normalised pixels, got {tuple(images.shape)}"
            )
        if self.training and images.shape[0] < 2:
            raise ValueError(
                f"images: training needs a batch of at least 2 (got {images.shape[0]}); batch norm in the ASPP "
                "image-pooling branch sees one value per image. Use a larger batch or call student.eval()"
            )
        low, high = self.deeplab.forward_features(images)
        head = self.deeplab.decoder(low, self.deeplab.aspp(high))
        return F.normalize(self.proj(head).float(), dim=1)

    def forward(self, images: Tensor) -> ReCLIPOutput:
        """Student logits ``M^D`` (and the intermediate maps) on the student's stride-4 grid.

        Args:
            images: ``[B, in_chans, H, W]`` normalised images.

        Returns:
            :class:`ReCLIPOutput` with ``features = Z_hat``.
        """
        features = self.features(images)
        grid = (int(features.shape[-2]), int(features.shape[-1]))
        positional = positional_features(
            self.positional_embedding, self.positional_grid, grid, self.pe_proj, pe_norm=self.config.pe_norm
        )
        return _rectified_head(
            features,
            self.query_embeddings,
            positional,
            self.reference_features,
            config=self.config,
            decoder=self.decoder,
        )


# ---------------------------------------------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------------------------------------------


class ReCLIPSegmenter:
    """A :class:`ReCLIPRectifier` (ReCLIP++ "rec.") or :class:`ReCLIPStudent` as a :class:`seg_core.Segmenter`.

    The logits are ``M_o`` (the argmax prediction of Sec. III-D "Inference"), bilinearly upsampled to the input and
    multiplied by the preset's ``logit_scale`` when it has one (as MaskCLIP). The model is tied to its trained class
    list (the decoder mixes all ``C`` logit maps), so :meth:`segment` accepts a concept set only if its names are the
    trained names, in any order (the channels are permuted to the concept set's order). The concept set's templates
    and synonyms are not used: ``W_q`` was fixed at training. Background, as :class:`ClosedSetSegmenter`:

    - :class:`seg_core.NoBackground`: the names must equal the trained names;
    - :class:`seg_core.BackgroundClass`: label 0 is the first background name that is a trained class (a model
      trained with a ``"background"`` class); the concept names must equal the remaining trained names;
    - :class:`seg_core.BackgroundThreshold`: the names must equal the trained names; a pixel whose softmax
      probability over them (of the scaled logits) is below the threshold becomes background.

    Inference: the preset's resize rule, whole or sliding-window; each pass zero-pads (normalised space) the input to
    :attr:`pad_multiple`, upsamples the logits to the padded size and cuts the padding.

    Test-time class pruning (the official ``TEST.PD``; off by default): with ``class_pruning`` set, a class whose
    largest probability over the image of ``softmax(class_pruning_scale * M_o)`` is below it gets the logit -100
    everywhere (:func:`prune_classes`). Under whole-image inference it runs on ``M_o`` at the feature grid of the
    padded input, before upsampling, as the official tools/test.py; under a sliding-window preset it runs once per
    image on the stitched logits (pruning each window would push a class down in the overlaps of the windows that
    do not see it). It acts on the model's classes before any background policy: a trained ``"background"`` class
    is pruned like any other (the official code has no special case); the background channel of a
    :class:`seg_core.BackgroundThreshold` policy is built afterwards from the remaining classes.

    Args:
        model: The rectifier or the student.
        preset: Resize rule, mode, normalisation, logit scale, refinement; ``None``: whole image at input size with
            the model's normalisation (the CLIP's for a rectifier: ReCLIP++ feeds CLIP its own mean/std).
        refiner: A :class:`seg_core.MaskRefiner`; ``None`` takes the preset's ``refinement``.
        class_pruning: The pruning threshold in (0, 1] (official: VOC 1.0, Context 0.85, ADE 0.5, Cityscapes 0.5,
            COCO-Stuff 0.95); ``None`` (default) turns pruning off.
        class_pruning_scale: The factor on ``M_o`` inside the pruning softmax: 10 (ReCLIP++, official), 100 for
            ReCLIP v1.

    Attributes:
        model, preset, refiner, class_pruning, class_pruning_scale: As given (resolved; the last two are checked
            when set).
    """

    def __init__(
        self,
        model: ReCLIPRectifier | ReCLIPStudent,
        preset: ProtocolPreset | None = None,
        refiner: MaskRefiner | None = None,
        *,
        class_pruning: float | None = None,
        class_pruning_scale: float = 10.0,
    ) -> None:
        if not isinstance(model, ReCLIPRectifier | ReCLIPStudent):
            raise TypeError(f"model must be a ReCLIPRectifier or ReCLIPStudent, got {type(model).__name__}")
        self.model = model.eval()
        self.preset = (
            preset if preset is not None else ProtocolPreset(name="reclip-whole", normalization=model.normalization)
        )
        self.refiner = refiner if refiner is not None else make_refiner(self.preset.refinement)
        self.class_pruning = class_pruning
        self.class_pruning_scale = class_pruning_scale

    @property
    def class_pruning(self) -> float | None:
        """The test-time class-pruning threshold in (0, 1], or ``None`` (off)."""
        return self._class_pruning

    @class_pruning.setter
    def class_pruning(self, value: float | None) -> None:
        self._class_pruning = None if value is None else _check_pruning_threshold(value, "class_pruning")

    @property
    def class_pruning_scale(self) -> float:
        """The factor on ``M_o`` inside the pruning softmax (10 for ReCLIP++)."""
        return self._class_pruning_scale

    @class_pruning_scale.setter
    def class_pruning_scale(self, value: float) -> None:
        self._class_pruning_scale = _check_pruning_scale(value, "class_pruning_scale")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The trained classes, in the model's channel order."""
        return self.model.class_names

    @property
    def device(self) -> torch.device:
        """Device of the model."""
        return self.model.query_embeddings.device

    def channels_for(self, concepts: ConceptSet) -> list[int]:
        """Model channels of the concept set's text labels, in label order (background first under a class policy).

        Raises:
            ConfigError: A name the model was not trained on, a trained name left out, or a background class
                policy none of whose names is a trained class.
        """
        trained = self.class_names
        background = concepts.background
        wanted = list(concepts.names)
        if background.kind == "class":
            found = [name for name in background.names if name in trained][:1]
            if not found:
                raise ConfigError(
                    f"concepts.background: none of the background names {list(background.names)} is a class of this "
                    f"ReCLIP++ model (trained classes: {', '.join(trained)}); use background: {{kind: none}} or a "
                    "threshold, or train with a background class"
                )
            wanted = found + wanted
        unknown = [name for name in wanted if name not in trained]
        missing = [name for name in trained if name not in wanted]
        if unknown or missing or len(set(wanted)) != len(wanted):
            problems = []
            if unknown:
                problems.append(f"cannot segment {unknown} (not trained)")
            if missing:
                problems.append(f"needs {missing} too")
            if len(set(wanted)) != len(wanted):
                problems.append("got a class twice")
            raise ConfigError(
                f"concepts: this ReCLIP++ model was trained on a fixed class list (its decoder mixes all class maps) "
                f"and {'; '.join(problems)}. Trained classes: {', '.join(trained)}. Ask for exactly these names (any "
                "order), or train a model on the new class list"
            )
        return [trained.index(name) for name in wanted]

    def logit_maps(self, images: Tensor) -> Tensor:
        """``M_o`` of normalised images at their resolution, all trained classes in the model's order.

        With :attr:`class_pruning` set, each image's classes are pruned on the feature grid before upsampling (see
        the class docstring).

        Args:
            images: ``[B, 3, H, W]`` normalised images.

        Returns:
            ``[B, C, H, W]`` float32.
        """
        return self._logit_maps(images, prune=True)

    def _logit_maps(self, images: Tensor, *, prune: bool) -> Tensor:
        height, width = int(images.shape[-2]), int(images.shape[-1])
        padded = pad_to_multiple(images, self.model.pad_multiple)
        logits = self.model(padded).logits.float()
        if prune and self.class_pruning is not None:
            logits = prune_classes(logits, self.class_pruning, self.class_pruning_scale)
        upsampled = resize_logits(logits, (int(padded.shape[-2]), int(padded.shape[-1])))
        return upsampled[..., :height, :width]

    @torch.no_grad()
    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1] into ``concepts.label_names``.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1], not normalised (normalised here with the preset's mean/std).
            concepts: The trained class names in any order, and a background policy (see the class docstring).

        Returns:
            Logits ``[B, num_labels, H, W]`` at the input resolution (centre-cropping preset: the crop box).
        """
        check_pixel_images(images)
        channels = self.channels_for(concepts)
        self.model.eval()
        images = images.to(self.device).float()
        normalization = self.preset.normalization
        normalized = normalize_images(images, normalization.mean, normalization.std)
        index = torch.tensor(channels, device=images.device)
        per_pass = self.preset.mode == "whole"  # one pass per image: prune on the grid, as the official code
        logits = infer(
            lambda batch: self._logit_maps(batch, prune=per_pass).index_select(1, index), normalized, self.preset
        )
        if self.class_pruning is not None and not per_pass:  # sliding windows: once, on the stitched logits
            logits = prune_classes(logits, self.class_pruning, self.class_pruning_scale)
        if concepts.background.kind == "threshold":
            # M_o is not a cosine: threshold the softmax over the asked classes (as ClosedSetSegmenter).
            threshold = concepts.background.model_copy(update={"score": "probability"})
            concepts = concepts.model_copy(update={"background": threshold})
        output = segmentation_from_similarities(logits, concepts, logit_scale=self.preset.logit_scale)
        return refine_output(output, images, self.preset, self.refiner)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------

_RESERVED_KEYS = (
    "method",
    "kind",
    "config",
    "clip",
    "clip_pretrained",
    "clip_summary",
    "query_embeddings_shape",
    "normalization",
    "deeplab",
    "positional_grid",
    "positional_width",
)


def _clip_summary(clip: ClipModel) -> dict[str, Any]:
    """The CLIP facts a loader checks against the CLIP it is given."""
    visual = clip.visual
    tower = _text_tower(clip)
    summary: dict[str, Any] = {"vision": type(visual).__name__, "embed_dim": clip.embed_dim}
    if isinstance(visual, VisionTransformer):
        summary["vision_width"] = int(visual.positional_embedding.shape[1])
        summary["patch_size"] = list(_pair(visual.patch_size))
        summary["grid"] = list(_pair(visual.grid_size))
    summary["text_width"] = int(tower.token_embedding.weight.shape[1])
    summary["context_length"] = int(tower.positional_embedding.shape[0])
    return summary


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write(tmp)
    tmp.replace(path)


def _write_folder(folder: str | Path, info: dict[str, Any], tensors: dict[str, Tensor], architecture: str) -> Path:
    text = json.dumps(info, indent=2) + "\n"
    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(
        directory / WEIGHTS_FILE_NAME,
        lambda path: save_file(tensors, str(path), metadata={"format": "pt", "architecture": architecture}),
    )
    _write_atomic(directory / RECLIP_FILE, lambda path: path.write_text(text, encoding="utf-8"))
    return directory


def _check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    clashes = sorted(set(extra or {}) & set(_RESERVED_KEYS))
    if clashes:
        raise ValueError(f"extra must not redefine {clashes}: those keys are written by the saver; rename them")
    return dict(extra or {})


def save_reclip(
    rectifier: ReCLIPRectifier,
    folder: str | Path,
    *,
    clip: str | None = None,
    pretrained: str | None = None,
    extra: Mapping[str, Any] | None = None,
    fp16: bool = True,
) -> Path:
    """Write a rectifier folder: ``reclip.json`` and ``model.safetensors``.

    The weights hold only what the rectifier adds to the CLIP (:meth:`ReCLIPRectifier.own_state_dict`: the query
    embeddings, the reference context, ``pe_proj``, the decoder with its BatchNorm statistics), never CLIP's own
    weights: the CLIP is loaded from its source (``clip``/``pretrained``, see :func:`seg_models.clip.load_clip`).

    ``reclip.json``: ``{"method": "reclip", "kind": "rectifier", "config", "clip", "clip_pretrained",
    "clip_summary", "query_embeddings_shape", "normalization", **extra}``.

    Args:
        rectifier: The trained rectifier.
        folder: Output folder (created).
        clip: The ``load_clip`` name of the CLIP; ``None``: the rectifier's CLIP's own name and pretrained tag.
        pretrained: The ``load_clip`` pretrained tag or file with an explicit ``clip``.
        extra: More JSON-serialisable entries (must not reuse the keys above).
        fp16: Store floating-point tensors in float16 (loaded back into float32).

    Returns:
        The folder.
    """
    more = _check_extra(extra)
    if clip is None:
        clip, pretrained = rectifier.clip.name, rectifier.clip.pretrained
    if not clip:
        raise ValueError("clip must name the CLIP to load (e.g. 'ViT-B-16' or 'local-dir:runs/clip'), got ''")
    info: dict[str, Any] = {
        "method": "reclip",
        "kind": "rectifier",
        "config": rectifier.config.model_dump(mode="json"),
        "clip": clip,
        "clip_pretrained": pretrained,
        "clip_summary": _clip_summary(rectifier.clip),
        "query_embeddings_shape": list(rectifier.query_embeddings.shape),
        "normalization": rectifier.normalization.model_dump(mode="json"),
        **more,
    }
    tensors = export_tensors(rectifier.own_state_dict(), fp16=fp16)
    return _write_folder(folder, info, tensors, "seg_models.reclip.ReCLIPRectifier")


def save_reclip_student(
    student: ReCLIPStudent, folder: str | Path, *, extra: Mapping[str, Any] | None = None, fp16: bool = True
) -> Path:
    """Write a student folder: ``reclip.json`` (``"kind": "student"``) and ``model.safetensors``.

    The weights hold the whole student (DeepLab, projection, inherited buffers, ``pe_proj``, decoder); no CLIP is
    needed to load it. ``reclip.json``: ``{"method": "reclip", "kind": "student", "config", "deeplab",
    "query_embeddings_shape", "positional_grid", "positional_width", "normalization", **extra}``.

    Args:
        student: The trained student.
        folder: Output folder (created).
        extra: More JSON-serialisable entries.
        fp16: Store floating-point tensors in float16.

    Returns:
        The folder.
    """
    more = _check_extra(extra)
    info: dict[str, Any] = {
        "method": "reclip",
        "kind": "student",
        "config": student.config.model_dump(mode="json"),
        "deeplab": student.deeplab_config.model_dump(mode="json"),
        "query_embeddings_shape": list(student.query_embeddings.shape),
        "positional_grid": list(student.positional_grid),
        "positional_width": int(student.positional_embedding.shape[1]),
        "normalization": student.normalization.model_dump(mode="json"),
        **more,
    }
    tensors = export_tensors(student.state_dict(), fp16=fp16)
    return _write_folder(folder, info, tensors, "seg_models.reclip.ReCLIPStudent")


def read_reclip_info(folder: str | Path) -> dict[str, Any]:
    """The content of a ReCLIP++ folder's ``reclip.json``.

    Raises:
        FileNotFoundError: No such folder.
        ConfigError: No ``reclip.json`` (e.g. another method's folder), malformed JSON, or another method's file.
    """
    directory = Path(folder)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such folder; pass a ReCLIP++ model folder ({_TRAIN_HINT})")
    path = directory / RECLIP_FILE
    if not path.is_file():
        others = sorted(p.name for p in directory.glob("*.json"))
        held = f" (it holds {', '.join(others)}: another method's folder?)" if others else ""
        raise ConfigError(
            f"{directory} has no {RECLIP_FILE}, so it is not a ReCLIP++ model folder{held}; {_TRAIN_HINT}"
        )
    return read_method_json(path, method="reclip", display_name="ReCLIP++", hint=_TRAIN_HINT)


def _read_kind(folder: str | Path, kind: str) -> tuple[Path, dict[str, Any], dict[str, Tensor]]:
    directory = Path(folder)
    info = read_reclip_info(directory)
    found = info.get("kind")
    if found != kind:
        loader = {"rectifier": "load_reclip", "student": "load_reclip_student"}.get(str(found), "the matching loader")
        raise ConfigError(
            f"{directory / RECLIP_FILE}: this is a ReCLIP++ {found!r} folder, not a {kind!r} one; load it with {loader}"
        )
    weights = directory / WEIGHTS_FILE_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has {RECLIP_FILE} but no {WEIGHTS_FILE_NAME}; {_TRAIN_HINT}")
    state = {key: value.float() if value.is_floating_point() else value for key, value in load_file(weights).items()}
    return directory, info, state


def _check_state(module: nn.Module, state: Mapping[str, Tensor], expected_keys: set[str], where: Path) -> None:
    expected = {key: value for key, value in module.state_dict().items() if key in expected_keys}
    missing, unexpected, mismatched = state_mismatch(expected, state)
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"the weights in {where} do not fit the model {RECLIP_FILE} describes (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatch {mismatched[:5]}); check the folder was written by save_reclip / "
            "save_reclip_student and, for a rectifier, that the CLIP is the one it was trained on"
        )


def load_reclip(
    folder: str | Path, clip: ClipModel | None = None, *, device: str | torch.device = "cpu"
) -> ReCLIPRectifier:
    """Load a folder written by :func:`save_reclip` (wrap it in :class:`ReCLIPSegmenter` to segment).

    Args:
        folder: The model folder.
        clip: The CLIP it was trained on; ``None``: ``load_clip(info["clip"], info["clip_pretrained"])``. It is
            frozen and moved to ``device`` with the rectifier.
        device: Where the rectifier goes.

    Raises:
        FileNotFoundError: No folder or no weights.
        ConfigError: Not a ReCLIP++ rectifier folder, a broken config, or a CLIP that does not fit.
    """
    directory, info, state = _read_kind(folder, "rectifier")
    config_file = str(directory / RECLIP_FILE)
    config = ReCLIPConfig.parse(info.get("config", {}), source=config_file)
    source = info.get("clip")
    if clip is None:
        if not isinstance(source, str) or not source:
            raise ConfigError(f"{config_file} names no CLIP ('clip'); pass the CLIP it was trained on as clip=")
        pretrained = info.get("clip_pretrained")
        clip = load_clip(source, pretrained if isinstance(pretrained, str) else None, device=device)
    saved = info.get("clip_summary")
    if saved is not None and saved != _clip_summary(clip):
        raise ConfigError(
            f"{directory} was trained on a CLIP {saved} ({source!r}) but the CLIP given has {_clip_summary(clip)}; "
            f"load the CLIP named in {RECLIP_FILE} and pass it"
        )
    if "query_embeddings" not in state:
        raise ConfigError(
            f"{directory / WEIGHTS_FILE_NAME} has no 'query_embeddings'; it was not written by save_reclip"
        )
    try:
        rectifier = ReCLIPRectifier(clip, state["query_embeddings"].to(clip.device), config)
    except ValueError as error:
        raise ConfigError(f"{directory}: the CLIP given cannot host this ReCLIP++ model: {error}") from None
    _check_state(rectifier, state, set(rectifier.own_state_dict()), directory / WEIGHTS_FILE_NAME)
    rectifier.load_state_dict(state, strict=False)
    return rectifier.to(device).eval()


def load_reclip_student(folder: str | Path, *, device: str | torch.device = "cpu") -> ReCLIPStudent:
    """Load a folder written by :func:`save_reclip_student` (no CLIP needed).

    Raises:
        FileNotFoundError: No folder or no weights.
        ConfigError: Not a ReCLIP++ student folder, a broken config, or weights that do not fit it.
    """
    directory, info, state = _read_kind(folder, "student")
    config_file = str(directory / RECLIP_FILE)
    config = ReCLIPConfig.parse(info.get("config", {}), source=config_file)
    # The weights come from the file: never download a pretrained backbone for them.
    deeplab = DeepLabConfig.parse({**dict(info.get("deeplab") or {}), "pretrained": False}, source=config_file)
    normalization = Normalization.parse(info.get("normalization"), source=config_file)
    try:
        classes, embed_dim = (int(v) for v in info["query_embeddings_shape"])
        grid = (int(info["positional_grid"][0]), int(info["positional_grid"][1]))
        width = int(info["positional_width"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise ConfigError(
            f"{config_file} lacks query_embeddings_shape, positional_grid or positional_width; it was not written by "
            "save_reclip_student"
        ) from None
    student = ReCLIPStudent(
        config,
        deeplab,
        query_embeddings=torch.ones(classes, embed_dim),
        reference_features=torch.zeros(classes, embed_dim),
        positional_embedding=torch.zeros(grid[0] * grid[1], width),
        positional_grid=grid,
        normalization=normalization,
    )
    _check_state(student, state, set(student.state_dict()), directory / WEIGHTS_FILE_NAME)
    student.load_state_dict(state, strict=True)
    return student.to(device).eval()
