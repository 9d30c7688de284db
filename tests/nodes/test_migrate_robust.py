"""The workflow converter on damaged, hostile and very large files: it repairs what the ComfyUI frontend
repairs (and says so), checks every field's type before use, never recurses as deep as the input nests,
places and wires in n log n, checks values against our inputs before reporting them mapped, and never
overwrites its input. Exit codes: 0 written (with a report), 1 unreadable or not a workflow (one line),
3 a bug of the converter (one line, nothing written); never a traceback.
"""
import copy
import json

import pytest

from pack_workflows import IndexedBuilder as _FastBuilder, _Graph, api_of, base_graph, pack_workflow
from nodes import migrate, migrate_table as table
from nodes.migrate import convert, node_rect, validate_api, validate_ui
from test_migrate import _node, _values


def _overlapping(wf):
    """Pairs of overlapping node rects (a sweep by x: fine for a thousand nodes)."""
    rects = sorted((node_rect(n), n["id"]) for n in wf["nodes"])
    pairs = []
    for i, (a, ida) in enumerate(rects):
        for b, idb in rects[i + 1:]:
            if b[0] >= a[2]:
                break
            if migrate._overlap(a, b):
                pairs.append((ida, idb))
    return pairs


def _run(tmp_path, capsys, text, *args, name="in.json"):
    src = tmp_path / name
    src.write_text(text, encoding="utf-8") if isinstance(text, str) else src.write_bytes(text)
    out = tmp_path / "out.json"
    code = migrate.main([str(src), "-o", str(out), *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code != 0:
        assert len(captured.err.strip().splitlines()) == 1, captured.err  # one line
        assert not out.exists()
    return code, captured, out


# ------------------------------------------------------------------------------------------ links the frontend repairs

def test_a_stale_link_entry_is_dropped_and_reported():
    """A `links` entry whose target input records another link (the real-world file that stopped with
    'link 371 is not recorded on node 164's input 0')."""
    wf = pack_workflow("IPAdapterAdvanced")
    ks = _node(wf, "KSampler")
    ckpt = _node(wf, "CheckpointLoaderSimple")
    wf["links"].append([371, ckpt["id"], 0, ks["id"], 0, "MODEL"])  # KSampler.model records the adapter's link
    wf["last_link_id"] = 371
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert any("link 371 is stale" in n.text and n.node.startswith(f"{ks['id']} ") for n in report.of("problem"))
    assert _node(new, "KSampler")["inputs"][0]["link"] is not None
    assert "IPAApplyAdapter" in [n["type"] for n in new["nodes"]]


def test_a_link_entry_naming_another_target_never_clears_an_unrelated_input_silently():
    """The entry of the link a CLIPTextEncode's `clip` records names another node's input: the input is what
    the frontend executes, so the link is moved there, with its own line on the CLIPTextEncode."""
    wf = pack_workflow("IPAdapterAdvanced")
    enc = _node(wf, "CLIPTextEncode")
    lid = enc["inputs"][0]["link"]
    entry = next(l for l in wf["links"] if l[0] == lid)
    entry[3], entry[4] = _node(wf, "VAEDecode")["id"], 1  # VAEDecode.vae records its own link
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert _node(new, "CLIPTextEncode")["inputs"][0]["link"] == lid
    assert _node(new, "VAEDecode")["inputs"][1]["link"] is not None
    assert any(f"records link {lid}" in n.text and n.node == f"{enc['id']} CLIPTextEncode" for n in report.of("problem"))


def test_an_input_naming_a_missing_link_is_cleared_with_a_line_and_duplicate_entries_use_the_last():
    wf = pack_workflow("IPAdapterAdvanced")
    enc = _node(wf, "CLIPTextEncode")
    enc["inputs"][0]["link"] = 9999
    first = copy.deepcopy(wf["links"][0])
    wf["links"].insert(0, [first[0], 123456, 0, first[3], first[4], first[5]])  # an older copy under the same id
    new, report = convert(wf)
    assert validate_ui(new) == []
    text = report.text()
    assert "records link 9999, which does not exist" in text and f"link {first[0]} is listed twice" in text


@pytest.mark.parametrize("bad_link", [[1, 2], "x", [7, 1, "0", 2, 0, "MODEL"], [7, 1, -1, 2, 0, "MODEL"], {"id": 3},
                                      [True, 1, 0, 2, 0, "X"], [8, [1], 0, 2, 0, "X"]])
def test_malformed_link_entries_are_dropped_and_named(bad_link):
    wf = pack_workflow("IPAdapterAdvanced")
    wf["links"].append(bad_link)
    new, report = convert(wf)
    assert validate_ui(new) == [] and "IPAApplyAdapter" in [n["type"] for n in new["nodes"]]
    assert any("is not [id, from node, slot, to node, slot, type]" in n.text for n in report.of("problem"))


# ------------------------------------------------------------------------------------------ fields of the wrong type

def _break(wf, what):
    adv, ks = _node(wf, "IPAdapterAdvanced"), _node(wf, "KSampler")
    if what == "widgets_values int":
        adv["widgets_values"] = 7
    elif what == "pos string":
        adv["pos"] = "12,40"
        ks["pos"] = None
    elif what == "size nan":
        adv["size"] = [float("nan"), 1e400]
    elif what == "last ids strings":
        wf["last_node_id"], wf["last_link_id"] = "12", [3]
    elif what == "pack inputs a dict":
        adv["inputs"] = {"model": None}
    elif what == "core inputs a dict":
        ks["inputs"] = {"model": 3}
    elif what == "outputs a string":
        ks["outputs"] = "LATENT"
    elif what == "input link a string":
        ks["inputs"][1]["link"] = "4"
    elif what == "input name a list":
        adv["inputs"][0]["name"] = ["model"]
    elif what == "subgraph an int":
        wf["definitions"] = {"subgraphs": [5, {"nodes": "x"}]}
    elif what == "properties 600 deep":
        deep = {}
        for _ in range(600):
            deep = {"a": deep}
        ks["properties"] = deep
    elif what == "mode a string":
        adv["mode"] = "4"


BREAKS = ["widgets_values int", "pos string", "size nan", "last ids strings", "pack inputs a dict", "core inputs a dict",
          "outputs a string", "input link a string", "input name a list", "subgraph an int", "properties 600 deep",
          "mode a string"]


@pytest.mark.parametrize("what", BREAKS)
def test_every_field_is_checked_for_its_type_before_use(tmp_path, capsys, what):
    wf = pack_workflow("IPAdapterAdvanced")
    _break(wf, what)
    before = json.dumps(wf)
    code, captured, out = _run(tmp_path, capsys, before)
    assert code == 0, captured.err
    new = json.loads(out.read_text())
    assert validate_ui(new) == []
    assert (tmp_path / "in.json").read_text() == before
    if what in ("widgets_values int", "pack inputs a dict", "input name a list"):
        assert "IPAdapterAdvanced" in [n["type"] for n in new["nodes"]]  # kept, with its reasons
        assert "[kept]" in captured.out
    if what not in ("pos string", "size nan", "properties 600 deep", "mode a string"):
        assert "[problem]" in captured.out


@pytest.mark.parametrize("text, says", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper"),
    ('{"nodes": [{"id": 1, "type": ["IPAdapter"]}], "links": []}', "type"),
    ('{"1": {"class_type": ["IPAdapter"], "inputs": {}}}', "class_type"),
    ('{"nodes": [{"id": [1], "type": "KSampler"}], "links": []}', "id"),
    ("{\"nodes\": [", "cannot read"),
    ('{"nodes": [], "links": {"1": [1, 1, 0, 2, 0, "MODEL"]}}', "not a ComfyUI workflow"),
    (b"\xff\xfe{}", "cannot read"),
])
def test_unreadable_files_end_in_one_line_and_exit_1(tmp_path, capsys, text, says):
    code, captured, _ = _run(tmp_path, capsys, text)
    assert code == 1 and says in captured.err


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, capsys):
    code, captured, out = _run(tmp_path, capsys, b"\xef\xbb\xbf" + json.dumps(pack_workflow("IPAdapter")).encode())
    assert code == 0 and "IPAApplyAdapter" in out.read_text()


