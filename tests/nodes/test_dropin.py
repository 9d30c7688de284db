"""The drop-in layer (nodes/dropin/): the other pack's ids, registered only where that pack is absent, computed by
our nodes. Its interface and pictures against the pack itself: tests/integration/test_integration_dropin.py."""
import sys
import types

import pytest
import torch

from comfy_standin import make_model
from nodes import dropin, migrate_table, pack_interface
from nodes.dropin import compute
from test_nodes_legacy import host_preprocess  # noqa: F401  (fixture: the host's clip_preprocess, stood in)


def test_the_converter_reads_the_packs_inputs_from_the_interface_table():
    # Every id the pack registers today has a recipe; the rest of the table are its removed first-generation ids.
    assert set(pack_interface.NODES) <= set(migrate_table.PACK)
    assert set(migrate_table.PACK) - set(pack_interface.NODES) == set(migrate_table.FIRST_GENERATION)
    for node_id in pack_interface.NODES:
        entry = migrate_table.PACK[node_id]
        assert (entry["required"], entry["optional"], entry["outputs"]) == pack_interface.signature(node_id)
    assert pack_interface.signature("IPAdapterEmbeds")[1] == ("neg_embed:EMBEDS", "attn_mask:MASK", "clip_vision:CLIP_VISION")


def test_the_switch_chooses_the_packs_results_by_default(monkeypatch):
    monkeypatch.delenv(dropin.ENV, raising=False)
    assert dropin.mode() == "pack" and dropin.legacy()
    monkeypatch.setenv(dropin.ENV, "Corrected")
    assert dropin.mode() == "corrected" and not dropin.legacy()
    monkeypatch.setenv(dropin.ENV, "maybe")
    with pytest.raises(ValueError, match="pack, corrected, off"):
        dropin.mode()


def test_no_ids_where_opted_out_or_where_the_pack_is_imported(monkeypatch, tmp_path):
    monkeypatch.delenv(dropin.ENV, raising=False)
    classes, names = dropin.registrations()
    assert sorted(classes) == sorted(pack_interface.NODES) and names["IPAdapterAdvanced"] == "IPAdapter Advanced"
    monkeypatch.setenv(dropin.ENV, "off")
    assert dropin.registrations() == ({}, {})
    monkeypatch.setenv(dropin.ENV, "pack")
    fake = types.ModuleType("custom_nodes.ComfyUI_IPAdapter_plus.IPAdapterPlus")
    fake.__file__ = str(tmp_path / "ComfyUI_IPAdapter_plus" / "IPAdapterPlus.py")
    fake.NODE_CLASS_MAPPINGS = {}
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    assert dropin.installed_pack() == str(tmp_path / "ComfyUI_IPAdapter_plus")
    assert dropin.registrations() == ({}, {})


def test_ids_without_a_computation_here_say_what_to_do():
    with pytest.raises(Exception, match="python -m nodes.migrate"):
        compute.run("IPAdapterTiled", {})


def _pipe(adapter, vit_h):
    return compute.Pipeline(adapter, vit_h)


def test_krita_chain_equals_our_nodes_in_legacy_mode(host, plus, vit_h, monkeypatch, host_preprocess):
    """Encoder (weight) x2 -> Combine Embeds (concat) -> Embeds, attn_mask null: our Encode (two references with
    their weights, legacy) and Apply (legacy), patch for patch."""
    from nodes.nodes_apply import IPAApplyAdapter
    from nodes.nodes_encode import IPAEncodeImagePrompt

    monkeypatch.delenv(dropin.ENV, raising=False)
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    pipe = _pipe(plus, vit_h)
    e1, n1 = compute.encoder(pipe, images[:1], 0.8)
    e2, _ = compute.encoder(pipe, images[1:], 0.5)
    assert n1.negative and not e1.negative
    (combined,) = compute.combine(e1, "concat", embed2=e2)
    model = make_model("sd15")
    (drop,) = compute.run("IPAdapterEmbeds", dict(model=model, ipadapter=pipe, pos_embed=combined, weight=1.0,
                                                  weight_type="linear", start_at=0.0, end_at=1.0,
                                                  embeds_scaling="V only", attn_mask=None))
    (ours_embeds,) = IPAEncodeImagePrompt().encode(plus, vit_h, images, reference_weights="0.8, 0.5", legacy=True)
    (ours,) = IPAApplyAdapter().apply(model, plus, ours_embeds, 1.0, 0.0, 1.0, legacy=True)
    assert torch.allclose(combined.prompt.cond, ours_embeds.cond, atol=1e-6)
    assert torch.allclose(combined.prompt.uncond, ours_embeds.uncond, atol=1e-6)
    assert sorted(drop.attn2_patches()) == sorted(ours.attn2_patches())


def test_the_corrected_switch_gives_the_official_unconditional_image(host, plus, vit_h, monkeypatch, host_preprocess):
    images = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv(dropin.ENV, "corrected")
    corrected = compute.encoder(_pipe(plus, vit_h), images, 1.0)[0].prompt
    monkeypatch.setenv(dropin.ENV, "pack")
    pack = compute.encoder(_pipe(plus, vit_h), images, 1.0)[0].prompt
    assert not torch.allclose(corrected.uncond, pack.uncond)


def test_links_of_our_own_types_are_refused_with_the_node_to_use(host, plus):
    with pytest.raises(Exception, match="IPAdapter Model Loader"):
        compute.run("IPAdapterEncoder", dict(ipadapter=plus, image=torch.rand(1, 64, 64, 3), weight=1.0))
    with pytest.raises(Exception, match="IPAdapter Encoder"):
        compute.run("IPAdapterCombineEmbeds", dict(embed1=torch.zeros(1, 1280), method="concat"))
