"""sklearn handwritten digits as a class-conditional dataset (mdm.data.digits)."""

import numpy as np
import pytest
import torch

from mdm.data.digits import DigitsDataset, digit_caption, load_digit_arrays, split_indices
from mdm.data.sample import Role


@pytest.mark.parametrize("image_size, channels", [(8, 1), (16, 3), (32, 1)])
def test_sample_shapes_range_and_caption(image_size, channels):
    ds = DigitsDataset("val", image_size=image_size, channels=channels)
    s = ds[0]
    assert s.image.shape == (channels, image_size, image_size) and s.image.dtype == torch.float32
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert float(ds.images.max()) > 0.9  # full ink survives the resize
    assert s.text(Role.CAPTION) == digit_caption(s.label)
    assert ds.labels.min() >= 0 and ds.labels.max() <= 9
    if channels == 3:
        assert torch.equal(s.image[0], s.image[1]) and torch.equal(s.image[0], s.image[2])


def test_caption_words():
    assert digit_caption(7) == "the digit seven" and digit_caption(0) == "the digit zero"
    with pytest.raises(ValueError, match="must be in"):
        digit_caption(10)


def test_splits_disjoint_cover_everything_and_are_stratified():
    _, labels = load_digit_arrays()
    parts = {s: split_indices(labels, s, seed=0) for s in ("train", "val", "test")}
    all_idx = np.concatenate(list(parts.values()))
    assert len(all_idx) == len(set(all_idx.tolist())) == len(labels)
    for name, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        counts = np.bincount(labels[parts[name]], minlength=10)
        expected = frac * np.bincount(labels)
        assert np.all(np.abs(counts - expected) <= 1), name  # every class in every split, in proportion


def test_deterministic_by_seed_and_seed_changes_the_split():
    a, b = DigitsDataset("test", seed=3), DigitsDataset("test", seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a[5].meta == b[5].meta
    c = DigitsDataset("test", seed=4)
    assert not np.array_equal(a.indices, c.indices)


def test_native_size_is_the_raw_data():
    images, labels = load_digit_arrays()
    ds = DigitsDataset("train", image_size=8)
    i = 11
    assert torch.equal(ds[i].image[0], torch.from_numpy(images[ds[i].meta["index"]]))
    assert ds[i].label == labels[ds[i].meta["index"]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size must be one of"):
        DigitsDataset(image_size=12)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        DigitsDataset(channels=2)
    with pytest.raises(ValueError, match="'holdout' is not a valid Split"):
        DigitsDataset("holdout")
    with pytest.raises(IndexError, match="items"):
        DigitsDataset("val")[10_000]
