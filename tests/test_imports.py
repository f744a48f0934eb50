"""Every public module imports first in a fresh interpreter: kerasformer.backend re-exports
bert4keras' helpers, which import the layers, which import the backend, so a cycle shows
only when a script's *first* import is the wrong one (a bert4keras script starts with
``from kerasformer.backend import keras, K``). The suite itself cannot see it: by the
time a test runs, everything is imported."""
import os
import subprocess
import sys

FIRST_IMPORTS = [
    "from kerasformer.backend import keras, K, search_layer, sequence_masking",
    "from kerasformer.layers import Loss, ConditionalRandomField, LayerNormalization",
    "from kerasformer.training import adversarial_training, Loss",
    "from kerasformer.optimizers import Adam, extend_with_piecewise_linear_lr",
    "from kerasformer.models import build_transformer_model",
    "from kerasformer.snippets import sequence_padding, DataGenerator, AutoRegressiveDecoder",
    "import kerasformer.pretraining.train, kerasformer.generative, kerasformer.saving, kerasformer.utils",
]


def test_each_entry_point_imports_first():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = [(line, subprocess.Popen([sys.executable, "-c", line], cwd=root, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)) for line in FIRST_IMPORTS]
    failed = []
    for line, proc in runs:
        _, err = proc.communicate(timeout=300)
        if proc.returncode:
            failed.append(f"{line}\n{err[-600:]}")
    assert not failed, "\n\n".join(failed)