@pytest.mark.parametrize("value", [["5", -5], ["5", 99], ["nope", 0]])
def test_api_links_to_slots_or_nodes_that_do_not_exist_are_dropped_and_named(value):
    api = api_of(pack_workflow("IPAdapterAdvanced"))
    adv = next(k for k, v in api.items() if v["class_type"] == "IPAdapterAdvanced")
    ks = next(k for k, v in api.items() if v["class_type"] == "KSampler")
    src = next(k for k, v in api.items() if v["class_type"] == "LoadImage")
    value = [src if value[0] == "5" else value[0], value[1]]
    api[adv]["inputs"]["attn_mask"] = value
    api[ks]["inputs"]["positive"] = value
    new, report = convert(api)
    assert validate_api(new) == []
    assert "positive" not in new[ks]["inputs"] or new[ks]["inputs"]["positive"] == value
    assert any(str(value[1]) in n.text or str(value[0]) in n.text for n in report.of("problem")) or value[1] == 99


def test_api_inputs_that_are_not_an_object(tmp_path, capsys):
    api = api_of(pack_workflow("IPAdapterAdvanced"))
    adv = next(k for k, v in api.items() if v["class_type"] == "IPAdapterAdvanced")
    ks = next(k for k, v in api.items() if v["class_type"] == "KSampler")
    api[adv]["inputs"], api[ks]["inputs"] = [1, 2], "x"
    code, captured, out = _run(tmp_path, capsys, json.dumps(api))
    assert code == 0 and "not an object of named inputs" in captured.out
    assert json.loads(out.read_text())[adv]["class_type"] == "IPAdapterAdvanced"  # kept


