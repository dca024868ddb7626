"""Unit tests of small shared pieces: precision choice, metrics, atomic outputs, models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.lib.metrics import binary_metrics, roc_auc, roc_curve, wilson_interval
from stages.lib.outputs import atomic_dir, atomic_path, write_json
from stages.lib.runtime import resolve_precision


@pytest.mark.parametrize(
    "requested, gpus, flags, expected",
    [
        ("auto", [], {"avx2", "avx512_bf16"}, "mixed_bfloat16"),
        ("auto", [], {"avx2", "amx_bf16"}, "mixed_bfloat16"),
        ("auto", [], {"avx2", "fma", "avx512f"}, "float32"),  # bf16 would be emulated
        ("auto", ["GPU:0"], {"avx2"}, "mixed_float16"),
        ("float32", ["GPU:0"], {"avx512_bf16"}, "float32"),
        ("mixed_bfloat16", [], set(), "mixed_bfloat16"),
    ],
)
def test_precision_auto(requested, gpus, flags, expected):
    assert resolve_precision(requested, gpus=gpus, flags=flags) == expected


def test_wilson_interval_known_values():
    low, high = wilson_interval(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-4) and high == pytest.approx(0.9448, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.round(rng.uniform(size=200) * 0.5 + labels * 0.3, 2)  # with ties
    pos, neg = probs[labels == 1], probs[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(labels, probs) == pytest.approx(pairwise)
    curve = roc_curve(labels, probs)
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1 and curve["fpr"][-1] == 1
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(pairwise)


def test_binary_metrics_counts():
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([0.1, 0.7, 0.8, 0.4, 0.9])
    m = binary_metrics(labels, probs)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["n"] == 5 and m["roc_auc"] == pytest.approx(5 / 6)


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as out:
        (out / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as out:
            (out / "y").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_saved_models_take_raw_pixels_and_reload_safely(tmp_path):
    import keras

    from stages.lib import models

    keras.utils.set_random_seed(0)
    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(48, 48, 3))
    model = models.vgg16_with_head(conv_base, "imagenet", 8, 0.5)
    x = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    again = models.load(tmp_path / "m.keras")
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), rtol=1e-5)
    assert not any(layer.trainable_weights for layer in again.layers if layer.name.startswith("block"))


def preprocessing_model(mode: str):
    import keras

    from stages.lib import models

    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, models.vgg16_preprocessing(inputs, mode))


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_vgg16_preprocessing_layers_equal_keras_preprocess_input(precision):
    """The preprocessing made of Keras layers is keras.applications.vgg16.preprocess_input
    (`imagenet`: RGB to BGR minus the ImageNet mean) and x / 255 (`rescale`), on random
    pixels; under mixed_bfloat16 it computes in bfloat16, as the same arithmetic does there."""
    import keras
    import tensorflow as tf

    from stages.lib.models import IMAGENET_MEAN_BGR

    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    x[0, 0, :2] = (0, 0, 0), (255, 255, 255)
    if precision == "float32":
        expected = {"imagenet": keras.applications.vgg16.preprocess_input(x.copy()), "rescale": x / 255}
    else:
        pixels = tf.cast(x, tf.bfloat16)
        expected = {"imagenet": pixels[..., ::-1] - tf.constant(IMAGENET_MEAN_BGR, tf.bfloat16),
                    "rescale": pixels * tf.constant(1 / 255, tf.bfloat16)}
    try:
        keras.mixed_precision.set_dtype_policy(precision)
        for mode in ("imagenet", "rescale"):
            model = preprocessing_model(mode)
            got = model(x)
            assert got.dtype.name == ("float32" if precision == "float32" else "bfloat16"), mode
            np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)),
                                       np.asarray(tf.cast(expected[mode], tf.float32)), rtol=0, atol=1e-4,
                                       err_msg=mode)
            assert not model.trainable_weights, f"{mode}: the preprocessing must never train"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    with pytest.raises(ValueError, match="must be one of .'imagenet', 'rescale'., got 'caffe'"):
        preprocessing_model("caffe")


def inverted_toy_run(tmp_path, monkeypatch, epochs: int):
    """A tiny compiled classifier whose validation labels are its training labels
    inverted: the better it learns, the worse val_loss gets, so the lowest val_loss comes
    early. Returns (model, make_train_ds, val_ds) for training.fit, run in tmp_path."""
    import keras

    from stages.lib import datasets, models, training

    monkeypatch.chdir(tmp_path)  # fit writes plots/<stage> and data/checkpoints/<stage> here
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.uint8)
    model = models.feature_classifier((4,), dense_units=8, dropout=0.0)
    training.compile_binary(model, 0.05)

    def make_train_ds(start):
        return datasets.training_batches(64, y, 16, 0, epochs, datasets.plain_inputs(x), start)

    return model, make_train_ds, datasets.eval_batches(x, 1 - y, 16)


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path, monkeypatch):
    """Patience 1 must stop long before 20 epochs and keep the weights of the best
    (first) epoch."""
    from stages.lib import training

    model, make_train_ds, val_ds = inverted_toy_run(tmp_path, monkeypatch, epochs=20)
    model, history = training.fit("early", model, make_train_ds, val_ds, epochs=20, early_stopping=1, key="k")
    assert len(history) < 20
    best = min(history, key=lambda r: r["val_loss"])
    restored = model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert restored == pytest.approx(best["val_loss"], rel=1e-4)


def test_restore_best_keeps_the_lowest_val_loss_epoch_across_a_resume(tmp_path, monkeypatch):
    """A run interrupted after 3 of 6 epochs and resumed must still end with the weights
    of the best epoch, which only the checkpoint remembers."""
    from stages.lib import training

    model, make_train_ds, val_ds = inverted_toy_run(tmp_path, monkeypatch, epochs=6)
    _, first = training.fit("best", model, make_train_ds, val_ds, epochs=3, early_stopping=0, key="k", restore_best=True)
    assert len(first) == 3
    assert [p.name for p in (tmp_path / "data/checkpoints/best").glob("best-*")] == [
        f"best-{training.best_epoch(first)}.weights.h5"]
    model, history = training.fit("best", model, make_train_ds, val_ds, epochs=6, early_stopping=0, key="k",
                           restore_best=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    best = training.best_epoch(history)
    assert best <= 3  # an epoch from before the resume
    assert training.restored({"restore_best": True, "early_stopping": 0}, history) == {"restored_epoch": best}
    restored = model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert restored == pytest.approx(history[best - 1]["val_loss"], rel=1e-4)
    assert restored < history[-1]["val_loss"]


def test_without_restore_best_the_last_epoch_is_kept(tmp_path, monkeypatch):
    from stages.lib import training

    model, make_train_ds, val_ds = inverted_toy_run(tmp_path, monkeypatch, epochs=4)
    model, history = training.fit("last", model, make_train_ds, val_ds, epochs=4, early_stopping=0, key="k")
    assert not list((tmp_path / "data/checkpoints/last").glob("best-*"))
    assert training.restored({"restore_best": False, "early_stopping": 0}, history) == {}
    final = model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert final == pytest.approx(history[-1]["val_loss"], rel=1e-4)
