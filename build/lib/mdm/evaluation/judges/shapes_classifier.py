"""A ShapesWorld scene parser trained by the project: the feature network of ShapesWorld's FID.

The referee (:mod:`mdm.evaluation.judges.referee`) reads scenes analytically but has no feature
space, and FID / precision / recall need one. This CNN learns, from rendered
training scenes, what each of the nine grid cells holds: nothing, or one of the
colour x shape x size objects. Its penultimate layer is a feature space in which
scenes that differ in content are far apart, which is what a generation metric
needs. Seeded; trains in about a minute on a CPU at 16 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdm.data.shapesworld import COLORS, POSITIONS, ShapesWorld, ShapesWorldConfig
from mdm.evaluation.image_quality import FeatureNetwork, judge_training_threads


def cell_classes(config: ShapesWorldConfig) -> list[tuple[str, str, str] | None]:
    """The classes of one cell: ``None`` (empty) and every (colour, shape, size) the data can draw."""
    return [None] + [(c, s, z) for c in config.colors for s in config.shapes for z in config.sizes]


def cell_targets(objects: list[dict], classes: list) -> Tensor:
    """The class index of each of the 9 cells for one scene's ``meta["objects"]``."""
    target = torch.zeros(len(POSITIONS), dtype=torch.long)
    for obj in objects:
        target[POSITIONS.index(obj["position"])] = classes.index((obj["color"], obj["shape"], obj["size"]))
    return target


class ShapesClassifier(FeatureNetwork):
    """Per-cell logits (b, 9, K) over :func:`cell_classes`; ``embed`` gives 128-d scene features."""

    name = "shapes-cnn (project-trained on ShapesWorld renders)"
    num_features = 128

    def __init__(self, image_size: int, n_classes: int) -> None:
        super().__init__()
        self.image_size, self.n_classes = image_size, n_classes
        # An 8 x 8 map keeps where things are (a cell is a third of the image); global pooling would not.
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(8), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * 64, 128), nn.ReLU())
        self.head = nn.Linear(128, len(POSITIONS) * n_classes)

    def embed(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != self.image_size:
            raise ValueError(f"ShapesClassifier: expected RGB images (b, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        return self.body(images.float())

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.embed(images)).view(-1, len(POSITIONS), self.n_classes)


def _render_split(split: str, n: int, config: ShapesWorldConfig, classes: list, seed: int) -> tuple[Tensor, Tensor]:
    ds = ShapesWorld(split, n, config, seed=seed)
    samples = [ds[i] for i in range(n)]
    return (torch.stack([s.image for s in samples]),
            torch.stack([cell_targets(s.meta["objects"], classes) for s in samples]))


def train_shapes_classifier(image_size: int = 16, n_train: int = 4000, steps: int = 1500, seed: int = 0,
                            config: ShapesWorldConfig | None = None) -> tuple[ShapesClassifier, float]:
    """Train on rendered train scenes; returns the network and its held-out accuracy (all 9 cells right)."""
    config = config or ShapesWorldConfig(image_size=image_size)
    classes = cell_classes(config)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, targets = _render_split("train", n_train, config, classes, seed)
    model = ShapesClassifier(image_size, len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    with judge_training_threads():
        for _ in range(steps):
            idx = torch.randint(n_train, (64,), generator=generator)
            noisy = (images[idx] + 0.05 * torch.randn(images[idx].shape, generator=generator)).clamp(0, 1)
            loss = F.cross_entropy(model(noisy).flatten(0, 1), targets[idx].flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test_images, test_targets = _render_split("test", 500, config, classes, seed)
    with torch.no_grad():
        accuracy = float((model(test_images).argmax(-1) == test_targets).all(-1).float().mean())
    return model, accuracy
