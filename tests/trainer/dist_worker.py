"""Run under torchrun by test_trainer_distributed.py: one rank of a real multi-process (gloo, CPU) training.

argv: output json path, then TrainConfig fields as JSON, plus an optional "_sigterm_after": [rank, step] (that
rank sends itself SIGTERM right after that optimizer step: a preemption that reaches one process only).
Each rank trains through trainer.train.train and records, after every optimizer step, a digest of its adapter
weights, how many exports it wrote, and how the run ended; it writes them to <json path>.rank<r>.
"""
import hashlib
import json
import os
import signal
import sys

import torch

import trainer.train as train_mod
from trainer.train_config import TrainConfig

out, kw = sys.argv[1], json.loads(sys.argv[2])
rank = int(os.environ["RANK"])
sigterm_rank, sigterm_step = kw.pop("_sigterm_after", (None, None))
record = {"digests": [], "exports": 0, "losses": None}

real_step = train_mod.Trainer.step


def step(self, *a, **k):
    loss = real_step(self, *a, **k)
    if loss is not None:
        h = hashlib.sha256()
        for name, p in sorted(self.adapter.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        record["digests"].append(h.hexdigest())
        if rank == sigterm_rank and self.global_step == sigterm_step:
            os.kill(os.getpid(), signal.SIGTERM)
    return loss


real_export = train_mod.Trainer.export


def export(self, path_base):
    record["exports"] += 1
    return real_export(self, path_base)


train_mod.Trainer.step, train_mod.Trainer.export = step, export
torch.set_num_threads(1)
result = train_mod.train(TrainConfig(**kw))
record["losses"] = result.losses
record["world"] = int(os.environ["WORLD_SIZE"])
record["interrupted"], record["global_step"] = result.interrupted, result.global_step
with open(f"{out}.rank{rank}", "w") as fh:
    json.dump(record, fh)
