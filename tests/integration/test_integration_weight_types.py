"""Weight types and embeds scaling in the real host, against the widely used pack loaded beside ours
(run_weight_types.py). Skipped without COMFYUI_PATH, failed in CI (conftest.py)."""
import pytest

from scenario import last_result

SCRIPT = "run_weight_types.py"


def _run(family, tmp_path):
    return last_result(SCRIPT, [family], tmp_path, timeout=3600)


@pytest.mark.parametrize("family,layers,blocks", [("sd15", 16, 16), ("sdxl", 70, 11)])
def test_attn2_outputs_equal_the_widely_used_pack(tmp_path, family, layers, blocks):
    r = _run(family, tmp_path)
    # the translation table is the host's own transformer_index, recorded from a real UNet forward
    assert r["recorded_layers"] == layers and r["host_blocks"] == blocks and r["table_matches_host"]
    assert r["n_cases"] >= (68 if family == "sd15" else 19)
    for name, c in r["cases"].items():
        assert c["layers_compared"] == layers - (1 if family == "sd15" else 10), name  # all but the middle block
        assert c["max_rel_err"] < 1e-5, (name, c)
        assert c["layers_with_image_term"] > 0, name  # the pack's image term is really there
    # the one intended difference: where the table weights the middle block, ours applies it
    assert r["cases"]["strong style transfer / " + ("V only" if family == "sd15" else "K+mean(V) w/ C penalty")][
        "middle_layers_changed_by_ours"] == (1 if family == "sd15" else 10)
    assert r["cases"]["style transfer / " + ("V only" if family == "sd15" else "K+V")]["middle_layers_changed_by_ours"] == 0
