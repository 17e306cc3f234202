"""O'TRAIN's convert step, as the baseline of ``benchmarks/convert.py``.

The same work as ``otrain/convert.py`` and ``otrain/cli/convert.py`` of the original
O'TRAIN (github.com/dcorre/otrain, Makhlouf et al. 2022), written again here: the
``true/*.fits`` and ``false/*.fits`` files are listed with ``glob``; each file is opened
once with ``astropy.io.fits.open(..., memmap=False)``; cutouts flagged ``EDGE='True'``
are left out; the image and the keywords ``MAG``, ``MAGERR``, ``FILTER``, ``CANDID``,
``FWHM`` are appended to Python lists, one per quantity; the lists become arrays and
``np.savez`` writes them, uncompressed, to ``PATH/datacube/CUBE.npz`` under O'TRAIN's
keys ``cube`` (float32, n x H x W x 1), ``labels``, ``mags``, ``errmags``,
``filters``, ``fwhms`` and ``candids``. ``--frac-true`` caps each class as O'TRAIN did
(a balanced set keeps every file at the default 0.5).

One deliberate difference: for multi-extension files whose primary header holds
``EDGE``, O'TRAIN appended the primary HDU's data, which is empty in SCI/REF/DIFF
files (the conversion then fails); like the rest of its multi-extension code, this
baseline takes the ``DIFF`` extension, which is what issue 5 compares with.

Usage::

    python benchmarks/baselines/otrain_convert.py --path OUT --cube cube --cutouts DIR
"""

import argparse
import glob
import os
import sys
from math import floor

import numpy as np
from astropy.io import fits


def crop_center(image, size_x, size_y):
    """Centred crop, as O'TRAIN's ``crop_center``."""
    height, width = image.shape
    x0 = width // 2 - size_x // 2
    y0 = height // 2 - size_y // 2
    return image[y0 : y0 + size_y, x0 : x0 + size_x]


def diff_index(hdul):
    """Index of the HDU named DIFF, as O'TRAIN's ``index_multiext_fits``."""
    for i in range(len(hdul)):
        header = hdul[i].header
        if "EXTNAME" in header and header["EXTNAME"] == "DIFF":
            return i
    raise KeyError("no DIFF extension")


def caps(n_true, n_false, frac_true):
    """O'TRAIN's maximum numbers of true and false cutouts."""
    smaller = min(n_true, n_false)
    return floor(2 * smaller * frac_true), floor(2 * smaller * (1 - frac_true))


def _keywords(head, hdul, path):
    """MAG, MAGERR, FILTER, CANDID, FWHM with O'TRAIN's fallbacks for missing ones."""
    if "HIERARCH mag_calib" in head:
        mag = head["HIERARCH mag_calib"]
    else:
        mag = head["MAG"] if "MAG" in head else "-99.0"
    magerr = head["MAGERR"] if "MAGERR" in head else "-99.0"
    if "FILTER" in head:
        band = head["FILTER"]
    elif "FILTER" in hdul[diff_index(hdul)].header:
        band = hdul[diff_index(hdul)].header["FILTER"]
    else:
        band = "Clear"
    if "CANDID" in head:
        candid = head["CANDID"]
    else:
        candid = head["NAME"] if "NAME" in head else path
    return mag, magerr, band, candid, head["FWHM"]


def convert(path_datacube, cubename, path_cutouts, frac_true, cutout_size):
    """Read the cutouts into lists and write O'TRAIN's datacube."""
    outdir = os.path.join(path_datacube, "datacube")
    os.makedirs(outdir, exist_ok=True)
    truelist = glob.glob(os.path.join(path_cutouts, "true", "*.fits"))
    falselist = glob.glob(os.path.join(path_cutouts, "false", "*.fits"))
    max_true, max_false = caps(len(truelist), len(falselist), frac_true)

    cube, labels, mags, errmags, filters, cand_ids, fwhms = [], [], [], [], [], [], []
    counts = {}
    print("Processing the cutouts... It can take few minutes")
    for label, files, cap in ((1, truelist, max_true), (0, falselist, max_false)):
        counter = 0
        for cand in files:
            if counter >= cap:
                break
            hdus = fits.open(cand, memmap=False)
            head = hdus[0].header
            multi = len(hdus) > 1
            if not multi or "EDGE" in head:
                # Cutouts cut by the edge of their image are left out.
                use = head["EDGE"] == "False"
            else:
                use = True
            if use:
                mag, magerr, band, candid, fwhm = _keywords(head, hdus, cand)
                labels.append(label)
                mags.append(mag)
                errmags.append(magerr)
                filters.append(band)
                cand_ids.append(candid)
                fwhms.append(fwhm)
                data = hdus[diff_index(hdus)].data if multi else hdus[0].data
                if cutout_size != -1:
                    data = crop_center(data, cutout_size, cutout_size)
                cube.append(data)
            hdus.close()
            counter += 1
        counts[label] = counter
    print(
        f"The datacube contains {len(cube)} candidates with Ntrue = {counts[1]} "
        f"and Nfalse = {counts[0]}"
    )

    print("Converting and reshaping arrays ...")
    cube = np.asarray(cube, dtype=np.float32)
    if cube.ndim < 4:
        cube = np.reshape(cube, [cube.shape[0], cube.shape[1], cube.shape[2], 1])
    else:
        cube = np.moveaxis(cube, 1, -1)
    print("Saving {} {}x{}x{} image datacube ...".format(*cube.shape))
    path = os.path.join(outdir, f"{cubename}.npz")
    np.savez(
        path,
        cube=cube,
        labels=labels,
        mags=mags,
        errmags=errmags,
        filters=filters,
        fwhms=fwhms,
        candids=cand_ids,
    )
    print("Saved to " + path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="O'TRAIN's convert step (baseline).")
    parser.add_argument("--path", dest="path_datacube", required=True)
    parser.add_argument("--cube", dest="cubename", required=True)
    parser.add_argument("--cutouts", dest="path_cutouts", required=True)
    parser.add_argument("--frac-true", "--frac_true", dest="frac_true", type=float, default=0.5)
    parser.add_argument("--cutout-size", "--cutout_size", dest="cutout_size", type=int, default=-1)
    args = parser.parse_args(argv)
    convert(args.path_datacube, args.cubename, args.path_cutouts, args.frac_true, args.cutout_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
