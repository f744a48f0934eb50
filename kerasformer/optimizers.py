"""bert4keras' optimizer toolkit on top of Keras 3 optimizers (tested on JAX and PyTorch).

bert4keras grows optimizers by composition: ``extend_with_weight_decay(Adam)`` returns a new
optimizer class with extra constructor arguments, and extensions stack::

    AdamWLR = extend_with_piecewise_linear_lr(extend_with_weight_decay(keras.optimizers.Adam))
    optimizer = AdamWLR(learning_rate=2e-5, weight_decay_rate=0.01,
                        exclude_from_weight_decay=['Norm', 'bias'],
                        lr_schedule={1000: 1, 10000: 0.1})

The same functions exist here, under the same names and with the same arguments, but each
one hooks into the Keras 3 optimizer instead of patching ``K.update``:

=========================================  =================================================
extension (new constructor arguments)      what it does, and the Keras 3 hook it uses
=========================================  =================================================
``extend_with_weight_decay``               decoupled weight decay (``weight_decay``) whose
(``weight_decay_rate``,                    exclusion patterns are matched against the
``exclude_from_weight_decay``)             variable *path* ('Transformer-0-FeedForward-Norm/
                                           gamma'); Keras matches ``var_names`` against the
                                           bare name ('gamma'), so 'Norm' would never match.
``extend_with_piecewise_linear_lr``        learning rate times :func:`piecewise_linear` of the
(``lr_schedule``)                          step (``_get_current_learning_rate``).
``extend_with_parameter_wise_lr``          each variable's whole update (gradient step and
(``paramwise_lr_schedule``)                weight decay) scaled by its multiplier; exact for
                                           every optimizer, Adam included.
``extend_with_gradient_accumulation``      Keras' ``gradient_accumulation_steps``.
(``grad_accum_steps``)
``extend_with_exponential_moving_average`` Keras' ``use_ema`` average plus bert4keras'
(``ema_momentum``)                         ``apply_ema_weights()`` / ``reset_old_weights()``.
``extend_with_lookahead``                  Lookahead (Zhang et al. 2019): slow weights pulled
(``steps_per_slow_update``,                towards the fast ones every k updates.
``slow_step_size``)
``extend_with_gradient_transform``         ``fn(grad, variable) -> grad`` per variable, applied
(``gradient_transform``)                   to the gradient the update actually uses.
=========================================  =================================================

Plus ready-made pieces: :class:`AdamW` (Adam + decay, LayerNorm and biases excluded),
:class:`PiecewiseLinear` (a ``LearningRateSchedule``), :func:`Lookahead` (wraps an optimizer
instance), ``Lion`` (Keras' own, which follows the paper), :func:`layerwise_lr_multipliers`
(layer-wise learning-rate decay for ``paramwise_lr_schedule``) and
:func:`exclude_from_weight_decay` (path-based exclusion for any Keras optimizer instance).

On PyTorch, :class:`AdamW`, :class:`Adam` and ``extend_with_weight_decay`` /
``extend_with_piecewise_linear_lr`` over ``keras.optimizers.Adam`` update all variables with
torch's fused Adam kernel (:mod:`kerasformer.backend.fused_optimizers`), under every
extension here (each extension's own step still runs around it); AMSGrad and subclasses that
override ``update_step`` keep Keras' per-variable loop. The numbers are the loop's.

Generated classes are registered as Keras custom objects under their class name (as
bert4keras does), so a compiled model saved as ``.keras`` loads again once the same
``extend_with_*`` call has run in the loading process.
"""
import re

import keras
import numpy as np
from keras import ops

from kerasformer.backend import private
from kerasformer.backend.fused_optimizers import fused_update_step
from kerasformer.errors import KerasformerError
from kerasformer.snippets import string_matching

DEFAULT_WEIGHT_DECAY_EXCLUDE = ("Norm", "bias")


@keras.saving.register_keras_serializable(package="kerasformer")
class Lion(keras.optimizers.Lion):
    """bert4keras' Lion (Chen et al. 2023, Algorithm 2): ``c = b1*m + (1-b1)*g;
    w -= lr*(sign(c) + wd*w); m = b2*m + (1-b2)*g`` -- Keras' own update (decay: Keras'
    decoupled ``weight_decay``) with bert4keras' defaults ``(3e-4, 0.95, 0.98)`` rather than
    Keras' ``(1e-3, 0.9, 0.99)``. tests/test_optimizers.py checks it against the formula."""

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **kwargs)


LionV2 = Lion


# ---------------------------------------------------------------------------- small helpers

def variable_name(variable):
    """The name patterns are matched against: the variable's path
    ('Transformer-0-MultiHeadSelfAttention/q_dense/bias') when it has one, else its name."""
    return getattr(variable, "path", None) or variable.name


def _set_untracked(obj, name, value):
    """Set an attribute without Keras' variable tracking: an optimizer would otherwise adopt
    every model variable in a list we keep as one of its own variables."""
    obj.__dict__[name] = value


def _register(cls, name):
    cls.__name__ = cls.__qualname__ = name
    keras.saving.get_custom_objects()[name] = cls
    return cls


