"""What the demo's buttons do, without a web framework: checked inputs in, PIL images and strings out.

:class:`DemoSession` wraps one :class:`~mdm.pipeline.MDMPipeline` and runs its tasks the way a
web page asks for them: with the sampler's steps, guidance scale and seed, a per-step progress
callback, uploads read from a file path, and every input a person can get wrong refused with a
:class:`DemoInputError` whose message the page shows as it is. The page itself (:mod:`mdm.demo.app`)
only lays these calls out; keeping them here lets them be tested without a browser or Gradio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from mdm.data.formats import load_image
from mdm.diffusion.sampling import SamplerConfig
from mdm.pipeline import MDMPipeline
from mdm.tasks import Task

DEFAULT_MAX_UPLOAD_MB = 10.0
# A small PNG can declare a huge canvas (a "decompression bomb"); the header is read before any pixel.
MAX_UPLOAD_PIXELS = 4096 * 4096
DISPLAY_SIDE = 192  # generated images are a few dozen pixels: shown enlarged, pixel for pixel
MAX_IMAGES = 8  # images a click may ask for: more would keep a CPU busy for minutes

TASK_TITLES: dict[Task, str] = {
    Task.TEXT_TO_IMAGE: "text → image",
    Task.CLASS_TO_IMAGE: "class → image",
    Task.IMAGE_TO_TEXT: "caption an image",
    Task.VQA: "visual question answering",
    Task.TEXT_TO_TEXT: "text → text",
    Task.JOINT: "image + caption together",
}
_IMAGE_TASKS = (Task.TEXT_TO_IMAGE, Task.CLASS_TO_IMAGE, Task.IMAGE_TO_TEXT, Task.VQA, Task.JOINT)
_TEXT_TASKS = (Task.TEXT_TO_IMAGE, Task.IMAGE_TO_TEXT, Task.VQA, Task.TEXT_TO_TEXT, Task.JOINT)

StepCallback = Callable[[int, int], None]


class DemoInputError(ValueError):
    """Input the page refuses, with the message it shows (a ValueError, so the CLI's one-line rule holds too)."""


def task_refusals(pipe: MDMPipeline) -> dict[Task, str]:
    """Every task ``pipe`` cannot do, with the reason in words; the tasks absent from it get a tab.

    A checkpoint that never trained a task still returns something for it, so a task it did not train is
    refused as firmly as one its model has no parts for (no text tokenizer, no class labels, video only).
    """
    refusals = {}
    for task in Task:
        try:
            pipe.require_trained(task)
        except ValueError as err:
            refusals[task] = str(err)
            continue
        if pipe.is_video and task in _IMAGE_TASKS:
            refusals[task] = (f"this is a video checkpoint ({pipe.frames} frames a clip) and the demo shows still "
                              f"images; draw clips with mdm sample --video")
        elif task is Task.CLASS_TO_IMAGE and pipe.config.backbone.n_classes == 0:
            refusals[task] = "this model has no class labels (backbone.n_classes = 0)"
        elif task in _TEXT_TASKS and pipe.tokenizer is None:
            refusals[task] = "this model has no text tokenizer"
    return refusals


def to_pil(image: Tensor, side: int = DISPLAY_SIDE) -> Image.Image:
    """A (c, s, s) image in [0, 1] as an 8-bit PIL image enlarged by a whole factor to about ``side`` pixels
    (nearest neighbour: a 16 px image stays sharp and shows the pixels the model drew)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, "L" if array.shape[-1] == 1 else "RGB")
    factor = max(1, side // max(im.size))
    return im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)


def read_upload(path: str | Path | None, image_size: int, channels: int,
                max_mb: float = DEFAULT_MAX_UPLOAD_MB) -> Tensor:
    """An uploaded file as the model's (c, s, s) input in [0, 1], or a :class:`DemoInputError` that says why
    not: nothing uploaded, a file over ``max_mb`` megabytes or :data:`MAX_UPLOAD_PIXELS` pixels, or a file
    that is not an image PIL can decode (checked before the model sees it, so the page never shows a
    traceback)."""
    if path is None or str(path) == "":
        raise DemoInputError("upload an image first")
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DemoInputError(f"{name}: the upload cannot be read ({err.strerror})") from None
    if size > max_mb * 2**20:
        raise DemoInputError(f"{name} is {size / 2**20:.1f} MB, over the {max_mb:g} MB limit of this demo")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise DemoInputError(f"{name} is not an image (PNG, JPEG, GIF, BMP, WebP or TIFF)") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise DemoInputError(f"{name} is {width}x{height} pixels, over the demo's limit of "
                             f"{MAX_UPLOAD_PIXELS // 10**6} million pixels")
    try:
        image = load_image(path, image_size)  # decodes every pixel: a truncated file fails here
    except OSError:
        raise DemoInputError(f"{name} cannot be decoded as an image (damaged or truncated)") from None
    return image[:1] if channels == 1 else image


def shown_text(text: str) -> str:
    """A generated string as the page shows it: an all-padding one says so instead of showing nothing."""
    return text if text.strip() else "(the model generated an empty text)"


def _checked_text(value: str | None, what: str) -> str:
    if value is None or not str(value).strip():
        raise DemoInputError(f"write {what} first")
    return str(value).strip()


def _checked_int(value: float | int | None, what: str, low: int, high: int) -> int:
    """A whole number from a form field (Gradio's numbers arrive as floats), within [low, high]."""
    try:
        whole = value is not None and float(value) == int(float(value))
    except (TypeError, ValueError, OverflowError):  # a word, NaN or infinity
        whole = False
    if not whole or not low <= int(float(value)) <= high:
        raise DemoInputError(f"{what} must be a whole number from {low} to {high}, got {value}")
    return int(float(value))


class DemoSession:
    """One loaded checkpoint served to a page: the tasks as methods, one sampling at a time.

    Every method takes the sampler's ``steps``, ``guidance`` (classifier-free guidance scale) and ``seed``,
    and ``on_step(done, total)`` to report progress; it returns PIL images enlarged for display and
    strings. A lock keeps two clicks from sampling at once: the model and its progress hook are shared.
    """

    def __init__(self, pipe: MDMPipeline, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
        if not max_upload_mb > 0:
            raise ValueError(f"the upload limit must be > 0 MB, got {max_upload_mb}")
        self.pipe, self.max_upload_mb = pipe, float(max_upload_mb)
        self.refusals = task_refusals(pipe)
        self.tasks = [task for task in TASK_TITLES if task not in self.refusals]
        self._lock = threading.Lock()

    # -- what every task shares ------------------------------------------------
    def _require(self, task: Task) -> None:
        if task in self.refusals:
            raise DemoInputError(f"{TASK_TITLES[task]} is not available: {self.refusals[task]}")

    def _sampler(self, steps: float | int, guidance: float) -> SamplerConfig:
        steps = _checked_int(steps, "steps", 1, 1000)
        try:
            scale = float(guidance)
        except (TypeError, ValueError):
            scale = float("nan")
        if not 0 <= scale <= 100:  # NaN fails too
            raise DemoInputError(f"guidance must be a number from 0 to 100, got {guidance}")
        return SamplerConfig(steps=steps, guidance_scale=scale)

    def _call(self, on_step: StepCallback | None, fn: Callable, *args):
        """``fn(*args)`` with the progress hook set, one call at a time."""
        with self._lock:
            self.pipe.on_step = on_step
            try:
                return fn(*args)
            finally:
                self.pipe.on_step = None

    def _upload(self, path: str | Path | None) -> Tensor:
        layout = self.pipe.config.layout
        return read_upload(path, layout.image_size, layout.image_channels, self.max_upload_mb)[None]

    # -- the tasks -------------------------------------------------------------
    def text_to_image(self, prompt: str, n: int, steps: int, guidance: float, seed: int,
                      on_step: StepCallback | None = None) -> list[Image.Image]:
        """``n`` images drawn for ``prompt``."""
        self._require(Task.TEXT_TO_IMAGE)
        prompt, n = _checked_text(prompt, "a prompt"), _checked_int(n, "the number of images", 1, MAX_IMAGES)
        sampler, seed = self._sampler(steps, guidance), _checked_int(seed, "seed", 0, 2**31 - 1)
        images = self._call(on_step, self.pipe.text_to_image, [prompt] * n, sampler, seed)
        return [to_pil(image) for image in images]

    def class_to_image(self, label: int, n: int, steps: int, guidance: float, seed: int,
                       on_step: StepCallback | None = None) -> list[Image.Image]:
        """``n`` images of class ``label``."""
        self._require(Task.CLASS_TO_IMAGE)
        label = _checked_int(label, "the class", 0, self.pipe.config.backbone.n_classes - 1)
        n = _checked_int(n, "the number of images", 1, MAX_IMAGES)
        sampler, seed = self._sampler(steps, guidance), _checked_int(seed, "seed", 0, 2**31 - 1)
        images = self._call(on_step, self.pipe.class_to_image, [label] * n, sampler, seed)
        return [to_pil(image) for image in images]

    def caption(self, upload: str | Path | None, steps: int, guidance: float, seed: int,
                on_step: StepCallback | None = None) -> tuple[Image.Image, str]:
        """The uploaded image as the model sees it, and its caption."""
        self._require(Task.IMAGE_TO_TEXT)
        image = self._upload(upload)
        sampler, seed = self._sampler(steps, guidance), _checked_int(seed, "seed", 0, 2**31 - 1)
        caption = self._call(on_step, self.pipe.image_to_text, image, sampler, seed)[0]
        return to_pil(image[0]), shown_text(caption)

    def vqa(self, upload: str | Path | None, question: str, steps: int, guidance: float, seed: int,
            on_step: StepCallback | None = None) -> tuple[Image.Image, str]:
        """The uploaded image as the model sees it, and the answer to ``question`` about it."""
        self._require(Task.VQA)
        image, question = self._upload(upload), _checked_text(question, "a question")
        sampler, seed = self._sampler(steps, guidance), _checked_int(seed, "seed", 0, 2**31 - 1)
        answer = self._call(on_step, self.pipe.vqa, image, [question], sampler, seed)[0]
        return to_pil(image[0]), shown_text(answer)

    def text_to_text(self, scene: str, question: str, steps: int, guidance: float, seed: int,
                     on_step: StepCallback | None = None) -> str:
        """The answer to ``question`` about a scene described in words."""
        self._require(Task.TEXT_TO_TEXT)
        scene, question = _checked_text(scene, "a scene"), _checked_text(question, "a question")
        sampler, seed = self._sampler(steps, guidance), _checked_int(seed, "seed", 0, 2**31 - 1)
        return shown_text(self._call(on_step, self.pipe.text_to_text, [scene], [question], sampler, seed)[0])

    def joint(self, n: int, steps: int, guidance: float, seed: int,
              on_step: StepCallback | None = None) -> list[tuple[Image.Image, str]]:
        """``n`` images generated together with their captions."""
        self._require(Task.JOINT)
        n = _checked_int(n, "the number of images", 1, MAX_IMAGES)
        sampler, seed = self._sampler(steps, guidance), _checked_int(seed, "seed", 0, 2**31 - 1)
        images, captions = self._call(on_step, self.pipe.joint, n, sampler, seed)
        return [(to_pil(image), shown_text(caption)) for image, caption in zip(images, captions)]
