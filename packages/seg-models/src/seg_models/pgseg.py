"""PGSeg: GroupViT with non-learnable prototypical regularisation (the PG units).

Zhang et al., "Uncovering Prototypical Knowledge for Weakly Open-Vocabulary Semantic Segmentation", NeurIPS 2023.
This module holds the architecture side, prototype generation included (the model runs EM in every forward, at
inference too); the losses (Hungarian matching, the PG loss of Eq. 3 with hard rejection) are in
``seg_losses.prototype`` and the training recipe in ``seg_trainers.groupvit``.

- **Prototype generation** (Sec. 4.1, Alg. 1 lines 1-5, Eqs. 1-2): :func:`em_prototypes` runs ``T`` EM iterations
  of a Gaussian mixture with identity covariance and no mixing weights, from the initial prototypes ``P``: E-step
  ``y_ij = softmax_i(kernel(p_i, v_j))`` (the exp-dot kernel ``p_i·v_j`` of the paper, or the Gaussian kernel),
  M-step ``p_i = Σ_j y_ij v_j / Σ_j y_ij``, L2-normalised (the official code). Non-learnable: no gradient. One
  iteration costs ``O(q·m·d)`` per image (two ``[m, d] × [d, q]`` products).
- **I-NPR** (Sec. 4.2): per grouping stage ``l``, the prototypical source is the stage's input tokens (before its
  transformer blocks); the reconstruction ``V' = Y P`` passes through a projection MLP (the official ``ProjectMLP``:
  linear, BatchNorm, ReLU, linear) and is **added** to the tokens entering the grouping block. The EM prototypes
  supervise the stage's group centres (the mixed group tokens after the pre-assign cross-attention).
- **T-NPR**: the caption's pooled text feature (before the projector, detached), read as ``c`` scalars, is clustered
  into ``q_t`` scalar prototypes that supervise the channel means of the stage's centres. The paper's exp-dot kernel
  and L2 normalisation are degenerate on scalars (a 1-d unit vector is ±1), so T-NPR uses the Gaussian kernel and
  no normalisation (a documented divergence; the official code normalises and so reduces T-NPR to signs).
- **Momentum prototypes**: the initial prototypes of every unit are buffers, initialised ``N(0, √(2/d))`` and
  L2-normalised (official), and updated after each training forward by ``P ← γ P + (1 − γ) mean_i P_T^i``
  (γ = 0.9; the paper writes a sum over the batch, which would drown γ for any batch over one, so the mean is
  used). The official code never updates the image prototypes (its ``is_training`` flag is never passed) and
  updates the text ones in eval too; here both are updated in training mode only.

:class:`PGSeg` is a :class:`seg_models.groupvit.GroupViT` whose vision tower always adds the I-NPR reconstruction
(training and inference, as the official model does), so :class:`seg_models.groupvit.GroupViTSegmenter` segments
with it unchanged. :meth:`PGSeg.training_forward` also returns what the PG losses need.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from seg_core import ConfigError, SegModel
from seg_models.groupvit import (
    GROUPVIT_TINY_CONFIG,
    GroupingHook,
    GroupViT,
    GroupViTConfig,
    GroupViTVisionOutput,
    _ProjectionHead,
)
from seg_models.weights import export_state_dict

__all__ = [
    "CONFIG_FILE_NAME",
    "PGSEG_TINY_CONFIG",
    "WEIGHTS_FILE_NAME",
    "EMResult",
    "PGSeg",
    "PGSegConfig",
    "PGSegForward",
    "em_prototypes",
    "init_prototypes",
    "load_pgseg",
    "momentum_update",
    "save_pgseg",
]

CONFIG_FILE_NAME = "pgseg.json"
"""The config file of a saved PGSeg folder (distinct from GroupViT's ``config.json``, so neither loader mistakes
the other's folder)."""
WEIGHTS_FILE_NAME = "model.safetensors"


# ---------------------------------------------------------------------------------------------------------------
# Prototype generation (non-learnable)
# ---------------------------------------------------------------------------------------------------------------


_KERNELS = ("dot", "gaussian")


def _check_choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


@dataclass(frozen=True, eq=False)
class EMResult:
    """Output of :func:`em_prototypes` (all tensors detached, in the source's dtype).

    Attributes:
        prototypes: ``[B, q, d]`` prototypes after the last M-step (unit norm when ``normalize`` was set).
        responsibilities: ``[B, m, q]`` responsibilities ``y`` of a final E-step with the final prototypes: row
            ``[b, j]`` is the distribution of source feature ``v_j`` over the ``q`` prototypes (sums to 1). This is
            ``Yᵀ`` in the paper's ``[q, m]`` notation.
    """

    prototypes: Tensor
    responsibilities: Tensor

    def reconstruct(self) -> Tensor:
        """Reconstruct the prototypical source from the prototypes, ``V' = Yᵀ P`` (Sec. 4.1).

        Returns:
            ``[B, m, d]``: each source feature replaced by the responsibility-weighted mix of the prototypes, in the
            dtype of :attr:`prototypes`.
        """
        mixed = torch.bmm(self.responsibilities.float(), self.prototypes.float())
        return mixed.to(self.prototypes.dtype)


def _e_step(source: Tensor, prototypes: Tensor, kernel: str, sigma: float) -> Tensor:
    """Responsibilities ``[B, m, q]`` of the prototypes ``[B, q, d]`` for the source ``[B, m, d]`` (Eq. 1)."""
    dots = torch.bmm(source, prototypes.transpose(1, 2))
    if kernel == "dot":
        return dots.softmax(dim=-1)
    # -‖v - p‖² / 2σ² = (2 v·p - ‖p‖² - ‖v‖²) / 2σ²; ‖v_j‖² is the same for every prototype i, so it cancels in the
    # softmax over i and is left out.
    return ((2 * dots - prototypes.square().sum(-1).unsqueeze(1)) / (2 * sigma**2)).softmax(dim=-1)


def _m_step(source: Tensor, responsibilities: Tensor, eps: float) -> Tensor:
    """Prototypes ``[B, q, d]`` as responsibility-weighted means of the source (Eq. 2)."""
    weights = responsibilities / (responsibilities.sum(dim=1, keepdim=True) + eps)
    return torch.bmm(weights.transpose(1, 2), source)


@torch.no_grad()
def em_prototypes(
    source: Tensor,
    init: Tensor,
    *,
    iterations: int = 10,
    kernel: Literal["dot", "gaussian"] = "dot",
    sigma: float = 1.0,
    normalize: bool = True,
    eps: float = 1e-6,
) -> EMResult:
    """Cluster the prototypical source into ``q`` prototypes with ``iterations`` EM steps (Algorithm 1, lines 1-5).

    Each iteration runs the E-step (Eq. 1) ``y_ij = exp(k(v_j, p_i)) / Σ_i' exp(k(v_j, p_i'))`` with
    ``k = p_i · v_j`` (``kernel="dot"``, the paper's exp-dot kernel, no scale) or ``k = -‖v_j - p_i‖² / 2σ²``
    (``kernel="gaussian"``), then the M-step (Eq. 2) ``p_i = Σ_j y_ij v_j / (Σ_j y_ij + eps)`` and, with
    ``normalize``, an L2 normalisation of every prototype (the official code does; ``init`` is then normalised
    first too). A final E-step with the final prototypes gives the returned responsibilities. A prototype that no
    source feature is responsible for shrinks towards the zero vector (it stays 0 after the normalisation).

    Runs under ``torch.no_grad``: the outputs carry no gradient (the prototypes are non-learnable). Computation is in
    float32; the results are cast back to ``source``'s dtype.

    For T-NPR's scalar source (``d == 1``) note that ``normalize=True`` turns every prototype into ±1 (what the
    official code does); ``kernel="gaussian", normalize=False`` gives an actual 1-d clustering.

    Args:
        source: ``[B, m, d]`` prototypical source ``V`` (e.g. the tokens entering a grouping stage), any float dtype.
        init: ``[q, d]`` initial prototypes shared by the batch (e.g. the EMA buffer) or ``[B, q, d]`` per image.
        iterations: Number ``T`` of E/M iterations (paper and official code: 10); 0 returns the (normalised) init.
        kernel: ``"dot"`` (exp-dot kernel, paper) or ``"gaussian"`` (identity covariance with variance ``sigma²``).
        sigma: Standard deviation of the Gaussian kernel (unused by ``"dot"``); must be positive.
        normalize: L2-normalise ``init`` and the prototypes after every M-step (paper's "normalized prototype",
            official code).
        eps: Guard added to the responsibility mass ``Σ_j y_ij`` in the M-step.

    Returns:
        An :class:`EMResult` with ``prototypes`` ``[B, q, d]`` and ``responsibilities`` ``[B, m, q]``.

    Raises:
        ValueError: On badly shaped inputs, a non-float ``source``, ``iterations < 0``, ``sigma <= 0``,
            ``eps < 0`` or an unknown ``kernel``.
    """
    if source.ndim != 3 or not source.is_floating_point():
        raise ValueError(
            f"source must be a float [B, m, d] tensor (batch, source features, channels), got shape "
            f"{tuple(source.shape)} and dtype {source.dtype}; add a batch dim with source.unsqueeze(0)"
        )
    batch, num_source, dim = source.shape
    if init.ndim not in (2, 3) or init.shape[-1] != dim or init.shape[-2] == 0:
        raise ValueError(
            f"init must be [q, d] or [B, q, d] with q >= 1 and d = {dim} (source's channels), got shape "
            f"{tuple(init.shape)}"
        )
    if init.ndim == 3 and init.shape[0] != batch:
        raise ValueError(f"init has batch size {init.shape[0]} but source has {batch}: pass [q, d] or [{batch}, q, d]")
    if num_source == 0:
        raise ValueError("source has no features (m = 0): nothing to cluster")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    _check_choice("kernel", kernel, _KERNELS)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    values = source.detach().float()
    prototypes = init.detach().to(device=values.device, dtype=torch.float32)
    if prototypes.ndim == 2:
        prototypes = prototypes.unsqueeze(0).expand(batch, -1, -1)
    # float32 even inside a mixed-precision forward: autocast would run these products in bf16/fp16.
    with torch.autocast(device_type=values.device.type, enabled=False):
        if normalize:
            prototypes = F.normalize(prototypes, dim=-1)
        for _ in range(iterations):
            responsibilities = _e_step(values, prototypes, kernel, sigma)
            prototypes = _m_step(values, responsibilities, eps)
            if normalize:
                prototypes = F.normalize(prototypes, dim=-1)
        responsibilities = _e_step(values, prototypes, kernel, sigma)
    return EMResult(
        prototypes=prototypes.to(source.dtype).contiguous(), responsibilities=responsibilities.to(source.dtype)
    )


@torch.no_grad()
def momentum_update(buffer: Tensor, new_prototypes: Tensor, momentum: float = 0.9, *, normalize: bool = True) -> None:
    """EMA update of the initial prototypes, in place (Sec. 4.2, "Momentum update of Prototype").

    ``buffer ← γ · buffer + (1 - γ) · mean_b new_prototypes[b]``, then an L2 normalisation of each row when
    ``normalize``. The paper writes ``P_new = γ P_old + (1 - γ) Σ_{i=1}^{n} P_T^i`` with a *sum* over the batch; with
    a sum the update would be dominated by the new term for any batch larger than 1 (``γ`` would hardly matter, and
    only the normalisation would keep the scale), so the batch **mean** is used here. The official code's image-level
    EMA is guarded by a flag that is never set (image prototypes never move); its text-level EMA runs on every
    forward.

    Args:
        buffer: ``[q, d]`` initial prototypes, updated in place (any float dtype; the arithmetic is in float32).
        new_prototypes: ``[B, q, d]`` prototypes after the last EM iteration (e.g. :attr:`EMResult.prototypes`).
        momentum: ``γ`` in ``[0, 1]`` (paper: 0.9); 1 keeps the buffer, 0 replaces it with the batch mean.
        normalize: L2-normalise the rows of the buffer after the update.

    Raises:
        ValueError: On mismatched shapes or ``momentum`` outside ``[0, 1]``.
    """
    if buffer.ndim != 2 or not buffer.is_floating_point():
        raise ValueError(f"buffer must be a float [q, d] tensor, got shape {tuple(buffer.shape)} and {buffer.dtype}")
    if new_prototypes.ndim != 3 or new_prototypes.shape[1:] != buffer.shape or new_prototypes.shape[0] == 0:
        raise ValueError(
            f"new_prototypes must be [B, q, d] = [B, {buffer.shape[0]}, {buffer.shape[1]}] with B >= 1 (buffer's "
            f"q and d), got shape {tuple(new_prototypes.shape)}; add a batch dim with unsqueeze(0) for one image"
        )
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum} (paper: 0.9)")
    mean = new_prototypes.detach().to(device=buffer.device, dtype=torch.float32).mean(dim=0)
    updated = momentum * buffer.float() + (1.0 - momentum) * mean
    if normalize:
        updated = F.normalize(updated, dim=-1)
    buffer.copy_(updated)


