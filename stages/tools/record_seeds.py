"""Record finished runs of the study that differ only in `train.seed`, for the seed table:

    python -m stages.tools.record_seeds workspace seed-43 seed-44

Each argument is a DVC experiment name (`dvc exp run -n seed-43 ...`, found under refs/exps),
any git revision, or `workspace` (the working tree). From what that run committed (`git show
<rev>:<path>`) it reads params.yaml, each model's test metrics (metrics/test/<model>.json),
evaluate's record (metrics/runs/evaluate.json) and the run records of the timed stages, and
writes plots/experiments/seeds/seed-<N>.json (seed, name, commit, per model the test metrics
and extended-test accuracy, per stage wall seconds, their total, CPU, CPU kind, precision). A
stage resumed from its checkpoint records its last session's wall seconds only: the total
counts its epochs instead, and `resumed` names it. Refused, one line, exit 2: a run whose
params differ from the workspace's params.yaml in anything but train.seed (download.source and
vgg16_weights may differ when its dvc.lock records the same split data), or whose dvc.lock
records other code under stages/ than the workspace's; two runs of one seed; a run lacking a
file (unfinished). The README's and the report's seed table (stages/lib/seeds.py) are drawn
from these records.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from stages.lib.seeds import stage_record, stage_record_files
from stages.lib.study import MODEL_NAMES, PLOTS_DIR, SPLIT_DIR, TEST_METRICS, model_scores_file, run_file, seed_record_file

PARAMS_FILE = Path("params.yaml")
LOCK_FILE = Path("dvc.lock")  # the code each stage ran: a seed must have run the workspace's
WHERE_FROM = ("download.source ", "download.vgg16_weights ")  # may differ when the split data are the same
SEED_KEY = ("train", "seed")
WORKSPACE = "workspace"


class SeedError(Exception):
    """A run that cannot be a seed of the table: one line, exit 2."""


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def resolve(name: str) -> str | None:
    """The commit of a run: a DVC experiment of that name (refs/exps/<baseline>/<name>),
    else a git revision; None for the working tree."""
    if name == WORKSPACE:
        return None
    refs = git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout.split("\n")
    # an experiment's ref is refs/exps/<2 hex>/<38 hex>/<name>; refs/exps/celery, exec etc. are the queue's
    found = {sha for sha, _, ref in (line.partition(" ") for line in refs if line)
             if len(ref.split("/")) == 5 and ref.split("/")[4] == name}
    if len(found) > 1:
        raise SeedError(f"{name}: {len(found)} DVC experiments have this name; give the commit "
                        "(dvc exp show --sha) instead")
    if found:
        return found.pop()
    commit = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if commit.returncode != 0:
        raise SeedError(f"{name}: neither a DVC experiment (dvc exp list) nor a git revision, nor {WORKSPACE}")
    return commit.stdout.strip()


def reader(name: str, commit: str | None):
    """path -> its text in the run (a commit, or the working tree); SeedError when absent."""

    def read(path: Path) -> str:
        if commit is None:
            if not path.is_file():
                raise SeedError(f"{name}: {path.as_posix()} not found: an unfinished run? finish it (dvc repro)")
            return path.read_text()
        shown = git("show", f"{commit}:./{path.as_posix()}")  # ./: relative to the project folder
        if shown.returncode != 0:
            raise SeedError(f"{name} ({commit[:7]}): {path.as_posix()} not in that commit: an unfinished run? "
                            "finish it (dvc queue start, dvc exp run)")
        return shown.stdout

    return read


def flat(params, prefix: tuple = ()) -> dict[tuple, object]:
    """{(section, key, ...): value} of a params tree."""
    if isinstance(params, dict):
        return {k: v for key, value in params.items() for k, v in flat(value, (*prefix, key)).items()}
    return {prefix: params}


def differences(params: dict, reference: dict) -> list[str]:
    """`key: value (workspace: value)` for each param but train.seed that is not the reference's."""
    ran, ours = flat(params), flat(reference)
    return [f"{'.'.join(map(str, k))} = {json.dumps(ran.get(k))} (workspace: {json.dumps(ours.get(k))})"
            for k in sorted(set(ran) | set(ours), key=str) if k != SEED_KEY and ran.get(k) != ours.get(k)]


def code_hashes(lock_text: str) -> dict[tuple[str, str], str]:
    """{(stage, code file): md5} of the stages/ deps a dvc.lock records: the code each stage ran."""
    stages = (yaml.safe_load(lock_text) or {}).get("stages", {})
    return {(stage, dep["path"]): dep.get("md5") for stage, entry in stages.items()
            for dep in entry.get("deps", []) if dep["path"].startswith("stages/")}


def split_data(lock_text: str) -> str | None:
    """The md5 dvc.lock records of the split data (data/split): the same images in each split."""
    split = (yaml.safe_load(lock_text) or {}).get("stages", {}).get("split", {})
    return next((out.get("md5") for out in split.get("outs", []) if out["path"] == SPLIT_DIR.as_posix()), None)


