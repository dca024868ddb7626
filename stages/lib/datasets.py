"""Input pipelines from decoded arrays (images are decoded once, by `split`).

Training batches are a pure function of (seed, epoch): epoch e visits the examples in the
order `stateless_shuffle(seed, e)` and augments example i with the uniforms drawn for
(seed, e) at row i. Hence a run resumed at epoch e sees exactly the batches it would have
seen, and copy k of the augmentation bank is exactly what the online path produces in
epoch k.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from stages.lib.augment import N_UNIFORMS, augment
from stages.lib.params import UserError
from stages.lib.study import ARRAYS_DIR

PARALLEL = os.cpu_count() or 1


def load_arrays(path: Path | str) -> dict[str, np.ndarray]:
    """Read an .npz written by this project (no pickles allowed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the stage that makes it (dvc repro)") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        # Truncated, bit-flipped, or holding a pickle (which is never loaded): DVC rebuilds it.
        raise UserError(
            f"{path} is damaged or not an array file this project wrote ({type(e).__name__}: {str(e)[:120]}): "
            f"delete it and run `dvc repro` (or `dvc checkout {path}`) to rebuild it"
        ) from None


SPLIT_KEYS = ("images", "labels", "files")
# The image size of each split this process loaded, by file: splits that disagree would
# fail deep inside Keras (the model is built for the first one's size).
_LOADED_SIZES: dict[Path, int] = {}


def load_split(name: str, directory: Path = ARRAYS_DIR) -> dict[str, np.ndarray]:
    """{'images': (N, S, S, 3) uint8, 'labels': (N,) uint8, 'files': (N,) str} of a split,
    checked: a file with other keys, counts that disagree or images of another shape (an
    old run, a hand-made file) is one line naming it, never a silent partial training run."""
    path = Path(directory) / f"{name}.npz"
    split = load_arrays(path)
    rebuild = f"delete it and run `dvc repro split` (or `dvc checkout {path}`)"
    missing = [key for key in SPLIT_KEYS if key not in split]
    if missing:
        holds = ", ".join(sorted(split)) or "no arrays"
        raise UserError(f"{path} has no '{missing[0]}' array (it holds {holds}), so split did not write it; {rebuild}")
    images, labels, files = (split[key] for key in SPLIT_KEYS)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3 or images.dtype != np.uint8:
        raise UserError(f"{path}: images of shape {images.shape} and type {images.dtype}, expected (N, S, S, 3) uint8 "
                        f"(N square RGB images); {rebuild}")
    if labels.shape != (len(images),) or files.shape != (len(images),):
        raise UserError(f"{path} holds {len(images)} images but {labels.size} labels and {files.size} file names; "
                        f"each image needs one of each; {rebuild}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise UserError(f"{path}: labels must be 0 or 1, found {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}; "
                        f"{rebuild}")
    size = images.shape[1]
    for other, other_size in _LOADED_SIZES.items():
        if other.parent == path.parent and other != path and other_size != size:
            raise UserError(f"{path} holds {size}x{size} images but {other} holds {other_size}x{other_size}: "
                            f"they come from different runs of split; run `dvc repro split`")
    _LOADED_SIZES[path] = size
    return split


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Autotune halved training speed after the first epoch on 2 cores: fixed parallelism.
    options.autotune.enabled = False
    # Under tf.distribute each global batch is split across the replicas (of all workers):
    # DATA sharding, not by file (there are none), so no example is repeated or dropped.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def epoch_order(n: int, seed: int, epoch) -> tf.Tensor:
    return tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), 2 * tf.cast(epoch, tf.int64)]))


def epoch_uniforms(n: int, seed: int, epoch) -> tf.Tensor:
    """The (n, N_UNIFORMS) augmentation draws of one epoch, one row per example."""
    s = tf.stack([tf.cast(seed, tf.int64), 2 * tf.cast(epoch, tf.int64) + 1])
    return tf.random.stateless_uniform([n, N_UNIFORMS], seed=s)


