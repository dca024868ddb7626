"""The diagnosis of a training run from its history: each label on synthetic curves, every
threshold from both sides, robustness to one-epoch spikes, the committed run's own
histories, and histories read back from a training stage's history file."""

from __future__ import annotations


import numpy as np
import pytest

from helpers import ROOT
from stages.lib import diagnosis
from stages.lib.diagnosis import GAP, MIN_EPOCHS, MIN_STALL, RISE, TOLERANCE, TRAIN_FALL, WINDOW
from stages.lib.study import history_file, history_rows, read_history, training_record


def history(val_loss, loss=None, accuracy=None, val_accuracy=None):
    n = len(val_loss)
    loss = np.geomspace(0.7, 0.05, n) if loss is None else loss
    accuracy = np.linspace(0.6, 0.99, n) if accuracy is None else accuracy
    val_accuracy = np.linspace(0.6, 0.75, n) if val_accuracy is None else val_accuracy
    return [
        {"epoch": i + 1, "loss": float(loss[i]), "accuracy": float(accuracy[i]),
         "val_loss": float(val_loss[i]), "val_accuracy": float(val_accuracy[i]), "seconds": 1.0}
        for i in range(n)
    ]


def plateau(first: int, n: int, level: float = 1.0, start: float = 2.0) -> np.ndarray:
    """val_loss falling by clearly more than TOLERANCE per epoch until epoch `first`, then
    flat at `level` until epoch n: its level first reaches `level` at epoch `first`."""
    return np.r_[np.geomspace(start, level, first)[:-1], [level] * (n - first + 1)]


# ---------------------------------------------------------------- the labels


def test_overfitting_from_where_val_loss_stopped_improving():
    # Chollet's small convnet: val_loss bottoms out at epoch 6, then climbs for 24 epochs
    # while training loss keeps falling and the accuracies part.
    val = np.r_[np.linspace(0.69, 0.56, 6), 0.56 + 0.015 * np.arange(1, 25)]
    d = diagnosis.diagnose(history(val))
    assert d.label == "overfitting" and d.clear
    # The onset: where the 5-epoch median first comes within TOLERANCE of its lowest, at the
    # bottom of the V (one epoch early: the median of a V is flat across its bottom).
    assert d.onset in (5, 6) and d.best_epoch == 6 and d.epochs == 30 and d.stalled == 30 - d.onset
    assert d.best_val_loss == pytest.approx(0.56)
    assert d.final_gap == pytest.approx(np.median(np.linspace(0.6, 0.99, 30)[-5:] - np.linspace(0.6, 0.75, 30)[-5:]))
    assert d.line.startswith(f"overfitting from epoch {d.onset} of 30: validation loss stopped improving there")
    assert f"(gap {d.final_gap:+.3f}, from {d.onset_gap:+.3f} at the onset)" in d.line
    assert d.line.endswith("(min val_loss 0.5600 at epoch 6)")


def test_overfitting_on_a_plateau_without_a_rise():
    # The textbook case the old rule missed: val_loss flat (never 10% up) from epoch 12,
    # training loss halving, the accuracy gap widening to +0.17.
    val = plateau(12, 30, level=0.56)
    loss = np.r_[np.linspace(0.69, 0.49, 12), np.linspace(0.47, 0.18, 18)]
    accuracy = np.r_[np.linspace(0.5, 0.76, 12), np.linspace(0.77, 0.93, 18)]
    val_accuracy = np.r_[np.linspace(0.5, 0.70, 12), np.linspace(0.70, 0.755, 18)]
    d = diagnosis.diagnose(history(val, loss, accuracy, val_accuracy))
    assert d.label == "overfitting" and d.clear and d.onset == 12
    assert d.rise == pytest.approx(0.0) and d.final_gap > GAP and d.train_fall > 0.5


def test_still_improving_at_the_last_epoch():
    d = diagnosis.diagnose(history(np.geomspace(0.69, 0.35, 40)))
    assert d.label == "still improving" and d.best_epoch == 40
    assert d.line.startswith("still improving: validation loss reached its best level")


def test_converged_when_both_curves_level_off():
    val = plateau(10, 30, level=0.3)
    loss = plateau(10, 30, level=0.25, start=0.7)
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.label == "converged" and d.onset == 10 and d.train_fall == pytest.approx(0.0)
    assert d.line.startswith("converged (levelled off) from epoch 10 of 30")


