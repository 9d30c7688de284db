"""The family registries: every adapter config has one family on each side (ip_core and nodes), told apart by
the loaded file's layout, and the Apply inputs each family reads (what the web extension hides elsewhere)."""
import pkgutil

import pytest

import ip_core.families as core_families
import nodes.families as node_families
from ip_core.config import make_config
from ip_core.families.flux import make_flux_config
from ip_core.families.sd3 import make_sd3_config
from ip_core.layers import layer_specs
from nodes.families import FAMILY_INPUTS, family_for, unused_inputs
from nodes.nodes_apply import IPAApplyAdapter

SDXL = layer_specs("sdxl")
CONFIGS = {
    "sd plus": (make_config("plus", layer_specs("sd15"), 768, 1280), "sd"),
    "sdxl vit-G": (make_config("base", SDXL, 2048, 1280), "sd"),
    "faceid": (make_config("faceid", layer_specs("sd15"), 768, 512, lora_rank=4), "faceid"),
    "faceid plus": (make_config("faceid-plus", SDXL, 2048, 512, lora_rank=4, clip_width=1280), "faceid"),
    "faceid portrait": (make_config("faceid-portrait", SDXL, 2048, 512), "faceid"),
    "kolors faceid": (make_config("faceid-plus", SDXL, 2048, 512, clip_width=1024, token_dim=4096), "kolors"),
    "flux": (make_flux_config("flux-xlabs", 2, hidden_size=64, context_dim=32), "flux"),
    "sd3": (make_sd3_config(2, 128, 64, 4, 64, 1, 2, 32, 2, 32, 64), "sd3"),
}


def test_every_family_module_is_registered_on_both_sides():
    core = {m.name for m in pkgutil.iter_modules(core_families.__path__)}
    nodes_side = {m.name for m in pkgutil.iter_modules(node_families.__path__)} - {"base"}
    assert {f.NAME for f in core_families.FAMILIES} == core == nodes_side == set(node_families.NODE_FAMILIES)
    for family in core_families.FAMILIES:
        assert callable(family.detect) and callable(family.owns) and family.LABEL


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_belongs_to_exactly_one_family(name):
    config, family = CONFIGS[name]
    owners = [f.NAME for f in core_families.FAMILIES if f.owns(config)]
    assert owners == [family]
    assert family_for(config).NAME == family


def test_family_inputs_are_apply_inputs_and_each_is_read_by_some_adapter():
    optional = IPAApplyAdapter.INPUT_TYPES()["optional"]
    assert set(FAMILY_INPUTS) == {"faceid_lora_strength", "weight_faceidv2", "weight_kolors"} <= set(optional)
    read = {name for config, _ in CONFIGS.values() for name in FAMILY_INPUTS if name not in unused_inputs(config)}
    assert read == set(FAMILY_INPUTS)


@pytest.mark.parametrize("name, shown", [
    ("sd plus", []), ("sdxl vit-G", []), ("flux", []), ("sd3", []), ("faceid portrait", []),
    ("faceid", ["faceid_lora_strength"]),
    ("faceid plus", ["faceid_lora_strength", "weight_faceidv2"]),
    ("kolors faceid", ["weight_faceidv2", "weight_kolors"]),
])
def test_unused_inputs_leave_exactly_what_the_adapter_reads(name, shown):
    config, _ = CONFIGS[name]
    assert [n for n in FAMILY_INPUTS if n not in unused_inputs(config)] == shown
