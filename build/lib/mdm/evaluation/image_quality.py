"""Image generation quality: FID, IS (through ``torchmetrics``) and precision/recall, on a chosen feature network.

Table 1 of the paper reports FID, IS, precision and recall on Inception-v3
features. Inception's weights cannot be downloaded here, so the feature network is
pluggable (DESIGN.md §7): any :class:`FeatureNetwork` -- a classifier whose
``embed`` gives the features (FID, precision, recall) and whose ``forward`` gives
class logits (IS). The project trains its own on each dataset
(:mod:`mdm.evaluation.judges.digit_classifier`, :mod:`mdm.evaluation.judges.shapes_classifier`),
and every result names the network it used: an FID on one feature network is not
comparable with an FID on another.

* **FID** (Heusel et al. 2017): Fréchet distance between Gaussians fitted to the
  real and generated features, ``torchmetrics.image.fid.FrechetInceptionDistance``
  with ``feature=`` the network's embedding.
* **IS** (Salimans et al. 2016): ``exp E[KL(p(y|x) || p(y))]`` over the classifier's
  softmax, ``torchmetrics.image.inception.InceptionScore``; its upper bound is the
  number of classes.
* **Precision / recall** (Kynkäänniemi et al. 2019): a generated sample is *precise*
  if it falls inside the k-nearest-neighbour ball of some real sample (the balls
  approximate the real manifold); a real sample is *recalled* if it falls inside the
  ball of some generated sample. torchmetrics has no version of these, so they are
  written here (k = 3, as in the paper).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def judge_training_threads() -> Iterator[None]:
    """Train a project-trained judge on one thread, whatever ``--threads`` the evaluation runs at.

    At another thread count a CPU sums in another order, and over 1500 steps the trained
    weights drift apart, and with them the verdicts: the digit CNN scored 99.4% of the
    held-out real digits when trained at one thread and 98.9% at two, so evaluations at
    1 and 2 threads had different judges. On one thread the judge is a function of its seed.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FeatureNetwork(nn.Module):
    """What the metrics need of a feature network: ``embed`` (features) and ``forward`` (logits).

    Subclasses set ``name`` (reported next to every score) and ``num_features``.
    """

    name: str = "feature network"
    num_features: int = 0
    has_classes: bool = False  # forward gives class logits, so the Inception Score is defined

    def embed(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _Precomputed(nn.Module):
    """Features already computed, passed through: torchmetrics' ``feature=`` then fits its Gaussians to them,
    so a set embedded once serves FID and precision/recall alike."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


class InceptionFeatures(FeatureNetwork):
    """Inception-v3 (the paper's feature network) from a weights file on disk, through torchmetrics.

    Needs ``torch-fidelity`` (``pip install torch-fidelity``; it pulls torchvision, which
    this project otherwise avoids) and the FID Inception weights
    (``pt_inception-2015-12-05-6726825d.pth``) at ``weights``: nothing is downloaded.
    Grey images are repeated to three channels; torchmetrics resizes to 299 px.
    """

    name = "inception-v3 (FID weights)"
    num_features = 2048
    has_classes = True

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"Inception weights {weights} do not exist: give the path of the FID Inception "
                                    f"weights file, or use the project's feature network (the default)")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            # Its forward returns only the first requested output: one network per output.
            self.pool = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights))
            self.logits = NoTrainInceptionV3("inception-v3-compat", ["logits_unbiased"], str(weights))
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"the Inception feature network needs torch-fidelity ({e}); install it with "
                                      f"pip install torch-fidelity, or use the project's feature network") from None

    def _uint8(self, images: Tensor) -> Tensor:
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return (images.clamp(0, 1) * 255).round().to(torch.uint8)

    def embed(self, images: Tensor) -> Tensor:
        return self.pool(self._uint8(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.logits(self._uint8(images))


def _torchmetrics_image():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
    except ImportError:
        raise ModuleNotFoundError("FID and IS need torchmetrics: pip install torchmetrics") from None
    return FrechetInceptionDistance, InceptionScore


def _check_images(images: Tensor, what: str) -> None:
    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"{what}: expected a batch of at least 2 images (n, c, h, w), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{what}: expected float images in [0, 1], got {images.dtype}")


def _fid_of_features(real_features: Tensor, generated_features: Tensor) -> float:
    FrechetInceptionDistance, _ = _torchmetrics_image()
    metric = FrechetInceptionDistance(feature=_Precomputed(real_features.shape[1]))
    metric.update(real_features, real=True)
    metric.update(generated_features, real=False)
    return float(metric.compute())


@torch.no_grad()
def frechet_distance(real: Tensor, generated: Tensor, network: FeatureNetwork) -> float:
    """FID between two image sets (n, c, h, w) in [0, 1] on ``network``'s features."""
    _check_images(real, "FID real images")
    _check_images(generated, "FID generated images")
    network.eval()
    return _fid_of_features(_embed(network, real), _embed(network, generated))


@torch.no_grad()
def inception_score(images: Tensor, network: FeatureNetwork, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS (mean, std over ``splits``) of images (n, c, h, w) in [0, 1] on ``network``'s class logits."""
    _check_images(images, "IS images")
    _, InceptionScore = _torchmetrics_image()
    with warnings.catch_warnings():  # "will save all extracted features": a few hundred logits here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = InceptionScore(feature=network.eval(), splits=min(splits, images.shape[0]))
    metric.update(images.float())
    with torch.random.fork_rng(devices=[]):  # compute() shuffles with the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _embed(network: FeatureNetwork, images: Tensor, batch_size: int = 256) -> Tensor:
    """Features of a whole image set, a batch at a time (Inception at 299 px would not fit at once)."""
    return torch.cat([network.embed(chunk.float()) for chunk in images.split(batch_size)])


def _knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance from each feature to its k-th nearest neighbour in the same set (itself excluded)."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


@torch.no_grad()
def precision_recall(real_features: Tensor, generated_features: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of two feature sets (n, d)."""
    for name, f in (("real", real_features), ("generated", generated_features)):
        if f.dim() != 2 or f.shape[0] <= k:
            raise ValueError(f"precision_recall: {name} features must be (n > k={k}, d), got {tuple(f.shape)}")
    real, fake = real_features.double(), generated_features.double()
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    cross = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (cross <= real_radii[None, :]).any(dim=1).double().mean()
    recall = (cross.T <= fake_radii[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


@dataclass
class ImageQuality:
    """The Table 1 scores of a generated set against a real one, on one feature network."""

    feature_network: str
    fid: float
    inception_score: float | None  # None when the network has no classes
    inception_score_std: float | None
    precision: float
    recall: float
    n_real: int
    n_generated: int

    def scores(self) -> dict[str, float]:
        out = {"fid": self.fid, "precision": self.precision, "recall": self.recall}
        if self.inception_score is not None:
            out["inception_score"] = self.inception_score
        return out


@torch.no_grad()
def image_quality(real: Tensor, generated: Tensor, network: FeatureNetwork, k: int = 3,
                  seed: int = 0) -> ImageQuality:
    """FID, IS, precision and recall of ``generated`` against ``real`` on ``network``."""
    _check_images(real, "real images")
    _check_images(generated, "generated images")
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"real images {tuple(real.shape[1:])} and generated images {tuple(generated.shape[1:])} "
                         f"differ in size: they must be rendered at the same resolution")
    network.eval()
    real_features, generated_features = _embed(network, real), _embed(network, generated)
    fid = _fid_of_features(real_features, generated_features)
    is_mean, is_std = inception_score(generated, network, seed=seed) if network.has_classes else (None, None)
    precision, recall = precision_recall(real_features, generated_features, k)
    return ImageQuality(network.name, fid, is_mean, is_std, precision, recall, real.shape[0], generated.shape[0])
