"""The generation engine: cached, batched, compiled decoding.

One forward pass over the prompt fills a pre-allocated key/value cache (prefill);
every later step runs the network on the newest token only. The family's own
graph-building code serves as the incremental forward pass: ``Transformer.call(inputs,
decoding)`` with a :class:`DecodingState` that the hooks hand, as an argument, to the
layers that use it (attention layers get and return their cache, position layers read
the new tokens' positions) and that asks the heads for logits.

Prompts of different lengths are left-padded into one batch: padding keys are masked
and every row numbers its own tokens from 0, so a row decodes exactly as it would
alone. On JAX, prefill plus the whole decoding loop is one ``jax.jit`` program,
cached per shape bucket (prompt length rounded up to 16); on torch the prefill and the
step are each traced once per bucket into an FX graph (``backend.traced``), the loop
runs in Python over the step's graph and the cache is updated in place.
"""

import keras
import numpy as np
from keras import ops

from kerasformer import backend, validation
from kerasformer.errors import KerasformerError
from kerasformer.generation import constraints as constraints_lib
from kerasformer.generation import text

NEG = -1e9  # "impossible" score: finite, so sums and log-softmax never produce NaN
# a token a constraint forbids: below NEG, so that a token banned by min_new_tokens (NEG)
# but the only one the constraint allows still wins: the constraint has the last word
FORBIDDEN = 2 * NEG
PROMPT_BUCKET = 16


class DecodingState:
    """What one cached forward pass needs. It is handed explicitly down
    ``Transformer.call(inputs, decoding)`` -> ``apply_embeddings`` / ``apply_main_layers``
    / ``apply_final_layers`` and, by the family, into the layers that use it (each declares
    ``decoding`` in its ``call``):

    * ``attention_mask`` ``[batch, 1, q_len, max_len]``: the cache slots each new token may
      see (padding and unwritten slots hidden); the blocks use it instead of the mask
      they build from token ids;
    * ``positions`` ``[batch, q_len]``: the position ids of the new tokens (every row of a
      left-padded batch numbers its own tokens from 0): ``PositionEmbedding`` and the
      rotary table read them;
    * ``cache_index``: the cache slot of the first new token (0 on the prefill): the
      relative position tables (NEZHA, T5) place the queries there;
    * ``caches``: ``{key: tensors}``, one entry per attention application, keyed by the
      block (``"self-3"``, ``"cross-3"``; ALBERT's shared block gets one per
      depth). ``MultiHeadAttention(..., decoding=state, cache=caches.get(key))`` returns
      ``(output, new cache)`` and the family stores it back (``Transformer.apply_cached``);
    * ``max_len`` / ``batch``: set on the prefill only, where caches are allocated;
    * ``last_only``: the heads see the last position only (a prefill predicts one token);
    * ``layer_norm_cond``: the value of a conditional LayerNorm's condition for this batch.
    """

    def __init__(self, attention_mask, positions, caches, cache_index, max_len=None,
                 batch=None, last_only=False, layer_norm_cond=None):
        self.attention_mask = attention_mask
        self.key_length = attention_mask.shape[-1]  # the cache length
        self.positions = positions
        self.caches = dict(caches)
        self.cache_index = cache_index
        self.max_len = max_len
        self.batch = batch
        self.last_only = last_only
        self.layer_norm_cond = layer_norm_cond


# ---------------------------------------------------------------- token choice
def process_logits(logits, seen, step, repetition_penalty, end_id, min_new_tokens):
    """Repetition penalty (CTRL / HF semantics) and the ban on ending too early."""
    logits = ops.cast(logits, "float32")
    if repetition_penalty != 1.0:
        penalised = ops.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = ops.where(seen, penalised, logits)
    if end_id is not None and min_new_tokens > 0:
        is_end = ops.arange(ops.shape(logits)[-1]) == end_id
        logits = ops.where(ops.logical_and(step < min_new_tokens, is_end)[None, :], NEG, logits)
    return logits


