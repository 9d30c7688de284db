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
Pack nodes inside the frontend's subgraphs convert too, and a value of the pack's types that crosses a
subgraph's boundary is followed across it: the boundary slot takes our type (a pipeline's CLIP vision and the
embeds' adapter get a slot of their own), and the settings a loader gives the nodes it feeds reach them there.

Whatever the file holds, every field is checked for its type before use, nothing recurses as deep as the
input nests, and the time and memory grow with the file's size (placement and wiring: n log n in the nodes).
Links the ComfyUI frontend would repair on loading (stale, duplicate, half-recorded) are repaired the same
way, each with its own line in the report. The input file is never overwritten unless --overwrite asks.
Exit status: 0 a workflow was written (with its report), 1 the file is unreadable or not a workflow (one
line), 3 the converted workflow came out inconsistent: a bug of this tool (one line, nothing written).
"""
from __future__ import annotations

import argparse
import bisect
import copy
import functools
import json
import math
import os
import re
import sys
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field

from . import migrate_table as table

TITLE_H = 30  # LiteGraph draws the title above `pos`
REROUTE = "Reroute"  # the frontend's Reroute node: one input, one output, passes its value on
PRIMITIVE = "PrimitiveNode"  # the frontend's Primitive: a widget value shown as a node (absent from API prompts)
GAP = 20
KINDS = ("converted", "mapped", "approximated", "not needed", "not supported yet", "not supported", "kept", "problem")


class NotAWorkflow(ValueError):
    """The input is neither a UI-format workflow nor an API-format prompt."""


class Inconsistent(RuntimeError):
    """The converted workflow breaks its own bookkeeping: a bug of the converter, never of the input."""


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
    required, optional = entry["required"], entry["optional"]
    if isinstance(required, tuple) and isinstance(optional, tuple):
        return list(_parsed(required + optional))
    return [tuple(s.split(":")) for s in list(required) + list(optional)]


@functools.lru_cache(maxsize=None)
def _parsed(specs):  # the tables are read once per node, not once per node and input
    return tuple(tuple(s.split(":")) for s in specs)


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


def _hashable(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


_TYPE_CHECKS = {
    "FLOAT": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "INT": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "BOOLEAN": lambda v: isinstance(v, bool),
    "STRING": lambda v: isinstance(v, str),
    "COMBO": lambda v: isinstance(v, str),
}


def value_problem(value, node_type, name):
    """Why `value` cannot go into input `name` of our node `node_type` (its type, range or choices), else None."""
    ty = dict(our_inputs(node_type)).get(name) if node_type in table.OURS else None
    check = _TYPE_CHECKS.get(ty)
    if check is None:
        return None
    if not check(value):
        return f"is a {type(value).__name__}, not {'an' if ty == 'INT' else 'a'} {ty.lower()} value"
    key = f"{node_type}.{name}"
    lo, hi = table.RANGES.get(key, (None, None))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"is outside the range of {key} ({lo} to {hi})"
    choices = table.CHOICES.get(key)
    if choices is not None and value not in choices:
        return f"is not a choice of {key} ({', '.join(choices)})"
    return None


def _looks_like_pack(node_type, properties) -> bool:
    return (str(node_type).startswith(("IPAdapter", "IPAAdapter")) or
            str((properties or {}).get("cnr_id", "")).lower() == "comfyui_ipadapter_plus")


# ------------------------------------------------------------------------------------------ the graph

@dataclass
class _Link:
    src: str
    slot: int
    type: str = "*"
    via: tuple = None  # (node id, slot, type) of the Reroute it passed last, if any: new links start there


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
    output_map: list = None  # this node's own output map, where its recipe depends on its inputs (regions)

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
        self.layout_notes = {}  # node id -> [(kind, text)] about the widget layout it was saved with
        self.next_id = 0
        self.boundary = {}  # (node id, output slot) -> what that subgraph boundary slot carries here (_Crossings)
        self.boundary_parts = {}  # (node id, output slot) -> {part: link}: what a boundary slot's value carries apart
        self.boundary_settings = {}  # (node id, output slot) -> _Settings of the node feeding the other side

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
        """Grow `keep` over links of the pack's own types between pack nodes: ours cannot take those values.
        A breadth-first walk: linear in the links, whatever order the file lists them in."""
        joined = {}
        for a, b in pack_links:
            if a in pack and b in pack and a != b:
                joined.setdefault(a, []).append(b)
                joined.setdefault(b, []).append(a)
        queue = deque(n for n in joined if n in keep)
        while queue:
            other = queue.popleft()
            for new in joined[other]:
                if new not in keep:
                    keep.add(new)
                    queue.append(new)
                    self.report.add(f"{new} {self.types[new]}", "kept",
                                    f"kept unchanged: joined by the pack's own types to {other} {self.types[other]}, which is kept")

    def new_node(self, node_type, inst):
        nid = str(self.next_id)
        self.next_id += 1
        values = {n: copy.deepcopy(v) for n, v in table.OURS[node_type]["defaults"].items()}
        self.new_nodes[nid] = {"type": node_type, "values": values, "links": {}, "mode": inst.mode, "from": inst.id}
        return nid

    def create(self, inst):
        for kind, text in self.layout_notes.get(inst.id, ()):
            self.report.add(inst.label, kind, text)
        for name, given in list(inst.given.items()):  # older choice names -> today's
            renamed = table.OLD_CHOICES.get(name, {}).get(given[1]) if isinstance(given, tuple) and isinstance(
                given[1], str) else None
            if renamed is not None:
                inst.given[name] = ("value", renamed)
                self.report.add(inst.label, "mapped", f"{name}={given[1]!r} is an older name of {renamed!r}")
        for local, node_type in inst.entry["nodes"].items():
            inst.created[local] = self.new_node(node_type, inst)
        if inst.entry.get("special") == "region" and isinstance(inst.given.get("mask"), _Link):
            omap = [None]
            for side in ("positive", "negative"):
                if isinstance(inst.given.get(side), _Link):
                    inst.created[side] = self.new_node("ConditioningSetMask", inst)
                omap.append(f"{side}.0" if side in inst.created else f"in:{side}")
            inst.output_map = omap

    def resolve(self, link):
        """Where a link's value really comes from: a _Link to a kept/foreign/new node, a pipeline dict, or None.
        A loop, not recursion: a chain of pass-through nodes (Prep Image ...) may be as long as the file."""
        seen = set()
        while isinstance(link, _Link):
            crossing = self.boundary.get((link.src, link.slot))
            if crossing is not None:  # a value of the pack's types entering through a subgraph's boundary
                return crossing
            inst = self.instances.get(link.src)
            if inst is None:
                return link
            if link.src in seen:
                return None
            seen.add(link.src)
            omap = inst.output_map or inst.entry["output_map"]
            if not 0 <= link.slot < len(omap) or omap[link.slot] is None:  # no counterpart for this output
                return None
            spec = omap[link.slot]
            if isinstance(spec, dict):
                return {k: self._resolve_part(inst, v) for k, v in spec.items()}
            if not spec.startswith("in:"):
                return self._created(inst, spec)
            link = inst.given.get(spec[3:])
        return None

    def _resolve_part(self, inst, spec):
        if spec is None:
            return None
        if spec.startswith("in:"):
            return self.resolve(inst.given.get(spec[3:]))
        return self._created(inst, spec)

    def _created(self, inst, spec):
        local, slot = spec.split(".")
        nid = inst.created[local]
        return _Link(nid, int(slot), table.OURS[self.new_nodes[nid]["type"]]["outputs"][int(slot)])

    def _feeder(self, link):
        """The converted node a link comes from (its settings go to the nodes it feeds), or what stands in for it
        across a subgraph boundary."""
        return self.instances.get(link.src) or self.boundary_settings.get((link.src, link.slot))

    def parts_of(self, ref):
        """The inputs of our node that made the value at `ref` (the adapter of an encode), or what a subgraph
        boundary brings with it."""
        if ref.src in self.new_nodes:
            return self.new_nodes[ref.src]["links"]
        return self.boundary_parts.get((ref.src, ref.slot), {})

    def _set(self, inst, target, value=None, link=None):
        local, name = target.split(".", 1)
        node = self.new_nodes[inst.created[local]]
        if link is not None:
            node["links"][name] = link
        else:
            node["values"][name] = value

    def wire_all(self):
        """Wire every converted node, upstream first (a Prep Image node's crop reaches the encodes it feeds).
        Depth-first with an explicit stack: chains as long as the file never exhaust Python's stack."""
        done = set()

        def upstream(inst):
            return (self.instances[g.src] for g in inst.given.values() if isinstance(g, _Link) and g.src in self.instances)

        for root in list(self.instances.values()):
            if root.id in done:
                continue
            done.add(root.id)
            stack = [(root, upstream(root))]
            while stack:
                inst, feeders = stack[-1]
                nxt = next((u for u in feeders if u.id not in done), None)
                if nxt is None:
                    stack.pop()
                    self.wire(inst)
                else:
                    done.add(nxt.id)
                    stack.append((nxt, upstream(nxt)))

    def wire(self, inst):
        entry, label = inst.entry, inst.label
        special = {"region": self._wire_region, "from params": self._wire_from_params}.get(entry.get("special"))
        if special is not None:
            special(inst)
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
        made = {local: self.new_nodes[nid]["type"] for local, nid in inst.created.items()}
        self.report.add(label, "converted", "-> " + " + ".join(f"{t} (node {inst.created[l]})" for l, t in made.items())
                        if made else entry.get("removed", "removed: passes its input through"))
        for kind, text in entry.get("notes", ()):
            self.report.add(label, kind, text)

    def _apply_rule(self, inst, name, rule):
        label = inst.label
        given = inst.given.get(name)
        linked = isinstance(given, _Link)
        value = None if given is None or linked else given[1]
        shown = "connected" if linked else repr(value)
        if "params" in rule:  # read by the code that builds the regions
            return
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
            src = self._feeder(given) if linked else None
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
                    why = value_problem(v, node["type"], k)
                    if why:
                        self.report.add(inst.label, "not supported", f"{k}={v!r} from {src.label} {why}; "
                                        f"{node['type']}.{k} keeps its default")
                        continue
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
                src = self.parts_of(src).get(rule["upstream"])
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
            prep = self._feeder(given)
            if prep is not None and prep.consumer_values:
                self._take_settings(inst, prep, [inst.created[target.split(".")[0]]])
            self._set(inst, target, link=src)
            note = " (the value arrives through a link and is passed as is)" if rule.get("values") else ""
            self.report.add(label, "mapped", f"{name} (connected) -> {ours}{note}")
            return
        values = rule.get("values")
        new = value
        if values is not None:
            if not _hashable(value) or value not in values or values[value] is None:
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
        local, our_input = target.split(".", 1)
        why = value_problem(new, inst.entry["nodes"][local], our_input)
        if why:
            self.report.add(label, "not supported", f"{name}={value!r}{'' if new == value else f' (as {new!r})'} "
                            f"{why}; {ours} keeps its default")
            return
        self._set(inst, target, new)
        approx = rule.get("approx")
        approx = approx.get(value) if isinstance(approx, dict) and _hashable(value) else approx
        shown_new = "" if new == value else f"={new!r}"
        if approx:
            self.report.add(label, "approximated", f"{name}={value!r} -> {ours}{shown_new}: {approx}")
        else:
            self.report.add(label, "mapped", f"{name}={value!r} -> {ours}{shown_new}")


    # -- the pack's regions (migrate_table.REGIONS)
    def _put(self, inst, nid, name, given, what):
        """Set input `name` of new node `nid` from a pack input: a value (checked) or a link (resolved)."""
        node = self.new_nodes[nid]
        if isinstance(given, _Link):
            src = self.resolve(given)
            if isinstance(src, _Link):
                node["links"][name] = src
            else:
                self.report.add(inst.label, "problem", f"{what}: its source gives nothing this pack can use; connect "
                                f"{node['type']}.{name} (node {nid}) by hand")
            return
        if given is None:
            return
        value = given[1]
        why = value_problem(value, node["type"], name)
        if why:
            self.report.add(inst.label, "not supported", f"{what}={value!r} {why}; {node['type']}.{name} (node {nid}) "
                            "keeps its default")
        else:
            node["values"][name] = value
            self.report.add(inst.label, "mapped", f"{what}={value!r} -> {node['type']}.{name} (node {nid})")

    def _wire_region(self, inst):
        """Regional Conditioning: with a mask, each text prompt goes through a ConditioningSetMask."""
        for side in ("positive", "negative"):
            nid = inst.created.get(side)
            if nid is not None:
                self._put(inst, nid, "conditioning", inst.given[side], side)
                self._put(inst, nid, "mask", inst.given["mask"], "mask")
                self._put(inst, nid, "strength", inst.given.get("prompt_weight"), "prompt_weight")
        if not inst.created and "prompt_weight" in inst.given:
            self.report.add(inst.label, "not needed", "prompt_weight: no mask, so the pack passes the prompts unchanged")

    def _regions(self, inst):
        """The Regional Conditioning nodes behind From Params' ipadapter_params, in the pack's order
        (Combine Params joins params_1 ... params_5 in turn). An explicit stack: no recursion."""
        found, stack = [], [inst.given.get("ipadapter_params")]
        while stack:
            link = stack.pop()
            src = self.instances.get(link.src) if isinstance(link, _Link) else None
            if src is None:
                continue
            if src.entry.get("special") == "region":
                found.append(src)
            elif src.entry.get("special") == "params" and len(found) + len(stack) < 10_000:
                stack.extend(reversed([src.given.get(f"params_{i}") for i in range(1, 6) if f"params_{i}" in src.given]))
        return found

    def _wire_from_params(self, inst):
        """From Params: per region an Encode Image Prompt + Apply IPAdapter, chained by the model."""
        regions = self._regions(inst)
        if not regions:
            self.report.add(inst.label, "problem", "ipadapter_params brings no Regional Conditioning; rebuild with "
                            "Encode Image Prompt -> Apply IPAdapter (attn_mask) by hand")
            inst.output_map = [None]  # nothing made: its model output has no counterpart
            return
        pipeline = self.resolve(inst.given.get("ipadapter"))
        adapter = pipeline.get("adapter") if isinstance(pipeline, dict) else None
        clip = inst.given.get("clip_vision") or (pipeline.get("clip_vision") if isinstance(pipeline, dict) else None)
        model = inst.given.get("model")
        for i, region in enumerate(regions):
            enc = inst.created[f"encode_{i + 1}"] = self.new_node("IPAEncodeImagePrompt", inst)
            app = inst.created[f"apply_{i + 1}"] = self.new_node("IPAApplyAdapter", inst)
            enc_node, app_node = self.new_nodes[enc], self.new_nodes[app]
            for nid in (enc, app):
                if adapter is not None:
                    self.new_nodes[nid]["links"]["ipadapter"] = adapter
                self.new_nodes[nid]["values"]["legacy"] = bool(self.legacy)
            if isinstance(self.resolve(clip), _Link):
                enc_node["links"]["clip_vision"] = self.resolve(clip)
            what = f"region {i + 1} ({region.label})"
            self._put(inst, enc, "image", region.given.get("image"), f"{what} image")
            self._put(inst, enc, "negative_image", inst.given.get("image_negative"), "image_negative")
            self._put(inst, enc, "combine", inst.given.get("combine_embeds"), "combine_embeds")
            app_node["links"]["embeds"] = _Link(enc, 0, "IPA_EMBEDS")
            if i == 0:
                self._put(inst, app, "model", model, "model")
            else:
                app_node["links"]["model"] = _Link(inst.created[f"apply_{i}"], 0, "MODEL")
            for pack_name, ours in (("image_weight", "weight"), ("weight_type", "weight_type"), ("start_at", "start_at"),
                                    ("end_at", "end_at"), ("mask", "attn_mask")):
                self._put(inst, app, ours, region.given.get(pack_name), f"{what} {pack_name}")
            self._put(inst, app, "embeds_scaling", inst.given.get("embeds_scaling"), "embeds_scaling")
        inst.output_map = [f"apply_{len(regions)}.0"]
        if adapter is None:
            self.report.add(inst.label, "problem", "ipadapter: its source gives no adapter here; connect the Encode "
                            "Image Prompt / Apply IPAdapter nodes' ipadapter by hand")


# ------------------------------------------------------------------------------------------ UI format

def _pair(value, default):
    """A [x, y] or {"0": x, "1": y} of finite numbers, else `default` (files hold strings, nulls, NaN ...)."""
    if isinstance(value, dict):
        value = [value.get("0"), value.get("1")]
    if isinstance(value, (list, tuple)) and len(value) >= 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value[:2]):
        return float(value[0]), float(value[1])
    return default


