"""Convert workflows of the widely used pack (ComfyUI_IPAdapter_plus) to this pack's nodes.

    python -m nodes.migrate IN.json [-o OUT.json] [--legacy]

or, from Python, `convert(workflow, legacy=False) -> (new_workflow, report)`.

Plain json + stdlib: no torch, no ComfyUI. What each pack node becomes is data (nodes/migrate_table.py).
Reads UI-format workflows (nodes / links / positional widgets_values, groups, notes) and API-format prompts
({id: {class_type, inputs}}). Every pack node is replaced by ours, links are rewired, each widget value is
mapped by input name, every other node, group and note is kept, and new nodes are placed where they overlap
nothing. The report lists each node converted and each option mapped, approximated or not supported.

Pack nodes whose counterpart does not exist yet (and anything joined to them by the pack's own types,
IPADAPTER / EMBEDS / ...) are kept unchanged and reported, so the written workflow stays valid.
Exit status: 0 when a workflow was written (even with notes), 1 when none could be.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field

from . import migrate_table as table

TITLE_H = 30  # LiteGraph draws the title above `pos`
GAP = 20
KINDS = ("converted", "mapped", "approximated", "not needed", "not supported yet", "not supported", "kept", "problem")


class NotAWorkflow(ValueError):
    """The input is neither a UI-format workflow nor an API-format prompt."""


@dataclass
class Note:
    node: str  # "7 IPAdapterAdvanced", or "" for the workflow
    kind: str  # one of KINDS
    text: str

    def __str__(self):
        return f"[{self.kind}] {self.node + ': ' if self.node else ''}{self.text}"


@dataclass
class Report:
    notes: list = field(default_factory=list)

    def add(self, node, kind, text):
        assert kind in KINDS, kind
        self.notes.append(Note(node, kind, text))

    def of(self, kind):
        return [n for n in self.notes if n.kind == kind]

    def text(self) -> str:
        counts = ", ".join(f"{len(self.of(k))} {k}" for k in KINDS if self.of(k))
        return "\n".join([str(n) for n in self.notes] + [f"summary: {counts or 'no pack nodes found'}"])


# ------------------------------------------------------------------------------------------ the tables, read

def _names(specs):
    return [s.split(":")[0] for s in specs]


def pack_inputs(entry):
    """[(name, type)] in the pack's INPUT_TYPES order (required, then optional)."""
    return [tuple(s.split(":")) for s in entry["required"] + entry["optional"]]


def pack_widgets(entry):
    return [n for n, t in pack_inputs(entry) if t in table.WIDGET_TYPES]


def our_inputs(node_type):
    return pack_inputs(table.OURS[node_type])


def our_widgets(node_type):
    links_only = table.OURS[node_type].get("links_only", ())
    return [n for n, t in our_inputs(node_type) if t in table.WIDGET_TYPES and n not in links_only]


def _target_exists(entry, target: str) -> bool:
    local, name = target.split(".", 1)
    if local == "consumers":
        return True
    node_type = entry["nodes"].get(local)
    return node_type in table.OURS and name in [n for n, _ in our_inputs(node_type)]


def _our_name(entry, target):
    local, name = target.split(".", 1)
    return f"{entry['nodes'].get(local, local)}.{name}"


def _pending_text(name):
    reason = table.PENDING.get(name)
    return f"not supported yet: {reason}" if reason else f"not supported yet: needs {name}, which does not exist here"


def entry_status(entry):
    """None if the node converts today, else why not (its counterpart is missing)."""
    counterpart = entry.get("counterpart")
    if counterpart and (counterpart not in table.OURS or "nodes" not in entry):
        return _pending_text(counterpart)
    for node_type in entry.get("nodes", {}).values():
        if node_type not in table.OURS:
            return _pending_text(node_type)
    for target in list(entry.get("needs", ())) + list(entry.get("wires", {})):
        if not _target_exists(entry, target):
            return _pending_text(_our_name(entry, target))
    return None


_PACK_LAYER = re.compile(r"\s*([0-9]+)\s*:\s*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")


def pack_layer_weights(text):
    """The pack's "index:weight, ..." (the host's transformer index) -> ours, written "tINDEX:weight"
    (a bare "i:w" may be refused as ambiguous, see nodes/layer_weights.py). -> (string, note or None)."""
    parts = [p for p in str(text).replace("\n", ",").split(",") if p.strip()]
    matches = [_PACK_LAYER.fullmatch(p) for p in parts]
    if not all(matches):
        return str(text), "not in the pack's 'index:weight' form; passed as is (Apply IPAdapter checks it)"
    return ", ".join(f"t{m.group(1)}:{m.group(2)}" for m in matches), None


