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

from .config import TrainerConfigError

STATE_FILE = "state.pt"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


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
    """Complete checkpoints (folder named checkpoint-N with a state file), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CKPT.match(name)
        if m and os.path.isfile(os.path.join(output_dir, name, STATE_FILE)):
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    return [p for _, p in sorted(found)]


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


def begin(output_dir: str, step: int) -> str:
    """A fresh temp folder for checkpoint `step` (left-overs of a killed save are removed)."""
    tmp = os.path.join(output_dir, f".checkpoint-{step}.tmp")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def write_rng(tmp: str, rank: int, state: dict) -> None:
    _fsync_save(state, os.path.join(tmp, f"rng_rank{rank}.pt"))


def commit(tmp: str, output_dir: str, step: int, state: dict) -> str:
    """Write state.pt last, then move the folder into place atomically."""
    _fsync_save(state, os.path.join(tmp, STATE_FILE))
    final = checkpoint_dir(output_dir, step)
    if os.path.exists(final):
        old = final + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    try:  # make the rename itself durable
        fd = os.open(output_dir, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
    return final


def prune(output_dir: str, keep: Optional[int]) -> None:
    if not keep:
        return
    ckpts = list_checkpoints(output_dir)
    for path in ckpts[: max(0, len(ckpts) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def load_state(path: str) -> dict:
    try:
        return torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainerConfigError(f"--resume_from_checkpoint: cannot read {os.path.join(path, STATE_FILE)} ({e}); pick an older checkpoint") from e


def load_rng(path: str, rank: int) -> Optional[dict]:
    f = os.path.join(path, f"rng_rank{rank}.pt")
    if not os.path.isfile(f):
        return None
    return torch.load(f, map_location="cpu", weights_only=True)