def _size(node):
    w, h = _pair(node.get("size"), (200.0, 100.0))
    return max(w, 0.0), max(h, 0.0)


def _pos(node):
    return _pair(node.get("pos"), (0.0, 0.0))


def node_rect(node):
    """(x0, y0, x1, y1) of a UI node, its title bar included."""
    (x, y), (w, h) = _pos(node), _size(node)
    return x, y - TITLE_H, x + w, y + h


def _overlap(a, b, gap=0.0):
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


_FAR = 1e15  # x beyond +-this (up to an infinite edge) is indexed as this: no canvas is that wide, and clamping
# both edges keeps every overlap an overlap


class _Space:
    """The rects placed so far, for placing new ones where they overlap nothing (with GAP around each).

    x is cut into columns of COLUMN units, grouped FACTOR by FACTOR into the columns of the next level, and so
    on (a tree of columns). A rect is stored in the fewest columns that cover its x-range (those it fills, at
    the coarsest level they fit, plus the two columns at its edges): a few per level. Each column keeps, as
    sorted disjoint runs, the union of the y-ranges (widened by GAP) of the rects stored in it, with the gaps
    too low for the rect being placed filled in: one such set of columns per height placed (the converter
    places a few node sizes). Placing a rect looks, in every column over its x-range at each level, for the
    run at its y and jumps below it: a binary search per jump, and a pile of nodes, or a ladder of nodes with
    gaps too low for it, is a single run, so n placements cost n log n instead of testing every placed rect.
    An edge column counts as filled, so a new node may keep up to COLUMN more than GAP from a neighbour,
    never less."""
    COLUMN = 32.0
    FACTOR = 4

    def __init__(self):
        self.rects = []  # everything added, for the columns of a height placed for the first time
        self.heights = {}  # height placed -> {level -> {column index at that level -> ([run starts], [run ends])}}
        self.walked = {}  # (columns, height) -> (starts, ends) of the y-spans that placements there walked past
        self.steps = 0  # column look-ups and run merges: what placement costs, for tests of its growth

    def _range(self, x0, x1):
        """The first-level columns x0..x1 reaches into."""
        return (math.floor(min(max(x0, -_FAR), _FAR) / self.COLUMN),
                math.floor(min(max(x1, -_FAR), _FAR) / self.COLUMN))

    def _store(self, levels, height, level, column, lo, hi):
        """Add lo..hi to a column's runs, joining the runs less than `height` apart (nothing that tall fits
        between them)."""
        starts, ends = levels.setdefault(level, {}).setdefault(column, ([], []))
        i, j = bisect.bisect_right(ends, lo - height), bisect.bisect_left(starts, hi + height)  # the runs it joins
        if i < j:
            lo, hi = min(lo, starts[i]), max(hi, ends[j - 1])
        starts[i:j], ends[i:j] = [lo], [hi]
        self.steps += 1

    def _add_to(self, levels, height, rect):
        lo, hi = rect[1] - GAP, rect[3] + GAP
        a, b = self._range(rect[0], rect[2])
        level = 0
        while a <= b:  # the columns at this level that the next level's cannot hold, then one level up
            while a <= b and a % self.FACTOR:
                self._store(levels, height, level, a, lo, hi)
                a += 1
            while a <= b and (b + 1) % self.FACTOR:
                self._store(levels, height, level, b, lo, hi)
                b -= 1
            a, b, level = a // self.FACTOR, (b + 1) // self.FACTOR - 1, level + 1

    def add(self, rect):
        self.rects.append(rect)
        for height, levels in self.heights.items():
            self._add_to(levels, height, rect)

    def place(self, rect):
        """Move rect down until it overlaps nothing placed (with GAP), add it, return it. A placement over the
        same columns with the same height that starts where an earlier one walked past (a pile of nodes, a
        stack of them one spot apart) starts below what that one found in the way: it only ever grows."""
        x0, y0, x1, y1 = rect
        h = y1 - y0
        levels = self.heights.get(h)
        if levels is None:
            levels = self.heights[h] = {}
            for r in self.rects:
                self._add_to(levels, h, r)
        a, b = self._range(x0 - GAP, x1 + GAP)
        walked_starts, walked_ends = self.walked.setdefault((a, b, h), ([], []))

        def past_walked(y):
            k = bisect.bisect_right(walked_starts, y) - 1
            return walked_ends[k] if k >= 0 and y < walked_ends[k] else y

        y = past_walked(y0)
        runs = []
        for level, columns in levels.items():
            ca, cb = a // self.FACTOR ** level, b // self.FACTOR ** level
            if cb - ca >= len(columns):  # a span wider than the columns there are: look only at those
                runs += [runs_c for c, runs_c in columns.items() if ca <= c <= cb]
            else:
                runs += [columns[c] for c in range(ca, cb + 1) if c in columns]
        i = clean = 0
        while clean < len(runs):  # until a whole round of columns finds [y, y + h] free
            starts, ends = runs[i]
            j = bisect.bisect_right(ends, y)  # the first run ending below y
            self.steps += 1
            if j < len(ends) and starts[j] < y + h:
                y, clean = past_walked(ends[j] + 1), 0
            else:
                i, clean = (i + 1) % len(runs), clean + 1
        if y > y0:  # y0 .. y is walked past: no later placement here starting in it can stop in it
            i, j = bisect.bisect_left(walked_ends, y0), bisect.bisect_right(walked_starts, y)
            lo, hi = (min(y0, walked_starts[i]), max(y, walked_ends[j - 1])) if i < j else (y0, y)
            walked_starts[i:j], walked_ends[i:j] = [lo], [hi]
        placed = (x0, y, x1, y + h)
        self.add(placed)
        return placed


