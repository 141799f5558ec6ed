"""DiM video end to end on a tiny config: a clip model trains, samples clips, and refuses mismatched data."""

import pytest
import torch

from mdm.cli import main
from mdm.config import ConfigError, load_config
from mdm.diffusion.sampling import SamplerConfig
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import check_clips, load_samples
from mdm.training.run import train_run

VIDEO = ["backbone.kind=bimamba2", "backbone.scan_patterns=13/1", "layout.frames=3", "layout.image_channels=1",
         "data.name=moving-digits", "data.train_size=24", "data.vq_steps=3", "data.codebook_size=32",
         "data.vocab_size=48", "data.motion_step=4", "backbone.grid_pos_embed=true", "train.batch_size=4",
         "train.log_every=1",
         "train.task_weights={class_to_image: 1.0, text_to_image: 1.0}"]
QUIET = {"progress": False, "log": lambda _: None}


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video") / "run"
    train_run(load_config("tiny", VIDEO + ["train.steps=2"]), folder, **QUIET)
    return folder


def test_a_tiny_video_model_trains_and_samples_clips_of_the_right_shape(video_run):
    pipe = MDMPipeline.from_pretrained(video_run)
    assert pipe.is_video and pipe.frames == 3
    sampler = SamplerConfig(steps=3)
    clips = pipe.class_to_video([1, 7], sampler, seed=0)
    assert clips.shape == (2, 3, 1, 16, 16) and clips.min() >= 0 and clips.max() <= 1
    assert torch.equal(clips, pipe.class_to_video([1, 7], sampler, seed=0))  # deterministic by seed
    captioned = pipe.text_to_video(["the digit one moving up"], sampler, seed=1)
    assert captioned.shape == (1, 3, 1, 16, 16)
    codes = pipe.encode_images(clips)
    assert codes.shape == (2, 3 * 4 * 4)  # 16 px frames, 4 px codes
    # clip-major, frames inside: clip 1's frame 2 is the last 16 codes, as the VQ encodes that frame alone
    assert torch.equal(codes[1, 32:], pipe.vq.encode(clips[1, 2:3]).flatten())
    decoded = pipe.decode_images(codes)
    assert decoded.shape == clips.shape
    with torch.no_grad():  # frame 1 of clip 0 is codes 16..31 (a batched conv may differ in the last bits)
        torch.testing.assert_close(decoded[0, 1], pipe.vq.decode(codes[0, 16:32].view(1, 4, 4)).clamp(0, 1)[0],
                                   rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"codes must be \(batch, 48\)"):
        pipe.decode_images(codes[:, :16])


def test_clip_shape_errors_name_what_was_expected(video_run):
    pipe = MDMPipeline.from_pretrained(video_run)
    with pytest.raises(ValueError, match=r"clips must be \(batch, 3, 1, 16, 16\)"):
        pipe.encode_images(torch.rand(2, 4, 1, 16, 16))  # wrong frame count
    with pytest.raises(ValueError, match=r"clips must be \(batch, 3, 1, 16, 16\)"):
        pipe.encode_images(torch.rand(2, 3, 1, 8, 8))  # wrong size
    config = load_config("tiny", VIDEO)
    samples = load_samples(config)[:2]
    bad = load_config("tiny", VIDEO[:2] + ["layout.frames=5"] + VIDEO[3:])
    with pytest.raises(ValueError, match=r"sample 0 is a clip of shape \(3, 1, 16, 16\) .* expected \(5, 1, 16, 16\)"):
        check_clips(samples, bad, "test data")
    with pytest.raises(ValueError, match="sample 0 is a video clip but layout.frames = 1"):
        check_clips(samples, load_config("tiny", VIDEO[:2] + ["layout.frames=1"] + VIDEO[3:]), "test data")
    with pytest.raises(ValueError, match=r"moving-digits is video: set layout.frames .* got 1"):
        load_samples(load_config("tiny", VIDEO[:2] + ["layout.frames=1"] + VIDEO[3:]))
    with pytest.raises(ValueError, match="layout.frames = 3 asks for video clips, but sample 0 has none"):
        train_run(load_config("tiny", ["layout.frames=3", "data.name=digits", "train.steps=1"]),
                  video_run.parent / "digits-as-video", **QUIET)