# ------------------------------------------------------------------------------------------ values against our inputs

@pytest.mark.parametrize("name, value, says", [
    ("weight", "abc", "is a str, not a float"), ("weight", 7.5, "outside the range"),
    ("weight_type", {"a": 1}, "is a dict, not a combo"), ("weight_type", "sideways", "not a choice"),
    ("start_at", True, "not a float"), ("combine_embeds", 3, "not a combo"),
])
def test_values_are_checked_against_our_inputs_before_they_are_reported_mapped(name, value, says):
    wf = pack_workflow("IPAdapterAdvanced", {name: value})
    for source in (wf, api_of(wf)):
        new, report = convert(source)
        lines = [n for n in report.notes if n.text.startswith(f"{name}=")]
        assert lines and all(n.kind == "not supported" for n in lines), report.text()
        assert says in lines[0].text
    node_type, our_name = {"combine_embeds": ("IPAEncodeImagePrompt", "combine")}.get(name, ("IPAApplyAdapter", name))
    assert _values(convert(wf)[0], node_type)[our_name] == table.OURS[node_type]["defaults"][our_name]


# ------------------------------------------------------------------------------------------ size and depth

def test_1200_chained_pack_nodes_listed_last_first():
    """Prep Image -> Prep Image -> ... (a pass-through chain resolved by a loop) and Apply -> Apply -> ...
    (wired upstream first, with an explicit stack), the file listing them last-first."""
    g = _Graph()
    g.b = _FastBuilder.__new__(_FastBuilder)
    _FastBuilder.__init__(g.b)
    g.ids = base_graph(g.b)
    g.providers = {t: g.ids[t] for t in ("CheckpointLoaderSimple", "LoadImage", "CLIPVisionLoader", "CLIPTextEncode")}
    image = (g.ids["LoadImage"], 0)
    for _ in range(600):
        prep = g.b.node("PrepImageForClipVision", {"crop_position": "pad"})
        g.b.link(image[0], image[1], prep, "image")
        image = (prep, 0)
    g.providers["LoadImage"] = image[0]
    model = (g.ids["CheckpointLoaderSimple"], 0)
    for _ in range(600):
        nid = g.add("IPAdapterAdvanced", skip=("model",))
        g.b.link(model[0], model[1], nid, "model")
        model = (nid, 0)
    g.b.link(model[0], model[1], g.ids["KSampler"], "model")
    wf = g.b.wf
    wf["nodes"].reverse()
    new, report = convert(wf)
    assert validate_ui(new) == []
    types = [n["type"] for n in new["nodes"]]
    assert types.count("IPAApplyAdapter") == 600 and not [t for t in types if t in table.PACK]
    assert all(v["crop"] == "pad" for v in (dict(zip(migrate.our_widgets("IPAEncodeImagePrompt"), n["widgets_values"]))
                                            for n in new["nodes"] if n["type"] == "IPAEncodeImagePrompt"))
    api, _ = convert(api_of(wf))
    assert validate_api(api) == [] and sum(v["class_type"] == "IPAApplyAdapter" for v in api.values()) == 600


