"""Backend dispatch: what genuinely differs per Keras backend (compiling a forward function,
turning tensors into numpy, switching off autograd, in-place cache writes, random noise inside
a compiled loop, the global RNG state), so model and layer code never asks which backend it
runs on."""
import collections
import contextlib
import math

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
        from kerasformer.backend.torch_graph import traced

        graphs, seen = collections.OrderedDict(), {}  # signature -> traced graph / calls so far
        traced_for = [(), ()]  # the weights the graphs were traced with: ids, and the variables

        def forward(inputs):
            # A graph holds the weights it was traced with as constants: a model whose
            # variables changed since (``quantize``, ``enable_lora``) must be traced again
            weights = model.weights
            if tuple(map(id, weights)) != traced_for[0]:
                graphs.clear()
                seen.clear()
                traced_for[:] = tuple(map(id, weights)), tuple(weights)  # kept alive: ids stay unique
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


def model_forward(model):
    """``model``'s :func:`compiled_forward`, made once and kept on the model (a cycle the
    garbage collector frees with it, where a global table keyed by model would keep it
    alive), so repeated calls do not retrace."""
    forward = getattr(model, "_kerasformer_forward", None)
    if forward is None:
        forward = compiled_forward(model)
        model._kerasformer_forward = forward
    return forward


def predict(model, inputs):
    """Run ``model`` for inference and return numpy, without ``Model.predict``'s per-call
    overhead (see :func:`model_forward`)."""
    return to_numpy(model_forward(model)(inputs))


def layer_norm(x, gamma, beta, epsilon):
    """LayerNorm over the last axis with scale and offset. Torch: one ``F.layer_norm`` in
    ``x``'s own dtype (its CPU kernel accumulates bfloat16 in float32 and rounds once, at
    the output), where ``keras.ops.layer_normalization`` casts a bfloat16 input to
    float32 and the result back: two more passes over the tensor, a fifth of a bfloat16
    BERT layer's time. The same kernel in float32."""
    if name() == "torch":
        import torch

        x = keras.ops.convert_to_tensor(x)
        gamma, beta = (keras.ops.convert_to_tensor(t) for t in (gamma, beta))
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta, epsilon)
    return keras.ops.layer_normalization(x, gamma, beta, epsilon=epsilon)


def int8_matmul():
    """``f(a, b)``: the exact int32 product of int8 ``a`` ``[..., k]`` and int8 ``b`` ``[k, n]``,
    where the backend has a fast integer kernel and no gradient is being recorded; None
    elsewhere, and the caller runs Keras' own int8 ``Dense``. Torch: ``torch._int_mm``
    (oneDNN's s8 x s8 -> s32 on CPU, ~4x a float32 matmul here) instead of the int32
    ``matmul`` Keras' int8 layer reaches, which has no BLAS behind it (5x slower than
    float32). Integer sums are exact, so the result is Keras' to the bit. Not under
    autograd: ``_int_mm`` has no derivative, and Keras' int8 layer has its own gradient."""
    if name() != "torch":
        return None
    import torch

    if torch.is_grad_enabled():
        return None

    def matmul(a, b):
        leading = a.shape[:-1]
        out = torch._int_mm(a.reshape(-1, a.shape[-1]), b)
        return out.reshape(*leading, b.shape[-1])

    return matmul


def fused_attention():
    """``f(q, k, v, bias, scale)`` -> ``softmax(q k^T * scale + bias) v`` over
    ``[batch, heads, length, size]`` tensors (``bias`` additive, broadcastable to the
    scores, or None) in one fused kernel, where the backend has one; None where it has not,
    and the caller computes the same with ``keras.ops``.

    Torch: ``scaled_dot_product_attention``. On CPU its flash kernel reads the heads'
    strided views as they are (no copies), never holds the ``[q_len, k_len]`` scores
    in memory, and accumulates the softmax in float32, also for bfloat16 inputs. XLA on
    CPU has no such kernel (``jax.nn.dot_product_attention`` is the same einsums), so JAX
    keeps the caller's ops, which it fuses itself."""
    if name() != "torch":
        return None
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kerasformer.backend.train_step import computing_gradients  # (train_step imports this module)

    def attend(q, k, v, bias, scale):
        if torch.is_grad_enabled() and computing_gradients():
            # inside kerasformer's value_and_grad (the training tricks: gradient penalty,
            # adversarial training) a gradient may itself be differentiated
            # (create_graph=True), and the CPU flash kernel's backward has no derivative:
            # the math kernel is differentiable twice. Keras' own fit keeps the flash kernel.
            with sdpa_kernel(SDPBackend.MATH):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)

    return attend


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


def jit(fn):
    """``fn``, a pure function of tensors (no variable reads outside a StatelessScope, no
    Python branching on values), compiled with ``jax.jit`` on JAX; ``fn`` itself elsewhere."""
    if name() == "jax":
        import jax

        return jax.jit(fn)
    return fn


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
