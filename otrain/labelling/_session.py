"""A labelling session: the candidates, their order, the store, the page's answers.

The page never names a file: it asks for candidates by their number in the session's
list, and the server answers with the pixels it read itself. That is what makes path
traversal impossible by construction (a number cannot point outside the candidates).
"""

import threading
from collections import OrderedDict

import numpy as np

from ..active_learning import STRATEGIES
from ..exceptions import LabellingError
from ._render import read_candidate
from ._store import DECISIONS, candidate_name

__all__ = ["LabellingSession", "ORDERS"]

#: Orders in which the page shows the candidates (the ranking strategies).
ORDERS = STRATEGIES


class LabellingSession:
    """The state behind the labelling page.

    Parameters
    ----------
    references : list of str
        The candidates (from :func:`otrain.datacube.find_cutouts`).
    store : LabelStore
        Where decisions go.
    order : ndarray of int, optional
        Positions in ``references``, in the order to show them; as listed by default.
    p_real, p_real_std : ndarray of float, optional
        The model's scores, NaN where a candidate was not scored.
    channels : sequence of str, optional
        Channels to show; every image of each file by default.
    grid_size : int, default 30
        Candidates on one grid page.
    description : str, optional
        One line shown on the page: the order and the model.
    """

    def __init__(
        self,
        references,
        store,
        *,
        order=None,
        p_real=None,
        p_real_std=None,
        channels=None,
        grid_size=30,
        description="",
    ):
        self.references = list(references)
        if not self.references:
            raise LabellingError("no candidates to label")
        self.names = [candidate_name(r) for r in self.references]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.store = store
        n = len(self.references)
        self.order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
        self.p_real = p_real
        self.p_real_std = p_real_std
        self.channels = channels
        self.grid_size = int(grid_size)
        self.description = description
        self._lock = threading.Lock()
        self._cache = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- what the page reads ---------------------------------------------------------

    def queue(self, n=50):
        """The next ``n`` unlabelled candidates, in the session's order.

        Returns
        -------
        list of int
            Candidate numbers.
        """
        labels = self.store.labels
        out = []
        with self._lock:
            for i in self.order:
                if self.names[i] not in labels:
                    out.append(int(i))
                    if len(out) >= n:
                        break
        return out

    def candidate(self, i):
        """The page's view of candidate ``i`` (stamps, keywords, score), cached.

        Raises
        ------
        LabellingError
            If ``i`` is not a candidate number of this session.
        """
        i = self._check_number(i)
        with self._cache_lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        view = read_candidate(self.references[i], self.channels)
        view["id"] = i
        view["name"] = self.names[i]
        view["label"] = self.store.labels.get(self.names[i])
        if self.p_real is not None and np.isfinite(self.p_real[i]):
            view["p_real"] = round(float(self.p_real[i]), 4)
            if self.p_real_std is not None and np.isfinite(self.p_real_std[i]):
                view["p_real_std"] = round(float(self.p_real_std[i]), 4)
        with self._cache_lock:
            self._cache[i] = view
            # A few hundred candidates: the page's look-ahead and some undo depth.
            while len(self._cache) > 512:
                self._cache.popitem(last=False)
        return view

    def warm_up(self, n=8):
        """Read the first ``n`` candidates of the queue into the cache, in a thread.

        The first read also pays for lazy imports (ZScale); done while the user opens
        the page, it keeps the first key presses as fast as the others.
        """
        thread = threading.Thread(
            target=lambda: [self.candidate(i) for i in self.queue(n)],
            daemon=True,
            name="otrain-label-warm-up",
        )
        thread.start()
        return thread

    def progress(self):
        """Counts for the page's progress line."""
        counts = self.store.counts(self.names)
        done = sum(counts.values())
        return {
            "total": len(self.names),
            "done": done,
            "left": len(self.names) - done,
            **counts,
            "per_minute": round(self.store.rate(), 1),
        }

    def state(self):
        """Everything the page needs at load time."""
        return {
            "progress": self.progress(),
            "grid_size": self.grid_size,
            "description": self.description,
            "has_scores": self.p_real is not None,
            "user": self.store.user,
        }

    # -- what the page writes ------------------------------------------------------

    def _check_number(self, i):
        try:
            i = int(i)
        except (TypeError, ValueError):
            i = -1
        if not 0 <= i < len(self.references):
            raise LabellingError(f"no candidate number {i!r} in this session")
        return i

    def decide(self, decisions):
        """File decisions from the page.

        Parameters
        ----------
        decisions : list of dict
            Each ``{"id": number, "label": "real" | "bogus" | "skip"}``. A candidate
            that cannot be read is filed as ``skip`` whatever the label.

        Returns
        -------
        dict
            ``filed`` (list of ``{"id", "label"}``) and ``progress``.
        """
        filed = []
        with self._lock:
            for decision in decisions:
                i = self._check_number(decision.get("id"))
                label = decision.get("label")
                if label not in DECISIONS or label == "undo":
                    raise LabellingError(f"label must be real, bogus or skip, got {label!r}")
                if label != "skip" and "error" in self.candidate(i):
                    label = "skip"
                p_real = None if self.p_real is None else self.p_real[i]
                if p_real is not None and not np.isfinite(p_real):
                    p_real = None
                self.store.record(self.references[i], label, p_real=p_real)
                self._forget(i)
                filed.append({"id": i, "label": label})
        return {"filed": filed, "progress": self.progress()}

    def undo(self, count=1):
        """Take back the latest ``count`` decisions; return the candidates undone."""
        undone = []
        references = dict(zip(self.names, self.references, strict=True))
        with self._lock:
            for _ in range(max(1, int(count))):
                name = self.store.undo(references)
                if name is None:
                    break
                if name in self.index:
                    undone.append(self.index[name])
                    self._forget(self.index[name])
        return {"undone": undone, "progress": self.progress()}

    def _forget(self, i):
        with self._cache_lock:
            self._cache.pop(i, None)
