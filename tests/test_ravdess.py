"""RAVDESS name parsing, directory index and speaker-independent folds."""

import json

import pytest

from fer_hf.tools.ravdess import (
    DEFAULT_FOLDS,
    FoldSpecError,
    RavdessNameError,
    build_index,
    fold_split,
    load_folds,
    parse_ravdess_name,
    validate_folds,
)


def _touch_mp4(path, size=64):
    """A file that passes the cheap container check (an 'ftyp' box at byte 4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x00" * (size - 12))
    return path


def test_parse_valid_name():
    clip = parse_ravdess_name("data/Actor_01/01-01-03-02-01-01-01.mp4")
    assert (clip.modality, clip.vocal_channel, clip.emotion, clip.intensity) == (1, 1, 3, 2)
    assert (clip.statement, clip.repetition, clip.actor) == (1, 1, 1)
    assert clip.label == 2 and clip.label_name == "happy"
    assert clip.stem == "01-01-03-02-01-01-01"
    assert not clip.is_female and parse_ravdess_name("01-01-08-01-02-02-24.mp4").is_female
    assert parse_ravdess_name("03-02-06-01-02-01-12.wav").label_name == "fearful"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("01-01-03-02-01-01.mp4", "seven two-digit"),
        ("01-01-03-02-01-01-01-01.mp4", "seven two-digit"),
        ("1-01-03-02-01-01-01.mp4", "seven two-digit"),
        ("01_01_03_02_01_01_01.mp4", "seven two-digit"),
        ("aa-01-03-02-01-01-01.mp4", "seven two-digit"),
        ("04-01-03-02-01-01-01.mp4", "modality"),
        ("01-03-03-02-01-01-01.mp4", "vocal channel"),
        ("01-01-00-02-01-01-01.mp4", "emotion"),
        ("01-01-09-02-01-01-01.mp4", "emotion"),
        ("01-01-03-03-01-01-01.mp4", "intensity"),
        ("01-01-03-02-03-01-01.mp4", "statement"),
        ("01-01-03-02-01-00-01.mp4", "repetition"),
        ("01-01-03-02-01-01-25.mp4", "actor"),
        ("01-01-03-02-01-01-00.mp4", "actor"),
        ("01-01-01-02-01-01-01.mp4", "neutral"),
        ("01-02-07-01-01-01-01.mp4", "song"),
        ("01-01-03-02-01-01-01.wav", "extension"),
        ("03-01-03-02-01-01-01.mp4", "extension"),
        ("Actor_02/01-01-03-02-01-01-01.mp4", "folder"),
    ],
)
def test_parse_malformed_names(name, fragment):
    with pytest.raises(RavdessNameError, match=fragment):
        parse_ravdess_name(name)


def test_index_skips_bad_files_and_filters(tmp_path):
    root = tmp_path / "ravdess"
    good = [
        "Actor_01/01-01-03-02-01-01-01.mp4",
        "Actor_01/01-01-01-01-01-01-01.mp4",
        "Actor_02/01-01-05-01-02-02-02.mp4",
        "Actor_07/01-01-08-02-02-01-07.mp4",
    ]
    for rel in good:
        _touch_mp4(root / rel)
    _touch_mp4(root / "Actor_01/01-02-03-01-01-01-01.mp4")  # song: filtered out by default
    _touch_mp4(root / "Actor_01/02-01-03-01-01-01-01.mp4")  # video-only: filtered out by default
    _touch_mp4(root / "Actor_01/01-01-09-01-01-01-01.mp4")  # emotion 09: malformed
    _touch_mp4(root / "Actor_01/notes-01.mp4")  # malformed
    _touch_mp4(root / "Actor_03/01-01-03-02-01-01-01.mp4")  # actor folder mismatch: malformed
    (root / "Actor_02/01-01-02-01-01-01-02.mp4").write_bytes(b"")  # empty: unreadable
    (root / "Actor_02/01-01-02-01-01-02-02.mp4").write_bytes(b"this is not a video at all")  # unreadable
    (root / "Actor_02/README.txt").write_text("ignored")
    flat = _touch_mp4(root / "01-01-04-01-01-01-05.mp4")  # flat layout works too

    index = build_index(root)
    stems = sorted(c.stem for c in index.clips)
    assert stems == sorted([parse_ravdess_name(p).stem for p in good] + [parse_ravdess_name(flat).stem])
    assert len(index.malformed) == 3
    assert len(index.unreadable) == 2 and any("empty" in r for _, r in index.unreadable)
    assert index.filtered_out == 2
    assert index.actors == [1, 2, 5, 7]
    assert index.label_counts()["happy"] == 1
    assert "3 malformed" in index.summary()

    with_song = build_index(root, vocal_channels=(1, 2), actors=[1])
    assert sorted(c.vocal_channel for c in with_song.clips) == [1, 1, 2]
    assert all(c.actor == 1 for c in with_song.clips)
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "missing")


def test_default_folds_are_disjoint_and_cover_all_actors():
    assert len(DEFAULT_FOLDS) == 6
    assert sorted(a for f in DEFAULT_FOLDS for a in f) == list(range(1, 25))
    for fold in DEFAULT_FOLDS:
        assert sum(a % 2 for a in fold) == 2  # two male, two female per fold


@pytest.mark.parametrize("fold", range(6))
def test_fold_split_never_shares_an_actor(fold):
    split = fold_split(fold)
    train, val, test = set(split.train), set(split.val), set(split.test)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1, 25))
    assert (len(train), len(val), len(test)) == (16, 4, 4)
    assert split.test == DEFAULT_FOLDS[fold] and split.val == DEFAULT_FOLDS[(fold + 1) % 6]


def test_every_actor_is_tested_once_and_no_validation_option():
    tested = [a for k in range(6) for a in fold_split(k).test]
    assert sorted(tested) == list(range(1, 25))
    split = fold_split(2, validation="none")
    assert split.val == () and len(split.train) == 20 and not set(split.train) & set(split.test)


def test_folds_from_files(tmp_path):
    js = tmp_path / "folds.json"
    js.write_text(json.dumps({"folds": [[1, 2], [3, 4], [5, 6]]}))
    assert load_folds(js) == ((1, 2), (3, 4), (5, 6))
    js.write_text(json.dumps([[2, 1], [3], [4]]))
    assert load_folds(js) == ((1, 2), (3,), (4,))
    txt = tmp_path / "folds.txt"
    txt.write_text("# test folds\n1 2, 3\n4 5 6\n\n7 8 9  # last\n")
    assert load_folds(txt) == ((1, 2, 3), (4, 5, 6), (7, 8, 9))
    split = fold_split(2, load_folds(txt))
    assert split.test == (7, 8, 9) and split.val == (1, 2, 3) and split.train == (4, 5, 6)


@pytest.mark.parametrize(
    "folds, fragment",
    [
        ([[1, 2], [2, 3]], "disjoint"),
        ([[1, 2], []], "non-empty"),
        ([[1, 2], [25]], "1-24"),
        ([[1, 2], ["3"]], "1-24"),
        ([[1, 2, 3, 4]], "at least 2"),
    ],
)
def test_invalid_folds(folds, fragment):
    with pytest.raises(FoldSpecError, match=fragment):
        validate_folds(folds)


def test_invalid_fold_files_and_indices(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 2], [3,")
    with pytest.raises(FoldSpecError, match="JSON"):
        load_folds(bad)
    with pytest.raises(FoldSpecError, match="cannot read"):
        load_folds(tmp_path / "missing.json")
    with pytest.raises(FoldSpecError, match="fold must be"):
        fold_split(6)
    with pytest.raises(FoldSpecError, match="at least 3 folds"):
        fold_split(0, [[1], [2]])
    with pytest.raises(FoldSpecError, match="validation"):
        fold_split(0, validation="random")
