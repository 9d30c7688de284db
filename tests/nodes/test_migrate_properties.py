"""Property-based: UI and API graphs around the pack's nodes, with Reroutes, muted and bypassed nodes,
stale links, older widget layouts and subgraphs, always convert (no exception: the command's exit 0),
every pack node converted or named in the report, every other node and link kept or named, and the result
fits our nodes' real inputs (the stand-in) wherever the report has no problem.
"""
import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pack_workflows import api_of, pack_workflow
from test_migrate_graphs import _reroute_between, _subgraph_workflow, fits_the_standin
from nodes import migrate, migrate_table as table
from nodes.migrate import convert, validate_api, validate_ui

SUPPORTED = sorted(t for t, e in table.PACK.items() if migrate.entry_status(e) is None)
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def ui_graphs(draw):
    wf = _subgraph_workflow() if draw(st.integers(0, 9)) == 0 else pack_workflow(draw(st.sampled_from(SUPPORTED)))
    nodes = wf["nodes"]
    pack = [n for n in nodes if n["type"] in table.PACK]
    for n in pack:
        layouts = table.OLD_LAYOUTS.get(n["type"])
        if layouts and draw(st.booleans()):  # an older version saved it
            n["widgets_values"] = n["widgets_values"][:len(draw(st.sampled_from(layouts)))]
        n["mode"] = draw(st.sampled_from([0, 0, 0, 2, 4]))
    for _ in range(draw(st.integers(0, 3))):  # Reroutes on random links
        if wf["links"]:
            link = draw(st.sampled_from(wf["links"]))
            _reroute_between(wf, link[0], hops=draw(st.integers(1, 2)))
    if draw(st.booleans()) and wf["links"]:  # a stale entry: its target input records another link
        victim = draw(st.sampled_from(wf["links"]))
        wf["last_link_id"] += 1
        wf["links"].append([wf["last_link_id"], victim[1], victim[2], victim[3], victim[4], victim[5]])
    return wf


def _check(wf, new, report):
    pack_ids = {str(n["id"]) for n in wf["nodes"] if n["type"] in table.PACK}
    named = {n.node.split(" ")[0] for n in report.notes if n.node}
    new_ids = {str(n["id"]) for n in new["nodes"]}
    for nid in pack_ids:  # converted (gone, with its line) or named
        assert nid in named
    for n in wf["nodes"]:  # every other node kept or named
        if str(n["id"]) not in pack_ids:
            assert str(n["id"]) in new_ids or str(n["id"]) in named
    new_links = {tuple(l[:5]) for l in new["links"]}
    for l in wf["links"]:  # every link between other nodes kept or named on one of its ends
        if str(l[1]) not in pack_ids and str(l[3]) not in pack_ids:
            assert tuple(l[:5]) in new_links or {str(l[1]), str(l[3])} & named


@PROPS
@given(wf=ui_graphs(), legacy=st.booleans())
def test_ui_graphs_always_convert_and_keep_or_name_everything(host, wf, legacy):
    before = copy.deepcopy(wf)
    new, report = convert(wf, legacy=legacy)
    assert wf == before and validate_ui(new) == []
    _check(wf, new, report)
    if not report.of("problem") and not [n for n in new["nodes"] if n["type"] in table.PACK]:
        assert fits_the_standin(host, new)


@PROPS
@given(node_type=st.sampled_from(SUPPORTED), data=st.data())
def test_api_graphs_always_convert_and_keep_or_name_everything(node_type, data):
    api = api_of(pack_workflow(node_type))
    ids = sorted(api)
    for _ in range(data.draw(st.integers(0, 3))):  # broken links: missing nodes, negative or huge slots
        nid = data.draw(st.sampled_from(ids))
        api[nid]["inputs"][data.draw(st.sampled_from(["model", "image", "clip", "x"]))] = [
            data.draw(st.sampled_from(ids + ["9999"])), data.draw(st.integers(-5, 7))]
    new, report = convert(api, legacy=data.draw(st.booleans()))
    assert validate_api(new) == []
    pack_ids = {k for k, v in api.items() if v["class_type"] in table.PACK}
    named = {n.node.split(" ")[0] for n in report.notes if n.node}
    assert pack_ids <= named
    assert {k for k in api if k not in pack_ids} <= set(new)