def _model_variables(model_or_variables):
    """Trainable variables of a Keras model, of a kerasformer Transformer, or an iterable."""
    if hasattr(model_or_variables, "trainable_variables"):
        return list(model_or_variables.trainable_variables)
    if hasattr(model_or_variables, "model") and hasattr(model_or_variables.model, "trainable_variables"):
        return list(model_or_variables.model.trainable_variables)
    return list(model_or_variables)


# ------------------------------------------------------------------ piecewise linear schedule

def piecewise_linear(t, schedule, from_zero=True):
    """bert4keras' piecewise linear function of the step ``t``.

    ``schedule`` is a dict like ``{1000: 1, 2000: 0.1}``: for ``t`` in [0, 1000] the value rises
    linearly from 0 to 1, for ``t`` in [1000, 2000] it falls linearly to 0.1, and after 2000 it
    stays 0.1. With ``from_zero=False`` (or a schedule that has a 0 key) there is no implicit
    ``(0, 0)`` point, and steps before the first key take the first value.

    Works on Python numbers and backend tensors alike; returns a float32 tensor.
    """
    points = sorted((int(k), float(v)) for k, v in dict(schedule).items())
    if not points:
        raise KerasformerError("piecewise_linear needs a non-empty schedule")
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    t = ops.cast(t, "float32")
    x = ops.ones_like(t) * points[0][1]
    for i, (t_begin, x_begin) in enumerate(points):
        if i + 1 < len(points):
            t_end, x_end = points[i + 1]
            segment = x_begin + (x_end - x_begin) / (t_end - t_begin) * (t - t_begin)
        else:
            segment = ops.ones_like(t) * x_begin
        x = ops.where(t >= t_begin, segment, x)
    return x


@keras.saving.register_keras_serializable(package="kerasformer")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule: ``learning_rate * piecewise_linear(step, schedule)``.

    ``PiecewiseLinear({1000: 1, 2000: 0.1}, learning_rate=2e-5)`` warms up linearly from 0 to
    2e-5 over the first 1000 steps, decays linearly to 2e-6 at step 2000 and stays there.
    With the default ``learning_rate=1.0`` the schedule's values are the learning rates.
    """

    def __init__(self, schedule, learning_rate=1.0, from_zero=True):
        super().__init__()
        # JSON turns the int keys into strings; turn them back
        self.schedule = {int(k): float(v) for k, v in dict(schedule).items()}
        self.learning_rate = float(learning_rate)
        self.from_zero = bool(from_zero)

    def __call__(self, step):
        return self.learning_rate * piecewise_linear(step, self.schedule, self.from_zero)

    def get_config(self):
        return {"schedule": {str(k): v for k, v in self.schedule.items()},
                "learning_rate": self.learning_rate, "from_zero": self.from_zero}


# --------------------------------------------------------------------------- fused update

_PER_VARIABLE_LOOP = private.require(keras.optimizers.Optimizer, "_backend_update_step")._backend_update_step
_FUSED_KINDS = {keras.optimizers.Adam.update_step: "keras_adam"}  # update_step -> fused version


def _fused_or_loop(optimizer, parent, grads, variables, learning_rate):
    """``_backend_update_step`` of a class whose parent's is ``parent`` (bound): where that is
    Keras' loop over ``update_step`` and the backend has a fused version of this optimizer's
    ``update_step`` (torch: its fused Adam kernel, :mod:`kerasformer.backend.fused_optimizers`),
    run that instead -- the same update, all variables at once; otherwise ``parent``. The
    check on the parent keeps every extension that overrides ``_backend_update_step`` below
    this class (layer adaptation, lazy updates, parameter-wise rates) in charge."""
    kind = _FUSED_KINDS.get(type(optimizer).update_step)
    if (kind is None or getattr(parent, "__func__", None) is not _PER_VARIABLE_LOOP
            or not fused_update_step(optimizer, kind, grads, variables, learning_rate)):
        parent(grads, variables, learning_rate)


# ------------------------------------------------------------------------- weight decay

def exclude_from_weight_decay(optimizer, patterns=DEFAULT_WEIGHT_DECAY_EXCLUDE):
    """Exclude from ``optimizer``'s weight decay every variable whose *path* matches one of the
    regular expressions in ``patterns`` (``re.search``), e.g. ('Norm', 'bias') for LayerNorm
    gammas/betas and all biases. Works on any Keras 3 optimizer instance (``keras.optimizers.
    AdamW``, ``Lion``, ...), before it is built; returns the optimizer.

    Why not Keras' own ``optimizer.exclude_from_weight_decay(var_names=...)``: Keras searches
    the bare variable name, which in Keras 3 is just 'gamma' or 'kernel', so 'Norm' never
    matches. This keeps Keras' own exclusions and adds the path-based ones.

    The exclusion lives on this instance only and is not part of the optimizer's config; for
    an optimizer that saves and reloads with its exclusions use :class:`AdamW` or
    :func:`extend_with_weight_decay`.
    """
    if optimizer.built:
        raise KerasformerError("exclude_from_weight_decay must be called before the optimizer is built")
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    keras_decision = private.get(optimizer, "_use_weight_decay")

    def use_weight_decay(variable):
        if not keras_decision(variable):
            return False
        return pattern is None or pattern.search(variable_name(variable)) is None

    _set_untracked(optimizer, "_use_weight_decay", use_weight_decay)
    return optimizer


def extend_with_weight_decay(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` with decoupled weight decay (AdamW-style:
    ``w -= lr * weight_decay_rate * w`` each update, besides the gradient step).

    New arguments: ``weight_decay_rate=0.01``; ``exclude_from_weight_decay=()``, regular
    expressions searched in each variable's path (bert4keras' ``string_matching``), e.g.
    ``['Norm', 'bias']``.
    """
    private.require(BaseOptimizer, "_use_weight_decay")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, weight_decay_rate=None, exclude_from_weight_decay=(), **kwargs):
            if weight_decay_rate is None:
                weight_decay_rate = kwargs.pop("weight_decay", None)
                weight_decay_rate = 0.01 if weight_decay_rate is None else weight_decay_rate
            else:
                kwargs.pop("weight_decay", None)
            super().__init__(*args, weight_decay=weight_decay_rate, **kwargs)
            patterns = tuple(exclude_from_weight_decay or ())
            _set_untracked(self, "_weight_decay_patterns", patterns)
            _set_untracked(self, "_weight_decay_regex",
                           re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None)
            _set_untracked(self, "_weight_decay_decisions", {})

        @property
        def weight_decay_rate(self):
            return self.weight_decay

        def _use_weight_decay(self, variable):
            key = id(variable)
            decisions = self._weight_decay_decisions
            if key not in decisions:
                use = super()._use_weight_decay(variable)
                if use and self._weight_decay_regex is not None:
                    use = self._weight_decay_regex.search(variable_name(variable)) is None
                decisions[key] = use
            return decisions[key]

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            _fused_or_loop(self, super()._backend_update_step, grads, trainable_variables, learning_rate)

        def get_config(self):
            config = super().get_config()
            config["weight_decay_rate"] = config.pop("weight_decay", None)
            config["exclude_from_weight_decay"] = list(self._weight_decay_patterns)
            return config

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithWeightDecay")