def _ui_given(node, entry, links_by_id, follow, types):
    """Pack node -> (given inputs by name, problems, notes). Links through Reroutes are followed to their
    source; a widget fed by a Primitive keeps the value the node stores for it (the frontend keeps both in
    step); an older layout of the node's widgets is read by its names, the missing ones by their defaults."""
    problems, given, notes = [], {}, []
    widgets = pack_widgets(entry)
    node_type = node["type"]
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some frontends store values by name
        unknown = [k for k in values if k not in widgets]
        if unknown:
            problems.append(f"widget values for unknown inputs {unknown}; this version's widgets are {widgets}")
        given.update({k: ("value", v) for k, v in values.items() if k in widgets})
    elif not isinstance(values, list):
        problems.append(f"widgets_values is a {type(values).__name__}, not a list of the widgets' values")
    elif len(values) != len(widgets):
        layout = next((l for l in table.OLD_LAYOUTS.get(node_type, ()) if len(l) == len(values)), None)
        first = table.FIRST_GENERATION_LAYOUTS.get(node_type, {}).get(len(values))
        if layout is not None:
            missing = [w for w in widgets if w not in layout]
            defaults = {w: table.PACK_DEFAULTS_OF.get(node_type, {}).get(w, table.PACK_DEFAULTS.get(w)) for w in missing}
            given.update({k: ("value", v) for k, v in zip(layout, values)})
            given.update({k: ("value", v) for k, v in defaults.items()})
            notes.append(("mapped", f"saved by an older version of the pack ({len(values)} widgets): "
                          f"{', '.join(f'{k}={v!r}' for k, v in defaults.items())} taken as the pack's defaults, as the "
                          "frontend fills them"))
        elif first is not None:
            problems.append(f"the first-generation layout {first} of this node: {table.FIRST_GENERATION_WHY}")
        else:
            problems.append(f"{len(values)} widget values {_short(values)}, but {table.PACK_VERSION} has {len(widgets)} "
                            f"widgets ({', '.join(widgets)}); saved with another version of the pack?")
    else:
        given.update({k: ("value", v) for k, v in zip(widgets, values)})
    names = {n for n, _ in pack_inputs(entry)}
    for inp in node.get("inputs") or []:
        link_id = inp.get("link")
        if link_id is None:
            continue
        if not isinstance(inp.get("name"), str) or inp["name"] not in names:
            problems.append(f"a link arrives at input {inp.get('name')!r}, which {table.PACK_VERSION} does not have "
                            f"(its inputs: {', '.join(sorted(names))}); renamed in another version of the pack?")
            continue
        link = links_by_id.get(link_id)
        if link is not None and types.get(str(link[1])) == PRIMITIVE and inp["name"] in widgets and inp["name"] in given:
            continue
        if link is not None:
            source = follow(link)
            if source is not None:
                via = (link[1], link[2], link[5]) if source is not link else None
                given[inp["name"]] = _Link(str(source[1]), source[2], source[5] if source[5] != "*" else link[5], via)
    return given, problems, notes


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_slot(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _slots(node, key):
    """A node's inputs / outputs as a list of dicts, or None when the file holds something else there."""
    slots = node.get(key)
    if slots is None:
        return []
    if isinstance(slots, list) and all(isinstance(s, dict) for s in slots):
        return slots
    return None


def _read_ui_nodes(wf, report):
    """The nodes, shallow-copied (their inputs and outputs too: only those are rewritten), first of each id.
    -> (nodes, by_id, frozen): frozen ids hold inputs/outputs that are not lists of slots; they are kept as
    they are and links into (inputs) or out of them (outputs) are dropped: {id: {"inputs", "outputs"}}."""
    nodes, by_id, frozen = [], {}, {}
    for node in wf["nodes"]:
        nid = str(node["id"])
        if nid in by_id:
            report.add(f"{nid} {node['type']}", "problem", "a second node with this id; it is dropped")
            continue
        node = dict(node)
        for key in ("inputs", "outputs"):
            slots = _slots(node, key)
            if slots is None:
                frozen.setdefault(nid, set()).add(key)
                report.add(f"{nid} {node['type']}", "problem", f"its {key} are a {type(node[key]).__name__}, not a list "
                           "of slots: kept as they are, links to them are dropped")
            elif key in node:
                node[key] = [dict(s) for s in slots]
        if "inputs" not in frozen.get(nid, ()):
            for inp in node.get("inputs") or []:
                if inp.get("link") is not None and not (isinstance(inp["link"], int) and not isinstance(inp["link"], bool)):
                    report.add(f"{nid} {node['type']}", "problem", f"input {inp.get('name')!r} names link "
                               f"{_short(inp['link'])}, which is not a link id: left unconnected")
                    inp["link"] = None
        if "outputs" not in frozen.get(nid, ()):
            for out in node.get("outputs") or []:
                if not isinstance(out.get("links"), list):
                    out["links"] = []
        by_id[nid] = node
        nodes.append(node)
    return nodes, by_id, frozen


def _read_ui_links(wf, by_id, frozen, report):
    """The links as [id, from, slot, to, slot, type], repaired as the frontend repairs them on loading: an
    entry repeated under one id (the last wins), a link whose ends or slots do not exist (dropped), an entry
    that the input it names does not record (stale: dropped, or moved to the input that does record it:
    that input is what the frontend executes). Every change is reported on the node it touches."""
    entries = {}
    for link in wf.get("links") or []:  # a list: workflow_format checked
        if isinstance(link, dict) and "origin_id" in link:  # the frontend's object form of a link
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot", 0), link.get("target_id"),
                    link.get("target_slot", 0), link.get("type", "*")]
        if not (isinstance(link, list) and len(link) >= 5 and isinstance(link[0], int) and not isinstance(link[0], bool)
                and _is_id(link[1]) and _is_slot(link[2]) and _is_id(link[3]) and _is_slot(link[4])):
            report.add("", "problem", f"link {_short(link)} is not [id, from node, slot, to node, slot, type]; dropped")
            continue
        ty = link[5] if len(link) > 5 and isinstance(link[5], str) else "*"
        link = [link[0], link[1], link[2], link[3], link[4], ty]
        if link[0] in entries:
            report.add("", "problem", f"link {link[0]} is listed twice; the last entry is used, as the frontend does")
        entries[link[0]] = link
    good = {}
    for lid, link in entries.items():
        src, dst = str(link[1]), str(link[3])
        missing = [f"{end} node {n}" for end, n in (("from", src), ("to", dst)) if n not in by_id]
        at = dst if dst in by_id else src
        if missing:
            report.add(f"{at} {by_id[at]['type'] if at in by_id else '?'}", "problem",
                       f"link {lid} comes {' and goes '.join(missing)}, which does not exist; the link is dropped")
            continue
        if "outputs" in frozen.get(src, ()) or "inputs" in frozen.get(dst, ()):
            report.add(f"{at} {by_id[at]['type']}", "problem", f"link {lid} joins a node whose slots cannot be read; dropped")
            continue
        outs, ins = by_id[src].get("outputs") or [], by_id[dst].get("inputs") or []
        if link[2] >= len(outs) or link[4] >= len(ins):
            report.add(f"{dst} {by_id[dst]['type']}", "problem", f"link {lid} uses output {link[2]} of node {src} or "
                       f"input {link[4]} of node {dst}, which they do not have; dropped")
            continue
        good[lid] = link
    confirmed = {lid for lid, l in good.items() if by_id[str(l[3])]["inputs"][l[4]].get("link") == lid}
    for node in by_id.values():
        nid = str(node["id"])
        if "inputs" in frozen.get(nid, ()):
            continue
        for slot, inp in enumerate(node.get("inputs") or []):
            lid = inp.get("link")
            if lid is None or (lid in confirmed and good[lid][3] is not None and str(good[lid][3]) == nid
                               and good[lid][4] == slot):
                continue
            label, name = f"{nid} {node['type']}", inp.get("name")
            if lid in good and lid not in confirmed:  # its entry names another input, which does not record it
                old = good[lid]
                report.add(label, "problem", f"input {name!r} records link {lid}, whose entry named node {old[3]} "
                           f"input {old[4]}; the link now ends here, where the frontend reads it")
                good[lid] = [old[0], old[1], old[2], node["id"], slot, old[5]]
                confirmed.add(lid)
            else:
                why = "which goes to another input" if lid in good else "which does not exist"
                report.add(label, "problem", f"input {name!r} records link {lid}, {why}; left unconnected")
                inp["link"] = None
    for lid in [lid for lid in good if lid not in confirmed]:
        link = good.pop(lid)
        dst = str(link[3])
        now = by_id[dst]["inputs"][link[4]].get("link")
        report.add(f"{dst} {by_id[dst]['type']}", "problem", f"link {lid} is stale: input {link[4]} of node {dst} "
                   f"records {'link ' + str(now) if now is not None else 'no link'}; the stale entry is dropped, as "
                   "the frontend does")
    return list(good.values())


