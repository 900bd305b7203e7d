"""Write a file so that a crash, a kill or a full disk never leaves a half-written file under its name.

The content goes to a temporary file in the target's folder (same file system, so the rename is
atomic), is flushed to disk, then takes the target's name; the folder is synced so the rename itself
survives a power cut. Permissions follow the process umask, as a plain ``open`` would give (mkstemp's
0600 would hide masks from a group that shares a study folder; 0644 regardless of umask would expose
patient data where the site set 077).

    atomic_write(path, lambda tmp: np.save(tmp, array))             # replaces an existing file
    atomic_write(path, save, overwrite=False)                       # FileExistsError if it exists, even
                                                                    # when another writer races us
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


TEMP_PREFIX_MAX = 200  # bytes: room left within NAME_MAX (255) for mkstemp's 8 characters, a tag and a suffix


def temp_prefix(name: str) -> str:
    """``.NAME.``: the start of the temporary names made beside the file or folder `name`; a name too long
    to take more characters (a legal 252-byte name) is shortened to its start and a hash of the whole."""
    prefix = f".{name}."
    if len(os.fsencode(prefix)) <= TEMP_PREFIX_MAX:
        return prefix
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f".{name[:40]}~{digest}."


def current_umask() -> int:
    """The process umask (reading it means setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits a new file gets from ``open``: 0666 less the umask."""
    return 0o666 & ~current_umask()


def fsync_folder(folder: Path) -> None:
    """Make renames in `folder` durable (POSIX; a no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True,
                 suffix: str | None = None) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside `path`, then give it `path`'s name.

    overwrite=False creates `path` exclusively: if it exists (or another writer creates it first) the
    temporary file is removed and FileExistsError is raised; nothing is replaced.
    suffix: the temporary file's suffix (default: `path`'s, ".nii.gz" kept whole), for writers that
    pick the format from the name. OSError from the folder or the write propagates; the temporary file
    never stays behind.
    """
    target = Path(path)
    if suffix is None:
        suffix = ".nii.gz" if target.name.lower().endswith(".nii.gz") else target.suffix
    handle, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=suffix, dir=target.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.chmod(tmp, file_mode())
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_exclusive(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(target.parent)
    return target


def _link_exclusive(tmp: Path, target: Path) -> None:
    """Give `tmp`'s content the name `target` only if no file has it. A hard link is exclusive and
    atomic; where the file system has no hard links, the name is reserved with O_EXCL, then replaced."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode()))
        os.replace(tmp, target)
