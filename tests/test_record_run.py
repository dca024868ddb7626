"""record_run's checks that need no finished run: which `-S` settings a `dvc exp run`
command makes, and the refusal of one the run's params.yaml contradicts (the end-to-end
record is tested in test_pipeline.py on a tiny study)."""

from __future__ import annotations

import pytest

from stages.tools.record_run import RecordError, check_command, copied, set_params


def test_set_params_reads_every_spelling_of_a_setting():
    command = ("dvc exp run -n x -S download.source='/data/my photos' --set-param split.seed=7 "
               "--set-param=split.order=shuffle -Strain.batch_size=16 -S other.yaml:a.b=1 -S +new.key=2 -S ~gone")
    assert set_params(command) == [
        ("params.yaml", "download.source", "/data/my photos"), ("params.yaml", "split.seed", "7"),
        ("params.yaml", "split.order", "shuffle"), ("params.yaml", "train.batch_size", "16"),
        ("other.yaml", "a.b", "1"), ("params.yaml", "new.key", "2")]


def test_a_command_must_agree_with_the_params_of_the_run(tmp_path):
    (tmp_path / "params.yaml").write_text("download:\n  source: /work/shared/x\nsplit:\n  train_per_class: 0.8\n"
                                          "  classes:\n  order: shuffle\n")
    # Values are read as YAML, as DVC reads them: 0.8 is the float, null the empty value.
    check_command(tmp_path, "dvc exp run -S download.source=/work/shared/x -S split.train_per_class=0.8 "
                            "-S split.classes=null -S split.order=shuffle")
    check_command(tmp_path, "dvc repro")  # no settings: nothing to contradict
    with pytest.raises(RecordError, match=r"download.source=\.\./shared/x but .*params.yaml has download.source: "
                                          r"\"/work/shared/x\""):
        check_command(tmp_path, "dvc exp run -S download.source=../shared/x")
    with pytest.raises(RecordError, match="split.train_per_class=0.5"):
        check_command(tmp_path, "dvc exp run -S split.train_per_class=0.5")
    with pytest.raises(RecordError, match="has no split.seed"):
        check_command(tmp_path, "dvc exp run -S split.seed=1")
    with pytest.raises(RecordError, match="other.yaml not found"):
        check_command(tmp_path, "dvc exp run -S other.yaml:a=1")


def test_only_the_declared_metrics_are_copied(tmp_path):
    """metrics/ files an older pipeline wrote (split.json, evaluate.json, download.json) stay behind."""
    for name in ("metrics/finetune.json", "metrics/test/finetune.json", "metrics/runs/split.json",
                 "metrics/runs/evaluate.json", "metrics/split.json", "metrics/evaluate.json", "metrics/download.json",
                 "metrics/extract_features.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert copied(tmp_path) == ["params.yaml", "data/split/classes.json", "plots", "metrics/finetune.json",
                                "metrics/test/finetune.json", "metrics/runs/split.json", "metrics/runs/evaluate.json"]
