"""The workflow converter in the real host, with the widely used pack loaded beside ours (run_migrate.py).

Skipped without COMFYUI_PATH, failed in CI (conftest.py). The pack comes from IPADAPTER_PLUS_PATH or ../shared/hosts.
"""
from scenario import last_result

SCRIPT = "run_migrate.py"
NOT_EXECUTED = ("IPAdapterFaceID", "IPAAdapterFaceIDBatch", "IPAdapterUnifiedLoaderFaceID", "IPAdapterInsightFaceLoader",
                "IPAdapterLoadEmbeds", "IPAdapterClipVisionEnhancerBatch", "IPAdapterFaceIDKolors",
                "IPAdapterApplyFaceID", "InsightFaceLoader", "PrepImageForInsightFace")  # as in run_migrate.py
FIRST_GENERATION = ("IPAdapterApply", "IPAdapterApplyEncoded", "IPAdapterApplyFaceID", "InsightFaceLoader",
                    "PrepImageForInsightFace")  # removed from the pack in 2024; older workflows still hold them


def _run(scenario, tmp_path):
    return last_result(SCRIPT, [scenario], tmp_path, timeout=3000, env={"PYTHONDONTWRITEBYTECODE": "1"})  # never write into the pack's folder


def test_table_matches_the_packs_real_input_types(tmp_path):
    r = _run("table", tmp_path)
    assert r["pack_nodes"] == 37 and r["mismatches"] == {} and r["extra_in_table"] == []
    # the first generation's nodes, which the converter reads from older workflows, are gone from the pack
    assert r["first_generation_gone"] == sorted(FIRST_GENERATION)
    assert r["clip_loader_matches"] and all(r["ours_match"].values()), r["ours_match"]


def test_every_pack_node_converts_validates_and_executes(tmp_path):
    r = _run("convert", tmp_path)
    chain = r.pop("chain")
    assert len(r) == 37 + len(FIRST_GENERATION)
    for node_type, res in r.items():
        assert res["ui"]["valid"], (node_type, res)  # kept nodes validate too (both packs are loaded)
        assert res["api"]["valid"] and res["api_same_nodes"], (node_type, res)
    complete = {t for t, res in r.items() if res["complete"]}
    assert complete == set(r), sorted(set(r) - complete)  # every node the pack ever shipped: none kept
    # every node that converts and patches a model (with its providers), in one graph, executed once by the host;
    # FaceID and Load Embeds (they need InsightFace / a file; Kolors FaceID also a Kolors UNet) and the nodes without a MODEL output are validated above
    not_chained = set(NOT_EXECUTED) | {"IPAdapterCombineEmbeds", "IPAdapterNoise", "IPAdapterSaveEmbeds",
                                       "IPAdapterWeights", "IPAdapterWeightsFromStrategy", "IPAdapterCombineParams",
                                       "IPAdapterCombineWeights", "IPAdapterPromptScheduleFromWeightsStrategy"}
    assert set(chain["pack_nodes"]) == complete - not_chained and chain["problems"] == []
    assert chain["valid"] and chain["executed"] and chain["error"] is None, chain
    assert chain["applies"] == 18


def test_legacy_reproduces_the_packs_final_latent(tmp_path):
    r = _run("parity", tmp_path)
    for case, res in r.items():
        assert res["finite"] and res["shape"] == [1, 4, 8, 8], (case, res)
        assert res["rel_err_legacy"] < 1e-4, (case, res)