def _rules(entry, name):
    rules = entry.get("options", {}).get(name)
    return rules if isinstance(rules, list) else [rules] if rules else []


def _looks_like_pack(node_type, properties) -> bool:
    return (str(node_type).startswith(("IPAdapter", "IPAAdapter")) or
            str((properties or {}).get("cnr_id", "")).lower() == "comfyui_ipadapter_plus")


# ------------------------------------------------------------------------------------------ the graph

@dataclass
class _Link:
    src: str
    slot: int
    type: str = "*"


@dataclass
class _Instance:
    """One pack node being converted: its given inputs and the nodes it became."""
    id: str
    type: str
    entry: dict
    given: dict  # input name -> _Link | ("value", v)
    mode: int = 0
    pos: tuple = (0.0, 0.0)
    created: dict = field(default_factory=dict)  # local name -> new node id
    consumer_values: dict = field(default_factory=dict)  # our input name -> value for nodes this one feeds

    @property
    def label(self):
        return f"{self.id} {self.type}"


class _Converter:
    def __init__(self, legacy: bool):
        self.legacy = legacy
        self.report = Report()
        self.types = {}  # node id -> class type (all nodes)
        self.new_nodes = {}  # new id -> {"type", "values": {name: v}, "links": {name: ref}, "mode", "after"}
        self.instances = {}
        self.next_id = 0

    # -- shared by both formats
    def classify(self, nodes):
        """nodes: {id: (type, given inputs, problems)} -> the set of pack nodes to keep unchanged."""
        keep, pack = set(), set()
        for nid, (node_type, given, problems, props) in nodes.items():
            entry = table.PACK.get(node_type)
            if entry is None:
                if _looks_like_pack(node_type, props):
                    pack.add(nid)
                    keep.add(nid)
                    self.report.add(f"{nid} {node_type}", "kept", f"not a node of {table.PACK_VERSION} (an older or "
                                    "newer version?): kept unchanged, convert it by hand")
                continue
            pack.add(nid)
            status = entry_status(entry)
            if problems:
                keep.add(nid)
                for p in problems:
                    self.report.add(f"{nid} {node_type}", "problem", p)
                self.report.add(f"{nid} {node_type}", "kept", "kept unchanged because of the problems above")
            elif status:
                keep.add(nid)
                self.report.add(f"{nid} {node_type}", "not supported yet", f"kept unchanged ({status})")
        return pack, keep

    def close_kept(self, pack, keep, pack_links):
        """Grow `keep` over links of the pack's own types between pack nodes: ours cannot take those values."""
        changed = True
        while changed:
            changed = False
            for a, b in pack_links:
                if a in pack and b in pack and (a in keep) != (b in keep):
                    new = b if a in keep else a
                    keep.add(new)
                    other = a if new == b else b
                    self.report.add(f"{new} {self.types[new]}", "kept",
                                    f"kept unchanged: joined by the pack's own types to {other} {self.types[other]}, which is kept")
                    changed = True

    def new_node(self, node_type, inst):
        nid = str(self.next_id)
        self.next_id += 1
        values = {n: copy.deepcopy(v) for n, v in table.OURS[node_type]["defaults"].items()}
        self.new_nodes[nid] = {"type": node_type, "values": values, "links": {}, "mode": inst.mode, "from": inst.id}
        return nid

    def create(self, inst):
        for local, node_type in inst.entry["nodes"].items():
            inst.created[local] = self.new_node(node_type, inst)

    def resolve(self, link, seen=()):
        """Where a link's value really comes from: a _Link to a kept/foreign/new node, a pipeline dict, or None."""
        if link is None or not isinstance(link, _Link):
            return None
        inst = self.instances.get(link.src)
        if inst is None:
            return link
        if link.src in seen:
            return None
        omap = inst.entry["output_map"]
        if link.slot >= len(omap):
            return None
        return self._resolve_out(inst, omap[link.slot], seen + (link.src,))

    def _resolve_out(self, inst, spec, seen):
        if spec is None:  # an output with no counterpart here
            return None
        if isinstance(spec, dict):
            return {k: self._resolve_out(inst, v, seen) for k, v in spec.items()}
        if spec.startswith("in:"):
            given = inst.given.get(spec[3:])
            return self.resolve(given, seen) if isinstance(given, _Link) else None
        local, slot = spec.split(".")
        nid = inst.created[local]
        return _Link(nid, int(slot), table.OURS[self.new_nodes[nid]["type"]]["outputs"][int(slot)])

    def _set(self, inst, target, value=None, link=None):
        local, name = target.split(".", 1)
        node = self.new_nodes[inst.created[local]]
        if link is not None:
            node["links"][name] = link
        else:
            node["values"][name] = value

    def wire_all(self):
        """Wire every converted node, upstream first (a Prep Image node's crop reaches the encodes it feeds)."""
        done = set()

        def visit(inst):
            if inst.id in done:
                return
            done.add(inst.id)
            for g in inst.given.values():
                if isinstance(g, _Link) and g.src in self.instances:
                    visit(self.instances[g.src])
            self.wire(inst)

        for inst in list(self.instances.values()):
            visit(inst)

    def wire(self, inst):
        entry, label = inst.entry, inst.label
        for target, spec in entry.get("wires", {}).items():
            if spec == table.LEGACY:
                self._set(inst, target, bool(self.legacy))
            elif not isinstance(spec, str):  # a number
                self._set(inst, target, spec)
            elif spec.startswith("="):
                self._set(inst, target, spec[1:])
            else:
                local, slot = spec.split(".")
                nid = inst.created[local]
                self._set(inst, target, link=_Link(nid, int(slot), table.OURS[self.new_nodes[nid]["type"]]["outputs"][int(slot)]))
        for name, _ in pack_inputs(entry):
            rules = _rules(entry, name)
            if not rules:
                self.report.add(label, "problem", f"input '{name}' has no rule in the table (please report)")
            for rule in rules:
                self._apply_rule(inst, name, rule)
        for local, nid in inst.created.items():
            node = self.new_nodes[nid]
            for n, t in our_inputs(node["type"]):
                if t not in table.WIDGET_TYPES and n in _names(table.OURS[node["type"]]["required"]) and n not in node["links"]:
                    self.report.add(label, "problem", f"{node['type']}.{n} is not connected (nothing upstream gives it); connect it by hand")
        self.report.add(label, "converted", "-> " + " + ".join(f"{t} (node {inst.created[l]})" for l, t in entry["nodes"].items())
                        if entry["nodes"] else entry.get("removed", "removed: passes its input through"))
        for kind, text in entry.get("notes", ()):
            self.report.add(label, kind, text)

    def _apply_rule(self, inst, name, rule):
        label = inst.label
        given = inst.given.get(name)
        linked = isinstance(given, _Link)
        value = None if given is None or linked else given[1]
        shown = "connected" if linked else repr(value)
        if "ignore" in rule:
            if given is not None:
                self.report.add(label, "not needed", f"{name} ({shown}): {rule['ignore']}")
            return
        if "uncond_of" in rule:
            if linked:
                src, pos = self.resolve(given), self.resolve(inst.given.get(rule["uncond_of"]))
                if isinstance(src, dict) and isinstance(pos, _Link) and src.get("uncond_of") == pos:
                    self.report.add(label, "mapped", f"{name}: the embeds from {rule['uncond_of']} carry these unconditional tokens")
                else:
                    self.report.add(label, "not supported", f"{name}: unconditional embeds from another node have no "
                                    "counterpart (ours travel with the embeds); encode with negative_image instead")
            return
        if "settings_from" in rule:
            src = self.instances.get(given.src) if linked else None
            if src is not None and src.consumer_values:
                self._take_settings(inst, src, list(inst.created.values()))
            elif given is not None:
                self.report.add(label, "not needed", f"{name} ({shown}): {rule['settings_from']} gives no settings here")
            return
        same = rule.get("same", [])
        if "unsupported" in rule:
            if given is not None and not (value in same and not linked):
                self.report.add(label, "not supported", f"{name} ({shown}): {rule['unsupported']}")
            return
        targets = rule["to"] if isinstance(rule.get("to"), list) else [rule["to"]]
        for target in targets:
            requires = rule.get("requires")
            feature_ok = requires is None or requires.split(".", 1)[1] in table.OURS["IPAApplyAdapter"].get("features", ())
            if not _target_exists(inst.entry, target) or not feature_ok:
                missing = requires if not feature_ok else _our_name(inst.entry, target)
                if given is None or (not linked and value in same):
                    if given is not None:
                        self.report.add(label, "mapped", f"{name}={value!r}: our default does the same")
                else:
                    self.report.add(label, "not supported yet", f"{name} ({shown}): {_pending_text(missing)}; "
                                    "the converted node uses our default")
                continue
            self._map_to(inst, name, rule, target, given, linked, value)

    def _take_settings(self, inst, src, node_ids):
        """Values a node that became nothing here (Prep Image, InsightFace loader, ...) sets on the nodes it feeds."""
        for nid in node_ids:
            node = self.new_nodes[nid]
            for k, v in src.consumer_values.items():
                if k in node["values"] and node["values"][k] != v:
                    node["values"][k] = v
                    self.report.add(inst.label, "mapped", f"{k}={v!r} from {src.label} -> {node['type']}.{k}")

    def _map_to(self, inst, name, rule, target, given, linked, value):
        if linked and rule.get("linked_to"):  # a widget fed by a link: its list goes to another input here
            target = rule["linked_to"]
            if rule.get("linked_approx"):
                self.report.add(inst.label, "approximated", f"{name} (connected): {rule['linked_approx']}")
        label, ours = inst.label, _our_name(inst.entry, target)
        if given is None and rule.get("fallback"):
            pack_input, part = rule["fallback"].split(".")
            src = self.resolve(inst.given.get(pack_input))
            ref = src.get(part) if isinstance(src, dict) else None
            if ref is None:
                self.report.add(label, "problem", f"{name} is not connected and '{pack_input}' brings no {part}: "
                                f"connect a Load CLIP Vision node to {ours}")
            else:
                self._set(inst, target, link=ref)
                self.report.add(label, "mapped", f"{name}: the {part} of the pack's {pack_input} pipeline -> {ours}")
            return
        if given is None:
            return
        if linked:
            src = self.resolve(given)
            if rule.get("part"):
                src = src.get(rule["part"]) if isinstance(src, dict) else None
            elif isinstance(src, dict):
                src = None
            if rule.get("upstream") and isinstance(src, _Link):  # the input of our node that gives this value
                upstream = self.new_nodes.get(src.src, {}).get("links", {})
                src = upstream.get(rule["upstream"])
                if src is None:
                    self.report.add(label, "problem", f"{name}: its source has no {rule['upstream']} to reuse; "
                                    f"connect {ours} by hand")
                    return
                self._set(inst, target, link=src)
                self.report.add(label, "mapped", f"the {rule['upstream']} that made {name} -> {ours}")
                return
            if src is None:
                if rule.get("optional"):
                    return
                self.report.add(label, "problem", f"{name}: its source gives nothing this pack can use; connect {ours} by hand")
                return
            prep = self.instances.get(given.src)
            if prep is not None and prep.consumer_values:
                self._take_settings(inst, prep, [inst.created[target.split(".")[0]]])
            self._set(inst, target, link=src)
            note = " (the value arrives through a link and is passed as is)" if rule.get("values") else ""
            self.report.add(label, "mapped", f"{name} (connected) -> {ours}{note}")
            return
        values = rule.get("values")
        new = value
        if values is not None:
            if value not in values or values[value] is None:
                self.report.add(label, "not supported", f"{name}={value!r} has no counterpart; {ours} keeps its default")
                return
            new = values[value]
        fmt = rule.get("format")
        if fmt == "text":
            new = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        elif fmt == "plus version by file name":
            new = "v2 (shortcut)" if any(s in str(value).lower() for s in ("plusv2", "kolors")) else "v1"  # Kolors: always
        elif fmt == "pack layer weights":
            new, note = pack_layer_weights(value)
            if note:
                self.report.add(label, "approximated", f"{name}={value!r}: {note}")
        if target.startswith("consumers."):
            inst.consumer_values[target.split(".", 1)[1]] = new
            if rule.get("quiet"):  # reported by the nodes it reaches, if any
                return
            approx = rule.get("approx")
            self.report.add(label, "approximated" if approx else "mapped", f"{name}={value!r} -> "
                            f"{target.split('.', 1)[1]}={new!r} on the nodes this output feeds{': ' + approx if approx else ''}")
            return
        self._set(inst, target, new)
        approx = rule.get("approx")
        approx = approx.get(value) if isinstance(approx, dict) else approx
        shown_new = "" if new == value else f"={new!r}"
        if approx:
            self.report.add(label, "approximated", f"{name}={value!r} -> {ours}{shown_new}: {approx}")
        else:
            self.report.add(label, "mapped", f"{name}={value!r} -> {ours}{shown_new}")


