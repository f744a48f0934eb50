"""The one place where kerasformer branches on the Keras backend.

Model and layer code uses ``keras.ops`` only; whatever genuinely has to differ per
backend (compiling a forward function, turning tensors into numpy, switching off
autograd for inference) lives here, so the rest of the code never asks which
backend it runs on.
"""
import contextlib
import weakref

import keras


def name():
    """The active Keras backend: 'jax', 'torch', 'tensorflow' or 'numpy'."""
    return keras.backend.backend()


def to_numpy(x):
    """A backend tensor (or nested list of them) as numpy, on the host."""
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(t) for t in x)
    return keras.ops.convert_to_numpy(x)


@contextlib.contextmanager
def inference_mode():
    """No gradient bookkeeping while the block runs (matters for torch's speed)."""
    if name() == "torch":
        import torch

        with torch.inference_mode():
            yield
    else:
        yield


def compiled_forward(model):
    """A function ``f(inputs) -> outputs`` that runs ``model`` for inference, compiled
    where the backend compiles: ``jax.jit`` over ``stateless_call`` on JAX (traced once per
    input shape), ``tf.function`` on TensorFlow, and eager under ``inference_mode`` on torch
    (torch.compile's start-up cost rarely pays off on CPU for one-off calls).
    """
    backend = name()
    if backend == "jax":
        import jax

        @jax.jit
        def _run(trainable, non_trainable, inputs):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs

        def forward(inputs):
            # read the variables at call time, so weights loaded later are used
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            return _run(trainable, non_trainable, inputs)

        return forward
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    if backend == "torch":

        def forward(inputs):
            with inference_mode():
                return model(inputs, training=False)

        return forward
    return lambda inputs: model(inputs, training=False)


_FORWARDS = weakref.WeakKeyDictionary()


def predict(model, inputs):
    """Run ``model`` for inference and return numpy, without ``Model.predict``'s per-call
    overhead; the compiled function is kept per model, so repeated calls do not retrace."""
    if model not in _FORWARDS:
        _FORWARDS[model] = compiled_forward(model)
    return to_numpy(_FORWARDS[model](inputs))
