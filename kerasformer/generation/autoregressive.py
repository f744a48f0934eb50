"""bert4keras' ``AutoRegressiveDecoder``: the uncached, NumPy-driven decoding loop.

Every step re-runs the model on the whole sequence so far (prompt + output ids) and
keeps only the last position. That is slow next to a key/value cache (see
``kerasformer.generate``), but it is what every bert4keras generation script is
written against: a subclass defines ``predict(self, inputs, output_ids, states)``
decorated with ``@AutoRegressiveDecoder.wraps(...)``, and calls ``beam_search`` or
``random_sample``. Such a script ports by changing its imports only::

    from kerasformer.generation.autoregressive import AutoRegressiveDecoder

    class AutoTitle(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype='probas')
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids])

The search logic below is bert4keras' line for line (same NumPy calls, so the same
tie-breaking and, for sampling, the same draws from NumPy's global generator under
``np.random.seed``). Two deliberate additions, neither of which changes a result:

* ``beam_search`` with ``topk`` larger than the number of candidates keeps them all
  (the beam fills up over the next steps) instead of failing in ``argpartition``, and when every candidate
  holds more end ids than ``min_ends`` (ends produced before ``minlen``) it returns
  the best one instead of going on with an empty beam.
* ``last_token(model)`` returns a Keras model whose ``predict`` runs through
  ``kerasformer.backend.predict`` (compiled, silent, no per-call data-adapter cost).
  On JAX, where every new input shape means a new XLA compilation and an uncached
  loop changes the length at every step, it pads the ids to a few bucket shapes and
  reads the last *real* position. It does so only after checking, once per model,
  that right padding leaves that position's output unchanged (true for causal and
  UniLM models and for padding-masked encoders); otherwise it runs exact shapes.
"""
import weakref

import keras
import numpy as np
from keras import ops

from kerasformer import backend
from kerasformer.generation.constraints import Guide
from kerasformer.layers import PositionEmbedding
from kerasformer.snippets import softmax

__all__ = ["AutoRegressiveDecoder", "softmax"]


