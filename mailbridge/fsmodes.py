"""Private files and folders: 0600 and 0700 whatever the umask.

Databases, Maildir files and attachments hold tips; nobody but the service's own
user may read them. ``os.open`` and ``mkdir`` only narrow their mode by the
umask, and ``mkdir(parents=True)`` ignores it for the parents, so each helper
sets the mode explicitly after creating. Used by both roles.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents 0700. Folders that already exist keep
    their mode: they may be the admin's (a state directory, the config folder)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # created meanwhile by another process: not ours to change
            continue
        os.chmod(folder, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates ``path`` 0600 (its folder 0700 if missing); an existing
    file is narrowed to 0600. Returns the descriptor."""
    private_dir(path.parent)
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is 0600 (an empty file if it was missing)."""
    os.close(open_private(path, os.O_RDONLY))
    return path
