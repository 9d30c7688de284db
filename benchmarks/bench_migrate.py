"""Time and memory of the workflow converter (python -m nodes.migrate) on large and adversarial files.

    python benchmarks/bench_migrate.py [--nodes 5000] [--pile 5000] [--chain 1200] [--numbers 3000000]

Each case is written to a temporary file and converted by the command in a child process (so its peak
memory is its own): a workflow of N pack nodes spread over a canvas with their providers, the same with the
pack nodes in a subgraph and their loaders outside (the pipeline followed across its boundary), N pack nodes on
one spot and N piled near one spot, each a little off (placement: no two alike, among kept nodes), a chain of
pack nodes listed last-first (wiring), and a kept node holding M numbers (memory against the file's size).
Prints seconds, peak memory and the ratio of memory to file size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "nodes"))

from pack_workflows import IndexedBuilder as _Fast, into_subgraph  # noqa: E402


def _apply_nodes(n, spot=None, last_first=False, jitter=False):
    """n IPAdapterAdvanced nodes, each with the four providers it needs, chained by their models. jitter: every
    third one an IPAdapter FaceID (other node sizes), each placed a little off the spot, with kept notes in the pile."""
    b = _Fast()
    ckpt = b.node("CheckpointLoaderSimple", pos=[-3000, 0])
    loader = b.node("IPAdapterModelLoader", pos=[-3000, 400])
    clip = b.node("CLIPVisionLoader", pos=[-3000, 800])
    model = (ckpt, 0)
    for i in range(n):
        image = b.node("LoadImage", pos=None if spot is None else [-3000, 1200 + 400 * i])
        pos = spot if spot is not None else [(i % 70) * 400, (i // 70) * 400]
        if jitter:
            pos = [spot[0] + (i * 7) % 97 + i * 0.001, spot[1] + (i * 13) % 41]
            if i % 50 == 0:
                b.node("Note", pos=[spot[0] + (i * 3) % 300, spot[1] + 200 * (i // 50)])
        nid = b.node("IPAdapterFaceID" if jitter and i % 3 == 0 else "IPAdapterAdvanced", pos=pos)
        for src, slot, name in ((model[0], model[1], "model"), (loader, 0, "ipadapter"), (image, 0, "image"),
                                (clip, 0, "clip_vision")):
            b.link(src, slot, nid, name)
        model = (nid, 0)
    if last_first:
        b.wf["nodes"].reverse()
    return b.wf


def _big_kept_node(numbers):
    b = _Fast()
    nid = b.node("IPAdapterAdvanced")
    b.get(nid)["widgets_values"] = b.get(nid)["widgets_values"][:3]  # an old layout: kept as it is
    keep = b.node("Note")
    b.get(keep)["properties"] = {"data": [i * 0.5 for i in range(numbers)]}
    return b.wf


def _run(name, wf):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(wf))
        size = src.stat().st_size
        t = time.perf_counter()
        code = ("import resource, sys; from nodes import migrate; rc = migrate.main([%r, '-o', %r]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)" % (str(src), str(out)))
        proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True)
        seconds = time.perf_counter() - t
        peak = int(proc.stderr.strip().splitlines()[-1]) * 1024
        print(f"{name:44s} exit {proc.returncode}  {seconds:7.2f} s  file {size / 2**20:8.1f} MiB  "
              f"peak {peak / 2**20:8.1f} MiB  ({peak / size:5.1f}x the file)", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=5000, help="pack nodes in the spread workflow (x5 nodes in all)")
    p.add_argument("--pile", type=int, default=5000)
    p.add_argument("--chain", type=int, default=1200)
    p.add_argument("--numbers", type=int, default=3_000_000)
    a = p.parse_args()
    _run(f"{a.nodes} pack nodes spread ({a.nodes * 2 + 3} nodes)", _apply_nodes(a.nodes))
    wf = _apply_nodes(a.nodes)
    inside = {n["id"] for n in wf["nodes"] if n["type"] in ("IPAdapterAdvanced", "LoadImage")}
    _run(f"{a.nodes} pack nodes in a subgraph, loader outside", into_subgraph(wf, inside))
    _run(f"{a.pile} pack nodes on one spot", _apply_nodes(a.pile, spot=[100, 100]))
    _run(f"{a.pile} pack nodes piled, each a little off", _apply_nodes(a.pile, spot=[100, 100], jitter=True))
    _run(f"{a.chain} chained, listed last-first", _apply_nodes(a.chain, last_first=True))
    _run(f"kept node holding {a.numbers} numbers", _big_kept_node(a.numbers))


if __name__ == "__main__":
    main()