def filter_logits(logits, top_k=None, top_p=None, temperature=1.0):
    """Temperature, then keep the ``top_k`` best tokens and the smallest set whose
    probability reaches ``top_p``; everything else gets an impossible score."""
    if temperature != 1.0:
        logits = logits / temperature
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = ops.top_k(logits, top_k)[0][:, -1:]
        logits = ops.where(logits < kth, NEG, logits)
    if top_p is not None and top_p < 1.0:
        probs = ops.softmax(logits, axis=-1)
        ranked = ops.top_k(probs, vocab)[0]  # descending
        before = ops.cumsum(ranked, axis=-1) - ranked  # mass of the better tokens
        kept = ops.where(before < top_p, ranked, 2.0)  # the best token is always kept
        threshold = ops.min(kept, axis=-1, keepdims=True)
        logits = ops.where(probs < threshold, NEG, logits)
    return logits


def sample(logits, noise):
    """Gumbel-max: argmax(logits + Gumbel noise) draws from softmax(logits), and never
    picks a token whose score was set impossible."""
    gumbel = -ops.log(-ops.log(ops.clip(noise, 1e-20, 1.0 - 1e-7)))
    return ops.cast(ops.argmax(logits + gumbel, axis=-1), "int32")


# ---------------------------------------------------------------- the engine
def _bucketed_length(prompts):
    """The longest prompt, and that rounded up to a bucket (one program per bucket)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise KerasformerError("prompts must be a non-empty list of non-empty token-id lists")
    longest = max(len(p) for p in prompts)
    return longest, -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET


class DecoderOnlyEngine:
    """Cached decoding for decoder-only LMs (``gpt2``, any family with
    ``application='lm'``) and UniLM seq2seq (``application='unilm'``).

    One forward pass is ``transformer.call(inputs, DecodingState(...))``: the prefill
    runs the prompts and fills the caches, each step runs the newest token. Whatever is
    fixed for a row over the decoding (the value of a conditional LayerNorm's condition,
    T5's encodings) is computed on the prefill and carried with the caches, so beams
    copy and reorder it with them."""

    kind_by_application = {"unilm": "unilm"}

    def __init__(self, transformer):
        self.transformer = transformer
        self.kind = self.kind_by_application.get(transformer.application, "lm")
        self.max_position = getattr(transformer, "max_position", None)
        self.variables = transformer.model.variables
        self.programs = {}
        vocab = transformer.model.outputs[-1].shape[-1]
        if vocab != transformer.vocab_size:
            raise KerasformerError(
                f"model '{transformer.model.name}' does not end in a vocabulary distribution "
                f"(last output has {vocab} features, vocab_size is {transformer.vocab_size}); build "
                "it with its language-model head (with_mlm=True for the BERT family, with_lm=True "
                "for GPT-2 and T5) so it can generate")
        self.vocab_size = vocab
        # the full forward pass masks the keys of padding tokens (the Keras mask born at the
        # token embedding); a generated padding id is masked the same way in the cache
        self.pad_id = transformer.mask_id
        # additional_input_layers (bert4keras): inputs beyond the family's own, e.g. the
        # label a conditional LayerNorm is conditioned on; generate(extra_inputs=...) feeds them
        self.extra_specs = list(getattr(transformer, "additional_input_layers", None) or [])
        self.n_inputs = len(transformer.model.inputs) - len(self.extra_specs)
        self.condition = None
        if getattr(transformer, "layer_norm_cond", None) is not None:
            try:  # the part of the network that computes the condition from the extra inputs
                self.condition = keras.Model(self.extra_specs, transformer.layer_norm_cond)
            except ValueError:
                raise KerasformerError(
                    "generate() needs layer_norm_cond to be computed from additional_input_layers "
                    "alone (e.g. an Embedding of a label input): this one depends on other "
                    "tensors") from None

    # -- one forward pass -------------------------------------------------
    def _inputs(self, tokens, segment):
        if self.n_inputs == 1:
            return [tokens]
        return [tokens, ops.full(ops.shape(tokens), segment, "int32")]

    def fixed(self, *extra):
        """What stays fixed for a row over the decoding, as cache entries."""
        if self.condition is None:
            return {}
        return {"layer_norm_cond": (self.condition(list(extra)),)}

    def forward(self, tokens, segment, decoding):
        return self.transformer.call(self._inputs(tokens, segment), decoding)

    def state(self, mask, positions, caches, cache_index, **kwargs):
        cond = caches.get("layer_norm_cond")
        return DecodingState(mask, positions, caches, cache_index,
                             layer_norm_cond=None if cond is None else cond[0], **kwargs)

    def prefill(self, tokens, valid, positions, max_len, *extra):
        """Run the (left-padded) prompts ``[batch, P]``; return last-position logits,
        the caches and which cache slots hold real tokens."""
        batch, length = tokens.shape
        key_valid = ops.concatenate([valid, ops.zeros((batch, max_len - length), "bool")], axis=1)
        # UniLM's prompt is segment 0: bidirectional. An LM prompt is causal.
        limit = ops.full((length,), length - 1, "int32") if self.kind == "unilm" else ops.arange(length)
        mask = ops.logical_and(key_valid[:, None, None, :],
                               ops.arange(max_len)[None, None, None, :] <= limit[None, None, :, None])
        decoding = self.state(mask, positions, self.fixed(*extra), 0, max_len=max_len,
                              batch=batch, last_only=True)
        logits = self.forward(tokens, 0, decoding)
        return logits[:, -1], decoding.caches, key_valid

    def step(self, token, column, positions, key_valid, caches):
        """One new token per row at cache slot ``column``."""
        max_len = key_valid.shape[1]
        mask = ops.logical_and(key_valid, ops.arange(max_len)[None, :] <= column)[:, None, None, :]
        decoding = self.state(mask, positions[:, None], caches, column)
        segment = 1 if self.kind == "unilm" else 0  # UniLM's output is segment 1
        logits = self.forward(token[:, None], segment, decoding)
        return logits[:, 0], decoding.caches

    # -- the loop ----------------------------------------------------------
    def program(self, options, shapes, max_new, stream=False):
        """The compiled program for these options and shapes: ``(seed, *arrays) -> (out,
        scores, steps)``; with ``stream``, ``(start, body)``: the loop's start and one turn
        of its body, for a loop run from Python."""
        key = (options, shapes, max_new, stream)
        if key not in self.programs:
            # prefill and step, each compiled once per program (traced graphs on torch)
            max_len = shapes[0][1] + max_new
            prefill = backend.traced(lambda *args: self.prefill(*args[:3], max_len, *args[3:]))
            start = lambda *args: self._start(options, max_new, prefill, *args)  # noqa: E731
            body = lambda s: self._body(options, s)  # noqa: E731
            if stream:
                self.programs[key] = (backend.stateless_function(start, self.variables),
                                      backend.stateless_function(backend.traced(body), self.variables))
            else:
                loop = backend.CompiledLoop()

                def run(*args):
                    state = loop(self._more, body, start(*args))
                    return state["out"], state["scores"], state["step"]

                self.programs[key] = backend.stateless_function(run, self.variables)
        return self.programs[key]

    @staticmethod
    def _more(s):
        return ops.logical_and(s["step"] < ops.shape(s["out"])[1], ops.logical_not(ops.all(s["finished"])))

    def _start(self, options, max_new, prefill, seed, tokens, valid, positions, lengths, *extra):
        """The loop's state after the prefill: one row per prompt and beam."""
        (strategy, num_beams, top_k, top_p, temperature, penalty, end_id, min_new, constraint) = options
        if constraint is not None:  # its state comes last: (per-row dict, shared dict)
            *extra, constrained, shared = extra
        batch = tokens.shape[0]
        vocab = self.vocab_size
        logits, caches, key_valid = prefill(tokens, valid, positions, *extra)
        seen = ops.zeros((batch, vocab), "bool")
        if penalty != 1.0:
            seen = ops.max(ops.one_hot(tokens, vocab) * ops.cast(valid, "float32")[..., None], axis=1) > 0
        beams = num_beams if strategy == "beam" else 1
        rows = batch * beams
        if beams > 1:  # every beam starts from its prompt's prefill
            expand = lambda x: ops.repeat(x, beams, axis=0)  # noqa: E731
            logits, key_valid, seen, lengths = map(expand, (logits, key_valid, seen, lengths))
            caches = {k: tuple(expand(t) for t in v) for k, v in caches.items()}
            if constraint is not None:
                constrained = {k: expand(v) for k, v in constrained.items()}
        scores = ops.reshape(ops.tile(ops.convert_to_tensor([0.0] + [NEG] * (beams - 1)), [batch]), (rows,))
        state = dict(step=ops.convert_to_tensor(0, "int32"), logits=logits, caches=caches,
                     key_valid=key_valid, seen=seen, positions=ops.cast(lengths, "int32"),
                     out=ops.zeros((rows, max_new), "int32"), finished=ops.zeros((rows,), "bool"),
                     scores=ops.cast(scores, "float32"), seed=seed)
        if constraint is not None:  # per-row state (reordered with the beams) and shared data
            state.update(constraint=constrained, constraint_data=shared)
        return state

    def _body(self, options, s):
        """One turn of the loop: choose every row's next token, then run the step."""
        (strategy, beams, top_k, top_p, temperature, penalty, end_id, min_new, constraint) = options
        rows, max_new = s["out"].shape
        max_len = s["key_valid"].shape[1]
        batch, vocab = rows // beams, self.vocab_size
        fill = end_id if end_id is not None else 0
        vocab_ids = ops.arange(vocab)
        step = s["step"]
        logits = process_logits(s["logits"], s["seen"], step, penalty, end_id, min_new)
        finished = s["finished"]
        out, caches, key_valid, seen, positions = s["out"], s["caches"], s["key_valid"], s["seen"], s["positions"]
        scores = s["scores"]
        if constraint is not None:
            allowed = constraints_lib.allowed_mask(constraint, s["constraint"], s["constraint_data"], vocab, end_id)
            constrained = s["constraint"]
        if strategy == "beam":
            logp = ops.log_softmax(logits / temperature, axis=-1)
            if constraint is not None:  # scores stay the model's log-probabilities
                logp = ops.where(allowed, logp, FORBIDDEN)
            only_fill = ops.where(vocab_ids == fill, 0.0, NEG)[None, :]
            logp = ops.where(finished[:, None], only_fill, logp)
            candidates = ops.reshape(scores[:, None] + logp, (batch, beams * vocab))
            scores, index = ops.top_k(candidates, beams)
            scores = ops.reshape(scores, (rows,))
            source = ops.reshape(ops.arange(batch)[:, None] * beams + index // vocab, (rows,))
            token = ops.cast(ops.reshape(index % vocab, (rows,)), "int32")
            take = lambda x: ops.take(x, source, axis=0)  # noqa: E731
            out, finished, key_valid, seen, positions = map(take, (out, finished, key_valid, seen, positions))
            caches = {k: tuple(take(t) for t in v) for k, v in caches.items()}
            if constraint is not None:
                constrained = {k: take(v) for k, v in constrained.items()}
        else:
            if constraint is not None:  # sampling draws within the allowed tokens
                logits = ops.where(allowed, logits, FORBIDDEN)
            if strategy == "sample":
                logits = filter_logits(logits, top_k, top_p, temperature)
                token = sample(logits, backend.uniform_noise(ops.shape(logits), s["seed"], step))
            else:
                token = ops.cast(ops.argmax(logits, axis=-1), "int32")
            token = ops.where(finished, fill, token)
        # masked writes, not slice updates: the step index stays a tensor (trace-safe)
        out = ops.where(ops.arange(max_new)[None, :] == step, token[:, None], out)
        if end_id is not None:
            finished = ops.logical_or(finished, token == end_id)
        if penalty != 1.0:
            seen = ops.logical_or(seen, vocab_ids[None, :] == token[:, None])
        column = max_len - max_new + step
        new_key = (ops.arange(max_len) == column)[None, :]
        if self.pad_id is not None:
            new_key = ops.logical_and(new_key, (token != self.pad_id)[:, None])
        key_valid = ops.logical_or(key_valid, new_key)
        logits, caches = self.step(token, column, positions, key_valid, caches)
        new = dict(step=step + 1, logits=logits, caches=caches, key_valid=key_valid, seen=seen,
                   positions=positions + 1, out=out, finished=finished, scores=scores,
                   seed=s["seed"])
        if constraint is not None:
            new.update(constraint=constraint.update(constrained, s["constraint_data"], token),
                       constraint_data=s["constraint_data"])
        return new

    # -- public --------------------------------------------------------------
    def layout(self, prompts, max_new):
        """Left-pad ragged prompts into ``[batch, P]`` with P rounded up to a bucket."""
        longest, length = _bucketed_length(prompts)
        if self.max_position is not None:
            if longest + max_new > self.max_position:
                raise KerasformerError(
                    f"prompt of {longest} tokens + max_new_tokens={max_new} exceeds the position "
                    f"table of {self.max_position}; shorten the prompt or generate fewer tokens")
            length = min(length, self.max_position - max_new)
        tokens = np.zeros((len(prompts), length), "int32")
        valid = np.zeros((len(prompts), length), bool)
        positions = np.zeros((len(prompts), length), "int32")
        for row, prompt in enumerate(prompts):
            n = len(prompt)
            tokens[row, length - n:] = prompt
            valid[row, length - n:] = True
            positions[row, length - n:] = np.arange(n)
        lengths = np.array([len(p) for p in prompts], "int32")
        return tokens, valid, positions, lengths

    def extra_arrays(self, extra_inputs, batch):
        """``extra_inputs`` checked against ``additional_input_layers``: one array per
        input, one row per prompt."""
        specs = self.extra_specs
        if extra_inputs is None:
            extra_inputs = []
        elif not isinstance(extra_inputs, (list, tuple)):
            extra_inputs = [extra_inputs]
        if len(extra_inputs) != len(specs):
            raise KerasformerError(
                f"the model has {len(specs)} additional input(s) "
                f"({', '.join(str(s.name) for s in specs) or 'none'}); generate() got "
                f"{len(extra_inputs)} in extra_inputs (one array per input, one row per prompt)")
        arrays = []
        for spec, value in zip(specs, extra_inputs):
            try:
                array = np.asarray(value, dtype=spec.dtype)
            except (TypeError, ValueError):
                raise KerasformerError(f"extra_inputs for '{spec.name}' must be numeric, "
                                       f"{spec.dtype}") from None
            expected = (batch,) + tuple(spec.shape[1:])
            if array.ndim != len(expected) or any(e is not None and e != a
                                                  for e, a in zip(expected, array.shape)):
                raise KerasformerError(
                    f"extra_inputs for '{spec.name}' has shape {array.shape}; expected "
                    f"{tuple('?' if e is None else e for e in expected)} (one row per prompt)")
            arrays.append(array)
        return tuple(arrays)

    def arrays(self, prompts, max_new_tokens, extra_inputs=None):
        return self.layout(prompts, max_new_tokens) + self.extra_arrays(extra_inputs, len(prompts))

    def generate(self, prompts, max_new_tokens, options, seed=None, extra_inputs=None):
        arrays = self.arrays(prompts, max_new_tokens, extra_inputs)
        inputs = [ops.convert_to_tensor(x) for x in arrays]
        shapes = tuple(a.shape for a in arrays)
        constraint = options[-1]
        if constraint is not None:  # its data is program input: new data, same program
            state = constraint.init(len(prompts))
            shapes += tuple((k, v.shape) for part in state for k, v in sorted(part.items()))
            inputs += [{k: ops.convert_to_tensor(v) for k, v in part.items()} for part in state]
        program = self.program(options, shapes, max_new_tokens)
        out, scores, steps = program(_seed(seed), *inputs)
        return (ops.convert_to_numpy(out)[:, : int(ops.convert_to_numpy(steps))],
                ops.convert_to_numpy(scores))


def _seed(seed):
    # the seed is data, not part of the program: a new seed does not recompile
    return ops.convert_to_tensor(0 if seed is None else seed, "uint32")


class EncoderDecoderEngine(DecoderOnlyEngine):
    """T5 / mT5: the prompts go through the encoder once (on the prefill); the decoder
    starts from ``decoder_start_id`` (0, T5's pad) and decodes with a self-attention
    cache and a cross-attention cache projected once from the encodings."""

    kind_by_application = {"encoder": "seq2seq"}

    def __init__(self, transformer):
        super().__init__(transformer)
        self.max_position = None  # relative positions: no table bounds the decoding
        self.n_inputs = 1
        self.start_id = getattr(transformer, "decoder_start_token_id", None) or 0
        # T5's decoder masks no key of its own (its start token is the pad id; Hugging Face
        # does the same): a generated pad id stays visible to later steps, as in the full pass
        self.pad_id = None

    def layout(self, prompts, max_new):
        """The decoder's start tokens ``[batch, 1]``, and the prompts right-padded for the
        encoder (which masks its padding), as the one extra input of the prefill."""
        _, length = _bucketed_length(prompts)
        encoder_ids = np.zeros((len(prompts), length), "int32")
        for row, prompt in enumerate(prompts):
            encoder_ids[row, : len(prompt)] = prompt
        batch = len(prompts)
        tokens = np.full((batch, 1), self.start_id, "int32")
        return (tokens, np.ones((batch, 1), bool), np.zeros((batch, 1), "int32"),
                np.ones((batch,), "int32"), encoder_ids)

    def fixed(self, encoder_ids):
        return {"context": (self.transformer.call_encoder(encoder_ids),)}

    def forward(self, tokens, segment, decoding):
        return self.transformer.call_decoder(decoding.caches["context"][0], tokens, decoding)


def transformer_of(model):
    """The family object behind a Keras model built by ``build_transformer_model``."""
    from kerasformer.models.transformer import Transformer, built_transformer

    if isinstance(model, Transformer):
        return model
    transformer = built_transformer(model)
    if transformer is None:
        raise KerasformerError("generate() needs a model built by kerasformer.build_transformer_model")
    return transformer


def engine_for(model):
    transformer = transformer_of(model)
    engine = getattr(transformer, "_engine", None)
    if engine is None:  # kept on the family object, so both are freed together
        seq2seq = hasattr(transformer, "call_decoder")
        if not seq2seq and transformer.application == "encoder":
            # every position sees the whole text both ways: decoding it left to right
            # would run, and produce text the model was never trained to predict
            raise KerasformerError(
                "this model was built with application='encoder' (bidirectional), which cannot "
                "generate: build it with application='lm' (a causal language model) or "
                "application='unilm' (seq2seq, the prompt as segment 0), and with_mlm=True")
        engine = (EncoderDecoderEngine if seq2seq else DecoderOnlyEngine)(transformer)
        transformer._engine = engine
    return engine


def _trim(tokens, end_id):
    tokens = [int(t) for t in tokens]
    if end_id is not None and end_id in tokens:
        tokens = tokens[: tokens.index(end_id) + 1]
    return tokens


def generate(model, prompts, max_new_tokens, strategy="greedy", num_beams=4, top_k=None, top_p=None,
             temperature=1.0, repetition_penalty=1.0, end_id=None, min_new_tokens=0, seed=None,
             stream=False, return_all_beams=False, tokenizer=None, extra_inputs=None, constraint=None):
    """Generate continuations of ``prompts`` (a list of token-id lists, ragged).

    Text in, text out: with ``tokenizer`` (a tokenizer, or a model folder holding one),
    ``prompts`` may be strings (or one string) and the result is the new text per prompt
    (one string for one string); ``end_id`` defaults to the tokenizer's end token, and
    ``stream=True`` yields text pieces (see ``kerasformer.generation.text``).

    Returns the new token ids per prompt (a list of lists, each ending with ``end_id``
    where one was produced). ``strategy='beam'`` searches ``num_beams`` beams and
    returns the best per prompt, or with ``return_all_beams=True`` a list per prompt of
    ``(tokens, log_probability)`` pairs, best first. ``strategy='sample'`` draws with
    ``temperature``, ``top_k`` and ``top_p``; the same ``seed`` gives the same output.
    ``stream=True`` returns an iterator over steps, each a list with one new token per
    prompt (None once a prompt has finished).

    ``extra_inputs``: for a model built with ``additional_input_layers`` (e.g. the label
    of a conditional LayerNorm, ``layer_norm_cond``), one array per such input with one
    row per prompt; they feed the prefill and every step.

    ``constraint`` (a :class:`kerasformer.generation.constraints.Constraint`, e.g.
    ``SpanConstraint`` or ``TrieConstraint``) restricts every step to the tokens it allows
    (the end token where it allows ending); it needs ``end_id`` and runs inside the
    compiled loop. With it, beam scores stay the model's log-probabilities (forbidden
    tokens are removed, not renormalised away), and beams that found no allowed
    continuation are left out of ``return_all_beams``.
    """
    if tokenizer is not None or text.is_text(prompts):
        return text.generate_text(
            generate, engine_for(model).kind, model, prompts, max_new_tokens, tokenizer, end_id,
            stream, return_all_beams, strategy=strategy, num_beams=num_beams, top_k=top_k,
            top_p=top_p, temperature=temperature, repetition_penalty=repetition_penalty,
            min_new_tokens=min_new_tokens, seed=seed, extra_inputs=extra_inputs, constraint=constraint)
    engine = engine_for(model)
    # every argument checked before anything is compiled or allocated (kerasformer.validation)
    top_k = validation.check_generate_args(
        strategy, max_new_tokens, num_beams, top_k, top_p, temperature, repetition_penalty,
        end_id, min_new_tokens, seed, engine.vocab_size)
    prompts = validation.token_id_lists(prompts, engine.transformer.vocab_size)
    max_new_tokens = int(max_new_tokens)
    if engine.max_position is None:  # no position table bounds the caches: a documented cap
        validation.check_decode_length(max(map(len, prompts)), max_new_tokens)
    if constraint is not None:
        if not isinstance(constraint, constraints_lib.Constraint):
            raise KerasformerError("constraint must be a kerasformer.generation.constraints.Constraint "
                                   "(SpanConstraint, TrieConstraint...)")
        if end_id is None:
            raise KerasformerError("decoding with a constraint needs end_id: it is how a row stops "
                                   "once its output is complete")
        constraint.check_vocab(engine.vocab_size)
    options = (strategy, int(num_beams) if strategy == "beam" else 1, top_k,
               None if top_p is None else float(top_p), float(temperature),
               float(repetition_penalty), None if end_id is None else int(end_id),
               int(min_new_tokens), constraint)
    seed = None if seed is None else int(seed)
    if stream:
        if strategy == "beam":
            raise KerasformerError("stream=True is for greedy and sampling; beams reorder as they go")
        if constraint is not None:
            raise KerasformerError("stream=True does not take a constraint yet; decode without stream")
        return _stream(engine, prompts, max_new_tokens, options, seed, extra_inputs)
    out, scores = engine.generate(prompts, max_new_tokens, options, seed, extra_inputs)
    if strategy != "beam":
        return [_trim(row, end_id) for row in out]
    beams = options[1]
    results = []
    for b in range(len(prompts)):
        rows = [(_trim(out[b * beams + k], end_id), float(scores[b * beams + k])) for k in range(beams)
                if constraint is None or scores[b * beams + k] > NEG / 2]
        rows.sort(key=lambda r: -r[1])
        results.append(rows if return_all_beams else rows[0][0])
    return results


def _stream(engine, prompts, max_new_tokens, options, seed, extra_inputs):
    """Greedy / sampling one step at a time, yielding tokens as they come: the loop of
    ``generate`` (its start and body, compiled once per bucket) driven from Python, so
    each step costs a host round trip and draws the same tokens as the one program."""
    arrays = engine.arrays(prompts, max_new_tokens, extra_inputs)
    start, body = engine.program(options, tuple(a.shape for a in arrays), max_new_tokens, stream=True)
    state = start(_seed(seed), *(ops.convert_to_tensor(x) for x in arrays))
    for t in range(max_new_tokens):
        finished = ops.convert_to_numpy(state["finished"])
        state = body(state)
        token = ops.convert_to_numpy(state["out"])[:, t]
        yield [None if done else int(tok) for tok, done in zip(token, finished)]
        if ops.convert_to_numpy(state["finished"]).all():
            return
