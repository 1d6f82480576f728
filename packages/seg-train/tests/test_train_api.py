"""The public API and the dependency rule: seg-train imports only what it declares."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import seg_train
from seg_train.reporting import format_log_line

SOURCE = Path(seg_train.__file__).parent
ALLOWED_TOP_LEVEL = {"seg_core", "seg_train", "torch", "safetensors", "tensorboard", "rich", "numpy"}


def test_every_exported_name_exists_and_is_documented() -> None:
    assert seg_train.__version__ == "0.1.0"
    for name in seg_train.__all__:
        exported = getattr(seg_train, name)
        if callable(exported) and name not in {"BatchesFactory", "StepFn", "StepResult"}:
            assert exported.__doc__, f"{name} has no docstring"


def test_imports_stay_inside_the_declared_dependencies() -> None:
    standard_library = set(sys.stdlib_module_names)
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in ALLOWED_TOP_LEVEL and top not in standard_library and top != "__future__":
                    offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_log_line_format() -> None:
    line = format_log_line(20, 100, {"loss": 0.43125, "lr": 1e-4, "steps_per_second": 41.23, "samples_per_second": 5})
    assert line == "step 20/100 | loss 0.4313 | lr 1.000e-04 | 41.2 steps/s | 5.0 samples/s"
