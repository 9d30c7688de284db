"""A real two-process run (torchrun, gloo on CPU) with the tiny models: the adapter weights are identical on
both ranks after every step, only rank 0 writes exports, a resume under two processes reproduces the
uninterrupted two-process run's losses, SIGTERM reaching one rank stops both after a checkpoint, and two
processes with batch 2 train as one process with batch 4. (`accelerate launch --cpu --num_processes 2` starts
a single process on accelerate 1.15, so torchrun launches the ranks; accelerate's Accelerator joins the gloo
group they form.)"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, name, env_extra=None, **kw):
    out = str(tmp_path / f"{name}.json")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           WORKER, out, json.dumps(kw)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{name}: the two-process run did not finish: {(e.stderr or b'')[-3000:]!r}") from None
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.load(open(f"{out}.rank{r}")) for r in (0, 1)]


@pytest.fixture(scope="module")
def two_process_run(tiny_assets, tmp_path_factory):
    """The uninterrupted two-process run every test here compares with: batch 2 per rank, 4 steps, a
    checkpoint every 2 steps, the losses agreed every 2 steps."""
    tmp = tmp_path_factory.mktemp("dist")
    base = dict(pretrained_model_name_or_path=tiny_assets["sd"], image_encoder_path=tiny_assets["encoder"],
                data_json_file=tiny_assets["json"], data_root_path=tiny_assets["images"], resolution=16,  # conftest.TINY_RES
                report_to="none", seed=0, dataloader_num_workers=0, train_batch_size=2, save_steps=2, logging_steps=2,
                max_train_steps=4)
    full_dir = str(tmp / "full")
    r0, r1 = _run(tmp, "full", **dict(base, output_dir=full_dir))
    return {"tmp": tmp, "base": base, "dir": full_dir, "ranks": (r0, r1)}


def _adapter(folder):
    return load_file(os.path.join(folder, "ip_adapter.safetensors"))


@pytest.mark.slow
def test_two_processes_stay_in_sync_write_once_and_resume_exactly(two_process_run):
    tmp, base, full_dir = two_process_run["tmp"], two_process_run["base"], two_process_run["dir"]
    r0, r1 = two_process_run["ranks"]
    assert r0["world"] == r1["world"] == 2
    assert len(r0["digests"]) == 4 and r0["digests"] == r1["digests"]  # identical weights after every step
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 4  # the all-reduced mean, on both ranks
    assert r0["exports"] == 3 and r1["exports"] == 0  # checkpoint-2, checkpoint-4, the final export: rank 0 only
    assert sorted(os.listdir(os.path.join(full_dir, "checkpoint-4"))) == ["ip_adapter.safetensors", "rng_rank0.pt", "rng_rank1.pt", "state.pt"]
    assert sorted(p for p in os.listdir(full_dir) if p.startswith(("checkpoint", ".checkpoint"))) == ["checkpoint-2", "checkpoint-4"]

    # the state a run stopped at step 2 would have left (the run is deterministic: the same folder)
    cut_dir = str(tmp / "cut")
    shutil.copytree(os.path.join(full_dir, "checkpoint-2"), os.path.join(cut_dir, "checkpoint-2"))
    c0, c1 = _run(tmp, "resumed", **dict(base, output_dir=cut_dir, resume_from_checkpoint="latest"))
    assert c0["losses"] == r0["losses"] and c1["losses"] == r1["losses"]  # bit-exact across the two-process resume
    assert c0["digests"] == r0["digests"][2:] and c1["digests"] == c0["digests"]


def test_a_checkpoint_resumes_only_under_the_process_count_that_wrote_it(two_process_run, train_args):
    """Its data position counts per-process batches (and DeepSpeed splits the optimizer per process)."""
    from trainer.errors import TrainerConfigError
    from trainer.train import train

    cut = two_process_run["tmp"] / "one_from_two"
    shutil.copytree(os.path.join(two_process_run["dir"], "checkpoint-2"), cut / "checkpoint-2")
    with pytest.raises(TrainerConfigError, match="written by 2 process\\(es\\) and this run has 1.*Resume with 2"):
        train(train_args(**dict(two_process_run["base"], output_dir=str(cut), resume_from_checkpoint="latest")))


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_after_a_checkpoint(two_process_run):
    """A preemption that reaches rank 1 only, right after step 1: the ranks agree on stopping at the next
    agreement step (every --logging_steps, here 2), rank 0 saves checkpoint-2, both exit cleanly; that
    checkpoint is the uninterrupted run's, so --resume_from_checkpoint latest continues exactly (tested above)."""
    tmp, base, full_dir = two_process_run["tmp"], two_process_run["base"], two_process_run["dir"]
    stop_dir = str(tmp / "sigterm")
    s0, s1 = _run(tmp, "sigterm", **dict(base, output_dir=stop_dir, save_steps=100, _sigterm_after=[1, 1]))
    assert s0["interrupted"] and s1["interrupted"] and s0["global_step"] == s1["global_step"] == 2
    assert s0["digests"] == s1["digests"] == two_process_run["ranks"][0]["digests"][:2]
    assert [p for p in os.listdir(stop_dir) if p.startswith("checkpoint")] == ["checkpoint-2"]
    saved, uninterrupted = _adapter(os.path.join(stop_dir, "checkpoint-2")), _adapter(os.path.join(full_dir, "checkpoint-2"))
    assert saved.keys() == uninterrupted.keys() and all(torch.equal(saved[k], uninterrupted[k]) for k in saved)


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_global_batch(two_process_run, train_args):
    """2 processes x batch 2 = 1 process x batch 4: the same samples in each global batch (the sampler's
    strided split), the same drops, noise, timesteps and latent draws (every rank draws for the global batch
    and keeps its rows), the gradient all-reduce averaging the two halves' means. What differs is float
    summation order only: losses and weights agree to float tolerance, not bit for bit."""
    from trainer.train import train

    base, full_dir = two_process_run["base"], two_process_run["dir"]
    one = train(train_args(**dict(base, output_dir=str(two_process_run["tmp"] / "one"), train_batch_size=4)))
    two = two_process_run["ranks"][0]
    assert len(one.losses) == len(two["losses"]) == 4
    for a, b in zip(one.losses, two["losses"]):
        assert abs(a - b) <= 1e-5 * abs(b), (one.losses, two["losses"])
    w1, w2 = _adapter(one.output_dir), _adapter(full_dir)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-6, msg=k)


