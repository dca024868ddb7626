"""A SavedModel export, loaded by TensorFlow alone in a fresh process, gives the Keras
model's probabilities of the positive class, the predicted class names and the class names."""

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
    loaded = tf.saved_model.load(export)
    result = loaded.signatures["serving_default"](images=tf.constant(np.load(images)))
    classes = loaded.signatures["classes"]()["classes"].numpy().astype(str).tolist()
    np.save(out, result["p_positive"].numpy())
    np.save(out + ".labels.npy", result["label"].numpy().astype(str))
    print(sorted(result), result["p_positive"].dtype.name, result["p_positive"].shape, "classes", classes)
    assert "stages" not in sys.modules  # the project's code is not needed (nor on the path)
""")


def vgg16_preprocessing_model() -> keras.Model:
    """Raw pixels -> VGG16's `imagenet` preprocessing -> a small conv head."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = models.vgg16_preprocessing(inputs, "imagenet")
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
    # Random init puts every P(positive) near 0.5; widen the logits so images differ clearly and
    # a wrong preprocessing could not hide inside the tolerance.
    head = model.get_layer(models.OUTPUT_LAYER)
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 30, bias])
    images = test_images()
    expected = model.predict(images, verbose=0).reshape(-1)
    assert expected.std() > 0.02

    export = export_savedmodel(model, tmp_path / "export" / "model", SIZE, ("hot dog", "not hot dog"))
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(export), str(tmp_path / "images.npy"), str(tmp_path / "p.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"['label', 'p_positive'] float32 ({len(images)},) classes ['hot dog', 'not hot dog']" in run.stdout
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5, rtol=0)
    labels = np.load(tmp_path / "p.npy.labels.npy")
    assert labels.tolist() == np.where(expected >= 0.5, "not hot dog", "hot dog").tolist()
    assert len(set(labels)) == 2, "both classes should be predicted on these images"


def test_export_replaces_the_old_one_atomically_and_checks_the_size(tmp_path):
    import tensorflow as tf

    model = models.custom_convnet(SIZE, 0.0)
    target = tmp_path / "export" / "train_custom"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("from an older export")
    export_savedmodel(model, target, SIZE, ("cat", "dog"))
    assert sorted(p.name for p in target.iterdir()) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert [p.name for p in target.parent.iterdir()] == ["train_custom"]  # no temporary left
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(images=tf.zeros((1, SIZE + 2, SIZE + 2, 3), tf.uint8))  # not the study's size
    with pytest.raises(ValueError, match=r"not the study's images \(None, 64, 64, 3\)"):
        export_savedmodel(model, tmp_path / "other", 64, ("cat", "dog"))
    with pytest.raises(ValueError, match=r"two different names \(negative, positive\), got \('dog', 'dog'\)"):
        export_savedmodel(model, tmp_path / "other", SIZE, ("dog", "dog"))
