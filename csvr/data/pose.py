"""MediaPipe Pose (BlazePose full, 33 landmarks) on RGB frames, fully offline.

Only `model_complexity=1` ships inside the mediapipe 0.10.21 wheel (0 and 2 download their model at run
time and fail offline). `static_image_mode=False` tracks across frames (faster, steadier).

    from csvr.data.pose import estimate_poses
    keypoints, detected = estimate_poses(frames)   # frames uint8 (F, H, W, 3) RGB
    # keypoints float32 (F, 33, 3) = normalised x, y (in [0, 1] of the frame) and visibility
    # detected  bool (F,); frames without a person are all-zero rows with detected=False

Prepare streams long videos through one `PoseEstimator` (one MediaPipe graph per call / worker).
"""
from __future__ import annotations

import numpy as np

JOINTS = 33  # MediaPipe Pose landmarks


class PoseEstimator:
    """One MediaPipe Pose graph; use as a context manager so the graph is closed."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._pose = mp.solutions.pose.Pose(model_complexity=1, static_image_mode=False)

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def frame(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """One uint8 (H, W, 3) RGB frame -> float32 (33, 3) x, y, visibility and whether a person was found."""
        result = self._pose.process(np.ascontiguousarray(rgb, dtype=np.uint8))
        if result.pose_landmarks is None:
            return np.zeros((JOINTS, 3), np.float32), False
        points = [(lm.x, lm.y, lm.visibility) for lm in result.pose_landmarks.landmark]
        keypoints = np.nan_to_num(np.asarray(points, np.float32))  # (33, 3)
        return keypoints, True

    def frames(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (F, H, W, 3) -> keypoints float32 (F, 33, 3), detected bool (F,)."""
        keypoints = np.zeros((len(rgb), JOINTS, 3), np.float32)
        detected = np.zeros(len(rgb), bool)
        for i, img in enumerate(rgb):
            keypoints[i], detected[i] = self.frame(img)
        return keypoints, detected


def estimate_poses(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses of consecutive frames of one video (tracking mode): (F, 33, 3) float32, (F,) bool."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames (F, H, W, 3), got shape {frames.shape}")
    with PoseEstimator() as estimator:
        return estimator.frames(frames)
