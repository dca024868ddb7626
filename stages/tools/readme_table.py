"""Fill the README's results table from evaluate's record (metrics/runs/evaluate.json), and
its per-stage table (epochs, epoch kept, wall time, images/s, CPU, precision) from each
stage's DVC metrics and run record (metrics/<stage>.json, plots/<stage>/history.json,
plots/extract_features/record.json: see stages/lib/study.py); never by hand:

    python -m stages.tools.readme_table            # rewrite the tables in README.md
    python -m stages.tools.readme_table --check    # exit 1 if README.md's tables are out of date

Each table sits between marker lines (`<!-- results:start -->` ... `<!-- results:end -->`,
`<!-- stages:start -->` ... `<!-- stages:end -->`, and `<!-- own-data:start -->` ...
`<!-- own-data:end -->`: the study on ants and bees, from its record under
plots/experiments/hymenoptera; `<!-- seeds:start -->` ... `<!-- seeds:end -->`: the test
accuracy per seed, from the records under plots/experiments/seeds, written by
stages.tools.record_seeds); only those blocks are rewritten. Beside
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

from stages.lib.study import (DESCRIPTIONS, FEATURES_RECORD_FILE, METRICS_DIR, MODEL_NAMES, PLOTS_DIR, README_FILE,
                              bar_text, feature_passes, history_file, metrics_file, run_file, seeds_dir)

START = "<!-- results:start -->"
END = "<!-- results:end -->"
STAGES_START = "<!-- stages:start -->"  # the per-stage table: epochs, time, machine
STAGES_END = "<!-- stages:end -->"
OWN_DATA_START = "<!-- own-data:start -->"  # the study on other data, from its record
OWN_DATA_END = "<!-- own-data:end -->"
OWN_DATA_RECORD = Path("plots/experiments/hymenoptera")  # written by stages.tools.record_run
SEEDS_START = "<!-- seeds:start -->"  # the three-seed table, from plots/experiments/seeds (stages/lib/seeds.py)
SEEDS_END = "<!-- seeds:end -->"
README = README_FILE
METRICS = run_file("evaluate")
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
    try:
        accuracy = r["accuracy"]
    except (KeyError, TypeError):
        accuracy = None
    return bar_text(name, accuracy)


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


def read_record(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_table(root: Path) -> str:
    """The per-stage block: how each stage of the committed run trained and what it cost,
    under the project folder `root`: epochs, epoch kept and its validation accuracy from the
    training stage's DVC metrics; wall time, s/epoch, images/s, CPU and precision from its
    run record (extract_features': plots/extract_features/record.json, in git)."""
    rows = ["| stage | epochs (kept) | val accuracy (kept epoch) | wall | s/epoch | train images/s | CPU | precision |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    total = 0.0
    for stage in ("extract_features", *MODEL_NAMES):
        record_path = root / (FEATURES_RECORD_FILE if stage == "extract_features" else history_file(stage, PLOTS_DIR))
        metrics_path = root / metrics_file(stage, METRICS_DIR)
        r = read_record(record_path)
        if r is not None and stage != "extract_features":
            r = r.get("run") or None  # a history without its record: the stage did not finish
        m = None if stage == "extract_features" else read_record(metrics_path)
        missing = record_path if r is None else metrics_path if m is None and stage != "extract_features" else None
        if missing is not None:
            rows.append(f"| `{stage}` | not in `{missing.relative_to(root).as_posix()}` | | | | | | |")
            continue
        total += r.get("wall_seconds", 0)
        machine = f"{r.get('cpu', '?')} ({r.get('cpu_kind', '?')})"
        wall = f"{r.get('wall_seconds', 0) / 60:.1f} min"
        if stage == "extract_features":
            done = "; ".join(f"{p['pass']} {p['images']} images at {p['images_per_second']}/s"
                             for p in feature_passes(r).values())
            rows.append(f"| `{stage}` | {done} | | {wall} | | | {machine} | {r.get('precision', '?')} |")
            continue
        try:
            rows.append(f"| `{stage}` | {m['epochs']} ({m['kept_epoch']}) | {m['val_accuracy']:.3f} | {wall} | "
                        f"{r['seconds_per_epoch']:.1f} | {r['train_images_per_second']:.0f} | {machine} | "
                        f"{r.get('precision', '?')} |")
        except KeyError as e:  # written by older code: rerun the stage
            raise TableError(f"{metrics_path} or {record_path} has no {e}: written by an older run of {stage}, "
                             "rerun it (dvc repro)") from None
    rows += ["", f"Training and feature extraction: {total / 60:.0f} min in all, from `{METRICS_DIR.as_posix()}/<stage>.json` "
             f"and the run records (`{history_file('<stage>', PLOTS_DIR).as_posix()}`, "
             f"`{FEATURES_RECORD_FILE.as_posix()}`) by `python -m stages.tools.readme_table`. A stage that kept its best "
             "epoch (`restore_best`) shows that epoch's validation accuracy."]
    return "\n".join(rows)


def own_data_table(record: Path) -> str:
    """The "Your own data" block: the models' test results of a run on other data, from its
    record (stages.tools.record_run), and the published result it quotes."""
    from stages.tools.record_run import RUN_FILE, RecordError, results_table, split_line, summary

    try:
        facts = summary(record)
        run = json.loads((record / RUN_FILE).read_text())
    except (RecordError, FileNotFoundError) as e:
        raise TableError(f"{record}: not a complete record ({e}); write it with python -m stages.tools.record_run") \
            from None
    negative, positive = facts["classes"]
    rows = [*results_table(facts), "",
            f"{negative} vs. {positive} ({split_line(facts)}): {facts['training_minutes']} min of training and feature extraction on "
            f"{facts['cpu']} ({facts['cpu_kind']}, {facts['precision']}). Published, for comparison (quoted, not "
            f"measured here): {run.get('reference', '-')} The run: [{record.as_posix()}]({record.as_posix()}/README.md), "
            "written by `python -m stages.tools.record_run`."]
    return "\n".join(rows)


def seeds_table(root: Path) -> str:
    """The seed block: the study's test accuracy per seed, from the seed records under `root`
    (none recorded: how to make them)."""
    from stages.lib.seeds import read_records, seed_table

    return "\n".join(seed_table(read_records(root / seeds_dir(PLOTS_DIR)), seeds_dir(PLOTS_DIR)))


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
    parser.add_argument("--metrics", type=Path, default=METRICS, help="evaluate's record")
    parser.add_argument("--root", type=Path, default=Path("."), help="the project, for the per-stage table")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the table is out of date")
    args = parser.parse_args(argv)
    try:
        results = load_metrics(args.metrics)
        if not args.readme.is_file():
            raise TableError(f"{args.readme} not found")
        before = args.readme.read_text()
        after = fill(before, table(results, args.metrics))
        after = fill(after, stage_table(args.root), STAGES_START, STAGES_END)
        if OWN_DATA_START in after:  # the project's README has it; a README of your own may not
            after = fill(after, own_data_table(args.root / OWN_DATA_RECORD), OWN_DATA_START, OWN_DATA_END)
        if SEEDS_START in after:  # likewise
            after = fill(after, seeds_table(args.root), SEEDS_START, SEEDS_END)
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
