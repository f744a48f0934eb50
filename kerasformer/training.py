"""Training toolkit: bert4keras' tricks, each switched on by one call on a compiled model, and
bert4keras' ``Loss`` layer (a loss computed inside the model, so ``model.fit(x)`` needs no ``y``).

Tricks (call after ``model.compile``, before ``model.fit``; JAX and PyTorch)::

    model.compile(loss="sparse_categorical_crossentropy", optimizer=..., metrics=[...])
    adversarial_training(model, "Embedding-Token", epsilon=1.0)   # FGM
    # or gradient_penalty(model, epsilon=1.0)  /  rdrop(model, alpha=4.0)
    model.fit(...)

Each one replaces the model's train step (``model.train_step``) by a pure function of the
variable values (``model.stateless_call`` + ``model.stateless_compute_loss``), differentiated
with :func:`kerasformer.backend.value_and_grad` and run by
:func:`kerasformer.backend.set_train_step` -- the only parts that differ between JAX and torch.
The compiled loss (and any ``add_loss`` / :class:`Loss` layer loss), the optimizer, the compiled
metrics and the progress bar are Keras' own; evaluation and prediction are untouched.

=======================  ========================================================================
trick                    the step
=======================  ========================================================================
adversarial_training     FGM (Miyato et al., 2017; bert4keras' example): ``g`` = gradient of the
                         loss w.r.t. the embedding matrix, ``delta = epsilon * g / (||g|| + 1e-8)``
                         (Frobenius norm of the whole matrix); the update uses the gradients at
                         ``E + delta`` (default: what bert4keras' example computes, ``g`` from an
                         inference-mode pass; logged: the perturbed pass) or those plus the
                         clean ones (``accumulate=True``; logged: the clean pass).
gradient_penalty         ``loss + epsilon / 2 * ||g||^2`` with ``g`` the gradient w.r.t. each
                         looked-up token embedding (default, bert4keras' example; Su Jianlin,
                         https://kexue.fm/archives/7234) or w.r.t. the matrix
                         (``per_token=False``), differentiated through the inner gradient
                         (second order). Logged loss: the penalised loss.
rdrop                    R-Drop (Liang et al., 2021) as bert4keras' ``crossentropy_with_rdrop``:
                         two forward passes with independent dropout, ``(L1 + L2) / 2 + alpha / 4
                         * mean(KL(p1||p2) + KL(p2||p1))``, where ``L1``, ``L2`` are the compiled
                         loss of each pass and the KL is taken over the last axis of the output,
                         averaged over all other positions (no padding mask). Assumes the output
                         is a softmax probability distribution (``from_logits=True`` for logits).
                         bert4keras repeats every sample twice in the batch instead; this is the
                         same objective without the data-side duplication. Logged loss: the total.
=======================  ========================================================================

Not supported by the tricks: ``mixed_float16`` loss scaling (``LossScaleOptimizer``; use
``mixed_bfloat16``, which needs none), the TensorFlow backend, and ``steps_per_execution > 1`` on
torch (Keras' own restriction).
"""
import keras
from keras import ops

from kerasformer import backend
from kerasformer.backend import private
from kerasformer.errors import KerasformerError


# ------------------------------------------------------------------------ the pure loss

def stateless_loss(model, trainable, non_trainable, metrics, x, y=None, sample_weight=None, training=True):
    """One forward pass and the model's loss as a pure function of the variable values.

    Returns ``(loss, aux)`` with ``aux = {'y_pred', 'non_trainable', 'metrics'}`` holding the
    outputs and the new values of the non-trainable state (dropout seeds, layer-metric states)
    and of the metric variables (loss trackers updated in ``compute_loss``). The loss is
    ``model.compute_loss``: the compiled loss plus ``add_loss`` losses (:class:`Loss` layers)
    and regularisers -- exactly what Keras' own train step minimises.
    """
    kwargs = {"training": training} if private.get(model, "_call_has_training_arg") else {}
    y_pred, non_trainable, losses = model.stateless_call(
        trainable, non_trainable, x, return_losses=True, **kwargs)
    # Keras' JAX trainer hands the losses collected during the stateless forward pass to
    # compute_loss the same way (model.losses reads this override)
    if losses:
        private.assign(model, "_losses_override", losses)
    try:
        loss, (_, non_trainable, metrics) = model.stateless_compute_loss(
            trainable, non_trainable, metrics, x=x, y=y, y_pred=y_pred,
            sample_weight=sample_weight, training=training)
    finally:
        if losses:
            private.assign(model, "_losses_override", [])
    return loss, {"y_pred": y_pred, "non_trainable": non_trainable, "metrics": metrics}


