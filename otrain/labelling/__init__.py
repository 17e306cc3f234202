"""Labelling candidates by eye: the ``otrain-label`` page, its store and its server.

The pieces, each in its own module:

* :class:`LabelStore` (``_store.py``): ``labels.csv``, append-only, and the copies in
  ``true/`` and ``false/`` that ``otrain-convert --cutouts`` reads;
* :func:`read_candidate` (``_render.py``): one candidate as the page shows it (ZScale
  PNG stamps, keywords);
* :class:`LabellingSession` (``_session.py``): candidates, order, scores, decisions;
* :func:`open_session` (``_prepare.py``): scan, store, scores (cached), order;
* :func:`make_server` (``_server.py``): the standard library's HTTP server, with the
  static page shipped in ``otrain/labelling/static/``.

See ``docs/labelling.md`` for the page, the crossmatch and the active-learning loop.
"""

from ._prepare import SCORES_NAME, find_candidates, open_session
from ._render import encode_png, read_candidate, stamp_png
from ._server import LOOPBACK, is_loopback, make_server, serve_in_thread
from ._session import ORDERS, LabellingSession
from ._store import DECISIONS, FOLDERS, LABELS_COLUMNS, LABELS_NAME, LabelStore, candidate_name

__all__ = [
    "DECISIONS",
    "FOLDERS",
    "LABELS_COLUMNS",
    "LABELS_NAME",
    "LOOPBACK",
    "ORDERS",
    "SCORES_NAME",
    "LabelStore",
    "LabellingSession",
    "candidate_name",
    "encode_png",
    "find_candidates",
    "is_loopback",
    "make_server",
    "open_session",
    "read_candidate",
    "serve_in_thread",
    "stamp_png",
]
