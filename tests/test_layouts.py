"""Each layout reader on a small tree in its official format; malformed trees raise LayoutError.

    python -m pytest tests/test_layouts.py -q
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from csvr.data.layouts import LAYOUTS, LayoutError, read_dataset
from tests.media import sample, touch

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups"]


def make_ucf101(root: Path, real_video: bool = False) -> Path:
    """UCF101 tree: 2 classes x 3 clips, split 1 lists 2 train + 1 test per class."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)))
    train, test = [], []
    for label, cls in enumerate(UCF_CLASSES, 1):
        stem = "HandStandPushups" if cls == "HandstandPushups" else cls  # the real dataset's case quirk
        for g in (1, 2, 3):
            name = f"{cls}/v_{stem}_g0{g}_c01.avi"
            video = root / "UCF-101" / name
            if real_video:
                video.parent.mkdir(parents=True, exist_ok=True)
                video.symlink_to(sample("carphone_distorted.mp4"))
            else:
                touch(video)
            (train.append(f"{name} {label}") if g < 3 else test.append(name))
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")  # the official files use CRLF
    return root


def test_ucf101_reads_official_split(tmp_path):
    root = make_ucf101(tmp_path / "UCF101", real_video=True)
    (root / "classGroups.json").write_text(json.dumps({"ApplyEyeMakeup": "context"}))
    index = read_dataset(f"ucf101:{root}")
    assert index.kind == "ucf101" and index.classes == UCF_CLASSES
    assert [e.split for e in index.entries].count("train") == 4
    assert [e.split for e in index.entries].count("test") == 2
    first = index.entries[0]
    assert first.key == "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01" and first.label == 0
    assert first.path.is_file() and index.groups == {"ApplyEyeMakeup": "context"}
    assert {e.label for e in index.entries if e.class_name == "HandstandPushups"} == {1}
    # PATH may also be the UCF-101 folder itself, next to ucfTrainTestlist/
    assert len(read_dataset(f"ucf101:{root / 'UCF-101'}").entries) == 6


@pytest.mark.parametrize("file, text, needle", [
    ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n", "trainlist01.txt:1"),
    ("trainlist01.txt", "Juggling/v_Juggling_g01_c01.avi 1\n", "unknown class"),
    ("testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi\n", "missing file"),
    ("classInd.txt", "1 ApplyEyeMakeup\n3 HandstandPushups\n", "classInd.txt:2"),
])
def test_ucf101_malformed_split_names_the_file(tmp_path, file, text, needle):
    root = make_ucf101(tmp_path / "UCF101")
    (root / "ucfTrainTestlist" / file).write_text(text)
    with pytest.raises(LayoutError, match=needle) as err:
        read_dataset(f"ucf101:{root}")
    assert file in str(err.value) and "expected ucf101 layout" in str(err.value)


def test_ucf101_missing_folder_and_file(tmp_path):
    with pytest.raises(LayoutError, match="UCF-101"):
        read_dataset(f"ucf101:{tmp_path}")
    root = make_ucf101(tmp_path / "UCF101")
    (root / "ucfTrainTestlist" / "testlist01.txt").unlink()
    with pytest.raises(LayoutError, match="missing file .*testlist01.txt"):
        read_dataset(f"ucf101:{root}")


def make_hmdb51(root: Path) -> Path:
    for cls in ("brush_hair", "ride_bike"):
        names = [f"clip_{cls}_{i}.avi" for i in range(3)]
        for name in names:
            touch(root / "hmdb51_org" / cls / name)
        ids = ["1", "2", "0"]
        split = root / "testTrainMulti_7030_splits" / f"{cls}_test_split1.txt"
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("".join(f"{n} {i} \n" for n, i in zip(names, ids)))  # official trailing space
    return root


def test_hmdb51(tmp_path):
    index = read_dataset(f"hmdb51:{make_hmdb51(tmp_path)}")
    assert index.classes == ["brush_hair", "ride_bike"]
    assert [e.split for e in index.entries] == ["train", "test", "unused"] * 2
    assert index.entries[3].key == "ride_bike/clip_ride_bike_0" and index.entries[3].label == 1


