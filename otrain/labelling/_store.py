"""The labels of a training folder: ``labels.csv`` and the copies in ``true/``/``false/``.

``labels.csv`` is the record of every decision, appended one row at a time and pushed
to the disk (flush + fsync) before the decision is acted on, so that a closed tab, a
killed server or a power cut loses nothing. Nothing in it is ever rewritten: an undo
or a changed mind is a new row, and the last row of a candidate is its label. The
copies in ``true/`` and ``false/`` follow from the file: each is made after its row is
on the disk, and opening the store again puts the folders back in line with it (a
server killed between the two finishes the work on the next start).
"""

import csv
import datetime
import filecmp
import getpass
import io
import os
import shutil

from .._atomic import atomic_output, ensure_folder
from ..alerts import split_reference, write_fits
from ..exceptions import CutoutError, LabellingError

__all__ = ["LabelStore", "LABELS_NAME", "LABELS_COLUMNS", "DECISIONS", "FOLDERS"]

#: Name of the decision file inside the training folder.
LABELS_NAME = "labels.csv"

#: Columns of ``labels.csv``, in order.
LABELS_COLUMNS = ("candidate", "label", "time", "p_real", "user")

#: The words of the ``label`` column.
DECISIONS = ("real", "bogus", "skip", "undo")

#: Sub-folder of the training folder that receives each class.
FOLDERS = {"real": "true", "bogus": "false"}


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # No login name (a container without a passwd entry): the id still tells apart.
        return f"uid{os.getuid()}"


def candidate_name(reference):
    """The name a candidate has in ``labels.csv`` and in ``true/``/``false/``.

    Parameters
    ----------
    reference : str
        A candidate as the folder scan gives it: a file path, or ``path#record`` for
        one record of a multi-alert file.

    Returns
    -------
    str
        The file name (``name.fits``), or ``name.avro#record``.
    """
    path, record = split_reference(str(reference))
    return os.path.basename(path) + ("" if record is None else f"#{record}")


def _file_name(reference):
    """Name of a candidate's copy: its file name, or ``<record id>.fits``."""
    path, record = split_reference(str(reference))
    return os.path.basename(path) if record is None else f"{record}.fits"


