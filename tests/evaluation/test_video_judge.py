"""The video judge (mdm.evaluation.video) and the clip figures."""

import sys

import pytest
import torch

from mdm.data.moving_digits import MovingDigitsDataset, bounce_trajectory, trajectory_is_consistent
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.figures import video_strip, write_animation
from mdm.evaluation.suites import format_confusion
from mdm.evaluation.video import ClipScores, ink_centroids, score_clips, start_directions


@pytest.fixture(scope="module")
def real():
    ds = MovingDigitsDataset("test", length=40, frames=8, canvas_size=24, digit_size=12)
    samples = [ds[i] for i in range(len(ds))]
    return torch.stack([s.video for s in samples]), [s.label for s in samples], samples


@pytest.fixture(scope="module")
def classifier():
    return train_digit_classifier(8, seed=0)[0]


def test_first_frame_and_whole_clip_shares_read_the_right_frames():
    correct = torch.tensor([[True, False, True], [False, True, True], [True, True, True], [True, True, False]])
    scores = ClipScores(correct, torch.zeros(4, dtype=torch.bool), torch.zeros(4, 3, 2), torch.zeros(12, 1))
    assert scores.frame_accuracy == 9 / 12
    assert scores.first_frame_accuracy == 3 / 4
    assert scores.whole_clip_accuracy == 1 / 4


def test_confusion_counts_the_digit_judged_against_the_one_requested():
    predicted = torch.tensor([[5, 8, 5], [8, 8, 3]])
    labels = torch.tensor([5, 8])
    scores = ClipScores(predicted == labels[:, None], torch.zeros(2, dtype=torch.bool), torch.zeros(2, 3, 2),
                        torch.zeros(6, 1), labels, predicted)
    counts = scores.confusion(10)
    assert counts[5, 5] == 2 and counts[5, 8] == 1 and counts[8, 8] == 2 and counts[8, 3] == 1
    assert int(counts.sum()) == 6 and int(counts.diagonal().sum()) == 4
    table = format_confusion({"class": counts.tolist()})
    assert "| 5 | 67% | 8 (33%) |" in table and "| 8 | 67% | 3 (33%) |" in table and "| 0 | – | – |" in table
    with pytest.raises(ValueError, match="needs the labels"):
        ClipScores(predicted == labels[:, None], torch.zeros(2, dtype=torch.bool), torch.zeros(2, 3, 2),
                   torch.zeros(6, 1)).confusion()


def test_real_clips_keep_their_digit_and_move_consistently(real, classifier):
    clips, labels, _ = real
    scores = score_clips(clips, labels, classifier, digit_size=12)
    assert scores.frame_accuracy >= 0.95 and scores.consistency == 1.0
    assert scores.first_frame_accuracy >= 0.95 and scores.whole_clip_accuracy >= 0.9
    wrong = score_clips(clips, [(l + 1) % 10 for l in labels], classifier, digit_size=12)
    assert wrong.frame_accuracy <= 0.1


def test_shuffled_static_and_teleporting_clips_are_not_consistent(real, classifier):
    clips, labels, _ = real
    g = torch.Generator().manual_seed(0)
    shuffled = torch.stack([c[torch.randperm(8, generator=g)] for c in clips])
    assert score_clips(shuffled, labels, classifier, 12).consistency <= 0.1
    static = clips[:, :1].expand_as(clips)  # a digit that never moves fits velocity 0, but every clip moves
    assert score_clips(static, labels, classifier, 12).consistency == 0.0
    teleport = clips.clone()
    teleport[:, 4:] = clips.roll(1, dims=0)[:, 4:]  # the second half of another clip
    assert score_clips(teleport, labels, classifier, 12).consistency <= 0.2


def test_centroids_move_with_the_digit(real):
    _, _, samples = real
    clip, path = samples[0].video[None], samples[0].meta["trajectory"]
    centroids = ink_centroids(clip)[0].double()
    offset = centroids - path
    torch.testing.assert_close(offset, offset[:1].expand_as(offset), rtol=0, atol=1e-4)  # same offset every frame


def test_unknown_offset_lets_a_centroid_path_bounce_off_the_real_walls():
    # x: 1, 1, 3, 5, 7, 9 (one bounce off the left wall); y: 5 ... 10 (no bounce); walls at 0 and 12
    path = torch.from_numpy(bounce_trajectory(torch.tensor([1, 5]).numpy(), torch.tensor([-2, 1]).numpy(), 6,
                                              torch.tensor([12, 12]).numpy())).double()
    shifted = path + torch.tensor([2.7, 1.0], dtype=torch.float64)  # a centroid inside a 12 px digit
    assert shifted.max() <= 12.5  # inside the range check: only the bounce can reject it
    assert trajectory_is_consistent(shifted, 24, 12, tol=0.5, unknown_offset=12)
    assert not trajectory_is_consistent(shifted, 24, 12, tol=0.5)  # it bounces at x = 2.7, not at a wall
    with pytest.raises(ValueError, match="unknown_offset must be >= 0"):
        trajectory_is_consistent(shifted, 24, 12, unknown_offset=-1)


def test_start_directions_agree_with_the_ground_truth_of_the_first_step(real):
    clips, _, samples = real
    velocities = torch.stack([s.meta["velocity"] for s in samples])
    agrees = start_directions(ink_centroids(clips), velocities)
    first_step = torch.stack([s.meta["trajectory"][1] - s.meta["trajectory"][0] for s in samples])
    expected = (torch.sign(first_step) == torch.sign(velocities.double())).all(-1)  # False after a first bounce
    assert torch.equal(agrees, expected) and 0 < int(agrees.sum()) < len(samples)
    with pytest.raises(ValueError, match="start_directions"):
        start_directions(ink_centroids(clips), velocities[:3])


def test_bad_clip_shapes_are_clear_errors(classifier):
    with pytest.raises(ValueError, match="clips must be"):
        score_clips(torch.rand(2, 8, 24, 24), [1, 2], classifier, 12)
    with pytest.raises(ValueError, match="one label each"):
        score_clips(torch.rand(2, 8, 1, 24, 24), [1], classifier, 12)
    with pytest.raises(ValueError, match="does not fit"):
        score_clips(torch.rand(1, 8, 1, 24, 24), [1], classifier, 30)


def test_animation_and_frame_strip(real, tmp_path, monkeypatch):
    from PIL import Image

    clips = real[0][:3]
    gif = write_animation(clips, tmp_path / "a.gif", scale=2)
    with Image.open(gif) as im:
        assert im.n_frames == 8 and im.size == (3 * 25 * 2, 25 * 2)  # 3 clips of 24 px + a 1 px line, 2x
    assert video_strip(clips, ["a", "b", "c"], tmp_path / "s.png").stat().st_size > 0
    with pytest.raises(ValueError, match="must end in .gif or .mp4"):
        write_animation(clips, tmp_path / "a.avi")
    with pytest.raises(ValueError, match="3 clips but 2 titles"):
        video_strip(clips, ["a", "b"], tmp_path / "s.png")
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    with pytest.raises(RuntimeError, match="needs ffmpeg"):
        write_animation(clips, tmp_path / "a.mp4")
