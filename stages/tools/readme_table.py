"""Fill the README's results table from metrics/evaluate.json, and its per-stage
table (epochs, epoch kept, wall time, images/s, CPU, precision) from metrics/<stage>.json;
never by hand:

    python -m stages.tools.readme_table            # rewrite the tables in README.md
    python -m stages.tools.readme_table --check    # exit 1 if README.md's tables are out of date

Each table sits between marker lines (`<!-- results:start -->` ... `<!-- results:end -->`,
`<!-- stages:start -->` ... `<!-- stages:end -->`); only those blocks are rewritten. Beside
our test accuracy (95% Wilson interval) the results table lists our accuracy on the
extended test set (the leftover images `split` puts in no split), the model's bar (the
test accuracy this project set itself to reach at the defaults, met or by how much not)
and, for comparison, published values: quoted, not results of this project.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stages.lib.study import DESCRIPTIONS, MODEL_NAMES, README_FILE, kept_val_accuracy, metrics_file

START = "<!-- results:start -->"
END = "<!-- results:end -->"
STAGES_START = "<!-- stages:start -->"  # the per-stage table: epochs, time, machine
STAGES_END = "<!-- stages:end -->"
README = README_FILE
METRICS = metrics_file("evaluate")
EXTENDED = "extended"  # the key of the extended test set's metrics, beside the models

# Quoted reference values (not measured here), in the study's order of models.
REFERENCES = {
    # Deep Learning with Python, 1st edition (2017), ch. 5: VGG16 at 150 px; validation
    # accuracies except fine-tuning's, which is on the test set.
    "Chollet 1st ed.": {"train_custom": ".72 (val.)", "train_custom_aug": ".84 (val.)",
                        "train_feature_clf": ".90 (val.)", "train_aug_frozen": ".95-.96 (val.)",
                        "finetune": ".968 (test)"},
    # Deep Learning with Python, 3rd edition: 180 px, Xception for the pre-trained
    # models; test accuracy on 2000 images.
    "Chollet 3rd ed.": {"train_custom": ".786", "train_custom_aug": ".839", "train_feature_clf": ".981",
                        "train_aug_frozen": ".984", "finetune": ".986"},
    # The notebook this project started from: its claims ("77% / 90% / 94% / 97%").
    "original notebook": {"train_custom": ".77", "train_feature_clf": ".90", "train_aug_frozen": ".94",
                          "finetune": ".97"},
}

# The bar of each model: the test accuracy this project set itself to reach at the
# defaults, at or above the 1st edition's values for the same recipes.
BARS = {"train_custom": 0.72, "train_custom_aug": 0.84, "train_feature_clf": 0.95, "train_aug_frozen": 0.96,
        "finetune": 0.975}


class TableError(Exception):
    """Missing metrics or markers: reported as one line, exit code 1."""


def load_metrics(path: Path) -> dict:
    if not path.is_file():
        raise TableError(f"{path} not found: run the evaluate stage first (dvc repro)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TableError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(results, dict) or not {k: v for k, v in results.items() if k != EXTENDED}:
        raise TableError(f"{path} holds no model results")
    return results


def accuracy_cell(r: dict) -> str:
    try:
        return f"{r['accuracy']:.3f} ({r['accuracy_ci_low']:.3f}-{r['accuracy_ci_high']:.3f})"
    except (KeyError, TypeError):
        return "incomplete in metrics"


def bar_cell(name: str, r) -> str:
    """'.72: met' or '.975: short by .005' (test accuracy against the model's bar), '-' without one."""
    if name not in BARS:
        return "-"
    bar = f"{BARS[name]:.3f}".rstrip("0").lstrip("0")
    try:
        gap = round(BARS[name] - r["accuracy"], 6)  # a count over n: rounding drops float noise at the bar
    except (KeyError, TypeError):
        return f"{bar}: -"
    return f"{bar}: met" if gap <= 0 else f"{bar}: short by {f'{gap:.3f}'.lstrip('0')}"


def extended_cell(r) -> str:
    try:
        return f"{r['accuracy']:.3f} ({r['n']})"
    except (KeyError, TypeError):
        return "incomplete in metrics"


def table(results: dict, metrics_path: Path = METRICS) -> str:
    """The Markdown block between the markers (without them)."""

    extended = results.get(EXTENDED) if isinstance(results.get(EXTENDED), dict) else {}
    models = {k: v for k, v in results.items() if k != EXTENDED}
    names = list(MODEL_NAMES) + [m for m in models if m not in MODEL_NAMES]
    ns = sorted({r["n"] for r in models.values() if isinstance(r, dict) and "n" in r})
    rows = [
        "| model | stage | test accuracy (95% CI) | extended test (n) | bar | " + " | ".join(REFERENCES) + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in REFERENCES) + " |",
    ]
    for name in names:
        ours = accuracy_cell(models[name]) if name in models else f"not in `{metrics_path.as_posix()}`"
        more = extended_cell(extended[name]) if name in extended else "-"
        bar = bar_cell(name, models[name]) if name in models else "-"
        quoted = " | ".join(values.get(name, "-") for values in REFERENCES.values())
        rows.append(f"| {DESCRIPTIONS.get(name, name)} | `{name}` | {ours} | {more} | {bar} | {quoted} |")
    n = " or ".join(str(v) for v in ns) or "?"
    rows += [
        "",
        f"Test accuracy: on the test split (n = {n}), with its 95% Wilson interval. Extended test: the "
        "downloaded images that no split uses, at most `split.extended_per_class` per class, never used for any "
        "choice"
        + ("; `-`: no extended test set in these metrics" if not extended else "")
        + ". Bar: the test accuracy this project set itself to reach at the defaults, and whether this run "
        "does. Quoted for comparison, not measured here: Chollet's *Deep Learning with Python*, 1st edition "
        "(VGG16, 150 px; validation accuracies but fine-tuning's) and 3rd edition (180 px, Xception for the "
        "pre-trained models, test n = 2000), and the claims of the notebook this project started from. "
        f"Written from `{metrics_path.as_posix()}` by `python -m stages.tools.readme_table`.",
    ]
    return "\n".join(rows)


