"""What a training run's curves say, computed from its per-epoch history (never written by
hand): when the validation loss stopped improving, what the training loss and the
train - validation accuracy gap did from then on, and a label with a one-sentence reason.

A history is a list of per-epoch dicts with `epoch` (1-based), `loss`, `accuracy`,
`val_loss` and `val_accuracy`: what `training.fit` returns, and what `study.read_history`
reads back from a training stage's history file (`plots/<stage>/history.json`).

Overfitting as the textbooks read it: the validation loss no longer improves while the
training loss keeps falling; the train - validation accuracy gap (and a validation loss
climbing back up) says how clearly. Validation curves on 1000 images are noisy
(`train_custom_aug`'s val_loss nearly doubles for single epochs), so nothing below reads a
single epoch:

- the *level* of a curve at an epoch is its median over the `WINDOW` epochs centred on it
  (a running median: one or two spikes in a window cannot move it); the *best level* of
  val_loss is its lowest level in the run;
- the *onset* is the first epoch whose val_loss level comes within `TOLERANCE` of the best
  level: from then on val_loss never improved by more than that, so it stopped improving
  there (not at the raw minimum, which on a flat noisy stretch is wherever the luckiest
  epoch fell);
- the *end* of the run is the median of its last `WINDOW` epochs: val_loss at the end (its
  rise above the best level), training loss at the end (its fall from its level at the
  onset) and the accuracy gap at the end.

Labels, checked in this order (thresholds are the constants below):

- `too short`: fewer than `MIN_EPOCHS` epochs; no level can be read.
- `still improving`: fewer than `MIN_STALL` epochs after the onset: val_loss was still
  reaching new best levels near the end, so more epochs would probably help.
- `overfitting`: val_loss stopped improving at the onset while training loss fell at least
  `TRAIN_FALL` after it. Clearly so (`Diagnosis.clear`) when the accuracy gap at the end is
  at least `GAP` or val_loss ended at least `RISE` above its best level; mildly otherwise.
- `unstable`: val_loss ended `RISE` above its best level although training loss did not
  keep falling: not overfitting but something else (a learning rate too high, divergence).
- `converged`: val_loss and training loss both levelled off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.lib.study import HISTORY_KEYS, best_row

# Epochs per running median, and per end-of-run median. Five: up to two spikes in a row
# (train_custom_aug has several) cannot move a median of five, while a real turn of the
# curve shows within two epochs of where it happens.
WINDOW = 5
# An improvement of val_loss's level smaller than this (relative) after an epoch does not
# count: a levelled-off val_loss on 1000 validation images still wanders by a few percent
# after the running median, so a smaller gain is indistinguishable from noise.
TOLERANCE = 0.03
# Epochs val_loss must have stopped improving for before a run counts as stalled: one
# window, the fewest epochs in which a level can be read at all.
MIN_STALL = WINDOW
# Training loss at the end at least this much (relative) below its level at the onset =
# still falling: the model kept fitting its training images while validation did not
# follow. Less is within the epoch-to-epoch wander of an augmented run's training loss.
TRAIN_FALL = 0.10
# Train - validation accuracy gap at the end that is clearly more than sampling noise: the
# standard error of the difference of two accuracies near .75 on 2000 and 1000 images is
# about .017, so .05 is three of them. (Dropout and augmentation make the logged training
# accuracy pessimistic, so a regularised model's gap is if anything understated.)
GAP = 0.05
# val_loss at the end this far (relative) above its best level = it climbed back up, more
# than a levelled-off curve wanders (see TOLERANCE); overconfident errors can raise
# val_loss long before they cost accuracy.
RISE = 0.10
# Fewer epochs than one window: no level to read.
MIN_EPOCHS = WINDOW


@dataclass(frozen=True)
class Diagnosis:
    label: str  # overfitting | still improving | converged | unstable | too short
    epochs: int
    best_epoch: int  # epoch of minimum validation loss (the one restore_best keeps)
    best_val_loss: float
    onset: int  # epoch whose val_loss level first came within TOLERANCE of the best level
    stalled: int  # epochs after the onset: how long val_loss has not improved
    best_level: float  # lowest running-median val_loss
    end_val_loss: float  # median val_loss of the last WINDOW epochs
    rise: float  # end_val_loss relative to best_level, minus 1
    onset_loss: float  # training loss level at the onset
    end_loss: float  # median training loss of the last WINDOW epochs
    train_fall: float  # 1 - end_loss / onset_loss
    onset_gap: float  # training minus validation accuracy (levels) at the onset
    end_accuracy: float  # median training accuracy of the last WINDOW epochs
    end_val_accuracy: float  # median validation accuracy of the last WINDOW epochs
    kept_epoch: int | None = None  # the epoch whose weights the stage saved, when not the last

    @property
    def final_gap(self) -> float:
        """Training minus validation accuracy at the end (medians of the last WINDOW epochs)."""
        return self.end_accuracy - self.end_val_accuracy

    @property
    def clear(self) -> bool:
        """Overfitting shows beyond noise: a gap of at least GAP, or val_loss RISE back up."""
        return self.final_gap >= GAP or self.rise >= RISE

    @property
    def explanation(self) -> str:
        """Why the label, in one sentence from the numbers (no epoch kept, no minimum)."""
        stopped = (f"validation loss stopped improving there (its {WINDOW}-epoch median came within {TOLERANCE:.0%} "
                   f"of its best level, {self.best_level:.3f}, and went no lower)")
        fell = (f"training loss {'kept falling' if self.label == 'overfitting' else 'fell'}, by {self.train_fall:.0%} "
                f"to {self.end_loss:.3f}")
        gap = (f"at the end it is right on {self.end_accuracy:.1%} of its training images against "
               f"{self.end_val_accuracy:.1%} of the validation ones (gap {self.final_gap:+.3f}, from "
               f"{self.onset_gap:+.3f} at the onset)")
        ends = f"validation loss ends {abs(self.rise):.0%} {'above' if self.rise >= 0 else 'below'} its best level"
        at = f"from epoch {self.onset} of {self.epochs}"
        if self.label == "overfitting" and self.clear:
            return f"overfitting {at}: {stopped} while {fell}; {gap}, and {ends}"
        if self.label == "overfitting":
            return (f"overfitting {at}, mildly: {stopped} while {fell}; but {gap}, under {GAP:.2f}, and {ends}, "
                    f"under the {RISE:.0%} of a clear rise")
        if self.label == "unstable":
            return (f"unstable {at}: {ends}, {RISE:.0%} or more, while training loss did not keep falling (it "
                    f"changed by {-self.train_fall:+.0%} after that epoch): not overfitting, look at the learning rate")
        if self.label == "converged":
            return f"converged (levelled off) {at}: {stopped}, and {fell}, less than {TRAIN_FALL:.0%}; {ends}"
        if self.label == "still improving":
            return (f"still improving: validation loss reached its best level ({self.best_level:.3f}) only at epoch "
                    f"{self.onset} of {self.epochs}, so more epochs would probably help")
        return f"too short to judge: {self.epochs} epoch(s), fewer than the {MIN_EPOCHS} a level needs"

    @property
    def kept(self) -> str:
        """Which weights the stage kept, against the onset ('' when it kept the last epoch's)."""
        if self.kept_epoch is None or self.kept_epoch == self.epochs:
            return ""
        if self.label in ("overfitting", "unstable") and self.kept_epoch != self.onset:
            apart = abs(self.onset - self.kept_epoch)
            when = f"{apart} epoch{'s' if apart > 1 else ''} {'before' if self.kept_epoch < self.onset else 'after'}"
            return f"the weights kept are epoch {self.kept_epoch}'s (restore_best), {when} the onset"
        return f"the weights kept are epoch {self.kept_epoch}'s (restore_best)"

    @property
    def summary(self) -> str:
        """The explanation and which weights were kept."""
        return f"{self.explanation}; {self.kept}" if self.kept else self.explanation

    @property
    def line(self) -> str:
        """The summary and the raw minimum of val_loss (the epoch the figures mark)."""
        return f"{self.summary} (min val_loss {self.best_val_loss:.4f} at epoch {self.best_epoch})"


def _check(history: list[dict]) -> None:
    if not history:
        raise ValueError("empty history: no epoch to diagnose")
    for row in history:
        missing = [k for k in ("epoch", *HISTORY_KEYS) if k not in row]
        if missing:
            raise ValueError(f"history row {row} lacks {', '.join(missing)}")
    epochs = [row["epoch"] for row in history]
    if epochs != sorted(epochs) or len(set(epochs)) != len(epochs):
        raise ValueError(f"history epochs must increase: {epochs}")


def running_median(values, window: int = WINDOW) -> np.ndarray:
    """Median of the `window` values centred on each one (fewer at the two ends)."""
    values = np.asarray(values, dtype=np.float64)
    half = window // 2
    return np.array([np.median(values[max(0, i - half): i + half + 1]) for i in range(len(values))])


def label_of(epochs: int, stalled: int, train_fall: float, rise: float) -> str:
    """The label from the numbers a Diagnosis holds (see the module doc for the order)."""
    if epochs < MIN_EPOCHS:
        return "too short"
    if stalled < MIN_STALL:
        return "still improving"
    if train_fall >= TRAIN_FALL:
        return "overfitting"
    return "unstable" if rise >= RISE else "converged"


def diagnose(history: list[dict], kept_epoch: int | None = None) -> Diagnosis:
    """The levels, onset and label of one run (see module doc); `kept_epoch`, the epoch
    whose weights the stage saved (metrics `restored_epoch`), is only reported."""
    _check(history)
    series = {k: np.array([r[k] for r in history], dtype=np.float64) for k in HISTORY_KEYS}
    levels = {k: running_median(v) for k, v in series.items()}
    end = {k: float(np.median(v[-WINDOW:])) for k, v in series.items()}
    n = len(history)
    best_level = float(levels["val_loss"].min())
    at = int(np.flatnonzero(levels["val_loss"] <= best_level + TOLERANCE * abs(best_level))[0])
    onset_loss = float(levels["loss"][at])
    train_fall = float(1 - end["loss"] / onset_loss) if onset_loss > 0 else 0.0
    rise = float(end["val_loss"] / best_level - 1) if best_level > 0 else 0.0
    best = best_row(history)
    return Diagnosis(
        label=label_of(n, n - 1 - at, train_fall, rise),
        epochs=n,
        best_epoch=int(best["epoch"]),
        best_val_loss=float(best["val_loss"]),
        onset=int(history[at]["epoch"]),
        stalled=n - 1 - at,
        best_level=best_level,
        end_val_loss=end["val_loss"],
        rise=rise,
        onset_loss=onset_loss,
        end_loss=end["loss"],
        train_fall=train_fall,
        onset_gap=float(levels["accuracy"][at] - levels["val_accuracy"][at]),
        end_accuracy=end["accuracy"],
        end_val_accuracy=end["val_accuracy"],
        kept_epoch=kept_epoch,
    )
