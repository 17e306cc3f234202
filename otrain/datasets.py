"""Synthetic transient candidates: seeded real and bogus stamps for demos and tests.

The generator imitates what image subtraction produces around a candidate, so that
the demo, the tests and the examples can run without survey data:

* **real** (label 1, kind ``"point_source"``): a new point source with the image
  PSF, its flux set by a magnitude and the zero point, a fraction of a pixel off the
  centre of the stamp, sometimes on a host galaxy or on top of a variable star.
  Magnitudes reach past the detection limit, so the faintest real sources are
  genuinely hard to tell from noise.
* **bogus** (label 0), one named ``kind`` each, in equal shares:

  - ``"dipole"``: a star whose reference is misaligned by a fraction of a pixel
    (astrometric error, proper motion): PSF shifted minus PSF;
  - ``"cosmic_ray"``: a cosmic-ray hit or hot pixel in the science image, a sharp
    spot or a short track narrower than the PSF;
  - ``"psf_mismatch"``: a star or galaxy nucleus subtracted with a kernel of the
    wrong width: positive core with a negative ring, or the reverse;
  - ``"saturated"``: a saturated star, whose flat tops and bleed trails differ
    between the science and reference images: large structures with strong
    negative parts;
  - ``"streak"``: a satellite or aircraft trail crossing the stamp;
  - ``"nan_patch"``: a masked region (bad columns, CCD gap, masked star) as a block
    of NaN, sometimes with a partial residual on its border.

Each stamp is built as a science image (sky, static stars, sometimes a host galaxy,
and the transient or artefact), a reference image (the same static scene, less
noisy, without the transient) and their difference, ``DIFF = SCI - REF``. The
reference is stored PSF-matched to the science image, so the difference is exactly
the pixel-wise subtraction of the other two channels. Every stamp carries the small
misalignment and kernel error of a real subtraction, so bright neighbours leave
faint residuals in both classes. A few stamps of both classes are cut at the edge of
their parent image: that part is NaN, and the stamp is flagged ``EDGE='True'``.

The point spread function is a core-plus-halo double Gaussian (the model of
several survey pipelines), integrated exactly over the pixels; galaxies are an
exponential disc written as a mixture of Gaussians, so that their convolution with
the PSF is exact as well. Only numpy and astropy are needed.

Everything is drawn from one :func:`numpy.random.default_rng` seeded by
``random_state``: the same seed gives identical arrays and identical files.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from ._atomic import atomic_output, ensure_folder
from .exceptions import OutputError

__all__ = [
    "BOGUS_KINDS",
    "REAL_KIND",
    "TRIPLET_CHANNELS",
    "make_stamps",
    "write_cutouts",
    "make_training_set",
    "make_candidates",
    "make_demo_data",
]

#: Names of the artefacts simulated as bogus candidates, in equal shares.
BOGUS_KINDS = ("dipole", "cosmic_ray", "psf_mismatch", "saturated", "streak", "nan_patch")

#: Kind of every real candidate: a new point source.
REAL_KIND = "point_source"

#: Channel order of triplet stamps.
TRIPLET_CHANNELS = ("SCI", "REF", "DIFF")

# Parent images are ZTF-quadrant-like: 3072 pixels a side at 1 arcsec per pixel.
_PARENT_SIZE = 3072
_PIXEL_SCALE = 1.0 / 3600.0
_ZERO_POINTS = {"g": 26.3, "r": 26.2, "i": 25.8}
_FILTER_WEIGHTS = {"g": 0.4, "r": 0.45, "i": 0.15}

# Exponential disc of half-light radius 1 as three Gaussians (weights, sigmas),
# least-squares fit of the 2-D profile out to 4 half-light radii (10% worst error,
# in the faint outskirts).
_EXP_WEIGHTS = np.array([0.0318, 0.3404, 0.6278])
_EXP_SIGMAS = np.array([0.1861, 0.5388, 1.1703])

# Measured FWHM / PSF FWHM of each kind, (low, high), as a source extractor would
# report them: the ratio is what O'TRAIN's diagnostics plot.
_FWHM_RATIO = {
    "dipole": (0.9, 1.8),
    "psf_mismatch": (0.6, 1.6),
    "saturated": (2.5, 8.0),
    "streak": (1.5, 6.0),
    "nan_patch": (0.5, 3.0),
}

# The keywords written in every cutout, with the meta column each comes from.
_HEADER_COLUMNS = (
    ("CANDID", "candid"),
    ("MAG", "mag"),
    ("MAGERR", "magerr"),
    ("FILTER", "filter"),
    ("FWHM", "fwhm"),
    ("FWHMPSF", "fwhmpsf"),
    ("EDGE", "edge"),
    ("RA", "ra"),
    ("DEC", "dec"),
    ("FILE", "file"),
    ("XPOS", "xpos"),
    ("YPOS", "ypos"),
)

_META_UNITS = {
    "mag": "mag",
    "magerr": "mag",
    "fwhm": "pix",
    "fwhmpsf": "pix",
    "xpos": "pix",
    "ypos": "pix",
    "ra": "deg",
    "dec": "deg",
}


# --------------------------------------------------------------------------------------
# Observing conditions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """One parent exposure: the conditions its stamps share."""

    name: str
    filter: str
    zp: float
    fwhm: float
    psf: tuple  # (weights, sigma_x, sigma_y) of the two Gaussians
    sky: float
    gain: float
    read_noise: float
    ref_noise_ratio: float
    saturation: float
    star_density: float
    ra0: float
    dec0: float
    noise: float  # background standard deviation of the science image
    neff: float  # effective number of pixels of a PSF fit
    m5: float  # magnitude detected at 5 sigma in the difference image
    m_sat: float  # magnitude whose peak pixel reaches saturation

    def wcs(self):
        """Tangent-plane WCS of the parent image."""
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [self.ra0, self.dec0]
        wcs.wcs.crpix = [(_PARENT_SIZE + 1) / 2, (_PARENT_SIZE + 1) / 2]
        wcs.wcs.cdelt = [-_PIXEL_SCALE, _PIXEL_SCALE]
        return wcs


def _half_max_radius(halo_weight, halo_scale):
    """Half-maximum radius of the double Gaussian, in units of the core sigma."""

    def profile(r):
        core = (1 - halo_weight) * math.exp(-0.5 * r * r)
        halo = halo_weight / halo_scale**2 * math.exp(-0.5 * (r / halo_scale) ** 2)
        return core + halo

    half = profile(0.0) / 2
    low, high = 0.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if profile(mid) > half else (low, mid)
    return (low + high) / 2


def _make_psf(fwhm, ellipticity, along_x, halo_weight, halo_scale):
    sigma = fwhm / (2 * _half_max_radius(halo_weight, halo_scale))
    # Tracking and focus errors elongate the PSF mostly along a detector axis, which
    # keeps the PSF separable and its pixel integration exact.
    stretch = 1 + ellipticity / 2
    sx, sy = (sigma * stretch, sigma / stretch) if along_x else (sigma / stretch, sigma * stretch)
    weights = np.array([1 - halo_weight, halo_weight])
    return weights, np.array([sx, sx * halo_scale]), np.array([sy, sy * halo_scale])


def _scale_psf(psf, factor):
    weights, sx, sy = psf
    return weights, sx * factor, sy * factor


def _draw_field(rng, index, prefix):
    filters = list(_FILTER_WEIGHTS)
    band = filters[rng.choice(len(filters), p=list(_FILTER_WEIGHTS.values()))]
    fwhm = rng.uniform(1.5, 4.5)
    psf = _make_psf(
        fwhm,
        ellipticity=rng.uniform(0.0, 0.15),
        along_x=bool(rng.integers(2)),
        halo_weight=rng.uniform(0.05, 0.2),
        halo_scale=rng.uniform(2.0, 3.0),
    )
    zp = _ZERO_POINTS[band] + rng.normal(0, 0.1)
    sky = rng.uniform(60, 320)
    gain = rng.uniform(1.0, 2.5)
    read_noise = rng.uniform(3, 8)
    ref_noise_ratio = rng.uniform(0.15, 0.45)
    saturation = rng.uniform(20000, 50000)
    noise = math.sqrt(sky / gain + read_noise**2)
    stamp = _render_points(64, np.array([32.0]), np.array([32.0]), np.array([1.0]), psf)
    neff = 1 / float(np.sum(stamp**2))
    var = noise**2 * (1 + ref_noise_ratio**2) * neff
    # Flux detected at 5 sigma, photon noise of the source included.
    flux5 = (25 / gain + math.sqrt((25 / gain) ** 2 + 4 * 25 * var)) / 2
    flux_sat = (saturation - sky) / float(stamp.max())
    return _Field(
        name=f"{prefix}{index:03d}.fits",
        filter=band,
        zp=zp,
        fwhm=fwhm,
        psf=psf,
        sky=sky,
        gain=gain,
        read_noise=read_noise,
        ref_noise_ratio=ref_noise_ratio,
        saturation=saturation,
        star_density=rng.uniform(1.0, 10.0),
        ra0=rng.uniform(0, 360),
        dec0=float(np.degrees(np.arcsin(rng.uniform(-0.5, 0.95)))),
        noise=noise,
        neff=neff,
        m5=zp - 2.5 * math.log10(flux5),
        m_sat=zp - 2.5 * math.log10(flux_sat),
    )


# --------------------------------------------------------------------------------------
# Rendering (all images are indexed [y, x]; pixel j covers [j - 0.5, j + 0.5])
# --------------------------------------------------------------------------------------


def _erf(x):
    # Abramowitz & Stegun 7.1.26 (error below 1.5e-7): numpy has no erf, and scipy
    # is not a dependency of this module.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1 / (1 + 0.3275911 * x)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1 - poly * np.exp(-x * x))


def _pixel_profile(centres, sigmas, size):
    """Fraction of a 1-D Gaussian falling in each pixel, shape (k, size)."""
    edges = np.arange(size + 1) - 0.5
    z = (edges[None, :] - centres[:, None]) / (math.sqrt(2) * sigmas[:, None])
    return 0.5 * np.diff(_erf(z), axis=1)


def _render_points(size, x, y, flux, psf):
    """Point sources of total flux ``flux`` at (x, y), integrated over the pixels."""
    weights, sx, sy = psf
    image = np.zeros((size, size))
    for weight, sigma_x, sigma_y in zip(weights, sx, sy, strict=True):
        px = _pixel_profile(x, np.full(len(x), sigma_x), size)
        py = _pixel_profile(y, np.full(len(y), sigma_y), size)
        image += np.einsum("k,ky,kx->yx", flux * weight, py, px)
    return image


def _render_galaxy(size, galaxy, psf):
    """Exponential disc (x, y, flux, r_eff, q, angle) convolved with the PSF."""
    x0, y0, flux, r_eff, q, angle = galaxy
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xx - x0, yy - y0
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    image = np.zeros((size, size))
    for g_weight, g_sigma in zip(_EXP_WEIGHTS, _EXP_SIGMAS, strict=True):
        shape = np.diag([(g_sigma * r_eff) ** 2, (g_sigma * r_eff * q) ** 2])
        shape = rotation @ shape @ rotation.T
        for p_weight, sx, sy in zip(*psf, strict=True):
            # Convolution adds covariances; 1/12 pixel^2 stands for the pixel box.
            cov = shape + np.diag([sx**2 + 1 / 12, sy**2 + 1 / 12])
            inv = np.linalg.inv(cov)
            chi2 = inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2
            norm = 2 * math.pi * math.sqrt(np.linalg.det(cov))
            image += flux * g_weight * p_weight * np.exp(-0.5 * chi2) / norm
    return image


def _render_streak(size, x0, y0, angle, peak, psf, rng):
    """A trail through (x0, y0): the PSF across it, uniform (or glinting) along it."""
    weights, sx, sy = psf
    # Satellites and aircraft are out of focus: their trails are wider than stars.
    widen = rng.uniform(1.0, 1.3)
    sigmas = np.sqrt(((sx + sy) / 2 * widen) ** 2 + 1 / 12)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    along = (xx - x0) * math.cos(angle) + (yy - y0) * math.sin(angle)
    across = -(xx - x0) * math.sin(angle) + (yy - y0) * math.cos(angle)
    profile = sum(
        w * np.exp(-0.5 * (across / s) ** 2) / s for w, s in zip(weights, sigmas, strict=True)
    )
    if rng.random() < 0.3:
        # The trail ends inside the stamp, past the candidate.
        end = rng.uniform(2, size / 3) * rng.choice([-1, 1])
        profile = profile * 0.5 * (1 + _erf(np.sign(end) * (end - along) / (1.4 * sigmas[0])))
    if rng.random() < 0.3:
        # A tumbling satellite glints periodically.
        depth, period = rng.uniform(0.2, 0.6), rng.uniform(6, 20)
        profile = profile * (1 + depth * np.sin(2 * math.pi * along / period + rng.uniform(0, 6)))
    return peak * profile / max(float(profile.max()), 1e-12)


def _deposit(image, x, y, amplitude):
    """Add point charges at (x, y) shared bilinearly between four pixels."""
    size = image.shape[0]
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - ix, y - iy
    for ox, oy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        px, py = ix + ox, iy + oy
        inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        np.add.at(image, (py[inside], px[inside]), (amplitude * w)[inside])


def _render_cosmic(size, x0, y0, peak, rng):
    """A hot pixel, a compact hit or a short track, sharper than any PSF."""
    image = np.zeros((size, size))
    style = rng.choice(["hot_pixel", "spot", "track"], p=[0.3, 0.3, 0.4])
    if style == "hot_pixel":
        ix, iy = int(round(x0)), int(round(y0))
        image[iy, ix] = 1.0
        if rng.random() < 0.4:
            # Hot pixels often leak charge into the next pixel of the readout.
            image[iy, min(ix + 1, size - 1)] += rng.uniform(0.1, 0.5)
    elif style == "spot":
        n = rng.integers(2, 6)
        x = x0 + rng.normal(0, 0.6, n)
        y = y0 + rng.normal(0, 0.6, n)
        _deposit(image, x, y, rng.uniform(0.3, 1.0, n))
    else:
        length = rng.uniform(3, 14)
        angle = rng.uniform(0, math.pi)
        s = np.arange(-length / 2, length / 2, 0.25)
        start = rng.uniform(-0.4, 0.4) * length
        x = x0 + (s + start) * math.cos(angle)
        y = y0 + (s + start) * math.sin(angle)
        # Energy deposited along a track fluctuates (Landau tails).
        _deposit(image, x, y, rng.gamma(2.0, 0.5, len(s)))
    return peak * image / image.max()


def _bleed(model, level, rng):
    """Saturate ``model`` at ``level``, spilling the excess charge along columns."""
    saturated = model >= level
    out = np.minimum(model, level)
    for column in np.flatnonzero(saturated.any(axis=0)):
        rows = np.flatnonzero(saturated[:, column])
        excess = float(np.sum(model[rows, column] - level))
        spill = excess / level
        up = spill * rng.uniform(0.3, 0.7)
        top = int(round(rows.min() - up))
        bottom = int(round(rows.max() + spill - up))
        out[max(top, 0) : min(bottom, model.shape[0] - 1) + 1, column] = level
    return out


def _noisy(model, variance_scale, field, rng):
    """Add Poisson-like (Gaussian) noise: photon noise of the model plus read noise."""
    variance = (np.clip(model, 0, None) / field.gain + field.read_noise**2) * variance_scale
    return model + rng.normal(0.0, 1.0, model.shape) * np.sqrt(variance)


# --------------------------------------------------------------------------------------
# One stamp
# --------------------------------------------------------------------------------------


def _log_uniform(rng, low, high):
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _mag_to_flux(mag, field):
    return 10 ** (-0.4 * (mag - field.zp))


def _static_stars(rng, field, size):
    """Background stars, brighter ones rarer (N(<m) ~ 10**(0.3 m))."""
    n = rng.poisson(field.star_density * (size / 64) ** 2)
    low, high = 10 ** (0.3 * (field.m_sat + 1.5)), 10 ** (0.3 * (field.m5 + 1.0))
    mags = np.log10(rng.uniform(low, high, n)) / 0.3
    x = rng.uniform(-3, size + 2, n)
    y = rng.uniform(-3, size + 2, n)
    return x, y, _mag_to_flux(mags, field)


def _host(rng, field, x, y, mag_range, r_range):
    r_eff = rng.uniform(*r_range)
    offset = r_eff * rng.uniform(0, 1.5)
    direction = rng.uniform(0, 2 * math.pi)
    return (
        x - offset * math.cos(direction),
        y - offset * math.sin(direction),
        _mag_to_flux(rng.uniform(*mag_range), field),
        r_eff,
        rng.uniform(0.35, 1.0),
        rng.uniform(0, math.pi),
    )


def _nan_mask(rng, size, x0, y0):
    """A masked region whose border passes near the candidate."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    style = rng.choice(["block", "columns", "blob"], p=[0.5, 0.25, 0.25])
    # The border keeps clear of the candidate's own pixel (half a diagonal away).
    gap = rng.uniform(0.75, 3.5)
    if style == "block":
        # CCD gap or masked region: a half plane, sometimes cut to a rectangle.
        angle = rng.choice([0, 0.5, 1.0, 1.5]) * math.pi
        normal = (xx - x0) * math.cos(angle) + (yy - y0) * math.sin(angle)
        mask = normal > gap
        if rng.random() < 0.5:
            side = (yy - y0) * math.cos(angle) - (xx - x0) * math.sin(angle)
            mask &= np.abs(side - rng.uniform(-8, 8)) < rng.uniform(6, size / 2)
    elif style == "columns":
        width = int(rng.integers(1, 5))
        vertical = rng.random() < 0.5
        position = x0 if vertical else y0
        if rng.random() < 0.5:
            start = int(math.floor(position + gap + 0.5))
        else:
            start = int(math.floor(position - gap + 0.5)) - width + 1
        mask = np.zeros((size, size), bool)
        mask[:, max(start, 0) : max(start + width, 0)] = True
        if not vertical:
            mask = mask.T.copy()
    else:
        # Mask of a bright star: a disc next to the candidate.
        radius = rng.uniform(4, 12)
        direction = rng.uniform(0, 2 * math.pi)
        cx = x0 + (radius + gap) * math.cos(direction)
        cy = y0 + (radius + gap) * math.sin(direction)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
    if not mask.any():
        mask[int(round(y0)), min(int(round(x0)) + 2, size - 1)] = True
    return mask


