"""Tests for the embedded synthetic dataset (csvr.data.synthetic).

Run: python -m pytest tests/test_synthetic.py -q

Checks the UCF101 layout, that decord reads every video, that MediaPipe finds the person where the
ground-truth track says, that generation is idempotent and safe to run concurrently, and the two
properties the class groups exist for: motion classes are indistinguishable from one frame, context
classes are indistinguishable from the pose track.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from functools import lru_cache
from pathlib import Path

import decord
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from csvr.data import synthetic as S

N_VIDEOS = len(S.CLASSES) * len(S.GROUPS)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, float, list]:
    """The dataset every test here reads, generated once, by two processes at once over a stale tree (what
    test_concurrent_callers_replace_a_stale_tree checks; a second generation cost ~10 s of the suite)."""
    root = tmp_path_factory.mktemp("datasets") / "synthetic"
    (root / "UCF-101").mkdir(parents=True)
    (root / "leftover.txt").write_text("from an interrupted older version")
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(S.ensure_synthetic, [root, root])
    return root, time.perf_counter() - start, results


@pytest.fixture(scope="module")
def root(generated) -> Path:
    return generated[0]


def parse_lists(root: Path, split: int) -> tuple[dict[str, int], list[tuple[str, int]], list[str]]:
    """A tiny UCF101 split reader: classInd, (path, label) train entries, test paths."""
    lists = root / "ucfTrainTestlist"

    def rows(name: str) -> list[list[str]]:
        return [line.split() for line in (lists / name).read_text().splitlines()]

    classes = {name: int(i) for i, name in rows("classInd.txt")}
    train = [(path, int(label)) for path, label in rows(f"trainlist0{split}.txt")]
    test = [path for (path,) in rows(f"testlist0{split}.txt")]
    return classes, train, test


def group_of(rel: str) -> int:
    return int(Path(rel).stem.split("_")[-2][1:])  # Class/v_Class_g09_c01.avi -> 9


def test_layout_and_split_files(generated):
    root, seconds, _ = generated
    assert seconds < 60, f"generation took {seconds:.1f} s"  # two spawned processes' start-up included
    classes, train, test = parse_lists(root, 1)
    assert list(classes) == [c.name for c in S.CLASSES] and sorted(classes.values()) == list(range(1, 7))
    assert {group_of(p) for p, _ in train} == set(range(1, 12)) and {group_of(p) for p in test} == set(range(12, 21))
    assert len(test) == 54  # 9 per class: one test video is 1.9 points of top-1
    for path, label in train:
        assert path.split("/")[0] == [n for n, i in classes.items() if i == label][0]
    on_disk = sorted(str(p.relative_to(root / "UCF-101")) for p in (root / "UCF-101").rglob("*.avi"))
    assert sorted([p for p, _ in train] + test) == on_disk and len(on_disk) == N_VIDEOS
    for split in (2, 3):  # the other splits also hold out whole groups
        _, tr, te = parse_lists(root, split)
        assert not {group_of(p) for p, _ in tr} & {group_of(p) for p in te} and len(tr) + len(te) == N_VIDEOS
    groups = json.loads((root / "classGroups.json").read_text())
    assert sorted(groups) == sorted(classes)
    assert sorted(groups.values()) == ["both"] * 2 + ["context"] * 2 + ["motion"] * 2
    assert (root / ".complete").read_text().strip() == S.marker()


def test_a_layout_change_without_a_version_bump_is_regenerated(tmp_path, monkeypatch):
    """Same VERSION, other layout (the stale 11-clips-per-class "synthetic-v2" of an earlier session): not complete."""
    root = tmp_path / "synthetic"
    root.mkdir()
    (root / ".complete").write_text(S.marker() + "\n")
    assert S.is_complete(root)
    monkeypatch.setattr(S, "GROUPS", range(1, 12))
    assert not S.is_complete(root)
    (root / ".complete").write_text(S.VERSION + "\n")  # a marker from before the digest
    assert not S.is_complete(root)


def test_ground_truth_poses(root):
    for rel in (root / "UCF-101").rglob("*.avi"):
        pose = np.load(root / "poses_gt" / rel.parent.name / f"{rel.stem}.npy")
        assert pose.shape == (S.FRAMES, 33, 3) and pose.dtype == np.float32
        nose = pose[:, 0]
        assert np.all((nose[:, :2] > 0) & (nose[:, :2] < 1)) and np.all(nose[:, 2] > 0.9)


def test_every_video_decodes_with_decord(root):
    for path in sorted((root / "UCF-101").rglob("*.avi")):
        vr = decord.VideoReader(str(path))
        assert len(vr) == S.FRAMES and vr[len(vr) - 1].shape == (S.HEIGHT, S.WIDTH, 3)
        assert vr.get_avg_fps() == pytest.approx(S.FPS)


def test_sprite_landmarks_match_mediapipe():
    measured = S.measure_sprite_landmarks()
    assert np.abs(measured[:13, :2] - S.SPRITE_LANDMARKS[:13, :2]).max() < 0.02  # face and shoulders


def test_mediapipe_finds_the_person_where_ground_truth_says(root):
    import mediapipe as mp_lib

    found, errors = 0, []
    for cls in S.CLASSES:  # one test video per class: 6 x 48 frames
        name = S.video_name(cls, 10)
        frames = _all_frames(root / "UCF-101" / cls.name / f"{name}.avi")
        gt = np.load(root / "poses_gt" / cls.name / f"{name}.npy")
        with mp_lib.solutions.pose.Pose(model_complexity=1) as pose:
            for t, frame in enumerate(frames):
                res = pose.process(frame)
                if res.pose_landmarks is not None:
                    found += 1
                    xy = np.array([[p.x, p.y] for p in res.pose_landmarks.landmark[:13]])
                    errors.append(np.abs(xy - gt[t, :13, :2]).mean())
    rate = found / (len(S.CLASSES) * S.FRAMES)
    assert rate >= 0.8, f"MediaPipe found the person in {rate:.0%} of frames"
    assert np.median(errors) < 0.02, f"median face/shoulder error {np.median(errors):.3f} of the frame"


def _all_frames(path: Path) -> np.ndarray:
    return decord.VideoReader(str(path)).get_batch(list(range(S.FRAMES))).asnumpy()  # (F, H, W, 3)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_second_call_is_fast_and_changes_nothing(root):
    before = _snapshot(root)
    start = time.perf_counter()
    assert S.ensure_synthetic(root) == root
    assert time.perf_counter() - start < 0.5
    assert _snapshot(root) == before


def test_same_seeds_give_the_same_videos(root):
    for ci, cls in enumerate(S.CLASSES):
        for group in (1, 11):
            spec = S.sample_video(cls, S.video_rng(ci, group))
            name = S.video_name(cls, group)
            stored = np.load(root / "poses_gt" / cls.name / f"{name}.npy")
            np.testing.assert_array_equal(S.pose_track(spec), stored)
            decoded = decord.VideoReader(str(root / "UCF-101" / cls.name / f"{name}.avi"))[5].asnumpy()
            error = np.abs(decoded.astype(float) - S.render_frame(spec, 5)).mean()
            assert error < 12  # what 4:2:0 chroma and the codec lose (the brick wall loses most)


def test_concurrent_callers_replace_a_stale_tree(generated):
    root, _, results = generated  # two spawned processes called ensure_synthetic on a stale tree at once
    assert results == [root, root] and S.is_complete(root)
    assert not (root / "leftover.txt").exists()
    assert len(list((root / "UCF-101").rglob("*.avi"))) == N_VIDEOS
    assert [p.name for p in root.parent.iterdir() if ".tmp-" in p.name] == []


# ---------------------------------------------------------------------------------------------
# what separates the classes (checked on many fresh draws from the generator, with fixed seeds)


@lru_cache(maxsize=None)
def _draw(class_index: int, n: int, offset: int) -> list[S.VideoSpec]:
    cls = S.CLASSES[class_index]
    return [S.sample_video(cls, np.random.default_rng([99, class_index, offset + i])) for i in range(n)]


def _frame_features(frame: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((16, 12), Image.BILINEAR), np.float32).ravel() / 255


def _pose_features(track: np.ndarray) -> np.ndarray:
    """Motion summary (median step, mean |step|, spread, mean of the upper-body centre) + raw track."""
    centre = track[:, :13, :2].mean(axis=1)  # (F, 2)
    step = np.diff(centre, axis=0)
    summary = [np.median(step, 0), np.abs(step).mean(0), centre.std(0), centre.mean(0)]
    return np.concatenate(summary + [track[::4, :13, :2].ravel()])


def _held_out_accuracy(pair: tuple[int, int], features) -> float:
    """Logistic regression trained on 300 draws per class, scored on 150 other draws per class."""
    train = [features(s) for c in pair for s in _draw(c, 300, 0)]
    test = [features(s) for c in pair for s in _draw(c, 150, 10_000)]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(np.stack(train), np.repeat([0, 1], 300))
    return model.score(np.stack(test), np.repeat([0, 1], 150))


def _pair(group: str) -> tuple[int, int]:
    return tuple(i for i, c in enumerate(S.CLASSES) if c.group == group)


def test_motion_classes_look_the_same_in_any_single_frame():
    pair = _pair("motion")
    rng = np.random.default_rng(0)
    first = _held_out_accuracy(pair, lambda s: _frame_features(S.render_frame(s, 0)))
    anywhere = _held_out_accuracy(pair, lambda s: _frame_features(S.render_frame(s, rng.integers(S.FRAMES))))
    assert first < 0.62 and anywhere < 0.62, (first, anywhere)  # chance is 0.5; sd ~0.03
    assert _held_out_accuracy(pair, lambda s: _pose_features(S.pose_track(s))) > 0.95


def _flow(a: np.ndarray, b: np.ndarray, axis: int) -> float:
    """Least-squares shift (pixels) along `axis` (1 = horizontal, 0 = vertical) from frame a to b:
    -sum(I_axis I_t) / sum(I_axis^2)."""
    a, b = a.astype(np.float32).mean(-1), b.astype(np.float32).mean(-1)
    grad = np.gradient((a + b) / 2, axis=axis)
    return float(-(grad * (b - a)).sum() / (grad * grad).sum())


def test_frame_differences_in_the_videos_give_the_motion_axis(root):
    """Bobbing moves vertically, Swaying horizontally: the larger flow component names the class."""
    correct = 0
    for i in _pair("motion"):
        cls = S.CLASSES[i]
        for g in S.GROUPS:
            frames = _all_frames(root / "UCF-101" / cls.name / f"{S.video_name(cls, g)}.avi")
            steps = range(0, S.FRAMES - 2, 3)
            horizontal = np.mean([abs(_flow(frames[t], frames[t + 2], 1)) for t in steps])
            vertical = np.mean([abs(_flow(frames[t], frames[t + 2], 0)) for t in steps])
            correct += (vertical > horizontal) == (cls.motions == ("bob",))
    assert correct / (2 * len(S.GROUPS)) >= 0.9


def test_context_classes_share_the_pose_distribution_but_not_the_scene():
    pair = _pair("context")
    assert _held_out_accuracy(pair, lambda s: _pose_features(S.pose_track(s))) < 0.62
    assert _held_out_accuracy(pair, lambda s: _frame_features(S.render_frame(s, 0))) > 0.95


def test_context_classes_separate_from_single_frames_of_the_real_split(root):
    """Trained on middle frames of the train videos, scored on frames of the held-out test videos."""
    _, train, test = parse_lists(root, 1)
    names = [S.CLASSES[i].name for i in _pair("context")]

    def frames_of(rel: str, idx: list[int]) -> np.ndarray:
        vr = decord.VideoReader(str(root / "UCF-101" / rel))
        return np.stack([_frame_features(f) for f in vr.get_batch(idx).asnumpy()])

    def dataset(paths: list[str], idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        paths = [p for p in paths if p.split("/")[0] in names]
        x = np.concatenate([frames_of(p, idx) for p in paths])
        return x, np.repeat([names.index(p.split("/")[0]) for p in paths], len(idx))

    model = LogisticRegression(C=1.0, max_iter=2000).fit(*dataset([p for p, _ in train], [24]))
    assert model.score(*dataset(test, [0, 16, 32, 47])) >= 0.9
