"""Training shared by every training stage: runtime set-up (seed, precision), one fit loop
with dvclive logging, per-epoch checkpoints that a rerun resumes from, optional early
stopping, and the stage's model and metrics written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from stages.outputs import atomic_path, write_json
from stages.params import UserError

MODELS_DIR = Path("data/models")
CHECKPOINTS_DIR = Path("data/checkpoints")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


# ---------------------------------------------------------------- runtime

def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(requested: str, gpus: list | None = None, flags: set[str] | None = None) -> str:
    """`auto`: float16 on a CUDA GPU, bfloat16 on a CPU with native bf16 (AVX512-BF16 or
    AMX), float32 elsewhere (emulated bf16 is slower than float32)."""
    if requested != "auto":
        return requested
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return "mixed_float16"
    flags = cpu_flags() if flags is None else flags
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    return "float32"


def configure(train_cfg: dict) -> str:
    """Create the distribution strategy (first: multi-worker collectives must be set up
    before TensorFlow initialises), seed Python, NumPy and TensorFlow and set the precision
    policy; returns the policy."""
    strategy(train_cfg)
    keras.utils.set_random_seed(train_cfg["seed"])
    policy = resolve_precision(train_cfg["precision"])
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision: {policy} (asked for {train_cfg['precision']})")
    return policy


# ---------------------------------------------------------------- distribution

_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


def tf_config() -> dict:
    """The standard TF_CONFIG env var (cluster and this task), checked; {} when unset."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        ok = isinstance(workers, list) and workers and task["type"] in ("worker", "chief")
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            f'"task": {{"type": "worker", "index": 0}}}}, got {raw!r}'
        )
    return config


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute's MultiWorkerMirroredStrategy, with `reduce` fixed for Keras 3.

    Keras 3's fit (3.15, TF 2.21) calls strategy.reduce with a nest of values (a data batch,
    when it builds the model) and with axis=0 on scalar logs (every step); the multi-worker
    strategy accepts neither (keras-team/keras#20585). This reduces each value on its own,
    and a scalar across replicas only (it has no batch axis). Everything else is TF's.
    """

    def reduce(self, reduce_op, value, axis):
        def one(v):
            t = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            scalar = getattr(t, "shape", None) is not None and t.shape.rank == 0
            return super(MultiWorkerMirroredStrategy, self).reduce(reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(one, value)


def strategy(train_cfg: dict) -> tf.distribute.Strategy:
    """The tf.distribute strategy that `train.distribute` asks for (one per process).

    none: the default strategy (one device). mirrored: MirroredStrategy, synchronous
    data-parallel training over `train.devices` ([] = every local GPU, or the CPU when there
    is none). multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG, each
    worker using its local GPUs (or its CPU).

    `batch_size` stays the GLOBAL batch: each step splits one batch across all replicas
    and averages their gradients, so a run computes the same updates as on one device.
    The learning rate is used as given; it is not scaled with the number of replicas.
    """
    kind, devices = train_cfg.get("distribute", "none"), list(train_cfg.get("devices") or [])
    if devices and kind != "mirrored":
        raise UserError(f"train.devices only applies to train.distribute: mirrored (distribute is {kind})")
    cache_key = (kind, tuple(devices))
    if cache_key in _STRATEGIES:
        return _STRATEGIES[cache_key]
    if kind == "none":
        made = tf.distribute.get_strategy()
    elif kind == "mirrored":
        made = tf.distribute.MirroredStrategy(devices=devices or None)
    elif kind == "multi_worker":
        if not tf_config():
            raise UserError("train.distribute is multi_worker but TF_CONFIG is not set (see README, Scaling out)")
        made = MultiWorkerMirroredStrategy()
    else:
        raise UserError(f"train.distribute must be one of none, mirrored, multi_worker, got {kind!r}")
    if kind != "none":
        print(f"distribute: {kind}, {made.num_replicas_in_sync} replicas in sync")
    _STRATEGIES[cache_key] = made
    return made


def strategy_scope(train_cfg: dict):
    """Build, load and compile models inside this scope so that their variables (and the
    optimizer's) are mirrored and `fit` runs every step on all replicas."""
    return strategy(train_cfg).scope()


def compile_binary(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )


# ---------------------------------------------------------------- resume

def fingerprint(config: dict, inputs: list[Path | str]) -> str:
    """What a checkpoint is valid for: the params and the exact input files."""
    stats = [(str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in inputs]
    blob = json.dumps({"config": config, "inputs": stats}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Checkpoint(keras.callbacks.Callback):
    """Saves the model (with optimizer state) and the history after every epoch, so a run
    killed mid-way resumes from its last completed epoch. Outside DVC's outputs.

    keep_best: also save the weights of the epoch with the lowest val_loss so far
    (`best-<epoch>.weights.h5`), so the best epoch survives an interrupted run too."""

    def __init__(self, stage: str, key: str, history: list[dict], keep_best: bool = False):
        super().__init__()
        self.dir = CHECKPOINTS_DIR / stage
        self.key = key
        self.history = history
        self.keep_best = keep_best

    def restore(self) -> tuple[keras.Model | None, list[dict]]:
        """The checkpointed model and history if they belong to this exact run, else (None, [])."""
        try:
            state = json.loads((self.dir / "state.json").read_text())
            if state["key"] != self.key:
                print(f"checkpoint in {self.dir} is for other params or inputs: starting fresh")
                return None, []
            model = keras.models.load_model(self.dir / "model.keras", safe_mode=True)
        except FileNotFoundError:
            return None, []  # no checkpoint: the normal first run
        except (OSError, ValueError, KeyError) as e:
            print(f"checkpoint in {self.dir} is unreadable ({type(e).__name__}: {e}): starting fresh")
            return None, []
        print(f"resuming from {self.dir} after epoch {len(state['history'])}")
        return model, state["history"]

    def best_weights(self, epoch: int) -> Path:
        # Named by epoch: a crash between saving these and state.json cannot make the
        # history point at another epoch's weights.
        return self.dir / f"best-{epoch}.weights.h5"

    def on_epoch_end(self, epoch, logs=None):
        best = best_epoch(self.history) if self.keep_best else None
        if best == self.history[-1]["epoch"]:
            with atomic_path(self.best_weights(best), suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
        with atomic_path(self.dir / "model.keras", suffix=".keras") as tmp:
            self.model.save(tmp)
        # Written after the model: a state never points at a model that is not there.
        with atomic_path(self.dir / "state.json") as tmp:
            tmp.write_text(json.dumps({"key": self.key, "history": self.history}))
        if best is not None:
            for stale in self.dir.glob("best-*.weights.h5"):
                if stale != self.best_weights(best):
                    stale.unlink()

    def clear(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def best_epoch(history: list[dict]) -> int:
    """The epoch (1-based) of the lowest val_loss; the first one on ties."""
    return min(history, key=lambda r: r["val_loss"])["epoch"]


class History(keras.callbacks.Callback):
    """Appends each epoch's logs and wall seconds to a list (shared with Checkpoint) and
    logs them with dvclive, step = epoch number (1-based), one TSV per metric."""

    def __init__(self, history: list[dict], live):
        super().__init__()
        self.history = history
        self.live = live
        for row in history:  # a resumed run: DVC deleted the dvclive folder, log again
            self._log(row)

    def _log(self, row: dict) -> None:
        self.live.step = row["epoch"]
        for k in HISTORY_KEYS:
            if k in row:
                self.live.log_metric(k, row[k])
        self.live.next_step()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(logs[k]) for k in HISTORY_KEYS if k in logs}
        row["epoch"] = epoch + 1
        row["seconds"] = time.perf_counter() - self.started
        self.history.append(row)
        self._log(row)

    def on_train_end(self, logs=None):
        self.live.end()


# ---------------------------------------------------------------- fit

def fit(
    stage: str,
    model: keras.Model,
    make_train_ds: Callable[[int], tuple[tf.data.Dataset, int]],
    val_ds: tf.data.Dataset,
    epochs: int,
    early_stopping: int,
    key: str,
    restore_best: bool = False,
) -> tuple[keras.Model, list[dict]]:
    """Train `model` (compiled) for `epochs`, logging every epoch with dvclive into
    plots/<stage>/; resumes from this stage's checkpoint when `key` matches.

    restore_best (and early stopping, which implies it): end with the weights of the epoch
    of lowest val_loss, not of the last epoch. The epoch is chosen on the validation
    split, so the test split stays unseen; kept in the checkpoint, so it survives resumes.

    Returns the trained model (the checkpoint's, when resumed) and the per-epoch history.
    """
    from dvclive import Live

    history: list[dict] = []
    keep_best = restore_best or early_stopping > 0
    checkpoint = Checkpoint(stage, key, history, keep_best=keep_best)
    with model.distribute_strategy.scope():  # a resumed model is distributed like `model`
        resumed, past = checkpoint.restore()
    if resumed is not None:
        model = resumed
        history.extend(past)
    start = len(history)

    live = Live(dir=str(PLOTS_DIR / stage), dvcyaml=None, save_dvc_exp=False)
    callbacks = [History(history, live), checkpoint]
    if early_stopping:
        # Stops only; the best weights come from the checkpoint below, which (unlike
        # Keras' restore_best_weights) remembers epochs from before a resume.
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=early_stopping))
    if start < epochs:
        train_ds, steps = make_train_ds(start)
        model.fit(
            train_ds,
            steps_per_epoch=steps,
            epochs=epochs,
            initial_epoch=start,
            shuffle=False,  # the dataset shuffles, reproducibly per epoch
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,  # progress bars only when interactive
        )
    else:
        live.end()
    if keep_best and best_epoch(history) != history[-1]["epoch"]:
        model.load_weights(checkpoint.best_weights(best_epoch(history)))
    return model, history


def finish(stage: str, model: keras.Model, history: list[dict], n_train: int, started: float, **extra) -> None:
    """Save the model, metrics/<stage>.json and the curves; then drop the checkpoint."""
    from stages.report import training_curves

    training_curves(history, f"{stage}: loss and accuracy per epoch", PLOTS_DIR / stage / "curves.png")
    with atomic_path(MODELS_DIR / f"{stage}.keras", suffix=".keras") as tmp:
        model.save(tmp)
    write_json(METRICS_DIR / f"{stage}.json", summarize(history, n_train, time.perf_counter() - started, **extra))
    shutil.rmtree(CHECKPOINTS_DIR / stage, ignore_errors=True)


def restored(cfg: dict, history: list[dict]) -> dict:
    """{"restored_epoch": N} for metrics when the stage kept its best epoch, else {}."""
    return {"restored_epoch": best_epoch(history)} if cfg["restore_best"] or cfg["early_stopping"] else {}


def summarize(history: list[dict], n_train: int, wall_seconds: float, **extra) -> dict:
    """Final and best validation metrics of a run (numbers only, for dvc metrics)."""
    best = min(history, key=lambda r: r["val_loss"])
    last = history[-1]
    seconds = statistics.median(r["seconds"] for r in history)
    return {
        "val_accuracy": last["val_accuracy"],
        "val_loss": last["val_loss"],
        "train_accuracy": last["accuracy"],
        "train_loss": last["loss"],
        "best_val_loss": best["val_loss"],
        "best_val_loss_epoch": best["epoch"],
        "val_accuracy_at_best_val_loss": best["val_accuracy"],
        "max_val_accuracy": max(r["val_accuracy"] for r in history),
        "epochs_run": len(history),
        "seconds_per_epoch": round(seconds, 3),
        "train_images_per_second": round(n_train / seconds, 1),
        "wall_seconds": round(wall_seconds, 1),
        **{k: round(v, 1) for k, v in extra.items()},
    }


# ---------------------------------------------------------------- image models

def train_on_images(
    stage: str,
    model: keras.Model,
    train: dict,
    val: dict,
    cfg: dict,
    params: dict,
    started: float,
    augment: bool,
    bank: int = 0,
    inputs: tuple[Path | str, ...] = (),
) -> None:
    """Train an image model on `train` (a split from datasets.load_split), validate on
    `val`, save the model, its metrics and its curves.

    augment: augment training images (Chollet's ImageDataGenerator settings).
    bank: if > 0 (requires augment and a frozen prefix), push `bank` augmented copies of
      each image through the frozen layers once; epochs then train only the layers after
      them on those activations. Same model, same maths, a fraction of the compute.

    Under a `train.distribute` strategy, `model` must have been built (or loaded) inside
    strategy_scope; the bank is computed once per worker on its first device (inference),
    and only the trainable suffix is trained on all replicas.
    """
    from stages import datasets as D
    from stages.models import split_frozen_prefix

    seed, aug_cfg, batch = params["train"]["seed"], params.get("augmentation"), cfg["batch_size"]
    n, extra = len(train["labels"]), {}
    if bank and augment:
        with strategy_scope(params["train"]):  # the suffix model and its optimizer belong to the strategy
            prefix, trainable = split_frozen_prefix(model)
        t = time.perf_counter()
        print(f"augmentation bank: {bank} copies of {n} images through {len(prefix.layers) - 1} frozen layers")
        make_batch = D.bank_inputs(D.build_bank(prefix, train["images"], bank, seed, aug_cfg, batch), n)
        val_inputs = D.run_model(
            lambda x: prefix(x, training=False),
            D.eval_batches(val["images"], None, batch),
            len(val["images"]),
            prefix.output.shape[1:],
            tf.dtypes.as_dtype(prefix.output.dtype).as_numpy_dtype,
        )
        extra["bank_seconds"] = time.perf_counter() - t
    else:
        trainable = model
        make_batch = D.augmented_images(train["images"], seed, aug_cfg) if augment else D.plain_inputs(train["images"])
        val_inputs = val["images"]
    with strategy_scope(params["train"]):
        compile_binary(trainable, cfg["learning_rate"])

    def make_train_ds(start_epoch):
        return D.training_batches(n, train["labels"], batch, seed, cfg["epochs"], make_batch, start_epoch)

    key = fingerprint(params, [D.ARRAYS_DIR / "train.npz", D.ARRAYS_DIR / "validation.npz", *inputs])
    val_ds = D.eval_batches(val_inputs, val["labels"], batch)
    trained, history = fit(stage, trainable, make_train_ds, val_ds, cfg["epochs"], cfg["early_stopping"], key,
                           cfg["restore_best"])
    if trainable is model:
        model = trained  # the checkpoint's model, with its optimizer state, when resumed
    else:
        copy_weights(trained, model)
    finish(stage, model, history, n, started, **extra, **restored(cfg, history))


def copy_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copy weights layer by layer, by name (a no-op when src shares dst's layers)."""
    for layer in src.layers:
        if layer.weights:
            target = dst.get_layer(layer.name)
            if target is not layer:
                target.set_weights(layer.get_weights())