def epoch_seconds(record: dict) -> float:
    """A training stage's time by its epochs (epochs x median seconds per epoch, plus the
    frozen layers' pass), 0 for extract_features. A stage resumed from its checkpoint records
    the wall seconds of its last session only; its epochs count them all. Within 2% of the
    wall seconds it is no resume: the wall seconds stand."""
    seconds = record.get("epochs_run", 0) * record.get("seconds_per_epoch", 0) + record.get("frozen_seconds", 0)
    return seconds if seconds > 1.02 * record["wall_seconds"] else 0.0


def seed_record(name: str, workspace_params: dict, workspace_code: dict, workspace_split: str | None) -> dict:
    """What a run committed, as its seed record; SeedError if it is no seed of the workspace's study."""
    commit = resolve(name)
    read = reader(name, commit)
    params = yaml.safe_load(read(PARAMS_FILE))
    seed = (params.get("train") or {}).get("seed") if isinstance(params, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SeedError(f"{name}: params.yaml has train.seed = {json.dumps(seed)}; a seed record needs an integer")
    lock = read(LOCK_FILE)
    changed = differences(params, workspace_params)
    if split_data(lock) is not None and split_data(lock) == workspace_split:
        # where the images and weights were read from (a local copy, another URL) is no
        # difference when the split data are the same files
        changed = [c for c in changed if not c.startswith(WHERE_FROM)]
    if changed:
        raise SeedError(f"{name}: params.yaml differs from the workspace's beyond train.seed ({'; '.join(changed)}): "
                        "a seed table compares seeds only; run it with -S train.seed=N alone")
    other_code = sorted(f"{path} ({stage})" for key, md5 in code_hashes(lock).items()
                        for stage, path in [key] if workspace_code.get(key) != md5)
    if other_code:
        raise SeedError(f"{name}: ran other code than the workspace's {LOCK_FILE} records ({', '.join(other_code[:3])}"
                        f"{', ...' if len(other_code) > 3 else ''}): a seed table compares seeds only; rerun it")
    try:
        evaluate = json.loads(read(run_file("evaluate")))
        models = {}
        for model in MODEL_NAMES:
            scores = json.loads(read(model_scores_file(model)))
            models[model] = {**{k: scores.get(k) for k in TEST_METRICS}, "n": evaluate[model]["n"],
                             "extended_n": (evaluate.get("extended") or {}).get(model, {}).get("n")}
        stages = {stage: stage_record(stage, json.loads(read(path))) for stage, path in stage_record_files().items()}
        wall = {stage: r["wall_seconds"] for stage, r in stages.items()}
        spent = {stage: max(wall[stage], epoch_seconds(r)) for stage, r in stages.items()}
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise SeedError(f"{name}: its metrics or run records lack {e} (written by older code?): rerun it") from None
    machine = {key: ", ".join(dict.fromkeys(str(r.get(key)) for r in stages.values()))
               for key in ("cpu", "cpu_kind", "precision")}
    head = git("rev-parse", "HEAD").stdout.strip() if commit is None else commit
    return {"seed": seed, "name": name, "commit": head, "workspace": commit is None,
            "models": models, "wall_seconds": wall, "resumed": [s for s in stages if spent[s] > wall[s]],
            "total_wall_seconds": round(sum(spent.values()), 1), **machine}


def record_seeds(names: list[str], plots_dir: Path = PLOTS_DIR) -> list[Path]:
    """Write each run's seed record; nothing is written when any run is refused."""
    if not PARAMS_FILE.is_file():
        raise SeedError(f"{PARAMS_FILE} not found: run this in the project folder")
    workspace_params = yaml.safe_load(PARAMS_FILE.read_text())
    if not LOCK_FILE.is_file():
        raise SeedError(f"{LOCK_FILE} not found: run the study first (dvc repro)")
    workspace_lock = LOCK_FILE.read_text()
    workspace_code, workspace_split = code_hashes(workspace_lock), split_data(workspace_lock)
    records = [seed_record(name, workspace_params, workspace_code, workspace_split) for name in names]
    by_seed: dict[int, str] = {}
    for r in records:
        if r["seed"] in by_seed:
            raise SeedError(f"{by_seed[r['seed']]} and {r['name']} both have train.seed = {r['seed']}: "
                            "one run per seed")
        by_seed[r["seed"]] = r["name"]
    from stages.lib.outputs import write_json

    written = []
    for r in records:
        path = seed_record_file(r["seed"], plots_dir)
        write_json(path, r)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.tools.record_seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="EXP_OR_REV",
                        help=f"a DVC experiment name, a git revision or {WORKSPACE}")
    args = parser.parse_args(argv)
    try:
        written = record_seeds(args.runs)
    except SeedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"record_seeds: {path.as_posix()}")
    print("then: python -m stages.tools.readme_table (the README) and dvc repro (the report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
