"""Sequence-labelling heads with a learned transition matrix: bert4keras'
``ConditionalRandomField`` and ``MaximumEntropyMarkovModel``.

Both are "loss layers": called on the per-token emission scores ``[batch, length, num_tags]``
they return those scores unchanged (padding positions replaced by -1e12), hold the transition
matrix ``trans`` and provide the losses and metrics to compile with::

    crf = ConditionalRandomField(lr_multiplier=100)
    emissions = crf(keras.layers.Dense(num_tags)(sequence_output), mask=padding_mask)
    model.compile(loss=crf.sparse_loss, metrics=[crf.sparse_accuracy], optimizer=...)

Padding: ``mask`` ([batch, length], true on real tokens, padding at the end) is passed to the
call explicitly, or arrives as a Keras mask. The layer writes -1e12 into the emissions of
padded positions; the losses and metrics read the mask back from those values (a position is
real when all its scores are > -1e6), exactly as bert4keras does, so they work as plain
``compile`` losses whatever the labels hold at padded positions. Each loss and metric also
takes an explicit ``mask=`` argument. Decode with :class:`kerasformer.snippets.ViterbiDecoder`
on ``crf.trans``.

``lr_multiplier``: the variable stores ``trans / lr_multiplier`` and the layer uses
``lr_multiplier * variable``, so with any SGD-like optimizer the transitions learn
``lr_multiplier`` times faster (for Adam: their steps are ``lr_multiplier`` times larger), as in
bert4keras, whose CRF examples use ``lr_multiplier`` of 100 or more.

The losses are computed in float32 whatever the compute dtype.
"""
import keras
from keras import ops

NEG_INF = -1e12  # bert4keras' "infinity"
MASK_THRESHOLD = -1e6  # scores below this mark padding


def padding_from_scores(y_pred):
    """``[batch, length]`` bool: positions whose scores were not masked by the layer."""
    return ops.all(ops.greater(y_pred, MASK_THRESHOLD), axis=-1)


def mask_scores(inputs, mask):
    """``inputs`` with the rows of padded positions set to -1e12 (``mask`` [batch, length])."""
    if mask is None:
        return inputs
    mask = ops.expand_dims(ops.cast(mask, "bool"), -1)
    return ops.where(mask, inputs, ops.cast(NEG_INF, inputs.dtype))


class _TransitionLayer(keras.layers.Layer):
    """Shared parts: the scaled transition matrix, masking in ``call``, mask recovery."""

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        self.lr_multiplier = lr_multiplier

    def _add_scaled_weight(self, name, shape):
        variable = self.add_weight(name=name, shape=shape, initializer="glorot_uniform", trainable=True)
        if self.lr_multiplier != 1:
            variable.assign(variable.value / self.lr_multiplier)
        return variable

    def _scaled(self, variable):
        value = ops.cast(variable, "float32")
        return value * self.lr_multiplier if self.lr_multiplier != 1 else value

    def call(self, inputs, mask=None):
        return mask_scores(inputs, mask)

    def compute_mask(self, inputs, mask=None):
        return None  # the mask now lives in the scores

    def compute_output_shape(self, input_shape):
        return input_shape

    @staticmethod
    def _prepare(y_pred, mask):
        """float32 scores and a bool [batch, length] mask (given, or read from the scores)."""
        y_pred = ops.cast(y_pred, "float32")
        mask = padding_from_scores(y_pred) if mask is None else ops.cast(mask, "bool")
        return y_pred, mask

    @staticmethod
    def _sparse_labels(y_true, y_pred, mask):
        """Integer labels shaped like the scores minus the tag axis, 0 at padded positions
        (so -1/-100 style padding labels are fine)."""
        y_true = ops.reshape(y_true, ops.shape(y_pred)[:-1])
        y_true = ops.cast(y_true, "int32")
        return ops.where(mask, y_true, 0)

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}