def test_digit_size_sets_the_digit_on_a_larger_canvas_and_bad_sizes_name_the_keys():
    samples = load_samples(load_config("tiny", VIDEO + ["layout.image_size=20", "data.digit_size=8"]))[:8]
    assert samples[0].video.shape == (3, 1, 20, 20)
    assert all(s.meta["digit_size"] == 8 for s in samples)
    places = torch.cat([s.meta["trajectory"] for s in samples])
    assert set(places.unique().tolist()) <= {0.0, 4.0, 8.0, 12.0} and places.max() == 12  # 4 places per axis
    assert load_samples(load_config("tiny", VIDEO))[0].meta["digit_size"] == 8  # default: half of 16 px
    with pytest.raises(ValueError, match=r"layout.image_size = 16, data.digit_size = 6 .* data.motion_step = 4 "
                                         r"\(it must divide .*free span canvas_size - digit_size = 10"):
        load_samples(load_config("tiny", VIDEO + ["data.digit_size=6"]))


def test_mdm_sample_video_writes_an_animation_and_a_frame_strip(video_run, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "clips.gif"
    common = ["sample", "--checkpoint", str(video_run), "--steps", "2", "--label", "3", "-n", "2"]
    assert main(common + ["--video", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 3
    assert (tmp_path / "clips-frames.png").stat().st_size > 0
    assert main(common + ["--video", "--frame-passes", "2", "--out", str(tmp_path / "passes.gif")]) == 0
    capsys.readouterr()
    assert main(common + ["--video", "--frame-passes", "0", "--out", str(tmp_path / "passes.gif")]) == 2
    assert "frame_passes must be an int >= 1" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "x.png")]) == 2
    assert "is a video model (layout.frames = 3); add --video" in capsys.readouterr().err
    assert main(common + ["--video", "--out", str(tmp_path / "x.png")]) == 2
    assert "must end in .gif or .mp4" in capsys.readouterr().err


def test_video_requests_on_an_image_checkpoint_are_clear_errors(tmp_path, capsys):
    image_run = tmp_path / "image"
    train_run(load_config("tiny", ["data.train_size=24", "data.vq_steps=3", "data.codebook_size=32",
                                   "data.vocab_size=64", "train.batch_size=4", "train.steps=1"]), image_run, **QUIET)
    assert main(["sample", "--checkpoint", str(image_run), "--label", "1", "--video", "--out",
                 str(tmp_path / "clips.gif")]) == 2
    assert "is an image model (layout.frames = 1)" in capsys.readouterr().err
    pipe = MDMPipeline.from_pretrained(image_run)
    with pytest.raises(ValueError, match="class_to_video needs a video model"):
        pipe.class_to_video([1])
    with pytest.raises(ValueError, match="text_to_video needs a video model"):
        pipe.text_to_video(["a red circle"])


def test_moving_digits_suite_scores_generated_and_real_clips(video_run, tmp_path):
    from mdm.evaluation.suites import run_suite

    record = run_suite(video_run, "moving-digits", SamplerConfig(steps=2), n=4, out=tmp_path)
    scores = record["scores"]
    for name in ("frame_accuracy", "consistency", "caption_frame_accuracy", "caption_consistency"):
        assert 0.0 <= scores[name] <= 1.0
    for task in ("", "caption_"):  # every frame right implies frame 0 right
        assert scores[f"{task}whole_clip_accuracy"] <= scores[f"{task}first_frame_accuracy"]
        assert scores[f"{task}whole_clip_accuracy"] <= scores[f"{task}frame_accuracy"]
    # A smoke test of the suite on a 3-frame model; the judge on real held-out clips (cropped at the size the data
    # drew the digits at) finds every clip consistent and reads the digit in most frames.
    assert scores["real_consistency"] == 1.0 and scores["real_frame_accuracy"] >= 0.75
    assert (tmp_path / "moving-digits-dpmsolver++-2-cosine-g1.json").is_file()
    # the per-digit confusion: every judged frame counted once, the right ones on the diagonal
    frames = 4 * 3
    for name, key in (("class", "frame_accuracy"), ("caption", "caption_frame_accuracy")):
        counts = torch.tensor(record["confusion"][name])
        assert counts.shape == (10, 10) and int(counts.sum()) == frames
        assert int(counts.diagonal().sum()) == round(scores[key] * frames)
    assert "| digit | class: right |" in (tmp_path / "moving-digits-dpmsolver++-2-cosine-g1.md").read_text()