class AdamW(extend_with_weight_decay(keras.optimizers.Adam, name="_KerasformerAdamWBase")):
    """Adam with decoupled weight decay that, by default, leaves LayerNorm and bias variables
    alone (``exclude_from_weight_decay=('Norm', 'bias')``, matched against variable paths):
    the usual recipe for fine-tuning BERT-like models. ``weight_decay_rate`` defaults to 0.01.
    """

    def __init__(self, learning_rate=0.001, weight_decay_rate=0.01,
                 exclude_from_weight_decay=DEFAULT_WEIGHT_DECAY_EXCLUDE, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay_rate=weight_decay_rate,
                         exclude_from_weight_decay=exclude_from_weight_decay, **kwargs)


keras.saving.register_keras_serializable(package="kerasformer", name="AdamW")(AdamW)


# ------------------------------------------------------------------ learning-rate schedules

def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` whose learning rate is multiplied by
    ``piecewise_linear(iterations, lr_schedule)``.

    New argument: ``lr_schedule={0: 1}``; e.g. ``{1000: 1, 2000: 0.1}`` warms up from 0 to the
    full rate over 1000 steps, decays linearly to 10% by step 2000, then stays there. The step
    is the optimizer's update counter before the update (so the very first update has rate 0,
    as in bert4keras); with gradient accumulation it counts micro-batches, as Keras' own
    schedules do. The weight decay uses the scheduled rate too.
    """
    private.require(BaseOptimizer, "_get_current_learning_rate")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            schedule = {0: 1.0} if lr_schedule is None else lr_schedule
            _set_untracked(self, "lr_schedule", {int(k): float(v) for k, v in dict(schedule).items()})

        def _get_current_learning_rate(self):
            multiplier = piecewise_linear(private.get(self, "_iterations"), self.lr_schedule)
            return ops.convert_to_tensor(super()._get_current_learning_rate()) * multiplier

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            _fused_or_loop(self, super()._backend_update_step, grads, trainable_variables, learning_rate)

        def get_config(self):
            config = super().get_config()
            config["lr_schedule"] = {str(k): v for k, v in self.lr_schedule.items()}
            return config

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithPiecewiseLinearLR")


def extend_with_parameter_wise_lr(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` with a learning-rate multiplier per variable.

    New argument: ``paramwise_lr_schedule={}``, a dict ``{substring: multiplier}``; a variable
    whose path contains ``substring`` has its multiplier multiplied by ``multiplier`` (several
    matches multiply, as in bert4keras). See :func:`layerwise_lr_multipliers`.

    Exactness: as in bert4keras (``x + (new_x - x) * multiplier``), the *whole update* of the
    variable -- the base optimizer's step and the weight decay -- is scaled, not the gradient.
    Scaling the gradient would be a no-op for Adam (it is invariant to gradient scale).
    """
    private.require(BaseOptimizer, "_get_current_learning_rate", "_use_weight_decay", "_backend_update_step")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            _set_untracked(self, "paramwise_lr_schedule",
                           {str(k): float(v) for k, v in dict(paramwise_lr_schedule or {}).items()})
            _set_untracked(self, "_lr_multipliers", {})

        def lr_multiplier(self, variable):
            """The product of the multipliers whose key occurs in the variable's path."""
            key = id(variable)
            if key not in self._lr_multipliers:
                multiplier = 1.0
                for pattern, value in self.paramwise_lr_schedule.items():
                    if pattern in variable_name(variable):
                        multiplier *= value
                self._lr_multipliers[key] = multiplier
            return self._lr_multipliers[key]

        def _apply_weight_decay(self, variables):
            # Keras decays all variables by the same factor; ours depends on the multiplier
            if self.weight_decay is None:
                return
            learning_rate = self._get_current_learning_rate()
            for variable in variables:
                if self._use_weight_decay(variable):
                    factor = learning_rate * self.weight_decay * self.lr_multiplier(variable)
                    value = variable.value
                    variable.assign(value - value * ops.cast(factor, value.dtype))

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            # unscaled variables in one call (keeps the backend's fused update); each scaled one
            # on its own, remembering its old value to rescale the delta -- one copy alive at a
            # time, not a copy of the whole model
            pairs = list(zip(grads, trainable_variables))
            plain = [(g, v) for g, v in pairs if self.lr_multiplier(v) == 1.0]
            if plain:
                super()._backend_update_step([g for g, _ in plain], [v for _, v in plain], learning_rate)
            for grad, variable in pairs:
                multiplier = self.lr_multiplier(variable)
                if multiplier == 1.0:
                    continue
                old = ops.copy(variable.value)
                super()._backend_update_step([grad], [variable], learning_rate)
                new = variable.value
                variable.assign(old + (new - old) * ops.cast(multiplier, new.dtype))

        def get_config(self):
            config = super().get_config()
            config["paramwise_lr_schedule"] = dict(self.paramwise_lr_schedule)
            return config

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithParameterWiseLR")


