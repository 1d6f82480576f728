"""What the installed packages provide, found by importing it (never a hard-coded list of booleans).

``seg demo`` shows these results until the end-to-end demo exists; the real demo can drop this module or keep it
as a status page.

A probe names a module and, optionally, an attribute. The target is *available* when the module imports and
either defines the attribute or, without one, exports something: the project's skeleton modules import fine but
declare ``__all__ = []`` until their issue lands, so an import alone proves nothing. When a method or piece lands
in another module than listed here, change its entry in :data:`METHOD_PROBES` or :data:`PIECES`.
"""

import enum
import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Final

from seg_cli.methods import METHODS, Method

__all__ = [
    "METHOD_PROBES",
    "PIECES",
    "Availability",
    "MethodProbes",
    "MethodStatus",
    "Piece",
    "PieceStatus",
    "Probe",
    "ProbeResult",
    "exported_names",
    "method_statuses",
    "piece_statuses",
    "run_probe",
]


class Availability(enum.Enum):
    """Outcome of a probe."""

    AVAILABLE = "available"
    MISSING = "not yet"
    BROKEN = "broken"


@dataclass(frozen=True)
class Probe:
    """A capability check: ``module`` imports and provides ``attribute`` (or, without one, exports something).

    Attributes:
        module: Dotted module path, e.g. ``seg_eval.world``.
        attribute: Optional name the module must define, e.g. ``generate_split``.
    """

    module: str
    attribute: str | None = None

    @property
    def target(self) -> str:
        """``module`` or ``module:attribute``, as shown to the user."""
        return self.module if self.attribute is None else f"{self.module}:{self.attribute}"


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found.

    Attributes:
        probe: The probe that ran.
        availability: Whether the target can be used.
        detail: Why, in a few words (the import error for a broken module).
    """

    probe: Probe
    availability: Availability
    detail: str


@dataclass(frozen=True)
class MethodProbes:
    """Where a method's code lives.

    Attributes:
        model: Its model code (seg-models); ``None`` when it has none of its own.
        recipe: Its training recipe (seg-trainers); ``None`` for a training-free method.
    """

    model: Probe | None
    recipe: Probe | None


@dataclass(frozen=True)
class Piece:
    """A piece of the project that is not a method.

    Attributes:
        label: What the user reads, e.g. ``synthetic world``.
        distribution: The distribution that provides it.
        probe: How to tell whether it is installed.
    """

    label: str
    distribution: str
    probe: Probe


@dataclass(frozen=True)
class PieceStatus:
    """A piece and what its probe found."""

    piece: Piece
    result: ProbeResult


@dataclass(frozen=True)
class MethodStatus:
    """A method and what its probes found (``None`` where the method has no such part)."""

    method: Method
    model: ProbeResult | None
    recipe: ProbeResult | None


# Module map of the package skeletons (the docstrings of seg_models and seg_trainers name the issue of each).
METHOD_PROBES: Final[dict[str, MethodProbes]] = {
    "maskclip": MethodProbes(Probe("seg_models.maskclip"), None),
    "dense-clip": MethodProbes(Probe("seg_models.maskclip"), None),
    "groupvit": MethodProbes(Probe("seg_models.groupvit"), Probe("seg_trainers.groupvit")),
    "reco": MethodProbes(Probe("seg_models.reco"), Probe("seg_trainers.reco", "build_reco")),
    "reco-plus": MethodProbes(Probe("seg_models.closed_set"), Probe("seg_trainers.reco", "train_reco_plus")),
    "zutis": MethodProbes(Probe("seg_models.zutis"), Probe("seg_trainers.zutis")),
    "reclip": MethodProbes(Probe("seg_models.reclip"), Probe("seg_trainers.reclip")),
    "pgseg": MethodProbes(Probe("seg_models.pgseg"), Probe("seg_trainers.groupvit")),
    "simcon": MethodProbes(Probe("seg_models.groupvit"), Probe("seg_trainers.simcon")),
}
"""Probes of every method of :data:`seg_cli.methods.METHODS`, by command-line name."""

PIECES: Final[tuple[Piece, ...]] = (
    Piece("CLIP from open_clip", "seg-models", Probe("seg_models.clip")),
    Piece("synthetic-world CLIP training", "seg-trainers", Probe("seg_trainers.clip")),
    Piece("synthetic world", "seg-eval", Probe("seg_eval.world")),
    Piece("metrics", "seg-eval", Probe("seg_eval.metrics")),
    Piece("benchmark readers and presets", "seg-eval", Probe("seg_eval.presets")),
    Piece("evaluator", "seg-eval", Probe("seg_eval.evaluator")),
    Piece("training engine", "seg-train", Probe("seg_train")),
    Piece("bundled synthetic CLIP", "seg-zoo", Probe("seg_zoo.bundled")),
    Piece("zoo registry", "seg-zoo", Probe("seg_zoo.registry")),
    Piece("zoo Hub I/O", "seg-zoo", Probe("seg_zoo.hub")),
)


def exported_names(module: ModuleType) -> list[str]:
    """The public names a module offers: its ``__all__`` when it has one, else its non-underscore attributes.

    Args:
        module: An imported module.

    Returns:
        The names, in the module's order (empty for a skeleton or a bare namespace package).
    """
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return [str(name) for name in declared]
    return [name for name in vars(module) if not name.startswith("_")]


def _is_parent(package: str, module: str) -> bool:
    """Whether ``package`` is ``module`` or one of its parent packages."""
    return module == package or module.startswith(package + ".")


def run_probe(probe: Probe) -> ProbeResult:
    """Import the probe's module to tell whether its target is there and works.

    A module that does not exist, or that exports nothing yet, is :attr:`Availability.MISSING`; one that exists but
    fails to import (a broken install, a missing third-party dependency) is :attr:`Availability.BROKEN`, with the
    error as detail.

    Args:
        probe: What to look for.

    Returns:
        The result; an import failure is reported, never raised.
    """
    try:
        spec = importlib.util.find_spec(probe.module)
    except ModuleNotFoundError as error:  # a parent package is not installed, or imports a missing module
        if error.name is not None and _is_parent(error.name, probe.module):
            return ProbeResult(probe, Availability.MISSING, f"{error.name} is not installed")
        return ProbeResult(probe, Availability.BROKEN, f"{type(error).__name__}: {error}")
    except Exception as error:  # a parent package failed while importing: the capability is unusable
        return ProbeResult(probe, Availability.BROKEN, f"{type(error).__name__}: {error}")
    if spec is None:
        return ProbeResult(probe, Availability.MISSING, f"no module {probe.module}")
    try:
        module = importlib.import_module(probe.module)
    except Exception as error:  # the module exists but its import fails: the capability is unusable
        return ProbeResult(probe, Availability.BROKEN, f"{type(error).__name__}: {error}")
    if probe.attribute is not None:
        if not hasattr(module, probe.attribute):
            return ProbeResult(probe, Availability.MISSING, f"{probe.module} has no {probe.attribute}")
    elif not exported_names(module):
        return ProbeResult(probe, Availability.MISSING, f"{probe.module} exports nothing yet (skeleton)")
    return ProbeResult(probe, Availability.AVAILABLE, probe.target)


def method_statuses() -> list[MethodStatus]:
    """Probe every method of :data:`seg_cli.methods.METHODS`, in catalogue order."""
    statuses: list[MethodStatus] = []
    for method in METHODS:
        probes = METHOD_PROBES[method.name]
        model = None if probes.model is None else run_probe(probes.model)
        recipe = None if probes.recipe is None else run_probe(probes.recipe)
        statuses.append(MethodStatus(method, model, recipe))
    return statuses


def piece_statuses() -> list[PieceStatus]:
    """Probe every piece of :data:`PIECES`, in order."""
    return [PieceStatus(piece, run_probe(piece.probe)) for piece in PIECES]