# lag: the step at which a share first changes the loss. A clean frame changes step 0's; the previous estimate
# enters through a zero-initialised projection, so feeding it changes the weights at step 0 and the loss at 1 (a
# high rate makes that one step show in the logged loss).
@pytest.mark.parametrize("share, extra, lag", [
    ("clean_frames_prob", [], 0),
    ("self_conditioning_prob", ["diffusion.self_conditioning=true", "train.lr=0.05"], 1)])
def test_a_curriculum_trains_with_its_own_share_then_the_runs(tmp_path, share, extra, lag):
    curriculum = ["train.curriculum_steps=2", "train.curriculum_task_weights={text_to_image: 1.0}", "train.steps=4"]

    def run_losses(name: str, *overrides: str) -> tuple[list[float], float]:
        result = train_run(load_config("tiny", VIDEO + curriculum + extra + list(overrides)), tmp_path / name, **QUIET)
        return [h["loss"] for h in result.trainer.history], getattr(result.trainer.diffusion.config, share)

    own, after = run_losses("own", f"diffusion.{share}=1.0", f"train.curriculum_{share}=0")
    none, _ = run_losses("none", f"diffusion.{share}=0")
    runs, _ = run_losses("runs", f"diffusion.{share}=1.0")
    assert own[:2] == none[:2]  # the curriculum's steps train with its share (0), not the run's (1.0) ...
    assert own[lag] != runs[lag]  # ... which would give other losses
    assert own[2 + lag] != none[2 + lag] and after == 1.0  # after it, the run's share again, from the same weights


@pytest.mark.parametrize("name", ["clean_frames_prob", "self_conditioning_prob"])
def test_a_curriculum_share_outside_0_1_is_refused(name):
    with pytest.raises(ConfigError, match=rf"train.curriculum_{name} is a probability in \[0, 1\].*got 1.5"):
        load_config("tiny", VIDEO + [f"train.curriculum_{name}=1.5"])


def test_a_curriculum_self_conditioning_share_without_self_conditioning_is_refused():
    with pytest.raises(ConfigError, match=r"train.curriculum_self_conditioning_prob needs diffusion.self_conditioning"):
        load_config("tiny", VIDEO + ["train.curriculum_self_conditioning_prob=0"])
    load_config("tiny", VIDEO + ["train.curriculum_self_conditioning_prob=0", "diffusion.self_conditioning=true"])


def test_a_run_resumed_inside_a_curriculum_with_its_own_clean_frame_share_repeats_the_whole_run(tmp_path):
    overrides = VIDEO + ["train.curriculum_steps=2", "train.curriculum_task_weights={text_to_image: 1.0}",
                         "train.steps=4", "train.checkpoint_every=1", "diffusion.clean_frames_prob=1.0",
                         "train.curriculum_clean_frames_prob=0"]
    full = [h["loss"] for h in train_run(load_config("tiny", overrides), tmp_path / "full", **QUIET).trainer.history]

    class Crash(Exception):
        pass

    def crash_at_2(trainer, entry):
        if trainer.step == 2:  # after the step-1 checkpoint, inside the curriculum
            raise Crash

    with pytest.raises(Crash):
        train_run(load_config("tiny", overrides), tmp_path / "cut", on_log=crash_at_2, **QUIET)
    resumed = train_run(load_config("tiny", overrides), tmp_path / "cut", resume=True, **QUIET)
    assert resumed.resumed_from == 1
    assert [h["loss"] for h in resumed.trainer.history] == full[1:]
