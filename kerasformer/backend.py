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


def update_cache(cache, new, index):
    """Write ``new`` (``[batch, heads, T, size]``) into ``cache`` at position ``index`` of
    axis 2 and return the cache. Torch updates in place (no per-step copy of the whole
    cache, the cost that makes naive cached decoding slow on torch); JAX uses
    ``dynamic_update_slice``, which XLA performs in place inside a compiled loop."""
    new = keras.ops.cast(new, cache.dtype)
    if name() == "torch":
        length = new.shape[2]
        if isinstance(index, int):
            cache[:, :, index:index + length] = new
        else:
            cache.narrow(2, int(index), length).copy_(new)
        return cache
    return keras.ops.slice_update(cache, (0, 0, index, 0), new)


class StepRandom:
    """Uniform noise for sampling, reproducible from ``seed``. On JAX the draw for a step
    is a pure function of (seed, step), so it can live inside a compiled loop; on torch a
    seeded generator advances one draw per step (the loop runs in Python there)."""

    def __init__(self, seed):
        self.seed = 0 if seed is None else seed  # an int, or a tensor inside a compiled program
        if name() == "torch":
            import torch

            self.generator = torch.Generator().manual_seed(int(self.seed))

    def uniform(self, shape, step):
        if name() == "torch":
            import torch

            return torch.rand(shape, generator=self.generator)
        seed = keras.ops.stack([keras.ops.cast(self.seed, "uint32"), keras.ops.cast(step, "uint32")])
        return keras.random.uniform(shape, seed=seed)


def stateless_function(fn, variables):
    """``fn`` compiled with the model variables passed in as values (JAX), else as is."""
    if name() != "jax":
        def run(*args):
            with inference_mode():
                return fn(*args)
        return run
    import jax

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    compiled = jax.jit(pure)
    return lambda *args: compiled([v.value for v in variables], *args)