def layerwise_lr_multipliers(model, decay=0.9, num_layers=None, embedding_pattern="Embedding-"):
    """Layer-wise learning-rate decay as a ``paramwise_lr_schedule``.

    For a model with ``L`` blocks named 'Transformer-%d-...': block ``i`` gets ``decay ** (L - i)``
    (the top block ``decay``, the bottom one ``decay ** L``), variables whose path contains
    ``embedding_pattern`` get ``decay ** (L + 1)``, and everything else (heads: pooler, MLM,
    your classifier) keeps 1. ``model`` is a Keras model, a kerasformer ``Transformer`` or a
    list of variables; ``num_layers`` overrides the count found in the variable paths.

    Keys end with '-' so that 'Transformer-1-' does not also match 'Transformer-11-'. Models
    with one shared block (ALBERT) have no numbered blocks: only the embeddings are scaled.
    """
    if num_layers is None:
        indices = set()
        for variable in _model_variables(model):
            indices.update(int(i) for i in re.findall(r"Transformer-(\d+)-", variable_name(variable)))
        num_layers = max(indices) + 1 if indices else 0
    multipliers = {f"Transformer-{i}-": float(decay ** (num_layers - i)) for i in range(num_layers)}
    if embedding_pattern:
        multipliers[embedding_pattern] = float(decay ** (num_layers + 1))
    return multipliers


# ------------------------------------------------------------------ gradient accumulation

def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` that updates once every ``grad_accum_steps`` batches with
    the mean of their gradients (Keras' ``gradient_accumulation_steps``): with a mean loss,
    k accumulated batches of size b make the same update as one batch of size k*b.

    New argument: ``grad_accum_steps=2``.
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, grad_accum_steps=None, **kwargs):
            if grad_accum_steps is None:
                grad_accum_steps = kwargs.pop("gradient_accumulation_steps", None) or 2
            else:
                kwargs.pop("gradient_accumulation_steps", None)
            grad_accum_steps = int(grad_accum_steps)
            if grad_accum_steps < 1:
                raise KerasformerError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
            super().__init__(*args, gradient_accumulation_steps=grad_accum_steps if grad_accum_steps > 1 else None,
                             **kwargs)

        @property
        def grad_accum_steps(self):
            return self.gradient_accumulation_steps or 1

        def get_config(self):
            config = super().get_config()
            config["grad_accum_steps"] = config.pop("gradient_accumulation_steps", None) or 1
            return config

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithGradientAccumulation")


# ---------------------------------------------------------------- exponential moving average

def apply_ema_weights(optimizer, model=None):
    """Back up the model's weights, then load the optimizer's moving averages into them.

    ``optimizer`` is any Keras 3 optimizer built with ``use_ema=True``. On JAX, in a batch-level
    callback, pass ``model`` (or touch ``self.model`` first) so the training state is synced to
    the variables before they are read; at epoch ends Keras has synced already.
    """
    if model is not None and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
    if not getattr(optimizer, "use_ema", False):
        raise KerasformerError("the optimizer keeps no moving average: create it with use_ema=True "
                               "(or with extend_with_exponential_moving_average)")
    if not optimizer.built or int(ops.convert_to_numpy(private.get(optimizer, "_iterations"))) == 0:
        # Keras' averages start at zero and take the weights' value at the first update
        raise KerasformerError("the optimizer has not made an update yet: there is no average to apply")
    variables = list(private.get(optimizer, "_trainable_variables"))
    averages = list(private.get(optimizer, "_model_variables_moving_average"))
    _set_untracked(optimizer, "_ema_old_weights", [ops.convert_to_numpy(v.value) for v in variables])
    for variable, average in zip(variables, averages):
        if average is not None:
            variable.assign(ops.copy(average.value))  # a copy, not a shared (JAX) buffer


def reset_old_weights(optimizer):
    """Restore the weights that :func:`apply_ema_weights` backed up."""
    old = optimizer.__dict__.get("_ema_old_weights")
    if old is None:
        raise KerasformerError("reset_old_weights called before apply_ema_weights")
    for variable, value in zip(private.get(optimizer, "_trainable_variables"), old):
        variable.assign(value)


def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` that keeps an exponential moving average of the weights.

    New argument: ``ema_momentum=0.999``. Methods: ``apply_ema_weights()`` backs up the model's
    weights and loads the averages; ``reset_old_weights()`` restores them (typically around an
    evaluation in a callback).

    The average is Keras' (``use_ema=True``): after the first update it equals the weights, then
    ``avg = m * avg + (1 - m) * w`` after each update. bert4keras started from zeros and divided by
    ``1 - m**t`` when applying; Keras' start already gives weights summing to one, so no bias
    correction is needed or applied. As in bert4keras, and unlike plain ``use_ema=True``, the
    model keeps its trained weights at the end of ``fit`` (Keras would overwrite them with the
    averages); call ``apply_ema_weights()`` to use the averages.
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            kwargs.pop("use_ema", None)
            super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)

        def apply_ema_weights(self, model=None):
            apply_ema_weights(self, model)

        def reset_old_weights(self):
            reset_old_weights(self)

        def finalize_variable_values(self, var_list):
            pass  # keep the trained weights; see the docstring

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithEMA")


