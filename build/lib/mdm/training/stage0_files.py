"""Stage 0's files in a run folder (``tokenizer/``, ``vq/``): written atomically, reused only by a matching config.

A run trains its tokenizers once and a later run in the same folder (a resumed
one, or one restarted after a kill before its first checkpoint) loads them, so
the ids a checkpoint was trained on never change under it. Two things can go
wrong with that reuse, and both are refused here:

* a half-written file: each folder is written beside its final name as
  ``NAME.saving`` and renamed into place once every file is on disk (as
  :func:`mdm.checkpoint.save_checkpoint` does), so a kill leaves either no
  ``NAME/`` or a whole one. A file that is damaged anyway is named in the error.
* another config's tokenizers: each folder records in ``stage0.json`` the
  settings that made it (every ``data.*`` key but the text lengths, which are
  applied after tokenizing, and every ``layout.*`` key: a mixture's sources too).
  A folder made with other settings is refused with the differing keys named; a
  key added to the config since the folder was made counts at the value the old
  code behaved as (:data:`mdm.config.sections.ADDED_FIELDS`; ``data.sources``
  empty: one source).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from mdm.checkpoint import fsync_dir, fsync_files
from mdm.config import MDMConfig, to_dict
from mdm.config.files import added_keys

STAGE0_RECORD = "stage0.json"
# Keys that change nothing the tokenizers learn: the text lengths cut the tokenized texts afterwards.
UNRECORDED_KEYS = ("data.text_lens",)
T = TypeVar("T")


class Stage0Error(ValueError):
    """A run folder's stage-0 file that cannot be reused: damaged, or made by other settings."""


def stage0_settings(config: MDMConfig) -> dict[str, Any]:
    """The ``section.key -> value`` settings that determine stage 0's tokenizers."""
    full = to_dict(config)
    return {f"{section}.{key}": value for section in ("data", "layout") for key, value in full[section].items()
            if f"{section}.{key}" not in UNRECORDED_KEYS}


def _remedy(folder: Path) -> str:
    return (f"delete {folder} to train it again with these settings, or choose another --out "
            f"(a run folder keeps the tokenizers its checkpoint was trained with)")


def check_settings(folder: Path, config: MDMConfig, trusted: bool = False) -> None:
    """Refuse stage-0 folder ``folder`` unless its ``stage0.json`` records the settings of ``config``.

    ``trusted``: the folder belongs to a checkpoint whose config the caller has already matched (a resumed
    run), so a folder written before settings were recorded is accepted.
    """
    path = folder / STAGE0_RECORD
    if not path.is_file():
        if trusted:
            return
        raise Stage0Error(f"{folder} does not record the settings that made it (no {STAGE0_RECORD}: an older MDM "
                          f"wrote it), so it may belong to another config; {_remedy(folder)}")
    try:
        saved = json.loads(path.read_text())["settings"]
        # a key added since the folder was made: it was made as the key's old value behaves
        saved = {**{k: v for k, v in added_keys().items() if k in stage0_settings(config)}, **saved}
    except (ValueError, KeyError, TypeError) as e:
        raise Stage0Error(f"{path} is damaged ({e}); {_remedy(folder)}") from None
    requested = stage0_settings(config)
    saved = {**{k: v for k, v in stage0_settings(MDMConfig()).items() if k not in saved}, **saved}
    diff = [f"{k}: {requested.get(k)!r} != {saved.get(k)!r}" for k in sorted(set(requested) | set(saved))
            if requested.get(k) != saved.get(k)]
    if diff:
        raise Stage0Error(f"{folder} was made with other settings (requested != saved): {'; '.join(diff)}; "
                          f"{_remedy(folder)}")


def load_stage0(folder: Path, config: MDMConfig, load: Callable[[Path], T], files: tuple[str, ...],
                trusted: bool = False) -> T:
    """``load(folder)`` after :func:`check_settings`; any failure to read is a :class:`Stage0Error` naming the
    file among ``files`` that is damaged (missing, empty, or the one the loader names)."""
    check_settings(folder, config, trusted)
    for name in files:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            raise Stage0Error(f"{path} is missing or empty; {_remedy(folder)}")
    try:
        return load(folder)
    except Exception as e:  # noqa: BLE001 - safetensors, SentencePiece and JSON each raise their own types
        # a record the loader cannot parse is the first file (a config); anything else is the data file, last
        where = folder / (files[0] if isinstance(e, json.JSONDecodeError) else files[-1])
        raise Stage0Error(f"{where} cannot be read: it is damaged or truncated ({type(e).__name__}: "
                          f"{' '.join(str(e).split())}); {_remedy(folder)}") from None


def save_stage0(folder: Path, config: MDMConfig, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into ``FOLDER.saving`` with the settings record, then rename it to ``folder`` whole."""
    tmp = folder.with_name(folder.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / STAGE0_RECORD).write_text(json.dumps({"settings": stage0_settings(config)}, indent=1) + "\n")
        fsync_files(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():  # only a folder that was refused and deleted is retrained; be safe if one reappeared
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    fsync_dir(folder.parent)


def clear_interrupted(run_folder: Path) -> None:
    """Remove the ``*.saving`` folders a killed stage 0 left behind: they were never published."""
    for name in ("tokenizer", "vq"):
        shutil.rmtree(run_folder / f"{name}.saving", ignore_errors=True)
