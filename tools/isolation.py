"""Prove that every distribution installs, imports and passes its own tests with only what it declares.

For each of the ten distributions (packages and apps):

1. build its wheel (``pip wheel --no-deps --no-build-isolation``, hatchling backend);
2. create a fresh virtual environment with no packages;
3. put one shared *third-party layer* on its path (a ``.pth`` file): a virtual environment holding every
   third-party requirement of every distribution plus the test tools, and **no seg distribution**. torch alone
   is 5.5 GB; sharing it keeps ten environments cheap;
4. install the distribution's wheel and the wheels of the siblings it declares (transitively), nothing else;
5. ``pip check`` (declared requirements, sibling ranges), import it (from the wheel, not the source tree), and
   run its own ``tests/`` there.

An undeclared sibling import fails at step 5, because no other seg code is on the path. Undeclared
*third-party* imports cannot fail here (the layer has them all), so ``tools/deps.py check`` checks those
statically. Usage::

    python tools/isolation.py [--work DIR] [--only seg-core seg-eval] [--no-tests]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deps  # a sibling script

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """What happened to one distribution."""

    name: str
    ok: bool = False
    step: str = ""
    seconds: float = 0.0
    detail: str = ""


def run(cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, quiet: bool = True) -> str:
    """Run a command; raise with its output on failure."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=quiet, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "") if quiet else ""
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {result.returncode}\n{output[-4000:]}")
    return result.stdout or ""


def venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def site_packages(env_dir: Path) -> Path:
    purelib = sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    return Path(purelib)


def test_requirements(root: Path) -> list[str]:
    """Test tools every distribution's tests may use: the hatch-test env's extra dependencies, plus pytest."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    extra = config["tool"]["hatch"]["envs"]["hatch-test"].get("extra-dependencies", [])
    return ["pytest>=8", *extra]


def build_wheels(dists: list[deps.Dist], layer: Path, out: Path) -> dict[str, Path]:
    """One wheel per distribution, built with the layer's hatchling."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for dist in dists:
        run([str(venv_python(layer)), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(out), str(dist.path)])  # fmt: skip
    wheels: dict[str, Path] = {}
    for wheel in out.glob("*.whl"):
        name = wheel.name.split("-")[0].replace("_", "-")
        wheels[name] = wheel
    missing = {d.name for d in dists} - set(wheels)
    if missing:
        raise RuntimeError(f"no wheel built for {sorted(missing)}")
    return wheels


def ensure_layer(layer: Path, dists: list[deps.Dist], root: Path, wheel_dir: Path) -> None:
    """Create (or reuse, when its inputs did not change) the shared third-party layer."""
    inputs = "\n".join(
        [sys.version, *test_requirements(root), *((d.path / "pyproject.toml").read_text() for d in dists)]
    )
    stamp = layer / "seg-layer.sha256"
    digest = hashlib.sha256(inputs.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        print(f"layer: reusing {layer}")
        return
    if layer.exists():
        shutil.rmtree(layer)
    print(f"layer: creating {layer} (third-party requirements of all distributions + test tools)")
    venv.EnvBuilder(with_pip=True, clear=True).create(layer)
    py = str(venv_python(layer))
    run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([py, "-m", "pip", "install", "-q", "hatchling>=1.26", "packaging"])
    wheels = build_wheels(dists, layer, wheel_dir)
    # Every extra's requirements, so lazily imported extras are testable; the gpu extra needs CUDA and stays out.
    extra_reqs = [str(r) for d in dists for name, reqs in d.extras.items() if name != "gpu" for r in reqs]
    extra_reqs = [r for r in extra_reqs if not r.startswith("seg-")]
    run([py, "-m", "pip", "install", "-qq", *map(str, wheels.values()), *extra_reqs, *test_requirements(root)],
        quiet=False)  # fmt: skip
    seg = [d.name for d in dists]
    run([py, "-m", "pip", "uninstall", "-y", "-q", *seg])
    stamp.write_text(digest)


def check_one(dist: deps.Dist, dists: list[deps.Dist], wheels: dict[str, Path], layer: Path, work: Path,
              *, tests: bool) -> Outcome:  # fmt: skip
    outcome = Outcome(dist.name)
    start = time.perf_counter()
    env_dir = work / "envs" / dist.name
    try:
        outcome.step = "venv"
        venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
        (site_packages(env_dir) / "seg_thirdparty_layer.pth").write_text(f"{site_packages(layer)}\n")
        outcome.step = "install"
        needed = deps.closure(dist, dists)
        run([str(venv_python(layer)), "-m", "pip", "--python", str(venv_python(env_dir)), "install", "-q",
             "--no-deps", "--no-index", *(str(wheels[d.name]) for d in needed)])  # fmt: skip
        outcome.step = "pip check"
        run([str(venv_python(env_dir)), "-m", "pip", "check"])
        outcome.step = "import"
        code = (
            f"import {dist.import_name} as m, sys; "
            f"assert m.__file__.startswith({str(env_dir)!r}), m.__file__; "
            f"others = sorted(k for k in sys.modules if k.startswith('seg_') and k.split('.')[0] not in "
            f"{sorted(d.import_name for d in needed)!r}); assert not others, others"
        )
        run([str(venv_python(env_dir)), "-c", code])
        if tests:
            outcome.step = "tests"
            env = dict(os.environ)
            env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
            env.pop("PYTHONPATH", None)
            output = run(
                [str(venv_python(env_dir)), "-m", "pytest", str(dist.path / "tests"), "-q", "-p", "no:cacheprovider",
                 "--rootdir", str(ROOT)],
                env=env,
            )  # fmt: skip
            outcome.detail = output.strip().splitlines()[-1] if output.strip() else ""
        outcome.ok = True
        outcome.step = "done"
    except RuntimeError as error:
        outcome.detail = str(error)
    outcome.seconds = time.perf_counter() - start
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".ci-work" / "isolation")
    parser.add_argument("--only", nargs="*", default=None, help="distribution names (default: all)")
    parser.add_argument("--no-tests", action="store_true", help="install and import only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    dists = deps.discover(ROOT)
    layer = args.work / "layer"
    wheel_dir = args.work / "wheels"
    ensure_layer(layer, dists, ROOT, wheel_dir)
    t0 = time.perf_counter()
    wheels = build_wheels(dists, layer, wheel_dir)
    print(f"wheels: {len(wheels)} built in {time.perf_counter() - t0:.1f}s")
    selected = [d for d in dists if args.only is None or d.name in set(args.only)]
    if args.only and len(selected) != len(set(args.only)):
        known = ", ".join(d.name for d in dists)
        parser.error(f"--only: unknown distribution among {args.only}; known: {known}")
    outcomes = []
    for dist in selected:
        outcome = check_one(dist, dists, wheels, layer, args.work, tests=not args.no_tests)
        outcomes.append(outcome)
        mark = "ok  " if outcome.ok else "FAIL"
        print(f"{mark} {dist.name:<14} {outcome.seconds:6.1f}s  {outcome.detail if outcome.ok else outcome.step}")
        if not outcome.ok:
            print(f"     {outcome.step} failed:\n{outcome.detail}")
    failed = [o for o in outcomes if not o.ok]
    total = time.perf_counter() - started
    print(f"isolation: {len(outcomes) - len(failed)}/{len(outcomes)} distributions passed in {total:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
