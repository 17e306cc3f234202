"""Writing outputs so that a failure never leaves a half-written file behind."""

import contextlib
import os
import tempfile
from pathlib import Path

from .exceptions import OutputError

__all__ = ["atomic_output", "ensure_folder"]


def ensure_folder(folder):
    """Create ``folder`` (and its parents) or raise a one-line :class:`OutputError`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"cannot create the output folder {folder}: {err.strerror or err}; "
            "choose a folder you can write to"
        ) from err
    if not os.access(folder, os.W_OK):
        raise OutputError(
            f"cannot write to the output folder {folder}: permission denied; "
            "choose a folder you can write to"
        )
    return folder


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic:
    readers see the old file or the complete new one, never a partial write. On any
    exception the temporary file is removed and the old file, if any, is untouched.
    The temporary name keeps the final suffix, so writers that choose a format from
    the suffix (Keras, matplotlib, astropy) behave as with the final name.
    """
    path = Path(path)
    ensure_folder(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes owner-only files; outputs get the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