# -------------------------------------------------------------------------------- lookahead

def extend_with_lookahead(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` with Lookahead (Zhang et al. 2019,
    https://arxiv.org/abs/1907.08610).

    New arguments: ``steps_per_slow_update=5`` (k) and ``slow_step_size=0.5`` (alpha). The slow
    weights start as the weights the optimizer is built on; after every k-th update,
    ``slow += alpha * (fast - slow)`` and the fast weights are reset to ``slow``. With gradient
    accumulation, k counts real updates.

    (bert4keras started the slow weights at zero, which shrinks the model by alpha at the first
    synchronisation; we follow the paper.)
    """
    private.require(BaseOptimizer, "_backend_apply_gradients", "_get_variable_index")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            if int(steps_per_slow_update) < 1:
                raise KerasformerError("steps_per_slow_update must be >= 1")
            self.steps_per_slow_update = int(steps_per_slow_update)
            self.slow_step_size = float(slow_step_size)

        def build(self, variables):
            if self.built:
                return
            super().build(variables)
            self._slow_weights = self.add_optimizer_variables(variables, "slow")
            for slow, variable in zip(self._slow_weights, variables):
                if slow is not None:
                    # a copy: on JAX the two variables would otherwise share one buffer, which
                    # the trainer then donates twice
                    slow.assign(ops.copy(variable.value))

        def _backend_apply_gradients(self, grads, trainable_variables):
            super()._backend_apply_gradients(grads, trainable_variables)
            # the counter is incremented after this method: the update just made is number
            # _iterations + 1 (in micro-batches when accumulating)
            period = self.steps_per_slow_update * (self.gradient_accumulation_steps or 1)
            sync = ops.equal(ops.mod(private.get(self, "_iterations") + 1, period), 0)
            alpha = self.slow_step_size
            for variable in trainable_variables:
                slow = self._slow_weights[self._get_variable_index(variable)]
                if slow is None:
                    continue
                fast = variable.value
                new_slow = slow.value + ops.cast(alpha, fast.dtype) * (fast - slow.value)
                slow.assign(ops.where(sync, new_slow, slow.value))
                variable.assign(ops.where(sync, new_slow, fast))

        def get_config(self):
            config = super().get_config()
            config.update(steps_per_slow_update=self.steps_per_slow_update,
                          slow_step_size=self.slow_step_size)
            return config

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithLookahead")


def Lookahead(optimizer, steps_per_slow_update=5, slow_step_size=0.5):  # noqa: N802 - reads as a wrapper
    """Wrap an optimizer *instance* with Lookahead: returns a new optimizer of class
    ``extend_with_lookahead(type(optimizer))`` with the same configuration. Call it before
    training (the wrapped optimizer must not be built: its state would not carry over)."""
    if optimizer.built:
        raise KerasformerError("Lookahead must wrap an optimizer that has not been built yet")
    config = optimizer.get_config()
    config.update(steps_per_slow_update=steps_per_slow_update, slow_step_size=slow_step_size)
    return extend_with_lookahead(type(optimizer)).from_config(config)


# ------------------------------------------------------------------ gradient transformation

def extend_with_gradient_transform(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` that passes each gradient through
    ``gradient_transform(grad, variable) -> grad`` before using it.

    The transform sees the gradient the update uses: after loss-scale unscaling and after
    gradient accumulation has averaged the micro-batches, before Keras' own ``clipnorm`` /
    ``clipvalue`` / ``global_clipnorm`` (which therefore still bound the result). Typical use:
    per-variable clipping or freezing, e.g. ``lambda g, v: ops.clip(g, -1, 1) if 'Embedding' in
    v.path else g``. To save the optimizer in a ``.keras`` file, the function must be a
    registered Keras serializable.
    """
    private.require(BaseOptimizer, "_backend_apply_gradients", "_clip_gradients")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, gradient_transform=None, **kwargs):
            super().__init__(*args, **kwargs)
            if isinstance(gradient_transform, dict):
                gradient_transform = keras.saving.deserialize_keras_object(gradient_transform)
            _set_untracked(self, "gradient_transform", gradient_transform)
            _set_untracked(self, "_transform_variables", None)

        def _backend_apply_gradients(self, grads, trainable_variables):
            # Keras' _clip_gradients sees the gradients only; remember which variables they belong to
            _set_untracked(self, "_transform_variables", list(trainable_variables))
            try:
                super()._backend_apply_gradients(grads, trainable_variables)
            finally:
                _set_untracked(self, "_transform_variables", None)

        def _clip_gradients(self, grads):
            if self.gradient_transform is not None and self._transform_variables is not None:
                grads = [g if g is None else self.gradient_transform(g, v)
                         for g, v in zip(grads, self._transform_variables)]
            return super()._clip_gradients(grads)

        def get_config(self):
            config = super().get_config()
            if self.gradient_transform is not None:
                config["gradient_transform"] = keras.saving.serialize_keras_object(self.gradient_transform)
            return config

    return _register(NewOptimizer, name or f"{BaseOptimizer.__name__}WithGradientTransform")


# ------------------------------------------------------------------- bert4keras' optimizers

@keras.saving.register_keras_serializable(package="kerasformer")
class Adam(private.require(keras.optimizers.Optimizer, "_get_variable_index")):
    """bert4keras' ``Adam`` (its tf.keras optimizer): ``m = b1*m + (1-b1)*g``,
    ``v = b2*v + (1-b2)*g^2``, then with ``bias_correction=True`` ``m /= 1 - b1^t``,
    ``v /= 1 - b2^t``, and ``w -= lr * m / (sqrt(v) + epsilon)``.

    Differs from ``keras.optimizers.Adam`` in where epsilon sits (added to the bias-corrected
    ``sqrt(v)``, Keras adds it to the uncorrected one), its default (1e-6, Keras 1e-7), and
    ``bias_correction=False`` (no correction at all: what BERT's original AdamWeightDecay does).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 bias_correction=True, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name or "Adam", **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon or keras.config.epsilon()
        self.bias_correction = bool(bias_correction)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        m_t = self.beta_1 * m + (1.0 - self.beta_1) * gradient
        v_t = self.beta_2 * v + (1.0 - self.beta_2) * ops.square(gradient)
        self.assign(m, m_t)
        self.assign(v, v_t)
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, dtype)
            m_t = m_t / (1.0 - ops.power(ops.cast(self.beta_1, dtype), step))
            v_t = v_t / (1.0 - ops.power(ops.cast(self.beta_2, dtype), step))
        self.assign_sub(variable, lr * m_t / (ops.sqrt(v_t) + self.epsilon))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        _fused_or_loop(self, super()._backend_update_step, grads, trainable_variables, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      bias_correction=self.bias_correction)
        return config


_FUSED_KINDS[Adam.update_step] = "bert4keras_adam"


def _root_mean_square(x):
    return ops.sqrt(ops.mean(ops.square(x)))


@keras.saving.register_keras_serializable(package="kerasformer")
class AdaFactor(private.require(keras.optimizers.Optimizer, "_get_variable_index", "_get_current_learning_rate")):
    """bert4keras' ``AdaFactor`` (Shazeer & Stern 2018, as mesh-tensorflow; ``AdaFactorV1`` and
    ``AdaFactorV2`` compute the same update). Per variable ``p`` with gradient ``g``, at step
    ``t`` (from 1):

    * ``g2 = g^2 + epsilon1``; ``v = b2*v + (1-b2)*g2`` with ``b2 = beta2`` or, when None,
      ``1 - t^-0.8``; for a matrix whose two largest axes are both >= ``min_dim_size_to_factor``
      ``v`` is factored into the row and column means ``vr``, ``vc`` and rebuilt as
      ``vr * vc / mean(vr)``;
    * ``u = g / sqrt(v + epsilon1)``, divided by ``max(1, rms(u) / clipping_threshold)``;
    * ``beta1 > 0``: ``u = m = beta1*m + (1-beta1)*u``;
    * ``multiply_by_parameter_scale``: ``u *= max(rms(p), epsilon2)`` (except variables whose
      path matches ``exclude_from_parameter_scale``);
    * ``p -= lr * u`` with ``lr = learning_rate`` or, when None, ``min(1/sqrt(t), 0.01)``
      (times 0.05 without parameter scaling).

    Not Keras 3's ``keras.optimizers.Adafactor``, which scales and clips differently.
    """

    def __init__(self, learning_rate=1e-3, beta1=0.0, beta2=None, epsilon1=1e-30, epsilon2=1e-3,
                 multiply_by_parameter_scale=True, clipping_threshold=1.0,
                 min_dim_size_to_factor=128, exclude_from_parameter_scale=None, name=None, **kwargs):
        super().__init__(learning_rate=1.0 if learning_rate is None else learning_rate,
                         name=name or "AdaFactor", **kwargs)
        self._adafactor_lr = learning_rate
        self.beta1 = beta1
        self._beta2 = beta2
        self.epsilon1 = epsilon1
        self.epsilon2 = epsilon2
        self.multiply_by_parameter_scale = multiply_by_parameter_scale
        self.clipping_threshold = clipping_threshold
        self.min_dim_size_to_factor = min_dim_size_to_factor
        self.exclude_from_parameter_scale = list(exclude_from_parameter_scale or [])

    def _step(self):
        return ops.cast(private.get(self, "_iterations") + 1, "float32")

    def _get_current_learning_rate(self):
        if self._adafactor_lr is not None:
            return super()._get_current_learning_rate()
        rate = ops.minimum(1.0 / ops.sqrt(self._step()), 0.01)
        return rate if self.multiply_by_parameter_scale else rate * 0.05

    @property
    def beta2(self):
        if self._beta2 is None:
            return 1.0 - ops.power(self._step(), -0.8)
        return self._beta2

    def factored_shape(self, shape):
        """``(shape1, axis1, shape2, axis2)`` of the factored second moment, or None."""
        if len(shape) < 2:
            return None
        shape = np.array(shape)
        indices = shape.argpartition(-2)
        if shape[indices[-2]] < self.min_dim_size_to_factor:
            return None
        shape1, shape2 = np.array(shape), np.array(shape)
        shape1[indices[-1]] = 1
        shape2[indices[-2]] = 1
        return tuple(int(d) for d in shape1), int(indices[-1]), tuple(int(d) for d in shape2), int(indices[-2])

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._slots = []
        for variable in var_list:
            slots = {}
            factored = self.factored_shape(tuple(variable.shape))
            if factored is None:
                slots["v"] = self.add_variable_from_reference(variable, "v")
            else:
                shape1, _, shape2, _ = factored
                slots["vr"] = self.add_variable(shape1, initializer="zeros", dtype=variable.dtype,
                                                name=f"{variable.name}_vr")
                slots["vc"] = self.add_variable(shape2, initializer="zeros", dtype=variable.dtype,
                                                name=f"{variable.name}_vc")
            if self.beta1 > 0.0:
                slots["m"] = self.add_variable_from_reference(variable, "m")
            self._slots.append(slots)

    def _do_parameter_scale(self, variable):
        return self.multiply_by_parameter_scale and not string_matching(
            variable_name(variable), self.exclude_from_parameter_scale)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        slots = self._slots[self._get_variable_index(variable)]
        beta2 = ops.cast(self.beta2, dtype)
        g2 = ops.square(gradient) + self.epsilon1
        factored = self.factored_shape(tuple(variable.shape))
        if factored is None:
            v_t = beta2 * slots["v"] + (1.0 - beta2) * g2
            self.assign(slots["v"], v_t)
        else:
            _, axis1, _, axis2 = factored
            vr_t = beta2 * slots["vr"] + (1.0 - beta2) * ops.mean(g2, axis=axis1, keepdims=True)
            vc_t = beta2 * slots["vc"] + (1.0 - beta2) * ops.mean(g2, axis=axis2, keepdims=True)
            self.assign(slots["vr"], vr_t)
            self.assign(slots["vc"], vc_t)
            v_t = vr_t * vc_t / ops.mean(vr_t, axis=axis2, keepdims=True)
        u = gradient / ops.sqrt(v_t + self.epsilon1)
        if self.clipping_threshold is not None:
            u = u / ops.maximum(1.0, _root_mean_square(u) / self.clipping_threshold)
        if self.beta1 > 0.0:
            u = self.beta1 * slots["m"] + (1.0 - self.beta1) * u
            self.assign(slots["m"], u)
        if self._do_parameter_scale(variable):
            u = u * ops.maximum(_root_mean_square(variable), self.epsilon2)
        self.assign_sub(variable, lr * u)

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self._adafactor_lr, beta1=self.beta1, beta2=self._beta2,
                      epsilon1=self.epsilon1, epsilon2=self.epsilon2,
                      multiply_by_parameter_scale=self.multiply_by_parameter_scale,
                      clipping_threshold=self.clipping_threshold,
                      min_dim_size_to_factor=self.min_dim_size_to_factor,
                      exclude_from_parameter_scale=self.exclude_from_parameter_scale)
        return config


