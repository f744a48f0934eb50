"""Looking inside a model: intermediate outputs and attention maps.

* :func:`intermediate_outputs` -- a Keras model (sharing the weights) whose outputs are any
  named layers' outputs, e.g. ``'Transformer-3-FeedForward-Norm'``.
* :func:`attention_probabilities` -- every attention layer's probabilities
  ``[batch, heads, q_len, k_len]`` for some inputs, in the order the layers run.
* :func:`plot_attention` -- one layer's attention for a text as a PNG heat map with the tokens
  as tick labels (needs the optional dependency ``matplotlib``).
"""
import keras
import numpy as np
from keras import ops

from kerasformer import backend
from kerasformer.backend import private
from kerasformer.backend.private import sublayers  # noqa: F401 - public here
from kerasformer.errors import KerasformerError
from kerasformer.layers import MultiHeadAttention


def _keras_model(model_or_transformer):
    """The Keras model of a Keras model or of a kerasformer ``Transformer``."""
    if isinstance(model_or_transformer, keras.Model):
        return model_or_transformer
    model = getattr(model_or_transformer, "model", None)
    if isinstance(model, keras.Model):
        return model
    raise KerasformerError(f"expected a Keras model or a built kerasformer Transformer, "
                           f"got {type(model_or_transformer).__name__}")


def _nodes_in_order(model):
    """The nodes of ``model``'s graph in the order they run (deepest first)."""
    by_depth = private.get(model, "_nodes_by_depth")
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def layer_outputs(model, name):
    """The symbolic outputs of every call of layer ``name`` in ``model``'s graph, in the
    order the calls run (a shared layer -- ALBERT's block, the tied embedding -- has several)."""
    model = _keras_model(model)
    outputs = [node.outputs for node in _nodes_in_order(model)
               if node.operation is not None and node.operation.name == name and not node.is_input]
    if not outputs:
        if any(layer.name == name for layer in model.layers):
            raise KerasformerError(f"layer {name!r} is not called in the graph of model {model.name!r}")
        raise KerasformerError(f"no layer {name!r} in model {model.name!r} (nested models are "
                               "not searched: pass the inner model)")
    return [o[0] if len(o) == 1 else list(o) for o in outputs]


def intermediate_outputs(model, names):
    """A Keras model with ``model``'s inputs whose outputs are the outputs of the layers in
    ``names`` (one name, or a list; the outputs follow the same structure). It shares
    ``model``'s layers, so it always reflects the current weights::

        probe = intermediate_outputs(bert, ['Embedding-Norm', 'Transformer-3-FeedForward-Norm'])
        embeddings, block_3 = probe.predict([token_ids, segment_ids])

    A layer called several times (ALBERT's shared block, the token embedding reused by the MLM
    head) is named with its call index, ``('Embedding-Token', 1)``; the bare name means the
    first call. ``model`` may also be a kerasformer ``Transformer``.
    """
    model = _keras_model(model)
    single = isinstance(names, str) or (isinstance(names, tuple) and len(names) == 2
                                        and isinstance(names[1], int))
    outputs = []
    for entry in ([names] if single else list(names)):
        name, index = (entry, 0) if isinstance(entry, str) else entry
        calls = layer_outputs(model, name)
        if not -len(calls) <= index < len(calls):
            raise KerasformerError(f"layer {name!r} is called {len(calls)} time(s) in model "
                                   f"{model.name!r}; call index {index} does not exist")
        outputs.append(calls[index])
    return keras.Model(model.inputs, outputs[0] if single else outputs,
                       name=f"{model.name}_intermediate")


# ------------------------------------------------------------------------ attention

def _run_recording(model, inputs, records):
    """Run ``model``'s graph eagerly, asking every attention layer for its probabilities."""

    def operation_fn(op):
        if isinstance(op, MultiHeadAttention):
            def call(*args, **kwargs):
                kwargs.pop("return_attention_scores", None)
                results = op(*args, return_attention_scores=True, **kwargs)
                records.append((op.name, results[-1]))
                return results[0] if len(results) == 2 else results[:-1]

            return call
        if isinstance(op, keras.Model) and private.optional(op, "_run_through_graph"):
            # a nested functional model: look inside it too
            return lambda inputs, **kwargs: _unpack(_run_recording(op, inputs, records))
        return op

    return private.get(model, "_run_through_graph")(inputs, operation_fn=operation_fn)


