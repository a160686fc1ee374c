"""Dataset layouts on disk -> one `DatasetIndex` (a list of `VideoEntry`), one reader per layout.

    from csvr.data.layouts import read_dataset
    index = read_dataset("ucf101:/data/UCF101", split=1)   # KIND:PATH; "synthetic" may omit PATH
    index.entries[0]   # VideoEntry(path=..., key="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", label=0, ...)

Layouts (`LAYOUTS` below is the whole list):
  ucf101       PATH/UCF-101/<Class>/v_<Class>_gXX_cYY.avi + PATH/ucfTrainTestlist/{classInd,trainlist0N,
               testlist0N}.txt; optional PATH/classGroups.json {"<Class>": "motion"|"context"|"both"}
  hmdb51       PATH/[hmdb51_org/]<class>/<name>.avi + PATH/testTrainMulti_7030_splits/<class>_test_splitN.txt
               (lines "<name>.avi <id>", 1 = train, 2 = test, 0 = unused)
  kinetics400  PATH/[annotations/]{train,val|validate,test}.csv (label,youtube_id,time_start,time_end,split)
               + PATH/<split dir>/[<label>/]<youtube_id>_<start:06d>_<end:06d>.mp4; val -> "test",
               test -> "unused"; absent videos are listed in `missing`, not fatal
  ssv2         PATH/something-something-v2-{labels,train,validation}.json + PATH/[20bn-something-something-v2/]
               <id>.webm; validation -> "test"; absent videos are listed in `missing`
  folder       PATH/<class>/*.{mp4,avi,webm,mkv}; seeded stratified 70/30 train/test split
  synthetic    the generated UCF101-layout tree (csvr.data.synthetic), read as ucf101

`key` is the video path relative to the video root without extension; it names the prepared files.
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

Split = Literal["train", "test", "unused"]
VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv")
SPLITS = (1, 2, 3)


class LayoutError(ValueError):
    """The files on disk do not match the layout; the message names the file and shows the layout."""


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    key: str  # path relative to the video root, no extension
    label: int
    class_name: str
    split: Split


@dataclass(frozen=True)
class DatasetIndex:
    kind: str
    root: Path
    entries: list[VideoEntry]
    classes: list[str]  # label -> class name
    groups: dict[str, str] | None  # class name -> "motion" | "context" | "both"
    missing: list[str]  # annotated videos not found on disk

    def split_entries(self, split: Split) -> list[VideoEntry]:
        return [e for e in self.entries if e.split == split]


def _fail(kind: str, problem: str) -> LayoutError:
    return LayoutError(f"{problem}\nexpected {kind} layout:\n{EXPECTED[kind]}")


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _inside(root: Path, rel: str, where: str, kind: str) -> Path:
    """root/rel, refused unless it stays inside `root` (no absolute path, no `..` out of it); `where` is
    "file:line" for the message. The check is lexical: symlinks the dataset's owner placed in the tree
    are followed as usual, but a split line cannot point the reader (or prepare's writer) elsewhere."""
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep):
        raise LayoutError(f"{where}: {kind} path {rel!r} leaves the dataset folder {root}; "
                          "list paths relative to it, without '..'")
    return root / norm


