"""Importing TensorFlow and Keras without their start-up chatter on stderr.

TensorFlow's C++ runtime writes lines no user can act on (oneDNN, the CUDA driver,
CPU instruction sets) straight to file descriptor 2, some of them before it reads
``TF_CPP_MIN_LOG_LEVEL``, and later ones (``cuInit`` failing on a machine without a
GPU, oneDNN's data-type notices) after. otrain asks for fatal messages only through
that variable, unless the user set it, and points descriptor 2 at a temporary file
while TensorFlow and Keras are imported, and only then: whatever is not known noise
is written back to stderr.
"""

import logging
import os
import sys
import tempfile
import threading

__all__ = ["load_tensorflow"]

# TensorFlow's C++ start-up lines that no user can act on.
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog()",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "cuda_executor.cc",
    "cuda_dnn.cc",
    "cuda_fft.cc",
    "cuda_blas.cc",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
    "Unable to register cu",
    "computation placer already registered",
    "TF-TRT Warning",
    "oneDNN custom operations are on",
)

_LOCK = threading.Lock()


def load_tensorflow():
    """Import TensorFlow and Keras with their start-up chatter filtered out of stderr.

    Called by every otrain module before it imports Keras; a no-op once Keras is
    imported, by otrain or by the user.
    """
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    with _LOCK:
        if "keras" in sys.modules and "tensorflow" in sys.modules:
            return
        # Read by TensorFlow's C++ logging at start-up: only fatal errors from then on.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as capture:
            os.dup2(capture.fileno(), 2)
            try:
                import keras  # noqa: F401
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = [
                    line
                    for line in capture.read().decode(errors="replace").splitlines()
                    if line.strip() and not any(noise in line for noise in _STARTUP_NOISE)
                ]
        for line in kept:
            print(line, file=sys.stderr)
        _quiet_retracing()


class _NoRetracingNote(logging.Filter):
    """Drops TensorFlow's note that a function was traced again.

    Keras traces a new training function for every model it fits; training the
    networks of an ensemble (or the models of a grid search) one after another makes
    TensorFlow count these as retracings of one function and say so on stderr,
    though nothing is wrong and nothing can be done about it.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_retracing():
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoRetracingNote) for f in logger.filters):
        logger.addFilter(_NoRetracingNote())
