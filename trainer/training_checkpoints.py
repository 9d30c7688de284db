"""Checkpoints that are never half-written, and everything a resume needs.

A checkpoint is a folder `checkpoint-{step}` holding
- state.pt: adapter weights (its own state dict: nothing shared with the UNet), optimizer, grad scaler,
  step, data position (epoch, micro-batches consumed in it), counters, losses so far, resolved config;
- rng_rank{r}.pt: every random state of rank r (torch CPU/CUDA, numpy, python, drop and step generators);
- ip_adapter.safetensors (or .bin): the export in the released layout.
It is written into a hidden temp folder and renamed into place (os.replace), so a kill at any moment leaves
either the previous checkpoints or the new complete one. Everything is read back with
torch.load(weights_only=True): no code runs on load.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from typing import Optional

import numpy as np
import torch

from .errors import TrainerConfigError

STATE_FILE = "state.pt"
_CKPT = re.compile(r"^checkpoint-(\d+)(\.old)?$")
# what a resume reads from state.pt and rng_rank{r}.pt: checked before any model is loaded
STATE_KEYS = ("global_step", "epoch", "batch_in_epoch", "samples_seen", "skipped_images", "adapter", "optimizer", "config")
RNG_KEYS = ("torch", "numpy", "python", "drop", "step")


def _fsync_save(obj, path: str) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def rng_state(drop_gen: torch.Generator, step_gen: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
        "drop": drop_gen.get_state(),
        "step": step_gen.get_state(),
    }


def set_rng_state(state: dict, drop_gen: torch.Generator, step_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    drop_gen.set_state(state["drop"])
    step_gen.set_state(state["step"])


def checkpoint_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"checkpoint-{step}")


def list_checkpoints(output_dir: str) -> list:
    """Complete checkpoints (a checkpoint-N folder with a state file), oldest first, one per step: a
    checkpoint-N.old left by a re-save killed between its renames stands in for a missing checkpoint-N."""
    if not os.path.isdir(output_dir):
        return []
    found = {}
    for name in os.listdir(output_dir):
        m = _CKPT.match(name)
        if m and os.path.isfile(os.path.join(output_dir, name, STATE_FILE)):
            step, old = int(m.group(1)), bool(m.group(2))
            if not old or step not in found:
                found[step] = os.path.join(output_dir, name)
    return [found[s] for s in sorted(found)]


def resolve_resume(resume: Optional[str], output_dir: str) -> Optional[str]:
    if resume is None:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None  # nothing yet: a fresh start, as accelerate-based scripts do
    if not os.path.isfile(os.path.join(resume, STATE_FILE)):
        raise TrainerConfigError(
            f"--resume_from_checkpoint: {resume!r} is not a complete checkpoint (no {STATE_FILE}); "
            f"give a checkpoint-N folder written by this trainer, or 'latest'"
        )
    return resume


def temp_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f".checkpoint-{step}.tmp")


def begin(output_dir: str, step: int) -> str:
    """A fresh temp folder for checkpoint `step` (left-overs of a killed save are removed)."""
    tmp = temp_dir(output_dir, step)
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def write_rng(tmp: str, rank: int, state: dict) -> None:
    _fsync_save(state, os.path.join(tmp, f"rng_rank{rank}.pt"))


def write_rank_file(tmp: str, name: str, obj) -> None:
    _fsync_save(obj, os.path.join(tmp, name))


def commit(tmp: str, output_dir: str, step: int, state: dict) -> str:
    """Write state.pt last, then move the folder into place; a re-save keeps the old folder until the new one is in."""
    _fsync_save(state, os.path.join(tmp, STATE_FILE))
    final = checkpoint_dir(output_dir, step)
    old = final + ".old"
    if os.path.exists(final):
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(final, old)  # from here until the next rename, list_checkpoints finds step N as .old
    os.replace(tmp, final)
    _fsync_dir(output_dir)
    if os.path.exists(old):
        shutil.rmtree(old)
    return final


def _fsync_dir(path: str) -> None:
    try:  # make the renames themselves durable
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def prune(output_dir: str, keep: Optional[int]) -> None:
    if not keep:
        return
    ckpts = list_checkpoints(output_dir)
    for path in ckpts[: max(0, len(ckpts) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def _load(path: str, what: str, allowed=()):
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainerConfigError(
            f"--resume_from_checkpoint: cannot read {what} {path!r} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            f"the checkpoint is damaged: resume from an older checkpoint-N folder, or start a new --output_dir"
        ) from None


def load_state(path: str) -> dict:
    """state.pt of a checkpoint, checked to hold everything a resume uses (its config included)."""
    f = os.path.join(path, STATE_FILE)
    state = _load(f, "the training state")
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if not missing and not isinstance(state["config"], dict):
        missing = ["config"]
    if missing:
        raise TrainerConfigError(
            f"--resume_from_checkpoint: {f!r} lacks {missing} (not a state written by this trainer, or damaged); "
            f"resume from an older checkpoint-N folder, or start a new --output_dir"
        )
    return state


def load_rng(path: str, rank: int) -> Optional[dict]:
    """rng_rank{rank}.pt of a checkpoint (None if this rank wrote none), checked before it is used."""
    f = os.path.join(path, f"rng_rank{rank}.pt")
    if not os.path.isfile(f):
        return None
    state = _load(f, "the random state")
    byte_state = lambda t: isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1  # noqa: E731
    ok = isinstance(state, dict) and all(k in state for k in RNG_KEYS)
    ok = ok and all(byte_state(state[k]) for k in ("torch", "drop", "step"))
    n, py = (state.get("numpy"), state.get("python")) if ok else (None, None)
    ok = ok and isinstance(n, (list, tuple)) and len(n) == 5 and isinstance(n[1], torch.Tensor) and n[1].numel() == 624
    ok = ok and isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple)) and len(py[1]) == 625
    if not ok:
        raise TrainerConfigError(
            f"--resume_from_checkpoint: {f!r} is not a random state written by this trainer (damaged?); "
            f"resume from an older checkpoint-N folder, or start a new --output_dir"
        )
    return state


def load_rank_file(path: str, name: str, allowed=()):
    """A per-rank file, read with the weights-only unpickler; `allowed`: classes it may rebuild besides tensors."""
    return _load(os.path.join(path, name), name, allowed)


def deepspeed_optimizer_classes() -> list:
    """The DeepSpeed classes a ZeRO optimizer state holds besides tensors and numbers (deepspeed 0.19): allowed by
    name to the weights-only unpickler, which rebuilds them from their fields and runs no other code."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]
