"""The torch graph compiler: a function traced once into an FX graph of aten ops, its
matrix products with float32 weights run on oneDNN's prepacked kernels (CPU). On JAX a traced
function is the function itself: callers run inside an enclosing ``jax.jit`` program."""
import warnings

import keras

from kerasformer.backend import private
from kerasformer.backend.dispatch import name


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

                # the weights are real tensors, not fake ones: they become the graph's constants
                real_weights = {private.keyword(make_fx, "_allow_non_fake_inputs"): True}
                try:  # fake tensors: nothing is computed, and a host read of a value raises
                    self.graph = make_fx(lambda *a: self.fn(*a), tracing_mode="fake", **real_weights)(*args)
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
                current = private.get(weight, "_version")
                if current != version:  # assigned since: re-pack
                    setattr(self.graph, attribute, _packed_weight(weight, transposed))
                    entry[3] = current
            return self.graph(*args)


def _packed_weight(weight, transposed):
    """oneDNN's prepacked ``[out, in]`` layout of ``weight`` (``[in, out]``, or already
    ``[out, in]`` when ``transposed``), cached until the weight changes."""
    import torch

    # kept on the weight itself: it lives exactly as long as the weight
    cache = weight.__dict__.setdefault("_kerasformer_packed", {})
    version, packed = cache.get(transposed, (None, None))
    current = private.get(weight, "_version")
    if version != current:
        rows_out = weight if transposed else weight.t()
        packed = private.get(torch.ops.mkldnn, "_reorder_linear_weight")(rows_out.detach().contiguous())
        cache[transposed] = (current, packed)
    return packed


def _only_user(node):
    return next(iter(node.users)) if len(node.users) == 1 else None


def _epilogue(graph, mm, weight, transposed):
    """What follows ``mm`` that oneDNN's linear computes in the same pass (its output read
    once instead of up to four times). Returns ``(chain, reshape, bias, gelu, residual)``:
    ``chain`` the nodes from ``mm`` to the last one folded in; ``reshape`` a view of the
    product back to the caller's rank (``matmul`` on a 3-D input traces as view, mm,
    view); ``bias`` a 1-D constant added next; ``gelu`` the approximation ('none' is erf,
    or 'tanh') of a GELU applied after the bias; ``residual`` a tensor of the output's
    shape added last (the residual connection after an output projection). Anything
    absent is None."""
    import torch

    aten = torch.ops.aten
    chain = [mm]
    reshape = bias = gelu = residual = None

    def added(node):  # the other operand of a plain ``add(node, other)`` that is node's only user
        add = _only_user(node)
        if add is None or add.target is not aten.add.Tensor or add.kwargs or len(add.args) != 2:
            return None, None
        other = add.args[1] if add.args[0] is node else add.args[0]
        return (add, other) if isinstance(other, torch.fx.Node) and other is not node else (None, None)

    user = _only_user(mm)
    if user is not None and user.target in (aten.view.default, aten._unsafe_view.default):
        reshape = user
        chain.append(user)
    add, other = added(chain[-1])
    value = getattr(graph, other.target, None) if add is not None and other.op == "get_attr" else None
    if (isinstance(value, torch.Tensor) and value.dtype == weight.dtype
            and value.shape == (weight.shape[0 if transposed else 1],)):
        bias = other
        chain.append(add)
        act = _only_user(add)
        if (act is not None and act.target is aten.gelu.default and act.args[0] is add
                and act.kwargs.get("approximate", "none") in ("none", "tanh")):
            gelu = act.kwargs.get("approximate", "none")
            chain.append(act)
    if gelu is None:
        add, other = added(chain[-1])
        mine, theirs = chain[-1].meta.get("val"), getattr(other, "meta", {}).get("val")
        if (add is not None and isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor)
                and theirs.shape == mine.shape and theirs.dtype == mine.dtype):
            residual = other
            chain.append(add)
    return chain, reshape, bias, gelu, residual


def _prepack_matmuls(graph):
    """Rewrite ``graph``'s ``mm(x, W)`` with a float32 or bfloat16 CPU weight ``W`` into
    oneDNN's linear on a prepacked weight, with the bias add, GELU or residual add that
    follows folded into it (see :func:`_epilogue`); return what must be re-packed when
    weights change. Leaves the graph as it is where oneDNN is missing or refuses the
    weight."""
    import torch

    aten = torch.ops.aten
    if not torch.backends.mkldnn.is_available():
        return []
    linear_pointwise = private.get(torch.ops.mkldnn, "_linear_pointwise")
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
        weight, x = getattr(graph, source.target), node.args[0]
        if (weight.dtype not in (torch.float32, torch.bfloat16) or weight.device.type != "cpu"
                or weight.dim() != 2 or x.meta["val"].dtype != weight.dtype):
            continue
        try:
            first = _packed_weight(weight, transposed)
        except RuntimeError:  # oneDNN without this kernel: keep MKL's mm
            continue
        attribute = f"_packed_{len(packed)}"
        graph.register_buffer(attribute, first, persistent=False)
        chain, reshape, bias, gelu, residual = _epilogue(graph, node, weight, transposed)
        last = chain[-1]
        with graph.graph.inserting_before(last):  # every operand is defined by then
            packed_node = graph.graph.get_attr(attribute)
            bias_node = graph.graph.get_attr(bias.target) if bias is not None else None
            if residual is not None:  # oneDNN adds a 2-D ``other`` of the product's shape
                rows = graph.graph.call_function(aten.reshape.default, (residual, list(node.meta["val"].shape)))
                result = graph.graph.call_function(linear_pointwise.binary, (x, rows, packed_node, bias_node, "add"))
            else:
                result = graph.graph.call_function(
                    linear_pointwise.default, (x, packed_node, bias_node, "gelu" if gelu else "none", [], gelu or ""))
            if reshape is not None:
                result = graph.graph.call_function(reshape.target, (result, *reshape.args[1:]))
        last.replace_all_uses_with(result)
        for folded in reversed(chain):
            graph.graph.erase_node(folded)
        for unused in (weight_arg, bias):
            if unused is not None and unused is not source and not unused.users:
                graph.graph.erase_node(unused)
        packed.append([attribute, weight, transposed, private.get(weight, "_version")])
    graph.recompile()
    return packed