def _pile(n, place, node_type=lambda i: "IPAdapterAdvanced"):
    """n pack nodes at place(i), each fed by the same four providers."""
    b = _FastBuilder()
    ckpt = b.node("CheckpointLoaderSimple", pos=[-2000, 0])
    loader = b.node("IPAdapterModelLoader", pos=[-2000, 400])
    image = b.node("LoadImage", pos=[-2000, 800])
    clip = b.node("CLIPVisionLoader", pos=[-2000, 1200])
    for i in range(n):
        nid = b.node(node_type(i), pos=place(i))
        for src, slot, name in ((ckpt, 0, "model"), (loader, 0, "ipadapter"), (image, 0, "image"), (clip, 0, "clip_vision")):
            b.link(src, slot, nid, name)
    return b


def test_500_pack_nodes_on_one_spot_are_placed_without_overlaps():
    new, report = convert(_pile(500, lambda i: [100, 100]).wf)
    assert validate_ui(new) == [] and sum("IPAdapterAdvanced" in n.node for n in report.of("converted")) == 500
    assert _overlapping(new) == []


def _pile_steps(n):
    """Steps of the placement (column look-ups, run merges) for n pairs of our nodes piled near one spot, each
    a little off the last (no two requests alike), among kept nodes."""
    space = migrate._Space()
    for i in range(20):
        space.add((i * 150.0, (i % 3) * 200.0, i * 150.0 + 140, (i % 3) * 200.0 + 100))
    for i in range(n):
        space.place((100 + i * 0.01, 70, 420 + i * 0.01, 390))
        space.place((100 + i * 0.37 % 50, 70, 420 + i * 0.37 % 50, 530))
    return space.steps


def _ladder_steps(n):
    """Steps for n of our nodes placed near one spot (no two alike) over a ladder of n kept nodes whose gaps are
    too low for them: each placement jumps the whole ladder."""
    space = migrate._Space()
    for i in range(n):
        space.add((100.0, i * 200.0, 400.0, i * 200.0 + 50))
    for i in range(n):
        space.place((100 + i * 0.01, -30, 420 + i * 0.01, 290))
    return space.steps


def _staggered_steps(n):
    """Steps for n of our nodes, each starting elsewhere, over two half-width ladders of kept nodes staggered so
    that each column has room where the other has none: a placement walks down both, in turn."""
    space = migrate._Space()
    for i in range(n):
        space.add((0.0, i * 1000.0, 150.0, i * 1000.0 + 500))
        space.add((250.0, i * 1000.0 + 500, 400.0, i * 1000.0 + 1000))
    for i in range(n):
        space.place((i % 7, (i * 37) % 1000 - 30, 320 + i % 7, (i * 37) % 1000 + 290))
    return space.steps


