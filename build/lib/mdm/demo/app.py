"""The demo's web page: a Gradio tab for every task the checkpoint can do, served on this machine only.

Gradio is an optional extra (``pip install -e ".[demo]"``) and is imported only when a page is
built, so the rest of MDM neither needs it nor pays for its import. The page holds the sampler's
steps, guidance scale and seed above the tabs; each button runs one :class:`~mdm.demo.actions.DemoSession`
method with a progress bar fed by the sampler's per-step hook, and shows a refused input as a message
(``gr.Error``), never a traceback. Tasks the checkpoint cannot do get no tab; the page lists them with
the reason.

The server binds to 127.0.0.1 by default: anyone who reaches the port can run the model and upload
files, and there is no login. :func:`check_host` refuses any other address unless asked explicitly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mdm.demo.actions import MAX_IMAGES, TASK_TITLES, DemoSession
from mdm.tasks import Task

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
INSTALL_HINT = 'pip install -e ".[demo]" (or pip install "mdm[demo]")'
_MODEL = "model"  # one concurrency group for every button: one sampling at a time, the rest wait in line


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse to serve on an address other machines can reach unless ``allow_remote`` says it is meant."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"--host {host} would let other machines use the demo (no login; every visitor can run "
                         f"the model and upload files): pass --allow-remote to serve it there on purpose, or "
                         f"leave --host at {DEFAULT_HOST}")


def require_gradio() -> ModuleType:
    """The ``gradio`` module, or a ModuleNotFoundError that says how to install it in one line."""
    try:
        import gradio
    except ModuleNotFoundError as err:
        missing = "Gradio" if err.name in (None, "gradio") else f"Gradio's dependency {err.name}"
        raise ModuleNotFoundError(f"mdm demo needs {missing}, an optional extra: {INSTALL_HINT}") from err
    return gradio


def _shown(gr: ModuleType, progress: Any, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` with its sampling steps on the page's progress bar; a refused input becomes the page's
    error message (ValueError and OSError are what a person's input can cause; anything else is a bug and
    keeps its traceback, in the server's log)."""
    def on_step(done: int, total: int) -> None:
        progress((done, total), desc="sampling", unit="steps")

    try:
        return fn(*args, on_step=on_step)
    except (ValueError, OSError) as err:
        raise gr.Error(" ".join(str(err).split()) or type(err).__name__, print_exception=False) from None


def _text_to_image_tab(gr: ModuleType, session: DemoSession, settings: list) -> None:
    prompt = gr.Textbox(label="prompt", placeholder="a large red circle on the left", elem_id="t2i-prompt")
    n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images")
    button = gr.Button("Generate", variant="primary", elem_id="t2i-run")
    gallery = gr.Gallery(label="generated images", columns=4, format="png", elem_id="t2i-gallery")

    def run(prompt: str, n: float, steps: float, guidance: float, seed: float, progress=gr.Progress()):
        return _shown(gr, progress, session.text_to_image, prompt, n, steps, guidance, seed)

    button.click(run, [prompt, n, *settings], gallery, concurrency_id=_MODEL)


def _class_to_image_tab(gr: ModuleType, session: DemoSession, settings: list) -> None:
    n_classes = session.pipe.config.backbone.n_classes
    label = gr.Number(value=0, precision=0, minimum=0, maximum=n_classes - 1, label=f"class (0-{n_classes - 1})",
                      elem_id="c2i-label")
    n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images")
    button = gr.Button("Generate", variant="primary", elem_id="c2i-run")
    gallery = gr.Gallery(label="generated images", columns=4, format="png", elem_id="c2i-gallery")

    def run(label: float, n: float, steps: float, guidance: float, seed: float, progress=gr.Progress()):
        return _shown(gr, progress, session.class_to_image, label, n, steps, guidance, seed)

    button.click(run, [label, n, *settings], gallery, concurrency_id=_MODEL)


def _upload(gr: ModuleType, session: DemoSession, prefix: str) -> Any:
    return gr.File(label=f"image (at most {session.max_upload_mb:g} MB)", file_types=["image"], type="filepath",
                   elem_id=f"{prefix}-upload")


def _caption_tab(gr: ModuleType, session: DemoSession, settings: list) -> None:
    upload = _upload(gr, session, "caption")
    button = gr.Button("Caption", variant="primary", elem_id="caption-run")
    with gr.Row():
        seen = gr.Image(label="what the model sees", type="pil", interactive=False, elem_id="caption-seen")
        caption = gr.Textbox(label="caption", interactive=False, elem_id="caption-text")

    def run(upload: str, steps: float, guidance: float, seed: float, progress=gr.Progress()):
        return _shown(gr, progress, session.caption, upload, steps, guidance, seed)

    button.click(run, [upload, *settings], [seen, caption], concurrency_id=_MODEL)


