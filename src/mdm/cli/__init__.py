"""The ``mdm`` command line: glue only. Each subcommand resolves a config and calls one library function.

:mod:`mdm.cli.parser` declares the commands; their bodies sit by group in
:mod:`~mdm.cli.info` (info, bench), :mod:`~mdm.cli.data` (data, tokenizer, vq),
:mod:`~mdm.cli.train` (quickstart, train) and :mod:`~mdm.cli.sample` (sampling and evaluation).
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
    """The command's exit code; the errors a user can cause become a message and code 2."""
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"mdm: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
        print(f"mdm: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"mdm: error: {e}", file=sys.stderr)
        return 2
