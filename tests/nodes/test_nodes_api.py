"""The public API of the node pack: ids, input names, output types, tooltips, descriptions."""
import sys
from pathlib import Path

from nodes.registry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, OWN_IDS

# Saved workflows depend on these: changing one is a breaking change.
PUBLIC = {
    "IPALoadAdapter": ("Load IPAdapter", ["adapter_name"], ("IPA_ADAPTER",)),
    "IPAEncodeImagePrompt": ("Encode Image Prompt (IPAdapter)", ["ipadapter", "clip_vision", "image"], ("IPA_EMBEDS",)),
    "IPAApplyAdapter": ("Apply IPAdapter", ["model", "ipadapter", "embeds", "weight", "start_at", "end_at"], ("MODEL",)),
}


def test_public_ids_inputs_outputs(host):
    for node_id, (display, required, outputs) in PUBLIC.items():
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert NODE_DISPLAY_NAME_MAPPINGS[node_id] == display
        assert list(cls.INPUT_TYPES()["required"]) == required
        assert cls.RETURN_TYPES == outputs


def test_the_pack_entry_point_exports_the_registry(host, monkeypatch):
    """ComfyUI imports the pack's folder as a package and reads the mappings and WEB_DIRECTORY from it."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("ipa_pack_entry", root / "__init__.py", submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ipa_pack_entry", pack)
    try:
        spec.loader.exec_module(pack)
        # the pack's own copy of the registry (relative imports under the package name ComfyUI gives it): the same nodes
        assert pack.NODE_DISPLAY_NAME_MAPPINGS == NODE_DISPLAY_NAME_MAPPINGS
        assert {k: (c.__name__, c.RETURN_TYPES, list(c.INPUT_TYPES()["required"])) for k, c in pack.NODE_CLASS_MAPPINGS.items()} == {
            k: (c.__name__, c.RETURN_TYPES, list(c.INPUT_TYPES()["required"])) for k, c in NODE_CLASS_MAPPINGS.items()}
        assert set(pack.__all__) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"}
        assert list((root / pack.WEB_DIRECTORY).glob("*.js"))  # the frontend extension ComfyUI serves
    finally:
        for name in [m for m in sys.modules if m.startswith("ipa_pack_entry.")]:
            del sys.modules[name]


def test_every_input_has_a_tooltip_and_every_node_a_description(host):
    for node_id in OWN_IDS:
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), node_id
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                assert len(entry) == 2 and entry[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_the_drop_in_ids_describe_themselves_in_our_words(host):
    # the other pack's interface exactly (tests/integration/test_integration_dropin.py), its text never: it has no
    # tooltips, and the description is ours
    from nodes import pack_interface

    for node_id in pack_interface.NODES:
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert "ComfyUI_IPAdapter_plus" in cls.DESCRIPTION and "IPADAPTER_DROPIN" in cls.DESCRIPTION, node_id
        spec = cls.INPUT_TYPES()
        assert not any("tooltip" in e[1] for section in spec.values() for e in section.values() if len(e) > 1), node_id


def test_optional_inputs_have_defaults_that_keep_behaviour(host):
    apply_opt = NODE_CLASS_MAPPINGS["IPAApplyAdapter"].INPUT_TYPES()["optional"]
    assert apply_opt["layer_weights"][1]["default"] == "all layers"
    assert apply_opt["layer_weights_custom"][1]["default"] == ""
    enc_opt = NODE_CLASS_MAPPINGS["IPAEncodeImagePrompt"].INPUT_TYPES()["optional"]
    assert enc_opt["crop"][1]["default"] == "center"  # the official preprocessing
    assert enc_opt["combine"][1]["default"] == "concat"
    w = NODE_CLASS_MAPPINGS["IPAApplyAdapter"].INPUT_TYPES()["required"]["weight"][1]
    assert (w["min"], w["max"], w["default"]) == (-1.0, 5.0, 1.0)


def test_listing_without_the_host_gives_an_empty_list(monkeypatch):
    # ComfyUI-Manager and tools import the pack outside a running host: listing files must not crash.
    monkeypatch.setitem(sys.modules, "folder_paths", None)  # makes `import folder_paths` fail
    assert NODE_CLASS_MAPPINGS["IPALoadAdapter"].INPUT_TYPES()["required"]["adapter_name"][0] == []
