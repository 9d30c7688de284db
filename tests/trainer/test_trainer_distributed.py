"""A real two-process run (torchrun, gloo on CPU) with the tiny models: the adapter weights are identical on
both ranks after every step, only rank 0 writes exports, and a resume under two processes reproduces the
uninterrupted two-process run's losses. (`accelerate launch --cpu --num_processes 2` starts a single process
on accelerate 1.15, so torchrun launches the ranks; accelerate's Accelerator joins the gloo group they form.)"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, name, **kw):
    out = str(tmp_path / f"{name}.json")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           WORKER, out, json.dumps(kw)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{name}: the two-process run did not finish: {(e.stderr or b'')[-3000:]!r}") from None
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.load(open(f"{out}.rank{r}")) for r in (0, 1)]


@pytest.mark.slow
def test_two_processes_stay_in_sync_write_once_and_resume_exactly(train_args, tmp_path):
    base = {k: v for k, v in vars(train_args()).items()}
    base.update(train_batch_size=2, save_steps=2, logging_steps=2, dataloader_num_workers=0)
    full_dir, cut_dir = str(tmp_path / "full"), str(tmp_path / "cut")

    r0, r1 = _run(tmp_path, "full", **dict(base, output_dir=full_dir, max_train_steps=4))
    assert r0["world"] == r1["world"] == 2
    assert len(r0["digests"]) == 4 and r0["digests"] == r1["digests"]  # identical weights after every step
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 4  # the all-reduced mean, on both ranks
    assert r0["exports"] == 3 and r1["exports"] == 0  # checkpoint-2, checkpoint-4, the final export: rank 0 only
    assert sorted(os.listdir(os.path.join(full_dir, "checkpoint-4"))) == ["ip_adapter.safetensors", "rng_rank0.pt", "rng_rank1.pt", "state.pt"]
    assert sorted(p for p in os.listdir(full_dir) if p.startswith(("checkpoint", ".checkpoint"))) == ["checkpoint-2", "checkpoint-4"]

    # the state a run stopped at step 2 would have left (the run is deterministic: the same folder)
    shutil.copytree(os.path.join(full_dir, "checkpoint-2"), os.path.join(cut_dir, "checkpoint-2"))
    c0, c1 = _run(tmp_path, "resumed", **dict(base, output_dir=cut_dir, max_train_steps=4, resume_from_checkpoint="latest"))
    assert c0["losses"] == r0["losses"] and c1["losses"] == r1["losses"]  # bit-exact across the two-process resume
    assert c0["digests"] == r0["digests"][2:] and c1["digests"] == c0["digests"]
