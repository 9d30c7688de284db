"""The workflow converter in the real host, with the widely used pack loaded beside ours (run_migrate.py).

Skipped when COMFYUI_PATH is unset. The pack comes from IPADAPTER_PLUS_PATH or ../shared/hosts.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFY = os.environ.get("COMFYUI_PATH")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI checkout to run the real-host tests"),
]
SCRIPT = Path(__file__).resolve().parent / "run_migrate.py"
NOT_EXECUTED = ("IPAdapterFaceID", "IPAAdapterFaceIDBatch", "IPAdapterUnifiedLoaderFaceID", "IPAdapterInsightFaceLoader",
                "IPAdapterLoadEmbeds", "IPAdapterClipVisionEnhancerBatch")  # as in run_migrate.py


def _run(scenario, tmp_path):
    env = {**os.environ, "COMFYUI_PATH": COMFY, "PYTHONDONTWRITEBYTECODE": "1"}  # never write into the pack's folder
    proc = subprocess.run([sys.executable, str(SCRIPT), scenario, str(tmp_path)], capture_output=True, text=True,
                          timeout=3000, cwd=str(SCRIPT.parents[2]), env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    print(scenario, json.dumps(result, indent=1))
    return result


def test_table_matches_the_packs_real_input_types(tmp_path):
    r = _run("table", tmp_path)
    assert r["pack_nodes"] == 37 and r["mismatches"] == {} and r["extra_in_table"] == []
    assert r["clip_loader_matches"] and all(r["ours_match"].values()), r["ours_match"]


def test_every_pack_node_converts_validates_and_executes(tmp_path):
    r = _run("convert", tmp_path)
    chain = r.pop("chain")
    assert len(r) == 37
    for node_type, res in r.items():
        assert res["ui"]["valid"], (node_type, res)  # kept nodes validate too (both packs are loaded)
        assert res["api"]["valid"] and res["api_same_nodes"], (node_type, res)
    complete = {t for t, res in r.items() if res["complete"]}
    assert len(complete) == 30 and {"IPAdapter", "IPAdapterAdvanced", "IPAdapterBatch", "IPAdapterEmbeds",
                                    "IPAdapterEncoder", "IPAdapterUnifiedLoader", "IPAdapterModelLoader",
                                    "PrepImageForClipVision", "IPAdapterMS", "IPAdapterFaceID", "IPAdapterTiled",
                                    "IPAdapterStyleComposition", "IPAdapterWeights"} <= complete
    # every node that converts and patches a model (with its providers), in one graph, executed once by the host;
    # FaceID and Load Embeds (they need InsightFace / a file) and the nodes without a MODEL output are validated above
    not_chained = set(NOT_EXECUTED) | {"IPAdapterCombineEmbeds", "IPAdapterNoise", "IPAdapterSaveEmbeds",
                                       "IPAdapterWeights", "IPAdapterWeightsFromStrategy"}
    assert set(chain["pack_nodes"]) == complete - not_chained and chain["problems"] == []
    assert chain["valid"] and chain["executed"] and chain["error"] is None, chain
    assert chain["applies"] == 14


def test_legacy_reproduces_the_packs_final_latent(tmp_path):
    r = _run("parity", tmp_path)
    for case, res in r.items():
        assert res["finite"] and res["shape"] == [1, 4, 8, 8], (case, res)
        assert res["rel_err_legacy"] < 1e-4, (case, res)
