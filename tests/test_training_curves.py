"""The per-epoch curves PNG: whole-number epoch ticks and the minimum val_loss marked."""

from __future__ import annotations

import numpy as np

from stages.figures import report


def history(epochs: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"epoch": e, "loss": 1 / e, "val_loss": 0.5 + rng.random() / 10, "accuracy": 1 - 1 / (e + 1),
         "val_accuracy": 0.8 + rng.random() / 10}
        for e in range(1, epochs + 1)
    ]


def drawn(monkeypatch, epochs: int):
    saved = {}
    monkeypatch.setattr(report, "save_figure", lambda path, fig: saved.update(fig=fig, path=path))
    report.training_curves(history(epochs), "t", "unused.png")
    return saved["fig"]


def test_epoch_ticks_are_whole_numbers(monkeypatch):
    for epochs in (3, 20, 30, 100):  # short runs used to get ticks at 2.5, 7.5, ...
        fig = drawn(monkeypatch, epochs)
        fig.canvas.draw()
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)


def test_minimum_val_loss_is_marked(monkeypatch):
    h = history(20)
    best = min(h, key=lambda r: r["val_loss"])["epoch"]
    fig = drawn(monkeypatch, 20)
    loss_ax = fig.axes[0]
    assert [line.get_xdata()[0] for line in loss_ax.lines if line.get_linestyle() == ":"] == [best]
    assert any(f"epoch {best}" in t.get_text() for t in loss_ax.texts)
