"""O'TRAIN's infer step, as the baseline of ``benchmarks/infer.py``.

The same work as ``otrain/infer.py`` and ``otrain/cli/infer.py`` of the original
O'TRAIN (github.com/dcorre/otrain, Makhlouf et al. 2022), written again here: list
``CUTOUTS/*.fits`` (sorted); load the model with ``keras.models.load_model``; open
each file with ``astropy.io.fits.open(..., memmap=False)`` for its pixels, leaving out
``EDGE='True'`` cutouts; stack the list into a float32 array; ``model.predict`` it
(Keras' default batch size, as O'TRAIN called it); open each scored file a second time
for its keywords; write ``infer_results.dat`` (``ascii.commented_header``) with
O'TRAIN's columns.

The model is an otrain model file: its normalisation is a layer of the network, so
``model.predict`` on raw pixels gives otrain's probabilities. Loading it needs otrain's
two custom layers, which are passed to Keras; nothing else of otrain is used.
``--outdir`` (not in O'TRAIN, which wrote beside the cutouts) lets the benchmark keep
the two result tables apart.

Usage::

    python benchmarks/baselines/otrain_infer.py --cutouts DIR --model M.keras --outdir OUT
"""

import argparse
import glob
import os
import sys

import numpy as np
from astropy.io import fits
from astropy.table import Table


def infer(path_cutouts, path_model, outdir):
    """Score every cutout of ``path_cutouts`` and write O'TRAIN's result table."""
    import keras

    from otrain.networks import RandomDihedral, StampNormalisation

    filenames = sorted(glob.glob(os.path.join(path_cutouts, "*.fits")))
    print("Loading model " + path_model + " ...", flush=True)
    model = keras.models.load_model(
        path_model,
        custom_objects={"StampNormalisation": StampNormalisation, "RandomDihedral": RandomDihedral},
    )
    model.summary()

    cube, kept = [], []
    for name in filenames:
        hdus = fits.open(name, memmap=False)
        head = hdus[0].header
        # Cutouts without the full size (at the edge of their image) are not scored.
        if head["edge"] == "True":
            hdus.close()
            continue
        cube.append(hdus[0].data)
        hdus.close()
        kept.append(name)

    cube = np.asarray(cube, dtype=np.float32)
    if cube.ndim < 4:
        cube = np.reshape(cube, [cube.shape[0], cube.shape[1], cube.shape[2], 1])
    else:
        cube = np.moveaxis(cube, 1, -1)
    p = model.predict(cube)

    columns = {
        "RA": [],
        "DEC": [],
        "FILE": [],
        "XPOS": [],
        "YPOS": [],
        "CANDID": [],
        "MAG": [],
        "MAGERR": [],
        "FWHM": [],
        "FWHMPSF": [],
    }
    for name in kept:
        hdus = fits.open(name, memmap=False)
        head = hdus[0].header
        for key, values in columns.items():
            values.append(head[key])
        hdus.close()

    table = Table(
        [
            kept,
            columns["RA"],
            columns["DEC"],
            columns["FILE"],
            columns["XPOS"],
            columns["YPOS"],
            columns["MAG"],
            columns["MAGERR"],
            columns["FWHM"],
            columns["FWHMPSF"],
            columns["CANDID"],
            p[:, 0],
            p[:, 1],
        ],
        names=[
            "filename",
            "RA",
            "Dec",
            "originalFile",
            "Xpos",
            "Ypos",
            "mag",
            "magerr",
            "FWHM",
            "FWHMPSF",
            "cand_ID",
            "label0",
            "label1",
        ],
    )
    os.makedirs(outdir, exist_ok=True)
    table.write(
        os.path.join(outdir, "infer_results.dat"), format="ascii.commented_header", overwrite=True
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description="O'TRAIN's infer step (baseline).")
    parser.add_argument("--cutouts", dest="path_cutouts", required=True)
    parser.add_argument("--model", dest="path_model", required=True)
    parser.add_argument("--prob-ratio", dest="probratio", type=float, default=0.001)
    parser.add_argument("--outdir", default=None, help="default: the --cutouts folder")
    args = parser.parse_args(argv)
    infer(args.path_cutouts, args.path_model, args.outdir or args.path_cutouts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