class Trick:
    """What a trick installed: ``gradients(trainable, non_trainable, metrics, x, y,
    sample_weight) -> (grads, aux)`` is the pure function the train step runs (tests and
    custom loops can call it directly; ``aux`` holds the logged ``loss``, ``y_pred``, the new
    state, and trick-specific extras such as FGM's ``perturbation``)."""

    def __init__(self, name, model, gradients, **settings):
        self.name = name
        self.model = model
        self.gradients = gradients
        self.settings = settings

    def state(self):
        """The model's current variable values, in the order ``gradients`` expects."""
        model = self.model
        return ([v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables])

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"<{self.name}({settings})>"


def _check_compiled(model, trick):
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise KerasformerError(f"{trick} needs a compiled model: call model.compile(...) first")
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise KerasformerError(f"{trick} does not support loss scaling (mixed_float16's "
                               "LossScaleOptimizer); use the mixed_bfloat16 policy, which needs none")


def _install(model, trick):
    enable_layer_metrics(model)
    backend.set_train_step(model, trick.gradients)
    model._kerasformer_trick = trick
    return trick


def _find_layer(model, name):
    """A layer called ``name`` anywhere in ``model`` (nested models included)."""
    for layer in _all_layers(model):
        if layer.name == name:
            return layer
    return None


def _all_layers(model):
    seen = set()
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(getattr(layer, "layers", []) or [])


def embedding_variable_index(model, embedding_name="Embedding-Token"):
    """Index in ``model.trainable_variables`` of the embedding matrix the tricks perturb:
    the ``embeddings`` of layer ``embedding_name``, or a variable whose path is
    ``embedding_name`` ('Embedding-Token/embeddings')."""
    layer = _find_layer(model, embedding_name)
    variable = None
    if layer is not None:
        variable = getattr(layer, "embeddings", None)
        if variable is None and len(layer.trainable_weights) == 1:
            variable = layer.trainable_weights[0]
        if variable is None:
            raise KerasformerError(f"layer {embedding_name!r} has no embeddings matrix")
    else:
        for v in model.trainable_variables:
            if v.path == embedding_name:
                variable = v
    if variable is None:
        raise KerasformerError(f"no layer or variable {embedding_name!r} in model {model.name!r}; "
                               "pass embedding_name= (bert4keras models use 'Embedding-Token')")
    for index, v in enumerate(model.trainable_variables):
        if v is variable:
            return index
    raise KerasformerError(f"the embeddings of {embedding_name!r} are not trainable")


# --------------------------------------------------------------------------- FGM

def fgm_perturbation(gradient, epsilon=1.0):
    """FGM's step: ``epsilon * g / (||g|| + 1e-8)``, the norm over the whole matrix (float32)."""
    gradient = ops.cast(gradient, "float32")
    return epsilon * gradient / (ops.sqrt(ops.sum(ops.square(gradient))) + 1e-8)


def adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0, accumulate=False):
    """FGM adversarial training on the embedding matrix of ``embedding_name``; the defaults
    compute what bert4keras' ``task_iflytek_adversarial_training`` example computes.

    Each step: the embedding gradient ``g`` of the loss; ``delta = epsilon * g / (||g|| + 1e-8)``
    added to the embedding matrix; gradients ``G_adv`` of the loss at the perturbed weights;
    the matrix is restored (nothing is ever written: the perturbed matrix only exists inside
    the step) and the optimizer applies ``G_adv``. As in bert4keras' example, ``g`` comes from
    an inference-mode pass (its ``K.function`` ran without the learning phase, so dropout was
    off), and the logged loss and metrics are those of the perturbed pass.

    ``accumulate=True`` (FGM as usually described): ``g`` and ``G`` come from a training-mode
    pass at the clean weights and the optimizer applies ``G + G_adv``; the clean loss and
    metrics are logged. Returns the installed :class:`Trick`; ``aux['perturbation']`` is
    the applied ``delta``.
    """
    _check_compiled(model, "adversarial_training")
    index = embedding_variable_index(model, embedding_name)
    loss_and_grads = backend.value_and_grad(
        lambda t, nt, m, x, y, sw: stateless_loss(model, t, nt, m, x, y, sw), has_aux=True)
    inference_grads = backend.value_and_grad(
        lambda t, nt, m, x, y, sw: stateless_loss(model, t, nt, m, x, y, sw, training=False), has_aux=True)

    def gradients(trainable, non_trainable, metrics, x, y, sample_weight):
        clean = loss_and_grads if accumulate else inference_grads
        (loss, aux), grads = clean(trainable, non_trainable, metrics, x, y, sample_weight)
        delta = ops.cast(fgm_perturbation(grads[index], epsilon), trainable[index].dtype)
        perturbed = list(trainable)
        perturbed[index] = trainable[index] + delta
        if not accumulate:
            # the inference pass only gave the direction: state and metrics start from the step's
            (adv_loss, adv_aux), adv_grads = loss_and_grads(perturbed, non_trainable, metrics, x, y,
                                                            sample_weight)
            return adv_grads, {**adv_aux, "loss": adv_loss, "perturbation": delta}
        # the metric variables of the clean pass are kept (the second pass would count twice)
        (_, adv_aux), adv_grads = loss_and_grads(perturbed, aux["non_trainable"], metrics, x, y,
                                                 sample_weight)
        adv_grads = [g + a for g, a in zip(grads, adv_grads)]
        return adv_grads, {**aux, "loss": loss, "non_trainable": adv_aux["non_trainable"],
                           "perturbation": delta}

    return _install(model, Trick("adversarial_training", model, gradients,
                                 embedding_name=embedding_name, epsilon=epsilon,
                                 accumulate=accumulate))


# ------------------------------------------------------------------- gradient penalty

class _EmbeddingProbe:
    """While active, ``layer``'s lookups (``mode='embedding'``) return ``lookup + probe``: the
    gradient with respect to ``probe`` is then the gradient with respect to each looked-up
    vector, one row per token of the batch (bert4keras' ``IndexedSlices.values``)."""

    def __init__(self, layer, probe):
        self.layer, self.probe, self.used = layer, probe, False

    def __enter__(self):
        self.previous = self.layer.__dict__.get("call")
        original = self.layer.call

        def call(inputs, *args, **kwargs):
            out = original(inputs, *args, **kwargs)
            if args or kwargs.get("mode", "embedding") != "embedding":
                return out  # the tied output projection (mode='dense') is not a lookup
            if self.used:
                raise KerasformerError(f"gradient_penalty: layer {self.layer.name!r} looks up tokens "
                                       "more than once per step; use per_token=False")
            self.used = True
            return out + ops.cast(self.probe, out.dtype)

        self.layer.__dict__["call"] = call  # an instance attribute, not tracked by Keras
        return self

    def __exit__(self, *exc):
        if self.previous is None:
            self.layer.__dict__.pop("call", None)
        else:
            self.layer.__dict__["call"] = self.previous


def _embedding_input(model, layer):
    """Index of the model input (in ``keras.tree.flatten`` order) that ``layer`` looks up."""
    nodes = private.get(layer, "_inbound_nodes")
    inputs = keras.tree.flatten(model.inputs)
    if len(nodes) == 1 and nodes[0].input_tensors:
        source = nodes[0].input_tensors[0]
        for i, tensor in enumerate(inputs):
            if tensor is source:
                return i
    raise KerasformerError(
        f"gradient_penalty: layer {layer.name!r} does not look up one of the model's inputs directly "
        "(once); per-token gradients need that. Use gradient_penalty(..., per_token=False) to "
        "penalise the gradient of the whole embedding matrix instead")


