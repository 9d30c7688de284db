"""The README's model-file tables and the example workflows agree: every model file an example selects is
named in the README, so a user who downloads what the README lists has what the examples load."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "example_workflows").glob("*.json"))
# loader node -> its widget values that are model file names (the host's or ours)
FILE_WIDGETS = {"IPALoadAdapter": 1, "CLIPVisionLoader": 1, "IPALoadSigLIPVision": 1, "CheckpointLoaderSimple": 1,
                "UNETLoader": 1}


def selected_files(path):
    wf = json.loads(path.read_text())
    return {(n["type"], v) for n in wf["nodes"] if n["type"] in FILE_WIDGETS
            for v in n["widgets_values"][:FILE_WIDGETS[n["type"]]]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_model_file_an_example_selects_is_in_the_readme(path):
    readme = (ROOT / "README.md").read_text()
    missing = {f"{node}: {name}" for node, name in selected_files(path) if f"`{name}`" not in readme}
    assert not missing, f"{path.name} selects files the README never names: {sorted(missing)}"


def test_the_readme_stays_short_and_links_existing_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    links = [part.split(")")[0] for part in readme.split("](")[1:]]
    local = [link for link in links if not link.startswith(("http", "#"))]
    assert "docs/nodes.md" in local and "CONTRIBUTING.md" in local
    # every linked file must exist
    absent = [link for link in local if not (ROOT / link).exists()]
    assert not absent, absent
