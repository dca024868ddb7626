"""Keep a finished run of the study on other data as a record in git, generated, never typed:

    python -m stages.tools.record_run PROJECT DEST --command "dvc exp run ..." [--reference TEXT]

PROJECT: the folder where the run finished (`dvc exp run` or `dvc repro`), e.g. a clone
pointed at your own images; DEST: the record's folder, e.g. plots/experiments/hymenoptera.
It copies what the run wrote for readers (params.yaml, the class names, the metrics and run
records its stages declare, the report and every figure and history under plots/; never a
stale file an older run left in metrics/) and writes DEST/README.md: the command, the
classes and split sizes, per model the test accuracy with its interval, balanced accuracy
and the epoch kept, the wall time and the machine. `--reference` quotes a published result
for the same data beside it (quoted, not measured here). Each `-S key=value` (or
`--set-param`) of --command must agree with the run's params.yaml, the value read as YAML as
DVC reads it: a command that did not make the run is refused (one line, exit 2).

The README's "Your own data" table is filled from such a record by
`python -m stages.tools.readme_table`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from stages.lib.study import (CLASSES_FILE, DESCRIPTIONS, FEATURES_RECORD_FILE, MODEL_NAMES, PLOTS_DIR, metrics_file,
                              history_file, run_file, model_scores_file, training_record)
from stages.tools.predict import best_on_validation

PARAMS_FILE = "params.yaml"
RUN_FILE = "run.json"  # the command, the reference and the totals, beside the copies


class RecordError(Exception):
    """A project that has not finished a run: one line, exit 2."""


def copied(project: Path) -> list[str]:
    """What a record keeps of the project in `project`, relative to both folders: the params,
    the class names, plots/, and of metrics/ only the files this pipeline's stages declare
    (each training stage's DVC metrics, evaluate's per model, split's and evaluate's run
    records), so a file an older pipeline wrote there is left behind."""
    declared = [*(metrics_file(name) for name in MODEL_NAMES), *(model_scores_file(name) for name in MODEL_NAMES),
                run_file("split"), run_file("evaluate")]
    return [PARAMS_FILE, CLASSES_FILE.as_posix(), PLOTS_DIR.as_posix(),
            *(path.as_posix() for path in declared if (project / path).is_file())]


def set_params(command: str) -> list[tuple[str, str, str]]:
    """The (params file, dotted key, value as typed) of each `-S`/`--set-param` in a `dvc exp
    run` command; Hydra's `+key=`/`++key=` prefixes dropped, `~key` deletions skipped."""
    words = shlex.split(command)
    found = []
    for i, word in enumerate(words):
        if word in ("-S", "--set-param") and i + 1 < len(words):
            setting = words[i + 1]
        elif word.startswith("--set-param="):
            setting = word.partition("=")[2]
        elif word.startswith("-S") and len(word) > 2:
            setting = word[2:]
        else:
            continue
        key, sep, value = setting.partition("=")
        if not sep or key.startswith("~"):
            continue
        file, colon, dotted = key.lstrip("+").rpartition(":")
        found.append((file if colon else PARAMS_FILE, dotted, value))
    return found


def check_command(project: Path, command: str) -> None:
    """RecordError when a `-S key=value` of `command` disagrees with the run's params."""
    import yaml

    for file, key, value in set_params(command):
        path = project / file
        if not path.is_file():
            raise RecordError(f"--command sets {key} in {file}, but {path} not found")
        ran = yaml.safe_load(path.read_text())
        for part in key.split("."):
            if not isinstance(ran, dict) or part not in ran:
                raise RecordError(f"--command sets {key}={value} but {path} has no {key}: "
                                  "give the command that made the run")
            ran = ran[part]
        if yaml.safe_load(value) != ran:
            raise RecordError(f"--command sets {key}={value} but {path} has {key}: {json.dumps(ran)}: "
                              "give the command that made the run")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise RecordError(f"{path} not found: finish the run first (dvc exp run or dvc repro)")
    return json.loads(path.read_text())