def _read_lines(path: Path, kind: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines of a required text file."""
    if not path.is_file():
        raise _fail(kind, f"missing file {path}")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def _require_dir(path: Path, kind: str, what: str) -> Path:
    if not path.is_dir():
        raise _fail(kind, f"missing folder {path} ({what})")
    return path


def _check_split(split: int, kind: str) -> None:
    if split not in SPLITS:
        raise LayoutError(f"{kind} has official splits {list(SPLITS)}, got split={split}")


def _read_groups(path: Path, classes: list[str]) -> dict[str, str] | None:
    if not path.is_file():
        return None
    groups = json.loads(path.read_text())
    bad = {c: g for c, g in groups.items() if c not in classes or g not in ("motion", "context", "both")}
    if bad:
        raise LayoutError(f"{path}: unknown classes or groups {bad}; groups are motion, context, both")
    return groups


# ---------------------------------------------------------------------------------------------
# ucf101


def _ucf_dirs(root: Path) -> tuple[Path, Path]:
    """(video root, split-list folder): PATH holds UCF-101/ and ucfTrainTestlist/, or PATH is UCF-101/."""
    if (root / "UCF-101").is_dir():
        return root / "UCF-101", _require_dir(root / "ucfTrainTestlist", "ucf101", "the split lists")
    if root.name == "UCF-101" and (root.parent / "ucfTrainTestlist").is_dir():
        return root, root.parent / "ucfTrainTestlist"
    raise _fail("ucf101", f"missing folder {root / 'UCF-101'} (the videos)")


def _ucf_classes(lists: Path) -> list[str]:
    classes = []
    for n, line in _read_lines(lists / "classInd.txt", "ucf101"):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise _fail("ucf101", f"{lists / 'classInd.txt'}:{n}: bad line {line!r} "
                                  f"(expected '{len(classes) + 1} ClassName')")
        classes.append(parts[1])
    if not classes:
        raise _fail("ucf101", f"{lists / 'classInd.txt'}: no classes (expected lines '1 ClassName')")
    return classes


def _find_video(videos: Path, rel: str, where: str) -> Path | None:
    """The listed file, or a case-insensitive match (UCF101 lists 'HandstandPushups/v_HandStandPushups')."""
    path = _inside(videos, rel, where, "ucf101")
    rel = path.relative_to(videos).as_posix()
    if path.is_file():
        return path
    folder = next((d for d in videos.iterdir() if d.name.lower() == Path(rel).parent.name.lower()), None)
    if folder is None:
        return None
    return next((f for f in folder.iterdir() if f.name.lower() == Path(rel).name.lower()), None)


def _ucf_list(path: Path, videos: Path, classes: list[str], labelled: bool) -> list[tuple[Path, int]]:
    out, lower = [], [c.lower() for c in classes]
    for n, line in _read_lines(path, "ucf101"):
        parts = line.split()
        rel, cls = parts[0], parts[0].split("/")[0]
        ok = len(parts) == (2 if labelled else 1) and "/" in rel and (not labelled or parts[1].isdigit())
        if not ok:
            form = "'Class/v_Class_gXX_cYY.avi N'" if labelled else "'Class/v_Class_gXX_cYY.avi'"
            raise _fail("ucf101", f"{path}:{n}: bad line {line!r} (expected {form})")
        if cls.lower() not in lower or (labelled and int(parts[1]) != lower.index(cls.lower()) + 1):
            raise _fail("ucf101", f"{path}:{n}: unknown class or label in {line!r} (see classInd.txt)")
        video = _find_video(videos, rel, f"{path}:{n}")
        if video is None:
            raise _fail("ucf101", f"{path}:{n}: missing file {videos / rel}")
        out.append((video, lower.index(cls.lower())))
    return out


def read_ucf101(path: Path | None, split: int = 1) -> DatasetIndex:
    """UCF101 with its official split `split` (1-3)."""
    _check_split(split, "ucf101")
    root = _require_dir(Path(path), "ucf101", "the dataset root")
    videos, lists = _ucf_dirs(root)
    classes = _ucf_classes(lists)
    train = _ucf_list(lists / f"trainlist0{split}.txt", videos, classes, labelled=True)
    test = _ucf_list(lists / f"testlist0{split}.txt", videos, classes, labelled=False)
    entries = [VideoEntry(p, _key(p, videos), label, classes[label], "train") for p, label in train]
    entries += [VideoEntry(p, _key(p, videos), label, classes[label], "test") for p, label in test]
    listed = {e.path for e in entries}
    for label, name in enumerate(classes):
        folder = videos / name
        for p in sorted(folder.glob("*")) if folder.is_dir() else []:
            if p.suffix.lower() in VIDEO_EXTS and p not in listed:
                entries.append(VideoEntry(p, _key(p, videos), label, name, "unused"))
    return DatasetIndex("ucf101", root, entries, classes, _read_groups(root / "classGroups.json", classes), [])


# ---------------------------------------------------------------------------------------------
# hmdb51

HMDB_IDS: dict[str, Split] = {"1": "train", "2": "test", "0": "unused"}


def read_hmdb51(path: Path | None, split: int = 1) -> DatasetIndex:
    """HMDB51 with its official split `split` (1-3)."""
    _check_split(split, "hmdb51")
    root = _require_dir(Path(path), "hmdb51", "the dataset root")
    lists = _require_dir(root / "testTrainMulti_7030_splits", "hmdb51", "the split files")
    videos = root / "hmdb51_org" if (root / "hmdb51_org").is_dir() else root
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    split_files = {m.group(1): lists / f.name for f in lists.iterdir() if (m := pattern.match(f.name))}
    if not split_files:
        raise _fail("hmdb51", f"no <class>_test_split{split}.txt files in {lists}")
    classes = sorted(split_files)
    entries = []
    for label, name in enumerate(classes):
        _require_dir(videos / name, "hmdb51", f"videos of class {name!r}")
        for n, line in _read_lines(split_files[name], "hmdb51"):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in HMDB_IDS:
                raise _fail("hmdb51", f"{split_files[name]}:{n}: bad line {line!r} "
                                      "(expected '<name>.avi <0|1|2>')")
            video = _inside(videos, f"{name}/{parts[0]}", f"{split_files[name]}:{n}", "hmdb51")
            if not video.is_file():
                raise _fail("hmdb51", f"{split_files[name]}:{n}: missing file {video}")
            entries.append(VideoEntry(video, _key(video, videos), label, name, HMDB_IDS[parts[1]]))
    return DatasetIndex("hmdb51", root, entries, classes, None, [])


# ---------------------------------------------------------------------------------------------
# kinetics400

KINETICS_CSVS: dict[str, tuple[str, Split]] = {  # annotation file stem -> (video folder candidates, split)
    "train": ("train", "train"), "val": ("val validate valid validation", "test"),
    "validate": ("val validate valid validation", "test"), "test": ("test", "unused"),
}


def _kinetics_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"youtube_id", "time_start", "time_end"}
    if rows and not need <= set(rows[0]):
        raise _fail("kinetics400", f"{path}: header {list(rows[0])} lacks {sorted(need - set(rows[0]))}")
    for n, row in enumerate(rows, 2):
        if not (row["time_start"] or "").strip().isdigit() or not (row["time_end"] or "").strip().isdigit():
            raise _fail("kinetics400", f"{path}:{n}: bad time_start/time_end in {row}")
    return rows


def _kinetics_videos(root: Path, folders: str) -> dict[str, Path]:
    """stem -> path of every video under the split's folder(s) (flat or one folder per label)."""
    found = {}
    for name in folders.split():
        for p in (root / name).rglob("*") if (root / name).is_dir() else []:
            if p.suffix.lower() in VIDEO_EXTS:
                found[p.stem] = p
    return found


def read_kinetics400(path: Path | None, split: int = 1) -> DatasetIndex:
    """Kinetics-400 from its annotation CSVs; `split` is ignored (one official split)."""
    root = _require_dir(Path(path), "kinetics400", "the dataset root")
    ann = root / "annotations" if (root / "annotations").is_dir() else root
    csvs = {stem: ann / f"{stem}.csv" for stem in KINETICS_CSVS if (ann / f"{stem}.csv").is_file()}
    if "train" not in csvs:
        raise _fail("kinetics400", f"missing file {ann / 'train.csv'}")
    rows = {stem: _kinetics_rows(p) for stem, p in csvs.items()}
    classes = sorted({r["label"] for r in rows["train"]})
    entries, missing = [], []
    for stem, table in rows.items():
        folders, split_name = KINETICS_CSVS[stem]
        videos = _kinetics_videos(root, folders)
        for n, r in enumerate(table, 2):
            name = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
            label = r.get("label")
            if label is not None and label not in classes and split_name != "unused":
                raise _fail("kinetics400", f"{csvs[stem]}:{n}: unknown class {label!r} (not in train.csv)")
            if name not in videos:
                missing.append(f"{stem}/{name}")
                continue
            index = classes.index(label) if label in classes else -1
            entries.append(VideoEntry(videos[name], _key(videos[name], root), index, label or "", split_name))
    if not entries:
        raise _fail("kinetics400", f"none of the {len(missing)} annotated videos were found under {root}")
    return DatasetIndex("kinetics400", root, entries, classes, None, missing)


# ---------------------------------------------------------------------------------------------
# something-something v2

SSV2_FILES: dict[str, Split] = {"train": "train", "validation": "test"}


def _ssv2_json(path: Path) -> object:
    if not path.is_file():
        raise _fail("ssv2", f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _fail("ssv2", f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def read_ssv2(path: Path | None, split: int = 1) -> DatasetIndex:
    """Something-Something v2 (train + validation); `split` is ignored."""
    root = _require_dir(Path(path), "ssv2", "the dataset root")
    labels = _ssv2_json(root / "something-something-v2-labels.json")
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    videos = root / "20bn-something-something-v2"
    videos = videos if videos.is_dir() else root
    entries, missing = [], []
    for stem, split_name in SSV2_FILES.items():
        file = root / f"something-something-v2-{stem}.json"
        for n, item in enumerate(_ssv2_json(file)):
            if not isinstance(item, dict) or "id" not in item or "template" not in item:
                raise _fail("ssv2", f"{file}: entry {n} {item!r} lacks 'id' or 'template'")
            name = item["template"].replace("[", "").replace("]", "")
            if name not in labels:
                raise _fail("ssv2", f"{file}: entry {n}: unknown class {name!r} (not in the labels file)")
            video = _inside(videos, f"{item['id']}.webm", f"{file}: entry {n}", "ssv2")
            if not video.is_file():
                missing.append(str(item["id"]))
                continue
            entries.append(VideoEntry(video, _key(video, videos), int(labels[name]), name, split_name))
    return DatasetIndex("ssv2", root, entries, classes, None, missing)


# ---------------------------------------------------------------------------------------------
# folder, synthetic

FOLDER_SEED = 0
FOLDER_TEST_FRACTION = 0.3


def _stratified_split(n: int, rng: random.Random) -> list[Split]:
    """70/30 per class; at least one test video when the class has >= 2 (and at least one train video)."""
    n_test = min(n - 1, max(1, round(n * FOLDER_TEST_FRACTION))) if n >= 2 else 0
    splits: list[Split] = ["test"] * n_test + ["train"] * (n - n_test)
    rng.shuffle(splits)
    return splits


def read_folder(path: Path | None, split: int = 1) -> DatasetIndex:
    """One folder per class; the train/test split is seeded (FOLDER_SEED) and stratified."""
    root = _require_dir(Path(path), "folder", "the dataset root")
    rng = random.Random(FOLDER_SEED + split - 1)
    classes, entries = [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS)
        if not videos:
            continue
        label = len(classes)
        classes.append(folder.name)
        for video, s in zip(videos, _stratified_split(len(videos), rng)):
            entries.append(VideoEntry(video, _key(video, root), label, folder.name, s))
    if not classes:
        raise _fail("folder", f"no class folders with videos ({', '.join(VIDEO_EXTS)}) in {root}")
    return DatasetIndex("folder", root, entries, classes, _read_groups(root / "classGroups.json", classes), [])


def read_synthetic(path: Path | None, split: int = 1) -> DatasetIndex:
    """The embedded synthetic dataset, generated on first use, read as UCF101."""
    from csvr.data.synthetic import ensure_synthetic

    index = read_ucf101(ensure_synthetic(Path(path) if path else None), split)
    return DatasetIndex("synthetic", index.root, index.entries, index.classes, index.groups, index.missing)


LAYOUTS: dict[str, Callable[[Path | None, int], DatasetIndex]] = {
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
    "kinetics400": read_kinetics400,
    "ssv2": read_ssv2,
    "folder": read_folder,
    "synthetic": read_synthetic,
}

EXPECTED = {
    "ucf101": "  PATH/UCF-101/<Class>/v_<Class>_gXX_cYY.avi\n  PATH/ucfTrainTestlist/classInd.txt "
              "('1 ApplyEyeMakeup'), trainlist0N.txt ('ApplyEyeMakeup/v_...avi 1'), testlist0N.txt "
              "('ApplyEyeMakeup/v_...avi')\n  PATH/classGroups.json (optional)",
    "hmdb51": "  PATH/[hmdb51_org/]<class>/<name>.avi\n  PATH/testTrainMulti_7030_splits/<class>_test_splitN.txt "
              "('<name>.avi 1', 1=train 2=test 0=unused)",
    "kinetics400": "  PATH/[annotations/]train.csv, val.csv|validate.csv, test.csv "
                   "(label,youtube_id,time_start,time_end,split)\n"
                   "  PATH/{train,val,test}/[<label>/]<youtube_id>_<start:06d>_<end:06d>.mp4",
    "ssv2": "  PATH/something-something-v2-{labels,train,validation}.json\n"
            "  PATH/[20bn-something-something-v2/]<id>.webm",
    "folder": "  PATH/<class>/*.{mp4,avi,webm,mkv}",
    "synthetic": "  generated by csvr.data.synthetic (UCF101 layout)",
}


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """"KIND:PATH" -> (kind, path); only "synthetic" may omit PATH."""
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in LAYOUTS:
        raise LayoutError(f"unknown dataset kind {kind!r} in {spec!r}; use KIND:PATH "
                          f"(e.g. ucf101:/data/UCF101) with KIND one of: {', '.join(LAYOUTS)}")
    if not path and kind != "synthetic":
        raise LayoutError(f"{spec!r} has no PATH; use {kind}:PATH")
    return kind, Path(path).expanduser() if path else None


def read_dataset(spec: str, split: int = 1) -> DatasetIndex:
    """Read a dataset given as KIND:PATH (see the module docstring for the layouts)."""
    kind, path = parse_spec(spec)
    return LAYOUTS[kind](path, split)