def gradient_penalty(model, epsilon=1.0, embedding_name="Embedding-Token", per_token=True):
    """Train on ``loss + epsilon / 2 * ||g||^2``, the penalty differentiated exactly (a gradient
    of a gradient); the defaults compute bert4keras' ``task_iflytek_gradient_penalty`` example
    (``loss_with_gradient_penalty``, epsilon 1).

    ``per_token=True`` (bert4keras): ``g`` is the gradient with respect to every looked-up
    embedding vector of the batch -- ``K.gradients(loss, [embeddings])[0].values``, one row
    per token, so a token occurring twice contributes two squared norms (Su Jianlin,
    https://kexue.fm/archives/7234: the gradient with respect to the input embeddings). The
    layer ``embedding_name`` must look up a model input directly. ``per_token=False``: ``g``
    is the gradient of the embedding matrix (rows of repeated tokens summed first).
    ``aux['penalty']`` holds ``||g||^2``. Returns the installed :class:`Trick`."""
    _check_compiled(model, "gradient_penalty")
    index = embedding_variable_index(model, embedding_name)
    if per_token:
        layer = _find_layer(model, embedding_name)
        if layer is None:
            raise KerasformerError(f"gradient_penalty(per_token=True) needs a layer called {embedding_name!r}")
        position = _embedding_input(model, layer)
        dim = model.trainable_variables[index].shape[-1]

    def objective(trainable, non_trainable, metrics, x, y, sample_weight):
        if per_token:
            ids = keras.tree.flatten(x)[position]

            def loss_of_lookups(values):
                with _EmbeddingProbe(layer, values[0]):
                    return stateless_loss(model, trainable, non_trainable, metrics, x, y, sample_weight)

            probe = ops.zeros(tuple(ops.shape(ids)) + (dim,), dtype="float32")
            (loss, aux), (g,) = backend.value_and_grad(loss_of_lookups, has_aux=True)([probe])
        else:
            def loss_of_embeddings(values):
                replaced = list(trainable)
                replaced[index] = values[0]
                return stateless_loss(model, replaced, non_trainable, metrics, x, y, sample_weight)

            (loss, aux), (g,) = backend.value_and_grad(loss_of_embeddings, has_aux=True)([trainable[index]])
        penalty = 0.5 * epsilon * ops.sum(ops.square(ops.cast(g, "float32")))
        total = ops.cast(loss, "float32") + penalty
        return total, {**aux, "loss": total, "penalty": penalty}

    total_and_grads = backend.value_and_grad(objective, has_aux=True)

    def gradients(trainable, non_trainable, metrics, x, y, sample_weight):
        (_, aux), grads = total_and_grads(trainable, non_trainable, metrics, x, y, sample_weight)
        return grads, aux

    return _install(model, Trick("gradient_penalty", model, gradients, epsilon=epsilon,
                                 embedding_name=embedding_name, per_token=per_token))


# ------------------------------------------------------------------------------ R-Drop

def symmetric_kl(p, q, from_logits=False):
    """``mean(KL(p||q) + KL(q||p))``: the KL over the last axis, averaged over every other
    position. Probabilities are clipped to ``[epsilon, 1]`` as Keras' ``kl_divergence`` does."""
    p = ops.cast(p, "float32")
    q = ops.cast(q, "float32")
    if from_logits:
        log_p, log_q = ops.log_softmax(p, axis=-1), ops.log_softmax(q, axis=-1)
        p, q = ops.exp(log_p), ops.exp(log_q)
    else:
        eps = keras.config.epsilon()
        p, q = ops.clip(p, eps, 1.0), ops.clip(q, eps, 1.0)
        log_p, log_q = ops.log(p), ops.log(q)
    return ops.mean(ops.sum((p - q) * (log_p - log_q), axis=-1))  # KL(p||q) + KL(q||p)


