"""Floating-point operations of the study's Keras models, counted analytically from their
layer shapes (used by benchmarks/study_benchmark.py; tested in tests/test_benchmark_smoke.py).

Only convolutions and dense layers are counted, at 2 FLOPs per multiply-add: in every
model of the study they are over 99% of the arithmetic (pooling, ReLU, rescaling and the
optimizer's update are a few operations per element or weight, not per multiply-add).

A training step of one example costs its forward pass plus its backward pass, and the
backward pass of a layer costs
  - its forward FLOPs again for the gradient of its weights, if it is trainable;
  - its forward FLOPs again for the gradient of its input, if any layer before it is
    trainable (the gradient has to flow back to that layer).
So a frozen prefix costs forward only, and the first trainable layer skips its input
gradient. Models must be chains of layers (nested models are walked through), as every
model of the study is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class LayerCost:
    name: str
    output_shape: tuple  # without the batch axis
    forward: int  # FLOPs per example
    trainable: bool


def layer_forward_flops(layer, input_shape: tuple, output_shape: tuple) -> int:
    """FLOPs of one example through `layer` (shapes without the batch axis)."""
    from stages.lib.models import PREPROCESSING_LAYER

    if layer.name == PREPROCESSING_LAYER:  # VGG16's 1x1 Conv2D is a channel swap and a bias: no multiply-adds
        return 0
    if isinstance(layer, keras.layers.Conv2D):
        kernel_h, kernel_w = layer.kernel_size
        out_h, out_w, filters = output_shape
        per_output = kernel_h * kernel_w * input_shape[-1] // layer.groups
        return 2 * out_h * out_w * per_output * filters
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(input_shape[:-1])  # Dense applies to the last axis
        return 2 * positions * input_shape[-1] * layer.units
    return 0


def layer_costs(model: keras.Model, input_shape: tuple | None = None) -> list[LayerCost]:
    """Each layer of a chain model in order, nested models expanded, with its forward FLOPs."""
    shape = tuple(input_shape or model.input_shape[1:])
    costs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            inner = layer_costs(layer, shape)
            costs += inner
            shape = inner[-1].output_shape if inner else shape
            continue
        # Symbolic call: works for layers without compute_output_shape too.
        out = tuple(layer.compute_output_spec(keras.KerasTensor((None, *shape))).shape[1:])
        costs.append(LayerCost(layer.name, out, layer_forward_flops(layer, shape, out), bool(layer.trainable_weights)))
        shape = out
    return costs


def pass_flops(model: keras.Model) -> dict[str, int]:
    """Per example: `forward`, `backward` (as the module docstring says) and `train_step`."""
    forward = backward = 0
    gradient_flows = False  # does some layer before this one need a gradient?
    for cost in layer_costs(model):
        forward += cost.forward
        backward += cost.forward * (int(cost.trainable) + int(gradient_flows))
        gradient_flows = gradient_flows or cost.trainable
    return {"forward": forward, "backward": backward, "train_step": forward + backward}
