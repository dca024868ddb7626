"""Figures (matplotlib PNGs, for readers without DVC) of the training runs and of the test
results, and the study's Markdown report (plots/report.md). Only `evaluate` imports this:
a change to a figure reruns `evaluate` alone, never a training stage."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI and servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stages.lib.study import (PLOTS_DIR, SUMMARY_FIGURES, THRESHOLD, best_row,  # noqa: E402
                              data_plots_dir, evaluate_dir, history_file, model_figure, read_history,
                              training_record)
from stages.figures.evaluation import image_grid  # noqa: E402
from stages.lib.outputs import save_figure  # noqa: E402


def training_curves(history: list[dict], title: str, path: Path) -> None:
    """Loss and accuracy per epoch, training and validation on the same axes."""
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(frame["epoch"], frame[metric], "o-", ms=3, label=f"training {metric}")
        ax.plot(frame["epoch"], frame[f"val_{metric}"], "s-", ms=3, label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no ticks at epoch 2.5
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    best = best_row(history)
    axes[0].axvline(best["epoch"], color="gray", ls=":", lw=1)
    # Label on the side with room: a minimum in the right half is labelled to its left, so
    # a late best epoch is not clipped at the edge of the axes.
    late = best["epoch"] > (frame["epoch"].min() + frame["epoch"].max()) / 2
    axes[0].annotate(f"min val_loss, epoch {int(best['epoch'])}", (best["epoch"], best["val_loss"]),
                     textcoords="offset points", xytext=(-5 if late else 5, 10), ha="right" if late else "left",
                     fontsize=8)
    fig.suptitle(title)
    save_figure(path, fig)


def evaluation_figures(results: dict, predictions: dict, out_dir: Path, classes: tuple[str, str]) -> None:
    """Test accuracy per model (with 95% intervals), ROC curves, confusion matrices;
    `classes`: (negative, positive) names."""
    from stages.lib.metrics import roc_curve

    names = list(results)
    acc = np.array([results[m]["accuracy"] for m in names])
    # clipped at 0: at an accuracy of 0 or 1 the Wilson bound can miss it by float round-off
    # (1e-17), and matplotlib refuses a negative error bar
    low = np.clip(acc - np.array([results[m]["accuracy_ci_low"] for m in names]), 0, None)
    high = np.clip(np.array([results[m]["accuracy_ci_high"] for m in names]) - acc, 0, None)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names, acc, xerr=[low, high], color="#3b6ea8", capsize=4)
    for y, a in enumerate(acc):
        ax.text(a + high[y] + 0.005, y, f"{a:.3f}", va="center", fontsize=9)
    ax.set_xlim(0.5, 1.02)
    ax.invert_yaxis()
    ax.set_xlabel(f"test accuracy (n = {results[names[0]]['n']}, 95% Wilson interval)")
    save_figure(out_dir / SUMMARY_FIGURES["accuracy"], fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for m in names:
        frame = predictions[m]
        curve = roc_curve((frame["actual"] == classes[1]).to_numpy(), frame["p_positive"].to_numpy())
        ax.plot(curve["fpr"], curve["tpr"], label=f"{m} (AUC {results[m]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_xlabel(f"false positive rate ({classes[0]} called {classes[1]})")
    ax.set_ylabel(f"true positive rate ({classes[1]} found)")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(out_dir / SUMMARY_FIGURES["roc"], fig)

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2))
    for ax, m in zip(np.atleast_1d(axes), names):
        r = results[m]
        matrix = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]])
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.sum() // 2))
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", color="black")
        ax.set_xticks([0, 1], classes)
        ax.set_yticks([0, 1], classes)
        ax.set_xlabel("predicted")
        ax.set_title(m, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("actual")
    save_figure(out_dir / SUMMARY_FIGURES["confusion"], fig)


# ---------------------------------------------------------------- errors and the study report

GALLERY_SIZE = 16  # most confidently misclassified test images shown per model


def confident_errors(labels: np.ndarray, probs: np.ndarray, k: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the (at most k) misclassified examples, most confident first: ranked by
    the probability given to the wrong class (ties: file order)."""
    from stages.lib.metrics import predicted_labels

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    wrong = np.flatnonzero(predicted_labels(probs) != labels)
    confidence = np.abs(probs[wrong] - THRESHOLD)
    return wrong[np.argsort(-confidence, kind="stable")][:k]


