"""Checks of parameters and values shared by several modules.

Each check names the parameter, the value it got and what is allowed, and returns the
value in the form the caller uses. Commands turn the Python names into their flags
(see ``otrain.cli._common``).
"""

import difflib
import math
import numbers

import numpy as np

__all__ = []

# Pipelines write these for "unknown" (ZTF writes FWHM = -99).
_SENTINELS = (-99.0, -999.0, -9999.0, 99.0)
# Keywords where 99 is a legal value and must not be read as a sentinel.
_NO_99_SENTINEL = {"ra", "xpos", "ypos"}

# Seeds handed to Keras, TensorFlow and numpy: non-negative and below 2**31, which
# every one of them takes.
_SEED_LIMIT = 2**31 - 1


def seed_sequence(random_state, name="random_state"):
    """A :class:`numpy.random.SeedSequence` for ``random_state``, drawn without global state.

    ``random_state`` is read as :func:`sklearn.utils.check_random_state` reads it, and a
    :class:`numpy.random.Generator` is taken too: ``None`` gives fresh entropy from the
    operating system (never the process-wide ``np.random`` or ``random`` streams); an
    int gives the same sequence every time; a ``RandomState`` or ``Generator`` is drawn
    from, so that two fits sharing one instance get different seeds, as scikit-learn's
    estimators do.

    Parameters
    ----------
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
    name : str, default "random_state"
        The parameter's name, for the error message.

    Returns
    -------
    numpy.random.SeedSequence
    """
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"{name} must be a non-negative int, got {random_state}")
        return np.random.SeedSequence(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return np.random.SeedSequence(int(random_state.randint(0, 2**32 - 1, dtype=np.uint64)))
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(0, 2**63 - 1)))
    raise ValueError(
        f"{name} must be None, an int, a numpy RandomState or a numpy Generator, "
        f"got {random_state!r}"
    )


def spawn_seeds(sequence, n):
    """``n`` independent int seeds (below 2**31) from a :class:`~numpy.random.SeedSequence`."""
    return [int(s.generate_state(1)[0]) % _SEED_LIMIT for s in sequence.spawn(n)]


def check_int(value, name, *, low=None):
    """``value`` as an int, at least ``low``; bools and fractions are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if not (isinstance(value, numbers.Real) and float(value).is_integer()):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return value


def check_fraction(value, name, *, closed_high=False, open_low=False):
    """``value`` as a float in [0, 1) (or (0, 1), [0, 1] with the flags)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    low_ok = number > 0 if open_low else number >= 0
    high_ok = number <= 1 if closed_high else number < 1
    if isinstance(value, bool) or not (low_ok and high_ok):
        interval = f"{'(' if open_low else '['}0, 1{']' if closed_high else ')'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return number


def check_positive(value, name):
    """``value`` as a finite float > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def check_threshold(threshold, name="threshold", *, error=ValueError):
    """A decision threshold: a number in [0, 1]."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise error(f"{name} must be a number between 0 and 1, got {threshold!r}")
    return value


def check_choice(value, name, choices):
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}{hint}")
    return value


def check_network(network, networks):
    """A built-in network name of ``networks`` or a function ``build(inputs, *, dropout)``."""
    if callable(network):
        return network
    if not isinstance(network, str) or network not in networks:
        close = difflib.get_close_matches(str(network), list(networks), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"network must be one of {', '.join(networks)} or a function "
            f"build(inputs, *, dropout) -> features, got {network!r}{hint}"
        )
    return network


def check_unknown_parameters(names, known, estimator, routed_prefixes):
    """Refuse parameter names that are neither ``known`` nor routed by a known prefix."""
    for name in sorted(names):
        if name in known or name.startswith(routed_prefixes):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        prefixes = ", ".join(f"{p}..." for p in routed_prefixes)
        raise ValueError(
            f"{estimator} got an unknown parameter {name!r}{hint} (its parameters are "
            f"listed by get_params(); Keras settings go through {prefixes})"
        )