@keras.saving.register_keras_serializable(package="kerasformer")
class LastPosition(keras.layers.Layer):
    """``x[:, -1]``: the output at the last position of a sequence."""

    def call(self, x):
        return x[:, -1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def compute_mask(self, x, mask=None):
        return None  # one position per row: no time axis left to mask


@keras.saving.register_keras_serializable(package="kerasformer")
class TakePosition(keras.layers.Layer):
    """``x[b, index[b]]``: the output at a given position of every row (right-padded
    sequences whose real last position is known)."""

    def call(self, x, index):
        index = ops.cast(index, "int32")
        index = ops.reshape(index, (-1,) + (1,) * (len(x.shape) - 1))
        return ops.squeeze(ops.take_along_axis(x, index, axis=1), axis=1)

    def compute_output_shape(self, x_shape, index_shape):
        return (x_shape[0],) + tuple(x_shape[2:])

    def compute_mask(self, x, mask=None):
        return None  # one position per row: no time axis left to mask


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


class LastTokenModel(keras.Model):
    """A functional model returning only the last position of ``source``'s outputs.

    It is a real ``keras.Model`` (callable, ``outputs``, ``summary``...), but ``predict``
    without Keras-specific options is the fast path described in the module docstring.
    """

    length_bucket = 32  # JAX: lengths are padded to a multiple of this

    def __init__(self, source, **kwargs):
        outputs = [LastPosition(name=f"Last-Token-{i}")(o) for i, o in enumerate(source.outputs)]
        super().__init__(source.inputs, outputs[0] if len(outputs) == 1 else outputs, **kwargs)
        # plain attributes, not tracked sublayers (the source's weights are already ours);
        # a weak reference: the source keeps this model (shared_last_token), not the reverse
        object.__setattr__(self, "_source", weakref.ref(source))
        object.__setattr__(self, "_gather_model", None)
        # None: not checked yet; True / False: whether right padding is harmless
        self.bucketing = None if backend.name() == "jax" else False
        # positions a learned position table holds (padding must not run past it)
        tables = [layer.input_dim - layer.offset for layer in source.layers
                  if isinstance(layer, PositionEmbedding)]
        self.max_length = min(tables) if tables else None

    @property
    def source(self):
        return self._source()

    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None):
        if batch_size is not None or steps is not None or callbacks is not None:
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                                   callbacks=callbacks)
        single = not isinstance(x, (list, tuple))
        arrays = [np.asarray(a) for a in ([x] if single else x)]
        if self.bucketing is not False and self._can_bucket(arrays):
            if self.bucketing is None:
                exact = backend.predict(self, arrays[0] if single else arrays)
                padded = self._bucketed(arrays, extra=1)
                if padded is not None:
                    self.bucketing = self._same(exact, padded)
                return exact
            return self._bucketed(arrays)
        return backend.predict(self, arrays[0] if single else arrays)

    # -- JAX shape buckets -------------------------------------------------------
    def _sequence_inputs(self):
        """Per model input: whether it is a sequence (2-D, free length axis)."""
        return [len(spec.shape) == 2 and spec.shape[1] is None for spec in self.source.inputs]

    def _can_bucket(self, arrays):
        """Sequence inputs (token ids, segment ids, positions: 2-D, free length axis) given as
        integer arrays of one shape are padded; inputs of a fully fixed shape (a condition
        such as a label, ``additional_input_layers``) ride along, padded in rows only, else
        a conditional model would compile one program per step. Anything else (an encoder's
        hidden states) is left exactly as given."""
        sequence = self._sequence_inputs()
        if not any(sequence) or len(arrays) != len(sequence):
            return False
        shape = next(a.shape for a, seq in zip(arrays, sequence) if seq)
        for a, seq, spec in zip(arrays, sequence, self.source.inputs):
            if seq:
                if not (a.ndim == 2 and a.shape == shape and np.issubdtype(a.dtype, np.integer)):
                    return False
            elif None in spec.shape[1:] or a.shape != (shape[0],) + tuple(spec.shape[1:]):
                return False
        return True

    def _bucketed(self, arrays, extra=0):
        """Pad rows to a power of two and length to a multiple of ``length_bucket``
        (``extra`` forces at least that many padded positions, for the check), run the
        full model and read each row at its last real position."""
        if self._gather_model is None:
            index = keras.Input(shape=(), dtype="int32", name="Last-Token-Index")
            taken = [TakePosition(name=f"Take-Position-{i}")(o, index)
                     for i, o in enumerate(self.source.outputs)]
            object.__setattr__(self, "_gather_model", keras.Model(
                list(self.source.inputs) + [index], taken[0] if len(taken) == 1 else taken))
        sequence = self._sequence_inputs()
        batch, length = next(a.shape for a, seq in zip(arrays, sequence) if seq)
        rows = 1 << max(batch - 1, 0).bit_length()
        cols = _round_up(length + extra, self.length_bucket)
        if self.max_length is not None:  # never pad past a position table
            cols = max(min(cols, self.max_length), length)
        if cols - length < extra:  # no room to test padding: the exact shapes, this time
            return None
        padded = [np.pad(a.astype("int32"), ((0, rows - batch), (0, cols - length))) if seq
                  else np.pad(a, ((0, rows - batch),) + ((0, 0),) * (a.ndim - 1))  # rows only
                  for a, seq in zip(arrays, sequence)]
        index = np.full((rows,), length - 1, dtype="int32")
        outputs = backend.predict(self._gather_model, padded + [index])
        if isinstance(outputs, (list, tuple)):
            return [o[:batch] for o in outputs]
        return outputs[:batch]

    @staticmethod
    def _same(a, b):
        a = a if isinstance(a, (list, tuple)) else [a]
        b = b if isinstance(b, (list, tuple)) else [b]
        return all(np.allclose(x, y, rtol=1e-3, atol=1e-5) for x, y in zip(a, b))


