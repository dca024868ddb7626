"""Grad-CAM: where in an image a convolutional model found the evidence for its answer.

Chollet's class-activation-map lesson (Deep Learning with Python, 2nd ed., 9.4.3; Selvaraju
et al. 2017): take the activation of the last convolutional layer, weight each channel by
the mean gradient of the class score with respect to it, sum the channels, keep the
positive part, upsample to the image and scale to [0, 1].

The class score is the log-odds of the class the heatmap explains: z for the positive
class (label 1) and -z for the negative one, z being the input of the final sigmoid
(P(positive) = sigmoid(z)). Its gradient points the same way as the gradient of
P(positive), or of 1 - P(positive), scaled per image by P(1 - P) > 0,
which the per-image normalisation removes; but it does not vanish when the sigmoid
saturates, and the most instructive errors are the ones made at P = 1.000.

The study's models are flat chains of layers (stages/lib/models.py builds them so, and a
nested sub-model such as VGG16's conv base is unrolled here), so the model is run in two
halves: images -> the conv layer's activation, then activation -> class score under a
`tf.GradientTape`. Keras 3 with the TensorFlow backend.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from stages.lib.metrics import predicted_labels

CONV_LAYERS = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)


def chain_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in call order, input layers dropped and nested models unrolled."""
    chain = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        chain.extend(chain_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return chain


def last_conv_layer(model: keras.Model) -> str:
    """Name of the model's last convolutional layer (block5_conv3 in VGG16)."""
    convs = [layer.name for layer in chain_layers(model) if isinstance(layer, CONV_LAYERS)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolutional layer: Grad-CAM needs one")
    return convs[-1]


@contextlib.contextmanager
def _logit_output(layer: keras.layers.Layer):
    """Make a final Dense(sigmoid) layer return its input z for the duration (the Keras
    Grad-CAM example does the same); yields False when the layer is something else."""
    if not (isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.sigmoid):
        yield False
        return
    layer.activation = keras.activations.linear
    try:
        yield True
    finally:
        layer.activation = keras.activations.sigmoid


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    layer_name: str | None = None,
    classes: np.ndarray | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps of `model` (raw pixels in, P(positive) of shape (N, 1) out) on `images` (N, H, W, 3).

    layer_name: the convolutional layer to explain (default: the last one).
    classes: per image the class to explain, 0 negative or 1 positive (default: the
        predicted one, metrics.predicted_labels, as in `evaluate`).
    Returns (heatmaps (N, H, W) float32 in [0, 1], each scaled to its own maximum, all zero
    where no location speaks for the class; P(positive) (N,) from the same forward pass).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be a batch of RGB images (N, H, W, 3), got shape {images.shape}")
    if classes is not None and len(classes) != len(images):
        raise ValueError(f"classes has {len(classes)} entries for {len(images)} images")
    chain = chain_layers(model)
    layer_name = layer_name or last_conv_layer(model)
    names = [layer.name for layer in chain]
    if layer_name not in names:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r}; its convolutional layers are "
                         + ", ".join(n for n, layer in zip(names, chain) if isinstance(layer, CONV_LAYERS)))
    cut = names.index(layer_name) + 1
    _check_is_chain(model, chain, tf.convert_to_tensor(images[:1], dtype=tf.float32))
    heatmaps, p_positive = [], []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], dtype=tf.float32)
        wanted = None if classes is None else np.asarray(classes[start:start + batch_size])
        cam, p = _batch_grad_cam(chain[:cut], chain[cut:], batch, wanted)
        heatmaps.append(cam)
        p_positive.append(p)
    return np.concatenate(heatmaps), np.concatenate(p_positive)


def _run(layers, x):
    for layer in layers:
        x = layer(x, training=False)
    return x


def _batch_grad_cam(head, tail, batch, classes):
    activation = _run(head, batch)
    with _logit_output(tail[-1]) as gives_logit, tf.GradientTape() as tape:
        tape.watch(activation)
        out = tf.reshape(tf.cast(_run(tail, activation), tf.float32), [-1])
    p = tf.sigmoid(out) if gives_logit else out
    # The explained class: positive -> z (or P), negative -> -z (or 1 - P); constants don't matter.
    wanted = predicted_labels(p.numpy()) if classes is None else np.asarray(classes)
    sign = np.where(wanted == 1, 1.0, -1.0).astype(np.float32)
    grads = tf.cast(tape.gradient(out, activation), tf.float32) * sign[:, None, None, None]
    # One gradient call for the whole batch is exact: image i's score depends only on
    # image i's activation (no batch statistics at inference).
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(activation, tf.float32), axis=-1))
    cam = tf.image.resize(cam[..., None], batch.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    return cam.numpy().astype(np.float32), p.numpy().astype(np.float64)


def _check_is_chain(model, chain, image):
    """Running the layers one after another must be the model; a branching model is not
    supported (a wrong heatmap would be worse than none)."""
    expected = np.asarray(model(image, training=False), dtype=np.float64).reshape(-1)
    try:
        got = np.asarray(_run(chain, image), dtype=np.float64).reshape(-1)
    except Exception as e:  # a layer fed the wrong input says so in its own words
        raise ValueError(f"model {model.name!r} is not a flat chain of layers, which Grad-CAM here needs: "
                         f"running its layers in order fails ({type(e).__name__})") from e
    if got.shape != expected.shape or not np.allclose(expected, got, atol=1e-4):
        raise ValueError(f"model {model.name!r} is not a flat chain of layers, which Grad-CAM here needs: "
                         "running its layers in order does not give its output")
