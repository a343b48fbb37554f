"""Where things live: the repository's assets and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
TEMPLATES_DIR = ASSETS / "templates"
MODELS_YAML = ASSETS / "models.yaml"


def cache_dir() -> Path:
    """The cache folder: $VICHAT_CACHE, else ~/.cache/vichat."""
    env = os.environ.get("VICHAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vichat"


def resolve(path: str | os.PathLike) -> Path:
    """A path from a config file: absolute as is, relative to the repository root otherwise."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p