def _unpack(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def attention_probabilities(model_or_transformer, inputs, with_names=False):
    """Every attention layer's probabilities for ``inputs`` (what the model takes, e.g.
    ``[token_ids, segment_ids]``): a list of numpy arrays ``[batch, heads, q_len, k_len]``
    (float32, rows sum to 1, masked keys -- padding, the future under a causal mask -- get 0),
    one per attention call in the order they run, so ``[i]`` is block ``i`` of an encoder
    (T5: the encoder's, then per decoder block self- and cross-attention). With
    ``with_names=True``, ``(layer name, probabilities)`` pairs.

    Runs the model's graph once, eagerly and in inference mode (no dropout), asking each
    ``MultiHeadAttention`` for its probabilities; nested functional models are looked into.
    """
    model = _keras_model(model_or_transformer)
    flat = keras.tree.flatten(inputs)
    if len(flat) != len(model.inputs):
        raise KerasformerError(f"model {model.name!r} takes {len(model.inputs)} input(s), "
                               f"got {len(flat)}")
    tensors = [ops.convert_to_tensor(x, dtype=spec.dtype) for x, spec in zip(flat, model.inputs)]
    records = []
    with backend.inference_mode():
        _run_recording(model, tensors, records)
    if not records:
        raise KerasformerError(f"model {model.name!r} has no kerasformer MultiHeadAttention layer")
    results = [(name, backend.to_numpy(ops.cast(p, "float32"))) for name, p in records]
    return results if with_names else [p for _, p in results]


def plot_attention(model, tokenizer, text, path, layer=-1, head=None, second_text=None,
                   maxlen=None, cmap="viridis", dpi=100):
    """Write a PNG heat map of one attention layer's probabilities for ``text``.

    ``layer`` indexes :func:`attention_probabilities` (``-1``: the last); ``head=None``
    averages the heads, an int picks one. Rows are queries, columns keys, both labelled with
    the tokens (``tokenizer.encode`` / ``ids_to_tokens``; ``second_text`` for a pair). The model
    takes ``[token_ids]`` or ``[token_ids, segment_ids]``. Returns the plotted ``[len, len]``
    matrix.

    Needs matplotlib (``pip install 'kerasformer[plot]'``, which also brings Noto Sans CJK
    for Chinese / Japanese / Korean tokens, see :func:`cjk_font_family`).
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise KerasformerError("plot_attention needs matplotlib: pip install matplotlib") from None
    keras_model = _keras_model(model)
    token_ids, segment_ids = tokenizer.encode(text, second_text, maxlen=maxlen)
    tokens = tokenizer.ids_to_tokens(token_ids)
    batch = [np.asarray([token_ids], "int32"), np.asarray([segment_ids], "int32")]
    if len(keras_model.inputs) == 1:
        batch = batch[:1]
    elif len(keras_model.inputs) != 2:
        raise KerasformerError("plot_attention handles models taking [token_ids] or "
                               f"[token_ids, segment_ids]; {keras_model.name!r} takes "
                               f"{len(keras_model.inputs)} inputs")
    names_probs = attention_probabilities(keras_model, batch, with_names=True)
    name, probs = names_probs[layer]
    probs = probs[0]  # [heads, q, k]
    matrix = probs.mean(axis=0) if head is None else probs[head]

    labels = {}
    if any(ord(ch) >= 0x2E80 for token in tokens for ch in token):  # CJK and beyond
        family = cjk_font_family()
        if family is not None:  # per-glyph fallback (matplotlib >= 3.6): Latin from the
            # default font, CJK from this one
            labels["fontfamily"] = [matplotlib.rcParams["font.sans-serif"][0], family]
    size = max(4.0, 0.35 * len(tokens) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap=cmap, vmin=0.0, vmax=float(matrix.max()) or 1.0)
    axes.set_xticks(range(len(tokens)))
    axes.set_yticks(range(len(tokens)))
    axes.set_xticklabels(tokens, rotation=90, **labels)
    axes.set_yticklabels(tokens, **labels)
    axes.set_xlabel("key")
    axes.set_ylabel("query")
    axes.set_title(f"{name} ({'mean of heads' if head is None else f'head {head}'})")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return matrix


# CJK font families matplotlib may find on the system, best first
_SYSTEM_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC",
                        "Source Han Sans CN", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
                        "Microsoft YaHei", "SimHei", "PingFang SC", "Heiti SC", "Droid Sans Fallback")


def cjk_font_family():
    """The name of a font family with Chinese (and Japanese / Korean) glyphs for
    matplotlib, or None: Noto Sans CJK from the ``noto-cjk-sans-otc`` package (installed
    with ``kerasformer[plot]``; registered with matplotlib on first use, so nothing on the
    system has to change), else one the system has. matplotlib's default fonts have no
    CJK glyphs: tokens would be drawn as empty boxes."""
    from matplotlib import font_manager

    try:
        import noto_cjk_sans_otc

        path = str(noto_cjk_sans_otc.FONT_PATH)
        if path not in {entry.fname for entry in font_manager.fontManager.ttflist}:
            font_manager.fontManager.addfont(path)
    except (ImportError, OSError, RuntimeError):
        pass
    names = {entry.name for entry in font_manager.fontManager.ttflist}
    # matplotlib >= 3.10 registers every face of the collection (the SC one is Simplified
    # Chinese); older versions only its first, the Japanese face, which has the same characters
    return next((family for family in _SYSTEM_CJK_FAMILIES if family in names), None)


__all__ = ["attention_probabilities", "cjk_font_family", "intermediate_outputs", "layer_outputs", "plot_attention",
           "sublayers"]
