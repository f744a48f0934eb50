"""The one place where kerasformer branches on the Keras backend.

Model and layer code uses ``keras.ops`` only; whatever genuinely has to differ per
backend (compiling a forward function, turning tensors into numpy, switching off
autograd for inference) lives here, so the rest of the code never asks which
backend it runs on.
"""
import collections
import contextlib
import math
import warnings

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
    input shape), ``tf.function`` on TensorFlow, and on torch an FX graph traced per
    input signature that recurs (:func:`traced`: no Keras dispatch, prepacked oneDNN
    matmuls), run under ``inference_mode``.
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
        graphs, seen = collections.OrderedDict(), {}  # signature -> traced graph / calls so far

        def forward(inputs):
            flat = [keras.ops.convert_to_tensor(x) for x in keras.tree.flatten(inputs)]
            signature = (str(keras.tree.map_structure(lambda _: 0, inputs)),
                         tuple((tuple(x.shape), x.dtype) for x in flat))
            if signature in graphs:
                graphs.move_to_end(signature)  # least recently used goes first
            else:
                # A trace costs a few eager calls and pays off only when a shape recurs; a
                # bert4keras-style decoding loop sends a new length every step. So trace
                # a signature on its TRACE_AFTER-th call and run the others eagerly.
                if len(seen) > 4 * MAX_SIGNATURES:
                    seen.clear()
                seen[signature] = seen.get(signature, 0) + 1
                if seen[signature] < TRACE_AFTER:
                    with inference_mode():
                        return model(keras.tree.pack_sequence_as(inputs, flat), training=False)
                if len(graphs) >= MAX_SIGNATURES:  # forget the least recently used graph; its
                    evicted, _ = graphs.popitem(last=False)  # signature must earn a trace again
                    seen.pop(evicted, None)
                graphs[signature] = traced(lambda *leaves: model(
                    keras.tree.pack_sequence_as(inputs, leaves), training=False))
            with inference_mode():
                return graphs[signature](*flat)

        return forward
    return lambda inputs: model(inputs, training=False)


TRACE_AFTER = 3  # torch: calls with one input signature before it gets a traced graph
MAX_SIGNATURES = 256  # traced graphs kept per model (torch; the weights are shared)


def predict(model, inputs):
    """Run ``model`` for inference and return numpy, without ``Model.predict``'s per-call
    overhead; the compiled function is kept on the model (a cycle the garbage collector
    frees with it, where a global table keyed by model would keep it alive), so repeated
    calls do not retrace."""
    forward = getattr(model, "_kerasformer_forward", None)
    if forward is None:
        forward = compiled_forward(model)
        model._kerasformer_forward = forward
    return to_numpy(forward(inputs))


def update_cache(cache, new, index):
    """Write ``new`` (``[batch, heads, T, size]``) into ``cache`` at position ``index`` of
    axis 2 and return the cache. Torch updates in place (no per-step copy of the whole
    cache, the cost that makes naive cached decoding slow on torch) and, for a tensor
    ``index``, without reading it on the host, so a traced decoding step stays valid for
    every position; JAX uses ``dynamic_update_slice``, which XLA performs in place inside
    a compiled loop."""
    new = keras.ops.cast(new, cache.dtype)
    if name() == "torch":
        import torch

        length = new.shape[2]
        if isinstance(index, int):
            cache[:, :, index:index + length] = new
        else:
            rows = torch.arange(length, device=cache.device) + index.to(torch.int64)
            cache.index_copy_(2, rows, new)
        return cache
    return keras.ops.slice_update(cache, (0, 0, index, 0), new)


