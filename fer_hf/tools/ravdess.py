"""RAVDESS file index and speaker-independent folds (SPEC §8).

A RAVDESS file name is seven two-digit fields, e.g. `Actor_01/01-01-03-02-01-01-01.mp4`:

| field | values |
|---|---|
| modality | 01 audio-video, 02 video-only, 03 audio-only |
| vocal channel | 01 speech, 02 song |
| emotion | 01 neutral … 08 surprised (class index = code − 1) |
| intensity | 01 normal, 02 strong (neutral has no strong intensity) |
| statement | 01 "Kids are talking by the door", 02 "Dogs are sitting by the door" |
| repetition | 01, 02 |
| actor | 01–24 (odd male, even female) |

`build_index` walks a directory (the official `Actor_XX/` layout or a flat folder), keeps the
files that pass every check and the filters, and reports — never raises on — malformed names and
unreadable files. Folds split by actor so train, validation and test never share a speaker.

Modality layouts (`MODALITY_LAYOUTS`, the `--modality` option of the train and evaluate commands):

| layout | files used | the model gets |
|---|---|---|
| `audio-video` | 01 mp4 | the voice and the face of one file |
| `paired` | 02 mp4 + 03 wav of the same recording | the face from the video-only mp4, the voice from the wav |
| `audio-only` | 03 wav | the voice only (the video branch sees its "missing" token) |
| `video-only` | 02 mp4 | the face only |

A pair is matched by the six fields after the modality (vocal channel ... actor); a 02 or 03 file whose
partner is missing is listed in `RavdessIndex.unpaired` and left out. A folder holding the marker file
`SYNTHETIC_MARKER` (written by `fer_hf.tools.synthetic`) is the synthetic set: `RavdessIndex.synthetic`
is then true and every result names it as such.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

NUM_ACTORS = 24
MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
# Song has no disgust (07) or surprised (08) recordings.
SONG_EMOTIONS = frozenset(range(1, 7))
MEDIA_EXTENSIONS = {1: (".mp4",), 2: (".mp4",), 3: (".wav",)}
MODALITY_LAYOUTS = {
    "audio-video": "01 audio-video mp4 files (voice and face from one file)",
    "paired": "02 video-only mp4 + 03 audio-only wav of the same recording (face from the mp4, voice from the wav)",
    "audio-only": "03 audio-only wav files (voice only)",
    "video-only": "02 video-only mp4 files (face only)",
}
LAYOUT_MODALITIES = {"audio-video": (1,), "paired": (2, 3), "audio-only": (3,), "video-only": (2,)}
# Marker file at the root of a generated set: its presence makes the index (and every result) say "synthetic".
SYNTHETIC_MARKER = "SYNTHETIC_DATASET.json"
# The common protocol: 6 folds of 4 consecutive actors (2 male, 2 female each).
DEFAULT_FOLDS: tuple[tuple[int, ...], ...] = tuple(tuple(range(a, a + 4)) for a in range(1, NUM_ACTORS + 1, 4))
VALIDATION_STRATEGIES = ("next_fold", "none")

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")


class RavdessNameError(FERInputError):
    """A file name is not a valid RAVDESS name (wrong pattern or a field out of range)."""


class FoldSpecError(FERInputError):
    """A fold specification is invalid (overlapping folds, unknown actors, bad file, fold out of range)."""


@dataclasses.dataclass(frozen=True)
class RavdessClip:
    """One RAVDESS recording: the seven name fields, its path and its class index."""

    path: str
    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int
    audio_path: str | None = None  # `paired` layout: the 03 wav whose voice goes with this 02 mp4's face

    @property
    def label(self) -> int:
        """Class index, 0-7 (emotion code - 1)."""
        return self.emotion - 1

    @property
    def label_name(self) -> str:
        from fer_hf.configuration_fer import RAVDESS_LABELS  # here: the commands parse arguments without torch

        return RAVDESS_LABELS[self.label]

    @property
    def stem(self) -> str:
        """The canonical seven-field name, e.g. `01-01-03-02-01-01-01`; unique per recording."""
        fields = (self.modality, self.vocal_channel, self.emotion, self.intensity, self.statement,
                  self.repetition, self.actor)
        return "-".join(f"{v:02d}" for v in fields)

    @property
    def recording_id(self) -> str:
        """The six fields after the modality, e.g. `01-03-02-01-01-01`: shared by a recording's 01, 02 and 03 files."""
        return self.stem[3:]

    @property
    def cache_name(self) -> str:
        """Unique name of what the model gets from this clip: the stem, or `02+03-<recording>` for a pair."""
        return self.stem if self.audio_path is None else f"02+03-{self.recording_id}"

    @property
    def is_female(self) -> bool:
        return self.actor % 2 == 0


