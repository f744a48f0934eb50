"""Fused optimizer updates: one ``torch._foreach_*`` op per stage over all variables instead of
Keras' loop of ``update_step`` (about 15 small ops per variable, each a dispatch and, on a
loaded CPU, a thread wake-up). Keras does this itself only for the exact classes
``keras.optimizers.Adam`` and friends; :mod:`kerasformer.optimizers` routes its subclasses here
(see ``_fused_or_loop`` there), and falls back to the loop wherever this returns False.

Each function computes what the ``update_step`` it replaces computes, in the same order of
operations (tests/test_optimizers.py compares them on torch); JAX compiles the loop into one
program already, so there nothing is fused.
"""
from keras import ops

from kerasformer.backend import private
from kerasformer.backend.dispatch import name


def fused_update_step(optimizer, kind, grads, variables, learning_rate):
    """Apply ``optimizer``'s update of ``kind`` ('keras_adam': ``keras.optimizers.Adam.
    update_step``; 'bert4keras_adam': ``kerasformer.optimizers.Adam.update_step``) to all
    ``variables`` at once. Returns False (nothing done) where there is no fused version: any
    backend but torch, AMSGrad."""
    if name() != "torch" or (kind == "keras_adam" and optimizer.amsgrad):
        return False
    import torch

    update = {"keras_adam": _keras_adam, "bert4keras_adam": _bert4keras_adam}[kind]
    groups = {}  # the scalars (lr, bias corrections) are cast to each variable dtype, as update_step does
    for grad, variable in zip(grads, variables):
        groups.setdefault(variable.dtype, []).append((grad, variable))
    with torch.no_grad():
        for dtype, pairs in groups.items():
            index = [private.get(optimizer, "_get_variable_index")(v) for _, v in pairs]
            values = [v.value for _, v in pairs]
            grads = [g.to(value.dtype) for (g, _), value in zip(pairs, values)]
            update(optimizer, dtype, ops.cast(learning_rate, dtype), index, values, grads)
    return True


def _keras_adam(optimizer, dtype, lr, index, values, grads):
    import torch

    step = ops.cast(optimizer.iterations + 1, dtype)
    beta_1_power = ops.power(ops.cast(optimizer.beta_1, dtype), step)
    beta_2_power = ops.power(ops.cast(optimizer.beta_2, dtype), step)
    alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m = [private.get(optimizer, "_momentums")[i].value for i in index]
    v = [private.get(optimizer, "_velocities")[i].value for i in index]
    # m += (g - m) * (1 - b1); v += (g^2 - v) * (1 - b2): exactly lerp's formula for weights < 0.5
    torch._foreach_lerp_(m, grads, 1 - optimizer.beta_1)
    torch._foreach_lerp_(v, torch._foreach_mul(grads, grads), 1 - optimizer.beta_2)
    # w -= m * alpha / (sqrt(v) + epsilon)
    step_size = torch._foreach_mul(m, alpha)
    denominator = torch._foreach_sqrt(v)
    torch._foreach_add_(denominator, optimizer.epsilon)
    torch._foreach_div_(step_size, denominator)
    torch._foreach_sub_(values, step_size)


def _bert4keras_adam(optimizer, dtype, lr, index, values, grads):
    import torch

    m = [optimizer._m[i].value for i in index]
    v = [optimizer._v[i].value for i in index]
    # m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g^2
    torch._foreach_mul_(m, optimizer.beta_1)
    torch._foreach_add_(m, grads, alpha=1.0 - optimizer.beta_1)
    torch._foreach_mul_(v, optimizer.beta_2)
    torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1.0 - optimizer.beta_2)
    if optimizer.bias_correction:
        step = ops.cast(optimizer.iterations + 1, dtype)
        m_hat = torch._foreach_div(m, 1.0 - ops.power(ops.cast(optimizer.beta_1, dtype), step))
        v_hat = torch._foreach_div(v, 1.0 - ops.power(ops.cast(optimizer.beta_2, dtype), step))
        torch._foreach_sqrt_(v_hat)
        denominator = v_hat
    else:
        m_hat, denominator = m, torch._foreach_sqrt(v)
    # w -= lr * m_hat / (sqrt(v_hat) + epsilon)
    torch._foreach_add_(denominator, optimizer.epsilon)
    step_size = torch._foreach_mul(m_hat, lr)
    torch._foreach_div_(step_size, denominator)
    torch._foreach_sub_(values, step_size)

