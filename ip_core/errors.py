"""Error types. Every message names the problem and the remedy in host-neutral words (a file, an adapter, an
image encoder): the trainer shows them as-is, the ComfyUI nodes append advice about nodes and model folders.

Entry points (the CLI commands, each node) have one boundary: an IPAdapterError is an expected failure and is
shown as it is; anything else is a bug, reported in one short line while its traceback goes to a log file
(log_unexpected), so users see what to do and maintainers get what they need.
"""
from __future__ import annotations

import datetime
import os
import tempfile
import traceback
from pathlib import Path
from typing import Optional

# Exit codes of every command line (python -m ip_core, python -m nodes.migrate, python -m trainer): one table.
EXIT_OK = 0
EXIT_FAILED = 1  # an expected failure: the message names the problem and the remedy
EXIT_USAGE = 2  # a bad command line (argparse's own code)
EXIT_INTERNAL = 3  # unexpected: a bug; one line on stderr, the traceback in the log file it names
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention)

LOG_DIR_ENV = "IPADAPTER_LOG_DIR"  # where log_unexpected writes; the system temp folder by default
LOG_NAME = "ipadapter-errors.log"


class IPAdapterError(Exception):
    """Base class for every error ip_core raises on purpose."""


class AdapterFileError(IPAdapterError):
    """A file that cannot be read safely: missing, empty, truncated, unsafe pickle, not an adapter, wrong shapes."""


class ForeignFileError(AdapterFileError):
    """A readable weights file of another kind (a CLIP vision model, a checkpoint, a LoRA...) where an adapter
    was expected. `kind` is a key of ip_core.checkpoint.FOREIGN_KINDS, so a host can say where it belongs."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class UnsupportedAdapterError(IPAdapterError):
    """A readable adapter of a family this package does not implement (FaceID) or an unknown layout."""


class AdapterMismatchError(IPAdapterError):
    """Two things that must fit do not: adapter vs image encoder, adapter vs base model, embeds vs adapter."""


def log_unexpected(exc: BaseException, where: str, log_dir: Optional[str] = None) -> Optional[Path]:
    """Append `exc`'s traceback to ipadapter-errors.log (in log_dir, $IPADAPTER_LOG_DIR or the temp folder).

    Returns the log's path, or None when it cannot be written (the short message then says so).
    """
    path = Path(log_dir or os.environ.get(LOG_DIR_ENV) or tempfile.gettempdir()) / LOG_NAME
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {stamp} {where}\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}\n")
    except OSError:
        return None
    return path


def unexpected_message(where: str, exc: BaseException, log_path: Optional[Path]) -> str:
    """One line for an unexpected failure: what broke, that it is a bug, and where its traceback is."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    where_log = f"the traceback is in {log_path}" if log_path else "the traceback could not be written to a log file"
    return (
        f"{where}: unexpected internal error ({type(exc).__name__}{': ' + detail if detail else ''}). This is a bug in "
        f"the IP-Adapter code, not something to fix in your input; {where_log}. Please report it with that file."
    )


def check_choice(value, what: str, choices, error: type = None):
    """`value` when it is one of `choices`; else `error` (IPAdapterError) naming it and the choices, as every
    choice input of the pack refuses an unknown value (a workflow edited by hand, an old or foreign value)."""
    if value not in choices:
        raise (error or IPAdapterError)(f"unknown {what} {value!r}; use one of {', '.join(map(str, choices))}.")
    return value