# ------------------------------------------------------------------------------------------ UI format

def _size(node):
    s = node.get("size") or [200, 100]
    if isinstance(s, dict):
        s = [s.get("0", 200), s.get("1", 100)]
    return float(s[0]), float(s[1])


def _pos(node):
    p = node.get("pos") or [0, 0]
    if isinstance(p, dict):
        p = [p.get("0", 0), p.get("1", 0)]
    return float(p[0]), float(p[1])


def node_rect(node):
    """(x0, y0, x1, y1) of a UI node, its title bar included."""
    (x, y), (w, h) = _pos(node), _size(node)
    return x, y - TITLE_H, x + w, y + h


def _overlap(a, b, gap=0.0):
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _place(rect, placed):
    """Move rect down until it overlaps nothing in `placed` (terminates: y only grows, past finitely many rects)."""
    x0, y0, x1, y1 = rect
    while True:
        hit = [r for r in placed if _overlap((x0, y0, x1, y1), r, GAP)]
        if not hit:
            return x0, y0, x1, y1
        dy = max(r[3] for r in hit) + GAP + 1 - y0
        y0, y1 = y0 + dy, y1 + dy


def _ui_given(node, entry, links_by_id):
    """Pack node -> (given inputs by name, problems)."""
    problems, given = [], {}
    widgets = pack_widgets(entry)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some frontends store values by name
        unknown = [k for k in values if k not in widgets]
        if unknown:
            problems.append(f"widget values for unknown inputs {unknown}; this version's widgets are {widgets}")
        given.update({k: ("value", v) for k, v in values.items() if k in widgets})
    elif len(values) != len(widgets):
        problems.append(f"{len(values)} widget values {values!r}, but {table.PACK_VERSION} has {len(widgets)} "
                        f"widgets ({', '.join(widgets)}); saved with another version of the pack?")
    else:
        given.update({k: ("value", v) for k, v in zip(widgets, values)})
    names = {n for n, _ in pack_inputs(entry)}
    for inp in node.get("inputs") or []:
        link_id = inp.get("link")
        if link_id is None:
            continue
        if inp.get("name") not in names:
            problems.append(f"a link arrives at input '{inp.get('name')}', which {table.PACK_VERSION} does not have "
                            f"(its inputs: {', '.join(sorted(names))}); renamed in another version of the pack?")
            continue
        link = links_by_id.get(link_id)
        if link is not None:
            given[inp["name"]] = _Link(str(link[1]), int(link[2]), link[5] if len(link) > 5 else "*")
    return given, problems