class LabelStore:
    """The decisions of one training folder, and its ``true/`` and ``false/`` copies.

    Parameters
    ----------
    folder : str or path-like
        The training folder (created when missing): ``labels.csv``, ``true/`` and
        ``false/`` live in it, the layout ``otrain-convert --cutouts`` reads.
    link : bool, default False
        Hard-link the candidates into ``true/``/``false/`` instead of copying them
        (same file system only; the originals are never changed either way).
    user : str, optional
        Name written in the ``user`` column; the login name by default.

    Attributes
    ----------
    path : pathlib.Path
        The ``labels.csv`` file.
    labels : dict
        Candidate name -> its current label (``real``, ``bogus`` or ``skip``);
        undone candidates are absent.
    history : list of str
        Names of the candidates decided, oldest first, undone ones removed: what
        :meth:`undo` takes back next.
    n_bad_rows : int
        Rows of ``labels.csv`` that could not be read (a row cut short by a crash).
    """

    def __init__(self, folder, *, link=False, user=None):
        self.folder = ensure_folder(folder)
        self.path = self.folder / LABELS_NAME
        self.link = bool(link)
        self.user = user or _user()
        self.labels = {}
        self.history = []
        self.n_bad_rows = 0
        self._times = []
        self._read()

    # -- reading --------------------------------------------------------------------

    def _read(self):
        if not self.path.exists():
            with atomic_output(self.path) as tmp:
                tmp.write_text(",".join(LABELS_COLUMNS) + "\n")
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise LabellingError(
                f"{self.path}: cannot be read ({err}); move it away to start a new one"
            ) from err
        rows = csv.reader(io.StringIO(text))
        header = next(rows, None)
        if header is None:
            self._append_raw(",".join(LABELS_COLUMNS) + "\n")
            return
        if tuple(header) != LABELS_COLUMNS:
            raise LabellingError(
                f"{self.path}: not a labels file of otrain (its columns are "
                f"{','.join(header)}, expected {','.join(LABELS_COLUMNS)}); "
                "choose another --out folder"
            )
        for row in rows:
            if len(row) != len(LABELS_COLUMNS) or row[1] not in DECISIONS or not row[0]:
                self.n_bad_rows += 1
                continue
            self._apply(row[0], row[1], row[2])
        if text and not text.endswith("\n"):
            # The last row was cut short by a crash: end it, so the next row starts
            # on a line of its own (the cut row is then read as a bad row, skipped).
            self._append_raw("\n")

    def _apply(self, name, label, time):
        if name in self.labels or label == "undo":
            if name in self.history:
                # The candidate's earlier decision is no longer the one to undo.
                del self.history[len(self.history) - 1 - self.history[::-1].index(name)]
        if label == "undo":
            self.labels.pop(name, None)
        else:
            self.labels[name] = label
            self.history.append(name)
            self._times.append(time)

    # -- writing ----------------------------------------------------------------------

    def _append_raw(self, text):
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def _append(self, name, label, p_real, user):
        buffer = io.StringIO()
        p_text = "" if p_real is None else f"{float(p_real):.6g}"
        time = _now()
        csv.writer(buffer, lineterminator="\n").writerow(
            [name, label, time, p_text, user or self.user]
        )
        try:
            self._append_raw(buffer.getvalue())
        except OSError as err:
            raise LabellingError(
                f"{self.path}: cannot be written ({err.strerror or err}); nothing was "
                "filed: free some space or fix the permissions, then press the key again"
            ) from err
        return time

    def destination(self, reference, label):
        """Path of the copy of ``reference`` for ``label`` (None for skip/undo)."""
        if label not in FOLDERS:
            return None
        return self.folder / FOLDERS[label] / _file_name(reference)

    def record(self, reference, label, *, p_real=None, user=None):
        """File one decision: a row in ``labels.csv``, then the copy.

        Parameters
        ----------
        reference : str
            The candidate (a file path, or ``path#record``).
        label : {"real", "bogus", "skip", "undo"}
            The decision; ``undo`` makes the candidate unlabelled again.
        p_real : float, optional
            The model's P(real) shown with the candidate, for the record.
        user : str, optional
            Overrides the store's user for this row (``crossmatch:catalogue``).

        Returns
        -------
        str
            The candidate's name in ``labels.csv``.

        Raises
        ------
        LabellingError
            If ``label`` is not a decision, or ``true/``/``false/`` holds a different
            file of the same name (an earlier batch): it is never overwritten.
        """
        if label not in DECISIONS:
            raise LabellingError(f"label must be one of {', '.join(DECISIONS)}, got {label!r}")
        name = candidate_name(reference)
        target = self.destination(reference, label)
        if target is not None and target.exists() and not self._ours(reference, target):
            raise LabellingError(
                f"{target} exists already and is not a copy of {reference} (an earlier "
                "batch?); it is never overwritten: rename one of them, then label again"
            )
        time = self._append(name, label, p_real, user)
        self._apply(name, label, time)
        self._sync(reference, label)
        return name

    def undo(self, references):
        """Take back the latest decision still standing (an ``undo`` row).

        Parameters
        ----------
        references : mapping
            Candidate name -> reference (file path), to find the copy to remove.

        Returns
        -------
        str or None
            The name undone, None when there is nothing to undo.
        """
        if not self.history:
            return None
        name = self.history[-1]
        self.record(references.get(name, name), "undo")
        return name

    def sync_all(self, references):
        """Put ``true/`` and ``false/`` in line with ``labels.csv`` for these candidates.

        Run at start-up: a server killed between writing a row and copying its file
        finishes the copy (or the removal) now.

        Parameters
        ----------
        references : iterable of str
            The candidates of the folder being labelled.

        Returns
        -------
        list of str
            One line for each candidate that could not be put in line.
        """
        # One listing of each folder, then work only where it disagrees with the
        # labels: 10,000 candidates are checked in milliseconds at start-up.
        present = {}
        for label, sub in FOLDERS.items():
            try:
                present[label] = set(os.listdir(self.folder / sub))
            except FileNotFoundError:
                present[label] = set()
        problems = []
        for reference in references:
            label = self.labels.get(candidate_name(reference), "undo")
            name = _file_name(reference)
            if all((name in present[other]) == (other == label) for other in FOLDERS):
                continue
            try:
                self._sync(reference, label)
            except LabellingError as err:
                problems.append(str(err))
        return problems

    def _sync(self, reference, label):
        keep = self.destination(reference, label)
        for other in FOLDERS:
            target = self.destination(reference, other)
            if target == keep or not target.exists():
                continue
            # Only a copy of this very candidate is removed: a different file of the
            # same name (an earlier batch) stays.
            if self._ours(reference, target):
                target.unlink()
        if keep is not None and not keep.exists():
            self._file(reference, keep)

    def _ours(self, reference, target):
        path, record = split_reference(str(reference))
        if record is not None:
            # A record written out by otrain: the name is the alert's own id.
            return True
        try:
            return os.path.samefile(path, target) or filecmp.cmp(path, target, shallow=False)
        except OSError:
            return False

    def _file(self, reference, target):
        ensure_folder(target.parent)
        path, record = split_reference(str(reference))
        try:
            if record is not None:
                # One alert of a multi-alert file: written as its own SCI/REF/DIFF FITS
                # file (atomically), named by its alert id.
                try:
                    write_fits(reference, target)
                except CutoutError as err:
                    raise LabellingError(
                        f"{reference}: cannot be written as a FITS file ({err}); skip it"
                    ) from err
            elif self.link:
                try:
                    os.link(path, target)
                except OSError as err:
                    raise LabellingError(
                        f"cannot hard-link {path} into {target.parent} ({err.strerror}); "
                        "leave out --link to copy the files instead"
                    ) from err
            else:
                with atomic_output(target) as tmp:
                    shutil.copyfile(path, tmp)
        except FileNotFoundError as err:
            raise LabellingError(
                f"{path}: no longer there; its label is kept in {self.path.name} but no "
                "copy was made"
            ) from err
        except OSError as err:
            raise LabellingError(
                f"cannot write {target}: {err.strerror or err}; free some space or fix "
                "the permissions"
            ) from err

    # -- summaries ----------------------------------------------------------------

    def counts(self, names=None):
        """Number of candidates per current label, among ``names`` if given.

        Returns
        -------
        dict
            ``{"real": n, "bogus": n, "skip": n}``.
        """
        counts = dict.fromkeys(("real", "bogus", "skip"), 0)
        labels = self.labels
        if names is not None:
            labels = {name: labels[name] for name in names if name in labels}
        for label in labels.values():
            counts[label] += 1
        return counts

    def rate(self, minutes=5.0):
        """Decisions per minute over the last ``minutes`` (undos not counted)."""
        now = datetime.datetime.now(datetime.UTC)
        start = now - datetime.timedelta(minutes=minutes)
        recent = []
        for text in reversed(self._times):
            try:
                when = datetime.datetime.fromisoformat(text)
            except ValueError:
                continue
            if when < start:
                break
            recent.append(when)
        if len(recent) < 2:
            return 0.0
        span = max((now - min(recent)).total_seconds(), 30.0)
        return 60.0 * len(recent) / span
