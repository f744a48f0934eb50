"""``K``: Keras 2's backend functions (``keras.backend``) on Keras 3's ``keras.ops``, for
bert4keras scripts (``from kerasformer.backend import keras, K``). Every backend.

Each function keeps Keras 2's signature and meaning (``K.sum(x, axis=None, keepdims=False)``,
``K.sparse_categorical_crossentropy`` flattening its labels, ``K.batch_dot``'s default axes,
...), plus bert4keras' own additions to ``K`` (``K.reshape`` with ``(shape, axis)`` pairs,
``K.flatten(x, start, end)``, a broadcasting ``K.where``). ``K.shape(x)`` is a tuple (Keras 3
shapes are static inside a traced step) -- it indexes and slices as Keras 2's shape tensor did.

What needs TensorFlow 1 graphs -- ``K.gradients``, ``K.function``, ``K.placeholder``,
``K.get_session``, ``K.update`` ... -- cannot exist in Keras 3; calling one raises a
:class:`~kerasformer.errors.KerasformerError` that names the replacement. Any other name
missing here raises ``AttributeError`` (never a silently different function).
"""
import keras
import numpy as np
from keras import ops

from kerasformer.errors import KerasformerError

# ------------------------------------------------------------------------------ config

floatx = keras.config.floatx
set_floatx = keras.config.set_floatx
epsilon = keras.config.epsilon
set_epsilon = keras.config.set_epsilon
image_data_format = keras.config.image_data_format
backend = keras.config.backend
clear_session = keras.utils.clear_session
name_scope = keras.name_scope


def symbolic(f):
    """Keras 2.3's graph-mode decorator: nothing to do in Keras 3."""
    return f


# ---------------------------------------------------------------- tensors and variables

def is_tensor(x):
    return ops.is_tensor(x) or isinstance(x, (keras.KerasTensor, keras.Variable))


def is_keras_tensor(x):
    return isinstance(x, keras.KerasTensor)


def dtype(x):
    """The dtype name ('float32', 'int32', 'bool', ...)."""
    return keras.backend.standardize_dtype(x.dtype)


def int_shape(x):
    return tuple(x.shape)


def shape(x):
    return ops.shape(x)


def ndim(x):
    return len(x.shape)


def count_params(x):
    return int(np.prod(x.shape))


def variable(value, dtype=None, name=None, constraint=None):
    if constraint is not None:
        raise KerasformerError("K.variable(constraint=...): Keras 3 variables take no constraint; "
                               "create the weight with layer.add_weight(constraint=...)")
    return keras.Variable(value, dtype=dtype or floatx(), name=name)


def constant(value, dtype=None, shape=None, name=None):
    value = np.full(shape, value) if shape is not None else value
    return ops.convert_to_tensor(value, dtype=dtype or floatx())


def cast(x, dtype):
    return ops.cast(x, dtype)


def eval(x):  # noqa: A001 - Keras 2's name
    """A tensor or variable's value as numpy."""
    if isinstance(x, keras.Variable):
        x = x.value
    return ops.convert_to_numpy(x)


get_value = eval


def batch_get_value(xs):
    return [eval(x) for x in xs]


def set_value(x, value):
    """``x.assign(value)`` (``x`` a Keras variable)."""
    if not isinstance(x, keras.Variable):
        raise KerasformerError(f"K.set_value needs a Keras variable, got {type(x).__name__}: in Keras 3 "
                               "only variables hold state (layer.weights, model.trainable_variables)")
    x.assign(np.asarray(value, dtype=dtype(x)))


def batch_set_value(tuples):
    for x, value in tuples:
        set_value(x, value)


def zeros(shape, dtype=None, name=None):
    return ops.zeros(shape, dtype=dtype or floatx())


def ones(shape, dtype=None, name=None):
    return ops.ones(shape, dtype=dtype or floatx())


def eye(size, dtype=None, name=None):
    return ops.eye(size, dtype=dtype or floatx())


def zeros_like(x, dtype=None, name=None):
    return ops.zeros_like(x, dtype=dtype)


def ones_like(x, dtype=None, name=None):
    return ops.ones_like(x, dtype=dtype)


