"""Writing outputs so that a failure never leaves a half-written file behind.

Overwrite policy, one for every command: outputs that cost a training (models,
exported and calibrated models) are never replaced without ``--overwrite``; outputs
derived from inputs that are still there (datacubes, results tables, plots) are
replaced, as O'TRAIN's scripts expect when they run again, and the command says so
on one line. Every command checks that it can write its outputs (:func:`check_outputs`)
before its long work, not after it.

A temporary file is named after its output, this host and this process
(``.NAME.HOST-PID.XXXX.tmpSUFFIX``), so a later write of the same output removes the
temporaries that killed runs on this host left behind.
"""

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path

from .exceptions import OutputError

__all__ = [
    "atomic_output",
    "ensure_folder",
    "check_outputs",
    "check_folder",
    "printable",
    "remove_stale_temporaries",
]


def printable(text):
    """``text`` safe to write to a UTF-8 file or terminal.

    File names that are not valid UTF-8 reach Python as strings holding lone
    surrogates (``os.fsdecode``); they are written as ``\\xNN`` escapes of their bytes.
    """
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _owner():
    """This host and process, as temporary file names carry them."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale_temporaries(path):
    """Remove the temporaries of ``path`` left by killed runs on this host.

    Returns the number removed. Temporaries of live processes, and of other hosts
    sharing the folder, are left alone.
    """
    path = Path(path)
    host = _owner().rsplit("-", 1)[0]
    pattern = re.compile(
        rf"\.{re.escape(path.stem)}\.{re.escape(host)}-(\d+)\.[^.]+\.tmp{re.escape(path.suffix)}"
    )
    removed = 0
    try:
        candidates = list(path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"))
    except OSError:
        return 0
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match and not _alive(int(match[1])):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed += 1
    return removed


def check_folder(folder):
    """Check that ``folder`` can be created (if missing) and written, without creating it.

    A file is created and removed in the folder, or in its nearest existing parent
    when the folder does not exist yet: the only test that holds for every file system
    and user, root included (``os.access`` says yes to root on a read-only folder).
    Nothing is left behind, so a command that stops later on bad input leaves no
    empty folder.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputError
        Naming the folder and why.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"cannot create the output folder {folder}: {existing} is a file; "
            "choose a folder you can write to"
        )
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".otrain-write-check."):
            pass
    except OSError as err:
        where = folder if existing == folder else f"{folder} (in {existing})"
        raise OutputError(
            f"cannot write to the output folder {where}: {err.strerror or err}; "
            "choose a folder you can write to"
        ) from err
    return folder


def check_outputs(paths, *, replace=True, refuse_hint="give --overwrite to replace it"):
    """Check, before long work, that every output in ``paths`` can be written.

    Each folder is created if needed and a file is created and removed in it (the
    only test that holds for every file system and user, root included); an output
    that exists must be a file, and is replaced only when ``replace`` is true.
    Stale temporaries of the outputs are removed.

    Parameters
    ----------
    paths : iterable of path-like
        The output files.
    replace : bool, default True
        Whether existing outputs may be replaced (outputs derived from inputs that are
        still there); False for outputs that cost a training.
    refuse_hint : str
        How to proceed when ``replace`` is false and an output exists.

    Returns
    -------
    list of pathlib.Path
        The outputs that exist and will be replaced.

    Raises
    ------
    OutputError
        Naming the folder or file that cannot be written, and what to do.
    """
    paths = [Path(p) for p in paths]
    for folder in dict.fromkeys(p.parent for p in paths):
        check_folder(folder)
    existing = []
    for path in paths:
        remove_stale_temporaries(path)
        if path.is_dir():
            raise OutputError(f"{path}: is a folder, where an output file goes; move it away")
        if path.exists():
            if not replace:
                raise OutputError(f"{path}: exists; {refuse_hint}")
            existing.append(path)
    return existing


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
    the suffix (Keras, matplotlib, astropy) behave as with the final name; it also
    carries this host and process, so that a later write of ``path`` removes the
    temporaries a killed run left (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    ensure_folder(path.parent)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.{_owner()}.", suffix=f".tmp{path.suffix}", dir=path.parent
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