AdaFactorBase = AdaFactorV1 = AdaFactorV2 = AdaFactor


def _extend_with_update_transform(BaseOptimizer, name, argument, default, selects, transform):
    """A subclass of ``BaseOptimizer`` that rewrites the whole update of each selected variable,
    as bert4keras' ``K.update`` hooks did: ``transform(self, old, new, grad) -> value`` sees the
    value before the update (before weight decay too) and the one the base optimizer (and the
    extensions below this one) produced. ``selects(self, variable)`` picks the variables."""
    private.require(BaseOptimizer, "_backend_apply_gradients", "_backend_update_step", "_get_current_learning_rate")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, **kwargs):
            value = kwargs.pop(argument, None)
            super().__init__(*args, **kwargs)
            _set_untracked(self, argument, list(default if value is None else value))
            _set_untracked(self, "_" + argument + "_old", {})

        def _selected(self, variable):
            return selects(self, variable)

        def _backend_apply_gradients(self, grads, trainable_variables):
            # snapshot before weight decay (Keras applies it inside, before the update step)
            old = {id(v): ops.copy(v.value) for v in trainable_variables if self._selected(v)}
            _set_untracked(self, "_" + argument + "_old", old)
            try:
                super()._backend_apply_gradients(grads, trainable_variables)
            finally:
                _set_untracked(self, "_" + argument + "_old", {})

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            old = self.__dict__["_" + argument + "_old"]
            for grad, variable in zip(grads, trainable_variables):
                if id(variable) in old:
                    variable.assign(transform(self, old[id(variable)], variable.value, grad))

        def get_config(self):
            config = super().get_config()
            config[argument] = list(getattr(self, argument))
            return config

    return _register(NewOptimizer, name)


