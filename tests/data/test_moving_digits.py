"""Bouncing-digit clips (mdm.data.moving_digits) and the trajectory consistency check."""

import numpy as np
import pytest
import torch

from mdm.data.moving_digits import MovingDigitsDataset, bounce_trajectory, direction_words, trajectory_is_consistent
from mdm.data.sample import Role

CANVAS, SIZE = 32, 14


@pytest.fixture(scope="module")
def dataset():
    return MovingDigitsDataset("train", length=64, frames=8, canvas_size=CANVAS, digit_size=SIZE, seed=0)


def test_sample_format(dataset):
    s = dataset[0]
    assert s.video.shape == (8, 1, CANVAS, CANVAS) and s.video.dtype == torch.float32
    assert 0.0 <= float(s.video.min()) and float(s.video.max()) <= 1.0
    assert 0 <= s.label <= 9
    assert s.meta["trajectory"].shape == (8, 2) and s.meta["velocity"].shape == (2,) and s.meta["digit_size"] == SIZE
    caption = s.text(Role.CAPTION)
    assert caption.startswith("the digit ") and direction_words(s.meta["velocity"].tolist()) in caption


def test_deterministic_by_seed_and_index(dataset):
    again = MovingDigitsDataset("train", length=64, seed=0)
    other = MovingDigitsDataset("train", length=64, seed=1)
    for i in (0, 7):
        assert torch.equal(dataset[i].video, again[i].video)
        assert dataset[i].texts == again[i].texts
    assert not torch.equal(dataset[3].video, dataset[4].video)
    assert any(not torch.equal(dataset[i].video, other[i].video) for i in range(4))


def test_digit_stays_in_canvas_and_video_matches_trajectory(dataset):
    for i in range(16):
        s = dataset[i]
        traj = s.meta["trajectory"]
        assert traj.min() >= 0 and traj.max() <= CANVAS - SIZE
        for t, (x, y) in enumerate(traj.long().tolist()):
            frame = s.video[t, 0].clone()
            assert torch.equal(frame[y:y + SIZE, x:x + SIZE], dataset.digits[s.meta["digit_index"]])  # pasted whole
            frame[y:y + SIZE, x:x + SIZE] = 0
            assert not frame.any()  # and nothing outside its box


def test_ground_truth_trajectories_are_consistent(dataset):
    for i in range(len(dataset)):
        traj = dataset[i].meta["trajectory"]
        assert trajectory_is_consistent(traj, CANVAS, SIZE, tol=0.5)
        assert trajectory_is_consistent(traj.flip(0), CANVAS, SIZE, tol=0.5)  # reversed: velocity negated
        noisy = traj + torch.empty_like(traj).uniform_(-0.4, 0.4)
        assert trajectory_is_consistent(noisy, CANVAS, SIZE, tol=0.5)  # estimated positions


def test_shuffled_frames_are_inconsistent(dataset):
    perm = [3, 0, 6, 1, 7, 2, 5, 4]
    checked = 0
    for i in range(len(dataset)):
        traj = dataset[i].meta["trajectory"]
        shuffled = traj[perm]
        if torch.equal(shuffled, traj) or torch.equal(shuffled, traj.flip(0)):
            continue  # a permutation that happens to leave this path unchanged proves nothing
        checked += 1
        assert not trajectory_is_consistent(shuffled, CANVAS, SIZE, tol=0.5), traj.tolist()
    assert checked > len(dataset) // 2


def test_reflection_and_other_inconsistencies():
    limit = np.array([18, 18])
    path = bounce_trajectory(np.array([16, 1]), np.array([3, -2]), 5, limit)
    assert path.tolist() == [[16, 1], [17, 1], [14, 3], [11, 5], [8, 7]]  # mirrored at x = 18 and y = 0
    assert trajectory_is_consistent(path, CANVAS, SIZE)
    stalled = path.copy()
    stalled[3] = stalled[2]
    assert not trajectory_is_consistent(stalled, CANVAS, SIZE)
    out_of_canvas = path + np.array([5, 0])
    assert not trajectory_is_consistent(out_of_canvas, CANVAS, SIZE)
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        trajectory_is_consistent(np.zeros((4, 3)), CANVAS, SIZE)


def test_two_digits_and_rgb():
    ds = MovingDigitsDataset("test", length=4, num_digits=2, channels=3, seed=2)
    s = ds[1]
    assert s.video.shape == (8, 3, CANVAS, CANVAS)
    assert s.meta["trajectories"].shape == (2, 8, 2) and s.meta["velocities"].shape == (2, 2)
    assert s.label == s.meta["labels"][0] and s.text(Role.CAPTION).count("the digit") == 2
    assert all(trajectory_is_consistent(tr, CANVAS, SIZE) for tr in s.meta["trajectories"])


def test_motion_step_moves_by_whole_steps():
    """With motion_step = the VQ patch size the digit sits at one phase of the code grid in every frame."""
    ds = MovingDigitsDataset("train", length=32, frames=8, canvas_size=16, digit_size=8, max_speed=4, motion_step=4)
    speeds = set()
    for i in range(len(ds)):
        s = ds[i]
        path = s.meta["trajectory"]
        assert torch.equal(path % 4, torch.zeros_like(path)) and s.meta["velocity"].abs().max() == 4
        assert trajectory_is_consistent(path, 16, 8)
        # the frame is the digit pasted at that grid position: its ink starts on a multiple of 4 or later
        ys, xs = torch.nonzero(s.video[0, 0] > 0, as_tuple=True)
        assert int(xs.min()) >= int(path[0, 0]) and int(ys.min()) >= int(path[0, 1])
        speeds.add(tuple(s.meta["velocity"].tolist()))
    assert len(speeds) > 3  # several directions, not one
    free = MovingDigitsDataset("train", length=32, frames=8, canvas_size=16, digit_size=8, max_speed=3)
    assert any(bool((free[i].meta["trajectory"] % 4).any()) for i in range(len(free)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_digits must be 1 or 2"):
        MovingDigitsDataset(num_digits=3)
    with pytest.raises(ValueError, match="max_speed"):
        MovingDigitsDataset(max_speed=30)
    with pytest.raises(ValueError, match="motion_step must be >= 1 and divide"):
        MovingDigitsDataset(canvas_size=16, digit_size=8, max_speed=3, motion_step=4)
    with pytest.raises(ValueError, match="motion_step"):
        MovingDigitsDataset(canvas_size=16, digit_size=9, max_speed=4, motion_step=4)
    with pytest.raises(IndexError, match="clips"):
        MovingDigitsDataset(length=2)[2]
