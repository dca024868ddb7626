"""The fit loop shared by every training stage: each epoch's losses and accuracies written to
the stage's history file (plots/<stage>/history.json, its one `plots:` output), per-epoch
checkpoints that a rerun resumes from, optional early stopping and best-epoch restore, and
the stage's model and metrics written atomically. Training stages write data only (model,
metrics, history); the figures are drawn by `evaluate` (stages/figures/report.py)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from stages.lib.outputs import atomic_path, write_json
from stages.lib.params import UserError
from stages.lib.runtime import configure, machine, strategy_scope
from stages.lib.study import (ARRAYS_DIR, BANK_FILE, HISTORY_KEYS, best_row, checkpoints_dir, history_file,
                              history_rows, metrics_file, model_file)


VALIDATION_BATCH = 200


def compile_binary(model: keras.Model, learning_rate: float, decay_steps: int = 0) -> None:
    """RMSprop on binary cross-entropy. decay_steps > 0: the rate follows a cosine from
    `learning_rate` down to 0 over that many steps (the schedule is saved with the
    optimizer, so a resumed run continues it where it stopped)."""
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )


# ---------------------------------------------------------------- resume

def file_digest(path: Path | str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(config: dict, inputs: list[Path | str]) -> str:
    """What a checkpoint is valid for: the params and the content of the input files (not
    their times, so a checkpoint outside the work tree survives a fresh clone and
    `dvc checkout` of the same data)."""
    digests = {str(p): file_digest(p) for p in inputs}
    blob = json.dumps({"config": config, "inputs": digests}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Checkpoint(keras.callbacks.Callback):
    """Saves the model (with optimizer state) and the history after every epoch, so a run
    killed mid-way resumes from its last completed epoch. Outside DVC's outputs.

    keep_best: also save the weights of the epoch with the lowest val_loss so far
    (`best-<epoch>.weights.h5`), so the best epoch survives an interrupted run too."""

    def __init__(self, stage: str, key: str, history: list[dict], keep_best: bool = False):
        super().__init__()
        self.dir = checkpoints_dir() / stage
        self.key = key
        self.history = history
        self.keep_best = keep_best

    def restore(self) -> tuple[keras.Model | None, list[dict]]:
        """The checkpointed model and history if they belong to this exact run, else (None, []).

        A checkpoint that cannot be read (a damaged file, a half-copied folder, another
        Keras) must never block the stage: it is moved aside and training starts fresh."""
        if not (self.dir / "state.json").exists():
            return None, []  # no checkpoint: the normal first run
        try:
            state = json.loads((self.dir / "state.json").read_text())
            if state["key"] != self.key:
                print(f"checkpoint in {self.dir} is for other params or inputs: starting fresh")
                return None, []
            model = keras.models.load_model(self.dir / "model.keras", safe_mode=True)
            history = [dict(row) for row in state["history"]]
        except Exception as e:  # noqa: BLE001 - whatever is wrong with it, do not resume from it
            aside = self.dir.with_name(f"{self.dir.name}.unreadable")
            shutil.rmtree(aside, ignore_errors=True)
            self.dir.rename(aside)
            print(f"checkpoint in {self.dir} is unreadable ({type(e).__name__}: {str(e)[:200]}): "
                  f"moved to {aside}, starting fresh")
            return None, []
        print(f"resuming from {self.dir} after epoch {len(history)}")
        return model, history

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


def best_epoch(history: list[dict]) -> int:
    """The epoch (1-based) of the lowest val_loss; the first one on ties."""
    return best_row(history)["epoch"]


class History(keras.callbacks.Callback):
    """Appends each epoch's logs and wall seconds to a list (shared with Checkpoint) and
    writes the history so far to the stage's history file after every epoch, so the plots
    page shows a run in progress (`dvc plots show`)."""

    def __init__(self, stage: str, history: list[dict]):
        super().__init__()
        self.path = history_file(stage)
        self.history = history

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(logs[k]) for k in HISTORY_KEYS if k in logs}
        row["epoch"] = epoch + 1
        row["seconds"] = time.perf_counter() - self.started
        self.history.append(row)
        write_json(self.path, {"history": history_rows(self.history)})


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
    """Train `model` (compiled) for `epochs`, writing every epoch's losses and accuracies to
    plots/<stage>/history.json (study.history_file); resumes from this stage's checkpoint when `key` matches.

    restore_best (and early stopping, which implies it): end with the weights of the epoch
    of lowest val_loss, not of the last epoch. The epoch is chosen on the validation
    split, so the test split stays unseen; kept in the checkpoint, so it survives resumes.

    Returns the trained model (the checkpoint's, when resumed) and the per-epoch history.
    """
    history: list[dict] = []
    keep_best = restore_best or early_stopping > 0
    checkpoint = Checkpoint(stage, key, history, keep_best=keep_best)
    with model.distribute_strategy.scope():  # a resumed model is distributed like `model`
        resumed, past = checkpoint.restore()
    if resumed is not None:
        model = resumed
        history.extend(past)
    start = len(history)

    callbacks = [History(stage, history), checkpoint]
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
    if keep_best and best_epoch(history) != history[-1]["epoch"]:
        model.load_weights(checkpoint.best_weights(best_epoch(history)))
    return model, history


# ---------------------------------------------------------------- one training function


@dataclass
class Run:
    """What `train` returns: the trained model, its per-epoch history and what it cost."""

    model: keras.Model
    history: list[dict]
    n_train: int
    wall_seconds: float
    extra: dict = field(default_factory=dict)  # numbers for its record: frozen_seconds, restored_epoch


def train(
    stage: str,
    model: keras.Model,
    train_inputs: np.ndarray,
    train_labels: np.ndarray,
    val_inputs: np.ndarray,
    val_labels: np.ndarray,
    cfg: dict,
    params: dict,
    data_files: tuple[Path | str, ...],
    augment: bool = False,
    bank: dict | None = None,
) -> Run:
    """Train `model` on (train_inputs, train_labels), validate on the validation arrays, and
    time itself. Inputs are images (uint8 pixels) or features: the model decides.

    cfg: the stage's params section (batch_size, epochs, learning_rate, early_stopping,
      restore_best); params: every section the stage read (for the checkpoint key).
    data_files: the files the arrays came from; with the params they decide whether a
      checkpoint belongs to this run.
    augment: augment training images (Chollet's ImageDataGenerator settings), afresh
      every epoch (the online path).
    bank: instead, the augmentation bank of extract_features (datasets.load_bank): the
      activations of `bank["layer"]` for K augmented copies of each training image and for
      the validation images. The model is cut after that layer (everything below it must
      be frozen); frozen layers above it run once over the bank; epoch e trains the rest
      on copy e mod K. Same model, same maths as the online path, a fraction of the compute.

    Under a `train.distribute` strategy, `model` must have been built (or loaded) inside
    strategy_scope; frozen layers run once per worker on its first device (inference),
    and only the trainable suffix is trained on all replicas.
    """
    from stages.lib import datasets
    from stages.lib.models import split_at, split_frozen_prefix

    started = time.perf_counter()
    seed, aug_cfg, batch = params["train"]["seed"], params.get("augmentation"), cfg["batch_size"]
    n, extra = len(train_labels), {}
    if bank is not None:
        with strategy_scope(params["train"]):  # the suffix model and its optimizer belong to the strategy
            below, above = split_at(model, str(bank["layer"]))
            frozen, trainable = split_frozen_prefix(above)
        if below.trainable_weights:
            raise UserError(f"{below.trainable_weights[0].path} is trainable but lies below {bank['layer']}, "
                            "where the augmentation bank is cut: set vgg16.augment_bank: 0 to train it")
        train_inputs, val_inputs = bank["train"], bank["validation"]
        if frozen is not None:
            t = time.perf_counter()
            print(f"frozen layers {frozen.layers[1].name}..{frozen.layers[-1].name} once over the bank "
                  f"({len(train_inputs)} + {len(val_inputs)} activations)")
            train_inputs, val_inputs = (
                datasets.run_model(lambda x: frozen(x, training=False), datasets.eval_batches(a, None, batch), len(a),
                                   frozen.output.shape[1:], tf.as_dtype(frozen.output.dtype).as_numpy_dtype)
                for a in (train_inputs, val_inputs)
            )
            extra["frozen_seconds"] = time.perf_counter() - t
        make_batch = datasets.bank_inputs(train_inputs, n)
    else:
        trainable = model
        make_batch = datasets.augmented_images(train_inputs, seed, aug_cfg) if augment else datasets.plain_inputs(train_inputs)
    with strategy_scope(params["train"]):
        steps = cfg["epochs"] * math.ceil(n / batch) if cfg["lr_decay"] == "cosine" else 0
        compile_binary(trainable, cfg["learning_rate"], decay_steps=steps)

    # train.class_weight balanced: each class weighs the same in the loss (imbalanced data);
    # none: every image weighs 1, as in Chollet's balanced study.
    weights = datasets.class_weight_balanced(train_labels) if params["train"]["class_weight"] == "balanced" else None

    def make_train_ds(start_epoch):
        return datasets.training_batches(n, train_labels, batch, seed, cfg["epochs"], make_batch, start_epoch,
                                         sample_weights=weights)

    key = fingerprint(params, list(data_files))
    # Validation is inference: a bigger batch than training's is a little faster on 2 cores
    # (benchmarks/: 1.09x at 200 against 20) and gives the same mean loss and accuracy.
    val_ds = datasets.eval_batches(val_inputs, val_labels, max(batch, VALIDATION_BATCH))
    trained, history = fit(stage, trainable, make_train_ds, val_ds, cfg["epochs"], cfg["early_stopping"], key,
                           cfg["restore_best"])
    if trainable is model:
        model = trained  # the checkpoint's model, with its optimizer state, when resumed
    else:
        copy_weights(trained, model)
    return Run(model, history, n, time.perf_counter() - started, {**extra, **restored(cfg, history)})


def train_vgg16_augmented(stage: str, build_model: Callable[[int], keras.Model], params: dict,
                          start_file: Path) -> None:
    """train_aug_frozen and finetune: build the model (`build_model(image_size)`, inside the
    strategy's scope), train it on augmented training images and save it. With
    `vgg16.augment_bank: K` > 0 on extract_features' bank (K augmented copies through blocks
    1-4), with 0 augmenting afresh every epoch. start_file: where the starting weights came
    from (the ImageNet weights or train_aug_frozen's model), part of the checkpoint key."""
    from stages.lib import datasets

    configure(params["train"])
    train_split, val_split = datasets.load_split("train"), datasets.load_split("validation")
    with strategy_scope(params["train"]):
        model = build_model(train_split["images"].shape[1])
    copies = params["vgg16"]["augment_bank"]
    bank = datasets.load_bank(BANK_FILE, copies, train_split["labels"]) if copies else None
    run = train(
        stage, model, train_split["images"], train_split["labels"], val_split["images"], val_split["labels"],
        params[stage], params,
        data_files=(ARRAYS_DIR / "train.npz", ARRAYS_DIR / "validation.npz", start_file, *([BANK_FILE] if bank else [])),
        augment=True, bank=bank,
    )
    save(stage, run.model, run)


def restored(cfg: dict, history: list[dict]) -> dict:
    """{"restored_epoch": N} for the record when the stage kept its best epoch, else {}."""
    return {"restored_epoch": best_epoch(history)} if cfg["restore_best"] or cfg["early_stopping"] else {}


def save(stage: str, model: keras.Model, run: Run) -> None:
    """Write the stage's model, its DVC metrics (kept_metrics) and its history file with
    the run record (summarize and the machine); then drop its checkpoint."""
    with atomic_path(model_file(stage), suffix=".keras") as tmp:
        model.save(tmp)
    write_json(history_file(stage), {
        "history": history_rows(run.history),
        "run": {**summarize(run.history, run.n_train, run.wall_seconds, **run.extra), **machine()},
    })
    write_json(metrics_file(stage), kept_metrics(run.history, run.extra.get("restored_epoch")))
    shutil.rmtree(checkpoints_dir() / stage, ignore_errors=True)


def kept_metrics(history: list[dict], restored_epoch: int | None) -> dict:
    """The stage's DVC metrics, what a user compares between runs: the epochs run, the epoch
    whose weights were saved and that epoch's validation accuracy. The rest is its record."""
    kept = next(row for row in history if row["epoch"] == restored_epoch) if restored_epoch else history[-1]
    return {"epochs": len(history), "kept_epoch": kept["epoch"], "val_accuracy": round(kept["val_accuracy"], 4)}


def summarize(history: list[dict], n_train: int, wall_seconds: float, **extra) -> dict:
    """A run's record: the last epoch's and the best losses and accuracies, and what it
    cost. (The kept epoch and its validation accuracy are the stage's DVC metrics.)"""
    best = best_row(history)
    last = history[-1]
    seconds = statistics.median(r["seconds"] for r in history)
    return {
        "final_train_loss": last["loss"],
        "final_train_accuracy": last["accuracy"],
        "final_val_loss": last["val_loss"],
        "final_val_accuracy": last["val_accuracy"],
        "best_val_loss": best["val_loss"],
        "best_val_loss_epoch": best["epoch"],
        "max_val_accuracy": max(r["val_accuracy"] for r in history),
        "epochs_run": len(history),
        "seconds_per_epoch": round(seconds, 3),
        "train_images_per_second": round(n_train / seconds, 1),
        "wall_seconds": round(wall_seconds, 1),
        **{k: round(v, 1) for k, v in extra.items()},
    }


def copy_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copy weights layer by layer, by name (a no-op when src shares dst's layers)."""
    for layer in src.layers:
        if layer.weights:
            target = dst.get_layer(layer.name)
            if target is not layer:
                target.set_weights(layer.get_weights())
