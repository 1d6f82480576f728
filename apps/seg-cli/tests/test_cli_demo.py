"""``seg demo``: the status page built by probing the installed packages, then every available method run end to
end on a small world with results.json and report.html."""

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seg_cli import probes
from seg_cli.methods import METHOD_NAMES, METHODS
from seg_cli.probes import Availability, MethodProbes, Piece, Probe, run_probe


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package ``seg_fake_probe`` with a ready, a skeleton, a broken and a namespace-like submodule."""
    root = tmp_path / "seg_fake_probe"
    (root / "namespace_like").mkdir(parents=True)
    (root / "__init__.py").write_text('"""Fake."""\n')
    (root / "ready.py").write_text("__all__ = ['segment']\n\ndef segment() -> None: ...\n")
    (root / "skeleton.py").write_text('"""Skeleton: not implemented yet."""\n\n__all__: list[str] = []\n')
    (root / "no_all.py").write_text("def helper() -> None: ...\n")
    (root / "broken.py").write_text("import seg_fake_probe_missing_dependency  # noqa\n")
    (root / "namespace_like" / "x.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "seg_fake_probe"


@pytest.mark.parametrize(
    ("module", "attribute", "expected"),
    [
        ("ready", None, Availability.AVAILABLE),
        ("ready", "segment", Availability.AVAILABLE),
        ("ready", "train", Availability.MISSING),
        ("no_all", None, Availability.AVAILABLE),
        ("skeleton", None, Availability.MISSING),
        ("namespace_like", None, Availability.MISSING),
        ("absent", None, Availability.MISSING),
        ("broken", None, Availability.BROKEN),
    ],
)
def test_probe_outcomes(fake_package: str, module: str, attribute: str | None, expected: Availability) -> None:
    assert run_probe(Probe(f"{fake_package}.{module}", attribute)).availability is expected


def test_probe_of_an_uninstalled_package_is_missing() -> None:
    result = run_probe(Probe("seg_no_such_package.world"))
    assert result.availability is Availability.MISSING
    assert "seg_no_such_package is not installed" in result.detail


def test_broken_probe_reports_the_error(fake_package: str) -> None:
    result = run_probe(Probe(f"{fake_package}.broken"))
    assert "ModuleNotFoundError" in result.detail
    assert "seg_fake_probe_missing_dependency" in result.detail


def test_every_method_has_probes() -> None:
    assert set(probes.METHOD_PROBES) == set(METHOD_NAMES)


def test_demo_runs_every_available_method_and_writes_the_report(
    run_seg: Callable[..., Any], random_clip: str, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    result = run_seg("demo", "--out", str(out), "--num", "4", "--model", random_clip)
    assert result.exit_code == 0, result.text
    for method in METHODS:
        assert f" {method.display_name} {method.name} " in result.text
    for piece in probes.PIECES:
        assert piece.label in result.text
    records = json.loads((out / "results.json").read_text())
    methods = [(r["method"], r["protocol"]["name"]) for r in records]
    assert methods == [
        *(
            (m, "synthetic")
            for m in ("maskclip", "dense-clip", "reco", "reco-plus", "reclip", "groupvit", "pgseg", "simcon")
        ),
        # ZUTIS predicts a "background" class: it and its baseline run under the object protocol.
        ("maskclip", "synthetic-object"),
        ("zutis", "synthetic-object"),
    ]
    assert all(r["num_images"] == 4 for r in records)
    assert "instance_metrics" in records[-1]
    assert "instance_metrics" in records[-2]  # MaskCLIP's connected components: ZUTIS's instance baseline
    assert "* protocol synthetic-object" in result.text
    report = (out / "report.html").read_text()
    assert report.count("<img") == 4 * 12  # up to 6 images (4 here) x (image, ground truth, 10 rows)
    assert "data:image/png;base64," in report
    for record in records:
        assert f"{record['metrics']['mIoU']:.3f}" in report
        assert f"{record['metrics']['mIoU']:.3f}" in result.text
    assert (out / "world" / "world.json").is_file()


def test_demo_without_its_model_fails_clearly(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_seg("demo", "--out", str(tmp_path / "demo"), "--num", "4", "--model", f"local-dir:{missing}")
    assert result.exit_code == 1
    assert "nowhere" in result.text
    assert not (tmp_path / "demo" / "results.json").exists()


def test_demo_reflects_what_is_installed(
    run_seg: Callable[..., Any], fake_package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        probes,
        "PIECES",
        (
            Piece("ready piece", "seg-fake", Probe(f"{fake_package}.ready")),
            Piece("skeleton piece", "seg-fake", Probe(f"{fake_package}.skeleton")),
            Piece("broken piece", "seg-fake", Probe(f"{fake_package}.broken")),
        ),
    )
    monkeypatch.setitem(
        probes.METHOD_PROBES, "zutis", MethodProbes(Probe(f"{fake_package}.ready"), Probe(f"{fake_package}.skeleton"))
    )
    text = run_seg("demo", "--out", "unused", "--model", "local-dir:/no/such/model").text
    assert f"ready piece seg-fake available {fake_package}.ready" in text
    assert f"skeleton piece seg-fake not yet {fake_package}.skeleton" in text
    assert "broken piece seg-fake broken (ModuleNotFoundError" in text
    assert "ZUTIS zutis available not yet" in text
    assert "MaskCLIP maskclip" in text
    assert textwrap.dedent("n/a (training-free)") in text
