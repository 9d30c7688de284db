"""Self-made UI-format workflows of the widely used pack's nodes (no file of the pack is copied).

`pack_workflow(node_type)`: a text-to-image graph (checkpoint, prompts, 64x64 latent, KSampler 2 steps,
decode, save) with one node of the pack in it, fed by providers for each of its inputs, its MODEL output
(if any) into the KSampler, plus a note and a group. `api_of(workflow)` gives the API format.
Widget values: the pack's defaults for the names below (its INPUT_TYPES), positions from its input order.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
from pathlib import Path


def _migrate_modules():
    """nodes.migrate and its table; inside a booted ComfyUI, whose own `nodes` module shadows our package,
    loaded from their files under another package name (nodes/__init__.py imports nothing, so this is safe)."""
    try:
        from nodes import migrate, migrate_table
        return migrate, migrate_table
    except ImportError:
        pkg_dir = Path(__file__).resolve().parents[2] / "nodes"
        spec = importlib.util.spec_from_file_location("ipa_migrate_pkg", pkg_dir / "__init__.py",
                                                      submodule_search_locations=[str(pkg_dir)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["ipa_migrate_pkg"] = pkg
        spec.loader.exec_module(pkg)
        return importlib.import_module("ipa_migrate_pkg.migrate"), importlib.import_module("ipa_migrate_pkg.migrate_table")


migrate, table = _migrate_modules()
pack_inputs, pack_widgets = migrate.pack_inputs, migrate.pack_widgets

# a value for every widget name the pack uses (its defaults or its first choice)
VALUES = {
    "weight": 1.0, "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0,
    "embeds_scaling": "V only", "encode_batch_size": 0, "preset": "STANDARD (medium strength)",
    "ipadapter_file": "ip-adapter_sd15.safetensors", "lora_strength": 0.6, "provider": "CPU", "model_name": "buffalo_l",
    "weight_style": 1.0, "weight_composition": 1.0, "expand_style": False, "weight_faceidv2": 1.0, "weight_kolors": 1.0,
    "sharpening": 0.0, "layer_weights": "", "enhance_tiles": 2, "enhance_ratio": 1.0, "style_boost": 1.0,
    "composition_boost": 0.0, "method": "concat", "type": "fade", "strength": 1.0, "blur": 0,
    "interpolation": "LANCZOS", "crop_position": "center", "filename_prefix": "IP_embeds", "embeds": "x.ipadpt",
    "weights": "1.0, 0.0", "timing": "linear", "frames": 0, "start_frame": 0, "end_frame": 9999,
    "add_starting_frames": 0, "add_ending_frames": 0, "weights_1": 0.0, "weights_2": 0.0, "prompt": "",
    "image_weight": 1.0, "prompt_weight": 1.0,
    "noise": 0.0, "unfold_batch": False, "faceid_v2": False, "weight_v2": 1.0, "pad_around": True,  # first generation
}
PRESET_VALUES = {"IPAdapterUnifiedLoaderFaceID": {"preset": "FACEID"},
                 "IPAdapterUnifiedLoaderCommunity": {"preset": "Composition"},
                 "IPAdapterWeights": {"method": "full batch"}, "IPAdapter": {"weight_type": "standard"},
                 **{t: {"weight_type": "original"} for t in ("IPAdapterApply", "IPAdapterApplyEncoded",
                                                            "IPAdapterApplyFaceID")}}

# provider node for each input type: (node type, output slot)
PROVIDERS = {
    "MODEL": ("CheckpointLoaderSimple", 0), "IPADAPTER": ("IPAdapterModelLoader", 0), "IMAGE": ("LoadImage", 0),
    "MASK": ("LoadImageMask", 0), "CLIP_VISION": ("CLIPVisionLoader", 0), "EMBEDS": ("IPAdapterEncoder", 0),
    "INSIGHTFACE": ("IPAdapterInsightFaceLoader", 0), "IPADAPTER_PARAMS": ("IPAdapterRegionalConditioning", 0),
    "WEIGHTS_STRATEGY": ("IPAdapterWeights", 5), "CONDITIONING": ("CLIPTextEncode", 0),
}
CORE = {  # (inputs [(name, type)], outputs, widgets_values) of the host's nodes used here
    "CheckpointLoaderSimple": ([], ["MODEL", "CLIP", "VAE"], ["sd15.safetensors"]),
    "CLIPTextEncode": ([("clip", "CLIP")], ["CONDITIONING"], ["a photo"]),
    "EmptyLatentImage": ([], ["LATENT"], [64, 64, 1]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                 ["LATENT"], [0, "fixed", 2, 5.0, "euler", "normal", 1.0]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], ["IMAGE"], []),
    "SaveImage": ([("images", "IMAGE")], [], ["migrated"]),
    "LoadImage": ([], ["IMAGE", "MASK"], ["example.png", "image"]),
    "LoadImageMask": ([], ["MASK"], ["mask_left.png", "alpha", "image"]),
    "CLIPVisionLoader": ([], ["CLIP_VISION"], ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"]),
    "Note": ([], [], ["converted from ComfyUI_IPAdapter_plus"]),
}


class _Builder:
    def __init__(self):
        self.wf = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
                   "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}
        self.x = 0

    def node(self, node_type, widgets=None, pos=None):
        if node_type in CORE:
            ins, outs, values = CORE[node_type]
        else:
            entry = table.PACK[node_type]
            ins = [(n, t) for n, t in pack_inputs(entry) if t not in table.WIDGET_TYPES]
            outs = list(entry["outputs"])
            given = {**VALUES, **PRESET_VALUES.get(node_type, {}), **(widgets or {})}
            values = [given[n] for n in pack_widgets(entry)]
        self.wf["last_node_id"] += 1
        nid = self.wf["last_node_id"]
        if pos is None:
            pos = [self.x, 100 + 400 * (nid % 2)]
            self.x += 360
        self.wf["nodes"].append({
            "id": nid, "type": node_type, "pos": list(pos), "size": [320, 240], "flags": {}, "order": nid, "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in ins],
            "outputs": [{"name": t, "type": t, "links": [], "slot_index": i} for i, t in enumerate(outs)],
            "properties": {"Node name for S&R": node_type}, "widgets_values": list(values) if widgets != "raw" else []})
        return nid

    def get(self, nid):
        return next(n for n in self.wf["nodes"] if n["id"] == nid)

    def link(self, src, slot, dst, name):
        self.wf["last_link_id"] += 1
        lid = self.wf["last_link_id"]
        d, s = self.get(dst), self.get(src)
        i = next(i for i, inp in enumerate(d["inputs"]) if inp["name"] == name)
        ty = s["outputs"][slot]["type"]
        d["inputs"][i]["link"] = lid
        s["outputs"][slot]["links"].append(lid)
        self.wf["links"].append([lid, src, slot, dst, i, ty])
        return lid


class IndexedBuilder(_Builder):
    """The builder with an id index, for graphs of thousands of nodes (tests of scale, benchmarks)."""

    def __init__(self):
        super().__init__()
        self.index = {}

    def node(self, node_type, widgets=None, pos=None):
        nid = super().node(node_type, widgets, pos)
        self.index[nid] = self.wf["nodes"][-1]
        return nid

    def get(self, nid):
        return self.index[nid]


def base_graph(b: _Builder):
    ids = {t: b.node(t) for t in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
                                  "VAEDecode", "SaveImage", "LoadImage", "CLIPVisionLoader", "Note")}
    neg = b.node("CLIPTextEncode")
    ck, ks = ids["CheckpointLoaderSimple"], ids["KSampler"]
    b.link(ck, 1, ids["CLIPTextEncode"], "clip")
    b.link(ck, 1, neg, "clip")
    b.link(ids["CLIPTextEncode"], 0, ks, "positive")
    b.link(neg, 0, ks, "negative")
    b.link(ids["EmptyLatentImage"], 0, ks, "latent_image")
    b.link(ks, 0, ids["VAEDecode"], "samples")
    b.link(ck, 2, ids["VAEDecode"], "vae")
    b.link(ids["VAEDecode"], 0, ids["SaveImage"], "images")
    b.wf["groups"].append({"title": "prompts", "bounding": [-20, -60, 800, 300], "color": "#3f789e"})
    return ids


class _Graph:
    """The base graph plus pack nodes fed by providers (one provider node per type, made on first use)."""

    def __init__(self):
        self.b = _Builder()
        self.ids = base_graph(self.b)
        self.providers = {t: self.ids[t] for t in ("CheckpointLoaderSimple", "LoadImage", "CLIPVisionLoader", "CLIPTextEncode")}

    def provide(self, ty, for_type):
        ptype, slot = PROVIDERS[ty]
        if ty == "IPADAPTER" and for_type == "IPAdapter":  # the pack's simple node needs its Unified Loader
            ptype, slot = "IPAdapterUnifiedLoader", 1
        if ptype == for_type:
            return None
        if ptype not in self.providers:
            pid = self.b.node(ptype)
            self.providers[ptype] = pid
            self.feed(pid, ptype)
        return self.providers[ptype], slot

    def feed(self, nid, ntype, optional=False, skip=()):
        entry = table.PACK.get(ntype)
        if entry is None:  # a host node (LoadImageMask): nothing to feed
            return
        req = [s.split(":") for s in entry["required"]]
        opt = [s.split(":") for s in entry["optional"] if optional or s.endswith(":CLIP_VISION")]
        for name, ty in req + opt:
            if name in skip or ty in table.WIDGET_TYPES or (ty == "MASK" and not optional) or (
                    ntype == "IPAdapterCombineEmbeds" and name != "embed1"):
                continue
            if ty == "IPADAPTER" and name == "ipadapter" and ntype.startswith("IPAdapterUnifiedLoader"):
                continue
            src = self.provide(ty, ntype)
            if src is not None:
                self.b.link(src[0], src[1], nid, name)

    def add(self, node_type, widgets=None, optional=False, skip=()):
        nid = self.b.node(node_type, widgets)
        self.feed(nid, node_type, optional, skip)
        return nid


MISSING = "IPAMissingCounterpart"  # a node of ours that does not exist


def without_counterpart(monkeypatch, node_type, reason="its counterpart is missing here (test)"):
    """`node_type` as a node whose counterpart does not exist (yet), as several were before theirs landed: the
    converter keeps it and says why. Undone after the test (monkeypatch)."""
    entry = table.PACK[node_type]
    monkeypatch.setitem(table.PACK, node_type, {"required": entry["required"], "optional": entry["optional"],
                                                "outputs": entry["outputs"], "counterpart": MISSING})
    monkeypatch.setitem(table.PENDING, MISSING, reason)


def pack_workflow(node_type, widgets=None, connect_optional=False):
    """A workflow with `node_type` of the pack fed by providers; its MODEL output drives the KSampler."""
    g = _Graph()
    nid = g.add(node_type, widgets, connect_optional)
    entry = table.PACK[node_type]
    if "MODEL" in entry["outputs"]:
        g.b.link(nid, entry["outputs"].index("MODEL"), g.ids["KSampler"], "model")
    else:
        g.b.link(g.ids["CheckpointLoaderSimple"], 0, g.ids["KSampler"], "model")
    return g.b.wf


def chained_workflow(node_types):
    """One workflow holding every given pack node: those with a MODEL output chained one after the other
    (each patching the previous one's model), the others as providers (loaders, encoder, prep image).
    Returns (workflow, the pack node types in it)."""
    g = _Graph()
    model = (g.ids["CheckpointLoaderSimple"], 0)
    if "PrepImageForClipVision" in node_types:  # LoadImage -> Prep -> every image input
        prep = g.b.node("PrepImageForClipVision")
        g.b.link(g.ids["LoadImage"], 0, prep, "image")
        g.providers["LoadImage"] = prep
    community = None
    if "IPAdapterUnifiedLoaderCommunity" in node_types:
        community = g.b.node("IPAdapterUnifiedLoaderCommunity")
        g.b.link(model[0], model[1], community, "model")
    for node_type in node_types:
        entry = table.PACK[node_type]
        if "MODEL" not in entry["outputs"] or node_type.startswith("IPAdapterUnifiedLoader"):
            continue
        skip = ("model",)
        if community is not None and node_type == "IPAdapterMS":
            skip += ("ipadapter",)
        nid = g.add(node_type, skip=skip)
        if "ipadapter" in skip and "ipadapter" in [s.split(":")[0] for s in entry["required"]]:
            g.b.link(community, 1, nid, "ipadapter")
        g.b.link(model[0], model[1], nid, "model")
        model = (nid, entry["outputs"].index("MODEL"))
    g.b.link(model[0], model[1], g.ids["KSampler"], "model")
    present = sorted({n["type"] for n in g.b.wf["nodes"] if n["type"] in table.PACK})
    return g.b.wf, present


def into_subgraph(wf, inside, name="part", sub_id="c0ffee00-part"):
    """The frontend's 'convert to subgraph' on a flat UI workflow: the nodes with ids in `inside` move into a
    subgraph definition; each outer output that feeds them becomes a subgraph input, each of their outputs that
    feeds the outside a subgraph output (with its type), and one instance node takes their place."""
    wf = {**wf, "nodes": [dict(n) for n in wf["nodes"]], "links": [list(l) for l in wf["links"]]}
    by_id = {n["id"]: n for n in wf["nodes"]}
    inst = wf["last_node_id"] + 1
    next_link = wf["last_link_id"]
    ins, outs, inner_links, outer_links, in_of, out_of = [], [], [], [], {}, {}
    for lid, src, slot, dst, dst_slot, ty in wf["links"]:
        if (src in inside) == (dst in inside):
            (inner_links if src in inside else outer_links).append([lid, src, slot, dst, dst_slot, ty])
            continue
        next_link += 1
        if dst in inside:  # crosses in: one subgraph input per outer output
            k = in_of.setdefault((src, slot), len(ins))
            if k == len(ins):
                ins.append({"id": f"in-{k}", "name": by_id[dst]["inputs"][dst_slot]["name"], "type": ty, "linkIds": []})
                outer_links.append([next_link, src, slot, inst, k, ty])
            inner_links.append([lid, -10, k, dst, dst_slot, ty])
            ins[k]["linkIds"].append(lid)
        else:  # crosses out: one subgraph output per inner output
            k = out_of.setdefault((src, slot), len(outs))
            if k == len(outs):
                outs.append({"id": f"out-{k}", "name": by_id[src]["outputs"][slot]["name"], "type": ty, "linkIds": [lid]})
                inner_links.append([lid, src, slot, -20, k, ty])
            outer_links.append([next_link, inst, k, dst, dst_slot, ty])
    instance = {"id": inst, "type": sub_id, "pos": [400, 600], "size": [200, 80], "flags": {}, "order": 0, "mode": 0,
                "inputs": [{"name": s["name"], "type": s["type"], "link": None} for s in ins],
                "outputs": [{"name": s["name"], "type": s["type"], "links": []} for s in outs], "properties": {}}
    outer = [n for n in wf["nodes"] if n["id"] not in inside] + [instance]
    for nodes, links in ((outer, outer_links), ([n for n in wf["nodes"] if n["id"] in inside], inner_links)):
        ids = {n["id"]: n for n in nodes}
        for n in nodes:
            n["inputs"] = [{**i, "link": None} for i in n.get("inputs") or []]
            n["outputs"] = [{**o, "links": []} for o in n.get("outputs") or []]
        for lid, src, slot, dst, dst_slot, _ in links:
            if dst in ids:
                ids[dst]["inputs"][dst_slot]["link"] = lid
            if src in ids:
                ids[src]["outputs"][slot]["links"].append(lid)
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    sub = {"id": sub_id, "version": 1, "name": name, "state": {"lastNodeId": inst, "lastLinkId": next_link},
           "inputNode": {"id": -10, "bounding": [0, 0, 100, 60]}, "outputNode": {"id": -20, "bounding": [900, 0, 100, 60]},
           "inputs": ins, "outputs": outs, "widgets": [], "nodes": [by_id[i] for i in sorted(inside)],
           "links": [dict(zip(keys, l)) for l in inner_links]}
    earlier = (wf.get("definitions") or {}).get("subgraphs", [])
    return {**wf, "nodes": outer, "links": outer_links, "last_node_id": inst, "last_link_id": next_link,
            "definitions": {"subgraphs": [sub] + earlier}}


def api_of(workflow):
    """UI -> API prompt with the widget positions this module wrote (for the converter's API path)."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] == "Note":
            continue
        if node["type"] in table.PACK:
            names = pack_widgets(table.PACK[node["type"]])
        elif node["type"] in table.OURS:
            names = migrate.our_widgets(node["type"])
        else:
            names = {"CheckpointLoaderSimple": ["ckpt_name"], "CLIPTextEncode": ["text"],
                     "EmptyLatentImage": ["width", "height", "batch_size"],
                     "KSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"],
                     "VAEDecode": [], "SaveImage": ["filename_prefix"], "LoadImage": ["image", None],
                     "LoadImageMask": ["image", "channel", None], "CLIPVisionLoader": ["clip_name"]}[node["type"]]
        inputs = {n: v for n, v in zip(names, node["widgets_values"]) if n is not None}
        for inp in node["inputs"]:
            if inp["link"] is not None:
                l = links[inp["link"]]
                inputs[inp["name"]] = [str(l[1]), l[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def copy_of(wf):
    return copy.deepcopy(wf)
