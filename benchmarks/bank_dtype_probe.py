"""How the storage dtype of the augmentation bank changes what is computed from it.

The bank holds VGG16 `block4_pool` activations (9x9x512 at 150 px) of augmented training
images; `finetune` trains block5 + the dense head on them. This probe builds finetune's
model (real ImageNet weights, random-init head, same seed), cuts it at its frozen prefix
(blocks 1-4) as the stage does, pushes one augmented copy of real images through the
prefix (datasets.build_bank, copy 0), stores the activations as float32, float16 and
bfloat16, and runs the suffix on each, in float32 and in mixed_bfloat16 compute. Against
the reference (float32 compute, float32 storage) it reports max/mean absolute and relative
differences of the stored activations, of block5_pool's output and of P(positive class)
(and its logit), and the range of the activations (float16 overflows above 65504).

Run from the project root, as a module:

    python -m benchmarks.bank_dtype_probe --out benchmarks/results/<cpu-kind>-<date>-bank-dtype.json    # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import benchmark  # machine_info, pick_files, decode_subset

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = benchmark.SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"
COMPUTE = ("float32", "mixed_bfloat16")
STORAGE = ("float32", "float16", "bfloat16")
BATCH = 50
REFERENCE = "float32:float32"  # compute:storage


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--images", type=int, default=300, help="real images, half cats half dogs (default 300)")
    p.add_argument("--images-dir", type=Path, default=benchmark.IMAGES_DIR)
    p.add_argument("--weights", type=Path, default=WEIGHTS, help=f"VGG16 notop Keras weights (default {WEIGHTS})")
    args = p.parse_args(argv)
    if args.images < 2:
        p.error("--images must be >= 2")
    return args


def differences(value, reference) -> dict:
    """max/mean of |value - reference|, and relative to the reference's max/mean magnitude."""
    import numpy as np

    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    diff, magnitude = np.abs(value - reference), np.abs(reference)
    nonzero = magnitude > 0
    return {
        "max_abs": float(f"{diff.max():.4g}"),
        "mean_abs": float(f"{diff.mean():.4g}"),
        "max_abs_over_max_ref": float(f"{diff.max() / magnitude.max():.4g}"),
        "mean_abs_over_mean_ref": float(f"{diff.mean() / magnitude.mean():.4g}"),
        "max_elementwise_relative": float(f"{(diff[nonzero] / magnitude[nonzero]).max():.4g}"),
    }


def storage(array, dtype: str):
    import ml_dtypes
    import numpy as np

    return array.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))


def until_layer(chain, name: str):
    """The chain model's layers up to and including `name`, as a model (re-applied to a new
    input: the layers were called in several models, so `layer.output` is ambiguous)."""
    import keras

    inputs = keras.Input(chain.input_shape[1:])
    x = inputs
    for layer in chain.layers[1:]:
        x = layer(x)
        if layer.name == name:
            return keras.Model(inputs, x)
    raise ValueError(f"{chain.name} has no layer {name!r}")