def parse_ravdess_name(path: str | os.PathLike) -> RavdessClip:
    """Parse and validate a RAVDESS file name (the directory part is only used for the `Actor_XX` check).

    Raises:
        RavdessNameError: the name does not have seven two-digit fields, a field is out of range,
            the combination does not exist in RAVDESS (strong neutral, song disgust/surprised),
            the extension does not fit the modality, or the `Actor_XX` folder disagrees with the actor field.
    """
    p = Path(path)
    match = _NAME_RE.match(p.stem)
    if match is None:
        raise RavdessNameError(f"{p.name!r} is not seven two-digit fields separated by '-' (e.g. 01-01-03-02-01-01-01)")
    modality, vocal, emotion, intensity, statement, repetition, actor = (int(g) for g in match.groups())
    checks = (
        ("modality", modality, MODALITIES),
        ("vocal channel", vocal, VOCAL_CHANNELS),
        ("emotion", emotion, range(1, 9)),
        ("intensity", intensity, (1, 2)),
        ("statement", statement, (1, 2)),
        ("repetition", repetition, (1, 2)),
        ("actor", actor, range(1, NUM_ACTORS + 1)),
    )
    for name, value, allowed in checks:
        if value not in allowed:
            raise RavdessNameError(f"{p.name!r}: {name} {value:02d} is out of range")
    if emotion == 1 and intensity == 2:
        raise RavdessNameError(f"{p.name!r}: neutral (01) has no strong intensity (02) in RAVDESS")
    if vocal == 2 and emotion not in SONG_EMOTIONS:
        raise RavdessNameError(f"{p.name!r}: song (02) has no emotion {emotion:02d} in RAVDESS")
    if p.suffix.lower() not in MEDIA_EXTENSIONS[modality]:
        raise RavdessNameError(
            f"{p.name!r}: extension {p.suffix!r} does not fit modality {modality:02d} ({MODALITIES[modality]})"
        )
    dir_match = _ACTOR_DIR_RE.match(p.parent.name)
    if dir_match is not None and int(dir_match.group(1)) != actor:
        raise RavdessNameError(f"{p.name!r} is in folder {p.parent.name!r} but its actor field is {actor:02d}")
    return RavdessClip(str(p), modality, vocal, emotion, intensity, statement, repetition, actor)


