"""``mdm demo``: a checkpoint's tasks on a local web page (Gradio, the ``demo`` extra)."""

from __future__ import annotations

import argparse
import os

from mdm.cli.common import set_threads


def cmd_demo(args: argparse.Namespace) -> int:
    """Check the address and Gradio before loading the model (a mistake costs no wait), then serve until
    Ctrl-C."""
    from mdm.demo.app import check_host, require_gradio

    check_host(args.host, args.allow_remote)
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo tells no one it ran
    require_gradio()

    from mdm.demo.actions import DemoSession
    from mdm.demo.app import build_app, serve
    from mdm.pipeline import MDMPipeline

    set_threads(args)
    pipe = MDMPipeline.from_pretrained(args.checkpoint, use_ema=not args.raw_weights, device=args.device)
    session = DemoSession(pipe, max_upload_mb=args.max_upload_mb)
    app = build_app(session, name=str(args.checkpoint))
    url = serve(app, args.host, args.port, args.allow_remote, args.max_upload_mb)
    for task, reason in session.refusals.items():
        print(f"no {task.value} tab: {reason}")
    print(f"MDM demo of {args.checkpoint} on {url} (Ctrl-C stops it)", flush=True)
    try:
        app.block_thread()
    finally:
        app.close()
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """``mdm demo`` and its options (kept here, beside the command, so the shared parser gains two lines)."""
    from mdm.demo.actions import DEFAULT_MAX_UPLOAD_MB
    from mdm.demo.app import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("demo", help="a local web page with the checkpoint's tasks (needs the demo extra: "
                                    "pip install -e \".[demo]\")")
    p.add_argument("--checkpoint", required=True, help="a run folder (its checkpoint/) or a checkpoint folder")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to serve on (default {DEFAULT_HOST}: this machine only; any other needs "
                        f"--allow-remote)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other machines can reach (the page has no login)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest image upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--raw-weights", action="store_true", help="use the trained weights instead of the EMA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_demo)