def check_channels(channels):
    """Channel names as an upper-case tuple: ``"SCI,REF,DIFF"`` or a sequence."""
    if isinstance(channels, str):
        channels = tuple(c.strip() for c in channels.split(",") if c.strip())
    channels = tuple(str(c).upper() for c in channels)
    if not channels:
        raise ValueError("channels must name at least one image, e.g. ('DIFF',)")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels must not repeat a name, got {channels}")
    return channels


def check_increasing(values, name, *, low=-math.inf, high=math.inf, example=None, error=ValueError):
    """Limits of bins: increasing finite numbers strictly between ``low`` and ``high``.

    Returns them as a 1-D float array; one value is enough (two bins).
    """
    try:
        limits = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        limits = np.array([np.nan])
    if (
        limits.ndim != 1
        or len(limits) == 0
        or not np.isfinite(limits).all()
        or not (np.diff(limits) > 0).all()
        or limits[0] <= low
        or limits[-1] >= high
    ):
        if math.isfinite(low) and math.isfinite(high):
            bounds = f" strictly between {low:g} and {high:g}"
        elif math.isfinite(low):
            bounds = f" above {low:g}"
        else:
            bounds = ""
        hint = f"; e.g. {example}" if example else ""
        raise error(
            f"{name} must be increasing finite numbers{bounds}, got "
            f"{list(np.ravel(values)) if np.ndim(values) else values!r}{hint}"
        )
    return limits


def check_scores(y_true, p_real):
    """Validate and convert ``y_true`` (0/1 ints) and ``p_real`` (floats in [0, 1])."""
    y_true = np.asarray(y_true)
    p_real = np.asarray(p_real)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y_true.shape}")
    if p_real.ndim != 1:
        hint = "; pass the probability of real, e.g. p[:, 1]" if p_real.ndim == 2 else ""
        raise ValueError(f"p_real must be one-dimensional, got shape {p_real.shape}{hint}")
    if len(y_true) != len(p_real):
        raise ValueError(
            f"y_true and p_real must have the same length, got {len(y_true)} and {len(p_real)}"
        )
    if len(y_true) == 0:
        raise ValueError("y_true and p_real are empty; there is no candidate to evaluate")
    if y_true.dtype.kind not in "biuf":
        raise ValueError(f"y_true must hold only 0 (bogus) and 1 (real), got dtype {y_true.dtype}")
    others = ~np.isin(y_true, (0, 1))
    if others.any():
        found = np.unique(y_true[others])[:5].tolist()
        raise ValueError(f"y_true must hold only 0 (bogus) and 1 (real), found {found}")
    if p_real.dtype.kind not in "biuf":
        raise ValueError(f"p_real must hold numbers, got dtype {p_real.dtype}")
    p_real = p_real.astype(np.float64)
    bad = ~np.isfinite(p_real) | (p_real < 0.0) | (p_real > 1.0)
    if bad.any():
        raise ValueError(
            f"p_real must hold probabilities between 0 and 1; {int(bad.sum())} values are "
            f"not (first: {p_real[bad][0]!r} at index {int(np.flatnonzero(bad)[0])})"
        )
    return y_true.astype(np.int64), p_real


def check_cutout_size(cutout_size):
    """A centre-crop size: a positive int, or -1/None for the native size."""
    if cutout_size is None or cutout_size == -1:
        return
    if not isinstance(cutout_size, int | np.integer) or cutout_size < 1:
        raise ValueError(f"cutout_size must be a positive integer or -1, got {cutout_size!r}")


def as_float(value, column):
    """A keyword value as a float; NaN when missing, unparseable or a sentinel.

    ``-99``, ``-999``, ``-9999`` and ``99`` mean "unknown" in O'TRAIN's keywords
    (``99`` is a valid right ascension and position, so not for those ``column``s).
    """
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return math.nan
    if not math.isfinite(number):
        return math.nan
    sentinels = _SENTINELS[:-1] if column in _NO_99_SENTINEL else _SENTINELS
    if number in sentinels:
        return math.nan
    return number
