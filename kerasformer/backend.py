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


# ------------------------------------------------------------------ training (kerasformer.training)
# Gradients and the train step are where JAX (pure functions, state passed in and out) and
# torch (autograd on tensors, state held in the variables) differ most; the training tricks
# in kerasformer.training are written once, as pure functions of the variable values, and
# these two helpers run them on either backend.

_TORCH_GRAD_DEPTH = [0]  # how many value_and_grad calls are active (torch): >0 means nested


def value_and_grad(fn, has_aux=False):
    """``fn(values, *args)`` -> ``loss`` (or ``(loss, aux)`` with ``has_aux``) turned into
    ``g(values, *args)`` -> ``(loss or (loss, aux), grads)``: the gradients of the scalar
    ``loss`` with respect to ``values``, a list of tensors, as a list of the same length.

    Calls nest, so an objective may contain a gradient (the gradient penalty does): JAX
    composes transformations natively; on torch an inner call builds its gradients with
    ``create_graph=True``, so the outer call differentiates through them.
    """
    if name() == "jax":
        import jax

        return jax.value_and_grad(fn, has_aux=has_aux)
    if name() != "torch":
        raise NotImplementedError(f"value_and_grad is not available on the {name()} backend")
    import torch

    def wrapped(values, *args, **kwargs):
        values = list(values)
        nested = _TORCH_GRAD_DEPTH[0] > 0
        if nested:  # keep the outer graph: values already tracked by the outer call stay as they are
            inputs = [v if v.requires_grad else v.detach().requires_grad_(True) for v in values]
        else:  # fresh leaves, so parameters' .grad are never touched
            inputs = [v.detach().requires_grad_(True) for v in values]
        _TORCH_GRAD_DEPTH[0] += 1
        try:
            with torch.enable_grad():
                out = fn(inputs, *args, **kwargs)
                loss = out[0] if has_aux else out
                grads = torch.autograd.grad(loss, inputs, create_graph=nested, allow_unused=True)
        finally:
            _TORCH_GRAD_DEPTH[0] -= 1
        grads = [torch.zeros_like(v) if g is None else g for v, g in zip(inputs, grads)]
        if not nested:
            out = _detach(out)
        return out, grads

    return wrapped


def _detach(tree):
    import torch

    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detach(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    return tree


def set_train_step(model, gradients):
    """Make ``model.fit`` compute its gradients with ``gradients`` instead of Keras' own step.

    ``gradients(trainable, non_trainable, metrics, x, y, sample_weight)`` is a pure function of
    the current values of ``model.trainable_variables``, ``model.non_trainable_variables`` and
    ``model.metrics_variables`` (lists of tensors) and the batch; it returns ``(grads, aux)``
    where ``aux`` is a dict with ``loss`` (the value logged), ``y_pred`` (what the compiled
    metrics see) and the new ``non_trainable`` and ``metrics`` values. Everything after that
    (optimizer update, loss tracker, compiled metrics, the progress bar) is Keras' own.

    JAX: the step is a pure function of the trainer's state tuple and gets ``jax.jit``-compiled
    like Keras' own. Torch: the values are read from the variables, and the new state is
    written back before the optimizer applies the gradients.
    """
    from keras.utils import unpack_x_y_sample_weight

    if name() == "jax":
        def train_step(state, data):
            trainable, non_trainable, optimizer_variables, metrics = state
            x, y, sample_weight = unpack_x_y_sample_weight(data)
            grads, aux = gradients(trainable, non_trainable, metrics, x, y, sample_weight)
            trainable, optimizer_variables = model.optimizer.stateless_apply(
                optimizer_variables, grads, trainable)
            logs, metrics = model._update_metrics_variables(
                aux["metrics"], aux["loss"], x, y, aux["y_pred"], sample_weight)
            return logs, (trainable, aux["non_trainable"], optimizer_variables, metrics)

    elif name() == "torch":
        import torch

        def train_step(data):
            x, y, sample_weight = unpack_x_y_sample_weight(data)
            grads, aux = gradients([v.value for v in model.trainable_variables],
                                   [v.value for v in model.non_trainable_variables],
                                   [v.value for v in model.metrics_variables], x, y, sample_weight)
            with torch.no_grad():
                for variable, value in zip(model.non_trainable_variables, aux["non_trainable"]):
                    variable.assign(value.detach())
                for variable, value in zip(model.metrics_variables, aux["metrics"]):
                    variable.assign(value.detach())
                batch = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
                model._loss_tracker.update_state(aux["loss"], sample_weight=batch)
                model.optimizer.apply(grads, model.trainable_variables)
                return model.compute_metrics(x, y, _detach(aux["y_pred"]), sample_weight=sample_weight)

    else:
        raise NotImplementedError(f"training tricks are not available on the {name()} backend")
    model.train_step = train_step
    model.train_function = None  # rebuilt (and re-jitted) on the next fit
    return model


def recompute_call(layer, call):
    """``call`` (a layer's ``call``) with gradient checkpointing: the activations inside the
    layer are not kept for the backward pass but recomputed (``jax.checkpoint`` /
    ``torch.utils.checkpoint``). Used by ``build_transformer_model(..., recompute=True)``.

    Keras' own ``RematScope`` turns every call argument into a traced value (so
    ``training=True`` breaks the layer's Python branches on JAX) and re-draws dropout masks
    when torch recomputes. Here only tensors are traced, and the layer runs on an explicit
    snapshot of its variables: the recomputation sees the same weights and the same dropout
    seeds as the forward pass, so gradients are exactly those without checkpointing.
    """
    import keras.ops as kops

    def wrapped(*args, **kwargs):
        if name() == "torch":
            import torch

            if not torch.is_grad_enabled():  # nothing to save memory for
                return call(*args, **kwargs)
        variables = list(layer.variables)
        state = [v for v in variables if not v.trainable]
        tensors = {k: v for k, v in kwargs.items() if kops.is_tensor(v)}
        static = {k: v for k, v in kwargs.items() if k not in tensors}

        def pure(values, args, tensors):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                outputs = call(*args, **static, **tensors)
            return outputs, [scope.get_current_value(v) for v in state]

        # the values as seen here: an enclosing stateless scope's (a train step) or the variables'
        values = [v.value for v in variables]
        if name() == "jax":
            import jax

            outputs, new_state = jax.checkpoint(pure)(values, args, tensors)
        elif name() == "torch":
            import torch

            # the snapshot keeps the seeds of this forward pass for the recomputation
            values = [v if v.requires_grad else v.clone() for v in values]
            outputs, new_state = torch.utils.checkpoint.checkpoint(pure, values, args, tensors,
                                                                   use_reentrant=False)
        else:
            outputs, new_state = pure(values, args, tensors)
        for variable, value in zip(state, new_state):
            if value is not None:
                variable.assign(value)
        return outputs

    return wrapped