def _unreadable_reason(path: Path) -> str | None:
    """A cheap readability check (no decoding): the cache builder catches decode errors later."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if path.suffix.lower() == ".mp4" and head[4:8] != b"ftyp":
        return "not an MP4 container (no 'ftyp' box)"
    if path.suffix.lower() == ".wav" and (head[:4] != b"RIFF" or head[8:12] != b"WAVE"):
        return "not a RIFF/WAVE file"
    return None


@dataclasses.dataclass
class RavdessIndex:
    """Result of `build_index`: kept clips (sorted by path) and every file that was skipped, with the reason."""

    root: str
    clips: list[RavdessClip]
    malformed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    filtered_out: int = 0
    layout: str = "audio-video"
    unpaired: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    synthetic: bool = False

    @property
    def dataset_name(self) -> str:
        """"RAVDESS", or "synthetic (RAVDESS-named)" for a generated set."""
        return "synthetic (RAVDESS-named)" if self.synthetic else "RAVDESS"

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def actors(self) -> list[int]:
        return sorted({c.actor for c in self.clips})

    def for_actors(self, actors: Iterable[int]) -> list[RavdessClip]:
        keep = set(actors)
        return [c for c in self.clips if c.actor in keep]

    def label_counts(self) -> dict[str, int]:
        from fer_hf.configuration_fer import RAVDESS_LABELS

        counts = Counter(c.label_name for c in self.clips)
        return {name: counts.get(name, 0) for name in RAVDESS_LABELS}

    def summary(self) -> str:
        unpaired = f", {len(self.unpaired)} without their 02/03 partner" if self.layout == "paired" else ""
        return (
            f"{len(self.clips)} {self.layout} clips from {len(self.actors)} actors under {self.root}"
            f"{' (synthetic set)' if self.synthetic else ''}; skipped {len(self.malformed)} malformed names, "
            f"{len(self.unreadable)} unreadable files, {self.filtered_out} filtered out{unpaired}"
        )


def build_index(
    root: str | os.PathLike,
    modalities: Sequence[int] | None = None,
    vocal_channels: Sequence[int] = (1,),
    actors: Iterable[int] | None = None,
    extensions: Sequence[str] = (".mp4", ".wav"),
    layout: str = "audio-video",
) -> RavdessIndex:
    """Walk `root` recursively and index the RAVDESS files that pass the filters.

    Args:
        root: a folder holding `Actor_XX/` sub-folders or the files directly.
        modalities: modality codes to keep, each file on its own (overrides the layout's; no pairing).
        vocal_channels: 1 speech, 2 song (default speech only).
        actors: actor ids to keep (default all).
        extensions: file suffixes considered at all; other files (README, .DS_Store) are ignored silently.
        layout: one of `MODALITY_LAYOUTS` (default `audio-video`, the 01 files). With `paired`, every 02 mp4 is
            matched with the 03 wav of the same recording; the clip is the mp4 with `audio_path` set to the wav.

    Returns:
        A `RavdessIndex`. Files with a malformed name or that cannot be read are listed with the reason
        and logged, never raised; duplicates of the same seven-field name keep the first path; in the `paired`
        layout a file without its partner is listed in `unpaired`.

    Raises:
        FileNotFoundError: `root` is not a directory.
        FERInputError: an unknown layout.
    """
    if layout not in MODALITY_LAYOUTS:
        raise FERInputError(f"unknown modality layout {layout!r}; choose one of {sorted(MODALITY_LAYOUTS)}")
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"RAVDESS root {str(root_path)!r} is not a directory")
    keep_modalities = tuple(modalities) if modalities is not None else LAYOUT_MODALITIES[layout]
    keep_actors = None if actors is None else {int(a) for a in actors}
    index = RavdessIndex(root=str(root_path), clips=[], layout=layout,
                         synthetic=(root_path / SYNTHETIC_MARKER).is_file())
    seen: dict[str, str] = {}
    suffixes = {s.lower() for s in extensions}
    found: list[RavdessClip] = []
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if path.suffix.lower() not in suffixes or filename.startswith("."):
                continue
            try:
                clip = parse_ravdess_name(path)
            except RavdessNameError as err:
                index.malformed.append((str(path), str(err)))
                continue
            if (
                clip.modality not in keep_modalities
                or clip.vocal_channel not in vocal_channels
                or (keep_actors is not None and clip.actor not in keep_actors)
            ):
                index.filtered_out += 1
                continue
            reason = _unreadable_reason(path)
            if reason is not None:
                index.unreadable.append((str(path), reason))
                continue
            if clip.stem in seen:
                index.malformed.append((str(path), f"duplicate of {seen[clip.stem]}"))
                continue
            seen[clip.stem] = str(path)
            found.append(clip)
    index.clips = _pair(found, index.unpaired) if layout == "paired" and modalities is None else found
    for path, reason in index.malformed:
        logger.warning("skipping malformed RAVDESS name %s: %s", path, reason)
    for path, reason in index.unreadable:
        logger.warning("skipping unreadable file %s: %s", path, reason)
    for path, reason in index.unpaired:
        logger.warning("skipping %s: %s", path, reason)
    logger.info(index.summary())
    return index


def _pair(clips: list[RavdessClip], unpaired: list[tuple[str, str]]) -> list[RavdessClip]:
    """02 mp4 + 03 wav of the same recording -> one clip (the mp4, `audio_path` = the wav), sorted by path."""
    videos = {c.recording_id: c for c in clips if c.modality == 2}
    audios = {c.recording_id: c for c in clips if c.modality == 3}
    pairs = []
    for rec, video in videos.items():
        audio = audios.get(rec)
        if audio is None:
            unpaired.append((video.path, f"no audio-only partner 03-{rec}.wav (paired layout needs both files)"))
        else:
            pairs.append(dataclasses.replace(video, audio_path=audio.path))
    for rec, audio in audios.items():
        if rec not in videos:
            unpaired.append((audio.path, f"no video-only partner 02-{rec}.mp4 (paired layout needs both files)"))
    unpaired.sort()
    return sorted(pairs, key=lambda c: c.path)


def clip_list_record(clips: Iterable[RavdessClip], root: str | os.PathLike) -> list[tuple[str, str | None, int]]:
    """`[(path relative to root, partner relative to root or None, label)]`: what ranks compare (by hash)."""
    def rel(p):
        return None if p is None else os.path.relpath(p, root)

    return [(rel(c.path), rel(c.audio_path), c.label) for c in clips]


# ----------------------------------------------------------------------------------------------
# Speaker-independent folds


@dataclasses.dataclass(frozen=True)
class FoldSplit:
    """Actor ids of one fold's train / validation / test sets (pairwise disjoint); `fold` None: the release split."""

    fold: int | None
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"fold": self.fold, "train_actors": list(self.train), "val_actors": list(self.val),
                "test_actors": list(self.test)}