def rdrop(model, alpha=4.0, output_index=None, from_logits=False):
    """R-Drop: two forward passes (different dropout masks) and the loss
    ``(L1 + L2) / 2 + alpha / 4 * symmetric_kl(p1, p2)`` (bert4keras' ``crossentropy_with_rdrop``;
    the paper's ``L1 + L2 + alpha / 2 * (KL + KL)`` halved). ``L1``, ``L2``: the compiled loss on
    each pass. ``output_index`` picks the probability output of a multi-output model. The
    model needs dropout for the passes to differ. ``aux`` holds both passes' outputs
    (``y_pred``, ``y_pred_2``) and the ``kl`` term. Returns the installed :class:`Trick`."""
    _check_compiled(model, "rdrop")
    if output_index is None and len(model.outputs) != 1:
        raise KerasformerError(f"model {model.name!r} has {len(model.outputs)} outputs: pass "
                               "output_index= (the softmax output R-Drop compares)")

    def pick(y_pred):
        return y_pred if output_index is None else keras.tree.flatten(y_pred)[output_index]

    def objective(trainable, non_trainable, metrics, x, y, sample_weight):
        loss_1, aux = stateless_loss(model, trainable, non_trainable, metrics, x, y, sample_weight)
        # second pass: new dropout masks (the seed state moved on); metric variables as before
        # the first pass, so compute_loss's trackers count the step once
        loss_2, aux_2 = stateless_loss(model, trainable, aux["non_trainable"], metrics, x, y,
                                       sample_weight)
        kl = symmetric_kl(pick(aux["y_pred"]), pick(aux_2["y_pred"]), from_logits)
        total = (ops.cast(loss_1, "float32") + ops.cast(loss_2, "float32")) / 2 + alpha / 4 * kl
        return total, {**aux, "loss": total, "non_trainable": aux_2["non_trainable"],
                       "y_pred_2": aux_2["y_pred"], "kl": kl}

    total_and_grads = backend.value_and_grad(objective, has_aux=True)

    def gradients(trainable, non_trainable, metrics, x, y, sample_weight):
        (_, aux), grads = total_and_grads(trainable, non_trainable, metrics, x, y, sample_weight)
        return grads, aux

    return _install(model, Trick("rdrop", model, gradients, alpha=alpha, output_index=output_index,
                                 from_logits=from_logits))


# --------------------------------------------------------------------- the Loss layer