def init_prototypes(
    num: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    normalize: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random initial prototypes as in the official code: ``N(0, √(2/dim))`` entries, then L2 rows.

    Args:
        num: Number of prototypes ``q`` (>= 1).
        dim: Channels ``d`` (>= 1).
        generator: Optional random generator (on ``device``) for reproducible draws.
        normalize: L2-normalise each prototype (official code); ``False`` returns the raw Gaussian draw.
        device: Device of the result (default: the default device).
        dtype: Float dtype of the result.

    Returns:
        ``[num, dim]`` prototypes, unit rows when ``normalize``.

    Raises:
        ValueError: If ``num`` or ``dim`` is smaller than 1.
    """
    if num < 1 or dim < 1:
        raise ValueError(f"num and dim must be >= 1, got num={num}, dim={dim}")
    draw = torch.randn(num, dim, generator=generator, device=device, dtype=torch.float32) * math.sqrt(2.0 / dim)
    if normalize:
        draw = F.normalize(draw, dim=-1)
    return draw.to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


class PGSegConfig(SegModel):
    """A PGSeg: a GroupViT plus one PG unit per grouping stage.

    Attributes:
        architecture: Always ``"pgseg"`` (tells a PGSeg folder from a GroupViT one).
        groupvit: The underlying GroupViT.
        image_npr: I-NPR: EM prototypes of each stage's input tokens, their reconstruction added to the grouping
            input (and the PG loss on the centres, weight λ in the recipe).
        text_npr: T-NPR: scalar prototypes of the caption's text feature supervising the centres' channel means.
        num_prototypes: Image prototypes ``q_l`` per grouping stage; ``None``: the stage's output groups (paper
            default: as many prototypes as centres, 64/8).
        num_text_prototypes: Text prototypes per grouping stage; ``None``: the stage's output groups.
        em_iterations: ``T`` (paper 10).
        text_sigma: Width of T-NPR's Gaussian kernel.
        momentum: ``γ`` of the prototype EMA (paper 0.9).
        reconstruction_hidden_dim: Hidden width of the I-NPR projection MLP (official 4096).
    """

    architecture: Literal["pgseg"] = "pgseg"
    groupvit: GroupViTConfig = GroupViTConfig()
    image_npr: bool = True
    text_npr: bool = True
    num_prototypes: tuple[PositiveInt, ...] | None = None
    num_text_prototypes: tuple[PositiveInt, ...] | None = None
    em_iterations: PositiveInt = 10
    text_sigma: float = Field(default=1.0, gt=0)
    momentum: float = Field(default=0.9, ge=0, le=1)
    reconstruction_hidden_dim: PositiveInt = 4096
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _per_stage(self) -> PGSegConfig:
        stages = len(self.groupvit.vision.num_output_groups)
        for name in ("num_prototypes", "num_text_prototypes"):
            value = getattr(self, name)
            if value is not None and len(value) != stages:
                raise ValueError(
                    f"{name} {list(value)} must have one entry per grouping stage ({stages} for num_output_groups "
                    f"{list(self.groupvit.vision.num_output_groups)}), or be null for as many as the stage's groups"
                )
        return self

    def image_prototypes(self) -> tuple[int, ...]:
        """``q_l`` per grouping stage."""
        return self.num_prototypes or self.groupvit.vision.num_output_groups

    def text_prototypes(self) -> tuple[int, ...]:
        """Text prototypes per grouping stage."""
        return self.num_text_prototypes or self.groupvit.vision.num_output_groups


PGSEG_TINY_CONFIG = PGSegConfig(groupvit=GROUPVIT_TINY_CONFIG, reconstruction_hidden_dim=256)
"""PGSeg on :data:`seg_models.groupvit.GROUPVIT_TINY_CONFIG` (8/4 output groups, so 8/4 prototypes)."""


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PGSegForward:
    """What one training forward produced.

    Attributes:
        image_embeddings: ``[B, D]`` L2-normalised.
        text_embeddings: ``[N, D]`` L2-normalised.
        logit_scale: The clamped contrastive scale.
        vision: The vision output (stage centres included).
        image_em: Per grouping stage, the I-NPR EM result of the stage's input tokens (empty without I-NPR).
        text_em: Per grouping stage, the T-NPR EM result of the text features ``[N, c, 1]`` (empty without T-NPR).
    """

    image_embeddings: Tensor
    text_embeddings: Tensor
    logit_scale: Tensor
    vision: GroupViTVisionOutput
    image_em: tuple[EMResult, ...]
    text_em: tuple[EMResult, ...]

    def centres(self) -> list[Tensor]:
        """``[B, G_l, C]`` group centres of every grouping stage (what the PG losses regularise)."""
        return [stage.centres for stage in self.vision.stages if stage.centres is not None]


class PGSeg(GroupViT):
    """GroupViT with PG units (see the module docstring).

    Args:
        config: The PGSeg config.

    Attributes:
        pg_config: As given (``config`` is the GroupViT's, so GroupViT code reads the architecture unchanged).
        reconstructions: One projection MLP per grouping stage (empty without I-NPR).
    """

    def __init__(self, config: PGSegConfig) -> None:
        super().__init__(config.groupvit)
        self.pg_config = config
        width = config.groupvit.vision.embed_dim
        stages = len(config.groupvit.vision.num_output_groups)
        self.reconstructions = nn.ModuleList(
            _ProjectionHead(width, config.reconstruction_hidden_dim, width)
            for _ in range(stages if config.image_npr else 0)
        )
        generator = torch.Generator().manual_seed(config.seed)
        for index, count in enumerate(config.image_prototypes()):
            self.register_buffer(f"image_prototypes_{index}", init_prototypes(count, width, generator=generator))
        for index, count in enumerate(config.text_prototypes()):
            # Scalar prototypes, spread like the (LayerNormed) text features they cluster.
            self.register_buffer(f"text_prototypes_{index}", torch.randn(count, 1, generator=generator))
        self.identity = f"pgseg:random:{uuid.uuid4().hex}"

    def image_prototype_buffer(self, stage: int) -> Tensor:
        """``[q_l, C]`` initial image prototypes of grouping stage ``stage``."""
        buffer: Tensor = getattr(self, f"image_prototypes_{stage}")
        return buffer

    def text_prototype_buffer(self, stage: int) -> Tensor:
        """``[q_t, 1]`` initial text prototypes of grouping stage ``stage``."""
        buffer: Tensor = getattr(self, f"text_prototypes_{stage}")
        return buffer

    def _npr_hook(self, records: list[EMResult] | None, extra: GroupingHook | None) -> GroupingHook:
        config = self.pg_config

        def hook(index: int, stage_input: Tensor, tokens: Tensor) -> Tensor | None:
            addition = extra(index, stage_input, tokens) if extra is not None else None
            if not config.image_npr:
                return addition
            em = em_prototypes(stage_input, self.image_prototype_buffer(index), iterations=config.em_iterations)
            if records is not None:
                records.append(em)
            reconstruction: Tensor = self.reconstructions[index](em.reconstruct())
            return reconstruction if addition is None else addition + reconstruction

        return hook

    def vision_features(self, images: Tensor, *, hook: GroupingHook | None = None) -> GroupViTVisionOutput:
        """GroupViT's vision pass with the I-NPR reconstruction added before every grouping block."""
        return super().vision_features(images, hook=self._npr_hook(None, hook))

    def training_forward(self, images: Tensor, token_ids: Tensor) -> PGSegForward:
        """Embeddings plus the EM results the PG losses need; updates the momentum prototypes in training mode.

        Args:
            images: Normalised ``[B, 3, H, W]``.
            token_ids: ``[B, L]`` the paired captions (T-NPR pairs caption ``i`` with image ``i``).
        """
        records: list[EMResult] = []
        vision = super().vision_features(images, hook=self._npr_hook(records, None))
        image = F.normalize(self.image_projector(vision.tokens.mean(dim=1)), dim=-1)
        text_features = self.text(token_ids.to(self.device))
        text = F.normalize(self.text_projector(text_features), dim=-1)
        text_records: list[EMResult] = []
        if self.pg_config.text_npr:
            scalars = text_features.detach().unsqueeze(-1)  # [N, c, 1]
            for index in range(len(self.pg_config.text_prototypes())):
                text_records.append(
                    em_prototypes(
                        scalars,
                        self.text_prototype_buffer(index),
                        iterations=self.pg_config.em_iterations,
                        kernel="gaussian",
                        sigma=self.pg_config.text_sigma,
                        normalize=False,
                    )
                )
        if self.training:
            for index, em in enumerate(records):
                momentum_update(self.image_prototype_buffer(index), em.prototypes, self.pg_config.momentum)
            for index, em in enumerate(text_records):
                momentum_update(
                    self.text_prototype_buffer(index), em.prototypes, self.pg_config.momentum, normalize=False
                )
        return PGSegForward(image, text, self.clamped_logit_scale(), vision, tuple(records), tuple(text_records))


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------


def save_pgseg(model: PGSeg, directory: str | Path, *, fp16: bool = False) -> Path:
    """Write ``pgseg.json`` (:class:`PGSegConfig`) and ``model.safetensors`` (weights and prototype buffers).

    Args:
        model: The model.
        directory: Output folder (created).
        fp16: Store floating-point tensors in float16 (loaded back into float32).
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    model.pg_config.save(folder / CONFIG_FILE_NAME)
    tensors = export_state_dict(model, fp16=fp16)
    tmp = folder / f".{WEIGHTS_FILE_NAME}.{uuid.uuid4().hex}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "architecture": "seg_models.pgseg.PGSeg"})
    tmp.replace(folder / WEIGHTS_FILE_NAME)
    return folder


def load_pgseg(directory: str | Path, *, device: str | torch.device = "cpu") -> PGSeg:
    """Load a folder written by :func:`save_pgseg`, in eval mode.

    Raises:
        FileNotFoundError: No such folder, or no weights in it.
        ConfigError: The folder holds another model (e.g. a GroupViT's ``config.json``) or a broken config.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; pass a folder written by save_pgseg or `seg train pgseg`")
    config_file = folder / CONFIG_FILE_NAME
    if not config_file.is_file():
        other = (
            " (it holds a GroupViT: load it with load_groupvit or --method groupvit)"
            if (folder / "config.json").is_file()
            else ""
        )
        raise ConfigError(f"{folder} has no {CONFIG_FILE_NAME}, so it is not a PGSeg model{other}")
    data: Any = json.loads(config_file.read_text(encoding="utf-8"))
    config = PGSegConfig.parse(data, source=str(config_file))
    weights = folder / WEIGHTS_FILE_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has {CONFIG_FILE_NAME} but no {WEIGHTS_FILE_NAME}")
    model = PGSeg(config)
    state = {key: value.float() if value.is_floating_point() else value for key, value in load_file(weights).items()}
    model.load_state_dict(state)
    model.identity = f"pgseg:{folder.resolve()}"
    return model.to(device).eval()
