"""Where napari-fewshot keeps its files, and how it turns a name into part of a file name.

    cache_folder()                      # $XDG_CACHE_HOME/napari-fewshot, else ~/.cache/napari-fewshot
    cache_folder("autosave", "NAPARI_FEWSHOT_AUTOSAVE_DIR")   # that variable wins when set
    slug("Kidney (left)")               # 'kidney_left'

Environment variables are read at call time, so tests and users can change them in a running process.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

APP = "napari-fewshot"


def user_cache_root() -> Path:
    """The user's cache folder: $XDG_CACHE_HOME when it is set to an absolute path, else ~/.cache.

    The XDG base-directory rules say an empty or relative value is to be ignored, so ``XDG_CACHE_HOME=``
    means the same as leaving it unset (a relative value would move the cache with the working folder).
    """
    value = os.environ.get("XDG_CACHE_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".cache"


def cache_folder(sub: str | None = None, override_env: str | None = None) -> Path:
    """``<user cache>/napari-fewshot[/sub]``, or the folder named by `override_env` when that variable is
    set and not empty."""
    if override_env and os.environ.get(override_env):
        return Path(os.environ[override_env])
    root = user_cache_root() / APP
    return root / sub if sub else root


def slug(text: str) -> str:
    """`text` as a file-name part: ASCII letters and digits, each other run of characters one ``_``,
    lower case, no leading or trailing ``_`` (``""`` when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


__all__ = ["APP", "cache_folder", "slug", "user_cache_root"]