def uniform_noise(shape, seed, step):
    """Uniform noise in (0, 1) for sampling: a pure function of (``seed``, ``step``), so it
    can live inside a compiled or traced decoding loop and the same seed always draws the
    same numbers. JAX uses its counter-based PRNG; torch hashes (seed, step, element index)
    with MurmurHash3's 32-bit finaliser, which needs no generator state a trace could
    freeze."""
    if name() == "torch":
        import torch

        mask = 0xFFFFFFFF

        def mix(x):  # MurmurHash3 fmix32 on int64 holding 32-bit values
            x = x ^ (x >> 16)
            x = (x * 0x85EBCA6B) & mask
            x = x ^ (x >> 13)
            x = (x * 0xC2B2AE35) & mask
            return x ^ (x >> 16)

        # keras.ops places the tensors on Keras' device (a GPU when there is one)
        seed = keras.ops.convert_to_tensor(seed).to(torch.int64) & mask
        step = keras.ops.convert_to_tensor(step).to(torch.int64) & mask
        key = mix(mix(seed) ^ ((step * 0x9E3779B1 + 0x7F4A7C15) & mask))
        index = keras.ops.reshape(keras.ops.arange(math.prod(shape), dtype="int64"), tuple(shape))
        bits = mix(mix(index ^ key) ^ ((key * 0x9E3779B1) & mask))
        return ((bits.to(torch.float64) + 0.5) / 2.0 ** 32).to(torch.float32)
    seed = keras.ops.stack([keras.ops.cast(seed, "uint32"), keras.ops.cast(step, "uint32")])
    return keras.random.uniform(shape, seed=seed)


def traced(fn):
    """``fn`` compiled once, on its first call, for the shapes of that call.

    On JAX this is ``fn`` itself: callers run inside an enclosing ``jax.jit`` program.
    On torch, a decoding step of a small model spends most of its time in Keras'
    per-op dispatch (argument conversion, dtype checks), not in arithmetic; so ``fn`` is
    traced into an FX graph of plain aten ops (``make_fx``) and that graph runs every
    later call (see :class:`_TorchGraph`). ``fn`` should be trace-safe: no Python
    branching on tensor values and no host reads such as ``int(tensor)`` (a ``fn`` that
    does either runs eagerly instead, with a warning), and non-tensor arguments must not
    change between calls (they are constants of the graph).
    """
    if name() != "torch":
        return fn
    return _TorchGraph(fn)


class CompiledLoop:
    """``keras.ops.while_loop`` with the body compiled once (see :func:`traced`) and
    reused by every later call: ``lax.while_loop`` inside the enclosing program on JAX,
    a Python loop over the traced graph on torch."""

    def __init__(self):
        self.body = None

    def __call__(self, cond, body, state):
        if name() != "torch":
            return keras.ops.while_loop(cond, body, state)
        if self.body is None:
            self.body = traced(body)
        while bool(cond(state)):
            state = self.body(state)
        return state


class _TorchGraph:
    """``fn`` as an FX graph of aten ops, traced on the first call.

    Tracing runs ``fn`` on fake tensors (shapes and dtypes only), so nothing is computed
    twice and a value read on the host (``int(t)``, ``if t:``) raises instead of being
    frozen into the graph; ``fn`` then simply runs eagerly, with a warning. In-place
    writes to the inputs (the key/value caches) stay in-place ops of the graph. Model
    weights become constants of the graph (the very same tensors, so in-place updates
    such as ``Variable.assign`` are seen).

    On CPU the graph's matrix products with a weight (``mm(x, W)``, ``W`` a float32
    constant, possibly transposed) then run through oneDNN on a prepacked copy of the
    weight: for the few rows of a decoding step MKL's ``mm`` reaches a third of what
    the prepacked kernel does on our machines. A prepacked copy is shared by every
    graph and re-packed when its weight changes (the tensor's version counter).
    """

    def __init__(self, fn):
        self.fn = fn
        self.graph = None
        self.packed = []  # [attribute, weight, transposed, version packed] per prepacked constant

    def __call__(self, *args):
        import torch

        with torch.no_grad():
            if self.graph is None:
                from torch.fx.experimental.proxy_tensor import make_fx

                try:  # fake tensors: nothing is computed, and a host read of a value raises
                    self.graph = make_fx(lambda *a: self.fn(*a), tracing_mode="fake",
                                         _allow_non_fake_inputs=True)(*args)
                except Exception as error:  # noqa: BLE001 -- any failure: run eagerly instead
                    result = self.fn(*args)  # a genuine error in fn surfaces here
                    self.graph = False
                    warnings.warn(f"kerasformer: could not trace {getattr(self.fn, '__name__', self.fn)} "
                                  f"into a torch graph ({type(error).__name__}: {error}); it runs "
                                  "eagerly, which is correct but slower", stacklevel=3)
                    return result
                self.packed = _prepack_matmuls(self.graph)
            if self.graph is False:
                return self.fn(*args)
            for entry in self.packed:  # once per decoding step: compare versions only
                attribute, weight, transposed, version = entry
                if weight._version != version:  # assigned since: re-pack
                    setattr(self.graph, attribute, _packed_weight(weight, transposed))
                    entry[3] = weight._version
            return self.graph(*args)