def arange(start, stop=None, step=1, dtype="int32"):
    if stop is None:
        start, stop = 0, start
    return ops.arange(start, stop, step, dtype=dtype)


def stop_gradient(variables):
    if isinstance(variables, (list, tuple)):
        return [ops.stop_gradient(v) for v in variables]
    return ops.stop_gradient(variables)


# ---------------------------------------------------------------------- reductions

def sum(x, axis=None, keepdims=False):  # noqa: A001
    return ops.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return ops.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return ops.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return ops.min(x, axis=axis, keepdims=keepdims)


def prod(x, axis=None, keepdims=False):
    if isinstance(x, (list, tuple)) and not builtins_any(is_tensor(i) for i in x):
        return int(np.prod(x))  # a static shape, as bert4keras' K.prod(shape[2:])
    return ops.prod(x, axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False):
    return ops.var(x, axis=axis, keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    return ops.std(x, axis=axis, keepdims=keepdims)


def any(x, axis=None, keepdims=False):  # noqa: A001
    return ops.any(ops.cast(x, "bool"), axis=axis, keepdims=keepdims)


def all(x, axis=None, keepdims=False):  # noqa: A001
    return ops.all(ops.cast(x, "bool"), axis=axis, keepdims=keepdims)


def argmax(x, axis=-1):
    return ops.argmax(x, axis=axis)


def argmin(x, axis=-1):
    return ops.argmin(x, axis=axis)


def logsumexp(x, axis=None, keepdims=False):
    return ops.logsumexp(x, axis=axis, keepdims=keepdims)


def cumsum(x, axis=0):
    return ops.cumsum(x, axis=axis)


def cumprod(x, axis=0):
    return ops.cumprod(x, axis=axis)


# --------------------------------------------------------------------- element-wise

square, abs, sqrt, exp, log, sign, sin, cos = (  # noqa: A001
    ops.square, ops.absolute, ops.sqrt, ops.exp, ops.log, ops.sign, ops.sin, ops.cos)
round = ops.round  # noqa: A001 - half to even, as tf.round
maximum, minimum = ops.maximum, ops.minimum
equal, not_equal = ops.equal, ops.not_equal
greater, greater_equal, less, less_equal = ops.greater, ops.greater_equal, ops.less, ops.less_equal
sigmoid, tanh, softplus, softsign = ops.sigmoid, ops.tanh, ops.softplus, ops.softsign


def pow(x, a):  # noqa: A001
    return ops.power(x, a)


def clip(x, min_value, max_value):
    if max_value is not None and min_value is not None and max_value < min_value:
        max_value = min_value  # Keras 2's rule
    return ops.clip(x, min_value, max_value)


def relu(x, alpha=0.0, max_value=None, threshold=0.0):
    return keras.activations.relu(x, negative_slope=alpha, max_value=max_value, threshold=threshold)


def elu(x, alpha=1.0):
    return keras.activations.elu(x, alpha=alpha)


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def hard_sigmoid(x):
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)  # Keras 2's slope (Keras 3 uses 1/6)


def l2_normalize(x, axis=None):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-12))


def dropout(x, level, noise_shape=None, seed=None):
    return keras.random.dropout(x, level, noise_shape=noise_shape, seed=seed)


# --------------------------------------------------------------------------- shapes

def expand_dims(x, axis=-1):
    return ops.expand_dims(x, axis)


def squeeze(x, axis):
    return ops.squeeze(x, axis)


def concatenate(tensors, axis=-1):
    return ops.concatenate(list(tensors), axis=axis)


def stack(x, axis=0):
    return ops.stack(list(x), axis=axis)


def reshape(tensor, *args):
    """``K.reshape(x, shape)``, or bert4keras' ``K.reshape(x, shape1, axis1, shape2, axis2, ...)``:
    axis ``axis_i`` split into ``shape_i`` (one -1 allowed), the other axes kept."""
    if len(args) == 1:
        return ops.reshape(tensor, tuple(args[0]))
    if len(args) % 2:
        raise KerasformerError("K.reshape(x, shape1, axis1, shape2, axis2, ...) takes (shape, axis) pairs")
    dims = [[d] for d in ops.shape(tensor)]
    for new, axis in zip(args[::2], args[1::2]):
        new = list(new)
        if new.count(-1) > 1:
            raise KerasformerError("K.reshape: at most one -1 per (shape, axis) pair")
        if -1 in new:
            new[new.index(-1)] = -dims[axis][0] // int(np.prod(new))
        dims[axis] = new
    return ops.reshape(tensor, tuple(d for group in dims for d in group))