def _convert_ui(wf, legacy):
    out = copy.deepcopy(wf)
    conv = _Converter(legacy)
    report = conv.report
    nodes = out["nodes"]
    by_id = {}
    for node in nodes:
        nid = str(node.get("id"))
        if nid in by_id:
            report.add(f"{nid} {node.get('type')}", "problem", "a second node with this id; it is dropped")
            continue
        by_id[nid] = node
        conv.types[nid] = node.get("type")
    nodes = list(by_id.values())
    for sub in (out.get("definitions") or {}).get("subgraphs") or []:
        inner = [n.get("type") for n in sub.get("nodes") or [] if n.get("type") in table.PACK]
        if inner:
            report.add("", "problem", f"subgraph {sub.get('name') or sub.get('id')!r} holds pack nodes {inner}, which "
                       "are not converted: convert the subgraph's nodes back into the graph first")
    # links: drop those whose ends are missing, naming them
    links = []
    for link in out.get("links") or []:
        if isinstance(link, dict) and "origin_id" in link:  # the frontend's object form of a link
            link = [link.get("id"), link["origin_id"], link.get("origin_slot", 0), link.get("target_id"),
                    link.get("target_slot", 0), link.get("type", "*")]
        if not isinstance(link, list) or len(link) < 5:
            report.add("", "problem", f"link {link!r} is not [id, from, slot, to, slot, type]; dropped")
            continue
        src, dst = str(link[1]), str(link[3])
        missing = [f"{end} node {n}" for end, n in (("from", src), ("to", dst)) if n not in by_id]
        if missing:
            report.add(f"{dst if dst in by_id else src} {conv.types.get(dst if dst in by_id else src, '?')}", "problem",
                       f"link {link[0]} comes {' and goes '.join(missing)}, which does not exist; the link is dropped")
            continue
        links.append(link)
    links_by_id = {link[0]: link for link in links}
    nodes_info, given_of = {}, {}
    for node in nodes:
        nid, entry = str(node["id"]), table.PACK.get(node.get("type"))
        given, problems = _ui_given(node, entry, links_by_id) if entry else ({}, [])
        given_of[nid] = given
        nodes_info[nid] = (node.get("type"), given, problems, node.get("properties"))
    pack, keep = conv.classify(nodes_info)
    pack_links = [(str(l[1]), str(l[3])) for l in links if (l[5] if len(l) > 5 else None) in table.PACK_TYPES]
    conv.close_kept(pack, keep, pack_links)
    conv.next_id = 1 + max([int(n) for n in by_id if n.lstrip("-").isdigit()] + [int(out.get("last_node_id") or 0)])
    converted = [n for n in nodes if str(n["id"]) in pack - keep]
    for node in converted:
        nid = str(node["id"])
        inst = _Instance(nid, node["type"], table.PACK[node["type"]], given_of[nid], node.get("mode", 0), _pos(node))
        conv.instances[nid] = inst
        conv.create(inst)
    conv.wire_all()
    # new links: every connection of a new node, then the links from converted nodes to kept / other nodes
    final_links = [l for l in links if str(l[1]) not in conv.instances and str(l[3]) not in conv.instances]
    next_link = 1 + max([int(l[0]) for l in links if str(l[0]).lstrip("-").isdigit()] + [int(out.get("last_link_id") or 0)])
    new_ui = {}
    for nid, spec in conv.new_nodes.items():
        new_ui[nid] = _ui_node(nid, spec)
    for nid, spec in conv.new_nodes.items():
        node = new_ui[nid]
        for name, ref in spec["links"].items():
            slot = _ui_input_slot(node, name, spec["type"])
            final_links.append([next_link, int(ref.src) if ref.src.lstrip("-").isdigit() else ref.src, ref.slot,
                                int(nid), slot, ref.type])
            next_link += 1
    for link in links:
        src, dst = str(link[1]), str(link[3])
        if src in conv.instances and dst not in conv.instances:
            ref = conv.resolve(_Link(src, int(link[2]), link[5] if len(link) > 5 else "*"))
            if not isinstance(ref, _Link):
                report.add(f"{dst} {conv.types[dst]}", "problem", f"input slot {link[4]} was fed by {src} "
                           f"{conv.types[src]}, which has no counterpart for it; left unconnected")
                continue
            final_links.append([next_link, int(ref.src) if ref.src.lstrip("-").isdigit() else ref.src, ref.slot,
                                link[3], link[4], ref.type if ref.type != "*" else (link[5] if len(link) > 5 else "*")])
            next_link += 1
    # nodes: kept and foreign as they were, converted ones replaced, new ones placed without overlaps
    kept_nodes = [n for n in nodes if str(n["id"]) not in conv.instances]
    placed = [node_rect(n) for n in kept_nodes]
    for inst in conv.instances.values():
        x, y = inst.pos
        for local, nid in inst.created.items():
            node = new_ui[nid]
            w, h = _size(node)
            x0, y0, x1, y1 = _place((x, y - TITLE_H, x + w, y + h), placed)
            node["pos"] = [x0, y0 + TITLE_H]
            placed.append((x0, y0, x1, y1))
            y = y1 + GAP + TITLE_H
    out["nodes"] = kept_nodes + [new_ui[n] for n in conv.new_nodes]
    out["links"] = final_links
    _sync_slots(out)
    out["last_node_id"] = max([int(out.get("last_node_id") or 0)] + [int(n["id"]) for n in out["nodes"] if str(n["id"]).lstrip("-").isdigit()])
    out["last_link_id"] = max([int(out.get("last_link_id") or 0)] + [int(l[0]) for l in final_links])
    return out, report