def _border(mask):
    """Pixels next to the mask, outside it."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown & ~mask


def _aperture_photometry(diff, x0, y0, field, variance):
    """Positive flux and its error in an aperture of 1.5 PSF FWHM around the candidate.

    A detection pipeline finds candidates on the positive side of the difference
    image, so only positive pixels count, less what pure noise would give them.
    """
    size = diff.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx - x0) ** 2 + (yy - y0) ** 2 <= (1.5 * field.fwhm) ** 2
    values = diff[inside]
    values = values[np.isfinite(values)]
    noise = math.sqrt(variance)
    flux = float(np.sum(np.clip(values, 0, None))) - len(values) * noise / math.sqrt(2 * math.pi)
    sigma = math.sqrt(max(len(values), 1) * variance + max(flux, 0.0) / field.gain)
    return flux, sigma


def _simulate(rng, field, kind, size, *, mag=None, host_prob=0.35, variable_prob=0.0):
    """One stamp of ``kind``: (sci, ref, diff) images and the measured quantities."""
    centre = size // 2
    radius = 1.5 * math.sqrt(rng.random())
    direction = rng.uniform(0, 2 * math.pi)
    x0 = centre + radius * math.cos(direction)
    y0 = centre + radius * math.sin(direction)

    psf_sci = field.psf
    # Every subtraction is slightly imperfect: the reference keeps a small
    # misalignment, kernel error and photometric scaling error, so bright
    # neighbours leave faint residuals whatever the class.
    ref_shift = rng.normal(0, 0.04, 2)
    ref_width = 1 + rng.normal(0, 0.015)
    ref_scale = 1 + rng.normal(0, 0.01)

    stars_x, stars_y, stars_flux = _static_stars(rng, field, size)
    galaxies = []
    sci_extra = np.zeros((size, size))  # transient or artefact, science image only
    # Static star at the candidate: {"flux" or "residual" (in noise units), "shift"
    # (extra misalignment of its reference)}.
    centre_star = None
    saturate = False
    mask = None
    truth = {"mag_true": math.nan}

    if kind == REAL_KIND:
        truth["mag_true"] = mag
        flux = _mag_to_flux(mag, field)
        sci_extra += _render_points(size, np.array([x0]), np.array([y0]), np.array([flux]), psf_sci)
        if rng.random() < variable_prob:
            # A variable star brightening: the star is in both images.
            quiescent = _mag_to_flux(rng.uniform(mag - 1.5, field.m5 + 0.5), field)
            centre_star = {"flux": quiescent, "shift": (0.0, 0.0)}
        elif rng.random() < host_prob:
            galaxies.append(_host(rng, field, x0, y0, (field.m5 - 5, field.m5 - 1), (1.5, 6.0)))
    elif kind == "dipole":
        shift = rng.uniform(0.25, 1.2)
        angle = rng.uniform(0, 2 * math.pi)
        offset = (shift * math.cos(angle), shift * math.sin(angle))
        if rng.random() < 0.5:
            # Astrometric error of the whole reference: every star makes a dipole.
            ref_shift = ref_shift + offset
            offset = (0.0, 0.0)
        # Otherwise proper motion or differential refraction: this star only.
        centre_star = {"residual": _log_uniform(rng, 4, 60), "shift": offset}
    elif kind == "psf_mismatch":
        ref_width = 1 + rng.choice([-1, 1]) * rng.uniform(0.12, 0.4)
        centre_star = {"residual": _log_uniform(rng, 4, 60), "shift": (0.0, 0.0)}
        if rng.random() < 0.3:
            # A galaxy nucleus: a compact bulge around an unresolved core.
            bulge = _host(rng, field, x0, y0, (field.m5 - 5, field.m5 - 2.5), (0.8, 2.5))
            galaxies.append((x0, y0, *bulge[2:]))
    elif kind == "saturated":
        centre_star = {
            "flux": _mag_to_flux(field.m_sat - rng.uniform(0.3, 2.5), field),
            "shift": tuple(rng.normal(0, 0.1, 2)),
        }
        ref_width = 1 + rng.normal(0, 0.04)
        saturate = True
    elif kind == "cosmic_ray":
        sci_extra += _render_cosmic(size, x0, y0, field.noise * _log_uniform(rng, 6, 150), rng)
    elif kind == "streak":
        peak = field.noise * _log_uniform(rng, 3, 25)
        sci_extra += _render_streak(size, x0, y0, rng.uniform(0, math.pi), peak, psf_sci, rng)
    elif kind == "nan_patch":
        mask = _nan_mask(rng, size, x0, y0)
        if rng.random() < 0.5:
            # What was being masked leaks out: a misaligned, mismatched star.
            centre_star = {
                "residual": _log_uniform(rng, 3, 30),
                "shift": tuple(rng.normal(0, 0.5, 2)),
            }
            ref_width = 1 + rng.normal(0, 0.15)
    else:
        raise ValueError(f"unknown kind {kind!r}; use {REAL_KIND!r} or one of {BOGUS_KINDS}")

    psf_ref = _scale_psf(psf_sci, ref_width)
    variance = field.noise**2 * (1 + field.ref_noise_ratio**2)
    if centre_star is not None:
        extra_x, extra_y = centre_star["shift"]
        star_flux = centre_star.get("flux")
        if star_flux is None:
            # The artefact's strength is set by its residual, in noise units, which
            # keeps most artefacts visible whatever the field.
            unit = _render_points(size, np.array([x0]), np.array([y0]), np.ones(1), psf_sci)
            unit -= ref_scale * _render_points(
                size,
                np.array([x0 + extra_x + ref_shift[0]]),
                np.array([y0 + extra_y + ref_shift[1]]),
                np.ones(1),
                psf_ref,
            )
            star_flux = centre_star["residual"] * math.sqrt(variance) / float(np.abs(unit).max())
            star_flux = min(star_flux, _mag_to_flux(field.m_sat + 0.5, field))
        stars_x_sci = np.append(stars_x, x0)
        stars_y_sci = np.append(stars_y, y0)
        stars_x_ref = np.append(stars_x, x0 + extra_x)
        stars_y_ref = np.append(stars_y, y0 + extra_y)
        stars_flux = np.append(stars_flux, star_flux)
    else:
        stars_x_sci = stars_x_ref = stars_x
        stars_y_sci = stars_y_ref = stars_y

    sci = field.sky + _render_points(size, stars_x_sci, stars_y_sci, stars_flux, psf_sci)
    ref = field.sky + ref_scale * _render_points(
        size, stars_x_ref + ref_shift[0], stars_y_ref + ref_shift[1], stars_flux, psf_ref
    )
    for galaxy in galaxies:
        sci += _render_galaxy(size, galaxy, psf_sci)
        moved = (galaxy[0] + ref_shift[0], galaxy[1] + ref_shift[1], *galaxy[2:])
        ref += ref_scale * _render_galaxy(size, moved, psf_ref)
    sci += sci_extra

    if saturate:
        level_ref = field.saturation * rng.uniform(0.7, 1.3)
        sci = _bleed(sci, field.saturation, rng)
        ref = _bleed(ref, level_ref, rng)
        sat_sci, sat_ref = sci >= field.saturation, ref >= level_ref
    # The reference is a stack of many exposures: same signal, less noise.
    sci = _noisy(sci, 1.0, field, rng)
    ref = _noisy(ref, field.ref_noise_ratio**2, field, rng)
    if saturate:
        # Saturated pixels read the full-well value, without noise: flat tops.
        sci[sat_sci] = field.saturation
        ref[sat_ref] = level_ref

    if mask is not None:
        in_sci = rng.random() < 0.6
        target = sci if in_sci else ref
        if rng.random() < 0.4:
            # Interpolation across the mask leaves a bright rim on its border.
            target[_border(mask)] += field.noise * rng.uniform(3, 15)
        target[mask] = np.nan
    diff = sci - ref

    if kind == REAL_KIND:
        # A PSF fit measures the flux, with the noise of the background and source.
        sigma = math.sqrt(flux / field.gain + field.neff * variance)
        measured = flux + rng.normal(0, sigma)
        # Faint detections are sized less precisely.
        fwhm = field.fwhm * (1 + rng.normal(0, 0.05 + 0.5 * sigma / flux))
    else:
        measured, sigma = _aperture_photometry(diff, x0, y0, field, variance)
        if kind == "cosmic_ray":
            fwhm = rng.uniform(0.5, 1.3)
        else:
            fwhm = field.fwhm * rng.uniform(*_FWHM_RATIO[kind])
    # The pipeline reports the measured signal-to-noise ratio; an undetectable flux
    # is reported at the 1-sigma level, as an upper limit.
    snr = measured / sigma
    measured = max(measured, sigma)
    return {
        "sci": sci,
        "ref": ref,
        "diff": diff,
        "offset": (x0 - centre, y0 - centre),
        "mag": field.zp - 2.5 * math.log10(measured),
        "magerr": 1.0857 * sigma / measured,
        "fwhm": max(fwhm, 0.5),
        "snr": snr,
        **truth,
    }


def _edge_band(rng, size):
    """NaN band of a stamp cut at the parent image's edge: {side: width}."""
    sides = ["left", "right", "bottom", "top"]
    first = sides[rng.integers(4)]
    band = {first: int(rng.integers(3, size // 2 - 4))}
    if rng.random() < 0.25:
        # A corner of the parent image: two adjacent sides.
        horizontal = first in ("left", "right")
        second = (
            ["bottom", "top"][rng.integers(2)] if horizontal else ["left", "right"][rng.integers(2)]
        )
        band[second] = int(rng.integers(3, size // 2 - 4))
    return band


def _apply_band(images, band):
    for image in images:
        for side, width in band.items():
            if side == "left":
                image[:, :width] = np.nan
            elif side == "right":
                image[:, -width:] = np.nan
            elif side == "bottom":
                image[:width, :] = np.nan
            else:
                image[-width:, :] = np.nan


def _stamp_origin(rng, size, band):
    """Parent-image pixel (1-based) of the stamp's centre pixel, consistent with ``band``."""
    centre = size // 2
    low, high = centre + 1, _PARENT_SIZE - (size - 1 - centre)
    origin = [float(rng.integers(low, high + 1)), float(rng.integers(low, high + 1))]
    for side, width in band.items():
        axis = 0 if side in ("left", "right") else 1
        if side in ("left", "bottom"):
            origin[axis] = float(centre + 1 - width)
        else:
            origin[axis] = float(_PARENT_SIZE - size + 1 + centre + width)
    return origin


# --------------------------------------------------------------------------------------
# Many stamps
# --------------------------------------------------------------------------------------


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 24:
        raise ValueError(f"size must be an integer of at least 24 pixels, got {size!r}")
    return int(size)


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _simulate_set(rng, plan, size, triplets, edge_fraction, id_prefix, field_prefix):
    """Simulate the stamps of ``plan``, a list of dicts (kind, label, mag, ...).

    Returns the images, the meta table (in ``plan`` order) and the true positions.
    """
    n = len(plan)
    n_fields = max(1, math.ceil(n / 50))
    fields = [_draw_field(rng, i, field_prefix) for i in range(n_fields)]
    field_of = rng.integers(n_fields, size=n)
    # Exactly round(fraction * n) edge stamps in each class, so that tests and
    # users can count on the share.
    edge = np.zeros(n, bool)
    for label in (0, 1):
        members = [i for i, row in enumerate(plan) if row["label"] == label]
        n_edge = int(round(edge_fraction * len(members)))
        if n_edge:
            edge[rng.choice(members, n_edge, replace=False)] = True

    channels = 3 if triplets else 1
    images = np.empty((n, size, size, channels), np.float32)
    rows = []
    true_xy = np.empty((n, 2))
    for i, row in enumerate(plan):
        field = fields[field_of[i]]
        mag = field.m5 + row["depth"] if row["kind"] == REAL_KIND else None
        stamp = _simulate(
            rng,
            field,
            row["kind"],
            size,
            mag=mag,
            host_prob=row.get("host_prob", 0.35),
            variable_prob=row.get("variable_prob", 0.0),
        )
        band = _edge_band(rng, size) if edge[i] else {}
        planes = [stamp["sci"], stamp["ref"], stamp["diff"]] if triplets else [stamp["diff"]]
        _apply_band(planes, band)
        images[i] = np.stack(planes, axis=-1)
        origin = _stamp_origin(rng, size, band)
        true_xy[i] = (origin[0] + stamp["offset"][0], origin[1] + stamp["offset"][1])
        # Centroids of faint detections wander by a fraction of the PSF.
        jitter = rng.normal(0, min(0.5, 0.4 * field.fwhm / max(abs(stamp["snr"]), 1)), 2)
        rows.append(
            {
                "candid": f"{id_prefix}{i:06d}",
                "mag": round(stamp["mag"], 4),
                "magerr": round(stamp["magerr"], 4),
                "fwhm": round(stamp["fwhm"], 3),
                "fwhmpsf": round(field.fwhm, 3),
                "kind": row["kind"],
                "edge": bool(edge[i]),
                "xpos": round(true_xy[i, 0] + jitter[0], 3),
                "ypos": round(true_xy[i, 1] + jitter[1], 3),
                "filter": field.filter,
                "file": field.name,
                "snr": round(stamp["snr"], 2),
                "mag_true": stamp["mag_true"],
            }
        )
    meta = Table(rows=rows) if rows else _empty_meta()
    ra = np.empty(n)
    dec = np.empty(n)
    true_ra = np.empty(n)
    true_dec = np.empty(n)
    for index, field in enumerate(fields):
        members = field_of == index
        if members.any():
            wcs = field.wcs()
            ra[members], dec[members] = wcs.all_pix2world(
                meta["xpos"][members], meta["ypos"][members], 1
            )
            true_ra[members], true_dec[members] = wcs.all_pix2world(
                true_xy[members, 0], true_xy[members, 1], 1
            )
    if rows:
        meta["ra"] = np.round(ra, 7)
        meta["dec"] = np.round(dec, 7)
    truth = Table({"xpos": true_xy[:, 0], "ypos": true_xy[:, 1], "ra": true_ra, "dec": true_dec})
    return images, meta, truth


def _empty_meta():
    names = ["candid", "mag", "magerr", "fwhm", "fwhmpsf", "kind", "edge", "xpos", "ypos"]
    names += ["filter", "file", "snr", "mag_true", "ra", "dec"]
    dtypes = ["U16", float, float, float, float, "U16", bool, float, float]
    dtypes += ["U1", "U32", float, float, float, float]
    return Table(names=names, dtype=dtypes)


def _finish_meta(meta):
    """Public column order and units; drops the bookkeeping columns."""
    columns = ["candid", "mag", "magerr", "fwhm", "fwhmpsf", "kind", "edge", "xpos", "ypos"]
    columns += ["ra", "dec", "filter", "file", "snr"]
    meta = meta[columns]
    for name, unit in _META_UNITS.items():
        meta[name].unit = unit
    return meta


def _real_depths(rng, n):
    # Magnitudes relative to the 5-sigma limit: mostly well detected, about one in
    # eight below the limit, the hard cases.
    return rng.uniform(-5.0, 0.7, n)


def _bogus_kinds(rng, n):
    kinds = np.resize(np.array(BOGUS_KINDS), n)
    return kinds[rng.permutation(n)]


def make_stamps(n_real, n_bogus, *, size=64, triplets=False, edge_fraction=0.03, random_state=None):
    """Simulate labelled real and bogus stamps in memory.

    Parameters
    ----------
    n_real : int
        Number of real candidates (new point sources).
    n_bogus : int
        Number of bogus candidates, shared evenly between :data:`BOGUS_KINDS`.
    size : int, default 64
        Side of the square stamps, in pixels (at least 24).
    triplets : bool, default False
        If True, each stamp has three channels, science, reference and difference
        (:data:`TRIPLET_CHANNELS`); if False, the difference image only.
    edge_fraction : float, default 0.03
        Share of the stamps of each class cut at the edge of their parent image:
        one or two sides are NaN and ``edge`` is True.
    random_state : int, numpy.random.Generator or None, default None
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same
        stamps.

    Returns
    -------
    images : ndarray of shape (n_real + n_bogus, size, size, C), float32
        The stamps, ``C`` = 1 or 3, in shuffled order. Pixels are finite except in
        the NaN band of edge stamps and the masked block of ``"nan_patch"`` stamps.
    labels : ndarray of shape (n_real + n_bogus,), int
        1 for real, 0 for bogus.
    meta : astropy.table.Table
        One row per stamp: ``candid``, ``mag``, ``magerr``, ``fwhm``, ``fwhmpsf``,
        ``kind``, ``edge``, ``xpos``, ``ypos``, ``ra``, ``dec``, ``filter``,
        ``file`` (the parent image) and ``snr`` (signal-to-noise ratio of the
        detection; below 5 for the faintest real sources).

    Examples
    --------
    >>> from otrain.datasets import make_stamps
    >>> images, labels, meta = make_stamps(20, 20, random_state=0)
    >>> images.shape, labels.sum()
    ((40, 64, 64, 1), np.int64(20))
    """
    n_real = _check_count("n_real", n_real)
    n_bogus = _check_count("n_bogus", n_bogus)
    size = _check_size(size)
    edge_fraction = _check_fraction("edge_fraction", edge_fraction)
    rng = np.random.default_rng(random_state)
    plan = [{"kind": REAL_KIND, "label": 1, "depth": d} for d in _real_depths(rng, n_real)]
    plan += [{"kind": str(k), "label": 0} for k in _bogus_kinds(rng, n_bogus)]
    plan = [plan[i] for i in rng.permutation(len(plan))]
    images, meta, _ = _simulate_set(rng, plan, size, triplets, edge_fraction, "stamp", "field")
    labels = np.array([row["label"] for row in plan], dtype=int)
    return images, labels, _finish_meta(meta)


# --------------------------------------------------------------------------------------
# Writing FITS files
# --------------------------------------------------------------------------------------


def _fits_value(key, value):
    if isinstance(value, bool | np.bool_):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, int | np.integer):
        return f"{int(value):>20d}"
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(
                f"keyword {key} is {value}; FITS headers cannot hold NaN or inf, "
                "write -99 for an unknown value as O'TRAIN does"
            )
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            if "." not in mantissa:
                mantissa += ".0"
            text = f"{mantissa}E{int(exponent):+03d}"
        elif "." not in text:
            text += ".0"
        if len(text) > 20:
            text = f"{value:.14E}"
        return f"{text:>20}"
    text = str(value).replace("'", "''")
    if len(text) > 68 or not text.isascii():
        raise ValueError(f"keyword {key} = {value!r} is not a short ASCII string (68 characters)")
    return f"'{text:<8}'"


def _header(cards):
    """FITS header bytes: 80-character cards, END, padded to 2880-byte blocks."""
    lines = [f"{key:<8}= {_fits_value(key, value)}".ljust(80) for key, value in cards]
    lines.append("END".ljust(80))
    text = "".join(lines)
    return (text + " " * (-len(text) % 2880)).encode("ascii")


def _data(image):
    raw = np.ascontiguousarray(image, dtype=">f4").tobytes()
    return raw + b"\0" * (-len(raw) % 2880)


def write_cutouts(folder, images, meta, *, triplets):
    """Write one FITS file per stamp, ``<candid>.fits``, with O'TRAIN's keywords.

    The files are written directly (not through :mod:`astropy.io.fits`), which makes
    a thousand of them take a fraction of a second; astropy and
    :func:`otrain.cutouts.read_cutout` read them as any other FITS file.

    Parameters
    ----------
    folder : str or path-like
        Output folder, created if needed. Files of the same name are replaced.
    images : ndarray of shape (n, H, W, C)
        The stamps; ``C`` must be 3 (SCI, REF, DIFF) for triplets and 1 otherwise.
    meta : astropy.table.Table
        One row per stamp with columns ``candid``, ``mag``, ``magerr``, ``filter``,
        ``fwhm``, ``fwhmpsf``, ``edge``, ``ra``, ``dec``, ``xpos``, ``ypos`` and
        optionally ``file`` (as returned by :func:`make_stamps`).
    triplets : bool
        If True, write a primary HDU holding the keywords and no data, then image
        HDUs named SCI, REF and DIFF; if False, a single primary HDU with the image
        and the keywords.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``images``.

    Raises
    ------
    ValueError
        If the images, the meta table and ``triplets`` do not agree.
    OutputError
        If the folder cannot be created or written.
    """
    images = np.asarray(images)
    channels = 3 if triplets else 1
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(
            f"images must have shape (n, H, W, {channels}) with triplets={triplets}, "
            f"got {images.shape}"
        )
    if len(meta) != len(images):
        raise ValueError(f"meta has {len(meta)} rows for {len(images)} images; give one per image")
    missing = [col for _, col in _HEADER_COLUMNS if col not in meta.colnames and col != "file"]
    if missing:
        raise ValueError(f"meta lacks the columns {', '.join(missing)}")
    folder = ensure_folder(folder)
    height, width = images.shape[1:3]
    image_cards = [("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", width), ("NAXIS2", height)]
    paths = []
    for image, row in zip(images, meta, strict=True):
        keywords = []
        for key, column in _HEADER_COLUMNS:
            if column == "file" and column not in meta.colnames:
                value = "synthetic"
            elif column == "edge":
                # O'TRAIN writes EDGE as a string, not a FITS logical.
                value = "True" if row[column] else "False"
            else:
                value = row[column]
                value = value.item() if isinstance(value, np.generic) else value
            keywords.append((key, value))
        if triplets:
            parts = [
                _header(
                    [("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True)] + keywords
                )
            ]
            for index, name in enumerate(TRIPLET_CHANNELS):
                cards = [("XTENSION", "IMAGE"), *image_cards]
                cards += [("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", name)]
                parts += [_header(cards), _data(image[..., index])]
        else:
            parts = [_header([("SIMPLE", True), *image_cards, *keywords]), _data(image[..., 0])]
        name = str(row["candid"])
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"candid {name!r} cannot be a file name; use letters, digits, - or _")
        path = folder / f"{name}.fits"
        try:
            path.write_bytes(b"".join(parts))
        except OSError as err:
            raise OutputError(
                f"cannot write {path}: {err.strerror or err}; choose a folder you can write to"
            ) from err
        paths.append(path)
    return paths


def _clear_stale(folder, keep, overwrite):
    """Refuse (or, with ``overwrite``, remove) FITS files that are not part of this set."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    stale = sorted(p for p in folder.glob("*.fits") if p.name not in keep)
    if not stale:
        return
    if not overwrite:
        raise OutputError(
            f"{folder} already holds {len(stale)} other FITS files (e.g. {stale[0].name}); "
            "choose an empty folder or pass overwrite=True to remove them"
        )
    for path in stale:
        path.unlink()


def make_training_set(
    folder,
    *,
    n_real=300,
    n_bogus=300,
    size=64,
    triplets=False,
    edge_fraction=0.03,
    random_state=0,
    overwrite=False,
):
    """Write a labelled training set: ``folder/true/*.fits`` and ``folder/false/*.fits``.

    This is the layout O'TRAIN's ``convert`` step reads.

    Parameters
    ----------
    folder : str or path-like
        Output folder, created if needed.
    n_real, n_bogus : int, default 300
        Number of real and bogus stamps.
    size : int, default 64
        Side of the stamps, in pixels.
    triplets : bool, default False
        Write SCI, REF and DIFF image HDUs instead of the difference image alone.
    edge_fraction : float, default 0.03
        Share of the stamps of each class cut at the edge of their parent image.
    random_state : int, numpy.random.Generator or None, default 0
        Seed; the same seed writes the same files.
    overwrite : bool, default False
        Remove FITS files already in ``true/`` or ``false/`` that this set does not
        write; without it, such files make the call fail rather than mix with the
        new set. Files of the same names are always replaced.

    Returns
    -------
    astropy.table.Table
        The meta table of :func:`make_stamps` plus ``label`` and ``path``.

    Raises
    ------
    OutputError
        If a folder cannot be written, or holds other FITS files and ``overwrite``
        is False.
    """
    images, labels, meta = make_stamps(
        n_real,
        n_bogus,
        size=size,
        triplets=triplets,
        edge_fraction=edge_fraction,
        random_state=random_state,
    )
    folder = Path(folder)
    meta["label"] = labels
    meta["path"] = np.array([""] * len(meta), dtype=object)
    for label, name in ((1, "true"), (0, "false")):
        subset = labels == label
        keep = {f"{candid}.fits" for candid in meta["candid"][subset]}
        _clear_stale(folder / name, keep, overwrite)
        paths = write_cutouts(folder / name, images[subset], meta[subset], triplets=triplets)
        meta["path"][subset] = [str(p) for p in paths]
    meta["path"] = meta["path"].astype(str)
    return meta


def make_candidates(
    folder,
    *,
    n=300,
    frac_simulated=0.4,
    size=64,
    triplets=False,
    edge_fraction=0.03,
    random_state=1,
    overwrite=False,
):
    """Write unlabelled candidates and the crossmatch of the simulated sources.

    This imitates the output of a detection pipeline run on images where point
    sources were injected (O'TRAIN with gmadet): ``folder/candidates/*.fits`` holds
    the injected point sources, bogus artefacts and some genuine transients (new
    point sources that were not injected: variable stars, supernovae on their host),
    with nothing in the files telling them apart. ``folder/crossmatch.dat`` lists the
    injected sources and the candidate each one produced, which is what O'TRAIN's
    ``checkinfer`` joins with the scores.

    Parameters
    ----------
    folder : str or path-like
        Output folder, created if needed.
    n : int, default 300
        Number of candidates.
    frac_simulated : float, default 0.4
        Share of injected point sources. Of the others, three quarters are bogus
        (all :data:`BOGUS_KINDS` in equal shares) and one quarter genuine transients.
    size : int, default 64
        Side of the stamps, in pixels.
    triplets : bool, default False
        Write SCI, REF and DIFF image HDUs instead of the difference image alone.
    edge_fraction : float, default 0.03
        Share of the candidates of each class cut at the edge of their parent image.
    random_state : int, numpy.random.Generator or None, default 1
        Seed; the same seed writes the same files.
    overwrite : bool, default False
        Remove FITS files already in ``candidates/`` that this set does not write;
        without it, such files make the call fail.

    Returns
    -------
    astropy.table.Table
        The truth, one row per candidate: the meta columns of :func:`make_stamps`,
        ``label`` (1 real, 0 bogus), ``simulated`` (injected or not) and ``path``.
        It is for checks only; the candidates folder itself is unlabelled.

    Notes
    -----
    ``crossmatch.dat`` is an ASCII table (``ascii.commented_header``) with one row
    per injected source and gmadet's column names: ``idx`` (row number),
    ``filename`` (parent image), ``Xpos``, ``Ypos``, ``RA``, ``Dec`` (injected
    position, pixels 1-based and degrees), ``mag`` (injected magnitude), ``filter``,
    ``Nmatches``, ``closest_candID`` and ``all_candIDs`` (the CANDID of the
    candidate it produced) and ``distance`` (arcsec between the injected and the
    detected positions).
    """
    n = _check_count("n", n)
    frac_simulated = _check_fraction("frac_simulated", frac_simulated)
    size = _check_size(size)
    edge_fraction = _check_fraction("edge_fraction", edge_fraction)
    rng = np.random.default_rng(random_state)
    n_sim = int(round(frac_simulated * n))
    n_bogus = int(round(0.75 * (n - n_sim)))
    n_transient = n - n_sim - n_bogus
    # Injected magnitudes are drawn flat around the limit, as gmadet's sim does.
    plan = [
        {"kind": REAL_KIND, "label": 1, "simulated": True, "depth": d, "host_prob": 0.2}
        for d in rng.uniform(-4.5, 0.7, n_sim)
    ]
    # Genuine transients that were detected are brighter, often on a host galaxy
    # or a variable star.
    plan += [
        {
            "kind": REAL_KIND,
            "label": 1,
            "simulated": False,
            "depth": d,
            "host_prob": 0.6,
            "variable_prob": 0.3,
        }
        for d in rng.uniform(-4.0, 0.0, n_transient)
    ]
    plan += [{"kind": str(k), "label": 0, "simulated": False} for k in _bogus_kinds(rng, n_bogus)]
    plan = [plan[i] for i in rng.permutation(len(plan))]
    images, meta, truth = _simulate_set(rng, plan, size, triplets, edge_fraction, "cand", "image")
    labels = np.array([row["label"] for row in plan], dtype=int)
    simulated = np.array([row["simulated"] for row in plan], dtype=bool)

    folder = Path(folder)
    out = folder / "candidates"
    _clear_stale(out, {f"{c}.fits" for c in meta["candid"]}, overwrite)
    paths = write_cutouts(out, images, meta, triplets=triplets)

    crossmatch = _crossmatch(meta[simulated], truth[simulated])
    with atomic_output(folder / "crossmatch.dat") as tmp:
        crossmatch.write(tmp, format="ascii.commented_header", overwrite=True)

    result = _finish_meta(meta)
    result["label"] = labels
    result["simulated"] = simulated
    result["path"] = [str(p) for p in paths]
    return result


def _crossmatch(meta, truth):
    """gmadet's crossmatch.dat: one row per injected source."""
    cos_dec = np.cos(np.radians(truth["dec"]))
    distance = 3600 * np.hypot((meta["ra"] - truth["ra"]) * cos_dec, meta["dec"] - truth["dec"])
    # Injected sources are listed by parent image, as gmadet writes them.
    order = np.lexsort((np.asarray(meta["candid"]), np.asarray(meta["file"])))
    table = Table(
        {
            "idx": np.arange(len(meta)),
            "filename": np.asarray(meta["file"])[order],
            "Xpos": np.round(np.asarray(truth["xpos"])[order], 3),
            "Ypos": np.round(np.asarray(truth["ypos"])[order], 3),
            "RA": np.round(np.asarray(truth["ra"])[order], 7),
            "Dec": np.round(np.asarray(truth["dec"])[order], 7),
            "mag": np.round(np.asarray(meta["mag_true"])[order], 4),
            "filter": np.asarray(meta["filter"])[order],
            "Nmatches": np.ones(len(meta), dtype=int),
            "closest_candID": np.asarray(meta["candid"])[order],
            "all_candIDs": np.asarray(meta["candid"])[order],
            "distance": np.round(np.asarray(distance)[order], 4),
        }
    )
    return table


def make_demo_data(
    folder, *, n_train=600, n_candidates=300, size=64, triplets=False, random_state=0
):
    """Write everything the demo needs: a training set, candidates and their crossmatch.

    The default sizes train a small network in a couple of minutes on two CPU cores.

    Parameters
    ----------
    folder : str or path-like
        Output folder, created if needed. ``folder/training`` receives the training
        set (:func:`make_training_set`), ``folder/candidates`` and
        ``folder/crossmatch.dat`` the candidates (:func:`make_candidates`).
    n_train : int, default 600
        Number of training stamps, half real and half bogus.
    n_candidates : int, default 300
        Number of candidates.
    size : int, default 64
        Side of the stamps, in pixels.
    triplets : bool, default False
        Write SCI, REF and DIFF image HDUs instead of the difference image alone.
    random_state : int, numpy.random.Generator or None, default 0
        Seed of both sets; the same seed writes the same files.

    Returns
    -------
    dict
        ``"training"``, ``"true"``, ``"false"``, ``"candidates"`` and
        ``"crossmatch"``: the paths written (:class:`pathlib.Path`); ``"summary"``:
        a dict of counts (``n_true``, ``n_false``, ``n_candidates``,
        ``n_simulated``, ``n_candidates_real``).

    Examples
    --------
    >>> from otrain.datasets import make_demo_data
    >>> paths = make_demo_data("demo")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['candidates', 'crossmatch', 'false', 'summary', 'training', 'true']
    """
    n_train = _check_count("n_train", n_train)
    rng = np.random.default_rng(random_state)
    # Two independent streams, so that changing one set leaves the other as it was.
    train_seed, candidate_seed = rng.spawn(2)
    folder = ensure_folder(folder)
    training = make_training_set(
        folder / "training",
        n_real=n_train // 2,
        n_bogus=n_train - n_train // 2,
        size=size,
        triplets=triplets,
        random_state=train_seed,
        overwrite=True,
    )
    candidates = make_candidates(
        folder,
        n=n_candidates,
        size=size,
        triplets=triplets,
        random_state=candidate_seed,
        overwrite=True,
    )
    return {
        "training": folder / "training",
        "true": folder / "training" / "true",
        "false": folder / "training" / "false",
        "candidates": folder / "candidates",
        "crossmatch": folder / "crossmatch.dat",
        "summary": {
            "n_true": int(np.sum(training["label"] == 1)),
            "n_false": int(np.sum(training["label"] == 0)),
            "n_candidates": len(candidates),
            "n_simulated": int(np.sum(candidates["simulated"])),
            "n_candidates_real": int(np.sum(candidates["label"] == 1)),
        },
    }
