"""The training recipe's defaults, in one TensorFlow-free place.

:class:`otrain.CutoutClassifier` takes them as its parameters' defaults and
``otrain-train`` as its flags' (so that ``otrain-train -h`` answers without importing
TensorFlow, and the library and the command always train alike).
"""

TRAINING = {
    "network": "vgg6",
    "normalisation": "robust",
    "augment": True,
    "dropout": 0.3,
    "learning_rate": 1e-3,
    "batch_size": 64,
    "epochs": 30,
    "validation_fraction": 0.15,
    "patience": 5,
    "ensemble": 1,
    "class_weight": "balanced",
    "init": None,
}