def misclassified_gallery(name: str, test: dict, files: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                          path: Path, classes: tuple[str, str], k: int = GALLERY_SIZE) -> int:
    """PNG grid of model `name`'s most confidently misclassified test images; `test` is the
    test split (datasets.load_split), `files` / `labels` / `probs` the model's predictions
    (matched to the images by file name), `classes` the (negative, positive) names. Returns
    how many images it shows."""
    from stages.lib.metrics import predicted_labels

    position = {f: i for i, f in enumerate(test["files"])}
    chosen = confident_errors(labels, probs, k)
    named = np.array(classes)
    titles = [f"{files[i]}\n{named[labels[i]]} called {named[1 - labels[i]]}, P({classes[1]}) {probs[i]:.3f}"
              for i in chosen]
    images = test["images"][[position[f] for f in files[chosen]]] if len(chosen) else test["images"][:0]
    wrong = int((predicted_labels(probs) != np.asarray(labels)).sum())
    if len(chosen):
        title = (f"{name}: the {len(chosen)} most confidently misclassified of {wrong} errors "
                 f"in {len(labels)} test images")
        image_grid(images, titles, path, title)
    else:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{name}: no misclassified images among {len(labels)} test images",
                ha="center", va="center")
        save_figure(path, fig)
    return len(chosen)


def results_table(results: dict, models: dict[str, str], classes: tuple[str, str]) -> list[str]:
    """Markdown rows: per model its test metrics, the recall of each class named."""
    negative, positive = classes
    rows = [f"| model | stage | test accuracy (95% CI) | balanced accuracy | recall {negative} | recall {positive} | "
            "precision | F1 | loss | ROC AUC | PR AUC | ECE | Brier | n |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        rows.append(
            f"| {models.get(name, name)} | `{name}` | {r['accuracy']:.3f} ({r['accuracy_ci_low']:.3f}-"
            f"{r['accuracy_ci_high']:.3f}) | {r['balanced_accuracy']:.3f} | {r['specificity']:.3f} | "
            f"{r['recall']:.3f} | {r['precision']:.3f} | {r['f1']:.3f} | {r['loss']:.4f} | {r['roc_auc']:.3f} | "
            f"{r['pr_auc']:.3f} | {r['ece']:.3f} | {r['brier']:.3f} | {r['n']} |"
        )
    return rows


def extended_table(extended: dict, models: dict[str, str]) -> list[str]:
    """Markdown rows: per model its metrics on the extended test set."""
    rows = ["| model | stage | extended test accuracy (95% CI) | ROC AUC | n |", "| --- | --- | --- | --- | --- |"]
    for name, r in extended.items():
        auc = "-" if r["roc_auc"] is None or np.isnan(r["roc_auc"]) else f"{r['roc_auc']:.3f}"
        rows.append(f"| {models.get(name, name)} | `{name}` | {r['accuracy']:.3f} ({r['accuracy_ci_low']:.3f}-"
                    f"{r['accuracy_ci_high']:.3f}) | {auc} | {r['n']} |")
    return rows


# The share of the larger class from which the report calls a set imbalanced (60:40).
IMBALANCED = 0.6


def class_balance(results: dict, classes: tuple[str, str]) -> list[str]:
    """Markdown: how many test images each class has and, when one class holds at least
    IMBALANCED of them, what accuracy alone would hide (the score of always answering the
    larger class, and each model's balanced accuracy and weaker recall)."""
    first = next(iter(results.values()))
    positives, n = first["tp"] + first["fn"], first["n"]
    counts = {classes[0]: n - positives, classes[1]: positives}
    larger = max(counts, key=counts.get)
    share = counts[larger] / n
    said = f"The test split holds {counts[classes[0]]} {classes[0]} and {counts[classes[1]]} {classes[1]} images"
    if share < IMBALANCED:
        return [f"{said}: balanced enough ({share:.0%} {larger}) for accuracy to mean what it says.", ""]
    lines = [f"{said}: imbalanced, {share:.0%} {larger}. A model that always answers {larger} scores {share:.3f} "
             "accuracy while finding no image of the other class, so read the balanced accuracy (the mean of the "
             "two recalls, 0.5 for any constant answer) and the recall of each class beside it:", ""]
    for name, r in results.items():
        recalls = {classes[0]: r["specificity"], classes[1]: r["recall"]}
        weaker = min(recalls, key=recalls.get)
        lines.append(f"- `{name}`: accuracy {r['accuracy']:.3f}, balanced accuracy {r['balanced_accuracy']:.3f}; "
                     f"it finds {recalls[weaker]:.1%} of the {weaker} images.")
    return lines + [""]