def _counter(value, name, report):
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    report.add("", "problem", f"{name} is {_short(value)}, not a number; it is recomputed")
    return 0


SUBGRAPH_IN, SUBGRAPH_OUT = -10, -20  # the frontend's ids of a subgraph's input and output nodes


def _ids_in(nodes, counter):
    return max([counter] + [int(n["id"]) for n in nodes if isinstance(n, dict) and isinstance(n.get("id"), int)
                            and not isinstance(n["id"], bool)])


def _subgraph_problem(sub):
    if not isinstance(sub, dict):
        return f"a subgraph definition {_short(sub)} is not an object"
    if not isinstance(sub.get("nodes"), list) or not isinstance(sub.get("links", []), list):
        return f"subgraph {_short(sub.get('name') or sub.get('id'))} has no list of nodes and links"
    for key in ("inputs", "outputs"):
        slots = sub.get(key, [])
        if not isinstance(slots, list) or not all(isinstance(x, dict) and isinstance(x.get("linkIds", []), list)
                                                    for x in slots):
            return f"subgraph {_short(sub.get('name') or sub.get('id'))}: its {key} are not a list of slots"
    try:
        workflow_format({"nodes": sub["nodes"], "links": []})
    except NotAWorkflow as e:
        return f"subgraph {_short(sub.get('name') or sub.get('id'))}: {e}"
    return None


# What a value of the pack's types becomes when it crosses a subgraph's boundary (its input or output slot):
# our type on the slot itself, and what ours carries apart on a slot added after the others (named after the
# slot + "_" + its part): the pipeline's CLIP vision, the adapter that made the embeds (Combine Image Prompts
# takes it). The InsightFace loader becomes nothing: only its settings cross, to the Encode Face nodes it feeds
# (its slot stays, unconnected). The regions (IPADAPTER_PARAMS) are rebuilt from the nodes that make them,
# which must be in the same graph: they do not cross.
CROSSING_TYPES = {"IPADAPTER": ("IPA_ADAPTER", "clip_vision", "CLIP_VISION"),
                  "EMBEDS": ("IPA_EMBEDS", "ipadapter", "IPA_ADAPTER"),
                  "WEIGHTS_STRATEGY": ("IPA_WEIGHTS_STRATEGY", None, None),
                  "INSIGHTFACE": (None, None, None)}
_UUID_SPACE = uuid.UUID("4b1d6a8e-2f0c-4c57-9a3e-6f1b2d9c0e71")  # the added slots' ids: the same file, the same ids


@dataclass
class _Settings:
    """What a converted node that feeds a subgraph's boundary sets on the nodes it feeds (its consumer values),
    standing in for it on the other side."""
    label: str
    consumer_values: dict


class _Crossings:
    """The slots of the pack's types on subgraph boundaries that the conversion follows across (one plan for
    the whole file: a definition's slots are shared by all its instances), those found not followable while
    converting (a side kept, or not the pack's), and what the values crossing were found to carry: the file is
    converted again when the other side needed that before it was known (a part the value lacks, settings)."""

    def __init__(self, plan, known=None, dropped=()):
        self.plan = plan  # subgraph id -> {"in" / "out": {slot: (pack type, index of the added slot)},
        #                                    "slots": (inputs, outputs) of the definition}
        self.known = known or {}  # (subgraph id, "in" / "out", slot) -> {"part": bool, "settings": _Settings | None}
        self.learned = {}  # the same, found while converting with `known`
        self.used = {}  # the same, as the other side used it (learned earlier in this conversion, else known)
        self.bad = {}  # (subgraph id, "in" / "out", slot) -> why
        self.conflicts = []  # (node label, text): instances feeding one crossing different settings
        self.dropped = {sid for sid, _, _ in dropped}  # subgraphs with a crossing not followed: what it joins stays

    DEFAULT = {"part": True, "settings": None}

    def learn(self, key, part, settings):
        """What one converted node gives into a crossing: whether its value has the added slot's part, and its
        settings. All instances' values must have the part for the other side to use it."""
        seen = self.learned.get(key)
        if seen is None:
            self.learned[key] = {"part": part, "settings": settings}
            return
        if seen["settings"] is None:
            seen["settings"] = settings
        elif settings is not None and settings.consumer_values != seen["settings"].consumer_values:
            self.conflicts.append((settings.label, f"its settings {settings.consumer_values} differ from those "
                                   f"{seen['settings'].label} gives into the same subgraph input; the nodes across the "
                                   f"boundary take {seen['settings'].label}'s: set theirs by hand where they differ"))
        seen["part"] = seen["part"] and part

    def changed(self):
        """Whether a side used other facts than the crossing turned out to carry (then convert again)."""
        return any(self.learned.get(k, self.DEFAULT) != used for k, used in self.used.items())

    @staticmethod
    def value(ty, src, slot, added, part):
        """What the converted graph finds at output `slot` of boundary node src: a pipeline, or a link of our
        type, and what its added slot gives (the embeds' adapter) as {part: link}; part False: nothing there."""
        ours, part_name, part_type = CROSSING_TYPES[ty]
        extra = _Link(src, added, part_type) if part_name and part else None
        if ours is None:  # settings only
            return None, {}
        if ty == "IPADAPTER":
            return {"adapter": _Link(src, slot, ours), part_name: extra}, {}
        return _Link(src, slot, ours), ({part_name: extra} if extra else {})

    def boundary(self, types, sub_id):
        """({(node id, slot): value}, {(node id, slot): {part: link}}, {(node id, slot): _Settings}) for the
        instances of planned subgraphs in one graph and, inside subgraph sub_id, for its input node."""
        ends = [(nid, t, "out") for nid, t in types.items()] + [(str(SUBGRAPH_IN), sub_id, "in")]
        values, parts, settings = {}, {}, {}
        for nid, sid, direction in ends:
            for slot, (ty, added) in self.plan.get(sid, {}).get(direction, {}).items():
                key = (sid, direction, slot)
                known = self.used[key] = dict(self.learned.get(key) or self.known.get(key) or self.DEFAULT)
                value, parts[nid, slot] = self.value(ty, nid, slot, added, known["part"])
                if value is not None:
                    values[nid, slot] = value
                if known["settings"] is not None:
                    settings[nid, slot] = known["settings"]
        return values, parts, settings

    def sink(self, types, nid, slot, sub_id):
        """The crossing that input `slot` of node nid is (an instance's input, the subgraph's output), or None."""
        return self._end(types, nid, slot, sub_id, SUBGRAPH_OUT, "out", "in")

    def source(self, types, nid, slot, sub_id):
        """The crossing that output `slot` of node nid is (an instance's output, the subgraph's input), or None."""
        return self._end(types, nid, slot, sub_id, SUBGRAPH_IN, "in", "out")

    def _end(self, types, nid, slot, sub_id, io_node, io_direction, instance_direction):
        if nid == str(io_node) and slot in self.plan.get(sub_id, {}).get(io_direction, {}):
            return sub_id, io_direction, slot
        if slot in self.plan.get(types.get(nid), {}).get(instance_direction, {}):
            return types[nid], instance_direction, slot
        return None