def flatten(tensor, start=None, end=None):
    """bert4keras' ``K.flatten``: axes ``start..end-1`` merged into one (all of them by default,
    Keras 2's 1-D flatten)."""
    shape = list(ops.shape(tensor))
    start, end = start or 0, end or len(shape)
    start, end = start % len(shape) if start < 0 else start, end % len(shape) if end < 0 else end
    merged = shape[start:end]
    size = -1 if builtins_any(d is None for d in merged) else int(np.prod(merged))
    return ops.reshape(tensor, tuple(shape[:start] + [size] + shape[end:]))


def batch_flatten(x):
    return ops.reshape(x, (ops.shape(x)[0], -1))


def permute_dimensions(x, pattern):
    return ops.transpose(x, tuple(pattern))


def transpose(x):
    return ops.transpose(x)


def tile(x, n):
    return ops.tile(x, [n] if isinstance(n, int) else list(n))


def repeat_elements(x, rep, axis):
    return ops.repeat(x, rep, axis=axis)


def repeat(x, n):
    """``[batch, dim]`` -> ``[batch, n, dim]``."""
    return ops.repeat(ops.expand_dims(x, 1), n, axis=1)


def gather(reference, indices):
    return ops.take(reference, ops.cast(indices, "int32"), axis=0)


def one_hot(indices, num_classes):
    return ops.one_hot(ops.cast(indices, "int32"), num_classes)


def temporal_padding(x, padding=(1, 1)):
    return ops.pad(x, [(0, 0), tuple(padding), (0, 0)])


# ----------------------------------------------------------------- products, control

def dot(x, y):
    """Keras 2's ``K.dot``: ``np.dot`` semantics (last axis of x with the second-to-last of y)."""
    if len(y.shape) <= 2:
        return ops.matmul(x, y)
    return ops.tensordot(x, y, axes=[[len(x.shape) - 1], [len(y.shape) - 2]])


def batch_dot(x, y, axes=None):
    """Keras 2's ``K.batch_dot``: per example, contract ``x``'s axis ``axes[0]`` with ``y``'s
    ``axes[1]``; the result keeps x's other axes then y's; a 1-D result becomes ``[batch, 1]``."""
    x_ndim, y_ndim = len(x.shape), len(y.shape)
    if axes is None:
        axes = [x_ndim - 1, y_ndim - 1 if y_ndim == 2 else y_ndim - 2]
    if isinstance(axes, int):
        axes = (axes, axes)
    ax, ay = [a % n for a, n in zip(axes, (x_ndim, y_ndim))]
    if ax == 0 or ay == 0:
        raise KerasformerError("K.batch_dot cannot contract the batch axis")
    x = ops.moveaxis(x, ax, -1)
    y = ops.moveaxis(y, ay, 1)
    x_rest, y_rest = ops.shape(x)[1:-1], ops.shape(y)[2:]
    x3 = ops.reshape(x, (ops.shape(x)[0], -1, ops.shape(x)[-1]))
    y3 = ops.reshape(y, (ops.shape(y)[0], ops.shape(y)[1], -1))
    out = ops.matmul(x3, y3)
    out = ops.reshape(out, (ops.shape(out)[0],) + tuple(x_rest) + tuple(y_rest))
    if len(out.shape) == 1:
        out = ops.expand_dims(out, 1)
    return out


def where(cond, x, y):
    """``ops.where`` with broadcasting and a non-bool condition cast to bool (bert4keras)."""
    return ops.where(ops.cast(cond, "bool"), x, y)


def switch(condition, then_expression, else_expression):
    """Keras 2's ``K.switch``: branches may be callables; a lower-rank condition broadcasts."""
    then_expression = then_expression() if callable(then_expression) else then_expression
    else_expression = else_expression() if callable(else_expression) else else_expression
    condition = ops.cast(condition, "bool")
    target = builtins_max(len(getattr(then_expression, "shape", ())), len(getattr(else_expression, "shape", ())))
    while 0 < len(condition.shape) < target:
        condition = ops.expand_dims(condition, -1)
    return ops.where(condition, then_expression, else_expression)


