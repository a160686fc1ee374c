"""MediaPipe Pose on real frames (carphone_pristine.mp4: a man talking in a car), offline.

    python -m pytest tests/test_pose.py -q        # ~5 s
"""
from __future__ import annotations

import numpy as np
import pytest

from csvr.data.pose import JOINTS, estimate_poses
from csvr.data.video import read_frames
from tests.media import sample


def test_person_found_in_carphone():
    frames = read_frames(sample("carphone_pristine.mp4"), range(120))  # (120, 144, 176, 3)
    keypoints, detected = estimate_poses(frames)
    assert keypoints.shape == (120, JOINTS, 3) and keypoints.dtype == np.float32
    assert detected.shape == (120,) and detected.dtype == bool
    assert detected.mean() >= 0.9
    assert np.isfinite(keypoints).all()
    nose = keypoints[detected, 0]  # landmark 0: the face is inside the frame
    assert ((nose[:, :2] > 0) & (nose[:, :2] < 1)).all() and nose[:, 2].mean() > 0.5


def test_no_person_is_zeros_and_not_detected():
    keypoints, detected = estimate_poses(np.zeros((3, 96, 96, 3), np.uint8))
    assert not detected.any() and not keypoints.any() and np.isfinite(keypoints).all()


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="RGB frames"):
        estimate_poses(np.zeros((3, 96, 96), np.uint8))
