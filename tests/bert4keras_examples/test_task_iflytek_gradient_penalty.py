"""bert4keras' task_iflytek_gradient_penalty, ported with the documented two-line change
(``loss_with_gradient_penalty`` -> ``kerasformer.training.gradient_penalty``)."""
import pytest

from .conftest import assert_predicts_to_file, assert_trained, first_batch, port_fixture


example = port_fixture("task_iflytek_gradient_penalty")


def test_trains(example):
    assert_trained(example["model"])


def test_evaluates_and_predicts_to_file(example, example_root, tmp_path):
    assert 0.0 <= example["evaluate"](example["valid_generator"]) <= 1.0
    assert_predicts_to_file(example, example_root / "datasets/iflytek/test.json",
                            tmp_path / "iflytek_predict.json", lines=2)


def test_penalty_as_bert4keras_example(example):
    """loss + 0.5 * epsilon * ||d loss / d E||^2 with epsilon=1 on 'Embedding-Token'."""
    trick = example["model"]._kerasformer_trick
    assert trick.name == "gradient_penalty"
    assert (trick.settings["epsilon"], trick.settings["embedding_name"]) == (1, "Embedding-Token")


# bert4keras' own loss, verbatim (the port deletes it)
def sparse_categorical_crossentropy(y_true, y_pred):
    """自定义稀疏交叉熵
    这主要是因为keras自带的sparse_categorical_crossentropy不支持求二阶梯度。
    """
    from kerasformer.backend import K

    y_true = K.reshape(y_true, K.shape(y_pred)[:-1])
    y_true = K.cast(y_true, 'int32')
    y_true = K.one_hot(y_true, K.shape(y_pred)[-1])
    return K.categorical_crossentropy(y_true, y_pred)


def loss_with_gradient_penalty(y_true, y_pred, epsilon=1):
    """带梯度惩罚的loss
    """
    from kerasformer.backend import K, search_layer

    loss = K.mean(sparse_categorical_crossentropy(y_true, y_pred))
    embeddings = search_layer(y_pred, 'Embedding-Token').embeddings
    gp = K.sum(K.gradients(loss, [embeddings])[0].values**2)
    return loss + 0.5 * epsilon * gp


def test_unported_loss_is_a_clear_error(example):
    """The example's own loss_with_gradient_penalty (K.gradients inside a loss) cannot work in
    Keras 3: it must fail with an error that names the replacement, never train silently.
    (Last in this file: it recompiles the example's model.)"""
    model = example["model"]
    model.compile(loss=loss_with_gradient_penalty, optimizer=example["Adam"](2e-5))
    x, y = first_batch(example["train_generator"])
    with pytest.raises(Exception, match="gradient_penalty"):
        model.train_on_batch(x, y)