def shared_last_token(model):
    """The :class:`LastTokenModel` of ``model``, made once and kept on ``model`` itself
    (untracked by Keras, freed with it, as ``backend.predict`` keeps its compiled
    function): every decoder over ``model`` reuses its compiled programs."""
    last = model.__dict__.get("_kerasformer_last_token")
    if last is None:
        last = LastTokenModel(model)
        object.__setattr__(model, "_kerasformer_last_token", last)  # not a tracked sublayer
    return last


class AutoRegressiveDecoder:
    """General autoregressive decoding: beam search and random sampling (bert4keras).

    Args:
        start_id: the id every output starts with (e.g. a decoder's [CLS]); None for
            models that continue their input directly (UniLM, GPT).
        end_id: the id that ends an output.
        maxlen: the most steps (new ids) to generate.
        minlen: an output is not considered finished before it has this many ids.

    Subclasses implement ``predict(self, inputs, output_ids, states)`` decorated with
    ``@AutoRegressiveDecoder.wraps(default_rtype=..., use_states=...)``.
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = maxlen
        self.minlen = minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[self.start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorator for ``predict``: says what it returns and adds the common handling.

        ``default_rtype``: 'probas' if the user's ``predict`` returns normalised
        probabilities, 'logits' if it returns pre-softmax scores. ``use_states``: whether
        it returns ``(result, states)`` instead of ``result``. The decorated method takes
        ``(inputs, output_ids, states, temperature=1, rtype=default_rtype)`` and returns
        ``(probabilities or log-probabilities, states)``: ``rtype='probas'`` gives
        probabilities, ``'logits'`` their logarithm (what beam search adds up).
        Temperature divides logits, or raises probabilities to ``1 / temperature``.
        """

        def actual_decorator(predict):
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                assert rtype in ["probas", "logits"]
                prediction = predict(self, inputs, output_ids, states)

                if not use_states:
                    prediction = (prediction, None)

                if default_rtype == "logits":
                    prediction = (softmax(prediction[0] / temperature), prediction[1])
                elif temperature != 1:
                    probas = np.power(prediction[0], 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                    prediction = (probas, prediction[1])

                if rtype == "probas":
                    return prediction
                return np.log(prediction[0] + 1e-12), prediction[1]

            new_predict.__name__ = getattr(predict, "__name__", "predict")
            new_predict.__doc__ = getattr(predict, "__doc__", None)
            return new_predict

        return actual_decorator

    def last_token(self, model):
        """A model (built once per ``model``) that returns only the last position's
        outputs; its ``predict`` is the fast path of :class:`LastTokenModel`."""
        if model not in self.models:
            self.models[model] = shared_last_token(model)
        return self.models[model]

    def predict(self, inputs, output_ids, states=None):
        """To implement: the next-token distribution for every row of ``output_ids``.

        Decorate it with ``wraps``: return probabilities ('probas') or pre-softmax
        scores ('logits'), shaped ``[rows, vocab]``, plus ``states`` if ``use_states``.
        """
        raise NotImplementedError

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1, constraint=None):
        """Beam search with beam size ``topk``; returns the best output ids.

        ``constraint`` (a ``kerasformer.generation.constraints.Constraint`` or a function
        of the output ids so far returning the allowed next ids) removes every other id
        at each step (its log-probability becomes -1e9; the allowed ones keep the model's).

        A candidate is finished once it holds ``min_ends`` end ids; as soon as the
        best-scoring candidate is finished (and at least ``minlen`` ids long) it is
        returned, and finished candidates that are not the best are dropped (the beam
        shrinks). After ``maxlen`` steps the best candidate is returned as it is.
        """
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        guide = None if constraint is None else Guide(constraint, self.end_id)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            if guide is not None:
                allowed = guide.mask(output_ids, scores.shape[-1], every_row=False)
                scores = np.where(allowed, scores, -1e9)
            # keep the topk (a beam wider than all candidates keeps them all; with a
            # constraint, all allowed ones)
            k = min(topk, scores.size if guide is None else int(allowed.sum()))
            if len(inputs[0]) != k:  # every row is the same input: one row per candidate
                inputs = [np.repeat(i[:1], k, axis=0) for i in inputs]
            scores = output_scores.reshape((-1, 1)) + scores  # accumulated log-probabilities
            indices = scores.argpartition(-k, axis=None)[-k:]  # unordered
            indices_1 = indices // scores.shape[1]  # which candidate
            indices_2 = (indices % scores.shape[1]).reshape((-1, 1))  # which next id
            output_ids = np.concatenate([output_ids[indices_1], indices_2], 1)
            output_scores = np.take_along_axis(scores, indices, axis=None)
            if guide is not None:
                guide.take(indices_1)
                guide.update(indices_2[:, 0])
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                best_one = output_scores.argmax()
                if end_counts[best_one] == min_ends:  # the best one is finished
                    return output_ids[best_one]
                flag = end_counts < min_ends  # the unfinished ones go on
                if not flag.any():  # none left to extend (bert4keras would go on with an
                    return output_ids[best_one]  # empty beam and fail): the best one
                if not flag.all():
                    inputs = [i[flag] for i in inputs]
                    output_ids = output_ids[flag]
                    output_scores = output_scores[flag]
                    if guide is not None:
                        guide.take(flag)
                    end_counts = end_counts[flag]
                    topk = flag.sum()
        return output_ids[output_scores.argmax()]

    def random_sample(self, inputs, n, topk=None, topp=None, states=None, temperature=1,
                      min_ends=1, constraint=None):
        """Draw ``n`` outputs; returns a list of ``n`` id arrays (finished ones first).

        ``topk`` samples each step among the ``topk`` most probable ids only; ``topp``
        among the most probable ids whose probabilities first add up to ``topp``
        (nucleus sampling); both may be given (top-k first). Draws come from NumPy's
        global generator, so ``np.random.seed`` makes them reproducible. ``constraint`` as
        in :meth:`beam_search`: draws are made among the allowed ids only.
        """
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.first_output_ids
        results = []
        guide = None if constraint is None else Guide(constraint, self.end_id)
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            if guide is not None:
                probas = np.where(guide.mask(output_ids, probas.shape[-1]), probas, 0.0)
            probas /= probas.sum(axis=1, keepdims=True)  # make sure they sum to one
            if step == 0:  # one row until the first prediction, then n
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            if topk is not None:
                k_indices = probas.argpartition(-topk, axis=1)[:, -topk:]
                probas = np.take_along_axis(probas, k_indices, axis=1)
                probas /= probas.sum(axis=1, keepdims=True)
            if topp is not None:
                p_indices = probas.argsort(axis=1)[:, ::-1]  # most probable first
                probas = np.take_along_axis(probas, p_indices, axis=1)
                cumsum_probas = np.cumsum(probas, axis=1)
                # drop everything after the id that brings the sum to topp (shift by one
                # so that id itself is kept)
                flag = np.roll(cumsum_probas >= topp, 1, axis=1)
                flag[:, 0] = False
                probas[flag] = 0
                probas /= probas.sum(axis=1, keepdims=True)
            sample_func = lambda p: np.random.choice(len(p), p=p)  # noqa: E731
            sample_ids = np.apply_along_axis(sample_func, 1, probas)
            sample_ids = sample_ids.reshape((-1, 1))
            if topp is not None:  # back to ids: undo the sort, then the top-k selection
                sample_ids = np.take_along_axis(p_indices, sample_ids, axis=1)
            if topk is not None:
                sample_ids = np.take_along_axis(k_indices, sample_ids, axis=1)
            output_ids = np.concatenate([output_ids, sample_ids], 1)
            if guide is not None:
                if step == 0:
                    guide.take(np.zeros(n, int))
                guide.update(sample_ids[:, 0])
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                flag = end_counts == min_ends  # finished ones are set aside
                if flag.any():
                    for ids in output_ids[flag]:
                        results.append(ids)
                    flag = ~flag
                    inputs = [i[flag] for i in inputs]
                    output_ids = output_ids[flag]
                    if guide is not None:
                        guide.take(flag)
                    end_counts = end_counts[flag]
                    if len(output_ids) == 0:
                        break
        for ids in output_ids:  # unfinished ones, as they are
            results.append(ids)
        return results