def _ui_node(nid, spec):
    t = spec["type"]
    ours = table.OURS[t]
    inputs = [{"name": n, "type": ty, "link": None} for n, ty in our_inputs(t)
              if ty not in table.WIDGET_TYPES or n in ours.get("links_only", ())]
    for name in spec["links"]:  # a widget fed by a link becomes an input slot
        if name in our_widgets(t):
            ty = dict(our_inputs(t))[name]
            inputs.append({"name": name, "type": ty, "widget": {"name": name}, "link": None})
    return {
        "id": int(nid), "type": t, "pos": [0, 0], "size": list(ours["size"]), "flags": {}, "order": 0,
        "mode": spec["mode"], "inputs": inputs,
        "outputs": [{"name": o.lower(), "type": o, "links": [], "slot_index": i} for i, o in enumerate(ours["outputs"])],
        "properties": {"Node name for S&R": t}, "widgets_values": [spec["values"][n] for n in our_widgets(t)],
    }


def _ui_input_slot(node, name, node_type):
    for i, inp in enumerate(node["inputs"]):
        if inp["name"] == name:
            return i
    raise KeyError(f"{node_type} has no input {name}")


def _sync_slots(wf):
    """Make every node's inputs[].link and outputs[].links agree with the links list."""
    into = {(str(l[3]), int(l[4])): l[0] for l in wf["links"]}
    out_of = {}
    for l in wf["links"]:
        out_of.setdefault((str(l[1]), int(l[2])), []).append(l[0])
    for node in wf["nodes"]:
        nid = str(node["id"])
        for i, inp in enumerate(node.get("inputs") or []):
            inp["link"] = into.get((nid, i))
        for i, o in enumerate(node.get("outputs") or []):
            want = out_of.get((nid, i), [])
            old = [x for x in (o.get("links") or []) if x in want]
            o["links"] = old + [x for x in want if x not in old]


