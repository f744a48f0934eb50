"""The generation engine: cached, batched, compiled decoding.

One forward pass over the prompt fills a pre-allocated key/value cache (prefill);
every later step runs the network on the newest token only. The family's own
graph-building code serves as the incremental forward pass (``Transformer.cached_call``):
a :class:`DecodingPass` intercepts each layer call to hand attention layers their
cache, position embeddings the right positions, and to skip the final softmax.

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
from kerasformer.layers import MultiHeadAttention, PositionEmbedding

NEG = -1e9  # "impossible" score: finite, so sums and log-softmax never produce NaN
# a token a constraint forbids: below NEG, so that a token banned by min_new_tokens (NEG)
# but the only one the constraint allows still wins: the constraint has the last word
FORBIDDEN = 2 * NEG
PROMPT_BUCKET = 16


class DecodingPass:
    """What one cached forward pass needs; handed to ``Transformer.cached_call``."""

    def __init__(self, attention_mask, position_ids, caches, cache_index, max_len=None,
                 batch=None, return_logits=True, last_only=False):
        self.attention_mask = attention_mask
        self.key_length = attention_mask.shape[-1]  # the cache length
        self.position_ids = position_ids
        self.caches = dict(caches)
        self.cache_index = cache_index
        self.max_len = max_len  # set on the prefill pass: caches are created there
        self.batch = batch
        self.return_logits = return_logits
        self.last_only = last_only
        self.seen = {}

    def before_heads(self, x):
        """The hidden states the output heads see: on a prefill only the last position
        predicts anything, and the vocabulary projection of the others would be wasted."""
        return x[:, -1:] if self.last_only else x

    def _key(self, layer):
        # a layer applied at several depths (ALBERT) needs one cache per application
        count = self.seen.get(layer.name, 0)
        self.seen[layer.name] = count + 1
        return f"{layer.name}#{count}"

    def call_layer(self, layer, inputs, arguments):
        if hasattr(layer, "decoding_call"):  # layers that know how to serve a cached pass
            return layer.decoding_call(inputs, self, **arguments)
        if isinstance(layer, MultiHeadAttention):
            key = self._key(layer)
            cross = isinstance(inputs, (list, tuple)) and inputs[1] is not inputs[0]
            if cross:  # keys/values come from the encoder: project once, then reuse
                if key not in self.caches:
                    if self.max_len is None:
                        raise KerasformerError(f"no cross-attention cache for {layer.name}")
                    self.caches[key] = layer.project_kv(inputs[1], inputs[2])
                out, _ = _run_layer(layer, inputs, cache=self.caches[key], cache_index=None, **arguments)
                return out
            if key not in self.caches:
                if self.max_len is None:
                    raise KerasformerError(f"no cache for attention layer {layer.name}")
                dtype = layer.compute_dtype
                self.caches[key] = (
                    ops.zeros((self.batch, layer.heads, self.max_len, layer.key_size), dtype),
                    ops.zeros((self.batch, layer.heads, self.max_len, layer.head_size), dtype))
            out, self.caches[key] = _run_layer(layer, inputs, cache=self.caches[key],
                                          cache_index=self.cache_index, **arguments)
            return out
        if isinstance(layer, PositionEmbedding) and self.position_ids is not None:
            arguments["position_ids"] = self.position_ids + layer.offset
        elif (self.return_logits and isinstance(layer, keras.layers.Activation)
              and layer.name.endswith("-Activation")):
            return inputs  # the head's softmax: decode from logits instead
        return _run_layer(layer, inputs, **arguments)


def _run_layer(layer, inputs, **arguments):
    """Call an already-built layer. In float32, go straight to ``layer.call``: Keras'
    ``__call__`` bookkeeping (input conversion, masks, autocast and name scopes) costs
    more than the arithmetic of one decoding step on small models, and a cached pass
    needs none of it. Under mixed precision the full ``__call__`` keeps its casts."""
    if layer.built and layer.dtype_policy.name == "float32":
        return layer.call(inputs, **arguments)
    return layer(inputs, **arguments)


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
class DecoderOnlyEngine:
    """Cached decoding for decoder-only LMs (``gpt2``, any family with
    ``application='lm'``) and UniLM seq2seq (``application='unilm'``)."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.kind = "unilm" if transformer.application == "unilm" else "lm"
        self.n_inputs = len(transformer.model.inputs)
        self.max_position = getattr(transformer, "max_position", None)
        self.variables = transformer.model.variables
        self.programs = {}
        vocab = transformer.model.outputs[-1].shape[-1]
        if vocab != transformer.vocab_size:
            raise KerasformerError(
                f"model '{transformer.model.name}' does not end in a vocabulary distribution "
                f"(last output has {vocab} features, vocab_size is {transformer.vocab_size}); build "
                "it with with_mlm=True (BERT family) so it can generate")
        self.vocab_size = vocab

    # -- one forward pass -------------------------------------------------
    def _inputs(self, tokens, segment):
        if self.n_inputs == 1:
            return [tokens]
        return [tokens, ops.full(ops.shape(tokens), segment, "int32")]

    def prefill(self, tokens, valid, positions, max_len, *extra):
        """Run the (left-padded) prompts ``[batch, P]``; return last-position logits,
        the caches and which cache slots hold real tokens."""
        batch, length = tokens.shape
        key_valid = ops.concatenate([valid, ops.zeros((batch, max_len - length), "bool")], axis=1)
        cols = ops.arange(max_len)
        # UniLM's prompt is segment 0: bidirectional. An LM prompt is causal.
        limit = ops.full((length,), length - 1, "int32") if self.kind == "unilm" else ops.arange(length)
        mask = ops.logical_and(key_valid[:, None, None, :],
                               cols[None, None, None, :] <= limit[None, None, :, None])
        decoding = DecodingPass(mask, positions, {}, 0, max_len=max_len, batch=batch, last_only=True)
        logits = self.transformer.cached_call(self._inputs(tokens, 0), decoding)
        return logits[:, -1], decoding.caches, key_valid

    def step(self, token, column, positions, key_valid, caches):
        """One new token per row at cache slot ``column``."""
        max_len = key_valid.shape[1]
        mask = ops.logical_and(key_valid, ops.arange(max_len)[None, :] <= column)[:, None, None, :]
        decoding = DecodingPass(mask, positions[:, None], caches, column)
        segment = 1 if self.kind == "unilm" else 0  # UniLM's output is segment 1
        logits = self.transformer.cached_call(self._inputs(token[:, None], segment), decoding)
        return logits[:, 0], decoding.caches

    # -- the loop ----------------------------------------------------------
    def program(self, options, shapes, max_new):
        key = (options, shapes, max_new)
        if key not in self.programs:
            # prefill and step, each compiled once per program (traced graphs on torch)
            max_len = shapes[0][1] + max_new
            prefill = backend.traced(lambda *args: self.prefill(*args[:3], max_len, *args[3:]))
            loop = backend.CompiledLoop()
            self.programs[key] = backend.stateless_function(
                lambda *args: self._run(options, max_new, prefill, loop, *args), self.variables)
        return self.programs[key]

    def _run(self, options, max_new, prefill, loop, seed, tokens, valid, positions, lengths, *extra):
        (strategy, num_beams, top_k, top_p, temperature, penalty, end_id, min_new, constraint) = options
        if constraint is not None:  # its state comes last: (per-row dict, shared dict)
            *extra, constrained, shared = extra
        batch, prompt_len = tokens.shape
        max_len = prompt_len + max_new
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
        if constraint is not None:
            state["constraint"] = constrained
        fill = end_id if end_id is not None else 0
        vocab_ids = ops.arange(vocab)

        def cond(s):
            return ops.logical_and(s["step"] < max_new, ops.logical_not(ops.all(s["finished"])))

        def body(s):
            step = s["step"]
            logits = process_logits(s["logits"], s["seen"], step, penalty, end_id, min_new)
            finished = s["finished"]
            out, caches, key_valid, seen, positions = s["out"], s["caches"], s["key_valid"], s["seen"], s["positions"]
            scores = s["scores"]
            if constraint is not None:
                allowed = constraints_lib.allowed_mask(constraint, s["constraint"], shared, vocab, end_id)
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
                    s = dict(s, constraint={k: take(v) for k, v in s["constraint"].items()})
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
            column = prompt_len + step
            key_valid = ops.logical_or(key_valid, (ops.arange(max_len) == column)[None, :])
            logits, caches = self.step(token, column, positions, key_valid, caches)
            new = dict(step=step + 1, logits=logits, caches=caches, key_valid=key_valid, seen=seen,
                       positions=positions + 1, out=out, finished=finished, scores=scores,
                       seed=s["seed"])
            if constraint is not None:
                new["constraint"] = constraint.update(s["constraint"], shared, token)
            return new

        state = loop(cond, body, state)
        return state["out"], state["scores"], state["step"]

    # -- public --------------------------------------------------------------
    def layout(self, prompts, max_new):
        """Left-pad ragged prompts into ``[batch, P]`` with P rounded up to a bucket."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise KerasformerError("prompts must be a non-empty list of non-empty token-id lists")
        longest = max(len(p) for p in prompts)
        length = -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET
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

    def generate(self, prompts, max_new_tokens, options, seed=None):
        arrays = self.layout(prompts, max_new_tokens)
        inputs = [ops.convert_to_tensor(x) for x in arrays]
        shapes = tuple(a.shape for a in arrays)
        constraint = options[-1]
        if constraint is not None:  # its data is program input: new data, same program
            state = constraint.init(len(prompts))
            shapes += tuple((k, v.shape) for part in state for k, v in sorted(part.items()))
            inputs += [{k: ops.convert_to_tensor(v) for k, v in part.items()} for part in state]
        program = self.program(options, shapes, max_new_tokens)
        # the seed is data, not part of the program: a new seed does not recompile
        seed = ops.convert_to_tensor(0 if seed is None else seed, "uint32")
        out, scores, steps = program(seed, *inputs)
        return (ops.convert_to_numpy(out)[:, : int(ops.convert_to_numpy(steps))],
                ops.convert_to_numpy(scores))


class EncoderDecoderEngine(DecoderOnlyEngine):
    """T5 / mT5: the prompts go through the encoder once; the decoder starts from
    ``decoder_start_id`` (0, T5's pad) and decodes with a self-attention cache and a
    cross-attention cache projected once from the encodings."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.kind = "seq2seq"
        self.max_position = None
        self.variables = transformer.model.variables
        self.programs = {}
        self.vocab_size = transformer.model.outputs[-1].shape[-1]
        self.start_id = getattr(transformer, "decoder_start_token_id", None) or 0

    def layout(self, prompts, max_new):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise KerasformerError("prompts must be a non-empty list of non-empty token-id lists")
        longest = max(len(p) for p in prompts)
        length = -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET
        encoder_ids = np.zeros((len(prompts), length), "int32")  # right padding: the encoder masks it
        for row, prompt in enumerate(prompts):
            encoder_ids[row, : len(prompt)] = prompt
        batch = len(prompts)
        tokens = np.full((batch, 1), self.start_id, "int32")
        return (tokens, np.ones((batch, 1), bool), np.zeros((batch, 1), "int32"),
                np.ones((batch,), "int32"), encoder_ids)

    def _decode(self, tokens, decoding, context):
        return self.transformer.cached_call(
            [context, tokens], decoding, call=lambda inputs: self.transformer.call_decoder(*inputs))

    def prefill(self, tokens, valid, positions, max_len, encoder_ids):
        context = self.transformer.call_encoder(encoder_ids)
        batch, length = tokens.shape
        key_valid = ops.concatenate([valid, ops.zeros((batch, max_len - length), "bool")], axis=1)
        mask = ops.logical_and(key_valid[:, None, None, :],
                               ops.arange(max_len)[None, None, None, :] <= ops.arange(length)[None, None, :, None])
        decoding = DecodingPass(mask, None, {}, 0, max_len=max_len, batch=batch)
        logits = self._decode(tokens, decoding, context)
        caches = dict(decoding.caches, context=(context,))
        return logits[:, -1], caches, key_valid

    def step(self, token, column, positions, key_valid, caches):
        max_len = key_valid.shape[1]
        mask = ops.logical_and(key_valid, ops.arange(max_len)[None, :] <= column)[:, None, None, :]
        context = caches["context"][0]
        decoding = DecodingPass(mask, None, {k: v for k, v in caches.items() if k != "context"}, column)
        logits = self._decode(token[:, None], decoding, context)
        return logits[:, 0], dict(decoding.caches, context=(context,))


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
             stream=False, return_all_beams=False, tokenizer=None, constraint=None):
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
            min_new_tokens=min_new_tokens, seed=seed, constraint=constraint)
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
        return _stream(engine, prompts, max_new_tokens, options, seed)
    out, scores = engine.generate(prompts, max_new_tokens, options, seed)
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


