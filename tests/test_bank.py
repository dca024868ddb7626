"""The shared augmentation bank (extract_features) is the per-stage bank and the online path,
stored once: copy k holds what the online path feeds VGG16's block 5 in epoch k, and the
first training step of `train_aug_frozen` and of `finetune` on it matches the per-stage
bank that each stage used to build for itself (float16 storage tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib import datasets

CHOLLET = {"rotation": 40, "width_shift": 0.2, "height_shift": 0.2, "shear": 0.2, "zoom": 0.2,
           "horizontal_flip": True, "fill_mode": "nearest"}
SIZE, N, SEED = 48, 8, 5


def images(n: int = N) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def conv_base():
    import keras

    keras.utils.set_random_seed(2)
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))


def shared_bank(conv_base, x, copies):
    """What extract_features writes: block4_pool of K augmented copies, and of the
    un-augmented validation images, stored as float16."""
    from stages.lib import models
    from stages.extract_features import BANK_DTYPE

    to_block4, _ = models.vgg16_bank_split(conv_base, "imagenet")
    train = datasets.build_bank(to_block4, x, copies, SEED, CHOLLET, 4, dtype=BANK_DTYPE)
    val = to_block4(x.astype(np.float32)).numpy().astype(BANK_DTYPE)
    return {"train": train, "validation": val, "layer": np.array(models.BANK_LAYER), "copies": np.int32(copies)}


def test_copy_k_is_the_online_paths_block4_input_of_epoch_k(conv_base):
    from stages.lib import models

    x = images()
    to_block4, _ = models.vgg16_bank_split(conv_base, "imagenet")
    assert to_block4.layers[-1].name == "block4_pool"
    bank = shared_bank(conv_base, x, copies=3)["train"]
    assert bank.dtype == np.float16 and bank.shape == (3 * N, *to_block4.output.shape[1:])
    online = datasets.augmented_images(x, SEED, CHOLLET)
    for k in range(3):
        expected = to_block4(online(k, np.arange(N))).numpy()
        np.testing.assert_allclose(bank[k * N:(k + 1) * N].astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def one_step(stage_model, x, labels, bank, tmp_path, monkeypatch):
    """One optimizer step of training.train (epochs 1, one batch) on `bank` (None: the
    per-stage bank, built here as the stages used to)."""
    from stages.lib import training

    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)
    cfg = {"batch_size": N, "epochs": 1, "learning_rate": 1e-3, "lr_decay": "none", "early_stopping": 0,
           "restore_best": False}
    params = {"train": {"seed": SEED, "precision": "float32", "distribute": "none", "devices": [], "class_weight": "none"},
              "augmentation": CHOLLET}
    if bank is None:  # the old per-stage bank: the model's own frozen prefix, built in-stage
        from stages.lib import models

        prefix, suffix = models.split_frozen_prefix(stage_model)
        per_stage = datasets.build_bank(prefix, x, 1, SEED, CHOLLET, 4)
        val = prefix(x.astype(np.float32)).numpy()
        bank = {"train": per_stage, "validation": val, "layer": np.array(prefix.layers[-1].name)}
    run = training.train("step", stage_model, x, labels, x, labels, cfg, params, data_files=(), augment=True, bank=bank)
    return run.model


@pytest.mark.parametrize("stage", ["train_aug_frozen", "finetune"])
def test_first_step_on_the_shared_bank_matches_the_per_stage_bank(conv_base, stage, tmp_path, monkeypatch):
    import keras

    from stages.lib import models

    x, labels = images(), np.arange(N) % 2

    def fresh():
        keras.utils.set_random_seed(4)
        model = models.vgg16_with_head(conv_base, "imagenet", dense_units=8, dropout=0.0)
        if stage == "finetune":
            models.unfreeze(model, ["block5_conv1", "block5_conv2", "block5_conv3"])
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        for a, b in zip(model.layers, clone.layers):
            b.trainable = a.trainable
        return clone

    start = fresh()
    per_stage = one_step(fresh(), x, labels, None, tmp_path / "a", monkeypatch)
    shared = one_step(fresh(), x, labels, shared_bank(conv_base, x, copies=1), tmp_path / "b", monkeypatch)
    trained = ["dense", models.OUTPUT_LAYER] + (["block5_conv1", "block5_conv3"] if stage == "finetune" else [])
    for name in trained:
        before = start.get_layer(name).get_weights()[0]
        a, b = per_stage.get_layer(name).get_weights()[0], shared.get_layer(name).get_weights()[0]
        assert not np.allclose(before, a), f"{name} was trained"
        # RMSprop's first step is about lr * sign(gradient): where a gradient is ~0, the
        # float16 rounding of the bank may flip it. Compare the updates as a whole.
        update_a, update_b = a - before, b - before
        assert np.linalg.norm(update_a - update_b) < 0.1 * np.linalg.norm(update_a), name
        cosine = np.sum(update_a * update_b) / (np.linalg.norm(update_a) * np.linalg.norm(update_b))
        assert cosine > 0.99, (name, cosine)
    if stage == "train_aug_frozen":  # block 5 stays frozen
        np.testing.assert_array_equal(shared.get_layer("block5_conv3").get_weights()[0],
                                      start.get_layer("block5_conv3").get_weights()[0])


def test_a_trainable_layer_below_the_bank_is_refused(conv_base, tmp_path, monkeypatch):
    from stages.lib import models
    from stages.lib.params import UserError

    model = models.vgg16_with_head(conv_base, "imagenet", dense_units=8, dropout=0.0)
    models.unfreeze(model, ["block4_conv3", "block5_conv1"])
    x = images()
    with pytest.raises(UserError, match="block4_conv3.* lies below block4_pool.*augment_bank: 0"):
        one_step(model, x, np.arange(N) % 2, shared_bank(conv_base, x, copies=1), tmp_path, monkeypatch)