def test_hmdb51_bad_line(tmp_path):
    root = make_hmdb51(tmp_path)
    (root / "testTrainMulti_7030_splits" / "ride_bike_test_split1.txt").write_text("clip.avi 7\n")
    with pytest.raises(LayoutError, match="ride_bike_test_split1.txt:1"):
        read_dataset(f"hmdb51:{root}")


def test_kinetics400_counts_missing(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (ann / "train.csv").write_text(header + "abseiling,aaa,10,20,train\n\"air drumming\",bbb,0,10,train\n")
    (ann / "validate.csv").write_text(header + "abseiling,ccc,5,15,validate\nabseiling,ddd,1,11,validate\n")
    touch(tmp_path / "train" / "abseiling" / "aaa_000010_000020.mp4")
    touch(tmp_path / "train" / "air drumming" / "bbb_000000_000010.mp4")
    touch(tmp_path / "val" / "ccc_000005_000015.mp4")
    index = read_dataset(f"kinetics400:{tmp_path}")
    assert index.classes == ["abseiling", "air drumming"]
    assert [(e.key, e.split, e.label) for e in index.entries] == [
        ("train/abseiling/aaa_000010_000020", "train", 0),
        ("train/air drumming/bbb_000000_000010", "train", 1),
        ("val/ccc_000005_000015", "test", 0)]
    assert index.missing == ["validate/ddd_000001_000011"]


def test_kinetics400_bad_row(tmp_path):
    (tmp_path / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nx,aaa,ten,20,train\n")
    with pytest.raises(LayoutError, match="train.csv:2"):
        read_dataset(f"kinetics400:{tmp_path}")


def test_ssv2(tmp_path):
    labels = {"Approaching something with your camera": "0", "Holding something": "1"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(labels))
    item = lambda i, t: {"id": str(i), "label": "x", "template": t, "placeholders": ["a cup"]}
    train = [item(1, "Holding [something]"), item(2, "Approaching [something] with your camera")]
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps(train))
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps([item(3, "Holding [something]")]))
    for i in (1, 2):
        touch(tmp_path / "20bn-something-something-v2" / f"{i}.webm")
    index = read_dataset(f"ssv2:{tmp_path}")
    assert index.classes == list(labels)
    assert [(e.key, e.label, e.split) for e in index.entries] == [("1", 1, "train"), ("2", 0, "train")]
    assert index.missing == ["3"]
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps([item(4, "Dropping [something]")]))
    with pytest.raises(LayoutError, match="train.json: entry 0: unknown class"):
        read_dataset(f"ssv2:{tmp_path}")


def test_folder_split_is_stratified_and_seeded(tmp_path):
    for cls, n in (("jump", 10), ("run", 2), ("solo", 1)):
        for i in range(n):
            touch(tmp_path / cls / f"{i}.mp4")
    touch(tmp_path / "run" / "notes.txt")
    index = read_dataset(f"folder:{tmp_path}")
    assert index.classes == ["jump", "run", "solo"]
    splits = {c: [e.split for e in index.entries if e.class_name == c] for c in index.classes}
    assert splits["jump"].count("test") == 3 and splits["run"].count("test") == 1
    assert splits["solo"] == ["train"]
    assert [e.split for e in read_dataset(f"folder:{tmp_path}").entries] == [e.split for e in index.entries]


def test_synthetic_reads_generated_tree_as_ucf101(tmp_path, monkeypatch):
    root = make_ucf101(tmp_path / "syn")
    calls = []
    fake = types.ModuleType("csvr.data.synthetic")
    fake.ensure_synthetic = lambda path=None: calls.append(path) or root
    monkeypatch.setitem(sys.modules, "csvr.data.synthetic", fake)
    index = read_dataset("synthetic")
    assert index.kind == "synthetic" and len(index.entries) == 6 and calls == [None]


def test_bad_specs_list_the_kinds(tmp_path):
    with pytest.raises(LayoutError, match="KIND:PATH") as err:
        read_dataset(f"ucf:{tmp_path}")
    assert all(kind in str(err.value) for kind in LAYOUTS)
    with pytest.raises(LayoutError, match="no PATH"):
        read_dataset("hmdb51")
    with pytest.raises(LayoutError, match="missing folder"):
        read_dataset(f"folder:{tmp_path / 'nope'}")
