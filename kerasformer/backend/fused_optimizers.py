"""Fused optimizer updates: torch's fused Adam kernel (``torch._fused_adam_``: one pass over
each variable, all variables in one call) instead of Keras' loop of ``update_step`` (about 15
small ops per variable, each a dispatch and, with several threads on a loaded CPU, a thread
barrier). Keras fuses only the exact classes ``keras.optimizers.Adam`` and friends (with
``_foreach`` ops: still 8 passes, each a barrier); :mod:`kerasformer.optimizers` routes its
subclasses here (see ``_fused_or_loop`` there) and falls back to the loop wherever this
returns False.

The kernel computes ``m = lerp(m, g, 1 - b1)``, ``v = b2 * v + (1 - b2) * g^2`` and
``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``: bert4keras' Adam as it is,
and Keras' Adam (epsilon added to the *uncorrected* ``sqrt(v)``) with ``eps / sqrt(1 - b2^t)``
in place of ``eps``; ``bias_correction=False`` is the step ``t = inf``. The same update as
the loop up to float32 rounding (tests/test_optimizers.py compares them on torch). JAX
compiles the loop into one program already, so there nothing is fused.
"""
import math

from kerasformer.backend import private
from kerasformer.backend.dispatch import name


def fused_update_step(optimizer, kind, grads, variables, learning_rate):
    """Apply ``optimizer``'s update of ``kind`` ('keras_adam': ``keras.optimizers.Adam.
    update_step``; 'bert4keras_adam': ``kerasformer.optimizers.Adam.update_step``) to all
    ``variables`` at once. Returns False (nothing done) where there is no fused version: any
    backend but torch, a torch without the kernel, AMSGrad."""
    if name() != "torch" or (kind == "keras_adam" and optimizer.amsgrad):
        return False
    import torch

    if not hasattr(torch, "_fused_adam_"):
        return False
    if not variables:
        return True
    index = [private.get(optimizer, "_get_variable_index")(v) for v in variables]
    if kind == "keras_adam":
        m, v = private.get(optimizer, "_momentums"), private.get(optimizer, "_velocities")
    else:
        m, v = optimizer._m, optimizer._v
    step = float(optimizer.iterations) + 1.0
    epsilon = float(optimizer.epsilon)
    if kind == "keras_adam":
        epsilon /= math.sqrt(1.0 - float(optimizer.beta_2) ** step)
    elif not optimizer.bias_correction:
        step = math.inf  # 1 - b^inf = 1: no correction
    values = [variable.value for variable in variables]
    with torch.no_grad():
        torch._fused_adam_(values, [g.to(x.dtype) for g, x in zip(grads, values)],
                           [m[i].value for i in index], [v[i].value for i in index], [],
                           [torch.tensor(step, dtype=torch.float32)] * len(values),
                           lr=float(learning_rate), beta1=float(optimizer.beta_1),
                           beta2=float(optimizer.beta_2), weight_decay=0.0, eps=epsilon,
                           amsgrad=False, maximize=False)
    return True
