"""Every private (``_``-prefixed) Keras or torch attribute kerasformer relies on, in one place.

Keras 3 and torch expose no public way to do a few things kerasformer needs (a custom train
step that still feeds Keras' loss tracker and metrics, walking a functional graph, oneDNN's
prepacked matmuls, ...). Such attributes may change in any release, so no other module
touches them directly: they go through :func:`get` / :func:`assign` (instance attributes) or
:func:`require` (methods that kerasformer's subclasses override or call through ``super()``),
and an attribute that has gone away raises a :class:`KerasformerError` naming it, the
installed version and the version this table was written against -- instead of an
``AttributeError`` deep inside a train step, or a subclass override that silently no longer
runs. ``tests/test_backend.py`` checks the whole table against the installed versions.
"""
import importlib.metadata

from kerasformer.errors import KerasformerError

# the versions the attributes below were read from (and tested with)
WRITTEN_FOR = {"keras": "3.15", "torch": "2.13"}

# attribute -> (library, where it lives)
ATTRIBUTES = {
    # functional graphs (search_layer, gradient_penalty, utils.layer_outputs)
    "_keras_history": ("keras", "KerasTensor"),
    "_inbound_nodes": ("keras", "Layer"),
    "_flatten_layers": ("keras", "Layer"),
    "_nodes_by_depth": ("keras", "Functional"),
    "_run_through_graph": ("keras", "Functional"),
    # the train step of kerasformer.training (fed to Keras' own loss tracker and metrics)
    "_call_has_training_arg": ("keras", "Layer"),
    "_compute_loss_has_training_arg": ("keras", "Trainer"),
    "_losses_override": ("keras", "Layer"),
    "_loss_tracker": ("keras", "Trainer"),
    "_update_metrics_variables": ("keras", "JAXTrainer"),
    # a failed fit / predict gives the variables their values back (models.inputs)
    "_value": ("keras", "Variable"),
    "_jax_state": ("keras", "JAXTrainer (during fit)"),
    # kerasformer.optimizers' extensions override or read these
    "_iterations": ("keras", "Optimizer"),
    "_trainable_variables": ("keras", "Optimizer"),
    "_model_variables_moving_average": ("keras", "Optimizer"),
    "_get_current_learning_rate": ("keras", "Optimizer"),
    "_get_variable_index": ("keras", "Optimizer"),
    "_use_weight_decay": ("keras", "Optimizer"),
    "_backend_update_step": ("keras", "Optimizer"),
    "_backend_apply_gradients": ("keras", "Optimizer"),
    "_clip_gradients": ("keras", "Optimizer"),
    # Adam's slots, read by the fused torch update (backend.fused_optimizers)
    "_momentums": ("keras", "Adam"),
    "_velocities": ("keras", "Adam"),
    # the torch graph compiler (backend.torch_graph)
    "_version": ("torch", "Tensor"),
    "_reorder_linear_weight": ("torch", "torch.ops.mkldnn"),
    "_linear_pointwise": ("torch", "torch.ops.mkldnn"),
    "_allow_non_fake_inputs": ("torch", "make_fx (an argument)"),
}


def installed(library):
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def changed(attribute):
    """The error for a private attribute that the installed library no longer has."""
    library, owner = ATTRIBUTES[attribute]
    return KerasformerError(
        f"kerasformer relies on the private attribute {attribute} of {library}'s {owner}, which the "
        f"installed {library} {installed(library)} does not have; kerasformer was written for "
        f"{library} {WRITTEN_FOR[library]}: install that version, or a kerasformer release "
        f"that supports {library} {installed(library)}")


def _known(attribute):
    if attribute not in ATTRIBUTES:  # a use that bypasses the table would escape the check
        raise KeyError(f"private attribute {attribute!r} is not listed in kerasformer.backend.private")


def get(obj, attribute):
    """``obj.<attribute>`` for a private attribute from :data:`ATTRIBUTES`."""
    _known(attribute)
    try:
        return getattr(obj, attribute)
    except AttributeError:
        raise changed(attribute) from None


def optional(obj, attribute):
    """``obj.<attribute>``, or None where ``obj`` does not have it (yet): for attributes whose
    absence is itself meaningful, such as the JAX trainer's state outside ``fit``."""
    _known(attribute)
    return getattr(obj, attribute, None)


def assign(obj, attribute, value):
    """``obj.<attribute> = value``, only where ``obj`` already has the attribute (a write to
    a name the library no longer reads would be silently ignored)."""
    get(obj, attribute)
    setattr(obj, attribute, value)


def require(cls, *attributes):
    """``cls`` after checking that it has ``attributes`` (methods kerasformer overrides or calls
    through ``super()``: an override of a method the library renamed would never run)."""
    for attribute in attributes:
        _known(attribute)
        if not hasattr(cls, attribute):
            raise changed(attribute)
    return cls


def keyword(function, argument):
    """``argument``, a private keyword argument of ``function``, after checking that
    ``function`` still takes it."""
    import inspect

    _known(argument)
    if argument not in inspect.signature(function).parameters:
        raise changed(argument)
    return argument


def sublayers(layer):
    """Every layer inside ``layer`` (a layer or a model, nested ones included), itself first."""
    return list(get(layer, "_flatten_layers")(include_self=True, recursive=True))


def keras_history(x):
    """The ``(layer, node_index, tensor_index)`` a symbolic tensor comes from; None for
    anything else (a concrete tensor carries no graph)."""
    import keras

    return get(x, "_keras_history") if isinstance(x, keras.KerasTensor) else None


def check():
    """Check every attribute of :data:`ATTRIBUTES` against the installed libraries (on
    instances where the attribute only exists on one). Raises :func:`changed`'s error."""
    import keras

    inputs = keras.Input((2,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    model.compile(loss="mse", optimizer="adam")
    optimizer = keras.optimizers.Adam(use_ema=True)
    optimizer.build(model.trainable_variables)
    owners = {"KerasTensor": inputs, "Layer": dense, "Functional": model, "Trainer": model,
              "Optimizer": optimizer, "Variable": dense.kernel}
    if keras.backend.backend() == "jax":
        owners["JAXTrainer"] = model
    try:
        import torch

        owners["Tensor"] = torch.zeros(1)
        owners["torch.ops.mkldnn"] = torch.ops.mkldnn
        from torch.fx.experimental.proxy_tensor import make_fx

        keyword(make_fx, "_allow_non_fake_inputs")
    except ImportError:
        pass
    for attribute, (_, owner) in ATTRIBUTES.items():
        if owner in owners:
            get(owners[owner], attribute)
