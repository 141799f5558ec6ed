"""The continuous image path end to end (DESIGN.md §1.1, §2.3): raw pixel patches, no VQ-VAE, noise MSE."""

import pytest
import torch

from mdm.config import ConfigError, load_config
from mdm.diffusion.sampling import SamplerConfig
from mdm.pipeline import MDMPipeline
from mdm.tasks import Task, task_segments
from mdm.training.run import train_run

PIXELS = ["layout.image_tokens=pixels", "layout.image_size=8", "layout.vq_factor=2", "layout.image_channels=1",
          "data.name=digits", "train.batch_size=4", "train.log_every=1", "train.steps=2",
          "train.task_weights={class_to_image: 1.0, image_to_text: 1.0}"]
QUIET = {"progress": False, "log": lambda _: None}


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pixels") / "run"
    result = train_run(load_config("tiny", PIXELS), folder, **QUIET)
    return folder, result


def test_pixel_data_is_patches_and_no_vq_is_trained(pixel_run):
    folder, result = pixel_run
    assert result.data.vq is None and not (folder / "vq").exists()
    codes = result.data.train.codes
    assert codes.dtype == torch.float32 and codes.shape[1:] == (4, 4, 4)  # 8 px in 2 px patches, 4 values each
    image = result.data.samples[0].image
    assert torch.equal(codes[0, 1, 2], image[0, 2:4, 4:6].flatten())  # patch (row 1, col 2), raster inside
    segment = task_segments(Task.CLASS_TO_IMAGE, result.data.train.subset(torch.arange(3)))[0]
    assert segment.states.shape == (3, 16, 4) and segment.continuous
    assert set(result.trainer.history[-1]) >= {"mse", "se"} and result.trainer.history[-1]["mse"] > 0


def test_a_pixel_model_generates_images_and_captions(pixel_run):
    pipe = MDMPipeline.from_pretrained(pixel_run[0])
    assert pipe.vq is None and pipe.continuous_images
    sampler = SamplerConfig(steps=3)
    images = pipe.class_to_image([1, 7], sampler, seed=0)
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, pipe.class_to_image([1, 7], sampler, seed=0))
    patches = pipe.encode_images(images)
    assert patches.shape == (2, 16, 4) and torch.equal(pipe.decode_images(patches), images)  # exact inverses
    captions = pipe.image_to_text(images, sampler, seed=0)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_pixel_path_errors(pixel_run):
    pipe = MDMPipeline.from_pretrained(pixel_run[0])
    with pytest.raises(ValueError, match=r"patches must be \(batch, 16, 4\)"):
        pipe.decode_images(torch.zeros(2, 16, dtype=torch.long))  # VQ ids to a pixel model
    with pytest.raises(ValueError, match=r"images must be \(batch, 1, 8, 8\)"):
        pipe.encode_images(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="layout.patch_size must be 1"):
        load_config("tiny", ["layout.image_tokens=pixels", "layout.patch_size=2"])
    with pytest.raises(ConfigError, match=r"layout.image_tokens: 'latents' is not one of \['vq', 'pixels'\]"):
        load_config("tiny", ["layout.image_tokens=latents"])


def test_a_pixel_video_model_samples_clips(tmp_path):
    video = ["backbone.kind=bimamba2", "backbone.scan_patterns=13/1", "layout.frames=3", "layout.image_channels=1",
             "layout.image_tokens=pixels", "data.name=moving-digits", "data.train_size=8", "data.vocab_size=48",
             "train.batch_size=2", "train.steps=1", "train.task_weights={class_to_image: 1.0, text_to_image: 1.0}"]
    train_run(load_config("tiny", video), tmp_path / "run", **QUIET)
    pipe = MDMPipeline.from_pretrained(tmp_path / "run")
    clips = pipe.class_to_video([3], SamplerConfig(steps=2), seed=0)
    assert clips.shape == (1, 3, 1, 16, 16)
    assert pipe.encode_images(clips).shape == (1, 3 * 16, 16)  # 4 px patches, frame-major
