"""A SavedModel export, loaded by TensorFlow alone in a fresh process, gives the Keras
model's probabilities."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers

from helpers import SHARED_IMAGES
from stages.lib import models
from stages.lib.export import export_savedmodel
from stages.lib.images import decode_resized

SIZE = 48

# Runs with neither this project nor Keras imported: only TensorFlow reads the export.
LOAD_AND_PREDICT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    export, images, out = sys.argv[1:]
    serve = tf.saved_model.load(export).signatures["serving_default"]
    result = serve(images=tf.constant(np.load(images)))
    np.save(out, result["p_dog"].numpy())
    print(sorted(result), result["p_dog"].dtype.name, result["p_dog"].shape)
    assert "stages" not in sys.modules  # the project's code is not needed (nor on the path)
""")


def vgg16_preprocessing_model() -> keras.Model:
    """Raw pixels -> the custom VGG16Preprocessing layer -> a small conv head."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = models.VGG16Preprocessing("imagenet", name="vgg16_preprocessing")(inputs)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    return keras.Model(inputs, models.sigmoid_output(layers.GlobalAveragePooling2D()(x)))


def test_images() -> np.ndarray:
    """Random uint8 images, and real photos decoded as the pipeline does when ../shared has them."""
    images = [np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)]
    if SHARED_IMAGES.is_dir():
        photos = [SHARED_IMAGES / f"{label}.{i}.jpg" for label in ("cat", "dog") for i in range(3)]
        images.append(np.stack([decode_resized(p, SIZE) for p in photos if p.is_file()]))
    return np.concatenate(images)


test_images.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("build", [lambda: models.custom_convnet(SIZE, 0.5), vgg16_preprocessing_model],
                         ids=["custom_convnet", "vgg16_preprocessing"])
def test_export_matches_keras_in_a_fresh_process(tmp_path, build):
    keras.utils.set_random_seed(0)
    model = build()
    # Random init puts every P(dog) near 0.5; widen the logits so images differ clearly and
    # a wrong preprocessing could not hide inside the tolerance.
    head = model.get_layer("p_dog")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 30, bias])
    images = test_images()
    expected = model.predict(images, verbose=0).reshape(-1)
    assert expected.std() > 0.02

    export = export_savedmodel(model, tmp_path / "export" / "model", SIZE)
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(export), str(tmp_path / "images.npy"), str(tmp_path / "p.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"['p_dog'] float32 ({len(images)},)" in run.stdout
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5, rtol=0)


def test_export_replaces_the_old_one_atomically_and_checks_the_size(tmp_path):
    import tensorflow as tf

    model = models.custom_convnet(SIZE, 0.0)
    target = tmp_path / "export" / "train_custom"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("from an older export")
    export_savedmodel(model, target, SIZE)
    assert sorted(p.name for p in target.iterdir()) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert [p.name for p in target.parent.iterdir()] == ["train_custom"]  # no temporary left
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(images=tf.zeros((1, SIZE + 2, SIZE + 2, 3), tf.uint8))  # not the study's size
    with pytest.raises(ValueError, match=r"not the study's images \(None, 64, 64, 3\)"):
        export_savedmodel(model, tmp_path / "other", 64)
