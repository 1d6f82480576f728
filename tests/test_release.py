"""tools/release.py on a copy of the repository's release metadata (pyprojects, __about__.py, CHANGELOGs)."""

import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "release.py"
DATE = "2026-11-23"
ALL_TEN = {
    "seg-core",
    "seg-models",
    "seg-losses",
    "seg-retrieval",
    "seg-coseg",
    "seg-eval",
    "seg-train",
    "seg-trainers",
    "seg-zoo",
    "seg-cli",
}


@pytest.fixture(scope="module")
def tool() -> Iterator[ModuleType]:
    """tools/release.py loaded as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("seg_release_tool", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class body runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def release(tool: ModuleType, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the tool in-process: ``release(root, "bump", ...)`` gives ``(exit code, stdout, stderr)``."""

    def run(root: Path, *args: str) -> tuple[int, str, str]:
        code = tool.main(["--root", str(root), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _version_file(pyproject: Path) -> Path:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    version_path: str = data["tool"]["hatch"]["version"]["path"]
    return pyproject.parent / version_path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The release metadata of every distribution of this repository, copied into a fresh root, with every
    ``## Unreleased`` section emptied (the state right after a release), so the tests do not depend on which
    changes are pending in the real changelogs."""
    root = tmp_path / "repo"
    for pyproject in [*REPO.glob("packages/*/pyproject.toml"), *REPO.glob("apps/*/pyproject.toml")]:
        for source in (pyproject, pyproject.parent / "CHANGELOG.md", _version_file(pyproject)):
            target = root / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        changelog = root / (pyproject.parent / "CHANGELOG.md").relative_to(REPO)
        changelog.write_text(_without_unreleased_entries(changelog.read_text(encoding="utf-8")), encoding="utf-8")
    return root


def _without_unreleased_entries(text: str) -> str:
    """``text`` with nothing between ``## Unreleased`` and the next ``## `` heading (or the end)."""
    start = text.index("## Unreleased\n") + len("## Unreleased\n")
    following = text.find("\n## ", start)
    rest = text[following + 1 :] if following != -1 else ""
    return text[:start] + ("\n" + rest if rest else "")


def folder(root: Path, dist: str) -> Path:
    """The folder of ``dist`` under ``root`` (packages/ or apps/)."""
    matches = [path for path in (root / "packages" / dist, root / "apps" / dist) if path.is_dir()]
    assert len(matches) == 1, dist
    return matches[0]


def version_of(root: Path, dist: str) -> tuple[int, int, int]:
    """The version in ``dist``'s __about__.py, read independently of the tool."""
    text = _version_file(folder(root, dist) / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "(\d+)\.(\d+)\.(\d+)"$', text, re.MULTILINE)
    assert match is not None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def dependencies(root: Path, dist: str) -> list[str]:
    """``[project] dependencies`` of ``dist``."""
    data = tomllib.loads((folder(root, dist) / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["dependencies"])


def dependants_of(root: Path, dist: str) -> set[str]:
    """Distributions whose dependencies name ``dist``."""
    found = set()
    for pyproject in [*root.glob("packages/*/pyproject.toml"), *root.glob("apps/*/pyproject.toml")]:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        if any(re.match(rf"{dist}\b(?!-)", requirement) for requirement in data["project"]["dependencies"]):
            found.add(data["project"]["name"])
    return found


def add_entries(root: Path, dist: str, *entries: str) -> None:
    """Write ``entries`` under ``## Unreleased`` of ``dist``'s changelog."""
    changelog = folder(root, dist) / "CHANGELOG.md"
    text = changelog.read_text(encoding="utf-8")
    assert text.count("## Unreleased\n") == 1
    changelog.write_text(text.replace("## Unreleased\n", "## Unreleased\n\n" + "\n".join(entries) + "\n", 1))


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` with its bytes."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def changed_lines(before: bytes, after: bytes) -> list[tuple[str, str]]:
    """Pairs of differing lines of two versions of a file with the same number of lines."""
    old, new = before.decode().splitlines(), after.decode().splitlines()
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


# --------------------------------------------------------------------------------------------------------------------
# list and check on the real metadata


def test_list_shows_every_distribution_with_version_and_folder(repo: Path, release: Run) -> None:
    code, out, _ = release(repo, "list")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(rows) == ALL_TEN
    for dist, (version, path) in rows.items():
        assert version == ".".join(map(str, version_of(repo, dist)))
        assert (repo / path) == folder(repo, dist)


def test_check_passes_on_the_repository(repo: Path, release: Run) -> None:
    code, out, err = release(repo, "check")
    assert (code, err) == (0, ""), err
    assert "ok: 10 distributions" in out


def test_check_fails_on_a_range_that_excludes_the_sibling(repo: Path, release: Run) -> None:
    pyproject = folder(repo, "seg-models") / "pyproject.toml"
    core = next(req for req in dependencies(repo, "seg-models") if req.startswith("seg-core"))
    pyproject.write_text(pyproject.read_text().replace(f'"{core}"', '"seg-core>=9.0,<10"'))
    code, _, err = release(repo, "check")
    assert code == 1
    assert "1 problem(s)" in err
    assert "packages/seg-models/pyproject.toml: 'seg-core>=9.0,<10' does not admit seg-core" in err


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("seg-core==0.1.0", "pins a sibling"),
        ("seg-core", "has no version range"),
        ("seg-core>=0.1", "has no upper bound"),
    ],
)
def test_check_refuses_pins_and_open_ranges(repo: Path, release: Run, requirement: str, message: str) -> None:
    pyproject = folder(repo, "seg-eval") / "pyproject.toml"
    core = next(req for req in dependencies(repo, "seg-eval") if req.startswith("seg-core"))
    major, minor, patch = version_of(repo, "seg-core")
    requirement = requirement.replace("0.1.0", f"{major}.{minor}.{patch}").replace("0.1", f"{major}.{minor}")
    pyproject.write_text(pyproject.read_text().replace(f'"{core}"', f'"{requirement}"'))
    code, _, err = release(repo, "check")
    assert code == 1
    assert message in err
    assert "seg-eval/pyproject.toml" in err


def test_check_reports_a_changelog_that_disagrees_with_the_version(repo: Path, release: Run) -> None:
    about = _version_file(folder(repo, "seg-zoo") / "pyproject.toml")
    about.write_text(re.sub(r'__version__ = ".*"', '__version__ = "7.0.0"', about.read_text()))
    code, _, err = release(repo, "check")
    assert code == 1
    assert "apps/seg-zoo/CHANGELOG.md: the latest release heading is" in err
    assert "says 7.0.0" in err


# --------------------------------------------------------------------------------------------------------------------
# bump on the real metadata


def test_bump_patch_releases_the_changelog_and_touches_no_dependant(repo: Path, release: Run) -> None:
    major, minor, patch = version_of(repo, "seg-eval")
    old, new = f"{major}.{minor}.{patch}", f"{major}.{minor}.{patch + 1}"
    add_entries(repo, "seg-eval", "- Fix the mIoU of absent classes.", "- Faster COCO reading.")
    before = snapshot(repo)

    code, out, err = release(repo, "bump", "seg-eval", "patch", "--date", DATE)

    assert (code, err) == (0, "")
    assert version_of(repo, "seg-eval") == (major, minor, patch + 1)
    changelog = (folder(repo, "seg-eval") / "CHANGELOG.md").read_text()
    expected = (
        f"## Unreleased\n\n## {new} - {DATE}\n\n- Fix the mIoU of absent classes.\n- Faster COCO reading.\n\n## {old}"
    )
    assert expected in changelog
    assert changelog.count("## Unreleased") == 1
    changed = {path.relative_to(repo).as_posix() for path, data in snapshot(repo).items() if before[path] != data}
    assert changed == {"packages/seg-eval/CHANGELOG.md", "packages/seg-eval/src/seg_eval/__about__.py"}
    assert f"seg-eval: {old} -> {new}" in out
    assert "No dependant needed a new range" in out
    assert f'git tag -a seg-eval-v{new} -m "seg-eval {new}"' in out
    assert release(repo, "check")[0] == 0


def test_bump_minor_widens_every_dependant_range_and_only_that(repo: Path, release: Run) -> None:
    major, minor, _ = version_of(repo, "seg-core")
    assert major == 0, "this test encodes the 0.x policy; update it once seg-core reaches 1.0"
    new_range = f"seg-core>=0.{minor + 1},<0.{minor + 2}"
    dependants = dependants_of(repo, "seg-core")
    assert len(dependants) == 9  # every other distribution builds on seg-core
    add_entries(repo, "seg-core", "- Breaking: rename ConceptSet.names.")
    before = snapshot(repo)

    code, out, _ = release(repo, "bump", "seg-core", "minor", "--date", DATE)

    assert code == 0
    assert version_of(repo, "seg-core") == (0, minor + 1, 0)
    for dist in dependants:
        pyproject = folder(repo, dist) / "pyproject.toml"
        diff = changed_lines(before[pyproject], pyproject.read_bytes())
        assert len(diff) == 1, (dist, diff)  # one line: that requirement, formatting kept
        assert diff[0][1] == f'  "{new_range}",'
        assert f"  {dist}: seg-core>=0.{minor},<0.{minor + 1} -> {new_range}" in out
    core_pyproject = folder(repo, "seg-core") / "pyproject.toml"
    assert core_pyproject.read_bytes() == before[core_pyproject]
    assert "each needs its own release" in out
    assert release(repo, "check")[0] == 0


def test_bump_explicit_version_of_a_leaf_dependency(repo: Path, release: Run) -> None:
    major, minor, _ = version_of(repo, "seg-zoo")
    target = f"{major}.{minor + 2}.0"
    add_entries(repo, "seg-zoo", "- Registry.")
    seg_cli_before = dependencies(repo, "seg-cli")

    code, out, _ = release(repo, "bump", "seg-zoo", target, "--date", DATE)

    assert code == 0
    assert version_of(repo, "seg-zoo") == (major, minor + 2, 0)
    after = dependencies(repo, "seg-cli")
    assert [a for a, b in zip(seg_cli_before, after, strict=True) if a != b] == [
        f"seg-zoo>={major}.{minor},<{major}.{minor + 1}"
    ]
    assert f"seg-zoo>={major}.{minor + 2},<{major}.{minor + 3}" in after
    assert f"seg-zoo-v{target}" in out


def test_dry_run_writes_nothing(repo: Path, release: Run) -> None:
    add_entries(repo, "seg-core", "- Something.")
    before = snapshot(repo)
    code, out, _ = release(repo, "bump", "seg-core", "major", "--dry-run")
    assert code == 0
    assert "dry run: nothing written" in out
    assert "would update" in out
    assert snapshot(repo) == before


def test_allow_empty_releases_an_empty_section(repo: Path, release: Run) -> None:
    changelog = folder(repo, "seg-train") / "CHANGELOG.md"
    head, _, rest = changelog.read_text().partition("## Unreleased\n")
    # Empty the Unreleased section (the real one may hold entries): this test is about releasing nothing.
    changelog.write_text(head + "## Unreleased\n\n" + rest[rest.index("## ") :])
    code, _, _ = release(repo, "bump", "seg-train", "patch", "--allow-empty", "--date", DATE)
    assert code == 0
    major, minor, patch = version_of(repo, "seg-train")
    text = (folder(repo, "seg-train") / "CHANGELOG.md").read_text()
    assert f"## Unreleased\n\n## {major}.{minor}.{patch} - {DATE}\n\n## {major}.{minor}.{patch - 1}" in text


# --------------------------------------------------------------------------------------------------------------------
# refusals: a clear message, exit 1, nothing written


def _break_changelog(root: Path, dist: str, edit: Callable[[str], str]) -> None:
    changelog = folder(root, dist) / "CHANGELOG.md"
    changelog.write_text(edit(changelog.read_text()))


REFUSALS: list[tuple[str, list[str], Callable[[Path], None] | None, list[str]]] = [  # case, args, prepare, messages
    (
        "unknown dist",
        ["seg-nothing", "patch"],
        None,
        ["unknown distribution 'seg-nothing'", "known: seg-cli, seg-core"],
    ),
    ("same version", ["seg-eval", "{current}"], None, ["is not greater", "Choose a higher version"]),
    ("lower version", ["seg-eval", "0.0.1"], None, ["0.0.1 is not greater"]),
    ("bad part", ["seg-eval", "huge"], None, ["'huge' is neither major, minor, patch nor a version X.Y.Z"]),
    ("not X.Y.Z", ["seg-eval", "1.0"], None, ["'1.0' is neither"]),
    (
        "no Unreleased",
        ["seg-eval", "patch"],
        lambda root: _break_changelog(root, "seg-eval", lambda t: t.replace("## Unreleased", "## Next")),
        ["changelog must be fixed first", "no '## Unreleased' section", "'## Next' is not a release heading"],
    ),
    (
        "two Unreleased",
        ["seg-eval", "patch"],
        lambda root: _break_changelog(root, "seg-eval", lambda t: t + "\n## Unreleased\n\n- late\n"),
        ["'## Unreleased' appears 2 times"],
    ),
    (
        "Unreleased not first",
        ["seg-eval", "patch"],
        lambda root: _break_changelog(
            root, "seg-eval", lambda t: t.replace("## Unreleased", "## 0.0.9\n\n## Unreleased")
        ),
        ["'## 0.0.9' is above '## Unreleased'"],
    ),
    (
        "bad date",
        ["seg-eval", "patch"],
        lambda root: _break_changelog(root, "seg-eval", lambda t: t + "\n## 0.0.1 - 2026-13-45\n"),
        ["'2026-13-45' is not a date"],
    ),
    ("empty Unreleased", ["seg-eval", "patch"], None, ["'## Unreleased' has no entries", "--allow-empty"]),
]


Refusal = tuple[str, list[str], Callable[[Path], None] | None, list[str]]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal[0] for refusal in REFUSALS])
def test_bump_refusals(repo: Path, release: Run, refusal: Refusal) -> None:
    case, args, prepare, messages = refusal
    if case != "empty Unreleased":
        add_entries(repo, "seg-eval", "- A change.")
    if prepare is not None:
        prepare(repo)
    current = ".".join(map(str, version_of(repo, "seg-eval")))
    before = snapshot(repo)
    code, out, err = release(repo, "bump", *(arg.format(current=current) for arg in args))
    assert code == 1
    assert out == ""
    assert err.startswith("release: error: ")
    for message in messages:
        assert message in err
    assert snapshot(repo) == before


# --------------------------------------------------------------------------------------------------------------------
# a controlled toy repository: the >=1.0 policy, extras and markers, comments


def write_toy(root: Path, name: str, version: str, dependencies: list[str], extras: str = "") -> Path:
    """A minimal distribution ``packages/<name>`` with a pyproject, an __about__.py and a changelog."""
    base = root / "packages" / name
    module = name.replace("-", "_")
    (base / "src" / module).mkdir(parents=True)
    listed = "".join(f'  "{dep}",  # why: needed\n' for dep in dependencies)
    (base / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{name}"
            dynamic = ["version"]
            dependencies = [
            {{listed}}]
            {{extras}}
            [tool.hatch.version]
            path = "src/{module}/__about__.py"
            """
        ).format(listed=listed, extras=extras)
    )
    (base / "src" / module / "__about__.py").write_text(f'"""Version."""\n\n__version__ = "{version}"\n')
    (base / "CHANGELOG.md").write_text(f"# {name}\n\n## Unreleased\n\n- A change.\n\n## {version} - 2026-01-01\n")
    return base


def test_major_is_breaking_from_1_0_and_extras_and_markers_survive(tmp_path: Path, release: Run) -> None:
    write_toy(tmp_path, "toy-core", "1.2.3", [])
    marker_requirement = 'toy-core[fast]>=1.2,<2; python_version >= "3.11"'
    app = write_toy(
        tmp_path,
        "toy-app",
        "0.4.0",
        ["toy-core>=1.2,<2", "numpy>=1.26"],
        extras=f"[project.optional-dependencies]\nfast = ['{marker_requirement}']\n",
    )
    before = (app / "pyproject.toml").read_text()

    assert release(tmp_path, "bump", "toy-core", "minor", "--date", DATE)[0] == 0  # 1.3.0 fits >=1.2,<2
    assert (app / "pyproject.toml").read_text() == before
    (tmp_path / "packages" / "toy-core" / "CHANGELOG.md").write_text(
        "# toy-core\n\n## Unreleased\n\n- Breaking.\n\n## 1.3.0 - 2026-11-23\n"
    )

    code, out, _ = release(tmp_path, "bump", "toy-core", "major", "--date", DATE)

    assert code == 0
    after = (app / "pyproject.toml").read_text()
    assert '  "toy-core>=2.0,<3",  # why: needed\n' in after
    assert "fast = ['toy-core[fast]>=2.0,<3; python_version >= \"3.11\"']" in after
    assert '"numpy>=1.26",  # why: needed' in after
    assert "toy-app: toy-core>=1.2,<2 -> toy-core>=2.0,<3" in out
    assert release(tmp_path, "check")[0] == 0


def test_no_distributions_is_a_clear_error(tmp_path: Path, release: Run) -> None:
    code, _, err = release(tmp_path, "list")
    assert code == 1
    assert "no distributions under" in err
    assert "--root" in err


def test_script_runs_standalone(repo: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(TOOL), "list", "--root", str(repo)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "seg-core" in completed.stdout


def test_usage_errors_exit_2(repo: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(TOOL), "--root", str(repo), "bump", "seg-core"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "part" in completed.stderr


# --------------------------------------------------------------------------------------------------------------------
# build (about 2 s: it runs `hatch build` on one real distribution)


def test_build_refuses_an_unreleased_version(tmp_path: Path, release: Run) -> None:
    base = write_toy(tmp_path, "toy-core", "1.0.0", [])
    (base / "CHANGELOG.md").write_text("# toy-core\n\n## Unreleased\n\n- A change.\n")
    code, _, err = release(tmp_path, "build", "toy-core")
    assert code == 1
    assert "has no '## 1.0.0' heading" in err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("hatch") is None, reason="`hatch` is not on PATH")
def test_build_writes_the_wheel_and_sdist_of_one_distribution(tmp_path: Path, release: Run) -> None:
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "packages" / "seg-core", root / "packages" / "seg-core", ignore=ignore)
    version = ".".join(map(str, version_of(root, "seg-core")))

    code, out, err = release(root, "build", "seg-core", "--out", str(tmp_path / "out"))

    assert code == 0, err
    built = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert built == [f"seg_core-{version}-py3-none-any.whl", f"seg_core-{version}.tar.gz"]
    assert "python -m twine upload" in out
