"""bert4keras' task_iflytek_adversarial_training, ported with the documented two-line change
(the hand-written FGM -> ``kerasformer.training.adversarial_training``)."""

from .conftest import assert_predicts_to_file, assert_trained, port_fixture


example = port_fixture("task_iflytek_adversarial_training")


def test_trains(example):
    assert_trained(example["model"])


def test_evaluates_and_predicts_to_file(example, example_root, tmp_path):
    assert 0.0 <= example["evaluate"](example["valid_generator"]) <= 1.0
    assert_predicts_to_file(example, example_root / "datasets/iflytek/test.json",
                            tmp_path / "iflytek_predict.json", lines=2)


def test_fgm_as_bert4keras_example(example):
    """bert4keras' example perturbs 'Embedding-Token' by 0.5 * g / ||g|| and updates with the
    gradients at the perturbed embeddings only (kerasformer.training's accumulate=False)."""
    trick = example["model"]._kerasformer_trick
    assert trick.name == "adversarial_training"
    settings = trick.settings
    assert (settings["embedding_name"], settings["epsilon"], settings["accumulate"]) == ("Embedding-Token", 0.5, False)
