"""One call checks a model family (as KerasHub's ``TestCase.run_backbone_test`` /
``run_model_saving_test``), so adding a family is one model file plus a short test file.

A :class:`FamilyCase` names the family, its config and a checkpoint in every format it
loads, the inputs, and the reference outputs (Hugging Face's, or an independent numpy
model of bert4keras' semantics). :func:`run_family_test` then checks, on ONE built model
(tests share one compile per family):

* every checkpoint format loads with nothing unused and gives the reference outputs
  (max abs diff <= ``tol``);
* export round-trips: each format is written, the weights are zeroed, and loading the
  written file gives the same outputs again (1e-6) (a ``'tf'`` export writes exactly the
  checkpoint's own names when ``exported_names`` is given);
* a ``.keras`` save loads back to the same outputs;
* cached decoding equals uncached greedy decoding (families with an LM head: ``decode``);
* other families refuse the checkpoint with a clear error (``wrong_families``).

Each step is also its own function, for families that need only some of them.
"""
import dataclasses
import os
import re

import numpy as np
import pytest

TOL = 1e-4


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


@dataclasses.dataclass
class FamilyCase:
    model: str  # the model key
    config: str  # the config file
    checkpoints: dict  # {format ('tf', 'safetensors' or 'torch'): checkpoint path}
    inputs: list  # numpy model inputs
    expected: list  # the reference outputs, in the model's output order
    options: dict = dataclasses.field(default_factory=dict)  # build_transformer_model keywords
    tol: float = TOL
    exported_names: set = None  # the names a 'tf' export must hold (the checkpoint's own)
    wrong_families: dict = dataclasses.field(default_factory=dict)  # {model key: error regex}
    decode: dict = None  # {'prompts': [...], 'max_new_tokens': n, 'unilm': bool}: LM families
    export_formats: tuple = None  # formats to write and load back (default: the checkpoints')


def build(case, fmt=None):
    """The family object, built from the case's config and its ``fmt`` checkpoint (the
    first format by default)."""
    from kerasformer import build_transformer_model

    fmt = fmt or next(iter(case.checkpoints))
    return build_transformer_model(case.config, case.checkpoints[fmt], model=case.model,
                                   return_keras_model=False, **case.options)


def assert_matches(case, transformer, what):
    from kerasformer.backend import predict

    outputs = as_list(predict(transformer.model, case.inputs))
    assert len(outputs) == len(case.expected), what
    for index, (got, want) in enumerate(zip(outputs, case.expected)):
        diff = max_diff(got, want)
        assert diff <= case.tol, f"{what}: output {index} differs by {diff:.3g}"


def run_checkpoint_test(case, transformer):
    """Every format of the case's checkpoints, loaded into the one built model."""
    for fmt, path in case.checkpoints.items():
        report = transformer.load_weights_from_checkpoint(path)
        assert report.unused == [], f"{fmt}: unused tensors {report.unused[:5]}"
        assert_matches(case, transformer, f"{case.model} from its {fmt} checkpoint")


def run_export_test(case, transformer, tmp_path):
    """Write each format, zero the weights, load what was written: the same outputs (1e-6)."""
    from kerasformer.backend import predict

    files = {"tf": "bert_model.ckpt", "safetensors": "model.safetensors", "torch": "pytorch_model.bin"}
    before = as_list(predict(transformer.model, case.inputs))
    for fmt in case.export_formats or case.checkpoints:
        path = str(tmp_path / f"export-{fmt}" / files[fmt])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        transformer.save_weights_as_checkpoint(path, format=fmt)
        if fmt == "tf" and case.exported_names is not None:
            from kerasformer.checkpoints.tf_bundle import read_tf_checkpoint

            assert set(read_tf_checkpoint(path)) == set(case.exported_names)
        for variable in transformer.model_variables().values():
            variable.assign(np.zeros(variable.shape, variable.dtype))
        transformer.load_weights_from_checkpoint(path)
        after = as_list(predict(transformer.model, case.inputs))
        assert all(max_diff(a, b) <= 1e-6 for a, b in zip(after, before)), f"{fmt} export"


def run_saving_test(case, transformer, tmp_path):
    """``model.save('x.keras')`` and ``keras.saving.load_model`` give the same outputs."""
    import keras

    from kerasformer.backend import predict

    path = str(tmp_path / f"{case.model}.keras")
    transformer.model.save(path)
    loaded = keras.saving.load_model(path)
    for got, want in zip(as_list(predict(loaded, case.inputs)),
                         as_list(predict(transformer.model, case.inputs))):
        assert max_diff(got, want) <= 1e-6
    return loaded


def uncached_greedy(model, prompt, n, unilm=False):
    """bert4keras' way: the whole sequence through the model for every new token."""
    from kerasformer.backend import predict

    ids, segments = list(prompt), [0] * len(prompt)
    for _ in range(n):
        inputs = [np.array([ids], "int32")]
        if len(model.inputs) > 1:
            inputs.append(np.array([segments], "int32"))
        probs = as_list(predict(model, inputs))[-1]
        ids.append(int(probs[0, -1].argmax()))
        segments.append(1 if unilm else 0)
    return ids[len(prompt):]


def run_decoding_test(case, model):
    """Cached decoding (``kerasformer.generate``) equals uncached greedy decoding."""
    from kerasformer import generate

    prompts, n = case.decode["prompts"], case.decode["max_new_tokens"]
    for prompt, tokens in zip(prompts, generate(model, prompts, n)):
        assert tokens == uncached_greedy(model, prompt, n, unilm=case.decode.get("unilm", False))


def run_wrong_family_test(case):
    """Each other family refuses the case's checkpoints with its clear error."""
    from kerasformer import WeightMismatchError, build_transformer_model

    for key, pattern in case.wrong_families.items():
        for path in case.checkpoints.values():
            with pytest.raises(WeightMismatchError) as info:
                build_transformer_model(case.config, path, model=key)
            text = f"{info.value} | {info.value.__cause__ or ''}"
            assert re.search(pattern, text), f"model={key!r}: {text[:300]}"


def run_family_test(case, tmp_path, transformer=None):
    """All the checks above, on one built model (``transformer``, or one built here)."""
    transformer = transformer or build(case)
    run_checkpoint_test(case, transformer)
    run_export_test(case, transformer, tmp_path)
    loaded = run_saving_test(case, transformer, tmp_path)
    if case.decode is not None:
        run_decoding_test(case, transformer.model)
        run_decoding_test(case, loaded)  # the cached engine works on a reloaded model too
    run_wrong_family_test(case)
    return transformer