def test_placing_a_pile_grows_linearly_in_its_size():
    """The issue's hang: every new node tested against every placed one (a pile of 5,000 took minutes). Counted
    in steps, not seconds: four times the pile, about four times the steps (a quadratic placement: sixteen). The
    same over a ladder of kept nodes whose gaps no new node fits in, and over two staggered ladders."""
    for steps in (_pile_steps, _ladder_steps, _staggered_steps):
        small, large = steps(500), steps(2000)
        assert large < 4.5 * small and small < 100 * 500, steps.__name__


def test_a_jittered_pile_is_placed_without_overlaps():
    b = _pile(300, lambda i: [100 + (i * 7) % 90, 100 + (i * 13) % 40],
              lambda i: "IPAdapterAdvanced" if i % 3 else "IPAdapterFaceID")  # two sizes of nodes, no two spots alike
    b.node("Note", pos=[180, 300])  # a kept node inside the pile
    new, report = convert(b.wf)
    assert validate_ui(new) == [] and len(report.of("converted")) == 301  # and the loader
    assert _overlapping(new) == []


def test_the_space_places_below_whatever_it_would_overlap():
    space = migrate._Space()
    for r in [(0, 0, 100, 100), (50, 120, 150, 400), (-5000, 500, 5000, 520), (1e300, 0, float("inf"), 10)]:
        space.add(r)
    placed = space.place((10, 10, 60, 60))
    assert placed[1] == 400 + migrate.GAP + 1 and placed[2] - placed[0] == 50 and placed[3] - placed[1] == 50
    assert space.place((10, 10, 60, 60))[1] > placed[3]  # the same request again goes below the first
    assert space.place((2000, 0, 2100, 50)) == (2000, 0, 2100, 50)  # free spot: unchanged


# ------------------------------------------------------------------------------------------ the input is never overwritten

def test_the_input_is_never_overwritten_unless_asked(tmp_path, capsys):
    src = tmp_path / "wf.json"
    text = json.dumps(pack_workflow("IPAdapterAdvanced"))
    src.write_text(text)
    link = tmp_path / "link.json"
    link.symlink_to(src)
    for target in (src, link, tmp_path / "." / "wf.json"):
        assert migrate.main([str(src), "-o", str(target)]) == 1
        assert "refusing to overwrite" in capsys.readouterr().err
        assert src.read_text() == text
    assert migrate.main([str(src), "-o", str(link), "--overwrite"]) == 0
    assert link.is_symlink() and "IPAApplyAdapter" in src.read_text()
    assert validate_ui(json.loads(src.read_text())) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".migrate-")] == []  # no temporary left


def test_an_inconsistent_result_exits_3_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(migrate, "validate_ui", lambda wf: ["link 371 is not recorded on node 164's input 0"])
    text = json.dumps(pack_workflow("IPAdapterAdvanced"))
    code, captured, out = _run(tmp_path, capsys, text)
    assert code == 3 and "internal error" in captured.err and "link 371" in captured.err
    assert (tmp_path / "in.json").read_text() == text


def test_any_other_failure_of_ours_exits_3(tmp_path, capsys, monkeypatch):
    def broken(*a):
        raise KeyError("oops")
    monkeypatch.setattr(migrate, "_convert_ui", broken)
    code, captured, _ = _run(tmp_path, capsys, json.dumps(pack_workflow("IPAdapter")))
    assert code == 3 and "KeyError" in captured.err


def test_the_written_file_is_the_converted_workflow(tmp_path, capsys):
    wf = pack_workflow("IPAdapterAdvanced")
    code, captured, out = _run(tmp_path, capsys, json.dumps(wf))
    assert code == 0 and json.loads(out.read_text()) == convert(wf)[0]
    api = api_of(wf)
    code, captured, out = _run(tmp_path, capsys, json.dumps(api), name="api.json")
    assert code == 0 and json.loads(out.read_text()) == convert(api)[0]