def validate_ui(wf) -> list:
    """Structural problems of a UI-format workflow (empty list = valid): ids, link ends and slot bookkeeping."""
    problems = []
    ids = [str(n.get("id")) for n in wf.get("nodes", [])]
    if len(ids) != len(set(ids)):
        problems.append("duplicate node ids")
    nodes = {str(n["id"]): n for n in wf.get("nodes", [])}
    link_ids = [l[0] for l in wf.get("links", [])]
    if len(link_ids) != len(set(link_ids)):
        problems.append("duplicate link ids")
    for l in wf.get("links", []):
        src, dst = nodes.get(str(l[1])), nodes.get(str(l[3]))
        if src is None or dst is None:
            problems.append(f"link {l[0]} has a missing end")
            continue
        if l[2] >= len(src.get("outputs") or []) or l[4] >= len(dst.get("inputs") or []):
            problems.append(f"link {l[0]} uses a slot its nodes do not have")
            continue
        if dst["inputs"][l[4]].get("link") != l[0]:
            problems.append(f"link {l[0]} is not recorded on node {l[3]}'s input {l[4]}")
        if l[0] not in (src["outputs"][l[2]].get("links") or []):
            problems.append(f"link {l[0]} is not recorded on node {l[1]}'s output {l[2]}")
    known = set(link_ids)
    for n in wf.get("nodes", []):
        for inp in n.get("inputs") or []:
            if inp.get("link") is not None and inp["link"] not in known:
                problems.append(f"node {n['id']} input {inp.get('name')} names missing link {inp['link']}")
    if wf.get("nodes") and int(wf.get("last_node_id", 0)) < max(int(i) for i in ids if i.lstrip("-").isdigit()):
        problems.append("last_node_id is below a node id")
    if link_ids and int(wf.get("last_link_id", 0)) < max(link_ids):
        problems.append("last_link_id is below a link id")
    return problems


