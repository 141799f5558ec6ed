"""``mdm demo``: a local web page for the tasks of one checkpoint (Gradio, an optional extra).

:mod:`mdm.demo.actions` holds what the buttons do (checked inputs, PIL images and strings out,
no web framework); :mod:`mdm.demo.app` lays them out as a Gradio page and serves it on
127.0.0.1 unless another address is asked for explicitly.
"""

from mdm.demo.actions import DemoInputError, DemoSession, read_upload, task_refusals
from mdm.demo.app import build_app, check_host, require_gradio, serve

__all__ = ["DemoInputError", "DemoSession", "build_app", "check_host", "read_upload", "require_gradio", "serve",
           "task_refusals"]
