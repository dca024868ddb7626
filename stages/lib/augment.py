"""Chollet's data augmentation as one vectorised affine warp per image.

ImageDataGenerator composed rotation, shift, shear and zoom into a single affine matrix and
resampled once; so do we, for a whole batch in one `ImageProjectiveTransformV3` op (four
chained Keras Random* layers would resample four times, blur more and cost four times as
much). The random draws come from explicit uniforms, so a given stream of uniforms always
gives the same images: that is what lets the augmentation bank reproduce the online path.
"""

from __future__ import annotations

import math

import tensorflow as tf

N_UNIFORMS = 7  # rotation, x shift, y shift, shear, x zoom, y zoom, flip


def affine_transforms(uniforms: tf.Tensor, height: int, width: int, cfg: dict) -> tf.Tensor:
    """(N, 8) projective transforms mapping output to input pixel coordinates."""
    u = 2.0 * tf.cast(uniforms, tf.float32) - 1.0  # uniform in [-1, 1)
    theta = u[:, 0] * cfg["rotation"] * math.pi / 180.0
    tx = u[:, 1] * cfg["width_shift"] * width
    ty = u[:, 2] * cfg["height_shift"] * height
    shear = u[:, 3] * cfg["shear"]
    zx = 1.0 + u[:, 4] * cfg["zoom"]
    zy = 1.0 + u[:, 5] * cfg["zoom"]
    flip = (uniforms[:, 6] < 0.5) if cfg["horizontal_flip"] else tf.zeros_like(theta, tf.bool)

    cos, sin = tf.cos(theta), tf.sin(theta)
    # A = rotation @ shear @ zoom, as in Keras 2's apply_affine_transform.
    a00 = cos * zx
    a01 = (-cos * tf.sin(shear) - sin * tf.cos(shear)) * zy
    a10 = sin * zx
    a11 = (-sin * tf.sin(shear) + cos * tf.cos(shear)) * zy
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # input = centre + A (output - centre) + shift
    b0 = cx - a00 * cx - a01 * cy + tx
    b1 = cy - a10 * cx - a11 * cy + ty
    # A horizontal flip mirrors the input x: x_in -> (width - 1) - x_in.
    sign = tf.where(flip, -1.0, 1.0)
    a00, a01 = sign * a00, sign * a01
    b0 = tf.where(flip, (width - 1) - b0, b0)
    zeros = tf.zeros_like(theta)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment(images: tf.Tensor, uniforms: tf.Tensor, cfg: dict) -> tf.Tensor:
    """Warp a batch of (N, H, W, 3) images; returns float32 in the input's value range."""
    images = tf.cast(images, tf.float32)
    height, width = images.shape[1], images.shape[2]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=affine_transforms(uniforms, height, width, cfg),
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=cfg["fill_mode"].upper(),
    )