# ------------------------------------------------------------------------------------------ API format

def _convert_api(prompt, legacy):
    conv = _Converter(legacy)
    report = conv.report
    nodes_info, given_of = {}, {}
    for nid, node in prompt.items():
        conv.types[nid] = node.get("class_type")
    for nid, node in prompt.items():
        entry = table.PACK.get(node.get("class_type"))
        given, problems = {}, []
        for name, v in (node.get("inputs") or {}).items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                if str(v[0]) not in prompt:
                    report.add(f"{nid} {node.get('class_type')}", "problem", f"input '{name}' links to node {v[0]}, "
                               "which does not exist; the link is dropped")
                    continue
                src_entry = table.PACK.get(conv.types[str(v[0])])
                ty = src_entry["outputs"][v[1]] if src_entry and v[1] < len(src_entry["outputs"]) else "*"
                given[name] = _Link(str(v[0]), v[1], ty)
            else:
                given[name] = ("value", v)
        if entry:
            names = {n for n, _ in pack_inputs(entry)}
            for name in list(given):
                if name not in names:
                    problems.append(f"input '{name}' is not an input of this node in {table.PACK_VERSION} (its inputs: "
                                    f"{', '.join(sorted(names))}); renamed in another version of the pack?")
        given_of[nid] = given
        nodes_info[nid] = (node.get("class_type"), given, problems, None)
    pack, keep = conv.classify(nodes_info)
    pack_links = [(g.src, nid) for nid, given in given_of.items() for g in given.values()
                  if isinstance(g, _Link) and g.type in table.PACK_TYPES]
    conv.close_kept(pack, keep, pack_links)
    conv.next_id = 1 + max([int(n) for n in prompt if str(n).lstrip("-").isdigit()] + [0])
    for nid in prompt:
        if nid in pack - keep:
            inst = _Instance(nid, conv.types[nid], table.PACK[conv.types[nid]], given_of[nid])
            conv.instances[nid] = inst
            conv.create(inst)
    conv.wire_all()
    out = {}
    for nid, node in prompt.items():
        if nid in conv.instances:
            continue
        node = copy.deepcopy(node)
        for name, v in list((node.get("inputs") or {}).items()):
            if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                if str(v[0]) not in prompt:
                    del node["inputs"][name]
                elif str(v[0]) in conv.instances:
                    ref = conv.resolve(_Link(str(v[0]), v[1]))
                    if isinstance(ref, _Link):
                        node["inputs"][name] = [ref.src, ref.slot]
                    else:
                        report.add(f"{nid} {node.get('class_type')}", "problem", f"input '{name}' was fed by {v[0]} "
                                   f"{conv.types[str(v[0])]}, which has no counterpart for it; left unconnected")
                        del node["inputs"][name]
        out[nid] = node
    for nid, spec in conv.new_nodes.items():
        inputs = {n: spec["values"][n] for n in our_widgets(spec["type"])}
        inputs.update({n: [ref.src, ref.slot] for n, ref in spec["links"].items()})
        out[nid] = {"class_type": spec["type"], "inputs": inputs, "_meta": {"title": spec["type"]}}
    return out, report