def _stream(engine, prompts, max_new_tokens, options, seed):
    """Greedy / sampling one step at a time, yielding tokens as they come (prefill and
    step are compiled once per bucket; the loop runs in Python, so each step costs a
    host round trip). Sampling draws the same noise as the non-streaming loop."""
    (strategy, _, top_k, top_p, temperature, penalty, end_id, min_new, _) = options
    arrays = engine.layout(prompts, max_new_tokens)
    tokens, lengths, extra = arrays[0], arrays[3], arrays[4:]
    batch, prompt_len = tokens.shape
    key = ("stream",) + options + (tuple(a.shape for a in arrays), max_new_tokens)
    if key not in engine.programs:
        max_len = prompt_len + max_new_tokens
        prefill = backend.traced(lambda t, v, p, *e: engine.prefill(t, v, p, max_len, *e))
        engine.programs[key] = (backend.stateless_function(prefill, engine.variables),
                                backend.stateless_function(backend.traced(engine.step), engine.variables))
    prefill, step = engine.programs[key]
    logits, caches, key_valid = prefill(*(ops.convert_to_tensor(x) for x in arrays[:3] + tuple(extra)))
    seed = 0 if seed is None else int(seed)
    seen = np.zeros((batch, engine.vocab_size), bool)
    for row, prompt in enumerate(prompts):
        seen[row, tokens[row][-len(prompt):] if engine.kind != "seq2seq" else tokens[row]] = True
    finished = np.zeros(batch, bool)
    current = ops.convert_to_tensor(lengths)
    for t in range(max_new_tokens):
        scores = process_logits(logits, ops.convert_to_tensor(seen), t, penalty, end_id, min_new)
        if strategy == "sample":
            token = sample(filter_logits(scores, top_k, top_p, temperature), backend.uniform_noise(ops.shape(scores), seed, t))
        else:
            token = ops.argmax(scores, axis=-1)
        token = np.asarray(ops.convert_to_numpy(token), "int32")
        yield [None if done else int(tok) for tok, done in zip(token, finished)]
        seen[np.arange(batch), token] = True
        if end_id is not None:
            finished |= token == end_id
        if finished.all() or t == max_new_tokens - 1:
            return
        key_valid = ops.slice_update(key_valid, (0, prompt_len + t), ops.ones((batch, 1), "bool"))
        column = ops.convert_to_tensor(prompt_len + t, "int32")  # a tensor: one compiled step for all
        logits, caches = step(ops.convert_to_tensor(token), column, current, key_valid, caches)
        current = current + 1
