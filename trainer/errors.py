"""The trainer's error types. Each message names the setting or file, the bad value and the remedy; the CLI
prints it as one line (ip_core.errors.IPAdapterError is the common base, so callers catch one type)."""
from __future__ import annotations

from ip_core.errors import IPAdapterError


class TrainerConfigError(IPAdapterError, ValueError):
    """A bad flag, config file, data file, checkpoint or path. The message names the flag and the fix."""


class TrainingDivergedError(IPAdapterError):
    """The loss or the weights became NaN/inf; training stopped and nothing non-finite was saved."""
