"""`python -m trainer <command>`: train, or run the miniature reproduction (demo).

The error boundary of the trainer: an expected failure (an ip_core / trainer error: bad flag, file, data,
diverged run) is one line naming the problem and the remedy, exit code 1; anything else is one line
pointing to a log file that holds the full traceback, exit code 3; a bad command line 2 (ip_core.errors'
exit codes, shared by every command line). No traceback reaches the terminal.
"""
from __future__ import annotations

import os
import sys

from ip_core.errors import (EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, IPAdapterError,
                            log_unexpected, unexpected_message)

from .demo import main as demo_main
from .train import train
from .train_config import parse_train_args

USAGE = """usage: python -m trainer <command> [flags]

commands:
  train   train an IP-Adapter (flags of the official tutorial_train.py work unchanged; --help for all)
  demo    IP-Adapter reproduction in miniature on the CPU: train, apply, measure (--quick, --help)
"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK if argv else EXIT_USAGE
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        cfg = None
        try:
            cfg = parse_train_args(rest)
            result = train(cfg)
        except IPAdapterError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("interrupted: resume with --resume_from_checkpoint latest", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as e:  # a bug or an environment problem: keep the terminal readable, keep the details
            out = getattr(cfg, "output_dir", None)
            log = log_unexpected(e, "python -m trainer train", out if isinstance(out, str) and os.path.isdir(out) else None)
            print(unexpected_message("python -m trainer train", e, log), file=sys.stderr)
            return EXIT_INTERNAL
        if result.interrupted:
            print(f"stopped by a signal at step {result.global_step}; saved {result.checkpoint_path}. "
                  f"Continue with --resume_from_checkpoint latest", file=sys.stderr)
        print(
            f"done: {result.global_step} steps, {result.samples_seen} samples, {result.skipped_images} unreadable image(s) skipped; "
            f"adapter: {result.export_path}"
        )
        return EXIT_OK
    if cmd == "demo":
        return demo_main(rest)
    print(f"unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return EXIT_USAGE