def training_batches(
    n: int,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epochs: int,
    make_batch: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    start_epoch: int = 0,
    sample_weights: np.ndarray | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Batches for epochs start_epoch..epochs-1 in one stream, and the steps per epoch.

    make_batch(epoch, indices) returns the model inputs for those example indices.
    sample_weights: a weight per example for the loss (class_weight_balanced), or None.
    """
    labels_t = tf.constant(labels, tf.float32)
    weights_t = None if sample_weights is None else tf.constant(sample_weights, tf.float32)

    def epoch_indices(epoch):
        batches = tf.data.Dataset.from_tensor_slices(epoch_order(n, seed, epoch)).batch(batch_size)
        return batches.map(lambda idx: (epoch, idx))

    ds = tf.data.Dataset.range(start_epoch, epochs).flat_map(epoch_indices)
    if weights_t is None:
        ds = ds.map(lambda epoch, idx: (make_batch(epoch, idx), tf.gather(labels_t, idx)), num_parallel_calls=PARALLEL)
    else:
        ds = ds.map(lambda epoch, idx: (make_batch(epoch, idx), tf.gather(labels_t, idx), tf.gather(weights_t, idx)),
                    num_parallel_calls=PARALLEL)
    return ds.prefetch(2).with_options(_options()), math.ceil(n / batch_size)


def class_weight_balanced(labels: np.ndarray) -> np.ndarray:
    """Per example the weight n / (2 n_class) of its class, as scikit-learn's
    class_weight="balanced": each class weighs as much in the loss as the other, whatever
    their counts (a balanced set gets 1.0 everywhere)."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        raise ValueError(f"class_weight balanced needs both classes in the training labels, got counts {counts.tolist()}")
    return (len(labels) / (2.0 * counts))[labels].astype(np.float32)


def plain_inputs(inputs: np.ndarray) -> Callable:
    """make_batch for un-augmented inputs (images or features)."""
    table = tf.constant(inputs)
    return lambda epoch, idx: tf.cast(tf.gather(table, idx), tf.float32)


def augmented_images(images: np.ndarray, seed: int, aug_cfg: dict) -> Callable:
    """make_batch that augments each image afresh every epoch (the online path)."""
    table = tf.constant(images)
    n = len(images)

    def make_batch(epoch, idx):
        uniforms = tf.gather(epoch_uniforms(n, seed, epoch), idx)
        return augment(tf.gather(table, idx), uniforms, aug_cfg)

    return make_batch


def bank_inputs(bank: np.ndarray, n: int) -> Callable:
    """make_batch reading the augmentation bank: epoch e uses copy e mod K."""
    table = tf.constant(bank)
    copies = len(bank) // n

    def make_batch(epoch, idx):
        rows = tf.cast(epoch % copies, tf.int32) * n + tf.cast(idx, tf.int32)
        return tf.cast(tf.gather(table, rows), tf.float32)

    return make_batch


def eval_batches(inputs: np.ndarray, labels: np.ndarray | None, batch_size: int) -> tf.data.Dataset:
    """Un-shuffled, un-augmented batches for validation, evaluation and feature extraction."""
    ds = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    ds = ds.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=PARALLEL)
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(labels.astype(np.float32)).batch(batch_size))
    return ds.prefetch(2).with_options(_options())


def run_model(model_fn, batches: tf.data.Dataset, n: int, out_shape, dtype) -> np.ndarray:
    """Apply model_fn to every batch, writing into one preallocated array of `dtype` (no 2x
    peak); the cast to `dtype` happens in TensorFlow (bfloat16 -> float16 included)."""
    out = np.empty((n, *out_shape), dtype=dtype)
    step = tf.function(lambda x: tf.cast(model_fn(x), tf.as_dtype(dtype)))
    start = 0
    for x in batches:
        y = step(x).numpy()
        out[start : start + len(y)] = y
        start += len(y)
    return out


def build_bank(prefix, images: np.ndarray, copies: int, seed: int, aug_cfg: dict, batch_size: int,
               dtype=None) -> np.ndarray:
    """Push `copies` augmented versions of every image through the frozen prefix once.

    Rows k*n .. k*n+n-1 hold copy k, augmented with epoch k's uniforms, so copy k equals
    what the online path feeds the prefix in epoch k. dtype: how the bank is stored
    (default: the prefix's output dtype).
    """
    n = len(images)
    table = tf.constant(images)

    def copy_batches(k):
        uniforms = epoch_uniforms(n, seed, k)
        starts = tf.data.Dataset.range(0, n, batch_size)
        return starts.map(lambda s: augment(table[s : s + batch_size], uniforms[s : s + batch_size], aug_cfg))

    batches = tf.data.Dataset.range(copies).flat_map(copy_batches).prefetch(2).with_options(_options())
    np_dtype = dtype or tf.dtypes.as_dtype(prefix.output.dtype).as_numpy_dtype  # bf16 stays bf16
    return run_model(lambda x: prefix(x, training=False), batches, copies * n, prefix.output.shape[1:], np_dtype)


def load_bank(path: Path | str, copies: int, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The augmentation bank that extract_features wrote, checked against what the stage
    expects: `copies` copies of the training split whose labels are `labels`."""
    bank = load_arrays(path)
    if int(bank["copies"]) != copies or not np.array_equal(bank["train_labels"], labels):
        raise UserError(f"{path} holds {int(bank['copies'])} copies of {len(bank['train_labels'])} images, "
                        f"expected {copies} of {len(labels)}: run `dvc repro extract_features`")
    return bank