def _vqa_tab(gr: ModuleType, session: DemoSession, settings: list) -> None:
    upload = _upload(gr, session, "vqa")
    question = gr.Textbox(label="question", placeholder="what color is the circle?", elem_id="vqa-question")
    button = gr.Button("Answer", variant="primary", elem_id="vqa-run")
    with gr.Row():
        seen = gr.Image(label="what the model sees", type="pil", interactive=False, elem_id="vqa-seen")
        answer = gr.Textbox(label="answer", interactive=False, elem_id="vqa-answer")

    def run(upload: str, question: str, steps: float, guidance: float, seed: float, progress=gr.Progress()):
        return _shown(gr, progress, session.vqa, upload, question, steps, guidance, seed)

    button.click(run, [upload, question, *settings], [seen, answer], concurrency_id=_MODEL)


def _text_to_text_tab(gr: ModuleType, session: DemoSession, settings: list) -> None:
    scene = gr.Textbox(label="scene", placeholder="a small blue square at the top", elem_id="t2t-scene")
    question = gr.Textbox(label="question", placeholder="where is the square?", elem_id="t2t-question")
    button = gr.Button("Answer", variant="primary", elem_id="t2t-run")
    answer = gr.Textbox(label="answer", interactive=False, elem_id="t2t-answer")

    def run(scene: str, question: str, steps: float, guidance: float, seed: float, progress=gr.Progress()):
        return _shown(gr, progress, session.text_to_text, scene, question, steps, guidance, seed)

    button.click(run, [scene, question, *settings], answer, concurrency_id=_MODEL)


def _joint_tab(gr: ModuleType, session: DemoSession, settings: list) -> None:
    n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="image + caption pairs")
    button = gr.Button("Generate", variant="primary", elem_id="joint-run")
    gallery = gr.Gallery(label="images with their captions", columns=4, format="png", elem_id="joint-gallery")

    def run(n: float, steps: float, guidance: float, seed: float, progress=gr.Progress()):
        return _shown(gr, progress, session.joint, n, steps, guidance, seed)

    button.click(run, [n, *settings], gallery, concurrency_id=_MODEL)


_TABS: dict[Task, Callable[[ModuleType, DemoSession, list], None]] = {
    Task.TEXT_TO_IMAGE: _text_to_image_tab, Task.CLASS_TO_IMAGE: _class_to_image_tab, Task.IMAGE_TO_TEXT: _caption_tab,
    Task.VQA: _vqa_tab, Task.TEXT_TO_TEXT: _text_to_text_tab, Task.JOINT: _joint_tab,
}


def build_app(session: DemoSession, name: str = "") -> Any:
    """The page (a ``gr.Blocks``) for ``session``: sampler settings, one tab a task, the refused tasks listed.

    ``name`` (the checkpoint's folder) heads the page, so a screenshot says which model it shows.
    """
    gr = require_gradio()
    with gr.Blocks(title="MDM demo", analytics_enabled=False) as app:
        gr.Markdown(f"# MDM demo\n{f'`{name}`: ' if name else ''}"
                    f"{', '.join(TASK_TITLES[t] for t in session.tasks) or 'no task'}", elem_id="header")
        if session.refusals:
            gr.Markdown("\n".join(f"- **{TASK_TITLES[t]}** is not available: {reason}"
                                  for t, reason in session.refusals.items()), elem_id="refused")
        with gr.Row():
            settings = [gr.Slider(1, 200, value=20, step=1, label="sampler steps", elem_id="steps"),
                        gr.Slider(0, 10, value=1.0, step=0.25, label="guidance (1 = conditional, >1 = guided)",
                                  elem_id="guidance"),
                        gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="seed")]
        with gr.Tabs():
            for task in session.tasks:
                with gr.Tab(TASK_TITLES[task], id=task.value, elem_id=f"tab-{task.value}"):
                    _TABS[task](gr, session, settings)
    return app


def serve(app: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_remote: bool = False,
          max_upload_mb: float | None = None) -> str:
    """Start serving ``app`` on ``host``:``port`` (checked by :func:`check_host`) in a thread; its URL.

    Gradio refuses bigger uploads itself (``max_upload_mb``) before they reach a button. The server runs
    until the process ends; ``app.block_thread()`` waits for Ctrl-C, ``app.close()`` stops it.
    """
    check_host(host, allow_remote)
    max_file_size = None if max_upload_mb is None else int(max_upload_mb * 2**20)
    app.queue(default_concurrency_limit=1)
    _, url, _ = app.launch(server_name=host, server_port=port, max_file_size=max_file_size, quiet=True,
                           prevent_thread_lock=True, footer_links=[])
    return url
