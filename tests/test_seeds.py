"""The seed table: records of runs that differ only in `train.seed` (stages.tools.record_seeds),
read from what DVC experiments committed, and the one table drawn from them in the README
(stages.tools.readme_table) and the report (`evaluate`). The renderer is checked on
hand-computed records; the tool end to end on a tiny study with two seeds run by
`dvc exp run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, dvc, git, make_project, ran_stages, tiny_params, write_kaggle_folder
from stages.lib.seeds import SEEDS, read_records, run_commands, seed_table, stage_record, stage_record_files
from stages.lib.study import MODEL_NAMES, TEST_METRICS, model_scores_file, seed_record_file, seeds_dir


def record(seed: int, accuracies: dict[str, float], extended: dict[str, float] | None = None) -> dict:
    """A seed record as record_seeds writes it, with the given test (and extended) accuracies."""
    return {"seed": seed, "name": f"seed-{seed}", "commit": "0" * 40, "workspace": False,
            "models": {m: {"accuracy": a, "extended_accuracy": (extended or {}).get(m), "n": 1000}
                       for m, a in accuracies.items()},
            "wall_seconds": {"extract_features": 600.0, "finetune": 3000.0}, "total_wall_seconds": 3600.0,
            "cpu": "AMD EPYC", "cpu_kind": "avx512_bf16", "precision": "mixed_bfloat16"}


def row(lines: list[str], stage: str) -> list[str]:
    """The cells of a model's row in the table."""
    [found] = [line for line in lines if f"| `{stage}` |" in line]
    return [cell.strip() for cell in found.strip("|").split("|")]


def test_the_table_has_each_seed_the_mean_and_sample_deviation_against_the_bar():
    # Hand-computed: .700 .720 .740 -> mean .720, sd sqrt((.02^2 + 0 + .02^2) / 2) = .020: at the bar.
    # .970 .975 .977 -> mean .974, sd sqrt((16 + 1 + 9) / 2) e-3 = .0036: short of .975 by .001.
    accuracy = {42: 0.700, 43: 0.720, 44: 0.740}
    fine = {42: 0.970, 43: 0.975, 44: 0.977}
    records = [record(s, {**{m: 0.9 for m in MODEL_NAMES}, "train_custom": accuracy[s], "finetune": fine[s]},
                      {m: 0.8 + i / 100 for m in MODEL_NAMES}) for i, s in enumerate(SEEDS)]
    lines = seed_table(records[::-1])  # in any order: columns by seed
    assert lines[0].startswith("| model | stage | seed 42 | seed 43 | seed 44 | mean (sd) |")
    assert row(lines, "train_custom") == ["small convnet", "`train_custom`", "0.700", "0.720", "0.740",
                                          "0.720 (0.020)", "0.810", ".72: met"]
    assert row(lines, "finetune") == ["fine-tuned block5", "`finetune`", "0.970", "0.975", "0.977",
                                      "0.974 (0.004)", "0.810", ".975: short by .001"]
    assert [row(lines, m)[1] for m in MODEL_NAMES] == [f"`{m}`" for m in MODEL_NAMES]  # the study's order
    note = lines[-1]
    assert "fixed in advance: 42 (the default" in note and "Not recorded yet" not in note
    assert "seed 42 (`seed-42`): 60 min on AMD EPYC (avx512_bf16, mixed_bfloat16)" in note


def test_one_seed_has_no_deviation_and_the_missing_seeds_are_named():
    lines = seed_table([record(42, {m: 0.96 for m in MODEL_NAMES})])
    assert row(lines, "finetune")[3:] == ["0.960 (-)", "-", ".975: short by .015"]  # no extended test set
    assert "Not recorded yet: seed 43, 44." in lines[-1]


def test_a_resumed_stage_counts_its_epochs_not_its_last_sessions_wall_seconds():
    from stages.tools.record_seeds import epoch_seconds

    # 160 epochs at 12 s, resumed at epoch 106: its last session's 660 s cover 55 epochs.
    assert epoch_seconds({"epochs_run": 160, "seconds_per_epoch": 12.0, "wall_seconds": 660.0}) == 1920.0
    # The bank's frozen pass counts too; a run in one session stands at its wall seconds.
    assert epoch_seconds({"epochs_run": 10, "seconds_per_epoch": 30.0, "frozen_seconds": 100.0,
                          "wall_seconds": 150.0}) == 400.0
    assert epoch_seconds({"epochs_run": 160, "seconds_per_epoch": 12.0, "wall_seconds": 1930.0}) == 0.0
    assert epoch_seconds({"images": 4000, "wall_seconds": 600.0}) == 0.0  # extract_features: no epochs


def test_without_records_the_table_says_how_to_make_them(tmp_path):
    assert read_records(tmp_path / "absent") == [] and read_records(tmp_path) == []
    [line] = seed_table([])
    assert line.startswith("No seed runs are recorded yet.")
    assert all(f"`{command}`" in line for command in run_commands())
    assert "dvc exp run --queue -S train.seed=43 -n seed-43" in run_commands()


# ---------------------------------------------------------------- end to end, on a tiny study

SEED_RUNS = (7, 8)  # the experiments' seeds; the workspace keeps params.yaml's