def _plan_crossings(wf):
    """The boundary slots of the pack's types of the file's subgraphs, each with the index of its added slot (a
    pipeline's CLIP vision, the embeds' adapter), and report lines for those of types that cannot cross."""
    definitions = wf.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    plan, lines = {}, []
    for sub in subgraphs if isinstance(subgraphs, list) else ():
        if _subgraph_problem(sub) or not _is_id(sub.get("id")):
            continue
        name = _short(sub.get("name") or sub.get("id"), 40)
        for direction in ("in", "out"):
            slots = sub.get("inputs" if direction == "in" else "outputs") or []
            added = len(slots)
            for k, slot in enumerate(slots):
                ty = slot.get("type") if isinstance(slot.get("type"), str) else None
                if ty in CROSSING_TYPES:
                    entry = plan.setdefault(sub["id"], {"in": {}, "out": {}, "slots": (
                        len(sub.get("inputs") or []), len(sub.get("outputs") or []))})
                    entry[direction][k] = (ty, added)
                    added += CROSSING_TYPES[ty][1] is not None
                elif ty in table.PACK_TYPES:
                    lines.append((f"subgraph {name}", f"its {'input' if direction == 'in' else 'output'} "
                                  f"{_short(slot.get('name'), 40)} carries the pack's {ty}: the regions are rebuilt "
                                  "from the Regional Conditioning / Combine Params nodes that make them, which must be in "
                                  "the same graph as the IPAdapter From Params they feed; move them into one graph and "
                                  "convert again"))
    return plan, lines


def _check_crossings(ctx, conv, links, converted, sub_id):
    """Mark the planned crossings of one graph that cannot be followed: a pack-typed value that enters from, or
    leaves to, a node that is not converted here (kept, another pack's, or behind a Reroute)."""
    if not ctx.plan:
        return
    for l in links:
        src, dst = str(l[1]), str(l[3])
        sink, source = ctx.sink(conv.types, dst, l[4], sub_id), ctx.source(conv.types, src, l[2], sub_id)
        if sink is not None and source is not None:  # one crossing straight into another: the same type passes on
            if ctx.plan[sink[0]][sink[1]][sink[2]][0] != ctx.plan[source[0]][source[1]][source[2]][0]:
                ctx.bad.setdefault(sink, f"fed by another type of value from {src} {conv.types.get(src)}")
            continue
        if sink is not None and src not in converted:
            ctx.bad.setdefault(sink, f"fed by {src} {conv.types.get(src)}, which is not a pack node converted here")
        if source is not None and dst not in converted and conv.types.get(dst) != REROUTE:
            ctx.bad.setdefault(source, f"it feeds {dst} {conv.types.get(dst)}, which is not a pack node converted here")


def _into_crossing(ctx, conv, sink, ref, settings, link, by_id, final_links, next_link):
    """The value `ref` (a link of ours, a pipeline, or None for settings only) entering crossing `sink` at input
    link[4] of node link[3]: linked to that slot and its part to the added slot; what it carries is learned for
    the other side. Returns the next free link id."""
    ty, added = ctx.plan[sink[0]][sink[1]][link[4]]
    ours, part_name, _ = CROSSING_TYPES[ty]
    value = part = None
    if isinstance(ref, dict):
        value, part = ref.get("adapter"), ref.get(part_name)
    elif isinstance(ref, _Link):
        value, part = ref, conv.parts_of(ref).get(part_name) if part_name else None
    for slot, end in ((link[4], value), (added, part)):
        if isinstance(end, _Link) and ours is not None:
            final_links.append([next_link, _node_id(end.src, by_id), end.slot, link[3], slot, end.type])
            next_link += 1
    ctx.learn(sink, part is not None or part_name is None, settings)
    return next_link


def _retype_slots(node, plan_entry):
    """An instance of a planned subgraph (its slots as its definition's, checked): its pack-typed slots take our
    types, and a pipeline's or embeds' slot gets its added slot after the others, as the definition does."""
    for direction, key in (("in", "inputs"), ("out", "outputs")):
        slots = node[key]
        for k, (ty, added) in sorted(plan_entry[direction].items()):
            ours, part, part_type = CROSSING_TYPES[ty]
            slots[k] = {**slots[k], "type": ours or slots[k].get("type")}
            if part:
                extra = {"name": f"{slots[k].get('name')}_{part}", "type": part_type}
                slots.append({**extra, **({"link": None} if key == "inputs" else {"links": []})})


def _convert_subgraphs(out, legacy, report, ctx):
    """The pack nodes inside the frontend's subgraphs (`definitions.subgraphs`), converted like the graph's:
    the subgraph's input and output nodes stand in as two nodes whose slots are the subgraph's inputs and
    outputs. New node and link ids follow every id of the file. Each line names its subgraph."""
    definitions = out.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    if subgraphs is None:
        return
    if not isinstance(subgraphs, list):
        report.add("", "problem", f"definitions.subgraphs is a {type(subgraphs).__name__}, not a list; kept as is")
        return
    next_node = _ids_in(out["nodes"], out["last_node_id"])
    next_link = max([out["last_link_id"]] + [l[0] for l in out["links"]])
    for sub in subgraphs:
        if isinstance(sub, dict) and isinstance(sub.get("nodes"), list):
            next_node = _ids_in(sub["nodes"], next_node)
            next_link = max([next_link] + [l.get("id") for l in sub.get("links") or [] if isinstance(l, dict)
                                           and isinstance(l.get("id"), int) and not isinstance(l.get("id"), bool)])
    converted = []
    for sub in subgraphs:
        problem = _subgraph_problem(sub)
        has_pack = problem is None and (any(n["type"] in table.PACK for n in sub["nodes"]) or sub.get("id") in ctx.plan)
        if problem:
            report.add("", "problem", problem + "; kept as is")
        if not has_pack:
            converted.append(sub)
            continue
        name = _short(sub.get("name") or sub.get("id"), 40)
        new_sub, sub_report, next_node, next_link = _convert_subgraph(sub, legacy, next_node, next_link, ctx)
        for n in sub_report.notes:
            report.add(f"subgraph {name}: {n.node}" if n.node else f"subgraph {name}", n.kind, n.text)
        converted.append(new_sub)
    out["definitions"] = {**definitions, "subgraphs": converted}
    out["last_node_id"], out["last_link_id"] = next_node, next_link