def summary(root: Path) -> dict:
    """What the record's README and the project README say about the run in `root` (a
    project, or a record, which holds the same files)."""
    negative, positive = read_json(root / CLASSES_FILE)["classes"]
    split = read_json(root / run_file("split"))
    record = read_json(root / run_file("evaluate"))
    models, wall, machine = {}, 0.0, {}
    for name in MODEL_NAMES:
        test = read_json(root / model_scores_file(name))
        trained = read_json(root / metrics_file(name))
        cost = training_record(root / history_file(name))
        wall += cost["wall_seconds"]
        machine = {k: cost.get(k) for k in ("cpu", "cpu_kind", "precision")}
        models[name] = {"accuracy": test["accuracy"], "ci_low": test["ci_low"], "ci_high": test["ci_high"],
                        "balanced_accuracy": record[name]["balanced_accuracy"], "n": record[name]["n"],
                        "epochs": trained["epochs"], "kept_epoch": trained["kept_epoch"],
                        "val_accuracy": trained["val_accuracy"]}
    wall += read_json(root / FEATURES_RECORD_FILE)["wall_seconds"]
    return {"classes": [negative, positive], "split": split, "models": models,
            "training_minutes": round(wall / 60, 1), **machine}


def results_table(facts: dict) -> list[str]:
    """Markdown rows: per model its test accuracy (interval), balanced accuracy, epoch kept."""
    rows = ["| model | stage | test accuracy (95% CI) | balanced accuracy | epoch kept (of) | val accuracy |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, m in facts["models"].items():
        rows.append(f"| {DESCRIPTIONS[name]} | `{name}` | {m['accuracy']:.3f} ({m['ci_low']:.3f}-{m['ci_high']:.3f}) | "
                    f"{m['balanced_accuracy']:.3f} | {m['kept_epoch']} ({m['epochs']}) | {m['val_accuracy']:.3f} |")
    return rows


def split_line(facts: dict) -> str:
    counts = facts["split"]
    parts = [f"{split} " + " + ".join(f"{counts[split].get(c, 0)} {c}" for c in facts["classes"])
             for split in ("train", "validation", "test") if split in counts]
    return "; ".join(parts)


def readme(facts: dict, run: dict) -> str:
    negative, positive = facts["classes"]
    lines = [
        f"# {negative} vs. {positive}: the study on other data",
        "",
        "Written by `python -m stages.tools.record_run` from a finished run; do not edit. The run's own",
        "report is [plots/report.md](plots/report.md); its params, metrics and figures are beside this file.",
        "",
        "```",
        run["command"],
        "```",
        "",
        f"Classes: {negative} (label 0) and {positive} (label 1, the positive class). Images: {split_line(facts)}.",
        "",
        *results_table(facts),
        "",
        f"Training and feature extraction took {facts['training_minutes']} min on {facts['cpu']} "
        f"({facts['cpu_kind']}, {facts['precision']}).",
    ]
    if run.get("reference"):
        lines += ["", f"Published, for comparison (quoted, not measured here): {run['reference']}"]
    return "\n".join(lines) + "\n"


def record(project: Path, dest: Path, command: str, reference: str | None) -> dict:
    """Copy the run in `project` into `dest` (replaced as a whole) and write its README."""
    facts = summary(project)  # first: a run that is not finished leaves dest as it was
    check_command(project, command)
    run = {"command": command, **({"reference": reference} if reference else {})}
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name in copied(project):
            source = project / name
            if source.is_dir():
                shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("experiments"))
            else:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, staging / name)
        (staging / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
        (staging / "README.md").write_text(readme(facts, run))
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.tools.record_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the project folder where the run finished")
    parser.add_argument("dest", type=Path, help="the record's folder, e.g. plots/experiments/<name>")
    parser.add_argument("--command", required=True, help="the command that ran it, as a user would type it")
    parser.add_argument("--reference", help="a published result on the same data, quoted with its source")
    args = parser.parse_args(argv)
    try:
        facts = record(args.project, args.dest, args.command, args.reference)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _, best = best_on_validation([(m["val_accuracy"], name) for name, m in facts["models"].items()])
    print(f"record_run: {args.dest}/README.md; best on validation: {best} "
          f"(test accuracy {facts['models'][best]['accuracy']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