def stage_curves(stages: list[str], plots_dir: Path, out_dir: Path) -> None:
    """Learning curves (PNG) of each training stage, from its history file."""
    from stages.lib.params import UserError

    for stage in stages:
        try:
            history = read_history(history_file(stage, plots_dir))
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise UserError(str(e)) from None
        training_curves(history, f"{stage}: loss and accuracy per epoch", out_dir / model_figure("curves", stage))


def kept_epochs(stages: list[str], plots_dir: Path = PLOTS_DIR) -> dict[str, int]:
    """stage -> the epoch whose weights it saved, for the stages that kept their best epoch
    (`restored_epoch` in its run record, study.training_record); a stage without the
    key kept its last."""
    kept = {}
    for stage in stages:
        if "restored_epoch" in (record := training_record(history_file(stage, plots_dir))):
            kept[stage] = int(record["restored_epoch"])
    return kept


def training_diagnoses(stages: list[str], plots_dir: Path, kept: dict[str, int] | None = None) -> dict:
    """stage -> Diagnosis, each from the stage's history file under plots_dir/<stage>;
    `kept`: stage -> the epoch it restored (kept_epochs), reported in its diagnosis."""
    from stages.lib.diagnosis import diagnose
    from stages.lib.params import UserError

    kept = kept or {}
    try:
        return {s: diagnose(read_history(history_file(s, plots_dir)), kept.get(s)) for s in stages}
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UserError(str(e)) from None


# ---------------------------------------------------------------- paired comparisons (McNemar)


def correctness(predictions: dict) -> dict[str, pd.Series]:
    """model -> right (bool) per image, indexed by file, from prediction frames with the
    columns `file`, `actual` and `predicted` (as plots/evaluate/predictions/*.csv)."""
    return {m: pd.Series((f["actual"] == f["predicted"]).to_numpy(), index=f["file"].to_numpy())
            for m, f in predictions.items()}