def validate_api(prompt) -> list:
    problems = []
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            problems.append(f"node {nid} has no class_type")
            continue
        for name, v in (node.get("inputs") or {}).items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int) and str(v[0]) not in prompt:
                problems.append(f"node {nid} input {name} links to missing node {v[0]}")
    return problems


# ------------------------------------------------------------------------------------------ entry points

def workflow_format(workflow) -> str:
    """"ui" or "api"; raises NotAWorkflow naming what was found instead."""
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and isinstance(workflow.get("links", []), list):
        if all(isinstance(n, dict) and "id" in n and "type" in n for n in workflow["nodes"]):
            return "ui"
        raise NotAWorkflow("a UI workflow whose 'nodes' are not all objects with 'id' and 'type'")
    if isinstance(workflow, dict) and workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        return "api"
    kind = type(workflow).__name__
    keys = ", ".join(list(workflow)[:5]) if isinstance(workflow, dict) else ""
    raise NotAWorkflow(f"not a ComfyUI workflow: expected a UI workflow (with 'nodes' and 'links') or an API prompt "
                       f"({{id: {{class_type, inputs}}}}), got a {kind}{' with keys ' + keys if keys else ''}")


def convert(workflow: dict, legacy: bool = False):
    """Convert a workflow of ComfyUI_IPAdapter_plus to this pack's nodes.

    workflow: a UI-format workflow (as saved from the ComfyUI menu) or an API-format prompt, as parsed JSON.
    legacy:   set `legacy` on the converted Encode Image Prompt / Apply IPAdapter nodes, which then reproduce
              the pack's results (its preprocessing, its plus-model unconditional image, no middle block).
    Returns (new_workflow, report): the input is not modified; report.notes lists each node converted and
    each option mapped / approximated / not supported, report.text() prints them. Raises NotAWorkflow.
    """
    fmt = workflow_format(workflow)
    new, report = (_convert_ui if fmt == "ui" else _convert_api)(workflow, legacy)
    problems = (validate_ui if fmt == "ui" else validate_api)(new)
    if problems:  # a bug here, never the user's input: refuse to hand out a broken file
        raise RuntimeError("the converted workflow is inconsistent: " + "; ".join(problems))
    return new, report


def main(argv=None) -> int:  # exit codes: ip_core.errors (1 failed, 2 usage); not imported: no torch here
    parser = argparse.ArgumentParser(prog="python -m nodes.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a workflow .json (UI or API format) using ComfyUI_IPAdapter_plus nodes")
    parser.add_argument("-o", "--output", help="where to write the converted workflow (default: IN.converted.json)")
    parser.add_argument("--legacy", action="store_true", help="reproduce the pack's results (see README)")
    args = parser.parse_args(argv)
    try:
        with open(args.input, encoding="utf-8") as f:
            workflow = json.load(f)
    except (OSError, ValueError) as e:
        print(f"cannot read {args.input}: {e}", file=sys.stderr)
        return 1
    try:
        new, report = convert(workflow, legacy=args.legacy)
    except NotAWorkflow as e:
        print(f"{args.input}: {e}", file=sys.stderr)
        return 1
    output = args.output or (args.input[:-5] if args.input.endswith(".json") else args.input) + ".converted.json"
    try:
        with open(output, "w", encoding="utf-8") as f:
            json.dump(new, f, indent=2)
    except OSError as e:
        print(f"cannot write {output}: {e}", file=sys.stderr)
        return 1
    print(report.text())
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
