"""The split rule: Chollet's id order, no content in two splits, seeded shuffle; the
extended test set is what is left, capped."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.lib.params import UserError
from stages import split

CATS_DOGS = ("cat", "dog")
CFG = {"train_per_class": 3, "val_per_class": 2, "test_per_class": 1, "order": "id", "seed": 1, "image_size": 48,
       "extended_per_class": 100, "classes": None}


def deduplicate(manifest):
    return split.deduplicate(manifest, CATS_DOGS)


def assign(manifest, cfg, rejected):
    """The index: train, validation and test rows."""
    return split.plan(manifest, CATS_DOGS, cfg, rejected)[0]


def extended(manifest, cfg):
    return split.plan(manifest, CATS_DOGS, cfg, 0)[1]


def manifest(n=8, same=()):
    """n cats and n dogs with distinct hashes, except pairs in `same` share content."""
    rows = [{"file": f"{c}.{i}.jpg", "label": c, "id": i, "sha256": f"{c}{i}", "width": 9, "height": 9}
            for c in ("cat", "dog") for i in range(n)]
    frame = pd.DataFrame(rows)
    for (c1, i1), (c2, i2) in same:
        frame.loc[(frame.label == c2) & (frame.id == i2), "sha256"] = f"{c1}{i1}"
    return frame


def test_id_order_split():
    index = assign(manifest(), CFG, rejected=0)
    cats = index[index.label == "cat"]
    assert cats[cats.split == "train"].id.tolist() == [0, 1, 2]
    assert cats[cats.split == "validation"].id.tolist() == [3, 4]
    assert cats[cats.split == "test"].id.tolist() == [5]


def test_duplicate_within_a_class_keeps_the_lowest_id_and_shifts_the_split():
    kept, dropped = deduplicate(manifest(same=[(("dog", 1), ("dog", 4))]))
    assert dropped[["label", "id"]].values.tolist() == [["dog", 4]]
    assert "lower id" in dropped.reason.iloc[0]
    index = assign(kept, CFG, rejected=0)
    dogs = index[index.label == "dog"]
    assert dogs[dogs.split == "validation"].id.tolist() == [3, 5]  # 4 skipped, 5 moves up
    assert index.sha256.is_unique


def test_same_bytes_under_both_labels_is_dropped_entirely():
    kept, dropped = deduplicate(manifest(same=[(("cat", 2), ("dog", 6))]))
    assert sorted(dropped.file) == ["cat.2.jpg", "dog.6.jpg"]
    assert set(dropped.reason) == {"same bytes filed as both cat and dog"}
    assert "cat.2.jpg" not in set(kept.file)


def test_shuffle_is_seeded_and_still_disjoint():
    cfg = {**CFG, "order": "shuffle"}
    a, b = assign(manifest(), cfg, 0), assign(manifest(), cfg, 0)
    pd.testing.assert_frame_equal(a, b)
    assert a[a.label == "cat"].id.tolist() != list(range(6))
    assert a.file.is_unique
    c = assign(manifest(), {**cfg, "seed": 2}, 0)
    assert not a.file.equals(c.file)


def test_too_few_images_names_the_class_and_the_rejected_list():
    short_of_dogs = manifest(6).query("not (label == 'dog' and id == 0)")
    with pytest.raises(UserError, match=r"split needs 6 dog images \(3 train \+ 2 validation \+ 1 test\), 5 valid "
                       r"found \(per class: cat 6, dog 5\); 3 files rejected, see data/raw/rejected.csv; fewer per "
                       r"class, or fractions of each class \(e.g. split.train_per_class: 0.5\), fit any size$"):
        assign(short_of_dogs, CFG, rejected=3)


def test_extended_is_every_image_left_over_after_the_duplicate_rule():
    kept, _ = deduplicate(manifest(n=10, same=[(("dog", 1), ("dog", 7))]))
    extra = extended(kept, CFG)
    index = assign(kept, CFG, rejected=0)
    assert extra[extra.label == "cat"].id.tolist() == [6, 7, 8, 9]
    assert extra[extra.label == "dog"].id.tolist() == [6, 8, 9]  # 7 is dog 1's duplicate: never used
    assert not set(extra.file) & set(index.file)
    assert set(extra.file) | set(index.file) == set(kept.file)


def test_extended_is_capped_per_class_and_off_at_zero():
    kept, _ = deduplicate(manifest(n=10))
    capped = extended(kept, {**CFG, "extended_per_class": 2})
    assert capped.groupby("label").id.apply(list).to_dict() == {"cat": [6, 7], "dog": [6, 7]}
    assert extended(kept, {**CFG, "extended_per_class": 0}).empty
    assert extended(deduplicate(manifest(n=6))[0], CFG).empty  # nothing left over


def test_extended_follows_the_shuffle_and_stays_disjoint():
    cfg = {**CFG, "order": "shuffle", "extended_per_class": 3}
    kept, _ = deduplicate(manifest(n=12))
    index, extra = assign(kept, cfg, 0), extended(kept, cfg)
    assert len(extra) == 6 and not set(extra.file) & set(index.file)
    pd.testing.assert_frame_equal(extra, extended(kept, cfg))
    assert extra[extra.label == "cat"].id.tolist() != [6, 7, 8]


def test_fractions_take_a_share_of_each_class_rounded_down():
    frame = manifest(n=10).query("not (label == 'dog' and id >= 5)")  # 10 cats, 5 dogs
    cfg = {**CFG, "train_per_class": 0.6, "val_per_class": 0.2, "test_per_class": 0.2}
    counts = assign(frame, cfg, 0).groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", "cat"): 6, ("train", "dog"): 3, ("validation", "cat"): 2,
                      ("validation", "dog"): 1, ("test", "cat"): 2, ("test", "dog"): 1}
    assert extended(frame, cfg).empty


def test_a_fraction_that_leaves_a_split_empty_is_one_line():
    cfg = {**CFG, "val_per_class": 0.05}
    with pytest.raises(UserError, match=r"^split.val_per_class 0.05 of the 8 cat images is 0 images; every split "
                                        r"needs at least one per class: use a larger fraction$"):
        assign(manifest(), cfg, 0)


def test_the_same_bytes_under_two_classes_names_them():
    _, dropped = split.deduplicate(manifest(same=[(("cat", 2), ("dog", 6))]).replace({"cat": "ants", "dog": "bees"}),
                                   ("ants", "bees"))
    assert set(dropped.reason) == {"same bytes filed as both ants and bees"}
