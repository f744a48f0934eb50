"""Train steps as pure functions of the variable values.

Every generative recipe (flows, VAEs, GANs) trains a few Keras layers on a loss that is
not ``y_true`` vs ``y_pred``; rather than bend ``model.fit`` to each, a loss written with
ordinary layer calls is turned into a pure function of the variable values
(:func:`stateless`), differentiated with :func:`kerasformer.backend.value_and_grad` and
compiled with :func:`kerasformer.backend.jit`. *All* variables the loss reads are passed in
(trainable and not), so nothing is baked into a compiled program as a constant, and the
non-trainable values the loss assigns (a spectral norm's power-iteration vector) come back
out and are written after the step.
"""
import keras
import numpy as np

from kerasformer import backend
from kerasformer.errors import KerasformerError


def split_variables(layers):
    """``(trainable, non_trainable)`` variables of ``layers`` (a layer or a list), each once."""
    layers = layers if isinstance(layers, (list, tuple)) else [layers]
    trainable, frozen, seen = [], [], set()
    for layer in layers:
        if not layer.built:
            raise KerasformerError(f"layer {layer.name!r} is not built: call it once on a batch before training")
        for v in layer.variables:
            key = id(v)
            if key in seen:
                continue
            seen.add(key)
            (trainable if v.trainable else frozen).append(v)
    return trainable, frozen


def stateless(fn, trainable, non_trainable):
    """``fn(*args) -> (loss, aux)``, which reads the variables, as
    ``pure(train_values, frozen_values, *args) -> (loss, (aux, new_frozen_values))``."""
    def pure(train_values, frozen_values, *args):
        mapping = list(zip(trainable, train_values)) + list(zip(non_trainable, frozen_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, aux = fn(*args)
            new_frozen = [scope.get_current_value(v) for v in non_trainable]
        # a variable that was not assigned reads back as None
        new_frozen = [old if new is None else new for old, new in zip(frozen_values, new_frozen)]
        return loss, (aux, new_frozen)
    return pure


class TrainStep:
    """One optimizer step on ``loss_fn(*args) -> (loss, aux)`` over the variables of ``layers``:
    ``step(*args)`` returns ``(loss, aux)``. The gradient is compiled once per input shape
    (JAX); the optimizer update runs eagerly. Random noise is drawn by the caller and passed
    in ``args``, so a compiled step never freezes a random draw."""

    def __init__(self, layers, loss_fn, optimizer):
        self.trainable, self.frozen = split_variables(layers)
        self.optimizer = optimizer
        self.grad_fn = backend.jit(backend.value_and_grad(
            stateless(loss_fn, self.trainable, self.frozen), has_aux=True))

    def __call__(self, *args):
        args = [keras.ops.convert_to_tensor(a) if isinstance(a, np.ndarray) else a for a in args]
        (loss, (aux, new_frozen)), grads = self.grad_fn(
            [v.value for v in self.trainable], [v.value for v in self.frozen], *args)
        for v, value in zip(self.frozen, new_frozen):
            v.assign(value)
        self.optimizer.apply(grads, self.trainable)
        return loss, aux
