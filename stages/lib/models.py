"""The study's models. Every saved model takes raw RGB pixels (0-255) and returns
P(positive class) (label 1; the class names are in data/split/classes.json): preprocessing
is made of Keras layers inside the model, augmentation happens in the input pipeline, so
evaluation and users feed all models the same way, and plain keras.models.load_model
loads them without this project's code."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from stages.lib.params import UserError

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESSING_MODES = ("imagenet", "rescale")
PREPROCESSING_LAYER = "vgg16_preprocessing"
# The name of every model's output layer: P(positive class), label 1 (data/split/classes.json).
OUTPUT_LAYER = "p_positive"


# The preprocessing is made of Keras's own layers, so a saved model loads with a plain
# keras.models.load_model in any process, with no class of this project to import or register.
# `imagenet` (keras.applications.vgg16.preprocess_input: RGB to BGR, minus the ImageNet mean)
# is a fixed, non-trainable 1x1 Conv2D whose kernel is the channel permutation and whose bias
# is minus the BGR mean. Rather than folding the flip into block1_conv1's kernel: the conv base
# stays exactly the VGG16 weights file and the preprocessing stays one layer of the chain
# before it, where the bank split, Grad-CAM and `unfreeze` expect it; Normalization or
# Rescaling with per-channel arrays cannot swap channels. With a 0/1 kernel the convolution
# is exact in float32 (x * 1 + 0 + 0), and under mixed_bfloat16 it computes in bfloat16 as
# the former hand-written layer did. `rescale` (x / 255, as Chollet fed VGG16) is Rescaling.
def vgg16_preprocessing(x, mode: str):
    """Apply VGG16's preprocessing (`imagenet` or `rescale`) to raw RGB pixels x (0-255)."""
    if mode == "rescale":
        return layers.Rescaling(1.0 / 255, name=PREPROCESSING_LAYER)(x)
    if mode != "imagenet":
        raise ValueError(f"vgg16 preprocessing mode must be one of {PREPROCESSING_MODES}, got {mode!r}")
    to_bgr = layers.Conv2D(3, 1, trainable=False, name=PREPROCESSING_LAYER)
    y = to_bgr(x)
    # kernel[0, 0, i, o] = 1 where output channel o is input channel 2 - i: RGB -> BGR
    to_bgr.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3),
                        -np.asarray(IMAGENET_MEAN_BGR, dtype="float32")])
    return y


def sigmoid_output(x):
    # The last layer and the loss stay float32 under mixed precision (numerically safe).
    return layers.Dense(1, activation="sigmoid", dtype="float32", name=OUTPUT_LAYER)(x)


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
        if name == PREPROCESSING_LAYER:  # its weights are the fixed BGR flip and mean: never trained
            what = "is the fixed preprocessing (nothing to train)"
        elif name in with_weights:
            continue
        else:
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
    suffix maps that activation to P(positive) with the same layer objects, so training the
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
    x = vgg16_preprocessing(inputs, preprocessing)
    for layer in conv_base.layers[1:]:
        x = layer(x)
    return inputs, x


def _chain(chain_layers: list, input_shape, name: str) -> keras.Model:
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = inputs
    for layer in chain_layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


MODEL_HINT = "rerun the stage that writes it (`dvc repro`), or `dvc pull` it"


def load(path: Path | str) -> keras.Model:
    """Load a saved model in safe mode (no arbitrary code), uncompiled: for inference, or
    to be compiled afresh (finetune), so no stale optimizer state is read. A missing,
    truncated or foreign file is one UserError line naming it, not Keras' traceback."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: {MODEL_HINT}")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # BadZipFile, ValueError, OSError, KeyError...: all mean a damaged file
        why = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path} cannot be loaded as a Keras model ({type(e).__name__}: {why}): {MODEL_HINT}") from None