def _convert_subgraph(sub, legacy, last_node, last_link, ctx):
    plan = ctx.plan.get(sub.get("id"), {"in": {}, "out": {}})
    # the boundary as the conversion leaves it: pack-typed slots retyped, a pipeline's CLIP vision slot added
    ins = [{**x, "type": CROSSING_TYPES[plan["in"][k][0]][0] or x.get("type")} if k in plan["in"] else x
           for k, x in enumerate(sub.get("inputs") or [])]
    outs = [{**x, "type": CROSSING_TYPES[plan["out"][k][0]][0] or x.get("type")} if k in plan["out"] else x
            for k, x in enumerate(sub.get("outputs") or [])]
    for direction, slots in (("in", ins), ("out", outs)):
        for k, (ty, added) in sorted(plan[direction].items()):
            _, part, part_type = CROSSING_TYPES[ty]
            if part:
                name = f"{slots[k].get('name')}_{part}"
                slots.append({"id": str(uuid.uuid5(_UUID_SPACE, f"{sub.get('id')}/{direction}/{k}")), "name": name,
                              "type": part_type, "linkIds": [], **({"localized_name": name} if "localized_name" in
                                                                   slots[k] else {})})
    ids = lambda slot: [i for i in slot.get("linkIds") or [] if isinstance(i, int) and not isinstance(i, bool)]  # noqa: E731
    far = [-1e9, -1e9]
    io_in = {"id": SUBGRAPH_IN, "type": "subgraph inputs", "pos": far, "size": [0, 0], "inputs": [],
             "outputs": [{"name": s.get("name"), "type": s.get("type", "*"), "links": ids(s)} for s in ins]}
    io_out = {"id": SUBGRAPH_OUT, "type": "subgraph outputs", "pos": far, "size": [0, 0], "outputs": [],
              "inputs": [{"name": s.get("name"), "type": s.get("type", "*"), "link": (ids(s) or [None])[0]} for s in outs]}
    inner = {"nodes": [n for n in sub["nodes"] if str(n["id"]) not in (str(SUBGRAPH_IN), str(SUBGRAPH_OUT))] + [io_in, io_out],
             "links": sub.get("links") or [], "last_node_id": last_node, "last_link_id": last_link}
    new, report = _convert_ui(inner, legacy, ctx, sub.get("id"))
    problems = validate_ui(new)
    if problems:
        raise Inconsistent("a converted subgraph is inconsistent: " + "; ".join(problems[:5]))
    original = {l.get("id"): l for l in sub.get("links") or [] if isinstance(l, dict)}
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    links = []
    for l in new["links"]:
        old = original.get(l[0])
        same = isinstance(old, dict) and [old.get(k) for k in keys[:5]] == l[:5]
        links.append(old if same else dict(zip(keys, l)))
    by_id = {n["id"]: n for n in new["nodes"]}
    new_sub = {**sub, "nodes": [n for n in new["nodes"] if n["id"] not in (SUBGRAPH_IN, SUBGRAPH_OUT)], "links": links}
    new_sub["inputs"] = [{**s, "linkIds": list(by_id[SUBGRAPH_IN]["outputs"][i]["links"])} for i, s in enumerate(ins)]
    new_sub["outputs"] = [{**s, "linkIds": [x for x in [by_id[SUBGRAPH_OUT]["inputs"][i]["link"]] if x is not None]}
                          for i, s in enumerate(outs)]
    state = sub.get("state") if isinstance(sub.get("state"), dict) else {}
    if "state" in sub or state:
        new_sub["state"] = {**state, "lastNodeId": new["last_node_id"], "lastLinkId": new["last_link_id"]}
    return new_sub, report, new["last_node_id"], new["last_link_id"]


def _convert_ui_file(wf, legacy):
    """A UI workflow with its subgraphs. Values of the pack's types that cross a subgraph's boundary are followed
    across (_Crossings); a crossing found not followable (a side kept, or not the pack's) is left as it was, with
    its line, and the file converted again without it (at most a few times: then without any crossing)."""
    plan, lines = _plan_crossings(wf)
    dropped, known = {}, {}
    for attempt in range(6):
        if attempt == 5:  # what crossings carry still changing (nested deeper than this): follow none
            for sid, entry in plan.items():
                for direction in ("in", "out"):
                    for k in entry[direction]:
                        dropped.setdefault((sid, direction, k), "nested too deep for what it carries to settle")
            plan = {}
        ctx = _Crossings(plan, known, dropped)
        try:
            out, report = _convert_ui(wf, legacy, ctx)
        except Inconsistent:
            if not ctx.bad:
                raise
        if not ctx.bad and not ctx.changed():
            break
        dropped.update(ctx.bad)
        known = {k: v for k, v in ctx.learned.items() if k not in ctx.bad}
        plan = {sid: {**e, **{d: {k: v for k, v in e[d].items() if (sid, d, k) not in ctx.bad} for d in ("in", "out")}}
                for sid, e in plan.items()}
    for node, text in ctx.conflicts:
        report.add(node, "not supported", text)
    names = _subgraph_names(wf)
    for node, line in lines:
        report.add(node, "not supported", line)
    for (sid, direction, k), why in dropped.items():
        name, slot = names.get(sid, (_short(sid, 40), {}))
        report.add(f"subgraph {name}", "not supported",
                   f"its {'input' if direction == 'in' else 'output'} {slot.get((direction, k), k)} carries a value of the "
                   f"pack's types and is {why}: the value is not followed across the boundary; the pack's nodes it joins "
                   "stay as they were (see their lines)")
    return out, report


def _subgraph_names(wf):
    """subgraph id -> (its name for the report, {(direction, slot): the slot's name})."""
    definitions = wf.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    return {sub["id"]: (_short(sub.get("name") or sub["id"], 40), {
        (d, k): _short(x.get("name"), 40) for d, key in (("in", "inputs"), ("out", "outputs"))
        for k, x in enumerate(sub.get(key) if isinstance(sub.get(key), list) else []) if isinstance(x, dict)})
        for sub in (subgraphs if isinstance(subgraphs, list) else ()) if isinstance(sub, dict) and _is_id(sub.get("id"))}


