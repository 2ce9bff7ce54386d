"""Where clients keep API keys: one JSON file mapping daemon URLs to keys, readable by its
owner only (``$TRIGGERFISH_CREDENTIALS``, default ``~/.config/triggerfish/credentials.json``).

``triggerfish login`` writes it; a daemon that starts on loopback with no key configured makes
one and writes it here for the local user, so the CLI and ``Client()`` work with no set-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["credentials_path", "key_for", "save_key"]


def credentials_path() -> Path:
    configured = os.environ.get("TRIGGERFISH_CREDENTIALS")
    if configured:
        return Path(configured)
    return Path.home() / ".config" / "triggerfish" / "credentials.json"


def _normal(url: str) -> str:
    return url.rstrip("/")


def _read(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in document.items()} if isinstance(document, dict) else {}


def key_for(url: str) -> str | None:
    """The saved key for a daemon URL, if any."""
    return _read(credentials_path()).get(_normal(url))


def save_key(url: str, key: str) -> Path:
    """Save (or replace) the key for a daemon URL; the file is made readable by its owner
    only, and written whole then renamed, so a crash never leaves half a file."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = _read(path)
    saved[_normal(url)] = key
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(saved, file, indent=2)
    os.replace(temporary, path)
    return path