def _packed_weight(weight, transposed):
    """oneDNN's prepacked ``[out, in]`` layout of ``weight`` (``[in, out]``, or already
    ``[out, in]`` when ``transposed``), cached until the weight changes."""
    import torch

    # kept on the weight itself: it lives exactly as long as the weight
    cache = weight.__dict__.setdefault("_kerasformer_packed", {})
    version, packed = cache.get(transposed, (None, None))
    if version != weight._version:
        rows_out = weight if transposed else weight.t()
        packed = torch.ops.mkldnn._reorder_linear_weight(rows_out.detach().contiguous())
        cache[transposed] = (weight._version, packed)
    return packed


def _prepack_matmuls(graph):
    """Rewrite ``graph``'s ``mm(x, W)`` with a float32 CPU weight ``W`` into oneDNN's
    linear on a prepacked weight; return what must be re-packed when weights change.
    Leaves the graph as it is where oneDNN is missing or refuses the weight."""
    import torch

    aten = torch.ops.aten
    if not torch.backends.mkldnn.is_available():
        return []
    transposes = {aten.t.default, aten.permute.default, aten.transpose.int}
    packed = []
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target is not aten.mm.default:
            continue
        weight_arg = source = node.args[1]
        transposed = False
        if source.op == "call_function" and source.target in transposes:
            if source.target is aten.permute.default and list(source.args[1]) != [1, 0]:
                continue
            source, transposed = source.args[0], True
        if source.op != "get_attr":
            continue
        weight = getattr(graph, source.target)
        if weight.dtype != torch.float32 or weight.device.type != "cpu" or weight.dim() != 2:
            continue
        try:
            first = _packed_weight(weight, transposed)
        except RuntimeError:  # oneDNN without this kernel: keep MKL's mm
            continue
        attribute = f"_packed_{len(packed)}"
        graph.register_buffer(attribute, first, persistent=False)
        with graph.graph.inserting_before(node):
            packed_node = graph.graph.get_attr(attribute)
            linear = graph.graph.call_function(torch.ops.mkldnn._linear_pointwise.default,
                                               (node.args[0], packed_node, None, "none", [], ""))
        node.replace_all_uses_with(linear)
        graph.graph.erase_node(node)
        if weight_arg is not source and not weight_arg.users:
            graph.graph.erase_node(weight_arg)
        packed.append([attribute, weight, transposed, weight._version])
    graph.recompile()
    return packed


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


def global_rng_state():
    """The backend's global RNG state as a numpy array, or None where there is none to save.
    Keras' torch dropout draws from torch's global generator when the layer has no explicit
    seed (JAX draws from the layers' seed-generator variables), so an exact resume saves it."""
    if name() == "torch":
        import torch

        return torch.get_rng_state().numpy().copy()
    return None


def set_global_rng_state(state):
    if state is not None and name() == "torch":
        import numpy as np
        import torch

        torch.set_rng_state(torch.from_numpy(np.asarray(state, dtype="uint8")))


# ==================================================================== generative (kerasformer.generative)
# The generative parts' train steps are pure functions of tensors (variable values in,
# gradients out, see kerasformer.generative.training); only their compilation differs.

def jit(fn):
    """``fn``, a pure function of tensors (no variable reads outside a StatelessScope, no
    Python branching on values), compiled with ``jax.jit`` on JAX; ``fn`` itself elsewhere."""
    if name() == "jax":
        import jax

        return jax.jit(fn)
    return fn


# ==================================================================== bert4keras compatibility
# ``from bert4keras.backend import keras, K, search_layer, sequence_masking, ...`` ports as
# ``from kerasformer.backend import ...``: ``K`` (Keras 2's backend functions on keras.ops) lives
# in kerasformer/keras2.py, bert4keras' helpers in kerasformer/backend_compat.py. Imported last:
# they import layers, which import this module.
from kerasformer import keras2 as K  # noqa: E402,F401,N812
from kerasformer.backend_compat import *  # noqa: E402,F401,F403
from kerasformer import keras_compat  # noqa: E402

keras_compat.install()  # bert4keras' file names and nested lists on every keras.Model
