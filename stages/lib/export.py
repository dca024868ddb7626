"""A trained model as a TensorFlow SavedModel, for serving without this project's code
(TF Serving, `tf.saved_model.load`, TFLite converters).

The signature `serving_default` takes what a decoder gives, uint8 RGB images of the study's
size, and returns P(dog) per image:

    images: tf.uint8, shape (None, S, S, 3)  ->  {"p_dog": tf.float32, shape (None,)}

Preprocessing (rescaling, or VGG16's BGR mean subtraction) is a layer inside every model,
so the signature only casts to float32; the SavedModel holds the traced graph and weights,
and needs neither Keras nor the custom `VGG16Preprocessing` class to load. The images must
be resized to S x S as the pipeline does (stages/lib/images.py `decode_resized`: bilinear,
aspect not kept); another size is refused (InvalidArgumentError).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from stages.lib.outputs import atomic_dir

SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "p_dog"


def export_savedmodel(model: keras.Model, directory: Path | str, image_size: int) -> Path:
    """Write `model` (raw RGB pixels in, P(dog) (N, 1) out) as a SavedModel at `directory`,
    atomically (a crash leaves the previous export or none). Returns the directory."""
    expected = (None, image_size, image_size, 3)
    if tuple(model.input_shape) != expected:
        raise ValueError(f"model {model.name!r} takes input of shape {model.input_shape}, "
                         f"not the study's images {expected}")

    def serve(images):
        # A signature's declared shape is not enforced when it is called, and a convnet
        # may well run on another size and answer nonsense: check it.
        images = tf.ensure_shape(images, expected)
        p_dog = model(tf.cast(images, tf.float32), training=False)
        return {OUTPUT_NAME: tf.reshape(tf.cast(p_dog, tf.float32), [-1])}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec(expected, tf.uint8, name=INPUT_NAME)],
    )
    with atomic_dir(directory) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return Path(directory)
