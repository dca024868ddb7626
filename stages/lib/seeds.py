"""The three-seed table: how much of the study's result is luck. Its records (one JSON file
per seed, stages.tools.record_seeds) and the one Markdown table drawn from them, which the
README (stages.tools.readme_table) and the report (stages/figures/report.py) both show.

The seeds are fixed in advance, never chosen by a score: SEEDS. The default, train.seed in
params.yaml, stays the first of them whatever the results."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from stages.lib.study import DESCRIPTIONS, FEATURES_RECORD_FILE, MODEL_NAMES, PLOTS_DIR, bar_text, history_file, seeds_dir

SEEDS = (42, 43, 44)  # 42: the default and the committed run
RECORD_GLOB = "seed-*.json"


def run_commands(seeds: tuple[int, ...] = SEEDS) -> list[str]:
    """How the seed runs are made: the default by `dvc repro`, the others as queued
    experiments, then their records."""
    default, *others = seeds
    return ["dvc repro",
            *(f"dvc exp run --queue -S train.seed={s} -n seed-{s}" for s in others),
            "dvc queue start",
            "python -m stages.tools.record_seeds workspace " + " ".join(f"seed-{s}" for s in others)]


# ---------------------------------------------------------------- what a run's records hold


def stage_record_files() -> dict[str, Path]:
    """The file (relative to the project) holding each timed stage's run record, whose
    `wall_seconds`, `cpu`, `cpu_kind` and `precision` a seed record keeps: extract_features'
    record and each training stage's history file. The one place that knows where they live."""
    return {"extract_features": FEATURES_RECORD_FILE, **{m: history_file(m) for m in MODEL_NAMES}}


def stage_record(stage: str, content: dict) -> dict:
    """The run record in a stage_record_files() file's content: a training stage's is the
    history file's "run" (KeyError when the stage did not finish)."""
    return content if stage == "extract_features" else content["run"]


# ---------------------------------------------------------------- the table


def read_records(folder: Path | None = None) -> list[dict]:
    """The seed records in `folder` (default: plots/experiments/seeds), by seed."""
    folder = seeds_dir(PLOTS_DIR) if folder is None else folder
    records = [json.loads(p.read_text()) for p in sorted(folder.glob(RECORD_GLOB))] if folder.is_dir() else []
    return sorted(records, key=lambda r: r["seed"])


def mean_and_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); no deviation from one value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def run_name(record: dict) -> str:
    """How the table names a run: the experiment or revision, or `dvc repro` for the
    workspace's own run (the committed study, when the records are committed with it)."""
    return "`dvc repro`, the workspace" if record.get("workspace") else f"`{record['name']}`"


def seed_table(records: list[dict], folder: Path | None = None) -> list[str]:
    """Markdown lines: per model the test accuracy of each seed, their mean and sample
    standard deviation, the extended-test mean, and the mean against the model's bar; then
    each run's wall time and machine. Without records: how to make them."""
    folder = seeds_dir(PLOTS_DIR) if folder is None else folder
    planned = ", ".join(f"{s}" for s in SEEDS[1:])
    fixed = (f"The seeds were fixed in advance: {SEEDS[0]} (the default, `train.seed`), {planned}; "
             "none is chosen by its score.")
    if not records:
        return ["No seed runs are recorded yet. " + fixed + " To make them: "
                + "; ".join(f"`{c}`" for c in run_commands()) + "."]
    records = sorted(records, key=lambda r: r["seed"])
    seeds = [r["seed"] for r in records]
    rows = ["| model | stage | " + " | ".join(f"seed {s}" for s in seeds)
            + " | mean (sd) | extended test mean | bar (mean) |",
            "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- | --- | --- |"]
    for name in MODEL_NAMES:
        scores = [r["models"][name] for r in records if name in r.get("models", {})]
        if len(scores) < len(records):
            rows.append(f"| {DESCRIPTIONS[name]} | `{name}` | " + " | ".join("-" for _ in seeds) + " | - | - | - |")
            continue
        mean, sd = mean_and_sd([s["accuracy"] for s in scores])
        extended = [s.get("extended_accuracy") for s in scores]
        extended_mean = f"{statistics.fmean(extended):.3f}" if None not in extended else "-"
        rows.append(f"| {DESCRIPTIONS[name]} | `{name}` | " + " | ".join(f"{s['accuracy']:.3f}" for s in scores)
                    + f" | {mean:.3f} ({'-' if sd is None else f'{sd:.3f}'}) | {extended_mean} | {bar_text(name, mean)} |")
    runs = "; ".join(f"seed {r['seed']} ({run_name(r)}): {minutes(r['total_wall_seconds'])} on {r['cpu']} "
                     f"({r['cpu_kind']}, {r['precision']})" for r in records)
    missing = [s for s in SEEDS if s not in seeds]
    rows += ["", f"Test accuracy per seed: the same params and data, only `train.seed` differs. {fixed} "
             + (f"Not recorded yet: seed {', '.join(map(str, missing))}. " if missing else "")
             + "sd: sample standard deviation (n - 1). Bar: the mean against the model's bar. Extended test: "
             f"mean accuracy on the extended test set. Training and feature extraction: {runs}. Made by "
             + "; ".join(f"`{c}`" for c in run_commands()) + f"; written from `{folder.as_posix()}/seed-<N>.json`."]
    return rows
