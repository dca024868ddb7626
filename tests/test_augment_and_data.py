"""Augmentation, input pipelines and the augmentation bank."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from stages.lib import datasets
from stages.lib.augment import N_UNIFORMS, augment

NO_AUG = {"rotation": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0,
          "horizontal_flip": False, "fill_mode": "nearest"}
CHOLLET = {"rotation": 40, "width_shift": 0.2, "height_shift": 0.2, "shear": 0.2, "zoom": 0.2,
           "horizontal_flip": True, "fill_mode": "nearest"}


def images(n=6, size=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_zero_ranges_are_the_identity():
    x = images()
    out = augment(x, tf.random.uniform([len(x), N_UNIFORMS]), NO_AUG).numpy()
    np.testing.assert_allclose(out, x.astype(np.float32), atol=1e-3)


def test_flip_mirrors_exactly_when_drawn():
    x = images(2)
    uniforms = np.full((2, N_UNIFORMS), 0.5, np.float32)  # 0.5 -> no rotation, shift, ...
    uniforms[0, 6], uniforms[1, 6] = 0.1, 0.9  # flip the first image only
    out = augment(x, uniforms, {**NO_AUG, "horizontal_flip": True}).numpy()
    np.testing.assert_allclose(out[0], x[0, :, ::-1].astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(out[1], x[1].astype(np.float32), atol=1e-3)


def test_shift_moves_content_by_the_drawn_fraction():
    x = np.zeros((1, 20, 20, 3), np.uint8)
    x[0, 10, 10] = 255
    uniforms = np.full((1, N_UNIFORMS), 0.5, np.float32)
    uniforms[0, 1] = 1.0  # x shift = +1 * 0.1 * 20 = 2 px: output(x) = input(x + 2)
    out = augment(x, uniforms, {**NO_AUG, "width_shift": 0.1}).numpy()
    assert out[0, 10, 8, 0] == pytest.approx(255, abs=1e-3)


def test_augmentation_is_a_function_of_its_uniforms():
    x, u = images(), tf.random.uniform([6, N_UNIFORMS], seed=1)
    a, b = augment(x, u, CHOLLET).numpy(), augment(x, u, CHOLLET).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, x)  # and it does change the images


def collect(ds, steps):
    xs, ys = [], []
    for x, y in ds.take(steps):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return xs, ys


def test_every_example_once_per_epoch_in_a_new_order():
    n, batch = 10, 4
    ids = np.arange(n, dtype=np.float32).reshape(n, 1)
    ds, steps = datasets.training_batches(n, np.zeros(n), batch, seed=3, epochs=3, make_batch=datasets.plain_inputs(ids))
    assert steps == 3
    xs, _ = collect(ds, 9)
    epochs = [np.concatenate(xs[e * steps:(e + 1) * steps]).ravel() for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))  # nothing repeated, nothing dropped
    assert not np.array_equal(epochs[0], epochs[1])


def test_resumed_stream_equals_the_uninterrupted_one():
    x, labels = images(8), np.arange(8) % 2
    make = datasets.augmented_images(x, seed=5, aug_cfg=CHOLLET)
    full, steps = datasets.training_batches(8, labels, 3, 5, 3, make)
    resumed, _ = datasets.training_batches(8, labels, 3, 5, 3, make, start_epoch=1)
    full_x, full_y = collect(full, 3 * steps)
    res_x, res_y = collect(resumed, 2 * steps)
    for a, b in zip(full_x[steps:], res_x):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(full_y[steps:], res_y):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def finetune_model():
    """VGG16 (random weights, 48 px) + head, block5 unfrozen, as the finetune stage has it."""
    import keras

    from stages.lib import models

    keras.utils.set_random_seed(1)
    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(48, 48, 3))
    model = models.vgg16_with_head(conv_base, "imagenet", dense_units=8, dropout=0.0)
    models.unfreeze(model, ["block5_conv1", "block5_conv2", "block5_conv3"])
    return model


def test_bank_holds_block4_outputs_of_the_online_stream(finetune_model):
    from stages.lib.models import split_frozen_prefix

    prefix, _ = split_frozen_prefix(finetune_model)
    assert prefix.layers[-1].name == "block4_pool"
    x, labels, seed, batch = images(10, 48), np.arange(10) % 2, 7, 4
    online, steps = datasets.training_batches(10, labels, batch, seed, 2, datasets.augmented_images(x, seed, CHOLLET))
    bank = datasets.build_bank(prefix, x, copies=2, seed=seed, aug_cfg=CHOLLET, batch_size=3)
    assert bank.shape == (20, *prefix.output.shape[1:])
    banked, _ = datasets.training_batches(10, labels, batch, seed, 2, datasets.bank_inputs(bank, 10))
    online_x, online_y = collect(online, 2 * steps)  # two epochs: bank copies 0 and 1
    bank_x, bank_y = collect(banked, 2 * steps)
    for images_batch, features, y_online, y_bank in zip(online_x, bank_x, online_y, bank_y):
        np.testing.assert_allclose(prefix(images_batch).numpy(), features, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(y_online, y_bank)


def test_first_training_step_is_the_same_on_both_paths(finetune_model):
    import keras

    from stages.lib import models
    from stages.lib.training import compile_binary

    x, labels, seed = images(8, 48), np.arange(8) % 2, 11
    online_model = keras.models.clone_model(finetune_model)
    online_model.set_weights(finetune_model.get_weights())
    models.unfreeze(online_model, ["block5_conv1", "block5_conv2", "block5_conv3"])
    bank_model = keras.models.clone_model(finetune_model)
    bank_model.set_weights(finetune_model.get_weights())
    models.unfreeze(bank_model, ["block5_conv1", "block5_conv2", "block5_conv3"])

    online_ds, _ = datasets.training_batches(8, labels, 8, seed, 1, datasets.augmented_images(x, seed, CHOLLET))
    compile_binary(online_model, 1e-3)
    xb, yb = next(iter(online_ds))
    online_model.train_on_batch(xb, yb)

    prefix, suffix = models.split_frozen_prefix(bank_model)
    bank = datasets.build_bank(prefix, x, copies=1, seed=seed, aug_cfg=CHOLLET, batch_size=8)
    bank_ds, _ = datasets.training_batches(8, labels, 8, seed, 1, datasets.bank_inputs(bank, 8))
    compile_binary(suffix, 1e-3)
    fb, yb2 = next(iter(bank_ds))
    suffix.train_on_batch(fb, yb2)

    for name in ("block5_conv1", "block5_conv3", "dense", models.OUTPUT_LAYER):
        before = finetune_model.get_layer(name).get_weights()[0]
        after_online = online_model.get_layer(name).get_weights()[0]
        after_bank = bank_model.get_layer(name).get_weights()[0]
        assert not np.allclose(before, after_online), f"{name} was trained"
        np.testing.assert_allclose(after_online, after_bank, rtol=1e-3, atol=1e-5)
