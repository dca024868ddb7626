"""The study's models. Every saved model takes raw RGB pixels (0-255) and returns P(dog):
preprocessing is a layer inside the model, augmentation happens in the input pipeline,
so evaluation and users feed all models the same way."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from stages.lib.params import UserError

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="catsdogs")
class VGG16Preprocessing(layers.Layer):
    """`imagenet`: RGB to BGR minus the ImageNet mean, as VGG16 was trained
    (keras.applications.vgg16.preprocess_input); `rescale`: RGB/255, as Chollet fed it."""

    def __init__(self, mode: str = "imagenet", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("imagenet", "rescale"):
            raise ValueError(f"VGG16Preprocessing mode must be imagenet or rescale, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "rescale":
            return x / 255.0
        return ops.flip(x, axis=-1) - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def sigmoid_output(x):
    # The last layer and the loss stay float32 under mixed precision (numerically safe).
    return layers.Dense(1, activation="sigmoid", dtype="float32", name="p_dog")(x)


def custom_convnet(image_size: int, dropout: float) -> keras.Model:
    """Chollet's small convnet (Deep Learning with Python, 5.2)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 128, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, sigmoid_output(x), name="custom_convnet")


def vgg16_conv_base(weights: Path | str, image_size: int | None = None) -> keras.Model:
    """The VGG16 convolutional base with the given Keras-format weights file."""
    shape = (image_size, image_size, 3) if image_size else None
    return keras.applications.VGG16(weights=str(weights), include_top=False, input_shape=shape)


def dense_head(x, dense_units: int, dropout: float):
    """Chollet's classifier on top of VGG16 features."""
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return sigmoid_output(x)


def feature_classifier(feature_shape, dense_units: int, dropout: float) -> keras.Model:
    inputs = keras.Input(feature_shape, name="vgg16_features")
    return keras.Model(inputs, dense_head(inputs, dense_units, dropout), name="feature_classifier")


def vgg16_with_head(conv_base: keras.Model, preprocessing: str, dense_units: int, dropout: float) -> keras.Model:
    """Raw pixels -> preprocessing -> frozen VGG16 conv base -> dense head, as one flat chain
    of layers (not a nested model), so the frozen prefix can be cut off for the bank."""
    conv_base.trainable = False
    inputs, x = _vgg16_chain(conv_base, preprocessing)
    return keras.Model(inputs, dense_head(x, dense_units, dropout), name="vgg16_classifier")


def unfreeze(model: keras.Model, names: list[str]) -> None:
    """Make exactly the named layers trainable (everything else frozen)."""
    with_weights = [layer.name for layer in model.layers if layer.weights]
    for name in names:
        if name not in with_weights:
            what = "has no weights (nothing to train)" if any(l.name == name for l in model.layers) else "does not exist"
            raise UserError(f"finetune.unfreeze: layer {name!r} {what}; layers with weights are "
                            f"{', '.join(n for n in with_weights if n.startswith('block'))}")
    head = False
    for layer in model.layers:
        head = head or layer.name == "flatten"
        layer.trainable = head or layer.name in names


def split_frozen_prefix(model: keras.Model) -> tuple[keras.Model | None, keras.Model]:
    """Cut a chain model before its first layer with trainable weights.

    Returns (prefix, suffix): prefix maps the model's input to the last frozen activation,
    suffix maps that activation to P(dog) with the same layer objects, so training the
    suffix trains the model. suffix(prefix(x)) == model(x). prefix is None when the first
    layer is already trainable (then suffix is `model` itself).
    """
    chain = model.layers[1:]  # skip the InputLayer
    first = next(i for i, layer in enumerate(chain) if layer.trainable_weights)
    if first == 0:
        return None, model
    return split_at(model, chain[first - 1].name)


def split_at(model: keras.Model, layer_name: str) -> tuple[keras.Model, keras.Model]:
    """Cut a chain model after the layer `layer_name`: (prefix, suffix), sharing the
    model's layer objects, with suffix(prefix(x)) == model(x)."""
    chain = model.layers[1:]  # skip the InputLayer
    cut = next(i for i, layer in enumerate(chain) if layer.name == layer_name) + 1
    # Re-apply the layers to new inputs rather than reading `layer.output`: a layer that
    # was also called elsewhere (VGG16's own model) has several outputs.
    return _chain(chain[:cut], model.input_shape[1:], "frozen_prefix"), _chain(
        chain[cut:], chain[cut].input.shape[1:], "trainable_suffix"
    )


# The augmentation bank holds VGG16's block4_pool activations: below it everything is
# frozen in all three VGG16 stages (finetune unfreezes block5 at most), so one bank serves
# train_aug_frozen (which runs the frozen block5 over it once) and finetune.
BANK_LAYER = "block4_pool"


def vgg16_bank_split(conv_base: keras.Model, preprocessing: str) -> tuple[keras.Model, keras.Model]:
    """(pixels -> block4_pool, block4_pool -> block5_pool): the extractor in two halves."""
    extractor = vgg16_extractor(conv_base, preprocessing)
    return split_at(extractor, BANK_LAYER)


def vgg16_extractor(conv_base: keras.Model, preprocessing: str) -> keras.Model:
    """Raw pixels -> preprocessing -> VGG16 conv base as one flat chain of layers."""
    inputs, x = _vgg16_chain(conv_base, preprocessing)
    return keras.Model(inputs, x, name="vgg16_extractor")


def _vgg16_chain(conv_base: keras.Model, preprocessing: str):
    """(input, output) of raw pixels -> preprocessing -> the conv base's own layers, applied
    one by one so the result is a flat chain that can be cut anywhere."""
    inputs = keras.Input(conv_base.input_shape[1:], name="image")
    x = VGG16Preprocessing(preprocessing, name="vgg16_preprocessing")(inputs)
    for layer in conv_base.layers[1:]:
        x = layer(x)
    return inputs, x


def _chain(chain_layers: list, input_shape, name: str) -> keras.Model:
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = inputs
    for layer in chain_layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def load(path: Path | str) -> keras.Model:
    """Load a saved model in safe mode (no arbitrary code), uncompiled: for inference, or
    to be compiled afresh (finetune), so no stale optimizer state is read."""
    return keras.models.load_model(path, safe_mode=True, compile=False)
