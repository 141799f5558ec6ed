"""A digit classifier trained on the real digits: the judge of class-conditional Digits generation.

Table 1's class->image row needs a recogniser of the generated images, and no
hub network is available offline, so the project trains its own: a small CNN
on scikit-learn's bundled digits (train split), reported on the held-out test
split. Training is seeded, runs on one thread (``judge_training_threads``: the
same judge at every ``--threads``) and takes seconds on a CPU. Light augmentation
(one-pixel shifts, pixel noise) makes it judge shapes, not the exact pixel
statistics of the real scans.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdm.data.digits import DigitsDataset
from mdm.evaluation.image_quality import FeatureNetwork, judge_training_threads


class DigitClassifier(FeatureNetwork):
    """Logits over the 10 digits; its 128-d penultimate layer is the feature space of FID and precision/recall."""

    name = "digit-cnn (project-trained on the real digits)"
    num_features = 128
    has_classes = True

    def __init__(self, image_size: int = 8) -> None:
        super().__init__()
        self.image_size = image_size
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, images: Tensor) -> Tensor:
        """Logits (b, 10) for images (b, c, s, s) in [0, 1] (colour is averaged to grey)."""
        return self.features(self._grey(images))

    def embed(self, images: Tensor) -> Tensor:
        """The 128-d features before the last layer."""
        return self.features[:-1](self._grey(images))

    def _grey(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"DigitClassifier: expected images (b, c, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        return images.float().mean(1, keepdim=True)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        self.eval()
        return self(images).argmax(-1)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image shifted by up to one pixel each way (zeros enter, nothing wraps), plus pixel noise."""
    b, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, b), generator=generator)
    shifted = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    return (shifted + 0.1 * torch.randn(shifted.shape, generator=generator)).clamp(0, 1)


def train_digit_classifier(image_size: int = 8, steps: int = 1500, seed: int = 0) -> tuple[DigitClassifier, float]:
    """Train on the real digits' train split; returns the classifier and its held-out test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train, test = DigitsDataset("train", image_size, seed=seed), DigitsDataset("test", image_size, seed=seed)
    model = DigitClassifier(image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    with judge_training_threads():
        for _ in range(steps):
            idx = torch.randint(len(train), (64,), generator=generator)
            loss = F.cross_entropy(model(_augment(train.images[idx], generator)), train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    accuracy = float((model.predict(test.images) == test.labels).float().mean())
    return model.eval(), accuracy
