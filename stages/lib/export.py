"""A trained model as a TensorFlow SavedModel, for serving without this project's code
(TF Serving, `tf.saved_model.load`, TFLite converters).

Two signatures. `serving_default` takes what a decoder gives, uint8 RGB images of the
study's size, and returns per image the probability of the positive class (label 1) and
the predicted class's name:

    images: tf.uint8, shape (None, S, S, 3)  ->  {"p_positive": tf.float32, shape (None,),
                                                  "label": tf.string, shape (None,)}

`label` is the positive class where p_positive >= 0.5 (study.THRESHOLD, as `evaluate`
counts), else the negative one. `classes` takes nothing and returns the two class names,
negative first, so a user learns what p_positive is the probability of:

    () -> {"classes": tf.string, shape (2,)}      e.g. [b"cat", b"dog"]: p_positive is P(dog)

Why two signatures rather than a `classes` output of `serving_default`: every output of
`serving_default` has one row per image, which TF Serving's row ("instances") format
requires; a per-model constant there would break it. The names are the ones the model was
trained with (data/split/classes.json, passed in by `evaluate`).

Preprocessing (rescaling, or VGG16's BGR mean subtraction) is made of Keras layers inside
every model, so the signature only casts to float32; the SavedModel holds the traced graph
and weights, and needs neither Keras nor this project to load. The images must be resized
to S x S as the pipeline does (stages/lib/images.py `decode_resized`: bilinear, aspect not
kept); another size is refused (InvalidArgumentError).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from stages.lib.outputs import atomic_dir
from stages.lib.study import THRESHOLD

SIGNATURE = "serving_default"
CLASSES_SIGNATURE = "classes"
INPUT_NAME = "images"
OUTPUT_NAME = "p_positive"
LABEL_NAME = "label"


def export_savedmodel(model: keras.Model, directory: Path | str, image_size: int, classes: tuple[str, str]) -> Path:
    """Write `model` (raw RGB pixels in, P(positive) (N, 1) out) as a SavedModel at
    `directory`, atomically (a crash leaves the previous export or none), with `classes`
    (negative, positive) as its class names. Returns the directory."""
    expected = (None, image_size, image_size, 3)
    if tuple(model.input_shape) != expected:
        raise ValueError(f"model {model.name!r} takes input of shape {model.input_shape}, "
                         f"not the study's images {expected}")
    if len(classes) != 2 or len(set(classes)) != 2:
        raise ValueError(f"classes must be two different names (negative, positive), got {classes!r}")
    names = tf.constant(list(classes), dtype=tf.string)

    def serve(images):
        # A signature's declared shape is not enforced when it is called, and a convnet
        # may well run on another size and answer nonsense: check it.
        images = tf.ensure_shape(images, expected)
        p_positive = tf.reshape(tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32), [-1])
        label = tf.gather(names, tf.cast(p_positive >= THRESHOLD, tf.int32))
        return {OUTPUT_NAME: p_positive, LABEL_NAME: label}

    def class_names():
        return {CLASSES_SIGNATURE: tf.identity(names)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec(expected, tf.uint8, name=INPUT_NAME)],
    )
    archive.add_endpoint(name=CLASSES_SIGNATURE, fn=class_names, input_signature=[])
    with atomic_dir(directory) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return Path(directory)