@keras.saving.register_keras_serializable(package="kerasformer")
class ConditionalRandomField(_TransitionLayer):
    """Linear-chain CRF (bert4keras ``ConditionalRandomField``); see the module docstring.

    The score of a tag path ``y`` is ``sum_t e[t, y_t] + sum_t trans[y_t, y_{t+1}]`` over the real
    positions (no start/end transitions); the loss is ``log Z - score(y_true)``, one value per
    sequence, with ``Z`` summed over all paths by the forward algorithm.
    """

    def build(self, input_shape):
        num_tags = input_shape[-1]
        self._trans = self._add_scaled_weight("trans", (num_tags, num_tags))

    @property
    def trans(self):
        """The transition matrix in use, ``lr_multiplier * variable`` (float32)."""
        return self._scaled(self._trans)

    def target_score(self, y_true, y_pred):
        """Unnormalised score of the (one-hot) paths ``y_true``: emissions + transitions."""
        point_score = ops.sum(y_true * y_pred, axis=(1, 2))
        trans_score = ops.einsum("bni,ij,bnj->b", y_true[:, :-1], self.trans, y_true[:, 1:])
        return point_score + trans_score

    def log_norm(self, y_pred, mask):
        """``log Z`` per sequence by the forward algorithm; padded steps keep the state."""
        trans = ops.expand_dims(self.trans, 0)  # [1, from, to]
        state = y_pred[:, 0]
        if y_pred.shape[1] is None or y_pred.shape[1] > 1:
            steps = ops.transpose(y_pred[:, 1:], (1, 0, 2))  # time-major for scan
            step_mask = ops.transpose(ops.cast(mask[:, 1:, None], "float32"), (1, 0, 2))

            def step(state, inputs):
                emissions, real = inputs
                new = ops.logsumexp(ops.expand_dims(state, 2) + trans, axis=1) + emissions
                return real * new + (1.0 - real) * state, None

            state, _ = ops.scan(step, state, (steps, step_mask))
        return ops.logsumexp(state, axis=1)

    def dense_loss(self, y_true, y_pred, mask=None):
        """Negative log-likelihood per sequence; ``y_true`` one-hot ``[batch, length, num_tags]``."""
        y_pred, mask = self._prepare(y_pred, mask)
        real = ops.cast(mask[:, :, None], "float32")
        y_true = ops.cast(y_true, "float32") * real
        y_pred = ops.where(mask[:, :, None], y_pred, 0.0)  # where, not *: -inf * 0 is nan
        return self.log_norm(y_pred, mask) - self.target_score(y_true, y_pred)

    def sparse_loss(self, y_true, y_pred, mask=None):
        """Negative log-likelihood per sequence; ``y_true`` integer tags ``[batch, length]``."""
        y_pred32, mask = self._prepare(y_pred, mask)
        y_true = self._sparse_labels(y_true, y_pred32, mask)
        y_true = ops.one_hot(y_true, ops.shape(y_pred32)[-1], dtype="float32")
        return self.dense_loss(y_true, y_pred32, mask)

    def dense_accuracy(self, y_true, y_pred, mask=None):
        """Token accuracy of the per-token argmax of the emissions (a cheap training-time signal,
        not Viterbi), over real positions; ``y_true`` one-hot."""
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred, mask)

    def sparse_accuracy(self, y_true, y_pred, mask=None):
        """As :meth:`dense_accuracy` with integer ``y_true``."""
        y_pred, mask = self._prepare(y_pred, mask)
        y_true = self._sparse_labels(y_true, y_pred, mask)
        equal = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")
        real = ops.cast(mask, "float32")
        return ops.sum(equal * real) / ops.maximum(ops.sum(real), 1.0)

    # the names in the brief of this port; bert4keras calls them dense_*
    loss = dense_loss
    accuracy = dense_accuracy


def reverse_sequence(x, lengths):
    """Reverse the first ``lengths[b]`` steps of each row of ``x`` (axis 1), leaving the rest
    in place (``tf.reverse_sequence``)."""
    length = ops.shape(x)[1]
    positions = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
    lengths = ops.expand_dims(ops.cast(lengths, "int32"), 1)
    index = ops.where(positions < lengths, lengths - 1 - positions, positions)
    if len(x.shape) == 3:
        index = ops.expand_dims(index, -1)
        index = ops.broadcast_to(index, ops.shape(x))
    return ops.take_along_axis(x, index, axis=1)