@keras.saving.register_keras_serializable(package="kerasformer")
class Loss(keras.layers.Layer):
    """bert4keras' ``Loss`` layer: a loss computed inside the model from any of its tensors.

    Subclass it and implement ``compute_loss(inputs, mask=None)`` returning a scalar (a
    non-scalar is averaged); the layer adds it with ``add_loss`` and returns ``inputs``
    (``output_axis=None``), ``inputs[output_axis]``, or a list of them. The model then trains
    with ``model.compile(optimizer=...)`` (no ``loss=``) and ``model.fit(x)`` (no ``y``)::

        class CrossEntropy(Loss):                      # UniLM / seq2seq
            metric_names = ("accuracy",)

            def compute_loss(self, inputs, mask=None):
                token_ids, segment_ids, probs = inputs
                y_true, y_mask, y_pred = token_ids[:, 1:], segment_ids[:, 1:], probs[:, :-1]
                y_mask = ops.cast(y_mask, "float32")
                loss = ops.sparse_categorical_crossentropy(y_true, y_pred)
                hits = ops.cast(ops.equal(y_true, ops.argmax(y_pred, -1)), "float32")
                self.add_metric(ops.sum(hits * y_mask) / ops.sum(y_mask), "accuracy")
                return ops.sum(loss * y_mask) / ops.sum(y_mask)

        output = CrossEntropy(2)(bert.inputs + bert.outputs)
        model = keras.Model(bert.inputs, output)
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        enable_layer_metrics(model)           # 'accuracy' shows in the progress bar / history
        model.fit([token_ids, segment_ids], epochs=...)

    Metrics from layers (Keras 3 removed ``add_metric``): declare their names in
    ``metric_names`` (class attribute or constructor argument) and report values with
    ``self.add_metric(value, name)`` inside ``compute_loss``. Each value is stored in a
    non-trainable scalar of the layer during the forward pass -- state that Keras carries
    through a JAX train step -- and :func:`enable_layer_metrics` (called by every trick
    installer) makes the model's ``compute_loss`` feed it to a ``keras.metrics.Mean``, so the
    progress bar and ``history`` show the epoch average (and ``val_<name>`` on evaluation).

    The layer computes in float32 by default (``dtype=`` to change), so the loss stays float32
    under mixed precision.
    """

    metric_names = ()

    def __init__(self, output_axis=None, metric_names=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.output_axis = list(output_axis) if isinstance(output_axis, (list, tuple)) else output_axis
        if metric_names is not None:
            self.metric_names = tuple(metric_names)
        self.metric_names = tuple(self.metric_names)
        self._report_metrics = False
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.metric_names}

    def build(self, input_shape):
        self._metric_states = {
            name: self.add_weight(name=f"metric_{name}", shape=(), initializer="zeros",
                                  trainable=False, dtype="float32")
            for name in self.metric_names}

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError("subclass Loss and implement compute_loss(inputs, mask=None)")

    def call(self, inputs, mask=None):
        loss = self.compute_loss(inputs, mask)
        if len(loss.shape):
            loss = ops.mean(loss)
        self.add_loss(loss)
        return self._select(inputs)

    def add_metric(self, value, name=None, aggregation="mean"):
        """Report ``value`` (averaged to a scalar) as metric ``name``, one of ``metric_names``;
        shown as the epoch mean once :func:`enable_layer_metrics` has run on the model."""
        if aggregation != "mean":
            raise KerasformerError("Loss.add_metric supports aggregation='mean' only")
        if name not in self._metric_states:
            raise KerasformerError(
                f"{type(self).__name__}.add_metric(..., name={name!r}): declare the metric first, "
                f"e.g. class {type(self).__name__}(Loss): metric_names = ({name!r},) or "
                f"{type(self).__name__}(metric_names=[{name!r}])")
        value = ops.cast(value, "float32")
        if len(value.shape):
            value = ops.mean(value)
        self._metric_states[name].assign(ops.stop_gradient(value))

    def update_metrics(self):
        """Feed the values stored by the last forward pass to the metric trackers (runs
        inside the model's ``compute_loss`` once :func:`enable_layer_metrics` was called)."""
        for name, tracker in self._trackers.items():
            tracker.update_state(self._metric_states[name])

    @property
    def metrics(self):
        # hidden until enable_layer_metrics: a metric that never updates would show 0
        return list(self._trackers.values()) if self._report_metrics else []

    def _select(self, items):
        if self.output_axis is None:
            return items
        if isinstance(self.output_axis, list):
            return [items[i] for i in self.output_axis]
        return items[self.output_axis]

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return self._select(mask)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis,
                "metric_names": list(self.metric_names)}


def enable_layer_metrics(model):
    """Report the metrics of the :class:`Loss` layers in ``model`` (``history``, the progress
    bar, ``val_*`` on evaluation): wraps the model's ``compute_loss`` (an instance attribute;
    idempotent) so that each loss computation also updates those layers' metric trackers.
    Call it before ``fit``. Returns ``model``."""
    layers = [layer for layer in _all_layers(model) if isinstance(layer, Loss) and layer.metric_names]
    if not layers or getattr(model, "_kerasformer_layer_metrics", None) is not None:
        return model
    for layer in layers:
        layer._report_metrics = True
    original = model.compute_loss
    has_training = private.get(model, "_compute_loss_has_training_arg")

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if has_training:
            loss = original(x, y, y_pred, sample_weight, training=training)
        else:
            loss = original(x, y, y_pred, sample_weight)
        for layer in layers:
            layer.update_metrics()
        return loss

    model.compute_loss = compute_loss
    model._kerasformer_layer_metrics = layers
    model.train_function = model.test_function = None  # the metric list changed
    return model


__all__ = [
    "Loss", "Trick", "adversarial_training", "embedding_variable_index", "enable_layer_metrics",
    "fgm_perturbation", "gradient_penalty", "rdrop", "stateless_loss", "symmetric_kl",
]
