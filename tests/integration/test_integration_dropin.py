"""The widely used pack's node ids served by ours (nodes/dropin/), in the real host (run_dropin.py).

Skipped without COMFYUI_PATH, failed in CI (conftest.py). The pack comes from IPADAPTER_PLUS_PATH or ../shared/hosts.
"""
import importlib.util
import json

import pytest
import torch
from scenario import last_result

SCRIPT = "run_dropin.py"
ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # never write into the pack's folder
OUR_IDS = 17  # our own node ids (nodes/registry.py), beside the 37 drop-in ids


def test_every_id_shows_the_packs_interface_in_object_info(tmp_path):
    """Field by field (inputs with their choices in order, defaults and ranges, input order, outputs and their
    names, display name, category, output node) for every id; the pack has no tooltip or description to leave out."""
    ours = last_result(SCRIPT, ["interface", "ours"], tmp_path / "ours", env=ENV)
    pack = last_result(SCRIPT, ["interface", "pack"], tmp_path / "pack", env=ENV)
    assert len(pack) == 37 and sorted(ours) == sorted(pack)
    assert pack["IPAdapterModelLoader"]["input"]["required"]["ipadapter_file"][0] == [
        "ip-adapter-plus_sd15.safetensors", "ip-adapter_sd15.safetensors"]
    differences = {(node_id, field): (ours[node_id][field], value)
                   for node_id, info in pack.items() for field, value in info.items() if ours[node_id][field] != value}
    assert differences == {}


def test_the_pack_serves_its_ids_where_installed_in_either_load_order(tmp_path):
    r = last_result(SCRIPT, ["orders", "-"], tmp_path, env=ENV)
    for order in ("ours first", "pack first"):
        assert r[order]["serving_modules"] == ["IPAdapterPlus"] and r[order]["our_ids"] == OUR_IDS, (order, r[order])
        assert len(r[order]["log"]) == 1 and "served by that pack itself" in r[order]["log"][0], r[order]
    assert r["ours only"]["pack_ids_served"] == 37 and r["ours only"]["serving_modules"] == ["dropin"]
    assert "served by this pack" in r["ours only"]["log"][0]
    assert r["ours only, opted out"]["pack_ids_served"] == 0 and r["ours only, opted out"]["our_ids"] == OUR_IDS
    assert "IPADAPTER_DROPIN=off" in r["ours only, opted out"]["log"][0]


def _compute(which, tmp_path):
    result = last_result(SCRIPT, ["compute", which], tmp_path / which, timeout=3000, env=ENV)
    return result, torch.load(tmp_path / which / f"latents-{which}.pt")


def test_the_graphs_programs_send_give_the_packs_final_latents(tmp_path):
    """Krita AI Diffusion's and SwarmUI's image prompt graphs (REFERENCE.md section 8), as they send them (JSON null
    for attn_mask), and a graph for each other id of the pack that makes a MODEL or feeds one (the Batch ids with
    one reference per frame, weights and prompt schedule, save then load embeds, the community Composition
    preset; Style & Composition Batch not: the pack computes it on SDXL models only), on a host with only the pack and on a host with only ours: every graph accepted and executed, the
    final latents equal to 1e-4 relative. Without InsightFace the face graph stops with what to install; with
    a stand-in InsightFace that both packs use, the face graphs (FaceID and FaceID PlusV2 files, FaceID Batch, the
    Unified Loader FaceID with its LoRA files) give the pack's latents too."""
    pack, pack_latents = _compute("pack", tmp_path)
    ours, our_latents = _compute("ours", tmp_path)
    face = ours.pop("faceid")
    pack.pop("faceid")
    standin = ours.pop("insightface stand-in"), pack.pop("insightface stand-in")
    for saved in (ours.pop("save embeds"), pack.pop("save embeds")):  # an output node: no latent of its own
        assert saved["valid"] and saved["executed"] and saved["error"] is None, saved
    # Krita's and SwarmUI's graphs, the other ids (load embeds after save), the face graphs
    assert sorted(ours) == sorted(pack) and len(ours) == 15 + 5
    assert sorted(our_latents) == sorted(pack_latents) == sorted(ours)
    errors = {}
    for name, res in ours.items():
        assert res["valid"] and res["executed"] and res["error"] is None, (name, res)
        ref = pack_latents[name]
        assert torch.isfinite(ref).all()
        errors[name] = float((our_latents[name] - ref).abs().max() / ref.abs().max())
    print(json.dumps({"max relative error": errors, "seconds (ours)": {k: v["seconds"] for k, v in ours.items()},
                      "seconds (pack)": {k: v["seconds"] for k, v in pack.items()}, "stand-in": standin}, indent=1))
    assert all(e < 1e-4 for e in errors.values()), errors
    # the faces went through InsightFace's calls in both packs, as many
    assert standin[0]["crop sizes"] == standin[1]["crop sizes"] == [224]
    assert standin[0]["faces analysed"] == standin[1]["faces analysed"] == 6
    if importlib.util.find_spec("insightface") is None:  # as in CI: the one message naming what to install
        assert face["executed"] is False and "pip install insightface onnxruntime" in face["error"], face
