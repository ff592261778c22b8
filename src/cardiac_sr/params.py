"""Reading ``params.yaml`` with errors that name the missing or bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import CardiacSRError

_MISSING = object()


def load_params(path: str | Path = "params.yaml") -> dict:
    """Load the params file; a missing or malformed file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CardiacSRError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CardiacSRError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CardiacSRError(f"{path}: expected a mapping of params at the top level")
    return data


def get(params: dict, key: str, default: Any = _MISSING, source: str = "params.yaml") -> Any:
    """Return ``params[a][b]...`` for ``key='a.b...'``.

    A missing key raises :class:`CardiacSRError` naming the dotted key,
    unless a ``default`` is given.
    """
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise CardiacSRError(f"{source}: missing param '{key}'")
        node = node[part]
    return node


def choice(value: Any, allowed: Iterable[str], key: str, source: str = "params.yaml") -> str:
    """Check that ``value`` is one of ``allowed``; the error lists the valid values."""
    allowed = list(allowed)
    if value not in allowed:
        raise CardiacSRError(
            f"{source}: unknown value {value!r} for '{key}'; valid values: {', '.join(allowed)}"
        )
    return value
