"""The DAG is honest: each stage's `stages/` code deps in dvc.yaml are exactly the modules
its script imports (transitively, within `stages/`), so that a change reruns every stage it
can affect and no other. A static scan of every import statement, lazy ones included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

STAGES_DIR = ROOT / "stages"
DVC_FILE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
DVC_YAML = DVC_FILE["stages"]


def imported_modules(path: Path) -> set[str]:
    """`stages.X` modules that the file at `path` imports anywhere (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("stages.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stages":
            for alias in node.names:  # `from stages.lib import datasets` imports a module;
                submodule = f"{node.module}.{alias.name}"  # `from stages.lib.study import X`, a name
                found.add(submodule if module_file(submodule).is_file() else node.module)
    return found


def module_file(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def module_closure(module: str) -> set[Path]:
    """The files of `module` and of every `stages` module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name))
    return {module_file(name) for name in seen}


def code_deps(stage: dict) -> set[Path]:
    return {ROOT / d for d in stage.get("deps", []) if str(d).startswith("stages/")}


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_code_deps_are_exactly_what_it_imports(name):
    stage = DVC_YAML[name]
    match = re.fullmatch(r"python -m (stages\.\w+)", stage["cmd"])
    assert match, f"{name}: cmd {stage['cmd']!r} is not `python -m stages.<module>`"
    imported = module_closure(match.group(1))
    listed = code_deps(stage)
    rel = lambda paths: sorted(p.relative_to(ROOT).as_posix() for p in paths)  # noqa: E731
    assert rel(imported - listed) == [], f"{name}: imports these but dvc.yaml does not list them"
    assert rel(listed - imported) == [], f"{name}: dvc.yaml lists these but the stage never imports them"


def test_figure_code_is_a_dep_of_the_reporting_stages_only():
    """Editing a figure or the report never reruns a training stage."""
    users = {name for name, stage in DVC_YAML.items() if ROOT / "stages/figures/report.py" in code_deps(stage)}
    assert users == {"evaluate"}
    users = {name for name, stage in DVC_YAML.items() if ROOT / "stages/figures/data.py" in code_deps(stage)}
    assert users == {"split"}


def test_the_nine_stages():
    assert list(DVC_YAML) == ["download", "split", "train_custom", "train_custom_aug", "extract_features",
                              "train_feature_clf", "train_aug_frozen", "finetune", "evaluate"]


def test_artifacts_are_the_five_models():
    """dvc.yaml's `artifacts:` is what stages/lib/study.py declares, one per model, each the
    output of its training stage."""
    from stages.lib.study import MODEL_NAMES, artifacts

    assert DVC_FILE["artifacts"] == artifacts()
    assert list(DVC_FILE["artifacts"]) == list(MODEL_NAMES)
    for name, artifact in DVC_FILE["artifacts"].items():
        assert artifact["path"] in DVC_YAML[name]["outs"], name


def test_only_evaluate_reads_the_extended_test_set():
    """The extended test set is never used for a choice: no stage but `evaluate` depends on
    it, nor on a folder that holds it (which would rerun training when it changes)."""
    readers = {name for name, stage in DVC_YAML.items()
               for dep in stage.get("deps", []) if dep in ("data/split", "data/split/arrays",
                                                           "data/split/arrays/extended.npz")}
    assert readers == {"evaluate"}
