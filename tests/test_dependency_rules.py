"""The dependency rules of docs/architecture.md hold, and the checker catches each kind of violation."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import ModuleType

import pytest


def test_repository_follows_the_rules(deps: ModuleType, repo_root: Path) -> None:
    assert deps.check(repo_root) == []


def test_all_ten_distributions_are_discovered(deps: ModuleType, repo_root: Path) -> None:
    names = {d.name for d in deps.discover(repo_root)}
    assert names == {
        "seg-core", "seg-models", "seg-losses", "seg-retrieval", "seg-coseg", "seg-eval", "seg-train",
        "seg-trainers", "seg-zoo", "seg-cli",
    }  # fmt: skip


def test_architecture_doc_shows_the_current_graph(deps: ModuleType, repo_root: Path) -> None:
    text = (repo_root / "docs" / "architecture.md").read_text()
    assert deps.mermaid(repo_root) in text, "run `python tools/deps.py graph --write`"


def _dist(root: Path, kind: str, name: str, deps_list: list[str], files: dict[str, str], *, extras: str = "") -> None:
    imp = name.replace("-", "_")
    folder = root / ("packages" if kind == "package" else "apps") / name
    (folder / "src" / imp).mkdir(parents=True)
    requirements = ", ".join(f'"{d}"' for d in deps_list)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1.0"\ndependencies = [{requirements}]\n{extras}'
    )
    (folder / "src" / imp / "__init__.py").write_text("")
    for file, code in files.items():
        (folder / "src" / imp / file).write_text(textwrap.dedent(code))


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    _dist(tmp_path, "package", "seg-core", ["pydantic"], {"a.py": "import pydantic\n"})
    _dist(
        tmp_path,
        "package",
        "seg-models",
        ["seg-core==0.1.0", "torch"],
        {
            "uses_app.py": "import seg_zoo\n",
            "undeclared_sibling.py": "from seg_eval import x\n",
            "undeclared_third_party.py": "import numpy\n",
            "extra_at_module_level.py": "import safetensors\n",
            "extra_lazily.py": "def f():\n    import safetensors\n",
            "guarded.py": "try:\n    import safetensors\nexcept ImportError:\n    pass\n",
            "typing_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import numpy\n",
        },
        extras='[project.optional-dependencies]\nio = ["safetensors"]\n',
    )
    _dist(tmp_path, "package", "seg-eval", ["seg-core>=0.1,<0.2", "seg-models>=0.1,<0.2"], {})
    _dist(tmp_path, "app", "seg-zoo", ["seg-core>=0.1,<0.2", "seg-cli>=0.1,<0.2"], {})
    _dist(tmp_path, "app", "seg-cli", ["seg-zoo>=0.1,<0.2"], {})
    return tmp_path


def test_checker_reports_each_violation(deps: ModuleType, broken_tree: Path) -> None:
    problems = "\n".join(deps.check(broken_tree))
    assert "seg-models: sibling seg-core must be a range" in problems
    assert "package seg-models imports app seg-zoo" in problems
    assert "seg-models imports seg-eval without declaring it" in problems
    assert "undeclared_third_party.py:1: seg-models imports numpy" in problems
    assert "extra_at_module_level.py:1" in problems
    assert "only an extra: import it lazily" in problems
    assert "seg-eval: may not depend on seg-models" in problems
    assert "dependency cycle" in problems
    assert "seg-cli -> seg-zoo -> seg-cli" in problems or "seg-zoo -> seg-cli -> seg-zoo" in problems
    for fine in ("extra_lazily.py", "guarded.py", "typing_only.py", "seg_core"):
        assert fine not in problems


def test_closure_follows_siblings_transitively(deps: ModuleType, repo_root: Path) -> None:
    dists = {d.name: d for d in deps.discover(repo_root)}
    zoo = [d.name for d in deps.closure(dists["seg-zoo"], list(dists.values()))]
    assert set(zoo) == {"seg-zoo", "seg-core", "seg-models", "seg-eval", "seg-retrieval"}
    core = [d.name for d in deps.closure(dists["seg-core"], list(dists.values()))]
    assert core == ["seg-core"]