def _convert_ui(wf, legacy, ctx, sub_id=None):
    out = dict(wf)  # shallow: only nodes, their slots and the links are rewritten, each copied first
    conv = _Converter(legacy)
    report = conv.report
    nodes, by_id, frozen = _read_ui_nodes(wf, report)
    for nid, node in by_id.items():
        conv.types[nid] = node["type"]
    links = _read_ui_links(wf, by_id, frozen, report)
    for nid, node in by_id.items():  # instances of subgraphs whose pack-typed slots are followed across
        entry = ctx.plan.get(node["type"])
        if entry is None:
            continue
        if nid in frozen or (len(node.get("inputs") or []), len(node.get("outputs") or [])) != entry["slots"]:
            for direction in ("in", "out"):
                for k in entry[direction]:
                    ctx.bad.setdefault((node["type"], direction, k), f"on node {nid}, whose slots differ from its "
                                       "subgraph's")
            continue
        _retype_slots(node, entry)
    conv.boundary, conv.boundary_parts, conv.boundary_settings = ctx.boundary({n: t for n, t in conv.types.items() if t in ctx.plan}, sub_id)
    last_node_id = _counter(wf.get("last_node_id"), "last_node_id", report)
    last_link_id = _counter(wf.get("last_link_id"), "last_link_id", report)
    links_by_id = {link[0]: link for link in links}
    into = {(str(l[3]), l[4]): l for l in links}

    def follow(link):
        """The link that feeds a Reroute chain (or the link itself); None if the chain is unfed or a loop."""
        seen = set()
        while conv.types.get(str(link[1])) == REROUTE and str(link[1]) not in seen:
            seen.add(str(link[1]))
            link = into.get((str(link[1]), 0))
            if link is None:
                return None
        return None if str(link[1]) in seen else link

    nodes_info, given_of = {}, {}
    for node in nodes:
        nid = str(node["id"])
        entry = table.PACK.get(node["type"])
        given, problems, notes = (_ui_given(node, entry, links_by_id, follow, conv.types) if entry and nid not in frozen
                                  else ({}, [], []))
        if notes:
            conv.layout_notes[nid] = notes
        if entry and nid in frozen:
            problems = ["its inputs or outputs cannot be read"]
        given_of[nid] = given
        props = node.get("properties") if isinstance(node.get("properties"), dict) else None
        nodes_info[nid] = (node["type"], given, problems, props)
    pack, keep = conv.classify(nodes_info)
    # a subgraph boundary whose pack-typed value is not followed across: what it joins stays the pack's, as a
    # kept node's neighbours do (the boundary's nodes join the walk below as kept nodes)
    anchors = {nid for nid, t in conv.types.items() if t in ctx.dropped and nid not in frozen}
    anchors |= {n for n in (str(SUBGRAPH_IN), str(SUBGRAPH_OUT)) if n in by_id} if sub_id in ctx.dropped else set()
    pack |= anchors
    keep |= anchors
    pack_links = []  # pack-type links between pack nodes, through Reroutes
    for l in links:
        source = follow(l) if conv.types.get(str(l[3])) != REROUTE else None
        if source is not None and table.PACK_TYPES.count(l[5]) + table.PACK_TYPES.count(source[5]):
            pack_links.append((str(source[1]), str(l[3])))
    conv.close_kept(pack, keep, pack_links)
    conv.next_id = 1 + max([int(n) for n in by_id if n.lstrip("-").isdigit()] + [last_node_id])
    to_convert = pack - keep
    _check_crossings(ctx, conv, links, to_convert, sub_id)
    converted = [n for n in nodes if str(n["id"]) in to_convert]
    for node in converted:
        nid = str(node["id"])
        mode = node.get("mode") if isinstance(node.get("mode"), int) and not isinstance(node.get("mode"), bool) else 0
        inst = _Instance(nid, node["type"], table.PACK[node["type"]], given_of[nid], mode, _pos(node))
        conv.instances[nid] = inst
        conv.create(inst)
    conv.wire_all()
    # new links: every connection of a new node, then the links from converted nodes to kept / other nodes
    final_links = [l for l in links if str(l[1]) not in conv.instances and str(l[3]) not in conv.instances]
    next_link = 1 + max([l[0] for l in links] + [last_link_id])
    new_ui = {}
    for nid, spec in conv.new_nodes.items():
        new_ui[nid] = _ui_node(nid, spec)
    for nid, spec in conv.new_nodes.items():
        node = new_ui[nid]
        for name, ref in spec["links"].items():
            slot = _ui_input_slot(node, name, spec["type"])
            src, src_slot, ty = ref.via if ref.via else (_node_id(ref.src, by_id), ref.slot, ref.type)
            final_links.append([next_link, src, src_slot, int(nid), slot, ty])
            next_link += 1
    unfed = []  # inputs of other nodes that a converted node fed with something ours has no output for
    for link in links:
        src, dst = str(link[1]), str(link[3])
        if src in conv.instances and dst not in conv.instances:
            ref = conv.resolve(_Link(src, link[2], link[5]))
            sink = ctx.sink(conv.types, dst, link[4], sub_id)
            feeder = conv.instances[src]
            settings = _Settings(feeder.label, dict(feeder.consumer_values)) if feeder.consumer_values else None
            settings_only = sink is not None and CROSSING_TYPES[ctx.plan[sink[0]][sink[1]][link[4]][0]][0] is None
            if sink is not None and (settings_only or isinstance(ref, _Link) or isinstance(ref, dict) and ref.get("adapter")):
                next_link = _into_crossing(ctx, conv, sink, ref, settings, link, by_id, final_links, next_link)
                continue
            if not isinstance(ref, _Link):
                unfed.append((dst, link[4], src))
                continue
            final_links.append([next_link, _node_id(ref.src, by_id), ref.slot, link[3], link[4],
                                ref.type if ref.type != "*" else link[5]])
            next_link += 1
    # a crossing straight into another (a subgraph's input feeding a nested subgraph's): its value passes on
    passing = [l for l in links if ctx.source(conv.types, str(l[1]), l[2], sub_id) is not None
               and ctx.sink(conv.types, str(l[3]), l[4], sub_id) is not None]
    if passing:
        drop = {l[0] for l in passing}
        final_links[:] = [l for l in final_links if l[0] not in drop]
        for link in passing:
            key = (str(link[1]), link[2])
            next_link = _into_crossing(ctx, conv, ctx.sink(conv.types, str(link[3]), link[4], sub_id),
                                       conv.boundary.get(key), conv.boundary_settings.get(key), link, by_id,
                                       final_links, next_link)
    gone = _drop_idle_reroutes(conv, links, final_links)
    for dst, slot, src in unfed:
        if dst not in gone:
            report.add(f"{dst} {conv.types[dst]}", "problem", f"input slot {slot} was fed by {src} {conv.types[src]}, "
                       "which has no counterpart for it; left unconnected")
    for link in links:
        src, dst = str(link[1]), str(link[3])
        if conv.types.get(src) == PRIMITIVE and dst in conv.instances:
            report.add(f"{src} {PRIMITIVE}", "not needed", f"it fed a widget of {conv.instances[dst].label}, whose "
                       "value the converted node now holds (see that node's lines)")
    # nodes: kept and foreign as they were, converted ones replaced, new ones placed without overlaps
    kept_nodes = [n for n in nodes if str(n["id"]) not in conv.instances and str(n["id"]) not in gone]
    space = _Space()
    for n in kept_nodes:
        space.add(node_rect(n))
    for inst in conv.instances.values():
        x, y = inst.pos
        for local, nid in inst.created.items():
            node = new_ui[nid]
            w, h = _size(node)
            x0, y0, x1, y1 = space.place((x, y - TITLE_H, x + w, y + h))
            node["pos"] = [x0, y0 + TITLE_H]
            y = y1 + GAP + TITLE_H
    out["nodes"] = kept_nodes + [new_ui[n] for n in conv.new_nodes]
    out["links"] = final_links
    _sync_slots(out, frozen)
    out["last_node_id"] = max([last_node_id] + [int(n["id"]) for n in out["nodes"] if str(n["id"]).lstrip("-").isdigit()])
    out["last_link_id"] = max([last_link_id] + [l[0] for l in final_links])
    _convert_subgraphs(out, legacy, report, ctx)
    return out, report


def _drop_idle_reroutes(conv, links, final_links):
    """Reroutes behind converted nodes that now feed nothing (their consumers were converted and are wired
    directly to the source): removed, each with a line; final_links loses the links into them. -> their ids."""
    reroutes = {n for n, t in conv.types.items() if t == REROUTE}
    if not reroutes:
        return set()
    feeds = {}
    for l in links:
        if str(l[3]) in reroutes:
            feeds.setdefault(str(l[1]), []).append(str(l[3]))
    behind, queue = set(), deque(r for src in conv.instances for r in feeds.get(src, ()))
    while queue:  # reroutes reached from converted nodes through reroutes only
        r = queue.popleft()
        if r not in behind:
            behind.add(r)
            queue.extend(feeds.get(r, ()))
    consumers, fed_by = {}, {}
    for l in final_links:
        consumers[str(l[1])] = consumers.get(str(l[1]), 0) + 1
        if str(l[3]) in behind:
            fed_by.setdefault(str(l[3]), []).append(str(l[1]))
    idle = deque(r for r in behind if not consumers.get(r))
    gone = set()
    while idle:
        r = idle.popleft()
        gone.add(r)
        conv.report.add(f"{r} {REROUTE}", "not needed", "it carried a value of a converted node to nodes that were "
                        "converted too, which are now wired directly; removed")
        for src in fed_by.get(r, ()):
            if src in behind:
                consumers[src] -= 1
                if not consumers[src] and src not in gone:
                    idle.append(src)
    if gone:
        final_links[:] = [l for l in final_links if str(l[3]) not in gone]
    return gone


def _node_id(nid: str, by_id):
    """The id as the file spells it (an int, or a string id kept as a string)."""
    node = by_id.get(nid)
    if node is not None:
        return node["id"]
    return int(nid) if nid.lstrip("-").isdigit() else nid


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
    raise Inconsistent(f"{node_type} has no input {name}")


def _sync_slots(wf, frozen=None):
    """Make every node's inputs[].link and outputs[].links agree with the links list."""
    frozen = frozen or {}
    into = {(str(l[3]), l[4]): l[0] for l in wf["links"]}
    out_of = {}
    for l in wf["links"]:
        out_of.setdefault((str(l[1]), l[2]), []).append(l[0])
    for node in wf["nodes"]:
        nid = str(node["id"])
        for i, inp in enumerate((node.get("inputs") or []) if "inputs" not in frozen.get(nid, ()) else []):
            inp["link"] = into.get((nid, i))
        for i, o in enumerate((node.get("outputs") or []) if "outputs" not in frozen.get(nid, ()) else []):
            want = out_of.get((nid, i), [])
            wanted = set(want)
            old = [x for x in (o.get("links") or []) if _hashable(x) and x in wanted]
            seen = set(old)
            o["links"] = old + [x for x in want if x not in seen]


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
    outputs = {}
    for l in wf.get("links", []):
        src, dst = nodes.get(str(l[1])), nodes.get(str(l[3]))
        if src is None or dst is None:
            problems.append(f"link {l[0]} has a missing end")
            continue
        src_slots, dst_slots = _slots(src, "outputs"), _slots(dst, "inputs")
        if src_slots is None or dst_slots is None or l[2] >= len(src_slots) or l[4] >= len(dst_slots):
            problems.append(f"link {l[0]} uses a slot its nodes do not have")
            continue
        if dst_slots[l[4]].get("link") != l[0]:
            problems.append(f"link {l[0]} is not recorded on node {l[3]}'s input {l[4]}")
        recorded = outputs.get((str(l[1]), l[2]))
        if recorded is None:  # a set per output: a loader feeding thousands of nodes is checked in linear time
            links = src_slots[l[2]].get("links")
            recorded = outputs[str(l[1]), l[2]] = {x for x in links if _hashable(x)} if isinstance(links, list) else set()
        if l[0] not in recorded:
            problems.append(f"link {l[0]} is not recorded on node {l[1]}'s output {l[2]}")
    known = set(link_ids)
    for n in wf.get("nodes", []):
        for inp in _slots(n, "inputs") or []:
            if inp.get("link") is not None and inp["link"] not in known:
                problems.append(f"node {n['id']} input {inp.get('name')} names missing link {inp['link']}")
    numeric = [int(i) for i in ids if i.lstrip("-").isdigit()]
    if numeric and int(wf.get("last_node_id", 0)) < max(numeric):
        problems.append("last_node_id is below a node id")
    if link_ids and int(wf.get("last_link_id", 0)) < max(link_ids):
        problems.append("last_link_id is below a link id")
    return problems