@keras.saving.register_keras_serializable(package="kerasformer")
class MaximumEntropyMarkovModel(_TransitionLayer):
    """(Bidirectional) maximum-entropy Markov model (bert4keras ``MaximumEntropyMarkovModel``):
    like a CRF but normalised per token, so training needs no forward algorithm.

    Forward direction: the logits at position t are ``(e[t] + trans[y_{t-1}]) / 2`` (``e[0]`` at
    t = 0); backward direction: the same on the reversed real part of the sequence with
    ``trans`` transposed. The loss is the mean of the two directions' token-averaged
    cross-entropies over real positions (one scalar per batch). With ``hidden_dim`` the
    transition matrix is factorised as ``l_trans @ r_trans.T`` (rank ``hidden_dim``).
    """

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(lr_multiplier=lr_multiplier, **kwargs)
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        num_tags = input_shape[-1]
        if self.hidden_dim is None:
            self._trans = self._add_scaled_weight("trans", (num_tags, num_tags))
        else:
            self._l_trans = self._add_scaled_weight("l_trans", (num_tags, self.hidden_dim))
            self._r_trans = self._add_scaled_weight("r_trans", (num_tags, self.hidden_dim))

    @property
    def trans(self):
        """The transition matrix in use (``l_trans @ r_trans.T`` when factorised)."""
        if self.hidden_dim is None:
            return self._scaled(self._trans)
        return ops.matmul(self.l_trans, ops.transpose(self.r_trans))

    @property
    def l_trans(self):
        return self._scaled(self._l_trans)

    @property
    def r_trans(self):
        return self._scaled(self._r_trans)

    def _directional_logits(self, y_true, y_pred, mask, go_backwards):
        """Labels, logits ``(e + history) / 2`` and mask for one direction."""
        if go_backwards:
            lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
            y_true = reverse_sequence(y_true, lengths)
            y_pred = reverse_sequence(y_pred, lengths)
        if self.hidden_dim is None:
            trans = ops.transpose(self.trans) if go_backwards else self.trans
            history = ops.take(trans, y_true, axis=0)  # [batch, length, num_tags]
        else:
            left, right = (self.r_trans, self.l_trans) if go_backwards else (self.l_trans, self.r_trans)
            history = ops.einsum("bnd,kd->bnk", ops.take(left, y_true, axis=0), right)
        history = ops.concatenate([y_pred[:, :1], history[:, :-1]], axis=1)
        return y_true, (y_pred + history) / 2

    def basic_loss(self, y_true, y_pred, go_backwards=False, mask=None):
        """Token-averaged cross-entropy of one direction; ``y_true`` integer tags."""
        y_pred, mask = self._prepare(y_pred, mask)
        y_pred = ops.where(mask[:, :, None], y_pred, 0.0)
        y_true = self._sparse_labels(y_true, y_pred, mask)
        y_true, logits = self._directional_logits(y_true, y_pred, mask, go_backwards)
        loss = ops.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        real = ops.cast(mask, "float32")  # reversal keeps padding at the end: the mask is unchanged
        return ops.sum(loss * real) / ops.maximum(ops.sum(real), 1.0)

    def sparse_loss(self, y_true, y_pred, mask=None):
        """Mean of the forward and backward losses; ``y_true`` integer tags ``[batch, length]``."""
        return (self.basic_loss(y_true, y_pred, False, mask) + self.basic_loss(y_true, y_pred, True, mask)) / 2

    def dense_loss(self, y_true, y_pred, mask=None):
        """As :meth:`sparse_loss` with one-hot ``y_true``."""
        return self.sparse_loss(ops.argmax(y_true, axis=-1), y_pred, mask)

    def basic_accuracy(self, y_true, y_pred, go_backwards=False, mask=None):
        """Token accuracy of one direction's per-token argmax, given the true previous tag."""
        y_pred, mask = self._prepare(y_pred, mask)
        y_pred = ops.where(mask[:, :, None], y_pred, 0.0)
        y_true = self._sparse_labels(y_true, y_pred, mask)
        y_true, logits = self._directional_logits(y_true, y_pred, mask, go_backwards)
        equal = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(logits, axis=-1), "int32")), "float32")
        real = ops.cast(mask, "float32")
        return ops.sum(equal * real) / ops.maximum(ops.sum(real), 1.0)

    def sparse_accuracy(self, y_true, y_pred, mask=None):
        return (self.basic_accuracy(y_true, y_pred, False, mask)
                + self.basic_accuracy(y_true, y_pred, True, mask)) / 2

    def dense_accuracy(self, y_true, y_pred, mask=None):
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred, mask)

    loss = dense_loss
    accuracy = dense_accuracy

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}