def _layer_adaptation(self, old, new, grad):
    # LAMB's trust ratio on the whole update: step = dx * ||w|| / ||dx / lr||
    dx = new - old
    lr = ops.maximum(ops.cast(self._get_current_learning_rate(), old.dtype), keras.config.epsilon())
    x_norm = ops.sqrt(ops.sum(ops.square(old)))
    g_norm = ops.sqrt(ops.sum(ops.square(dx / lr)))
    ratio = ops.where(ops.logical_and(x_norm > 0.0, g_norm > 0.0), x_norm / ops.maximum(g_norm, 1e-30), 1.0)
    return old + dx * ratio


def extend_with_layer_adaptation(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` with layer-wise adaptation (LAMB, You et al. 2019,
    https://arxiv.org/abs/1904.00962), as bert4keras: each variable's whole update ``dx``
    (gradient step and weight decay) is rescaled to ``dx * ||w|| / ||dx / lr||`` (unchanged
    when either norm is 0). New argument: ``exclude_from_layer_adaptation=[]`` (regular
    expressions searched in variable paths)."""
    return _extend_with_update_transform(
        BaseOptimizer, name or f"{BaseOptimizer.__name__}WithLayerAdaptation",
        "exclude_from_layer_adaptation", (),
        lambda self, v: not string_matching(variable_name(v), self.exclude_from_layer_adaptation),
        _layer_adaptation)


def _lazy_update(self, old, new, grad):
    # rows (along the last axis) whose gradient is all zero keep their value
    touched = ops.any(ops.not_equal(grad, 0.0), axis=-1, keepdims=True)
    return old + (new - old) * ops.cast(touched, old.dtype)


def extend_with_lazy_optimization(BaseOptimizer, name=None):
    """A subclass of ``BaseOptimizer`` that updates the selected variables only where the
    gradient is non-zero: a row (last axis) with an all-zero gradient keeps its value --
    embedding rows of tokens absent from the batch stay put, despite Adam's momentum or weight
    decay. New argument: ``include_in_lazy_optimization=[]`` (regular expressions searched in
    variable paths, e.g. ``['Embedding']``)."""
    return _extend_with_update_transform(
        BaseOptimizer, name or f"{BaseOptimizer.__name__}WithLazyOptimization",
        "include_in_lazy_optimization", (),
        lambda self, v: string_matching(variable_name(v), self.include_in_lazy_optimization),
        _lazy_update)


def export_to_custom_objects(base_extend_with):
    """bert4keras' decorator registering an ``extend_with_*`` result as a Keras custom object
    (every ``extend_with_*`` here already does)."""
    def new_extend_with(BaseOptimizer, name=None):
        new = base_extend_with(BaseOptimizer)
        return _register(new, name or new.__name__)

    return new_extend_with


# bert4keras' "_v2" names were its tf.keras implementations of the same updates
extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_layer_adaptation_v2 = extend_with_layer_adaptation
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_lookahead_v2 = extend_with_lookahead
extend_with_lazy_optimization_v2 = extend_with_lazy_optimization
extend_with_exponential_moving_average_v2 = extend_with_exponential_moving_average
extend_with_parameter_wise_lr_v2 = extend_with_parameter_wise_lr


__all__ = [
    "AdaFactor", "AdaFactorBase", "AdaFactorV1", "AdaFactorV2", "Adam", "LionV2", "export_to_custom_objects",
    "extend_with_layer_adaptation", "extend_with_lazy_optimization", "string_matching",
    "extend_with_weight_decay_v2", "extend_with_layer_adaptation_v2", "extend_with_piecewise_linear_lr_v2",
    "extend_with_gradient_accumulation_v2", "extend_with_lookahead_v2", "extend_with_lazy_optimization_v2",
    "extend_with_exponential_moving_average_v2", "extend_with_parameter_wise_lr_v2",
    "AdamW", "DEFAULT_WEIGHT_DECAY_EXCLUDE", "Lion", "Lookahead", "PiecewiseLinear", "apply_ema_weights",
    "exclude_from_weight_decay", "extend_with_exponential_moving_average",
    "extend_with_gradient_accumulation", "extend_with_gradient_transform", "extend_with_lookahead",
    "extend_with_parameter_wise_lr", "extend_with_piecewise_linear_lr", "extend_with_weight_decay",
    "layerwise_lr_multipliers", "piecewise_linear", "reset_old_weights", "variable_name",
]