def in_train_phase(x, alt, training=None):
    """``x`` when training else ``alt``; ``training`` must be given (a bool or tensor)."""
    if training is None:
        raise KerasformerError(
            "K.in_train_phase needs training=: Keras 3 has no global learning phase. Compute it in "
            "a layer whose call(self, inputs, training=None) receives Keras' flag and pass it on")
    if isinstance(training, (bool, int)):
        x, alt = (x, alt) if training else (alt, x)
        return x() if callable(x) else x
    return switch(training, x, alt)


def in_test_phase(x, alt, training=None):
    return in_train_phase(alt, x, training=training)


# --------------------------------------------------------------------------- losses

def _flat_labels(target, output):
    return ops.reshape(ops.cast(target, "int32"), ops.shape(output)[:-1])


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Keras 2's: integer labels (any shape with ``output``'s leading size, e.g. ``[b, n]`` or
    ``[b, n, 1]``), probabilities clipped to ``[epsilon, 1 - epsilon]`` unless from logits."""
    if axis not in (-1, len(output.shape) - 1):
        output = ops.moveaxis(output, axis, -1)
    return ops.sparse_categorical_crossentropy(_flat_labels(target, output), output, from_logits=from_logits)


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    return ops.categorical_crossentropy(target, output, from_logits=from_logits, axis=axis)


def binary_crossentropy(target, output, from_logits=False):
    return ops.binary_crossentropy(target, output, from_logits=from_logits)


# --------------------------------------------------------------------------- random

def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return keras.random.uniform(shape, minval, maxval, dtype=dtype or floatx(), seed=seed)


def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return keras.random.normal(shape, mean, stddev, dtype=dtype or floatx(), seed=seed)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return keras.random.truncated_normal(shape, mean, stddev, dtype=dtype or floatx(), seed=seed)


def random_binomial(shape, p=0.0, dtype=None, seed=None):
    return ops.cast(keras.random.uniform(shape, seed=seed) < p, dtype or floatx())


# ----------------------------------------------------- what Keras 3 cannot have (errors)

_IMPOSSIBLE = {
    "gradients": "gradients are taken inside a train step in Keras 3. For bert4keras' tricks call "
                 "kerasformer.training.adversarial_training(model, ...) / gradient_penalty(model, ...) "
                 "after model.compile; for your own, kerasformer.backend.value_and_grad(fn)",
    "function": "build keras.Model(inputs, outputs) and call .predict(...) (or "
                "kerasformer.utils.intermediate_outputs(model, names)); for a custom train step "
                "see kerasformer.training",
    "placeholder": "use keras.Input(shape=...)",
    "get_session": "Keras 3 has no TensorFlow session",
    "set_session": "Keras 3 has no TensorFlow session",
    "update": "assign to the variable: variable.assign(value); for an optimizer subclass "
              "keras.optimizers.Optimizer (update_step) or use kerasformer.optimizers",
    "update_add": "variable.assign_add(value)",
    "update_sub": "variable.assign_sub(value)",
    "learning_phase": "Keras 3 has no global learning phase: layers receive call(..., training=None)",
    "set_learning_phase": "pass training= to model(...) / layers; fit() and predict() set it",
    "rnn": "use keras.layers.RNN or keras.ops.scan / fori_loop",
    "get_uid": "Keras 3 names layers itself",
}


def _impossible(name):
    def raiser(*args, **kwargs):
        raise KerasformerError(f"K.{name} does not exist in Keras 3: {_IMPOSSIBLE[name]}")

    raiser.__name__ = name
    return raiser


for _name in _IMPOSSIBLE:
    globals()[_name] = _impossible(_name)


def __getattr__(name):
    raise AttributeError(f"K.{name}: kerasformer's Keras 2 backend shim has no {name!r}; use "
                         f"keras.ops (https://keras.io/api/ops/) -- see docs/porting.md")


# names shadowed above (sum, max, any, ...) still needed inside this module
import builtins as _builtins  # noqa: E402

builtins_any, builtins_max = _builtins.any, _builtins.max
