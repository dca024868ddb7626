"""What a training run's curves say, computed from its per-epoch history (never written by
hand): the epoch of minimum validation loss, the train - validation accuracy gap at the
end, and a one-line diagnosis.

A history is a list of per-epoch dicts with `epoch` (1-based), `loss`, `accuracy`,
`val_loss` and `val_accuracy`: what `training.fit` returns, and what `read_history` reads
back from the dvclive TSVs of a training stage (`plots/<stage>/plots/metrics/*.tsv`).

Labels, checked in this order (thresholds are the constants below):

- `overfitting`: validation loss rises clearly after its minimum while training loss keeps
  falling. Clearly: on val_loss smoothed by a trailing mean over `SMOOTH` epochs (so that
  one noisy epoch decides nothing), the last value is at least `RISE` (10%) above the
  smoothed minimum. Keeps falling: the last training loss is at least `TRAIN_FALL` (5%)
  below the training loss at the epoch of minimum val_loss.
- `unstable`: validation loss rises as clearly, but training loss does not keep falling
  (too high a learning rate, divergence): no overfitting to speak of, something else.
- `still improving`: the minimum is within the last `NEAR_END` epochs and validation loss
  still trends down: the least-squares line through the last `TREND_WINDOW` val_loss
  values drops by at least `IMPROVING` (2%) of the minimum across that window. More epochs
  would probably help.
- `stable`: none of the above: validation loss has plateaued within `RISE` of its minimum.
- `too short`: fewer than `MIN_EPOCHS` epochs; no trend can be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.lib.study import HISTORY_KEYS, best_row, history_file

RISE = 0.10  # val_loss this far (relative) above its minimum = a clear rise
SMOOTH = 3  # val_loss is averaged over this many trailing epochs before measuring its rise
TRAIN_FALL = 0.05  # training loss this far (relative) below its value at the minimum = still falling
NEAR_END = 2  # a minimum in the last NEAR_END epochs counts as "at the end"
TREND_WINDOW = 5  # epochs of val_loss the end trend is fitted on
IMPROVING = 0.02  # the trend line must drop this much (relative to the minimum) across the window
MIN_EPOCHS = 2


@dataclass(frozen=True)
class Diagnosis:
    label: str  # overfitting | unstable | still improving | stable | too short
    epochs: int
    best_epoch: int  # epoch of minimum validation loss
    best_val_loss: float
    final_val_loss: float
    final_gap: float  # training minus validation accuracy at the last epoch
    rise: float  # relative rise of smoothed val_loss from its minimum to the end
    train_fall: float  # relative fall of training loss from the minimum's epoch to the end
    trend: float  # relative change of the val_loss trend line across the last window (< 0: falling)

    @property
    def line(self) -> str:
        """One sentence, e.g. 'overfitting from epoch 6: val_loss +35% ...'."""
        gap = f"train - val accuracy gap at the end {self.final_gap:+.3f}"
        best = f"min val_loss {self.best_val_loss:.4f} at epoch {self.best_epoch} of {self.epochs}"
        window = min(TREND_WINDOW, self.epochs)
        what = {
            "overfitting": f"overfitting from epoch {self.best_epoch}: val_loss {self.rise:+.0%} above its minimum "
                           f"by the end while training loss fell {self.train_fall:.0%}",
            "unstable": f"unstable after epoch {self.best_epoch}: val_loss {self.rise:+.0%} above its minimum "
                        "and training loss not falling",
            "still improving": f"still improving at the last epoch: val_loss trend {self.trend:+.1%} over the last "
                               f"{window} epochs",
            "stable": f"stable: val_loss levelled off (last {self.rise:+.0%} over its smoothed minimum, trend "
                      f"{self.trend:+.1%} over the last {window} epochs)",
        }.get(self.label, f"too short to judge: {self.epochs} epoch(s)")
        return f"{what} ({best}; {gap})"


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


def diagnose(history: list[dict]) -> Diagnosis:
    """Minimum validation loss, final accuracy gap and a label for one run (see module doc)."""
    _check(history)
    val_loss = np.array([r["val_loss"] for r in history], dtype=np.float64)
    loss = np.array([r["loss"] for r in history], dtype=np.float64)
    n = len(history)
    b = history.index(best_row(history))
    best = float(val_loss[b])
    scale = max(abs(best), 1e-12)
    last = history[-1]

    after = n - 1 - b  # epochs after the minimum
    smooth = np.array([val_loss[max(0, i - SMOOTH + 1): i + 1].mean() for i in range(n)])
    rise = float(smooth[-1] / max(abs(smooth.min()), 1e-12) - 1)
    train_fall = float(1 - loss[-1] / loss[b]) if loss[b] > 0 else 0.0
    window = val_loss[-min(TREND_WINDOW, n):]
    if len(window) >= 2:
        slope = np.polyfit(np.arange(len(window)), window, 1)[0]
        trend = float(slope * (len(window) - 1) / scale)
    else:
        trend = 0.0

    if n < MIN_EPOCHS:
        label = "too short"
    elif after and rise >= RISE:
        label = "overfitting" if train_fall >= TRAIN_FALL else "unstable"
    elif after < NEAR_END and -trend >= IMPROVING:
        label = "still improving"
    else:
        label = "stable"
    return Diagnosis(
        label=label,
        epochs=n,
        best_epoch=int(history[b]["epoch"]),
        best_val_loss=best,
        final_val_loss=float(val_loss[-1]),
        final_gap=float(last["accuracy"] - last["val_accuracy"]),
        rise=rise,
        train_fall=train_fall,
        trend=trend,
    )


def read_history(live_dir: Path | str) -> list[dict]:
    """A run's history from the dvclive TSVs under `live_dir` (plots/<stage>): one
    `plots/metrics/<metric>.tsv` per metric, columns `step` (the epoch) and the metric."""
    import pandas as pd

    frame = None
    for key in HISTORY_KEYS:
        path = history_file(live_dir, key)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the training stage that logs it (dvc repro)")
        column = pd.read_csv(path, sep="\t")[["step", key]].drop_duplicates("step", keep="last")
        frame = column if frame is None else frame.merge(column, on="step", how="inner")
    frame = frame.sort_values("step")
    return [
        {"epoch": int(row["step"]), **{k: float(row[k]) for k in HISTORY_KEYS}}
        for _, row in frame.iterrows()
    ]