ZERO2 = os.path.join(ROOT, "trainer", "accelerate_configs", "deepspeed_zero2.yaml")


def test_the_shipped_zero2_config_is_one_accelerate_reads():
    """trainer/accelerate_configs/deepspeed_zero2.yaml as `accelerate launch --config_file` reads it, turned into
    accelerate's DeepSpeed plugin (the run itself needs GPUs: below)."""
    pytest.importorskip("deepspeed")
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    cfg = load_config_from_file(ZERO2)
    assert cfg.distributed_type == DistributedType.DEEPSPEED and cfg.deepspeed_config["zero_stage"] == 2
    plugin = DeepSpeedPlugin(**{k: v for k, v in cfg.deepspeed_config.items() if k != "zero3_init_flag"})
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2


@pytest.mark.slow
def test_deepspeed_zero2_on_two_cpu_processes_partitions_matches_ddp_and_resumes(two_process_run):
    """DeepSpeed ZeRO-2 through accelerate's plugin, run for real (DeepSpeed's CPU accelerator, gloo): the AdamW
    state is partitioned over the two ranks, the run equals the DDP run (hence one process at the global batch),
    and a resume, each rank reading its partition, continues it exactly."""
    pytest.importorskip("deepspeed")
    tmp, base, full_dir = two_process_run["tmp"], two_process_run["base"], two_process_run["dir"]
    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2", "ACCELERATE_USE_CPU": "0"}
    ds_dir = str(tmp / "zero2")
    d0, d1 = _run(tmp, "zero2", env_extra=env, **dict(base, output_dir=ds_dir))
    assert d0["digests"] == d1["digests"] and d0["losses"] == d1["losses"] and (d0["exports"], d1["exports"]) == (3, 0)
    for a, b in zip(d0["losses"], two_process_run["ranks"][0]["losses"]):
        assert abs(a - b) <= 1e-5 * abs(b)
    w_ds, w_ddp = _adapter(ds_dir), _adapter(full_dir)
    for k in w_ddp:
        torch.testing.assert_close(w_ds[k], w_ddp[k], rtol=1e-4, atol=1e-6, msg=k)
    n_params = sum(t.numel() for t in w_ddp.values())
    for r in (0, 1):
        part = torch.load(os.path.join(ds_dir, "checkpoint-4", f"optimizer_rank{r}.pt"), weights_only=False)
        held = sum(t.numel() for t in part["single_partition_of_fp32_groups"])
        assert part["partition_count"] == [2] and int(part["zero_stage"]) == 2 and held < n_params <= 2 * held

    cut_dir = str(tmp / "zero2_cut")
    shutil.copytree(os.path.join(ds_dir, "checkpoint-2"), os.path.join(cut_dir, "checkpoint-2"))
    e0, e1 = _run(tmp, "zero2_resumed", env_extra=env, **dict(base, output_dir=cut_dir, resume_from_checkpoint="latest"))
    assert e0["losses"] == d0["losses"] and e0["digests"] == d0["digests"][2:] and e1["digests"] == e0["digests"]


@pytest.mark.slow
def test_processes_that_form_no_group_are_refused_before_training(two_process_run):
    """Launched processes that come up alone (accelerate's GPU path on a machine without GPUs: each believes it
    is the only process) would overwrite each other's checkpoints: refused before training, naming the fix."""
    tmp, base = two_process_run["tmp"], two_process_run["base"]
    with pytest.raises(AssertionError, match="2 processes were launched .* joined a group of 1.*ACCELERATE_USE_CPU=1"):
        _run(tmp, "alone", env_extra={"ACCELERATE_USE_CPU": "0"}, **dict(base, output_dir=str(tmp / "alone")))
    assert not os.path.exists(tmp / "alone" / "checkpoint-2")