def run(args, images, aug_cfg: dict, seed: int, dense: dict) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from stages.lib import datasets, models

    outputs, banks, seconds = {}, {}, {}
    for compute in COMPUTE:
        keras.mixed_precision.set_global_policy(compute)
        keras.utils.set_random_seed(seed)  # the same random head in both computes
        model = models.vgg16_with_head(models.vgg16_conv_base(args.weights, images.shape[1]), "imagenet",
                                  dense["dense_units"], dense["dropout"])
        models.unfreeze(model, ["block5_conv1", "block5_conv2", "block5_conv3"])
        prefix, suffix = models.split_frozen_prefix(model)
        block5 = until_layer(suffix, "block5_pool")
        t = time.perf_counter()
        bank = datasets.build_bank(prefix, images, 1, seed, aug_cfg, BATCH)
        seconds[compute] = round(time.perf_counter() - t, 1)
        banks[compute] = bank.astype(np.float32)
        for dtype in STORAGE:
            stored = storage(bank, dtype)
            # As bank_inputs reads the bank: cast to float32, the model casts to its compute dtype.
            x = tf.cast(tf.constant(stored.astype(np.float32)), tf.float32)
            outputs[f"{compute}:{dtype}"] = {
                "bank": stored.astype(np.float32),
                "block5_pool": np.concatenate([block5(x[i:i + BATCH], training=False).numpy().astype(np.float32)
                                               for i in range(0, len(x), BATCH)]),
                "p_positive": np.concatenate([suffix(x[i:i + BATCH], training=False).numpy().astype(np.float64)[:, 0]
                                         for i in range(0, len(x), BATCH)]),
            }
    ref = outputs[REFERENCE]
    clipped = lambda p: np.clip(p, 1e-7, 1 - 1e-7)  # noqa: E731
    logit = lambda p: np.log(clipped(p) / (1 - clipped(p)))  # noqa: E731
    comparisons = {}
    for key, out in outputs.items():
        comparisons[key] = {
            "bank_block4_pool": differences(out["bank"], ref["bank"]),
            "block5_pool": differences(out["block5_pool"], ref["block5_pool"]),
            "p_positive": differences(out["p_positive"], ref["p_positive"]),
            "p_positive_logit": differences(logit(out["p_positive"]), logit(ref["p_positive"])),
            "same_decision_as_reference": float(np.mean((out["p_positive"] > 0.5) == (ref["p_positive"] > 0.5))),
        }
    # Within one compute: storage alone (against that compute's float32 storage).
    storage_only = {}
    for compute in COMPUTE:
        base = outputs[f"{compute}:float32"]
        for dtype in STORAGE[1:]:
            out = outputs[f"{compute}:{dtype}"]
            storage_only[f"{compute}:{dtype}"] = {
                "block5_pool": differences(out["block5_pool"], base["block5_pool"]),
                "p_positive": differences(out["p_positive"], base["p_positive"]),
                "p_positive_logit": differences(logit(out["p_positive"]), logit(base["p_positive"])),
            }
    activations = banks["float32"]
    positive = activations[activations > 0]
    return {
        "reference": REFERENCE + " (compute:storage)",
        "against_reference": comparisons,
        "storage_only_same_compute": storage_only,
        "bank_seconds_per_compute": seconds,
        "block4_pool_range": {
            "max": float(activations.max()),
            "mean": float(activations.mean()),
            "fraction_zero": float(np.mean(activations == 0)),
            "min_positive": float(positive.min()) if positive.size else None,
            "fraction_above_float16_max": float(np.mean(activations > 65504)),
            "fraction_positive_below_float16_normal": float(np.mean((activations > 0) & (activations < 6.104e-5))),
        },
        "reference_p_positive": {"min": float(ref["p_positive"].min()), "max": float(ref["p_positive"].max()), "mean": float(ref["p_positive"].mean())},
        "bytes_per_copy_of_2000_images": {d: 2000 * int(np.prod(activations.shape[1:])) * (4 if d == "float32" else 2) for d in STORAGE},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.images_dir.is_dir() or not args.weights.is_file():
        print(f"error: real images ({args.images_dir}) or VGG16 weights ({args.weights}) not found", file=sys.stderr)
        return 2
    import numpy as np

    from stages.lib.params import load_params

    params = load_params("split", "train", "augmentation", "train_aug_frozen", path=ROOT / "params.yaml")
    size = params["split"]["image_size"]
    report = {"machine": benchmark.machine_info(), "settings": {"images": args.images, "image_size": size, "batch": BATCH,
                                                                "weights": str(args.weights), "seed": params["train"]["seed"],
                                                                "bank": "datasets.build_bank copy 0 of finetune's frozen prefix (blocks 1-4)",
                                                                "head": "random init (keras seed), finetune's model: block5 + dense head"}}
    with tempfile.TemporaryDirectory(prefix="catsdogs-bank-dtype-") as tmp:
        arrays = Path(tmp) / "arrays.npz"
        report["data"] = benchmark.decode_subset(benchmark.pick_files(args.images_dir, args.images), size, arrays)
        with np.load(arrays) as data:
            images = data["images"]
    report["results"] = run(args, images, params["augmentation"], params["train"]["seed"], params["train_aug_frozen"])
    report["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, row in report["results"]["against_reference"].items():
        print(f"{key:28s} block5_pool mean rel {row['block5_pool']['mean_abs_over_mean_ref']:.2e}, "
              f"P(positive) max abs {row['p_positive']['max_abs']:.2e}, logit max abs {row['p_positive_logit']['max_abs']:.2e}, "
              f"same decision {row['same_decision_as_reference']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
