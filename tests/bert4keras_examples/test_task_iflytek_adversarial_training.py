"""bert4keras' task_iflytek_adversarial_training, ported with the documented two-line change
(the hand-written FGM -> ``kerasformer.training.adversarial_training``)."""
import pytest

from .conftest import assert_trained, run_port


@pytest.fixture(scope="module")
def example(example_root, tiny_bert, port_dir):
    return run_port("task_iflytek_adversarial_training", example_root, port_dir)


def test_trains(example):
    assert_trained(example["model"])


def test_evaluates_and_predicts_to_file(example, example_root, tmp_path):
    assert 0.0 <= example["evaluate"](example["valid_generator"]) <= 1.0
    out = tmp_path / "iflytek_predict.json"
    example["predict_to_file"](str(example_root / "datasets/iflytek/test.json"), str(out))
    assert len(out.read_text().splitlines()) == 2


def test_fgm_as_bert4keras_example(example):
    """bert4keras' example perturbs 'Embedding-Token' by 0.5 * g / ||g|| and updates with the
    gradients at the perturbed embeddings only (kerasformer.training's accumulate=False)."""
    trick = example["model"]._kerasformer_trick
    assert trick.name == "adversarial_training"
    settings = trick.settings
    assert (settings["embedding_name"], settings["epsilon"], settings["accumulate"]) == ("Embedding-Token", 0.5, False)
