#!/usr/bin/env python3
"""Release tooling of the seg monorepo: versions, changelogs, sibling ranges and builds, one distribution at a time.

Every distribution under ``packages/*`` and ``apps/*`` has its own static version (``src/<import>/__about__.py``),
its own ``CHANGELOG.md`` and its own tags (``<dist>-v<version>``). Siblings depend on each other through ranges such
as ``seg-core>=0.1,<0.2``. See ``docs/releasing.md`` for the procedure.

Usage (from the repository root; ``hatch run release ...`` runs the same)::

    python tools/release.py list
    python tools/release.py check
    python tools/release.py bump seg-eval minor            # or major, patch, or an explicit X.Y.Z
    python tools/release.py bump seg-eval 0.3.0 --dry-run
    python tools/release.py build seg-eval [--out dist]

Every command takes ``--root DIR`` (default: the repository that holds this script). The tool never runs git: ``bump``
prints the tag command to run. Standard library plus ``packaging`` only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = [
    "Changelog",
    "Distribution",
    "ReleaseError",
    "bump",
    "check",
    "compatible_range",
    "discover",
    "main",
    "next_version",
    "parse_changelog",
]

DEFAULT_ROOT: Final = Path(__file__).resolve().parents[1]
DISTRIBUTION_GLOBS: Final = ("packages/*/pyproject.toml", "apps/*/pyproject.toml")
PARTS: Final = ("major", "minor", "patch")
UNRELEASED_HEADING: Final = "## Unreleased"

_VERSION_LINE: Final = re.compile(r"""^__version__\s*=\s*(["'])(?P<version>[^"']+)\1\s*$""", re.MULTILINE)
_PLAIN_VERSION: Final = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_RELEASE_HEADING: Final = re.compile(r"## (?P<version>\S+?)(?: - (?P<date>\S+))?")


class ReleaseError(Exception):
    """A refusal with a message that says what is wrong and how to fix it; nothing was written."""


# --------------------------------------------------------------------------------------------------------------------
# The repository: distributions, versions, requirements


@dataclass(frozen=True)
class SiblingRequirement:
    """One requirement string of a distribution's pyproject, as written and as parsed.

    Attributes:
        raw: The string exactly as it appears in ``pyproject.toml``.
        parsed: The parsed requirement.
    """

    raw: str
    parsed: Requirement

    @property
    def key(self) -> str:
        """The canonical name of the required distribution."""
        return canonicalize_name(self.parsed.name)


@dataclass(frozen=True)
class Distribution:
    """One distribution of the monorepo.

    Attributes:
        name: The ``[project] name``, e.g. ``seg-eval``.
        folder: Its folder, e.g. ``<root>/packages/seg-eval``.
        version: The version in its ``__about__.py``.
        about: Path of the ``__about__.py`` that holds the version.
        requirements: Every ``[project] dependencies`` and ``optional-dependencies`` entry.
    """

    name: str
    folder: Path
    version: Version
    about: Path
    requirements: tuple[SiblingRequirement, ...]

    @property
    def key(self) -> str:
        """The canonical name, used to match requirements."""
        return canonicalize_name(self.name)

    @property
    def pyproject(self) -> Path:
        """Its ``pyproject.toml``."""
        return self.folder / "pyproject.toml"

    @property
    def changelog(self) -> Path:
        """Its ``CHANGELOG.md``."""
        return self.folder / "CHANGELOG.md"

    def tag(self, version: Version | None = None) -> str:
        """The git tag of ``version`` (default: the current one), e.g. ``seg-eval-v0.1.0``."""
        return f"{self.name}-v{version or self.version}"


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it is inside it, for messages."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_version(about: Path) -> Version:
    """The version in an ``__about__.py`` (one ``__version__ = "X.Y.Z"`` line).

    Args:
        about: The file.

    Raises:
        ReleaseError: The file is missing or has not exactly one parseable ``__version__`` line.
    """
    if not about.is_file():
        raise ReleaseError(f"{about}: version file not found")
    matches = list(_VERSION_LINE.finditer(about.read_text(encoding="utf-8")))
    if len(matches) != 1:
        raise ReleaseError(f'{about}: expected exactly one line `__version__ = "X.Y.Z"`, found {len(matches)}')
    text = matches[0].group("version")
    if _PLAIN_VERSION.fullmatch(text) is None:
        raise ReleaseError(f"{about}: version {text!r} is not of the form X.Y.Z")
    return Version(text)


def _requirements(data: dict[str, Any], pyproject: Path) -> tuple[SiblingRequirement, ...]:
    """Every dependency string of a parsed pyproject (``dependencies`` and each ``optional-dependencies`` list)."""
    project = data.get("project", {})
    raws: list[str] = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        raws.extend(extra)
    parsed: list[SiblingRequirement] = []
    for raw in raws:
        try:
            parsed.append(SiblingRequirement(raw, Requirement(raw)))
        except InvalidRequirement as error:
            raise ReleaseError(f"{pyproject}: invalid requirement {raw!r}: {error}") from None
    return tuple(parsed)


def discover(root: Path) -> dict[str, Distribution]:
    """Find every distribution of the repository at ``root``.

    Args:
        root: Repository root; distributions are ``packages/*/pyproject.toml`` and ``apps/*/pyproject.toml``.

    Returns:
        The distributions by canonical name, in path order.

    Raises:
        ReleaseError: None was found, a pyproject lacks ``[project] name`` or ``[tool.hatch.version] path``, or two
            folders declare the same name.
    """
    found: dict[str, Distribution] = {}
    for pattern in DISTRIBUTION_GLOBS:
        for pyproject in sorted(root.glob(pattern)):
            with pyproject.open("rb") as stream:
                data = tomllib.load(stream)
            name = data.get("project", {}).get("name")
            version_path = data.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
            if not isinstance(name, str) or not isinstance(version_path, str):
                raise ReleaseError(f"{pyproject}: needs [project] name and [tool.hatch.version] path")
            about = pyproject.parent / version_path
            dist = Distribution(name, pyproject.parent, read_version(about), about, _requirements(data, pyproject))
            if dist.key in found:
                raise ReleaseError(f"{pyproject}: {name} is also declared by {found[dist.key].pyproject}")
            found[dist.key] = dist
    if not found:
        raise ReleaseError(
            f"no distributions under {root} (looked for {' and '.join(DISTRIBUTION_GLOBS)}); pass --root"
        )
    return found


def lookup(dists: dict[str, Distribution], name: str) -> Distribution:
    """The distribution called ``name``; a :class:`ReleaseError` listing the known names otherwise."""
    dist = dists.get(canonicalize_name(name))
    if dist is None:
        known = ", ".join(sorted(d.name for d in dists.values()))
        raise ReleaseError(f"unknown distribution {name!r}; known: {known}")
    return dist


# --------------------------------------------------------------------------------------------------------------------
# Changelogs


@dataclass(frozen=True)
class Changelog:
    """A parsed ``CHANGELOG.md``: a preamble, ``## Unreleased``, then ``## X.Y.Z - YYYY-MM-DD`` sections, newest first.

    Attributes:
        lines: The file's lines, without line endings.
        unreleased: Index of the ``## Unreleased`` line (-1 when missing).
        after_unreleased: Index of the first ``##`` heading after it (``len(lines)`` when none).
        releases: The release versions, top to bottom.
        problems: Everything wrong with the structure, one message each (empty when the file is well formed).
    """

    lines: tuple[str, ...]
    unreleased: int
    after_unreleased: int
    releases: tuple[Version, ...]
    problems: tuple[str, ...]

    def unreleased_entries(self) -> list[str]:
        """The lines of the Unreleased section, without leading and trailing blank lines."""
        if self.unreleased < 0:
            return []
        body = list(self.lines[self.unreleased + 1 : self.after_unreleased])
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        return body


def parse_changelog(text: str) -> Changelog:
    """Parse a changelog and collect its structural problems (``##`` lines inside code fences are ignored).

    Args:
        text: The file's content.

    Returns:
        The changelog; check :attr:`Changelog.problems` before using it.
    """
    lines = tuple(text.splitlines())
    headings: list[int] = []
    in_fence = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (line.startswith("## ") or line.rstrip() == "##"):
            headings.append(index)

    problems: list[str] = []
    unreleased = [index for index in headings if lines[index].rstrip() == UNRELEASED_HEADING]
    if not unreleased:
        problems.append(f"no '{UNRELEASED_HEADING}' section: add one above the latest release")
    elif len(unreleased) > 1:
        numbers = ", ".join(str(index + 1) for index in unreleased)
        problems.append(f"'{UNRELEASED_HEADING}' appears {len(unreleased)} times (lines {numbers}); keep one")
    if unreleased and headings[0] != unreleased[0]:
        problems.append(
            f"line {headings[0] + 1}: '{lines[headings[0]]}' is above '{UNRELEASED_HEADING}'; "
            f"'{UNRELEASED_HEADING}' must be the first '## ' section"
        )

    releases: list[Version] = []
    for index in headings:
        line = lines[index].rstrip()
        if line == UNRELEASED_HEADING:
            continue
        match = _RELEASE_HEADING.fullmatch(line)
        if match is None or _PLAIN_VERSION.fullmatch(match.group("version")) is None:
            problems.append(f"line {index + 1}: '{line}' is not a release heading; write '## X.Y.Z - YYYY-MM-DD'")
            continue
        date = match.group("date")
        if date is not None:
            try:
                datetime.date.fromisoformat(date)
            except ValueError:
                problems.append(f"line {index + 1}: {date!r} is not a date; write YYYY-MM-DD")
        version = Version(match.group("version"))
        if releases and version >= releases[-1]:
            problems.append(f"line {index + 1}: {version} is listed below {releases[-1]}; releases go newest first")
        releases.append(version)

    start = unreleased[0] if unreleased else -1
    following = [index for index in headings if index > start]
    after = following[0] if start >= 0 and following else len(lines)
    return Changelog(lines, start, after, tuple(releases), tuple(problems))


def changelog_problems(dist: Distribution, root: Path) -> list[str]:
    """Structural problems of a distribution's changelog, and a mismatch between its latest release and the version.

    Args:
        dist: The distribution.
        root: Repository root, for shorter paths in messages.

    Returns:
        One message per problem, each starting with the changelog's path.
    """
    where = _relative(dist.changelog, root)
    if not dist.changelog.is_file():
        return [f"{where}: missing; create it with a '{UNRELEASED_HEADING}' section"]
    changelog = parse_changelog(dist.changelog.read_text(encoding="utf-8"))
    problems = [f"{where}: {problem}" for problem in changelog.problems]
    if changelog.releases and changelog.releases[0] != dist.version:
        problems.append(
            f"{where}: the latest release heading is {changelog.releases[0]} but "
            f"{_relative(dist.about, root)} says {dist.version}; make them agree"
        )
    return problems


def release_changelog(changelog: Changelog, version: Version, date: datetime.date) -> str:
    """The changelog text with the Unreleased entries moved under ``## <version> - <date>``.

    A fresh, empty ``## Unreleased`` stays on top.

    Args:
        changelog: A well-formed changelog.
        version: The new version.
        date: The release date.

    Returns:
        The new file content, ending with a newline.
    """
    head = list(changelog.lines[: changelog.unreleased + 1])
    tail = list(changelog.lines[changelog.after_unreleased :])
    entries = changelog.unreleased_entries()
    lines = [*head, "", f"## {version} - {date.isoformat()}", ""]
    if entries:
        lines.extend([*entries, ""])
    lines.extend(tail)
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Versions and ranges


def next_version(current: Version, part: str) -> Version:
    """The version after ``current`` for a bump of ``part``.

    Args:
        current: The current version.
        part: ``major``, ``minor``, ``patch`` or an explicit ``X.Y.Z``.

    Returns:
        The new version (not yet compared with ``current``).

    Raises:
        ReleaseError: ``part`` is none of these.
    """
    major, minor, patch = (*current.release, 0, 0)[:3]
    if part == "major":
        return Version(f"{major + 1}.0.0")
    if part == "minor":
        return Version(f"{major}.{minor + 1}.0")
    if part == "patch":
        return Version(f"{major}.{minor}.{patch + 1}")
    if _PLAIN_VERSION.fullmatch(part) is None:
        raise ReleaseError(f"{part!r} is neither major, minor, patch nor a version X.Y.Z")
    return Version(part)


def compatible_range(version: Version) -> str:
    """The sibling range that admits ``version`` and its compatible successors.

    Before 1.0 a minor bump is breaking (``0.2.0`` gives ``>=0.2,<0.3``); from 1.0 on a major bump is
    (``1.4.0`` gives ``>=1.4,<2``).
    """
    major, minor = (*version.release, 0)[:2]
    if major == 0:
        return f">=0.{minor},<0.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


def with_specifier(requirement: Requirement, specifier: str) -> str:
    """The requirement string with its version specifier replaced, keeping extras and markers."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker is not None else ""
    return f"{requirement.name}{extras}{specifier}{marker}"


def _replace_requirement(text: str, old: str, new: str, pyproject: Path) -> str:
    """Replace the quoted requirement ``old`` by ``new`` in a pyproject's text and prove that nothing else changed.

    Raises:
        ReleaseError: ``old`` is not found quoted, or the edit changed more than that requirement.
    """
    edited = text
    for quote in ('"', "'"):
        edited = edited.replace(f"{quote}{old}{quote}", f"{quote}{new}{quote}")
    if edited == text:
        raise ReleaseError(f"{pyproject}: could not find the requirement {old!r} as a quoted string; edit it by hand")

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list):
            return [new if item == old else swap(item) for item in value]
        return value

    before, after = tomllib.loads(text), tomllib.loads(edited)
    expected = dict(before)
    expected["project"] = swap(before.get("project", {}))
    if after != expected:
        raise ReleaseError(f"{pyproject}: replacing {old!r} would change more than that requirement; edit it by hand")
    return edited


# --------------------------------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class RangeChange:
    """One dependant's requirement on the bumped distribution, before and after."""

    dependant: Distribution
    old: str
    new: str


@dataclass(frozen=True)
class BumpPlan:
    """Everything a bump changes, computed before anything is written."""

    dist: Distribution
    new_version: Version
    entries: int
    files: dict[Path, str]
    range_changes: tuple[RangeChange, ...]


def plan_bump(root: Path, name: str, part: str, date: datetime.date, *, allow_empty: bool = False) -> BumpPlan:
    """Compute a bump of ``name`` without writing: new file contents for its version, changelog and dependants.

    Args:
        root: Repository root.
        name: The distribution, e.g. ``seg-eval``.
        part: ``major``, ``minor``, ``patch`` or an explicit ``X.Y.Z``.
        date: The release date written into the changelog.
        allow_empty: Release even when the Unreleased section has no entries.

    Returns:
        The plan; :func:`bump` writes it.

    Raises:
        ReleaseError: Unknown distribution, a version not greater than the current one, a malformed changelog, or
            an empty Unreleased section without ``allow_empty``.
    """
    dists = discover(root)
    dist = lookup(dists, name)
    new_version = next_version(dist.version, part)
    if new_version <= dist.version:
        raise ReleaseError(
            f"{dist.name} is at {dist.version}; {new_version} is not greater. Choose a higher version or a part "
            f"({', '.join(PARTS)})"
        )
    problems = changelog_problems(dist, root)
    if problems:
        raise ReleaseError("the changelog must be fixed first:\n  " + "\n  ".join(problems))
    changelog = parse_changelog(dist.changelog.read_text(encoding="utf-8"))
    entries = changelog.unreleased_entries()
    if not entries and not allow_empty:
        raise ReleaseError(
            f"{_relative(dist.changelog, root)}: '{UNRELEASED_HEADING}' has no entries; describe the changes of "
            f"{new_version} there first (or pass --allow-empty)"
        )

    about_text = dist.about.read_text(encoding="utf-8")
    files: dict[Path, str] = {
        dist.about: _VERSION_LINE.sub(f'__version__ = "{new_version}"', about_text, count=1),
        dist.changelog: release_changelog(changelog, new_version, date),
    }
    changes: list[RangeChange] = []
    for dependant in dists.values():
        if dependant.key == dist.key:
            continue
        for requirement in dependant.requirements:
            if requirement.key != dist.key or requirement.parsed.specifier.contains(new_version, prereleases=True):
                continue
            if any(c.dependant.key == dependant.key and c.old == requirement.raw for c in changes):
                continue  # the same string in dependencies and an extra: one edit replaced both
            new = with_specifier(requirement.parsed, compatible_range(new_version))
            text = files.get(dependant.pyproject) or dependant.pyproject.read_text(encoding="utf-8")
            files[dependant.pyproject] = _replace_requirement(text, requirement.raw, new, dependant.pyproject)
            changes.append(RangeChange(dependant, requirement.raw, new))
    return BumpPlan(dist, new_version, len([line for line in entries if line.strip()]), files, tuple(changes))


def bump(
    root: Path, name: str, part: str, date: datetime.date, *, allow_empty: bool = False, dry_run: bool = False
) -> BumpPlan:
    """Bump a distribution's version, release its changelog and widen dependants' ranges where needed.

    Args:
        root: Repository root.
        name: The distribution.
        part: ``major``, ``minor``, ``patch`` or an explicit ``X.Y.Z``.
        date: The release date.
        allow_empty: Release even when the Unreleased section has no entries.
        dry_run: Compute and report, write nothing.

    Returns:
        What was (or, with ``dry_run``, would be) written.
    """
    plan = plan_bump(root, name, part, date, allow_empty=allow_empty)
    if not dry_run:
        for path, text in plan.files.items():
            path.write_text(text, encoding="utf-8")
    return plan


def _is_pin(operator: str, version: str) -> bool:
    """Whether a specifier clause pins one version (``==0.1.0``, ``===0.1.0``) rather than a range (``==0.1.*``)."""
    return operator == "===" or (operator == "==" and not version.endswith(".*"))


def check(root: Path) -> list[str]:
    """Every problem that would break an install or a release; CI fails on any.

    * each sibling requirement admits the sibling's current version;
    * siblings are declared as ranges with an upper bound, never pinned with ``==``;
    * each changelog is well formed and its latest release is the current version.

    Args:
        root: Repository root.

    Returns:
        One message per problem (empty when all is well).
    """
    dists = discover(root)
    problems: list[str] = []
    for dist in dists.values():
        where = _relative(dist.pyproject, root)
        for requirement in dist.requirements:
            sibling = dists.get(requirement.key)
            if sibling is None:
                continue
            specifier = requirement.parsed.specifier
            operators = {spec.operator for spec in specifier}
            example = f"{sibling.name}{compatible_range(sibling.version)}"
            if not operators:
                problems.append(f"{where}: {requirement.raw!r} has no version range; declare one like {example!r}")
            elif any(_is_pin(spec.operator, spec.version) for spec in specifier):
                problems.append(f"{where}: {requirement.raw!r} pins a sibling; declare a range like {example!r}")
            elif not operators & {"<", "<=", "~=", "=="}:
                problems.append(f"{where}: {requirement.raw!r} has no upper bound; declare a range like {example!r}")
            if not specifier.contains(sibling.version, prereleases=True):
                problems.append(
                    f"{where}: {requirement.raw!r} does not admit {sibling.name} {sibling.version} (the version in "
                    f"{_relative(sibling.about, root)}); use {example!r} or release a matching {sibling.name}"
                )
        problems.extend(changelog_problems(dist, root))
    return problems


def build(root: Path, name: str, out: Path | None = None) -> list[Path]:
    """Build the wheel and sdist of one distribution with ``hatch build``.

    Args:
        root: Repository root.
        name: The distribution.
        out: Output folder (default ``<root>/dist``).

    Returns:
        The wheel and the sdist.

    Raises:
        ReleaseError: Unknown distribution, a version with no release heading in the changelog, hatch missing, or a
            failed build.
    """
    dist = lookup(discover(root), name)
    changelog = parse_changelog(dist.changelog.read_text(encoding="utf-8")) if dist.changelog.is_file() else None
    if changelog is None or dist.version not in changelog.releases:
        raise ReleaseError(
            f"{dist.name} {dist.version} has no '## {dist.version}' heading in {_relative(dist.changelog, root)}; "
            f"release it first: python tools/release.py bump {dist.name} ..."
        )
    hatch = shutil.which("hatch")
    if hatch is None:
        raise ReleaseError("`hatch` is not on PATH; install it (pipx install hatch) to build")
    out = (out if out is not None else root / "dist").resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Run hatch as from a plain shell: inside `hatch run`/`hatch test`, HATCH_ENV_ACTIVE names that environment and
    # `hatch build` then refuses with "Environment ... is not a builder environment".
    env = {key: value for key, value in os.environ.items() if key != "HATCH_ENV_ACTIVE"}
    completed = subprocess.run(
        [hatch, "build", "-t", "wheel", "-t", "sdist", str(out)], cwd=dist.folder, check=False, text=True, env=env
    )
    if completed.returncode != 0:
        raise ReleaseError(f"`hatch build` failed in {dist.folder} (exit {completed.returncode})")
    stem = f"{re.sub(r'[-_.]+', '_', dist.name).lower()}-{dist.version}"
    wheels = sorted(out.glob(f"{stem}-*.whl"))
    sdist = out / f"{stem}.tar.gz"
    if not wheels or not sdist.is_file():
        raise ReleaseError(f"`hatch build` did not write {stem}-*.whl and {stem}.tar.gz into {out}")
    return [*wheels, sdist]


# --------------------------------------------------------------------------------------------------------------------
# Command line


def _print_list(root: Path) -> int:
    dists = sorted(discover(root).values(), key=lambda d: (d.folder.parent.name != "packages", d.name))
    width = max(len(d.name) for d in dists)
    for dist in dists:
        print(f"{dist.name:<{width}}  {dist.version!s:<8}  {_relative(dist.folder, root)}")
    return 0


def _print_check(root: Path) -> int:
    problems = check(root)
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"ok: {len(discover(root))} distributions; every sibling range admits the sibling's version")
    return 0


def _print_bump(plan: BumpPlan, root: Path, *, dry_run: bool) -> int:
    dist, version = plan.dist, plan.new_version
    verb = "would update" if dry_run else "updated"
    print(f"{dist.name}: {dist.version} -> {version}{' (dry run: nothing written)' if dry_run else ''}")
    print(f"  {verb} {_relative(dist.about, root)}")
    print(f"  {verb} {_relative(dist.changelog, root)}: {plan.entries} entry line(s) under '## {version} - ...'")
    if plan.range_changes:
        print(f"Dependants whose range no longer admitted {dist.name} {version} ({verb}; each needs its own release):")
        for change in plan.range_changes:
            where = _relative(change.dependant.pyproject, root)
            print(f"  {change.dependant.name}: {change.old} -> {change.new}  ({where})")
        requirement = f"{dist.name}{compatible_range(version)}"
        print(f"  Note it in each one's CHANGELOG under '{UNRELEASED_HEADING}', e.g. \"- Require {requirement}.\"")
    else:
        print(f"No dependant needed a new range for {dist.name} {version}.")
    print("Next:")
    print("  git diff                      # review the version, the changelog and any ranges")
    print(f'  git commit -am "{dist.name} {version}"')
    print(f'  git tag -a {dist.tag(version)} -m "{dist.name} {version}"')
    print(f"  python tools/release.py build {dist.name}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="repository root (default: this repo)")
    parser = argparse.ArgumentParser(
        prog="release.py", description="Versions, changelogs, sibling ranges and builds of the seg distributions."
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="repository root (default: this repo)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="each distribution with its version and folder")
    commands.add_parser("check", parents=[common], help="every sibling range admits the sibling's version (CI)")
    bump_parser = commands.add_parser("bump", parents=[common], help="bump a version and release its changelog")
    bump_parser.add_argument("dist", help="distribution, e.g. seg-eval")
    bump_parser.add_argument("part", help="major, minor, patch or an explicit X.Y.Z")
    bump_parser.add_argument(
        "--date", type=datetime.date.fromisoformat, default=None, help="release date YYYY-MM-DD (default: today)"
    )
    bump_parser.add_argument("--allow-empty", action="store_true", help="release with no Unreleased entries")
    bump_parser.add_argument("--dry-run", action="store_true", help="report the changes without writing them")
    build_parser = commands.add_parser("build", parents=[common], help="build one distribution's wheel and sdist")
    build_parser.add_argument("dist", help="distribution, e.g. seg-eval")
    build_parser.add_argument("--out", type=Path, default=None, help="output folder (default: <root>/dist)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on a refusal or a failed check (argparse exits 2 on a usage error).
    """
    args = _build_parser().parse_args(argv)
    root: Path = args.root.resolve()
    try:
        if args.command == "list":
            return _print_list(root)
        if args.command == "check":
            return _print_check(root)
        if args.command == "bump":
            date = args.date or datetime.date.today()
            plan = bump(root, args.dist, args.part, date, allow_empty=args.allow_empty, dry_run=args.dry_run)
            return _print_bump(plan, root, dry_run=args.dry_run)
        artifacts = build(root, args.dist, args.out)
        print("Built:")
        for artifact in artifacts:
            print(f"  {artifact}")
        print(f"Upload: python -m twine upload {' '.join(str(artifact) for artifact in artifacts)}")
        return 0
    except ReleaseError as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
