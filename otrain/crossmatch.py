"""Labels from a catalogue: candidates at the position of a known source are real.

A candidate within ``radius`` arcseconds of a catalogue of known variable stars or
transients is a real astrophysical source, and is filed as real (``labels.csv`` and
``true/``) without anyone looking at it. A candidate with no match stays unlabelled:
most real transients are new, so no match does not prove a detection bogus.

Positions come from each candidate's header (``RA``/``DEC`` by default, in degrees or
sexagesimal), else from its WCS at the stamp centre; a record of an alert file gives
its own ra/dec. The catalogue is anything astropy's ``Table.read`` reads (CSV, ECSV,
FITS, VOTable), its columns ``ra``/``dec`` found in any case. The matching is
astropy's (``SkyCoord.match_to_catalog_sky``, a k-d tree): a million catalogue rows
and a hundred thousand candidates match in seconds.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .alerts import is_alert_file
from .exceptions import CutoutError, LabellingError

__all__ = [
    "CrossmatchSummary",
    "candidate_positions",
    "read_catalogue",
    "match_positions",
    "label_by_crossmatch",
]


@dataclass
class CrossmatchSummary:
    """What a crossmatch found.

    Attributes
    ----------
    matched, unmatched, no_position : list of str
        Candidates filed as real, left unlabelled, and without a sky position.
    already_labelled : list of str
        Matched candidates that had a label already (kept: a person's word wins).
    separation : dict
        Candidate -> separation in arcseconds of its match.
    catalogue : str
        The catalogue file.
    radius : float
        The match radius, in arcseconds.
    """

    matched: list = field(default_factory=list)
    unmatched: list = field(default_factory=list)
    no_position: list = field(default_factory=list)
    already_labelled: list = field(default_factory=list)
    separation: dict = field(default_factory=dict)
    catalogue: str = ""
    radius: float = 2.0

    def text(self):
        """The summary as the command prints it."""
        lines = [
            f"{len(self.matched)} matched within {self.radius:g} arcsec of {self.catalogue} "
            f"(filed as real), {len(self.unmatched)} unmatched (left unlabelled: no match "
            f"does not prove bogus), {len(self.no_position)} without coordinates"
        ]
        if self.already_labelled:
            lines.append(
                f"{len(self.already_labelled)} matched candidates were labelled already "
                "and keep their label"
            )
        for name in self.no_position[:5]:
            lines.append(f"  no coordinates: {name}")
        if len(self.no_position) > 5:
            lines.append(f"  ... and {len(self.no_position) - 5} more without coordinates")
        return "\n".join(lines)


def _angle(value, unit):
    """Degrees from a number or a sexagesimal string; NaN when unreadable."""
    from astropy.coordinates import Angle

    if value is None:
        return np.nan
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return np.nan
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return float(Angle(text, unit=unit).deg)
        except (ValueError, TypeError):
            return np.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return np.nan
    return number if np.isfinite(number) else np.nan


def _header_position(reference, ra_key, dec_key):
    """RA, Dec in degrees from header keywords, else the WCS at the stamp centre."""
    import warnings

    import astropy.units as u
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with fits.open(reference, memmap=False) as hdul:
            headers = [hdu.header for hdu in hdul]
            for header in headers:
                if ra_key in header and dec_key in header:
                    ra = _angle(
                        header[ra_key],
                        u.hourangle
                        if isinstance(header[ra_key], str) and ":" in header[ra_key]
                        else u.deg,
                    )
                    dec = _angle(header[dec_key], u.deg)
                    if np.isfinite(ra) and np.isfinite(dec):
                        return ra, dec
            for hdu in hdul:
                if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2 and "CTYPE1" in hdu.header:
                    with warnings.catch_warnings():
                        # Old-style WCS keywords are fixed by astropy; its notice is noise here.
                        warnings.simplefilter("ignore", FITSFixedWarning)
                        wcs = WCS(hdu.header).celestial
                    if not wcs.has_celestial:
                        continue
                    ny, nx = hdu.data.shape[-2:]
                    sky = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
                    return float(sky.icrs.ra.deg), float(sky.icrs.dec.deg)
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        return np.nan, np.nan
    return np.nan, np.nan


def candidate_positions(references, *, ra_key="RA", dec_key="DEC"):
    """Sky positions of candidates, in degrees.

    Parameters
    ----------
    references : list of str
        Candidate files (or ``path#record`` of alert files).
    ra_key, dec_key : str, default "RA", "DEC"
        Header keywords holding the position (degrees, or sexagesimal strings; RA
        with colons is read in hours). Where they are missing, the WCS at the stamp
        centre is used.

    Returns
    -------
    ra, dec : ndarray of float
        NaN where a candidate has no position (or cannot be read).
    """
    from .cutouts import read_cutout

    n = len(references)
    ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    default_keys = ra_key.upper() == "RA" and dec_key.upper() == "DEC"
    for i, reference in enumerate(references):
        if default_keys:
            # otrain's fast reader parses RA/DEC already (and an alert's own ra/dec).
            try:
                _, keywords = read_cutout(reference, channels=("DIFF",))
                ra[i], dec[i] = keywords.get("ra", np.nan), keywords.get("dec", np.nan)
            except CutoutError:
                pass
            if np.isfinite(ra[i]) and np.isfinite(dec[i]):
                continue
        if not is_alert_file(reference):
            ra[i], dec[i] = _header_position(reference, ra_key.upper(), dec_key.upper())
    return ra, dec


def _find_column(table, given, default, path, what):
    if given is not None:
        if given not in table.colnames:
            raise LabellingError(
                f"{path}: no column {given!r} (its columns: {', '.join(table.colnames)}); "
                f"check --{what}-col"
            )
        return given
    for name in table.colnames:
        if name.lower() in default:
            return name
    raise LabellingError(
        f"{path}: no {what} column (looked for {'/'.join(default)} in any case; its columns: "
        f"{', '.join(table.colnames[:20])}); name it with --{what}-col"
    )


def read_catalogue(path, *, ra_col=None, dec_col=None):
    """Read the sky positions of a catalogue.

    Parameters
    ----------
    path : str or path-like
        Any table astropy reads: CSV, ECSV, FITS, VOTable.
    ra_col, dec_col : str, optional
        Column names; by default ``ra``/``dec`` (or ``raj2000``/``dej2000``) in any
        case. Values in degrees, or sexagesimal strings (RA in hours when written
        with colons or ``h``); a column with a unit (FITS, VOTable, ECSV) is read in
        that unit.

    Returns
    -------
    astropy.coordinates.SkyCoord

    Raises
    ------
    LabellingError
        If the file cannot be read, has no sky columns or no readable position.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise LabellingError(f"{path}: no such catalogue file; check --crossmatch")
    try:
        table = (
            Table.read(path, format="csv") if path.suffix.lower() == ".csv" else Table.read(path)
        )
    except Exception as err:  # noqa: BLE001 - astropy raises a dozen kinds for bad tables
        raise LabellingError(
            f"{path}: not a table astropy can read ({' '.join(str(err).split())[:200]}); "
            "give a CSV, ECSV, FITS or VOTable catalogue"
        ) from err
    ra_name = _find_column(table, ra_col, ("ra", "raj2000", "ra_deg"), path, "ra")
    dec_name = _find_column(table, dec_col, ("dec", "dej2000", "decj2000", "dec_deg"), path, "dec")
    ra_values, dec_values = table[ra_name], table[dec_name]
    if len(table) == 0:
        raise LabellingError(f"{path}: the catalogue has no rows")
    if ra_values.dtype.kind in "US":
        text = np.char.strip(np.asarray(ra_values, dtype=str))
        sexagesimal = np.char.find(text, ":") >= 0
        sexagesimal |= np.char.find(np.char.lower(text), "h") >= 0
        ra_unit = u.hourangle if sexagesimal.any() else u.deg
        try:
            coords = SkyCoord(text, np.asarray(dec_values, dtype=str), unit=(ra_unit, u.deg))
        except ValueError as err:
            raise LabellingError(
                f"{path}: cannot read the positions of {ra_name}/{dec_name} ({err}); "
                "write degrees or sexagesimal (12:34:56.7 +12:34:56)"
            ) from err
    else:
        ra_unit = ra_values.unit or u.deg
        dec_unit = dec_values.unit or u.deg
        ra_deg = np.ma.filled(np.ma.asarray(ra_values, dtype=float), np.nan) * u.Unit(ra_unit)
        dec_deg = np.ma.filled(np.ma.asarray(dec_values, dtype=float), np.nan) * u.Unit(dec_unit)
        good = np.isfinite(ra_deg) & np.isfinite(dec_deg)
        if not good.any():
            raise LabellingError(f"{path}: no row has a finite {ra_name}/{dec_name}")
        coords = SkyCoord(ra_deg[good], dec_deg[good])
    return coords


def match_positions(ra, dec, catalogue, *, radius=2.0):
    """Match candidate positions to a catalogue.

    Parameters
    ----------
    ra, dec : array-like of float
        Candidate positions in degrees; NaN for none.
    catalogue : astropy.coordinates.SkyCoord
    radius : float, default 2.0
        Match radius in arcseconds.

    Returns
    -------
    matched : ndarray of bool
        True where the nearest catalogue source is within ``radius``.
    separation : ndarray of float
        Separation to the nearest catalogue source, in arcseconds (NaN without a
        position).
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    if not radius > 0:
        raise LabellingError(f"the match radius must be > 0 arcsec, got {radius}")
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    has = np.isfinite(ra) & np.isfinite(dec)
    separation = np.full(len(ra), np.nan)
    if has.any():
        candidates = SkyCoord(ra[has] * u.deg, dec[has] * u.deg)
        _, sep2d, _ = candidates.match_to_catalog_sky(catalogue)
        separation[has] = sep2d.arcsec
    return has & (separation <= radius), separation


def label_by_crossmatch(
    cutouts,
    out,
    catalogue,
    *,
    radius=2.0,
    ra_key="RA",
    dec_key="DEC",
    ra_col=None,
    dec_col=None,
    link=False,
    user=None,
    say=None,
):
    """File the candidates that match a catalogue as real (``labels.csv``, ``true/``).

    Parameters
    ----------
    cutouts : str or path-like
        Folder of candidates (scanned as ``otrain-infer`` does).
    out : str or path-like
        Training folder.
    catalogue : str or path-like
        Catalogue of known variable stars / transients (see :func:`read_catalogue`).
    radius : float, default 2.0
        Match radius in arcseconds.
    ra_key, dec_key : str
        Candidates' header keywords (see :func:`candidate_positions`).
    ra_col, dec_col : str, optional
        Catalogue columns (see :func:`read_catalogue`).
    link : bool, default False
        Hard-link instead of copying.
    user : str, optional
        The ``user`` column; ``crossmatch:CATALOGUE`` by default.
    say : callable, optional
        Progress lines.

    Returns
    -------
    CrossmatchSummary

    Raises
    ------
    LabellingError
        If the catalogue is unreadable or has no sky columns, or no candidate has a
        position (name the keywords with ``ra_key``/``dec_key``).
    """
    from .labelling import LabelStore, candidate_name, find_candidates

    say = say or (lambda message: None)
    sky = read_catalogue(catalogue, ra_col=ra_col, dec_col=dec_col)
    references = find_candidates(cutouts, out)
    say(f"reading the positions of {len(references)} candidates ...")
    ra, dec = candidate_positions(references, ra_key=ra_key, dec_key=dec_key)
    has = np.isfinite(ra) & np.isfinite(dec)
    if not has.any():
        raise LabellingError(
            f"{cutouts}: no candidate has coordinates (header keywords {ra_key}/{dec_key} "
            "or a WCS); name the keywords with --ra-key/--dec-key"
        )
    say(f"matching {int(has.sum())} positions against {len(sky)} catalogue sources ...")
    matched, separation = match_positions(ra, dec, sky, radius=radius)
    store = LabelStore(out, link=link, user=user or f"crossmatch:{Path(catalogue).name}")
    summary = CrossmatchSummary(catalogue=str(catalogue), radius=float(radius))
    for i, reference in enumerate(references):
        name = candidate_name(reference)
        if not has[i]:
            summary.no_position.append(name)
        elif not matched[i]:
            summary.unmatched.append(name)
        elif name in store.labels:
            summary.already_labelled.append(name)
        else:
            store.record(reference, "real")
            summary.matched.append(name)
            summary.separation[name] = float(separation[i])
    return summary