def record_seeds(project: Path, *runs: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "-m", "stages.tools.record_seeds", *runs], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def committed(project: Path, rev: str, path: Path) -> dict:
    return json.loads(git(project, "show", f"{rev}:{path.as_posix()}"))


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    """One line, exit 2, no traceback, naming what is wrong."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert all(word in result.stderr for word in words), result.stderr


def commit_variant(project: Path, branch: str, seed: int, edit) -> None:
    """A commit on `branch` with params.yaml's train.seed set to `seed` and `edit(project)`
    applied, the workspace back on the branch it was on."""
    git(project, "checkout", "-q", "-b", branch)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = seed
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    edit(project)
    git(project, "add", "params.yaml")
    git(project, "commit", "-qm", branch)  # what is staged: params.yaml, and what edit staged
    git(project, "checkout", "-q", "-")


@pytest.mark.slow  # a dvc repro and two experiments of the whole tiny study
def test_seed_records_of_dvc_experiments_fill_the_readme_and_the_report(tmp_path, random_vgg16_weights,
                                                                        monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    source = write_kaggle_folder(tmp_path / "images", per_class=10)  # 2 per class left: an extended test set
    params = tiny_params(source, random_vgg16_weights)
    params["split"].update(train_per_class=4, val_per_class=2, test_per_class=2)
    project = make_project(tmp_path / "project", params)
    default = params["train"]["seed"]
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the study at the default seed")
    for seed in SEED_RUNS:  # --temp: as a queued run does, in a copy; the workspace stays the default's
        dvc(project, "exp", "run", "--temp", "-S", f"train.seed={seed}", "-n", f"seed-{seed}")

    result = record_seeds(project, "workspace", *(f"seed-{s}" for s in SEED_RUNS))
    assert result.returncode == 0, result.stderr
    refs = dict(line.split()[::-1] for line in git(project, "for-each-ref", "--format=%(objectname) %(refname)",
                                                  "refs/exps").splitlines())
    revs = {default: "HEAD", **{s: next(sha for ref, sha in refs.items() if ref.endswith(f"/seed-{s}"))
                                for s in SEED_RUNS}}
    for seed, rev in revs.items():
        r = json.loads((project / seed_record_file(seed)).read_text())
        assert r["seed"] == seed and r["workspace"] == (seed == default)
        assert r["commit"] == git(project, "rev-parse", rev).strip()
        for model in MODEL_NAMES:
            scores = committed(project, rev, model_scores_file(model))
            assert "extended_accuracy" in scores
            assert {k: r["models"][model][k] for k in TEST_METRICS} == {k: scores[k] for k in TEST_METRICS}
        for stage, path in stage_record_files().items():
            ran = stage_record(stage, committed(project, rev, path))
            assert r["wall_seconds"][stage] == ran["wall_seconds"] and r["cpu_kind"] == ran["cpu_kind"]
        assert r["resumed"] == [] and r["total_wall_seconds"] == round(sum(r["wall_seconds"].values()), 1)
    records = read_records(project / seeds_dir())
    assert [r["seed"] for r in records] == sorted(revs)

    # The README block: the table from these records.
    readme = project / "README.md"
    readme.write_text("\n".join(f"<!-- {b}:start -->\n<!-- {b}:end -->" for b in ("results", "stages", "seeds")) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    table = subprocess.run([sys.executable, "-m", "stages.tools.readme_table", "--readme", str(readme),
                            "--root", str(project), "--metrics", str(project / "metrics/runs/evaluate.json")],
                           cwd=project, env=env, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    block = readme.read_text().split("<!-- seeds:start -->\n")[1].split("\n<!-- seeds:end -->")[0]
    assert block.split("\n") == seed_table(records)
    finetune = row(block.split("\n"), "finetune")
    assert finetune[2:5] == [f"{r['models']['finetune']['accuracy']:.3f}" for r in records]

    # The report: evaluate reruns for the records (its dependency), and only it.
    repro = dvc(project, "repro")
    assert ran_stages(repro.stdout) == ["evaluate"], repro.stdout
    report = (project / "plots/report.md").read_text()
    section = report.split("## How much is luck: three seeds\n")[1].split("\n## ")[0]
    assert "\n".join(seed_table(records)) in section

    # Refused, nothing written: other params than the seed, one seed twice, an unfinished run.
    commit_variant(project, "other-params", 9,
                   lambda p: (p / "params.yaml").write_text((p / "params.yaml").read_text()
                                                            .replace("epochs: 2", "epochs: 3", 1)))
    refused(record_seeds(project, "other-params"), "other-params", "train_custom.epochs = 3", "workspace: 2")
    refused(record_seeds(project, "seed-7", revs[7]), "seed-7", "train.seed = 7", "one run per seed")
    commit_variant(project, "unfinished", 10, lambda p: git(p, "rm", "-q", "metrics/test/finetune.json"))
    refused(record_seeds(project, "seed-8", "unfinished"), "unfinished", "metrics/test/finetune.json not in that commit")
    commit_variant(project, "other-code", 11, lambda p: other_code(p, "train_custom", "stages/train_custom.py"))
    refused(record_seeds(project, "other-code"), "other-code", "ran other code", "stages/train_custom.py (train_custom)")
    refused(record_seeds(project, "no-such-run"), "no-such-run", "neither a DVC experiment")
    assert sorted(p.name for p in (project / seeds_dir()).iterdir()) == \
        sorted(["README.md", *(seed_record_file(s).name for s in revs)])
    # Where the images were read from may differ when dvc.lock records the same split data.
    commit_variant(project, "local-copy", 12, lambda p: (p / "params.yaml").write_text(
        (p / "params.yaml").read_text().replace(str(source), str(tmp_path / "a-copy"))))
    assert record_seeds(project, "local-copy").returncode == 0
    assert json.loads((project / seed_record_file(12)).read_text())["name"] == "local-copy"


def other_code(project: Path, stage: str, path: str) -> None:
    """dvc.lock records another version of `path` for `stage`, staged."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    [dep] = [d for d in lock["stages"][stage]["deps"] if d["path"] == path]
    dep["md5"] = "0" * 32
    (project / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    git(project, "add", "dvc.lock")