def stage_table(metrics_dir: Path) -> str:
    """The per-stage block: how each stage of the committed run trained and what it cost,
    from metrics/<stage>.json (epochs, epoch kept, wall time, images/s, CPU, precision)."""
    rows = ["| stage | epochs (kept) | val accuracy (kept epoch) | wall | s/epoch | train images/s | CPU | precision |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    total = 0.0
    for stage in ("extract_features", *MODEL_NAMES):
        path = metrics_file(stage, metrics_dir)
        if not path.is_file():
            rows.append(f"| `{stage}` | not in `{path.as_posix()}` | | | | | | |")
            continue
        m = json.loads(path.read_text())
        total += m.get("wall_seconds", 0)
        machine = f"{m.get('cpu', '?')} ({m.get('cpu_kind', '?')})"
        wall = f"{m.get('wall_seconds', 0) / 60:.1f} min"
        if stage == "extract_features":
            done = f"{m['images']} images at {m['images_per_second']}/s"
            if m.get("bank_images"):
                done += f"; bank {m['bank_images']} at {m['bank_images_per_second']}/s"
            rows.append(f"| `{stage}` | {done} | | {wall} | | | {machine} | {m.get('precision', '?')} |")
            continue
        kept = m.get("restored_epoch", m["epochs_run"])
        val = kept_val_accuracy(m)
        rows.append(f"| `{stage}` | {m['epochs_run']} ({kept}) | {val:.3f} | {wall} | {m['seconds_per_epoch']:.1f} | "
                    f"{m['train_images_per_second']:.0f} | {machine} | {m.get('precision', '?')} |")
    rows += ["", f"Training and feature extraction: {total / 60:.0f} min in all, from `{metrics_dir.as_posix()}/*.json` "
             "by `python -m stages.tools.readme_table`. A stage that kept its best epoch (`restore_best`) shows that "
             "epoch's validation accuracy."]
    return "\n".join(rows)


def fill(readme_text: str, block: str, start: str = START, end: str = END) -> str:
    """readme_text with the lines between the markers replaced by `block`."""
    lines = readme_text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == start]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise TableError(f"the README needs exactly one line {start} followed by one line {end} "
                         f"(found {len(starts)} start and {len(ends)} end markers)")
    return "\n".join(lines[: starts[0] + 1] + [block] + lines[ends[0]:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--metrics", type=Path, default=METRICS)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the table is out of date")
    args = parser.parse_args(argv)
    try:
        results = load_metrics(args.metrics)
        if not args.readme.is_file():
            raise TableError(f"{args.readme} not found")
        before = args.readme.read_text()
        after = fill(before, table(results, args.metrics))
        after = fill(after, stage_table(args.metrics.parent), STAGES_START, STAGES_END)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.check:
        if after != before:
            print(f"{args.readme}: results table out of date; run python -m stages.tools.readme_table", file=sys.stderr)
            return 1
        print(f"{args.readme}: results table up to date")
        return 0
    if after != before:
        from stages.lib.outputs import atomic_path

        mode = args.readme.stat().st_mode & 0o7777
        with atomic_path(args.readme) as tmp:  # atomic, and keeps the README's permissions
            tmp.write_text(after)
            tmp.chmod(mode)
        print(f"{args.readme}: results table filled from {args.metrics}")
    else:
        print(f"{args.readme}: results table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