def validate_folds(folds: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Check folds are non-empty, pairwise disjoint lists of actor ids in 1-24 (they need not cover all 24).

    Raises:
        FoldSpecError: with the offending fold and actor.
    """
    if len(folds) < 2:
        raise FoldSpecError(f"need at least 2 folds, got {len(folds)}")
    owner: dict[int, int] = {}
    clean = []
    for k, fold in enumerate(folds):
        if isinstance(fold, (str, bytes)) or not isinstance(fold, Sequence) or len(fold) == 0:
            raise FoldSpecError(f"fold {k} must be a non-empty list of actor ids, got {fold!r}")
        actors = []
        for actor in fold:
            if isinstance(actor, bool) or not isinstance(actor, int) or not 1 <= actor <= NUM_ACTORS:
                raise FoldSpecError(f"fold {k}: actor {actor!r} is not an integer in 1-{NUM_ACTORS}")
            if actor in owner:
                raise FoldSpecError(f"actor {actor} is in fold {owner[actor]} and fold {k}: folds must be disjoint")
            owner[actor] = k
            actors.append(actor)
        clean.append(tuple(sorted(actors)))
    return tuple(clean)


def load_folds(path: str | os.PathLike) -> tuple[tuple[int, ...], ...]:
    """Read folds from a file.

    Accepted formats: JSON, either `[[1, 2, 3, 4], [5, 6, 7, 8], ...]` or `{"folds": [[...], ...]}`;
    or plain text with one fold per line, actor ids separated by spaces or commas (`#` starts a comment).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise FoldSpecError(f"cannot read folds file {str(p)!r}: {err}") from err
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise FoldSpecError(f"folds file {str(p)!r} is not valid JSON: {err}") from err
        if isinstance(data, dict):
            data = data.get("folds")
        if not isinstance(data, list):
            raise FoldSpecError(f"folds file {str(p)!r} must hold a list of folds or {{'folds': [...]}}")
        return validate_folds(data)
    folds = []
    for line_no, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            folds.append([int(tok) for tok in re.split(r"[,\s]+", line) if tok])
        except ValueError as err:
            raise FoldSpecError(f"{str(p)!r} line {line_no}: {err}") from err
    return validate_folds(folds)


def fold_split(
    fold: int,
    folds: Sequence[Sequence[int]] = DEFAULT_FOLDS,
    validation: str = "next_fold",
) -> FoldSplit:
    """Train/validation/test actors of fold `fold`.

    The test actors are fold `fold`. With `validation="next_fold"` (default) the validation actors are the
    next fold's (`(fold + 1) % K`): for the default 6 folds, 16 training, 4 validation and 4 test actors,
    each group half male, half female; every actor is a test actor once and a validation actor once.
    With `validation="none"` all other folds train and there is no validation set.
    """
    folds = validate_folds(folds)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < len(folds):
        raise FoldSpecError(f"fold must be an integer in 0-{len(folds) - 1}, got {fold!r}")
    if validation not in VALIDATION_STRATEGIES:
        raise FoldSpecError(f"validation must be one of {VALIDATION_STRATEGIES}, got {validation!r}")
    val_fold = (fold + 1) % len(folds) if validation == "next_fold" else None
    test = folds[fold]
    val = folds[val_fold] if val_fold is not None else ()
    train = tuple(sorted(a for k, f in enumerate(folds) for a in f if k not in (fold, val_fold)))
    if validation == "next_fold" and not train:
        raise FoldSpecError("with validation='next_fold' at least 3 folds are needed to leave training actors")
    return FoldSplit(fold=fold, train=train, val=tuple(val), test=tuple(test))


def release_split(folds: Sequence[Sequence[int]] = DEFAULT_FOLDS) -> FoldSplit:
    """The release model's split: every actor of the protocol trains, none validates or tests (`fold` None)."""
    folds = validate_folds(folds)
    return FoldSplit(fold=None, train=tuple(sorted(a for f in folds for a in f)), val=(), test=())


__all__ = [
    "DEFAULT_FOLDS",
    "release_split",
    "LAYOUT_MODALITIES",
    "MODALITY_LAYOUTS",
    "SYNTHETIC_MARKER",
    "clip_list_record",
    "FoldSpecError",
    "FoldSplit",
    "RavdessClip",
    "RavdessIndex",
    "RavdessNameError",
    "build_index",
    "fold_split",
    "load_folds",
    "parse_ravdess_name",
    "validate_folds",
]