def comparison_pairs(names: list[str], accuracy: dict[str, float],
                     also: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The pairs the report compares, each in study order: every model against the next,
    every model against the best (highest test accuracy, the first one on ties), then the
    pairs `also` lists (what the phase paragraphs compare), none twice."""
    best = max(names, key=lambda m: accuracy[m])  # max keeps the first of equals
    pairs: list[tuple[str, str]] = []
    for a, b in [*zip(names, names[1:]), *((m, best) for m in names if m != best), *also]:
        pair = tuple(sorted((a, b), key=names.index))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def paired_comparisons(pairs: list[tuple[str, str]], predictions: dict) -> dict[tuple[str, str], dict]:
    """(A, B) -> metrics.paired_comparison of the two models on the images both predicted
    (matched by file name)."""
    from stages.lib.metrics import paired_comparison

    right = correctness(predictions)
    compared = {}
    for a, b in pairs:
        if set(right[a].index) != set(right[b].index):
            raise ValueError(f"{a} and {b} were scored on different images")
        compared[(a, b)] = paired_comparison(right[a].to_numpy(), right[b].loc[right[a].index].to_numpy())
    return compared


def p_text(p: float, named: bool = False) -> str:
    """A p-value as the report prints it: '< 0.001', '0.071', '0.24' (named: 'p < 0.001',
    'p = 0.24')."""
    text = "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
    return text if not named else f"p {text}" if p < 0.001 else f"p = {text}"


def verdict(c: dict) -> str:
    """One comparison in plain words, e.g. '0.968 against 0.974 is within noise: 6 vs 12
    discordant images, p = 0.24'."""
    from stages.lib.metrics import SIGNIFICANCE

    real = c["p"] < SIGNIFICANCE
    return (f"{c['accuracy_a']:.3f} against {c['accuracy_b']:.3f} is "
            f"{f'a real difference at the {SIGNIFICANCE:.0%} level' if real else 'within noise'}: "
            f"{c['only_a']} vs {c['only_b']} discordant images, {p_text(c['p'], named=True)}")


def comparison_section(compared: dict[str, dict]) -> list[str]:
    """Markdown: the paired comparisons per image set ('test split', 'extended test set')."""
    from stages.lib.metrics import SIGNIFICANCE

    lines = [
        "## Paired comparisons (McNemar)",
        "",
        "Two models scored on the same images: what tells them apart is the images exactly one of them gets "
        "right (the discordant images). McNemar's exact test asks whether the split of those between the two "
        "could be chance (two-sided binomial test, p = 1/2). Each model against the next in the study, "
        "against the best on the test split, and as the phase paragraphs compare them; real = p below "
        f"{SIGNIFICANCE}.",
        "",
        "| model A | model B | images | accuracy A | accuracy B | only A right | only B right | McNemar p | "
        "difference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for where, pairs in compared.items():
        for (a, b), c in pairs.items():
            real = "real" if c["p"] < SIGNIFICANCE else "within noise"
            lines.append(f"| `{a}` | `{b}` | {where} | {c['accuracy_a']:.3f} | {c['accuracy_b']:.3f} | "
                         f"{c['only_a']} | {c['only_b']} | {p_text(c['p'])} | {real} |")
    lines.append("")
    first = next(iter(compared.values()))
    for a, b in first:
        said = "; ".join(f"on the {where} {verdict(pairs[(a, b)])}" for where, pairs in compared.items())
        lines.append(f"- `{a}` against `{b}`: {said}.")
    return lines + [""]


# ---------------------------------------------------------------- what the study shows

# Per phase of the study (study.ModelSpec.phase): its title, and what it sets out to show.
PHASES = {
    1: ("Phase 1: a small convnet from scratch", "A small convnet learns from random weights on the training "
                                                 "images alone, first as it is, then with regularisation."),
    2: ("Phase 2: VGG16 pre-trained on ImageNet", "VGG16's convolutional base, trained on ImageNet, is reused: "
                                                  "its features are what the small convnet had to learn."),
}


def regularised(before, after) -> str:
    """What changed between two runs' diagnoses, `before` overfitting: when and how much."""
    if after.label != "overfitting":
        return f"it does not overfit within its {after.epochs} epochs; {after.summary}"
    when = "later" if after.onset > before.onset else "no later" if after.onset == before.onset else "earlier"
    size = "less" if after.final_gap < before.final_gap else "no less"
    kept = f"; {after.kept}" if after.kept else ""
    return (f"it overfits {when} (from epoch {after.onset} of {after.epochs}, against {before.onset} of "
            f"{before.epochs}) and {size} (train - validation accuracy gap at the end {after.final_gap:+.3f} against "
            f"{before.final_gap:+.3f}){kept}")


def phase_references(names: list[str], accuracy: dict[str, float], phase_of: dict[str, int]) -> dict[str, str]:
    """model -> the model its phase paragraph measures it against: the one before it in its
    phase, or, for the first model of a later phase, the best (test accuracy) of the earlier
    phases. The first model of the first phase has none."""
    references, earlier = {}, []
    for phase in sorted({phase_of[n] for n in names if n in phase_of}):
        members = [n for n in names if phase_of.get(n) == phase]
        if earlier:
            references[members[0]] = max(earlier, key=lambda m: accuracy[m])
        references.update(zip(members[1:], members))
        earlier += members
    return references


def phase_paragraphs(names: list[str], models: dict[str, str], results: dict, diagnoses: dict,
                     compared: dict[str, dict], phase_of: dict[str, int]) -> list[str]:
    """Markdown: a paragraph per phase of the study, every number from the results, the
    diagnoses and the paired comparisons (`compared`: image set -> (A, B) -> comparison,
    holding the pairs of `phase_references`)."""
    accuracy = {m: r["accuracy"] for m, r in results.items()}
    references = phase_references(names, accuracy, phase_of)

    def against(a: str, b: str) -> str:
        said = "; ".join(f"on the {where} {verdict(pairs[(a, b)])}" for where, pairs in compared.items())
        return f" ({said})" if said else ""

    phases = sorted({phase_of[n] for n in names if n in phase_of})
    lines = ["## What the study shows", ""] if phases else []
    for phase in phases:
        title, lead = PHASES.get(phase, (f"Phase {phase}", ""))
        said = [lead] if lead else []
        members = [n for n in names if phase_of.get(n) == phase]
        for name in members:
            who = f"`{name}` ({models[name]})" if name in models else f"`{name}`"
            ref = references.get(name)
            if ref is None:
                said.append(f"{who} reaches {accuracy[name]:.3f} on the test split; {diagnoses[name].summary}.")
            elif phase_of.get(ref) != phase:
                said.append(f"{who} reaches {accuracy[name]:.3f} on the test split, {accuracy[name] - accuracy[ref]:+.3f} "
                            f"over `{ref}`, the best model before it{against(ref, name)}; "
                            f"{diagnoses[name].summary}.")
            else:
                before = diagnoses[ref]
                curves = (regularised(before, diagnoses[name]) if before.label == "overfitting"
                          else diagnoses[name].summary)
                said.append(f"{who}: {curves}. Its test accuracy against `{ref}`: "
                            f"{accuracy[name] - accuracy[ref]:+.3f}{against(ref, name)}.")
        said += in_short([(references[n], n) for n in members if n in references], compared)
        lines += [f"### {title}", "", " ".join(said), ""]
    return lines


def in_short(steps: list[tuple[str, str]], compared: dict[str, dict]) -> list[str]:
    """The sentence that sums up `steps` (model before, model after) per image set: which
    differences are real at the significance level and which are within noise (once for
    all image sets when they agree)."""
    from stages.lib.metrics import SIGNIFICANCE

    said = {}
    for where, pairs in compared.items():
        real = [f"`{b}` is really {'better' if c['only_b'] > c['only_a'] else 'worse'} than `{a}`"
                for a, b in steps if (c := pairs[(a, b)])["p"] < SIGNIFICANCE]
        noise = [f"`{b}` against `{a}`" for a, b in steps if pairs[(a, b)]["p"] >= SIGNIFICANCE]
        if noise:
            real.append(f"{' and '.join(noise)} {'is' if len(noise) == 1 else 'are'} within noise")
        if real:
            said[where] = "; ".join(real)
    if len(said) > 1 and len(set(said.values())) == 1:
        said = {" and the ".join(said): next(iter(said.values()))}
    sentences = [f"on the {where}, {what}." for where, what in said.items()]
    return [f"In short, {sentences[0]}", *(s[0].upper() + s[1:] for s in sentences[1:])] if said else []


# ---------------------------------------------------------------- the report


def study_report(results: dict, models: dict[str, str], plots_dir: Path, path: Path, classes: tuple[str, str],
                 extended: dict | None = None, predictions: dict | None = None,
                 extended_predictions: dict | None = None, kept: dict[str, int] | None = None) -> str:
    """The study's results as Markdown, written to `path` (inside plots_dir): test metrics
    per model with their calibration (`classes`: the (negative, positive) names), whether
    the classes are balanced and what accuracy hides when not, a paragraph per phase of the study saying what it
    shows, the metrics on the extended test set (when given), paired comparisons of the
    models (McNemar, from `predictions` and `extended_predictions`: model -> frame with
    `file`, `actual`, `predicted`), the figures, a diagnosis per training run computed from
    its history (`kept`: stage -> the epoch it restored), and per model the gallery of
    confident errors and its Grad-CAM heatmaps. Links are relative to `path`."""
    from stages.lib import diagnosis
    from stages.lib.metrics import CALIBRATION_BINS
    from stages.lib.outputs import write_text
    from stages.lib.seeds import read_records, seed_table
    from stages.lib.study import MODELS, seeds_dir

    def link(target: Path) -> str:
        return Path(os.path.relpath(target, path.parent)).as_posix()

    names = list(results)
    negative, positive = classes
    accuracy = {m: r["accuracy"] for m, r in results.items()}
    phase_of = {m.stage: m.phase for m in MODELS}
    diagnoses = training_diagnoses(names, plots_dir, kept)
    pairs = comparison_pairs(names, accuracy, [(b, a) for a, b in phase_references(names, accuracy, phase_of).items()])
    compared = {}
    for where, scored in (("test split", predictions), ("extended test set", extended_predictions)):
        if scored and set(names) <= set(scored):
            compared[where] = paired_comparisons(pairs, scored)
    n = next(iter(results.values()))["n"]
    figures = evaluate_dir(plots_dir)
    lines = [
        f"# {classes[0]} vs. {classes[1]}: results",
        "",
        "Written by the `evaluate` stage (`stages/figures/report.py`) from the test predictions and the",
        "training histories; do not edit, run `dvc repro`.",
        "",
        f"## Test split ({n} images)",
        "",
        *results_table(results, models, classes),
        "",
        f"95% intervals: Wilson score interval of the accuracy. Positive class: {positive}. Balanced accuracy: the "
        f"mean of the recalls of {negative} and {positive} (the share of each class found). PR AUC: area under "
        f"the precision-recall curve of {positive} (average precision). Loss: log loss.",
        f"Calibration of P({positive}): ECE = expected calibration error over {CALIBRATION_BINS} equal-width bins "
        f"of P({positive}) on [0, 1] (the mean over the images of |fraction of {positive} in the bin - mean "
        f"P({positive}) in the bin|; 0 = calibrated); Brier = mean squared error of P({positive}) (0 = perfect, "
        "0.25 = always 0.5).",
        "",
        *class_balance(results, classes),
        f"Figures: [accuracy]({link(figures / SUMMARY_FIGURES['accuracy'])}), "
        f"[ROC curves]({link(figures / SUMMARY_FIGURES['roc'])}),"
        f" [confusion matrices]({link(figures / SUMMARY_FIGURES['confusion'])}),"
        f" [reliability diagram]({link(figures / SUMMARY_FIGURES['reliability'])}).",
        "",
        *phase_paragraphs(names, models, results, diagnoses, compared, phase_of),
    ]
    if extended:
        n_extended = next(iter(extended.values()))["n"]
        lines += [
            f"## Extended test set ({n_extended} images)",
            "",
            "Every usable downloaded image that `split` placed in no split (after the duplicate rule), at most "
            "`split.extended_per_class` per class: more images, tighter intervals. Scored here, never used for "
            "any choice.",
            "",
            *extended_table(extended, models),
            "",
        ]
    if compared and pairs:
        lines += comparison_section(compared)
    seeds = read_records(seeds_dir(plots_dir))
    if seeds:
        lines += ["## How much is luck: three seeds", "",
                  "The whole study rerun with other values of `train.seed` (weights, batch order, augmentation), "
                  "all else equal:", "", *seed_table(seeds, seeds_dir(plots_dir)), ""]
    lines += [
        "## Training runs",
        "",
        "| stage | epochs | min val_loss (epoch) | epoch kept | val_loss stopped improving at | "
        "train - val accuracy at the end | diagnosis | curves |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage, d in diagnoses.items():
        label = d.label + (" (mild)" if d.label == "overfitting" and not d.clear else "")
        lines.append(f"| `{stage}` | {d.epochs} | {d.best_val_loss:.4f} ({d.best_epoch}) | {d.kept_epoch or d.epochs} | "
                     f"{d.onset} | {d.final_gap:+.3f} | {label} | "
                     f"[curves]({link(figures / model_figure('curves', stage))}) |")
    lines += ["", "Diagnosis per run, computed from its per-epoch history (`plots/<stage>/history.json`):", ""]
    lines += [f"- `{stage}`: {d.line}" for stage, d in diagnoses.items()]
    lines += [
        "",
        f"How (`stages/lib/diagnosis.py`): a curve's level at an epoch is its median over the {diagnosis.WINDOW} "
        "epochs centred there, so one noisy epoch decides nothing. Validation loss stopped improving at the first "
        f"epoch whose level came within {diagnosis.TOLERANCE:.0%} of its best level; the end of a run is the median "
        f"of its last {diagnosis.WINDOW} epochs. Still improving = it stopped fewer than {diagnosis.MIN_STALL} "
        f"epochs before the end; overfitting = it stopped while training loss fell at least "
        f"{diagnosis.TRAIN_FALL:.0%} after, clearly when the train - validation accuracy gap at the end is at least "
        f"{diagnosis.GAP:.2f} or validation loss ends at least {diagnosis.RISE:.0%} above its best level, mildly "
        f"otherwise; unstable = validation loss ends {diagnosis.RISE:.0%} above its best level with training loss "
        "not falling; converged = both levelled off.",
        "",
        "## Most confidently misclassified test images, and where each model looked",
        "",
    ]
    for name in results:
        gallery = figures / model_figure("misclassified", name)
        gradcam = figures / model_figure("gradcam", name)
        lines += [f"### `{name}`", "", f"![{name}: confident errors]({link(gallery)})", "",
                  f"Where it looked ([Grad-CAM]({link(gradcam)}), the evidence for the class it predicted): its "
                  f"most confident errors, then its most confidently right {negative} and {positive} images.", "",
                  f"![{name}: Grad-CAM]({link(gradcam)})", ""]
    data_figures_found = sorted(data_plots_dir(plots_dir).glob("*.png"))
    if data_figures_found:
        lines += ["## Data", "", ", ".join(f"[{p.stem.replace('_', ' ')}]({link(p)})" for p in data_figures_found), ""]
    text = "\n".join(lines)
    write_text(path, text)
    return text
