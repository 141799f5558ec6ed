"""The ``mdm`` command line: glue only. Each subcommand resolves a config and calls one library function.

:mod:`mdm.cli.parser` declares the commands; their bodies sit by group in
:mod:`~mdm.cli.info` (info, bench), :mod:`~mdm.cli.data` (data, tokenizer, vq),
:mod:`~mdm.cli.train` (quickstart, train) and :mod:`~mdm.cli.sample` (sampling and evaluation).
``mdm demo`` (a local web page) sits in :mod:`~mdm.cli.demo` with its options.
"""

from __future__ import annotations

import argparse
import sys

from mdm.cli.parser import build_parser
from mdm.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a trailing KEY=VALUE list only when it comes right after the other positionals;
    # KEY=VALUE words after an option (``preview shapesworld --out x.png data.level=easy``) join it here
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    code = _run(args)
    from mdm.training.distributed import DistributedContext

    if DistributedContext.launched():  # a torchrun worker, whatever its outcome
        DistributedContext.close_env()
        DistributedContext.exit_worker(code)  # does not return
    return code


def _run(args: argparse.Namespace) -> int:
    """The command's exit code: an error a user can cause becomes one line naming the file or key, and code 2.

    A user's errors are the config's, the files' (missing, unreadable, not what they claim to be, a folder
    another process holds) and the values' (``ValueError``, which the library raises with the file or key
    named). Anything else is a bug in MDM and keeps its traceback; ``--debug`` keeps every traceback.
    """
    from mdm.training.run_lock import RunFolderLockedError

    if getattr(args, "debug", False):
        return args.func(args)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"mdm: config error: {_one_line(e)}", file=sys.stderr)
    except (OSError, ModuleNotFoundError, ValueError, RunFolderLockedError) as e:
        print(f"mdm: error: {_one_line(e)}", file=sys.stderr)
    return 2


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (an error without a message says its type)."""
    return " ".join(str(error).split()) or type(error).__name__
