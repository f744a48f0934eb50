"""Gradients and the train step, where JAX (pure functions, state passed in and out) and
torch (autograd on tensors, state held in the variables) differ most. The training tricks in
:mod:`kerasformer.training` (and the generative parts' steps) are written once, as pure
functions of the variable values; these helpers run them on either backend."""
import keras

from kerasformer.backend import private
from kerasformer.backend.dispatch import name


_TORCH_GRAD_DEPTH = [0]  # how many value_and_grad calls are active (torch): >0 means nested


def computing_gradients():
    """Whether a torch ``value_and_grad`` call is active (its gradients may be differentiated
    again by an enclosing one)."""
    return _TORCH_GRAD_DEPTH[0] > 0


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
            logs, metrics = private.get(model, "_update_metrics_variables")(
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
                private.get(model, "_loss_tracker").update_state(aux["loss"], sample_weight=batch)
                model.optimizer.apply(grads, model.trainable_variables)
                return model.compute_metrics(x, y, _detach(aux["y_pred"]), sample_weight=sample_weight)

    else:
        raise NotImplementedError(f"training tricks are not available on the {name()} backend")
    model.train_step = train_step
    model.train_function = None  # rebuilt (and re-jitted) on the next fit
    return model
