"""The diagnosis of a training run from its history: each label on synthetic curves, the
thresholds at their boundaries, and histories read back from dvclive's TSVs."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib import diagnosis


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


def test_overfitting_from_the_minimum():
    # Chollet's small convnet: val_loss bottoms out at epoch 6, then climbs for 24 epochs
    # while training loss keeps falling.
    val = np.r_[np.linspace(0.69, 0.56, 6), 0.56 + 0.015 * np.arange(1, 25)]
    d = diagnosis.diagnose(history(val))
    assert d.label == "overfitting"
    assert d.best_epoch == 6 and d.epochs == 30
    assert d.best_val_loss == pytest.approx(0.56)
    assert d.final_gap == pytest.approx(0.99 - 0.75)
    assert d.line.startswith("overfitting from epoch 6:")
    assert "+0.240" in d.line


def test_still_improving_at_the_last_epoch():
    val = np.geomspace(0.69, 0.35, 40)
    d = diagnosis.diagnose(history(val))
    assert d.label == "still improving"
    assert d.best_epoch == 40
    assert d.trend < -diagnosis.IMPROVING
    assert d.line.startswith("still improving at the last epoch")


def test_still_improving_with_one_noisy_last_epoch():
    # The minimum one epoch before the end, the trend still clearly down.
    val = list(np.linspace(0.69, 0.40, 20)) + [0.41]
    d = diagnosis.diagnose(history(val))
    assert d.best_epoch == 20 and d.label == "still improving"


def test_stable_plateau():
    # Falls, then flat within +-1% until the end: neither a rise nor a trend.
    val = np.r_[np.linspace(0.69, 0.30, 10), 0.30 * (1 + 0.01 * np.sin(np.arange(20)))]
    d = diagnosis.diagnose(history(val))
    assert d.label == "stable"
    assert d.line.startswith("stable:")


def test_noisy_plateau_is_not_overfitting():
    # Alternating +-8% noise around a flat val_loss: the raw minimum is a low outlier and
    # the last epoch a high one (+17% over the minimum), but smoothed there is no rise.
    val = 0.45 * (1 + 0.08 * np.array([(-1) ** i for i in range(31)]))
    assert val[-1] / val.min() - 1 > diagnosis.RISE
    d = diagnosis.diagnose(history(val))
    assert d.label == "stable", d.line


def test_unstable_when_training_loss_does_not_fall():
    val = np.r_[np.linspace(0.69, 0.5, 5), np.linspace(0.6, 1.5, 10)]
    loss = np.r_[np.linspace(0.69, 0.45, 5), np.linspace(0.5, 0.9, 10)]
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.label == "unstable" and d.best_epoch == 5
    assert d.train_fall < diagnosis.TRAIN_FALL


@pytest.mark.parametrize("excess, label", [(diagnosis.RISE - 0.01, "stable"), (diagnosis.RISE + 0.01, "overfitting")])
def test_rise_threshold(excess, label):
    # Flat at 1.0 for 10 epochs, then SMOOTH epochs at 1 + excess: the smoothed rise is `excess`.
    val = [1.0] * 10 + [1.0 + excess] * diagnosis.SMOOTH
    d = diagnosis.diagnose(history(val))
    assert d.rise == pytest.approx(excess)
    assert d.label == label


@pytest.mark.parametrize("fall, label", [(diagnosis.TRAIN_FALL - 0.01, "unstable"), (diagnosis.TRAIN_FALL + 0.01, "overfitting")])
def test_train_fall_threshold(fall, label):
    val = [1.0] * 5 + [1.5] * 5
    loss = [0.5] * 5 + [0.5] * 4 + [0.5 * (1 - fall)]
    d = diagnosis.diagnose(history(val, loss=loss))
    assert d.best_epoch == 1
    assert d.train_fall == pytest.approx(fall)
    assert d.label == label


@pytest.mark.parametrize("drop, label", [(diagnosis.IMPROVING / 2, "stable"), (diagnosis.IMPROVING * 2, "still improving")])
def test_improving_threshold(drop, label):
    # A straight line falling by `drop` (relative to the last, minimal value) over the window.
    window = diagnosis.TREND_WINDOW
    val = [1.0 + drop * (window - 1 - i) / (window - 1) for i in range(window)]
    d = diagnosis.diagnose(history([1.5] * 5 + val))
    assert d.trend == pytest.approx(-drop)
    assert d.label == label


def test_too_short_and_invalid():
    assert diagnosis.diagnose(history([0.5])).label == "too short"
    with pytest.raises(ValueError, match="empty"):
        diagnosis.diagnose([])
    with pytest.raises(ValueError, match="lacks val_loss"):
        diagnosis.diagnose([{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_accuracy": 0.5}])


def test_read_history_from_dvclive(tmp_path):
    """The stage's own logger writes the TSVs; read back, they give the same diagnosis."""
    from dvclive import Live

    val = np.r_[np.linspace(0.69, 0.56, 4), 0.56 + 0.05 * np.arange(1, 5)]
    rows = history(val)
    live = Live(dir=str(tmp_path / "train_x"), dvcyaml=None, save_dvc_exp=False)
    for row in rows:
        live.step = row["epoch"]
        for key in diagnosis.HISTORY_KEYS:
            live.log_metric(key, row[key])
        live.next_step()
    live.end()
    read = diagnosis.read_history(tmp_path / "train_x")
    assert [r["epoch"] for r in read] == list(range(1, 9))
    for got, want in zip(read, rows):
        for key in diagnosis.HISTORY_KEYS:
            assert got[key] == pytest.approx(want[key])
    assert diagnosis.diagnose(read) == diagnosis.diagnose(rows)
    assert diagnosis.diagnose(read).label == "overfitting"


def test_read_history_names_the_missing_file(tmp_path):
    (tmp_path / "plots" / "metrics").mkdir(parents=True)
    (tmp_path / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n1\t0.5\n")
    with pytest.raises(FileNotFoundError, match="accuracy.tsv"):
        diagnosis.read_history(tmp_path)