# ------------------------------------------------------------------------------------------ API format

def _api_link(v):
    """An API input value that is a link: [node id, output slot] (a slot is a non-negative int)."""
    return isinstance(v, list) and len(v) == 2 and _is_id(v[0]) and isinstance(v[1], int) and not isinstance(v[1], bool)


def _convert_api(prompt, legacy):
    conv = _Converter(legacy)
    report = conv.report
    nodes_info, given_of, dropped = {}, {}, {}
    for nid, node in prompt.items():
        conv.types[nid] = node["class_type"]
    for nid, node in prompt.items():
        label = f"{nid} {node['class_type']}"
        entry = table.PACK.get(node["class_type"])
        given, problems, drop = {}, [], dropped.setdefault(nid, set())
        inputs = node.get("inputs")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            report.add(label, "problem", f"its inputs are a {type(inputs).__name__}, not an object of named inputs; "
                       "kept as they are")
            problems.append("its inputs cannot be read")
            inputs = {}
        for name, v in inputs.items():
            if not _api_link(v):
                given[name] = ("value", v)
                continue
            if str(v[0]) not in prompt:
                report.add(label, "problem", f"input '{name}' links to node {v[0]}, which does not exist; the link is dropped")
                drop.add(name)
                continue
            src_entry = table.PACK.get(conv.types[str(v[0])])
            if v[1] < 0 or (src_entry and v[1] >= len(src_entry["outputs"])):
                report.add(label, "problem", f"input '{name}' links to output {v[1]} of node {v[0]}, which it does not "
                           "have; the link is dropped")
                drop.add(name)
                continue
            ty = src_entry["outputs"][v[1]] if src_entry else "*"
            given[name] = _Link(str(v[0]), v[1], ty)
        if entry:
            names = {n for n, _ in pack_inputs(entry)}
            for name in list(given):
                if name not in names:
                    problems.append(f"input '{name}' is not an input of this node in {table.PACK_VERSION} (its inputs: "
                                    f"{', '.join(sorted(names))}); renamed in another version of the pack?")
        given_of[nid] = given
        nodes_info[nid] = (node["class_type"], given, problems, None)
    pack, keep = conv.classify(nodes_info)
    pack_links = [(g.src, nid) for nid, given in given_of.items() for g in given.values()
                  if isinstance(g, _Link) and g.type in table.PACK_TYPES]
    conv.close_kept(pack, keep, pack_links)
    conv.next_id = 1 + max([int(n) for n in prompt if str(n).lstrip("-").isdigit()] + [0])
    to_convert = pack - keep
    for nid in prompt:
        if nid in to_convert:
            inst = _Instance(nid, conv.types[nid], table.PACK[conv.types[nid]], given_of[nid])
            conv.instances[nid] = inst
            conv.create(inst)
    conv.wire_all()
    out = {}
    for nid, node in prompt.items():
        if nid in conv.instances:
            continue
        if isinstance(node.get("inputs"), dict):
            node = {**node, "inputs": dict(node["inputs"])}  # shallow: only the links are rewritten
            for name in dropped[nid]:
                del node["inputs"][name]
            for name, v in list(node["inputs"].items()):
                if _api_link(v) and str(v[0]) in conv.instances:
                    ref = conv.resolve(_Link(str(v[0]), v[1]))
                    if isinstance(ref, _Link):
                        node["inputs"][name] = [ref.src, ref.slot]
                    else:
                        report.add(f"{nid} {node['class_type']}", "problem", f"input '{name}' was fed by {v[0]} "
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
        inputs = node.get("inputs")
        for name, v in (inputs if isinstance(inputs, dict) else {}).items():
            if _api_link(v) and (str(v[0]) not in prompt or v[1] < 0):
                problems.append(f"node {nid} input {name} links to missing node {v[0]} or slot {v[1]}")
    return problems


# ------------------------------------------------------------------------------------------ entry points

def workflow_format(workflow) -> str:
    """"ui" or "api"; raises NotAWorkflow naming what was found instead."""
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and isinstance(workflow.get("links", []), list):
        for n in workflow["nodes"]:
            if not (isinstance(n, dict) and "id" in n and "type" in n):
                raise NotAWorkflow("a UI workflow whose 'nodes' are not all objects with 'id' and 'type'")
            if not _is_id(n["id"]) or not isinstance(n["type"], str):
                raise NotAWorkflow(f"a UI workflow with a node whose id {_short(n['id'])} or type {_short(n['type'])} "
                                   "is not a number or a name")
        return "ui"
    if isinstance(workflow, dict) and workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        bad = next((k for k, v in workflow.items() if not isinstance(v["class_type"], str)), None)
        if bad is not None:
            raise NotAWorkflow(f"an API prompt whose node {bad} has class_type {_short(workflow[bad]['class_type'])}, "
                               "not a node name")
        return "api"
    kind = type(workflow).__name__
    keys = ", ".join(_short(k, 30) for k in list(workflow)[:5]) if isinstance(workflow, dict) else ""
    raise NotAWorkflow(f"not a ComfyUI workflow: expected a UI workflow (with 'nodes' and 'links') or an API prompt "
                       f"({{id: {{class_type, inputs}}}}), got a {kind}{' with keys ' + keys if keys else ''}")


def convert(workflow: dict, legacy: bool = False):
    """Convert a workflow of ComfyUI_IPAdapter_plus to this pack's nodes.

    workflow: a UI-format workflow (as saved from the ComfyUI menu) or an API-format prompt, as parsed JSON.
    legacy:   set `legacy` on the converted Encode Image Prompt / Apply IPAdapter nodes, which then reproduce
              the pack's results (its preprocessing, its plus-model unconditional image, no middle block).
    Returns (new_workflow, report): the input is not modified; report.notes lists each node converted and
    each option mapped / approximated / not supported, report.text() prints them. Raises NotAWorkflow, and
    Inconsistent if the result breaks its own bookkeeping (a bug of this converter).
    """
    fmt = workflow_format(workflow)
    new, report = (_convert_ui_file if fmt == "ui" else _convert_api)(workflow, legacy)
    problems = (validate_ui if fmt == "ui" else validate_api)(new)
    if problems:  # a bug here, never the user's input: refuse to hand out a broken file
        raise Inconsistent("the converted workflow is inconsistent: " + "; ".join(problems[:5]))
    return new, report


def _write_json(new, fh):
    """Top-level keys one per line, each node and link on its own line: readable, and written by json's C
    encoder (json.dump with indent is pure Python: minutes for a node holding millions of numbers)."""
    fh.write("{")
    for i, (key, value) in enumerate(new.items()):
        fh.write(("," if i else "") + "\n  " + json.dumps(key) + ": ")
        if isinstance(value, list) and key in ("nodes", "links") and value:
            fh.write("[\n" + ",\n".join("    " + json.dumps(v) for v in value) + "\n  ]")
        else:
            fh.write(json.dumps(value))
    fh.write("\n}\n")


def _write_atomically(new, path):
    """Write beside the target and rename over it: a failure never leaves half a file (or half the input)."""
    target = os.path.realpath(path)  # a link stays a link; the file it names is replaced
    fd, tmp = tempfile.mkstemp(prefix=".migrate-", suffix=".json", dir=os.path.dirname(target) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            _write_json(new, fh)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def main(argv=None) -> int:
    """Exit codes: 0 written, 1 unreadable or not a workflow, 2 usage (argparse), 3 a bug of the converter."""
    parser = argparse.ArgumentParser(prog="python -m nodes.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a workflow .json (UI or API format) using ComfyUI_IPAdapter_plus nodes")
    parser.add_argument("-o", "--output", help="where to write the converted workflow (default: IN.converted.json)")
    parser.add_argument("--legacy", action="store_true", help="reproduce the pack's results (see README)")
    parser.add_argument("--overwrite", action="store_true", help="allow the output to be the input file itself "
                        "(replaced in one step once the conversion succeeded)")
    args = parser.parse_args(argv)
    output = args.output or (args.input[:-5] if args.input.endswith(".json") else args.input) + ".converted.json"
    if _same_file(args.input, output) and not args.overwrite:
        print(f"{output} is the input file {args.input}: refusing to overwrite it; name another output with -o, "
              "or pass --overwrite", file=sys.stderr)
        return 1
    try:
        with open(args.input, encoding="utf-8-sig") as f:  # -sig: a UTF-8 byte-order mark is fine
            workflow = json.load(f)
    except RecursionError:
        print(f"cannot read {args.input}: its JSON nests deeper than any workflow (and than Python's reader allows)",
              file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        print(f"cannot read {args.input}: {e}", file=sys.stderr)
        return 1
    try:
        new, report = convert(workflow, legacy=args.legacy)
    except NotAWorkflow as e:
        print(f"{args.input}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- any other failure is ours: one line, exit 3, nothing written
        print(f"{args.input}: internal error of the converter, nothing written (please report it with the file): "
              f"{type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        return 3
    try:
        _write_atomically(new, output)
    except RecursionError:
        print(f"cannot write {output}: a value of the workflow nests too deep to write", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"cannot write {output}: {e}", file=sys.stderr)
        return 1
    print(report.text())
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
