"""Training resumes exactly: weights + optimizer slots + schedule step saved in a .keras
file, reloaded, and trained on equal uninterrupted training."""
import keras
import numpy as np

from kerasformer import build_transformer_model
from kerasformer.backend import to_numpy
from kerasformer.layers import TakeToken
from kerasformer.optimizers import AdamW, PiecewiseLinear


def classifier():
    keras.utils.set_random_seed(0)
    bert = build_transformer_model(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=24, max_position=16)
    x = TakeToken(0, name="CLS")(bert.output)
    y = keras.layers.Dense(3, activation="softmax", name="Classifier")(x)
    model = keras.Model(bert.inputs, y)
    # warm-up then decay: the resumed run must pick up the schedule where it stopped
    optimizer = AdamW(learning_rate=PiecewiseLinear({4: 1.0, 12: 0.1}, learning_rate=1e-2))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, size=(32, 8)).astype("int32")
    return [ids, np.zeros_like(ids)], (ids[:, 1] % 3).astype("int32")


def test_resume_from_keras_file_equals_uninterrupted(tmp_path):
    x, y = data()
    straight = classifier()
    straight.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)

    first = classifier()
    first.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    path = str(tmp_path / "checkpoint.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert int(to_numpy(resumed.optimizer.iterations)) == 8
    resumed.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    assert int(to_numpy(resumed.optimizer.iterations)) == int(to_numpy(straight.optimizer.iterations))
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6, err_msg=a.path)
    # and the run really moved: the weights are not the initial ones
    assert not np.allclose(to_numpy(classifier().weights[0]), to_numpy(resumed.weights[0]))
