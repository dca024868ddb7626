"""Grad-CAM finds the evidence where it is: a tiny convnet trained on images whose class
pattern sits in the top-right corner must light up that corner; and the heatmaps work on
the study's VGG16 models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from stages.lib import models
from stages.lib.gradcam import chain_layers, grad_cam, last_conv_layer

SIZE = 32
HALF = SIZE // 2


def corner_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise everywhere; in the top-right quadrant a striped patch, vertical stripes for
    dogs and horizontal for cats. Top-right, not top-left: a transposed heatmap would fail."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(127, 30, (n, SIZE, SIZE, 3))
    y, x = np.mgrid[0:12, 0:12]
    for image, label in zip(images, labels):
        wave = np.sin(2 * np.pi * ((x if label else y) / rng.uniform(3, 5) + rng.uniform()))
        image[2:14, HALF + 2:HALF + 14] = 127 + 110 * wave[..., None]
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def corner_model():
    """Chollet's pattern (conv, pool, ..., flatten, dense, sigmoid) in miniature: ~2 s."""
    keras.utils.set_random_seed(0)
    images, labels = corner_images(512, seed=0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.MaxPooling2D(2)(layers.Conv2D(8, 3, activation="relu")(x))
    x = layers.MaxPooling2D(2)(layers.Conv2D(16, 3, activation="relu")(x))
    x = layers.Conv2D(16, 3, activation="relu", name="last_conv")(x)
    model = keras.Model(inputs, models.sigmoid_output(layers.Flatten()(x)))
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=4, batch_size=32, verbose=0)
    return model


def quadrant_contrast(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per heatmap: mean over the pattern's quadrant, mean over the other three."""
    inside = heatmaps[:, :HALF, HALF:].mean(axis=(1, 2))
    outside = (heatmaps.sum(axis=(1, 2)) - heatmaps[:, :HALF, HALF:].sum(axis=(1, 2))) / (SIZE * SIZE * 3 / 4)
    return inside, outside


def test_heatmap_is_brightest_where_the_class_pattern_is(corner_model):
    images, labels = corner_images(64, seed=1)
    heatmaps, p_positive = grad_cam(corner_model, images, batch_size=24)  # batches of 24, 24, 16
    assert ((p_positive >= 0.5) == labels).mean() > 0.9, "the tiny model did not learn the pattern"
    np.testing.assert_allclose(p_positive, corner_model.predict(images, verbose=0).reshape(-1), atol=1e-5)
    assert heatmaps.shape == (64, SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    inside, outside = quadrant_contrast(heatmaps)
    assert (inside > outside).mean() >= 0.9
    assert inside.mean() > 2 * outside.mean()
    # The peak of most heatmaps sits in the pattern's quadrant.
    peaks = np.array([np.unravel_index(h.argmax(), h.shape) for h in heatmaps])
    assert ((peaks[:, 0] < HALF) & (peaks[:, 1] >= HALF)).mean() >= 0.9


def test_saturated_predictions_get_the_same_heatmap(corner_model):
    # The same model with its log-odds z multiplied by 100: same answers, same evidence, but
    # P(positive) is exactly 1.0 or 0.0 in float32, where the gradient of P vanishes; that of z
    # does not, and per-image normalisation makes the heatmap independent of the scale.
    images, _ = corner_images(32, seed=2)
    sure = keras.models.clone_model(corner_model)
    sure.set_weights(corner_model.get_weights())
    kernel, bias = sure.get_layer(models.OUTPUT_LAYER).get_weights()
    sure.get_layer(models.OUTPUT_LAYER).set_weights([100 * kernel, 100 * bias])
    heatmaps, p_positive = grad_cam(corner_model, images)
    sure_heatmaps, sure_p_positive = grad_cam(sure, images)
    assert np.isin(sure_p_positive, (0.0, 1.0)).mean() > 0.9, "expected saturated predictions"
    np.testing.assert_array_equal(sure_p_positive >= 0.5, p_positive >= 0.5)
    np.testing.assert_allclose(sure_heatmaps, heatmaps, atol=1e-4)


def test_explaining_the_other_class_lights_up_other_places(corner_model):
    images, _ = corner_images(16, seed=3)
    predicted, p_positive = grad_cam(corner_model, images)
    chosen = (p_positive >= 0.5).astype(int)
    same, _ = grad_cam(corner_model, images, classes=chosen)
    np.testing.assert_allclose(same, predicted, atol=1e-6)
    other, _ = grad_cam(corner_model, images, classes=1 - chosen)
    assert np.abs(other - predicted).max() > 0.5  # opposite gradient sign, different map
    with pytest.raises(ValueError, match="classes has 3 entries for 16 images"):
        grad_cam(corner_model, images, classes=chosen[:3])


def test_named_layer_and_bad_layer(corner_model):
    images, _ = corner_images(4, seed=4)
    assert last_conv_layer(corner_model) == "last_conv"
    first_conv = next(layer.name for layer in corner_model.layers if isinstance(layer, layers.Conv2D))
    heatmaps, _ = grad_cam(corner_model, images, layer_name=first_conv)
    assert heatmaps.shape == (4, SIZE, SIZE)
    with pytest.raises(ValueError, match="no layer 'block5_conv3'.*last_conv"):
        grad_cam(corner_model, images, layer_name="block5_conv3")
    with pytest.raises(ValueError, match="RGB images"):
        grad_cam(corner_model, images[..., 0])


def test_branching_model_is_refused():
    inputs = keras.Input((SIZE, SIZE, 3))
    a = layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = layers.GlobalAveragePooling2D()(layers.Add()([a, b]))
    model = keras.Model(inputs, models.sigmoid_output(x))
    with pytest.raises(ValueError, match="not a flat chain"):
        grad_cam(model, np.zeros((2, SIZE, SIZE, 3), np.uint8))


def test_no_conv_layer_is_refused():
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, models.sigmoid_output(layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no convolutional layer"):
        grad_cam(model, np.zeros((1, SIZE, SIZE, 3), np.uint8))


@pytest.mark.parametrize("nested", [False, True], ids=["vgg16_with_head", "nested_vgg16_extractor"])
def test_vgg16_models(nested):
    """The study's VGG16 models with random-init weights at 48 px (block5_conv3 is 3x3 there):
    the flat chain of train_aug_frozen and finetune, and a model holding VGG16 as a nested
    sub-model, as a raw-pixels train_feature_clf may."""
    keras.utils.set_random_seed(1)
    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(48, 48, 3))
    if nested:
        inputs = keras.Input((48, 48, 3))
        model = keras.Model(inputs, models.dense_head(models.vgg16_extractor(conv_base, "imagenet")(inputs), 16, 0.5))
        assert any(isinstance(layer, keras.Model) for layer in model.layers)
    else:
        model = models.vgg16_with_head(conv_base, "imagenet", 16, 0.5)
    assert last_conv_layer(model) == "block5_conv3"
    assert chain_layers(model)[0].name == "vgg16_preprocessing"
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    heatmaps, p_positive = grad_cam(model, images)
    assert heatmaps.shape == (3, 48, 48)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1 and np.isfinite(heatmaps).all()
    np.testing.assert_allclose(p_positive, model.predict(images, verbose=0).reshape(-1), atol=1e-5)
