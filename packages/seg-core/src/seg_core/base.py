"""The base of every serialised object in seg: frozen pydantic models with JSON/YAML round trips.

Every config, preset, archive, record and manifest in the project derives from :class:`SegModel`:

* frozen (hashable, safe to share between threads and processes),
* ``extra="forbid"``: an unknown key is an error, never silently ignored,
* errors name the field path, the offending value and, where we can, the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "SegModel", "format_validation_error"]


class ConfigError(ValueError):
    """A config, preset or manifest failed validation; the message names every bad field path."""


def format_validation_error(error: ValidationError, *, source: str | None = None) -> str:
    """Render a pydantic error as one line per problem: ``field.path: message (got value)``.

    Args:
        error: The pydantic error.
        source: Where the data came from (a file path), prepended to the message.
    """
    where = f" in {source}" if source else ""
    lines = [f"invalid {error.title}{where}:"]
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (remove it or check its spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        got = "" if item["type"] == "missing" else f" (got {item['input']!r})"
        if len(got) > 120:
            got = got[:117] + "...)"
        lines.append(f"  {path}: {message}{got}")
    return "\n".join(lines)


class SegModel(BaseModel):
    """Frozen, strict-keyed pydantic base with JSON and YAML round trips."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, protected_namespaces=())

    @classmethod
    def parse(cls, data: Any, *, source: str | None = None) -> Self:
        """Validate ``data`` (a mapping), raising :class:`ConfigError` with field paths on failure."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, source=source)) from None

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to JSON text (round-trips through :meth:`from_json`)."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str | None = None) -> Self:
        """Parse JSON text produced by :meth:`to_json` (or written by hand)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            where = f" in {source}" if source else ""
            raise ConfigError(f"malformed JSON{where}: {error}") from None
        return cls.parse(data, source=source)

    def to_yaml(self) -> str:
        """Serialise to YAML text (round-trips through :meth:`from_yaml`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> Self:
        """Parse YAML text produced by :meth:`to_yaml` (or written by hand)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            where = f" in {source}" if source else ""
            raise ConfigError(f"malformed YAML{where}: {error}") from None
        return cls.parse({} if data is None else data, source=source)

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` as JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = self.to_json()
        elif suffix in {".yaml", ".yml"}:
            text = self.to_yaml()
        else:
            raise ConfigError(f"cannot save {type(self).__name__} to {path}: use a .json, .yaml or .yml file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a file written by :meth:`save` (format chosen by suffix)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{cls.__name__} file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            return cls.from_json(text, source=str(path))
        if path.suffix.lower() in {".yaml", ".yml"}:
            return cls.from_yaml(text, source=str(path))
        raise ConfigError(f"cannot load {cls.__name__} from {path}: use a .json, .yaml or .yml file")