def test_unstable_when_val_loss_climbs_and_training_loss_does_not_fall():
    val = np.r_[np.linspace(0.69, 0.5, 5), np.linspace(0.6, 1.5, 10)]
    loss = np.r_[np.linspace(0.69, 0.45, 5), np.linspace(0.5, 0.9, 10)]
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.label == "unstable" and d.train_fall < 0 and d.rise > RISE
    assert "not overfitting" in d.line


def test_too_short_and_invalid():
    assert diagnosis.diagnose(history([0.5])).label == "too short"
    with pytest.raises(ValueError, match="empty"):
        diagnosis.diagnose([])
    with pytest.raises(ValueError, match="lacks val_loss"):
        diagnosis.diagnose([{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_accuracy": 0.5}])
    with pytest.raises(ValueError, match="must increase"):
        diagnosis.diagnose(history([0.5] * 6)[::-1])


def test_the_kept_epoch_is_reported_against_the_onset():
    val = plateau(12, 30)
    assert "weights kept" not in diagnosis.diagnose(history(val)).line
    assert "weights kept" not in diagnosis.diagnose(history(val), kept_epoch=30).line  # the last: nothing to say
    assert "the weights kept are epoch 9's (restore_best), 3 epochs before the onset" in \
        diagnosis.diagnose(history(val), kept_epoch=9).line
    assert "epoch 13's (restore_best), 1 epoch after the onset" in diagnosis.diagnose(history(val), kept_epoch=13).line


# ---------------------------------------------------------------- robust to one-epoch spikes


def test_spikes_neither_move_the_onset_nor_make_a_rise():
    # Flat from epoch 10, training loss flat too; spikes of +80%, one of them two epochs
    # long and one in the last epoch (train_custom_aug's kind): still converged at epoch 10.
    val = plateau(10, 40, level=0.4)
    val[[14, 21, 22, 30, 39]] *= 1.8
    loss = plateau(10, 40, level=0.3, start=0.7)
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.label == "converged" and d.onset == 10 and d.rise == pytest.approx(0.0)
    # ... nor does a low outlier set the best level (the raw minimum does move).
    val[25] = 0.2
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.best_epoch == 26 and d.best_level == pytest.approx(0.4) and d.onset == 10


def test_a_spiky_plateau_is_not_a_rise():
    # 3% noise, and one epoch in six spiking by 20-80%, seeded: the end stays well under RISE.
    rng = np.random.default_rng(4)
    val = np.r_[np.geomspace(0.7, 0.4, 10), 0.4 * (1 + 0.03 * rng.standard_normal(30))]
    val[10:][rng.uniform(size=30) < 1 / 6] *= rng.uniform(1.2, 1.8)
    loss = plateau(10, 40, level=0.3, start=0.7)
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.label == "converged" and d.rise < RISE / 2, d.line


# ---------------------------------------------------------------- every threshold, from both sides


@pytest.mark.parametrize("excess, onset", [(TOLERANCE - 0.005, 6), (TOLERANCE + 0.005, 16)])
def test_tolerance(excess, onset):
    # A first plateau `excess` above the final one: within TOLERANCE it is where val_loss
    # stopped improving; beyond it, val_loss improved once more at epoch 16.
    val = np.r_[[2.0] * 5, [1.0 + excess] * 10, [1.0] * 15]
    assert diagnosis.diagnose(history(val)).onset == onset


@pytest.mark.parametrize("stalled, label", [(MIN_STALL - 1, "still improving"), (MIN_STALL, "converged")])
def test_min_stall(stalled, label):
    n = 20
    val = plateau(n - stalled, n)
    d = diagnosis.diagnose(history(val, loss=[0.3] * n))
    assert d.stalled == stalled and d.label == label


@pytest.mark.parametrize("fall, label", [(TRAIN_FALL - 0.01, "converged"), (TRAIN_FALL + 0.01, "overfitting")])
def test_train_fall(fall, label):
    val = plateau(6, 20)
    loss = [0.5] * 15 + [0.5 * (1 - fall)] * 5
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.onset == 6 and d.train_fall == pytest.approx(fall)
    assert d.label == label


@pytest.mark.parametrize("gap, clear", [(GAP - 0.01, False), (GAP + 0.01, True)])
def test_gap(gap, clear):
    # Overfitting (training loss falling on a val_loss plateau), no rise: the gap decides.
    val = plateau(6, 20)
    d = diagnosis.diagnose(history(val, accuracy=[0.8 + gap] * 20, val_accuracy=[0.8] * 20))
    assert d.label == "overfitting" and d.final_gap == pytest.approx(gap) and d.rise == pytest.approx(0.0)
    assert d.clear == clear
    assert ("mildly" in d.line) == (not clear)


@pytest.mark.parametrize("rise, clear", [(RISE - 0.01, False), (RISE + 0.01, True)])
def test_rise_makes_overfitting_clear(rise, clear):
    # No accuracy gap: val_loss ending `rise` above its best level decides.
    val = np.r_[plateau(6, 20), [1.0 + rise] * WINDOW]
    d = diagnosis.diagnose(history(val, accuracy=[0.8] * 25, val_accuracy=[0.8] * 25))
    assert d.label == "overfitting" and d.rise == pytest.approx(rise) and d.final_gap == pytest.approx(0.0)
    assert d.clear == clear


@pytest.mark.parametrize("rise, label", [(RISE - 0.01, "converged"), (RISE + 0.01, "unstable")])
def test_rise_without_training_progress(rise, label):
    val = np.r_[plateau(6, 20), [1.0 + rise] * WINDOW]
    d = diagnosis.diagnose(history(val, loss=[0.4] * 25))
    assert d.rise == pytest.approx(rise) and d.label == label


@pytest.mark.parametrize("n, label", [(MIN_EPOCHS - 1, "too short"), (MIN_EPOCHS, "still improving")])
def test_min_epochs(n, label):
    assert diagnosis.diagnose(history(np.geomspace(0.7, 0.3, n))).label == label


def test_running_median():
    assert diagnosis.running_median([1, 9, 1, 1, 1], window=5).tolist() == [1, 1, 1, 1, 1]
    # Windows of 5 centred on each value, fewer at the ends: [3,1,2], [3,1,2,8], [3,1,2,8], [1,2,8].
    assert diagnosis.running_median([3, 1, 2, 8], window=5).tolist() == [2, 2.5, 2.5, 2]


# ---------------------------------------------------------------- the committed run


def committed(stage: str) -> diagnosis.Diagnosis:
    path = history_file(stage, ROOT / "plots")
    return diagnosis.diagnose(read_history(path), training_record(path).get("restored_epoch"))


def test_committed_small_convnet_overfits_from_about_epoch_12():
    """train_custom (no regularisation) is the overfitting lesson: its val_loss stopped
    improving around epoch 12 while its training loss halved and the accuracies parted."""
    d = committed("train_custom")
    assert d.label == "overfitting" and d.clear, d.line
    assert abs(d.onset - 12) <= 3, d.line
    assert d.train_fall > 0.5 and d.final_gap > 0.15
    assert d.line.startswith(f"overfitting from epoch {d.onset} of 30")


def test_committed_regularisation_delays_and_shrinks_overfitting():
    plain, regularised = committed("train_custom"), committed("train_custom_aug")
    if regularised.label == "overfitting":
        assert regularised.onset > plain.onset, regularised.line
    assert regularised.final_gap < plain.final_gap
    assert regularised.kept_epoch is not None  # restore_best: metrics/train_custom_aug.json restored_epoch
    assert f"the weights kept are epoch {regularised.kept_epoch}'s (restore_best)" in regularised.line


# ---------------------------------------------------------------- history files


def test_read_history_from_the_history_file(tmp_path):
    """What training.History writes (two rows per epoch), read back, gives the same diagnosis."""
    from stages.lib.outputs import write_json

    val = np.r_[np.linspace(0.69, 0.56, 4), 0.56 + 0.05 * np.arange(1, 9)]
    rows = history(val)
    path = tmp_path / "train_x" / "history.json"
    write_json(path, {"history": history_rows(rows)})
    assert training_record(path) == {}  # no run record until the stage ends
    read = read_history(path)
    assert [r["epoch"] for r in read] == list(range(1, 13))
    for got, want in zip(read, rows):
        for key in diagnosis.HISTORY_KEYS:
            assert got[key] == pytest.approx(want[key])
    assert diagnosis.diagnose(read) == diagnosis.diagnose(rows)
    assert diagnosis.diagnose(read).label == "overfitting"


def test_read_history_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.json not found: run the training stage"):
        read_history(tmp_path / "history.json")
