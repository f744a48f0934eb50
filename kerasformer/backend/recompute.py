"""Gradient checkpointing of one layer's call (``build_transformer_model(..., recompute=True)``,
bert4keras' ``recompute_grad``)."""
import keras

from kerasformer.backend.dispatch import name


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
