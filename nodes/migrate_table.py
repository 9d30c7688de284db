"""What each node of the widely used pack (ComfyUI_IPAdapter_plus, 9d076a3) becomes here. Data only.

Read by nodes/migrate.py (plain Python, no torch, no host). Three tables:

PACK      one entry per node of the pack: its inputs in INPUT_TYPES order as "name:TYPE" (required, then
          optional; the order gives the positions of `widgets_values`), its output types, and a recipe:
            nodes    our nodes it becomes, by a local name ("encode": "IPAEncodeImagePrompt")
            options  each pack input -> a rule or a list of rules (keys below); every input has one, so
                     nothing is dropped without a line in the report
            wires    fixed inputs of our nodes: "local.input": "local.slot" | "=constant" | LEGACY
            outputs  per pack output slot: "local.slot", "in:NAME" (passes the pack input through),
                     {"adapter": ..., "clip_vision": ...} (an IPADAPTER pipeline), {"uncond_of": "local.slot"}
            needs    targets without which the node means nothing (else it is kept and reported)
            counterpart  for nodes with no recipe yet: the node or input that will take them over
OURS      our nodes' inputs (and the host's CLIPVisionLoader), the order of their widgets, defaults, outputs.
          tests/nodes/test_migrate.py checks it against the real INPUT_TYPES, so it cannot drift.
PENDING   counterparts that do not exist here (yet), each with the reason and what to do instead.

A target ("apply.weight_type" -> IPAApplyAdapter.weight_type) that is not in OURS is reported "not supported
yet"; once OURS lists it, the same rule maps it: switching a mapping on is the one line in OURS that its
drift test demands anyway.

Option rule keys: to (target or list), part ("adapter" / "clip_vision" of an IPADAPTER pipeline), fallback
("ipadapter.clip_vision": the pipeline's clip vision when the input is not connected), values (pack value ->
ours; None = no counterpart), same (pack values our default reproduces when the target does not exist),
linked_to (the target instead when the input is fed by a link; linked_approx: the note then), format ("text",
"pack layer weights", "plus version by file name": how the value is rewritten), upstream (take that input of
the node of ours the linked value comes from), optional (a missing source is fine), quiet (a consumers.X value reported only where it is used), settings_from (the input only
carries settings of a node that became nothing, e.g. the InsightFace loader),
approx (a note: mapped, but not identical; or {pack value: note}), ignore (why the value changes nothing
here), unsupported (why there is no counterpart), uncond_of (an EMBEDS input satisfied by the embeds an encode
already carries), requires (a value syntax listed in OURS[...]["features"] once it lands). A target
"consumers.X" sets input X of our nodes that this node's output feeds (Prep Image's crop).
"""
from . import pack_interface

LEGACY = "@legacy"  # wire value: the converter's --legacy flag

# Types that only the pack's nodes produce and consume: they never connect to ours.
PACK_TYPES = ("IPADAPTER", "EMBEDS", "INSIGHTFACE", "IPADAPTER_PARAMS", "WEIGHTS_STRATEGY")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
PACK_VERSION = pack_interface.PACK_VERSION

# ---------------------------------------------------------------------------------------------- ours
OURS = {
    "IPALoadAdapter": {
        "required": ("adapter_name:COMBO",), "optional": (),
        "defaults": {"adapter_name": ""},
        "outputs": ("IPA_ADAPTER",), "size": (320, 80),
    },
    "IPAEncodeImagePrompt": {
        "required": ("ipadapter:IPA_ADAPTER", "clip_vision:CLIP_VISION", "image:IMAGE"),
        "optional": ("crop:COMBO", "combine:COMBO", "negative_image:IMAGE", "reference_weights:STRING", "mask:MASK",
                     "tiles:COMBO", "enhance_tiles:INT", "enhance_ratio:FLOAT", "legacy:BOOLEAN", "tile_sharpening:FLOAT"),
        "defaults": {"crop": "center", "combine": "concat", "reference_weights": "", "tiles": "off", "enhance_tiles": 2,
                     "enhance_ratio": 1.0, "legacy": False, "tile_sharpening": 0.0},
        "outputs": ("IPA_EMBEDS",), "size": (320, 290),
    },
    "IPAApplyAdapter": {
        "required": ("model:MODEL", "ipadapter:IPA_ADAPTER", "embeds:IPA_EMBEDS", "weight:FLOAT", "start_at:FLOAT",
                     "end_at:FLOAT"),
        "optional": ("attn_mask:MASK", "layer_weights:COMBO", "layer_weights_custom:STRING", "weight_type:COMBO",
                     "embeds_scaling:COMBO", "composition_embeds:IPA_EMBEDS", "weight_composition:FLOAT",
                     "expand_style:BOOLEAN", "style_boost:FLOAT", "composition_boost:FLOAT",
                     "faceid_lora_strength:FLOAT", "weight_faceidv2:FLOAT", "frame_weights:FLOAT", "legacy:BOOLEAN",
                     "weight_kolors:FLOAT"),
        "defaults": {"weight": 1.0, "start_at": 0.0, "end_at": 1.0, "layer_weights": "all layers",
                     "layer_weights_custom": "", "weight_type": "linear", "embeds_scaling": "V only",
                     "weight_composition": 1.0, "expand_style": False, "style_boost": 1.0, "composition_boost": 0.0,
                     "faceid_lora_strength": 1.0, "weight_faceidv2": 1.0, "legacy": False, "weight_kolors": 1.0},
        "links_only": ("frame_weights",),  # forceInput: a link input, no widget
        "outputs": ("MODEL",), "size": (320, 430),
        # value syntaxes that landed: the pack's "index:weight" strings, written "tINDEX:weight" (layer_weights.py)
        "features": ("layer_weights_custom index:weight",),
    },
    "IPAInspectAdapter": {"required": ("ipadapter:IPA_ADAPTER",), "optional": (), "defaults": {}, "outputs": ("STRING",), "size": (320, 60)},
    "IPAUnifiedLoader": {
        "required": ("model:MODEL", "preset:COMBO"), "optional": (), "defaults": {"preset": "STANDARD (medium strength)"},
        "outputs": ("MODEL", "IPA_ADAPTER", "CLIP_VISION"), "size": (320, 100),
    },
    "IPACombineEmbeds": {
        "required": ("ipadapter:IPA_ADAPTER", "embeds_1:IPA_EMBEDS", "method:COMBO"),
        "optional": ("embeds_2:IPA_EMBEDS", "embeds_3:IPA_EMBEDS", "embeds_4:IPA_EMBEDS", "embeds_5:IPA_EMBEDS"),
        "defaults": {"method": "concat"}, "outputs": ("IPA_EMBEDS",), "size": (320, 170),
    },
    "IPASaveEmbeds": {
        "required": ("embeds:IPA_EMBEDS", "filename_prefix:STRING", "description:STRING"), "optional": (),
        "defaults": {"filename_prefix": "ipadapter/embeds", "description": ""}, "outputs": (), "size": (320, 160),
    },
    "IPALoadEmbeds": {
        "required": ("embeds_file:COMBO",), "optional": ("ipadapter:IPA_ADAPTER",), "defaults": {"embeds_file": ""},
        "outputs": ("IPA_EMBEDS",), "size": (320, 80),
    },
    "IPANoise": {
        "required": ("type:COMBO", "strength:FLOAT", "blur:INT"), "optional": ("image:IMAGE", "seed_override:INT"),
        "defaults": {"type": "fade", "strength": 1.0, "blur": 0, "seed_override": -1}, "outputs": ("IMAGE",),
        "size": (320, 150),
    },
    "IPARegion": {
        "required": ("embeds:IPA_EMBEDS", "mask:MASK", "weight:FLOAT"), "optional": ("regions:IPA_REGIONS",),
        "defaults": {"weight": 1.0}, "outputs": ("IPA_REGIONS",), "size": (320, 110),
    },
    "IPAApplyRegions": {
        "required": ("model:MODEL", "ipadapter:IPA_ADAPTER", "regions:IPA_REGIONS", "start_at:FLOAT", "end_at:FLOAT"),
        "optional": (), "defaults": {"start_at": 0.0, "end_at": 1.0}, "outputs": ("MODEL",), "size": (320, 130),
    },
    "IPAEncodeFace": {
        "required": ("ipadapter:IPA_ADAPTER", "image:IMAGE", "provider:COMBO"),
        "optional": ("clip_vision:CLIP_VISION", "insightface_model:COMBO", "combine:COMBO", "plus_version:COMBO",
                     "legacy:BOOLEAN"),
        "defaults": {"provider": "CPU", "insightface_model": "buffalo_l", "combine": "concat",
                     "plus_version": "v2 (shortcut)", "legacy": False},
        "outputs": ("IPA_EMBEDS", "IMAGE"), "size": (320, 214),
    },
    "IPAFrameWeights": {
        "required": ("weights:STRING", "timing:COMBO", "frames:INT", "start_frame:INT", "end_frame:INT",
                     "add_starting_frames:INT", "add_ending_frames:INT", "method:COMBO"),
        "optional": ("image:IMAGE", "seed:INT"),
        "defaults": {"weights": "1.0, 0.0", "timing": "linear", "frames": 0, "start_frame": 0, "end_frame": 9999,
                     "add_starting_frames": 0, "add_ending_frames": 0, "method": "full batch", "seed": 0},
        "outputs": ("FLOAT", "FLOAT", "INT", "IMAGE", "IMAGE", "IPA_WEIGHTS_STRATEGY"), "size": (320, 290),
    },
    "IPAFrameWeightsFromStrategy": {
        "required": ("weights_strategy:IPA_WEIGHTS_STRATEGY",), "optional": ("image:IMAGE",), "defaults": {},
        "outputs": ("FLOAT", "FLOAT", "INT", "IMAGE", "IMAGE", "IPA_WEIGHTS_STRATEGY"), "size": (320, 80),
    },
    "IPACombineFrameWeights": {
        "required": ("weights_1:FLOAT", "weights_2:FLOAT"), "optional": (), "defaults": {"weights_1": 0.0, "weights_2": 0.0},
        "outputs": ("FLOAT", "INT"), "size": (320, 80),
    },
    "IPAPromptSchedule": {
        "required": ("weights_strategy:IPA_WEIGHTS_STRATEGY", "prompt:STRING"), "optional": (), "defaults": {"prompt": ""},
        "outputs": ("STRING",), "size": (320, 160),
    },
    # the host's own nodes (nodes.py): the clip vision loader for the model the pack's Unified Loader picked by
    # name, the conditioning mask for the text prompts of the pack's Regional Conditioning
    "ConditioningSetMask": {"required": ("conditioning:CONDITIONING", "mask:MASK", "strength:FLOAT", "set_cond_area:COMBO"),
                            "optional": (), "defaults": {"strength": 1.0, "set_cond_area": "default"},
                            "outputs": ("CONDITIONING",), "size": (320, 120)},
    "CLIPVisionLoader": {"required": ("clip_name:COMBO",), "optional": (), "defaults": {"clip_name": ""}, "outputs": ("CLIP_VISION",),
                         "size": (320, 60)},
}

# What our inputs accept (their INPUT_TYPES min/max and choice lists): a value outside is reported, never
# written. tests/nodes/test_migrate.py checks both against the real INPUT_TYPES, so they cannot drift.
HOST_NODES = ("CLIPVisionLoader", "ConditioningSetMask")  # in OURS, checked in the real host (tests/integration)
RANGES = {
    "ConditioningSetMask.strength": (0.0, 10.0),
    "IPAEncodeImagePrompt.enhance_tiles": (1, 16), "IPAEncodeImagePrompt.enhance_ratio": (0.0, 1.0),
    "IPAEncodeImagePrompt.tile_sharpening": (0.0, 1.0),
    "IPAApplyAdapter.weight": (-1.0, 5.0), "IPAApplyAdapter.start_at": (0.0, 1.0), "IPAApplyAdapter.end_at": (0.0, 1.0),
    "IPAApplyAdapter.weight_composition": (-1.0, 5.0), "IPAApplyAdapter.style_boost": (-5.0, 5.0),
    "IPAApplyAdapter.composition_boost": (-5.0, 5.0), "IPAApplyAdapter.faceid_lora_strength": (0.0, 2.0),
    "IPAApplyAdapter.weight_faceidv2": (-1.0, 5.0), "IPAApplyAdapter.weight_kolors": (-1.0, 5.0),
    "IPANoise.strength": (0.0, 1.0), "IPANoise.blur": (0, 32), "IPARegion.weight": (-1.0, 5.0),
    "IPAApplyRegions.start_at": (0.0, 1.0), "IPAApplyRegions.end_at": (0.0, 1.0),
    "IPACombineFrameWeights.weights_1": (-1.0, 5.0), "IPACombineFrameWeights.weights_2": (-1.0, 5.0),
    **{f"IPAFrameWeights.{n}": (0, 9999) for n in ("frames", "start_frame", "end_frame", "add_starting_frames",
                                                   "add_ending_frames")},
}
_COMBINES = ("concat", "average", "norm average", "batch", "add", "subtract", "max", "min")
CHOICES = {
    "ConditioningSetMask.set_cond_area": ("default", "mask bounds"),
    "IPAEncodeImagePrompt.crop": ("center", "pad", "squash"), "IPAEncodeImagePrompt.combine": _COMBINES,
    "IPAEncodeImagePrompt.tiles": ("off", "tiled", "enhance"),
    "IPAApplyAdapter.layer_weights": ("all layers", "style only", "composition only", "style and composition"),
    "IPAApplyAdapter.weight_type": ("linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input",
                                    "weak output", "weak middle", "strong middle", "style transfer", "composition",
                                    "strong style transfer", "style and composition", "style transfer precise",
                                    "composition precise"),
    "IPAApplyAdapter.embeds_scaling": ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty"),
    "IPAUnifiedLoader.preset": ("LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)",
                                "VIT-G (medium strength)", "PLUS (high strength)", "PLUS FACE (portraits)",
                                "FULL FACE - SD1.5 only (portraits stronger)", "FACEID", "FACEID PLUS - SD1.5 only",
                                "FACEID PLUS V2", "FACEID PORTRAIT (style transfer)",
                                "FACEID PORTRAIT UNNORM - SDXL only (strong)", "Kolors", "Composition"),
    "IPACombineEmbeds.method": ("concat", "add", "subtract", "average", "norm average", "max", "min"),
    "IPANoise.type": ("fade", "dissolve", "gaussian", "shuffle"),
    "IPAEncodeFace.provider": ("CPU", "CUDA", "ROCM", "DirectML", "OpenVINO", "CoreML"),
    "IPAEncodeFace.insightface_model": ("buffalo_l", "antelopev2"), "IPAEncodeFace.combine": _COMBINES,
    "IPAEncodeFace.plus_version": ("v2 (shortcut)", "v1"),
    "IPAFrameWeights.timing": ("custom", "linear", "ease_in_out", "ease_in", "ease_out", "random"),
    "IPAFrameWeights.method": ("full batch", "shift batches", "alternate batches"),
}

# Nodes and options with no counterpart here (yet): why, and what to do instead. Reported, never dropped. Empty
# while every node the pack ever shipped has its counterpart; the converter keeps the machinery for the next one.
PENDING: dict = {}

# ---------------------------------------------------------------------------------------------- shared rules
WEIGHT_TYPES = CHOICES["IPAApplyAdapter.weight_type"]
_SCALINGS = CHOICES["IPAApplyAdapter.embeds_scaling"]

_MODEL = {"to": "apply.model"}
_ADAPTER = {"to": ["encode.ipadapter", "apply.ipadapter"], "part": "adapter"}
_CLIP = {"to": "encode.clip_vision", "fallback": "ipadapter.clip_vision"}
_PIPELINE_CLIP = {"to": "encode.clip_vision", "part": "clip_vision"}  # nodes without a clip_vision input
_IMAGE = {"to": "encode.image"}
_NEG_IMAGE = {"to": "encode.negative_image"}
_MASK = {"to": "apply.attn_mask"}
# a weight linked from the pack's IPAdapter Weights (a list) becomes our per-frame weights; the pack reads
# the list per batch item on its Batch nodes only, elsewhere its first weight
_WEIGHT_BATCH = {"to": "apply.weight", "linked_to": "apply.frame_weights"}
_WEIGHT = {**_WEIGHT_BATCH, "linked_approx": "a weight list on a non-Batch node: the pack uses its first weight for "
                                            "every frame, ours one weight per frame (frame_weights)"}
# the pack never combines references on its Batch nodes (reference i goes to batch item i)
_BATCH_COMBINE = {"ignore": "Batch node: the pack does not combine here; reference i goes to batch item i"}
_START, _END = {"to": "apply.start_at"}, {"to": "apply.end_at"}
_WEIGHT_TYPE = {"to": "apply.weight_type", "same": ["linear"]}
_SCALING = {"to": "apply.embeds_scaling", "same": ["V only"]}
_COMBINE = {"to": "encode.combine"}  # the same five names, the same math (ip_core/embeds.py)
_BATCH_SIZE = {"ignore": "Encode Image Prompt encodes large batches in chunks by itself; the result is the same"}
_FACEIDV2 = {"to": "apply.weight_faceidv2", "same": [1.0]}
_APPLY_WIRES = {"apply.embeds": "encode.0", "encode.legacy": LEGACY, "apply.legacy": LEGACY}
_ENCODE_APPLY = {"encode": "IPAEncodeImagePrompt", "apply": "IPAApplyAdapter"}
_APPLY_OUT = ["apply.0"]

_APPLY_REQ = ("model:MODEL", "ipadapter:IPADAPTER", "image:IMAGE")
_APPLY_OPT = ("image_negative:IMAGE", "attn_mask:MASK", "clip_vision:CLIP_VISION")
_APPLY_OPTIONS = {"model": _MODEL, "ipadapter": _ADAPTER, "image": _IMAGE, "weight": _WEIGHT, "weight_type": _WEIGHT_TYPE,
                  "combine_embeds": _COMBINE, "start_at": _START, "end_at": _END, "embeds_scaling": _SCALING,
                  "image_negative": _NEG_IMAGE, "attn_mask": _MASK, "clip_vision": _CLIP, "encode_batch_size": _BATCH_SIZE}


def _apply_family(inputs, optional=_APPLY_OPT, extra_options=None, wires=None, needs=(), outputs=None, nodes=None):
    """An entry of the IPAdapter / Advanced family: encode + apply, the shared rules plus the node's own."""
    names = {s.split(":")[0] for s in inputs + optional}
    batch = {"weight": _WEIGHT_BATCH, "combine_embeds": _BATCH_COMBINE} if (wires or {}).get("encode.combine") == "=batch" else {}
    options = {k: v for k, v in {**_APPLY_OPTIONS, **batch, **(extra_options or {})}.items() if k in names}
    if "clip_vision" not in names:
        options["ipadapter"] = [options["ipadapter"], _PIPELINE_CLIP]
    return {"required": inputs, "optional": optional, "outputs": outputs or ("MODEL",), "nodes": {**_ENCODE_APPLY, **(nodes or {})},
            "options": options, "wires": {**_APPLY_WIRES, **(wires or {})}, "needs": list(needs),
            "output_map": _APPLY_OUT + ["in:image"] * (len(outputs or ("MODEL",)) - 1)}


_ADV = _APPLY_REQ + ("weight:FLOAT", "weight_type:COMBO", "combine_embeds:COMBO", "start_at:FLOAT", "end_at:FLOAT",
                     "embeds_scaling:COMBO")
_BATCH = _APPLY_REQ + ("weight:FLOAT", "weight_type:COMBO", "start_at:FLOAT", "end_at:FLOAT", "embeds_scaling:COMBO",
                       "encode_batch_size:INT")
_STYLE_COMP = ("model:MODEL", "ipadapter:IPADAPTER", "image_style:IMAGE", "image_composition:IMAGE",
               "weight_style:FLOAT", "weight_composition:FLOAT", "expand_style:BOOLEAN")
_STYLE_COMP_OPTIONS = {
    "image_style": _IMAGE, "image_composition": {"to": "compose.image"}, "weight_style": _WEIGHT,
    "weight_composition": {"to": "apply.weight_composition", "same": [1.0]},
    "expand_style": {"to": "apply.expand_style", "same": [False]},
    "ipadapter": {"to": ["encode.ipadapter", "compose.ipadapter", "apply.ipadapter"], "part": "adapter"},
    "clip_vision": {"to": ["encode.clip_vision", "compose.clip_vision"], "fallback": "ipadapter.clip_vision"},
}
_COMPOSE = {"compose": "IPAEncodeImagePrompt"}  # the composition reference's own encode
_STYLE_COMP_WIRES = {"apply.composition_embeds": "compose.0", "compose.legacy": LEGACY,
                     "apply.weight_type": "=style and composition"}
_FACEID = _APPLY_REQ + ("weight:FLOAT", "weight_faceidv2:FLOAT", "weight_type:COMBO", "combine_embeds:COMBO",
                        "start_at:FLOAT", "end_at:FLOAT", "embeds_scaling:COMBO")
_FACEID_OPT = _APPLY_OPT + ("insightface:INSIGHTFACE",)
_TILED = _APPLY_REQ + ("weight:FLOAT", "weight_type:COMBO", "combine_embeds:COMBO", "start_at:FLOAT", "end_at:FLOAT",
                       "sharpening:FLOAT", "embeds_scaling:COMBO")
_TILED_BATCH = _APPLY_REQ + ("weight:FLOAT", "weight_type:COMBO", "start_at:FLOAT", "end_at:FLOAT", "sharpening:FLOAT",
                             "embeds_scaling:COMBO", "encode_batch_size:INT")
_SHARPEN = {"to": "encode.tile_sharpening"}
_ENH = _APPLY_REQ + ("weight:FLOAT", "weight_type:COMBO", "combine_embeds:COMBO", "start_at:FLOAT", "end_at:FLOAT",
                     "embeds_scaling:COMBO", "enhance_tiles:INT", "enhance_ratio:FLOAT")
_ENH_BATCH = _APPLY_REQ + ("weight:FLOAT", "weight_type:COMBO", "start_at:FLOAT", "end_at:FLOAT", "embeds_scaling:COMBO",
                           "enhance_tiles:INT", "enhance_ratio:FLOAT", "encode_batch_size:INT")
_ENH_OPTIONS = {"enhance_tiles": {"to": "encode.enhance_tiles"}, "enhance_ratio": {"to": "encode.enhance_ratio"}}
_PRECISE_S = _APPLY_REQ + ("weight:FLOAT", "style_boost:FLOAT", "combine_embeds:COMBO", "start_at:FLOAT",
                           "end_at:FLOAT", "embeds_scaling:COMBO")
_PRECISE_C = _APPLY_REQ + ("weight:FLOAT", "composition_boost:FLOAT", "combine_embeds:COMBO", "start_at:FLOAT",
                           "end_at:FLOAT", "embeds_scaling:COMBO")
_UNFOLD = {"encode.combine": "=batch"}  # the Batch nodes: reference i for batch item i
_UNFOLD_NOTE = {"approx": "Batch node: one reference per batch item (combine 'batch'); the pack repeats the last "
                          "reference when there are fewer references than items, ours needs one per item"}
_EMBEDS_REQ = ("model:MODEL", "ipadapter:IPADAPTER", "pos_embed:EMBEDS", "weight:FLOAT", "weight_type:COMBO",
               "start_at:FLOAT", "end_at:FLOAT", "embeds_scaling:COMBO")
_EMBEDS_OPT = ("neg_embed:EMBEDS", "attn_mask:MASK", "clip_vision:CLIP_VISION")
_EMBEDS_ENTRY = {
    "required": _EMBEDS_REQ, "optional": _EMBEDS_OPT, "outputs": ("MODEL",), "nodes": {"apply": "IPAApplyAdapter"},
    "options": {"model": _MODEL, "ipadapter": {"to": "apply.ipadapter", "part": "adapter"},
                "pos_embed": {"to": "apply.embeds"}, "weight": _WEIGHT, "weight_type": _WEIGHT_TYPE, "start_at": _START,
                "end_at": _END, "embeds_scaling": _SCALING, "neg_embed": {"uncond_of": "pos_embed"}, "attn_mask": _MASK,
                "clip_vision": {"ignore": "the embeds carry their unconditional tokens; no encoder is needed here"}},
    "wires": {"apply.legacy": LEGACY}, "needs": [], "output_map": ["apply.0"],
}
_PRESETS_SD15 = {
    "LIGHT - SD1.5 only (low strength)": "ip-adapter_sd15_light_v11.bin",
    "STANDARD (medium strength)": "ip-adapter_sd15.safetensors",
    "VIT-G (medium strength)": "ip-adapter_sd15_vit-G.safetensors",
    "PLUS (high strength)": "ip-adapter-plus_sd15.safetensors",
    "PLUS FACE (portraits)": "ip-adapter-plus-face_sd15.safetensors",
    "FULL FACE - SD1.5 only (portraits stronger)": "ip-adapter-full-face_sd15.safetensors",
    "Composition": "ip_plus_composition_sd15.safetensors",
}
_CLIP_H, _CLIP_G = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"
_PRESET_NOTE = ("the pack finds files by name at run time; here the SD1.5 release names are written into Load "
                "IPAdapter / Load CLIP Vision: for an SDXL model pick the SDXL file (e.g. ip-adapter-plus_sdxl_vit-h)")
_UNIFIED_PRESETS = ("LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
                    "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)")
_UNIFIED_OURS = {  # the same preset names; ours also picks the SD1.5 or SDXL release from the model
    "nodes": {"unified": "IPAUnifiedLoader"},
    "options": {
        "model": {"to": "unified.model"},
        "preset": {"to": "unified.preset", "values": {**{p: p for p in _UNIFIED_PRESETS}, "Composition": None}},
        "ipadapter": {"ignore": "an earlier loader's pipeline: each loader here loads its own files"},
    },
    "wires": {}, "needs": [],
    "output_map": ["unified.0", {"adapter": "unified.1", "clip_vision": "unified.2"}],
}
# The pack's FaceID presets: Load IPAdapter (preset) has the same labels (it finds the SD1.5 or SDXL release from
# the model, ViT-H CLIP vision for all); Plus vs PlusV2 only differ in how Encode Face uses the file.
_FACEID_PRESETS = ("FACEID", "FACEID PLUS - SD1.5 only", "FACEID PLUS V2", "FACEID PORTRAIT (style transfer)",
                   "FACEID PORTRAIT UNNORM - SDXL only (strong)")
_LORA_NOTE = ("the pack loads the LoRA file beside the adapter into the model here; ours applies the LoRA stored in "
              "the adapter file at Apply IPAdapter (faceid_lora_strength), from the same release")
_UNIFIED_FACEID = {
    "nodes": {"unified": "IPAUnifiedLoader"},
    "options": {
        "model": {"to": "unified.model"},
        "preset": [{"to": "unified.preset", "values": {p: p for p in _FACEID_PRESETS}},
                   {"to": "consumers.plus_version", "values": {**{p: "v2 (shortcut)" for p in _FACEID_PRESETS},
                                                               "FACEID PLUS - SD1.5 only": "v1"}}],
        "lora_strength": {"to": "consumers.faceid_lora_strength", "approx": _LORA_NOTE},
        "provider": {"to": "consumers.provider"},
        "ipadapter": {"ignore": "an earlier loader's pipeline: each loader here loads its own files"},
    },
    "wires": {}, "needs": [],
    "output_map": ["unified.0", {"adapter": "unified.1", "clip_vision": "unified.2"}],
}
_UNIFIED = {
    "nodes": {"load": "IPALoadAdapter", "clip": "CLIPVisionLoader"},
    "options": {
        "model": {"ignore": "passed through unchanged: the model goes straight to Apply IPAdapter"},
        "preset": [{"to": "load.adapter_name", "values": _PRESETS_SD15, "approx": _PRESET_NOTE},
                   {"to": "clip.clip_name", "values": {**{p: _CLIP_H for p in _PRESETS_SD15}, "VIT-G (medium strength)": _CLIP_G}}],
        "ipadapter": {"ignore": "an earlier loader's pipeline: each loader here loads its own files"},
    },
    "wires": {}, "needs": [],
    "output_map": ["in:model", {"adapter": "load.0", "clip_vision": "clip.0"}],
}

_TILED_OUT = ["apply.0", None, None]  # the pack's tiles and their masks: no counterpart outputs here
_FACEID_ENTRY = {
    "required": _FACEID, "optional": _FACEID_OPT, "outputs": ("MODEL", "IMAGE"),
    "nodes": {"face": "IPAEncodeFace", "apply": "IPAApplyAdapter"},
    "options": {
        "model": _MODEL, "ipadapter": [{"to": ["face.ipadapter", "apply.ipadapter"], "part": "adapter"},
                                       {"to": "face.clip_vision", "part": "clip_vision", "optional": True}],
        "image": {"to": "face.image"}, "weight": _WEIGHT, "weight_faceidv2": {"to": "apply.weight_faceidv2"},
        "weight_type": _WEIGHT_TYPE, "combine_embeds": {"to": "face.combine"}, "start_at": _START, "end_at": _END,
        "embeds_scaling": _SCALING, "attn_mask": _MASK,
        "image_negative": {"unsupported": "Encode Face has no negative image; the official zero unconditional is used"},
        "clip_vision": {"to": "face.clip_vision"},
        "insightface": {"settings_from": "the pack's InsightFace loader"},
    },
    # the pack's FaceID node applies no LoRA (a LoRA loader or its Unified Loader FaceID does): 0 keeps that;
    # a Unified Loader FaceID feeding it sets its lora_strength here instead
    "wires": {"apply.embeds": "face.0", "face.legacy": LEGACY, "apply.legacy": LEGACY, "apply.faceid_lora_strength": 0.0},
    "needs": [], "output_map": ["apply.0", "face.1"],
    "notes": [("mapped", "faceid_lora_strength: 0, or the lora_strength of a Unified Loader FaceID feeding it. The "
                         "pack's FaceID node applies no LoRA itself (a LoRA loader node does, kept as it was); Apply "
                         "IPAdapter applies the LoRA stored in the adapter file: set it to 1 only if you remove that "
                         "LoRA loader, so the LoRA is never applied twice")],
}

# ---------------------------------------------------------------------------------------------- the pack
PACK = {
    # ----- loaders
    "IPAdapterModelLoader": {
        "required": ("ipadapter_file:COMBO",), "optional": (), "outputs": ("IPADAPTER",),
        "nodes": {"load": "IPALoadAdapter"},
        # the pack tells FaceID Plus v2 from v1 by 'plusv2' in the file name; ours asks on Encode Face
        "options": {"ipadapter_file": [{"to": "load.adapter_name"},
                                       {"to": "consumers.plus_version", "format": "plus version by file name",
                                        "quiet": True}]},
        "wires": {}, "needs": [], "output_map": [{"adapter": "load.0"}],
    },
    "IPAdapterUnifiedLoader": {"required": ("model:MODEL", "preset:COMBO"), "optional": ("ipadapter:IPADAPTER",),
                               "outputs": ("MODEL", "IPADAPTER"), **_UNIFIED_OURS},
    "IPAdapterUnifiedLoaderCommunity": {
        "required": ("model:MODEL", "preset:COMBO"), "optional": ("ipadapter:IPADAPTER",), "outputs": ("MODEL", "IPADAPTER"),
        **_UNIFIED,
        "options": {**_UNIFIED["options"],
                    "preset": [{"to": "load.adapter_name", "values": {"Composition": _PRESETS_SD15["Composition"],
                                                                      "Kolors": "ip_adapter_plus_general.bin"},
                                "approx": "the pack finds files by name at run time; here the release names are written into "
                                          "Load IPAdapter / Load CLIP Vision (Composition: the SD1.5 file; for an SDXL model "
                                          "pick ip_plus_composition_sdxl)"},
                               {"to": "clip.clip_name", "values": {"Composition": _CLIP_H, "Kolors": "clip-vit-large-patch14-336.bin"}}]},
    },
    "IPAdapterUnifiedLoaderFaceID": {
        "required": ("model:MODEL", "preset:COMBO", "lora_strength:FLOAT", "provider:COMBO"),
        "optional": ("ipadapter:IPADAPTER",), "outputs": ("MODEL", "IPADAPTER"), **_UNIFIED_FACEID,
    },
    "IPAdapterInsightFaceLoader": {  # becomes settings of the Encode Face nodes it feeds
        "required": ("provider:COMBO", "model_name:COMBO"), "optional": (), "outputs": ("INSIGHTFACE",), "nodes": {},
        "options": {"provider": {"to": "consumers.provider"},
                    "model_name": {"to": "consumers.insightface_model", "values": {"buffalo_l": "buffalo_l",
                                                                                   "antelopev2": "antelopev2"}}},
        "wires": {}, "needs": [], "output_map": [None], "removed": "removed: its settings go to the Encode Face it feeds",
    },
    # ----- apply
    "IPAdapter": _apply_family(
        _APPLY_REQ + ("weight:FLOAT", "start_at:FLOAT", "end_at:FLOAT", "weight_type:COMBO"), optional=("attn_mask:MASK",),
        extra_options={"weight_type": {"to": "apply.weight_type", "same": ["standard"],
                                       "values": {"standard": "linear", "prompt is more important": "ease out",
                                                  "style transfer": "style transfer"}}}),
    "IPAdapterAdvanced": _apply_family(_ADV),
    "IPAdapterBatch": _apply_family(_BATCH, wires=_UNFOLD, extra_options={"image": {**_IMAGE, **_UNFOLD_NOTE}}),
    "IPAdapterStyleComposition": _apply_family(
        _STYLE_COMP + ("combine_embeds:COMBO", "start_at:FLOAT", "end_at:FLOAT", "embeds_scaling:COMBO"),
        extra_options={**_STYLE_COMP_OPTIONS, "combine_embeds": [_COMBINE, {**_COMBINE, "to": "compose.combine"}]},
        wires=_STYLE_COMP_WIRES, needs=["apply.composition_embeds"], nodes=_COMPOSE),
    "IPAdapterStyleCompositionBatch": _apply_family(
        _STYLE_COMP + ("start_at:FLOAT", "end_at:FLOAT", "embeds_scaling:COMBO"),
        extra_options={**_STYLE_COMP_OPTIONS, "image_style": {**_IMAGE, **_UNFOLD_NOTE}, "weight_style": _WEIGHT_BATCH},
        wires={**_STYLE_COMP_WIRES, **_UNFOLD, "compose.combine": "=batch"}, needs=["apply.composition_embeds"],
        nodes=_COMPOSE),
    "IPAdapterFaceID": _FACEID_ENTRY,
    "IPAdapterFaceIDKolors": {**_FACEID_ENTRY, "required": _APPLY_REQ + ("weight:FLOAT", "weight_faceidv2:FLOAT",
                                                                          "weight_kolors:FLOAT") + _FACEID[5:],
                              "options": {**_FACEID_ENTRY["options"], "weight_kolors": {"to": "apply.weight_kolors"}},
                              "notes": [("mapped", "Kolors FaceID-Plus files carry no LoRA: faceid_lora_strength does "
                                                   "nothing for them")]},
    "IPAAdapterFaceIDBatch": {**_FACEID_ENTRY, "wires": {**_FACEID_ENTRY["wires"], "face.combine": "=batch"},
                              "options": {**_FACEID_ENTRY["options"], "image": {"to": "face.image", **_UNFOLD_NOTE},
                                          "weight": _WEIGHT_BATCH, "combine_embeds": _BATCH_COMBINE}},
    "IPAdapterTiled": {**_apply_family(_TILED, outputs=("MODEL", "IMAGE", "MASK"), wires={"encode.tiles": "=tiled"},
                                       extra_options={"sharpening": _SHARPEN}), "output_map": _TILED_OUT},
    # one reference per frame, each frame attending to its own reference's tiles (Encode's tiles 'tiled', combine 'batch')
    "IPAdapterTiledBatch": {**_apply_family(_TILED_BATCH, outputs=("MODEL", "IMAGE", "MASK"),
                                            wires={"encode.tiles": "=tiled", **_UNFOLD},
                                            extra_options={"sharpening": _SHARPEN, "image": {**_IMAGE, **_UNFOLD_NOTE}}),
                            "output_map": _TILED_OUT},
    "IPAdapterEmbeds": _EMBEDS_ENTRY,
    "IPAdapterEmbedsBatch": {**_EMBEDS_ENTRY, "options": {**_EMBEDS_ENTRY["options"], "weight": _WEIGHT_BATCH, "pos_embed": {
        "to": "apply.embeds", "approx": "Batch node: the embeds must hold one reference per batch item (encode with "
                                        "combine 'batch')"}}},
    "IPAdapterMS": _apply_family(
        _ADV[:4] + ("weight_faceidv2:FLOAT",) + _ADV[4:] + ("layer_weights:STRING",), optional=_FACEID_OPT,
        extra_options={"weight_faceidv2": _FACEIDV2,
                       "insightface": {"same": [None], "unsupported": "FaceID adapters go through Encode Face here: "
                                                                      "convert with the FaceID node, or rebuild by hand"},
                       "layer_weights": {"to": "apply.layer_weights_custom", "format": "pack layer weights",
                                         "requires": "IPAApplyAdapter.layer_weights_custom index:weight"}},
        needs=[]),
    "IPAdapterClipVisionEnhancer": _apply_family(_ENH, extra_options=_ENH_OPTIONS, wires={"encode.tiles": "=enhance"}),
    "IPAdapterClipVisionEnhancerBatch": _apply_family(_ENH_BATCH, wires={**_UNFOLD, "encode.tiles": "=enhance"},
                                                      extra_options={**_ENH_OPTIONS, "image": {**_IMAGE, "approx": (
                                                          _UNFOLD_NOTE["approx"] + "; one reference image alone gives two "
                                                          "(whole image and tiles, as the pack), so two frames")}}),
    "IPAdapterPreciseStyleTransfer": _apply_family(
        _PRECISE_S, extra_options={"style_boost": {"to": "apply.style_boost"}},
        wires={"apply.weight_type": "=style transfer precise"}, needs=["apply.style_boost"]),
    "IPAdapterPreciseStyleTransferBatch": _apply_family(
        _PRECISE_S, extra_options={"style_boost": {"to": "apply.style_boost"}},
        wires={"apply.weight_type": "=style transfer precise", **_UNFOLD}, needs=["apply.style_boost"]),
    "IPAdapterPreciseComposition": _apply_family(
        _PRECISE_C, extra_options={"composition_boost": {"to": "apply.composition_boost"}},
        wires={"apply.weight_type": "=composition precise"}, needs=["apply.composition_boost"]),
    "IPAdapterPreciseCompositionBatch": _apply_family(
        _PRECISE_C, extra_options={"composition_boost": {"to": "apply.composition_boost"}},
        wires={"apply.weight_type": "=composition precise", **_UNFOLD}, needs=["apply.composition_boost"]),
    # ----- helpers
    "IPAdapterEncoder": {
        "required": ("ipadapter:IPADAPTER", "image:IMAGE", "weight:FLOAT"), "optional": ("mask:MASK", "clip_vision:CLIP_VISION"),
        "outputs": ("EMBEDS", "EMBEDS"), "nodes": {"encode": "IPAEncodeImagePrompt"},
        "options": {"ipadapter": {"to": "encode.ipadapter", "part": "adapter"}, "image": _IMAGE,
                    "weight": {"to": "encode.reference_weights", "format": "text"}, "mask": {"to": "encode.mask"},
                    "clip_vision": _CLIP},
        "wires": {"encode.legacy": LEGACY}, "needs": [], "output_map": ["encode.0", {"uncond_of": "encode.0"}],
    },
    "IPAdapterCombineEmbeds": {"required": ("embed1:EMBEDS", "method:COMBO"),
                               "optional": ("embed2:EMBEDS", "embed3:EMBEDS", "embed4:EMBEDS", "embed5:EMBEDS"),
                               "outputs": ("EMBEDS",), "nodes": {"combine": "IPACombineEmbeds"},
                               "options": {"embed1": [{"to": "combine.embeds_1"},
                                                      {"to": "combine.ipadapter", "upstream": "ipadapter"}],
                                           "method": {"to": "combine.method"}, "embed2": {"to": "combine.embeds_2"},
                                           "embed3": {"to": "combine.embeds_3"}, "embed4": {"to": "combine.embeds_4"},
                                           "embed5": {"to": "combine.embeds_5"}},
                               "wires": {}, "needs": [], "output_map": ["combine.0"]},
    "IPAdapterNoise": {"required": ("type:COMBO", "strength:FLOAT", "blur:INT"), "optional": ("image_optional:IMAGE",),
                       "outputs": ("IMAGE",), "nodes": {"noise": "IPANoise"},
                       "options": {"type": {"to": "noise.type"}, "strength": {"to": "noise.strength"},
                                   "blur": {"to": "noise.blur"}, "image_optional": {"to": "noise.image"}},
                       "wires": {}, "needs": [], "output_map": ["noise.0"]},
    "PrepImageForClipVision": {
        "required": ("image:IMAGE", "interpolation:COMBO", "crop_position:COMBO", "sharpening:FLOAT"), "optional": (),
        "outputs": ("IMAGE",), "nodes": {},
        "options": {
            "image": {"ignore": "passed through: Encode Image Prompt prepares the image itself"},
            "interpolation": {"same": ["BICUBIC"], "unsupported": "Encode Image Prompt always resizes with PIL's "
                                                                  "bicubic filter (the official preprocessing)"},
            "crop_position": {"to": "consumers.crop", "values": {"center": "center", "pad": "pad", "top": None,
                                                                 "bottom": None, "left": None, "right": None},
                              "approx": "Encode Image Prompt crops the image itself, with its own resize"},
            "sharpening": {"same": [0.0], "unsupported": "no sharpening before encoding here"},
        },
        "wires": {}, "needs": [], "output_map": ["in:image"],
    },
    "IPAdapterSaveEmbeds": {"required": ("embeds:EMBEDS", "filename_prefix:STRING"), "optional": (), "outputs": (),
                            "nodes": {"save": "IPASaveEmbeds"},
                            "options": {"embeds": {"to": "save.embeds"}, "filename_prefix": {
                                "to": "save.filename_prefix", "approx": "written as .safetensors (the pack wrote .ipadpt "
                                                                        "pickles, which are never loaded here)"}},
                            "wires": {}, "needs": [], "output_map": []},
    "IPAdapterLoadEmbeds": {"required": ("embeds:COMBO",), "optional": (), "outputs": ("EMBEDS",),
                            "nodes": {"load": "IPALoadEmbeds"},
                            "options": {"embeds": {"to": "load.embeds_file", "approx": (
                                "the pack's .ipadpt files are pickles, which this pack never loads (loading never runs "
                                "code from a file): re-save the embeds with Save Image Prompt Embeds and pick that "
                                ".safetensors file")}},
                            "wires": {}, "needs": [], "output_map": ["load.0"]},
    "IPAdapterWeights": {
        "required": ("weights:STRING", "timing:COMBO", "frames:INT", "start_frame:INT", "end_frame:INT",
                     "add_starting_frames:INT", "add_ending_frames:INT", "method:COMBO"),
        "optional": ("image:IMAGE",), "outputs": ("FLOAT", "FLOAT", "INT", "IMAGE", "IMAGE", "WEIGHTS_STRATEGY"),
        "nodes": {"frames": "IPAFrameWeights"},  # the same inputs, the same six outputs
        "options": {**{n: {"to": "frames." + n} for n in ("weights", "timing", "frames", "start_frame", "end_frame",
                                                          "add_starting_frames", "add_ending_frames", "method", "image")},
                    "timing": {"to": "frames.timing", "approx": {"random": "ours draws from its seed input (0), the pack "
                                                                           "from an unseeded generator"}}},
        "wires": {}, "needs": [], "output_map": [f"frames.{i}" for i in range(6)],
    },
    "IPAdapterCombineWeights": {  # the same two inputs (a weight or a weight list each), the same two outputs
        "required": ("weights_1:FLOAT", "weights_2:FLOAT"), "optional": (), "outputs": ("FLOAT", "INT"),
        "nodes": {"combine": "IPACombineFrameWeights"},
        "options": {"weights_1": {"to": "combine.weights_1"}, "weights_2": {"to": "combine.weights_2"}},
        "wires": {}, "needs": [], "output_map": ["combine.0", "combine.1"],
    },
    "IPAdapterWeightsFromStrategy": {
        "required": ("weights_strategy:WEIGHTS_STRATEGY",), "optional": ("image:IMAGE",),
        "outputs": ("FLOAT", "FLOAT", "INT", "IMAGE", "IMAGE", "WEIGHTS_STRATEGY"),
        "nodes": {"frames": "IPAFrameWeightsFromStrategy"},
        "options": {"weights_strategy": {"to": "frames.weights_strategy"}, "image": {"to": "frames.image"}},
        "wires": {}, "needs": [], "output_map": [f"frames.{i}" for i in range(6)],
    },
    "IPAdapterPromptScheduleFromWeightsStrategy": {  # the strategy of the Frame Weights node it became, the same text
        "required": ("weights_strategy:WEIGHTS_STRATEGY", "prompt:STRING"), "optional": (), "outputs": ("STRING",),
        "nodes": {"schedule": "IPAPromptSchedule"},
        "options": {"weights_strategy": {"to": "schedule.weights_strategy"}, "prompt": {"to": "schedule.prompt"}},
        "wires": {}, "needs": [], "output_map": ["schedule.0"],
    },
}

# ---------------------------------------------------------------------------------------------- older versions
# What workflows saved by older versions of the pack hold (its public git history; interface facts only).

# Widget layouts of older versions (widget names in widgets_values order), matched by their count. The
# pack only ever appended widgets, so the missing trailing ones take the pack's defaults, as the frontend
# fills them when it loads such a node.
OLD_LAYOUTS = {
    "IPAdapter": [("weight", "start_at", "end_at")],  # before weight_type (2024-03-29)
    "IPAdapterAdvanced": [("weight", "weight_type", "combine_embeds", "start_at", "end_at")],  # before embeds_scaling
    "IPAdapterBatch": [("weight", "weight_type", "start_at", "end_at"),  # before embeds_scaling (2024-03-25)
                       ("weight", "weight_type", "start_at", "end_at", "embeds_scaling")],  # before encode_batch_size
    "IPAdapterFaceID": [("weight", "weight_faceidv2", "weight_type", "combine_embeds", "start_at", "end_at")],
    "IPAdapterTiled": [("weight", "weight_type", "combine_embeds", "start_at", "end_at", "sharpening")],
    "IPAdapterTiledBatch": [("weight", "weight_type", "start_at", "end_at", "sharpening"),
                            ("weight", "weight_type", "start_at", "end_at", "sharpening", "embeds_scaling")],
    "IPAdapterEmbeds": [("weight", "weight_type", "start_at", "end_at")],
    "IPAdapterInsightFaceLoader": [("provider",)],  # before model_name (2024-08-02)
    "IPAdapterWeights": [("weights", "timing", "frames", "start_frame", "end_frame")],  # before 2024-04-27
    "IPAdapterApply": [("weight",), ("weight", "noise"), ("weight", "noise", "weight_type"),
                       ("weight", "noise", "weight_type", "start_at", "end_at")],
    "IPAdapterApplyEncoded": [("weight",), ("weight", "weight_type"), ("weight", "weight_type", "start_at", "end_at")],
}
# The pack's defaults of the widgets that older layouts lack (its INPUT_TYPES: the default, else the first choice).
PACK_DEFAULTS = {"weight_type": "linear", "embeds_scaling": "V only", "encode_batch_size": 0, "model_name": "buffalo_l",
                 "add_starting_frames": 0, "add_ending_frames": 0, "method": "full batch", "noise": 0.0,
                 "start_at": 0.0, "end_at": 1.0, "unfold_batch": False}
PACK_DEFAULTS_OF = {"IPAdapter": {"weight_type": "standard"}, "IPAdapterApply": {"weight_type": "original"},
                    "IPAdapterApplyEncoded": {"weight_type": "original"}}
# Layouts of the first generation of a node id that today's node reuses with other inputs: kept, and why.
FIRST_GENERATION_LAYOUTS = {
    "IPAdapterEncoder": {2: "(plus, noise)", 6: "(ipadapter_plus, noise, weight_1 ... weight_4)"},
}
FIRST_GENERATION_WHY = ("the first-generation Encoder (up to four images with their own weights, no adapter input) has "
                        "no counterpart: encode again with Encode Image Prompt (its reference_weights) and Apply IPAdapter")
# Choice names that older versions saved, and today's name for the same option.
OLD_CHOICES = {
    "ConditioningSetMask.set_cond_area": ("default", "mask bounds"),
    "weight_type": {"style transfer (SDXL)": "style transfer", "composition (SDXL)": "composition",
                    "style transfer (SDXL only)": "style transfer",
                    "style transfer and composition": "style and composition"},
    "interpolation": {"lanczos": "LANCZOS", "bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST"},
}

# The first generation of the pack's nodes (removed in its rewrite of 2024-03-23), as of its last release
# before it. Their weight types: 'original' scales the image prompt's attention output, which is V-only
# scaling; 'linear' scales K and V; 'channel penalty' is K+mean(V) with the C/1280 penalty.
_FIRST_GEN_WEIGHT_TYPE = [
    {"to": "apply.weight_type", "values": {"original": "linear", "linear": "linear", "channel penalty": "linear"}},
    {"to": "apply.embeds_scaling", "values": {"original": "V only", "linear": "K+V",
                                              "channel penalty": "K+mean(V) w/ C penalty"}}]
_FIRST_GEN_NOISE = {"same": [0.0, 0], "unsupported": "the first generation's noise (a distorted copy of the reference as "
                                                     "the negative image) has no counterpart: connect an IPAdapter Noise "
                                                     "node's image to Encode Image Prompt's negative_image instead"}
_UNFOLD_BATCH = {"to": "encode.combine", "values": {False: "concat", True: "batch"},
                 "approx": {True: _UNFOLD_NOTE["approx"]}}
_PREP_FACE_WHY = "Encode Face finds and aligns the face in the whole image itself"
FIRST_GENERATION = {
    "IPAdapterApply": _apply_family(
        ("ipadapter:IPADAPTER", "clip_vision:CLIP_VISION", "image:IMAGE", "model:MODEL", "weight:FLOAT", "noise:FLOAT",
         "weight_type:COMBO", "start_at:FLOAT", "end_at:FLOAT", "unfold_batch:BOOLEAN"), optional=("attn_mask:MASK",),
        extra_options={"weight_type": _FIRST_GEN_WEIGHT_TYPE, "noise": _FIRST_GEN_NOISE, "unfold_batch": _UNFOLD_BATCH}),
    "IPAdapterApplyFaceID": {
        **_FACEID_ENTRY,
        "required": ("ipadapter:IPADAPTER", "clip_vision:CLIP_VISION", "insightface:INSIGHTFACE", "image:IMAGE",
                     "model:MODEL", "weight:FLOAT", "noise:FLOAT", "weight_type:COMBO", "start_at:FLOAT", "end_at:FLOAT",
                     "faceid_v2:BOOLEAN", "weight_v2:FLOAT", "unfold_batch:BOOLEAN"),
        "optional": ("attn_mask:MASK",),
        "options": {**{k: v for k, v in _FACEID_ENTRY["options"].items() if k not in (
                        "weight_faceidv2", "combine_embeds", "embeds_scaling", "image_negative")},
                    "weight_type": _FIRST_GEN_WEIGHT_TYPE, "noise": _FIRST_GEN_NOISE,
                    "faceid_v2": {"to": "face.plus_version", "values": {True: "v2 (shortcut)", False: "v1"}},
                    "weight_v2": {"to": "apply.weight_faceidv2"},
                    "unfold_batch": {**_UNFOLD_BATCH, "to": "face.combine"}},
        "outputs": ("MODEL",), "output_map": ["apply.0"],
    },
    "IPAdapterApplyEncoded": {
        **_EMBEDS_ENTRY,
        "required": ("ipadapter:IPADAPTER", "embeds:EMBEDS", "model:MODEL", "weight:FLOAT", "weight_type:COMBO",
                     "start_at:FLOAT", "end_at:FLOAT", "unfold_batch:BOOLEAN"),
        "optional": ("attn_mask:MASK",),
        "options": {"model": _MODEL, "ipadapter": {"to": "apply.ipadapter", "part": "adapter"},
                    "embeds": {"to": "apply.embeds"}, "weight": _WEIGHT, "weight_type": _FIRST_GEN_WEIGHT_TYPE,
                    "start_at": _START, "end_at": _END, "attn_mask": _MASK,
                    "unfold_batch": {"same": [False], "unsupported": "the embeds are applied as they were encoded: "
                                                                     "encode with combine 'batch' for one reference "
                                                                     "per batch item"}},
    },
    "InsightFaceLoader": {  # the first InsightFace loader: its provider goes to the Encode Face it feeds
        "required": ("provider:COMBO",), "optional": (), "outputs": ("INSIGHTFACE",), "nodes": {},
        "options": {"provider": {"to": "consumers.provider"}},
        "wires": {}, "needs": [], "output_map": [None], "removed": "removed: its settings go to the Encode Face it feeds",
    },
    "PrepImageForInsightFace": {
        "required": ("image:IMAGE", "crop_position:COMBO", "sharpening:FLOAT", "pad_around:BOOLEAN"), "optional": (),
        "outputs": ("IMAGE",), "nodes": {},
        "options": {"image": {"ignore": "passed through: " + _PREP_FACE_WHY},
                    "crop_position": {"same": ["center"], "unsupported": _PREP_FACE_WHY},
                    "sharpening": {"same": [0.0, 0], "unsupported": "no sharpening before encoding here"},
                    "pad_around": {"ignore": _PREP_FACE_WHY}},
        "wires": {}, "needs": [], "output_map": ["in:image"],
    },
}
PACK.update(FIRST_GENERATION)

# ---------------------------------------------------------------------------------------------- regions
# The pack's regional nodes: Regional Conditioning holds an image with its mask, weight, weight type and
# window, and masks the text prompts; Combine Params joins such lists; From Params applies each entry in
# turn (its ipadapter_execute once per entry, each patching the model the previous one made). Here: per
# entry an Encode Image Prompt + Apply IPAdapter (attn_mask = the region's mask), chained by the model, and
# the host's ConditioningSetMask (strength = prompt_weight, area 'default') for each text prompt. Built by
# the converter's code (their number depends on the graph): "special" names the builder; "params" rules are
# read there.
_BY_FROM_PARAMS = {"params": "read by the IPAdapter From Params node it feeds"}
REGIONS = {
    "IPAdapterRegionalConditioning": {
        "required": ("image:IMAGE", "image_weight:FLOAT", "prompt_weight:FLOAT", "weight_type:COMBO", "start_at:FLOAT",
                     "end_at:FLOAT"),
        "optional": ("mask:MASK", "positive:CONDITIONING", "negative:CONDITIONING"),
        "outputs": ("IPADAPTER_PARAMS", "CONDITIONING", "CONDITIONING"), "nodes": {}, "special": "region",
        "options": {**{n: _BY_FROM_PARAMS for n in ("image", "image_weight", "weight_type", "start_at", "end_at",
                                                     "mask")},
                    **{n: {"params": "masked by a ConditioningSetMask (strength = prompt_weight) when a mask is given, "
                                     "else passed through"} for n in ("prompt_weight", "positive", "negative")}},
        "wires": {}, "needs": [], "output_map": [None, "in:positive", "in:negative"],
        "removed": "removed: its image goes to the IPAdapter From Params node it feeds; no mask, so its prompts pass "
                   "unchanged",
    },
    "IPAdapterCombineParams": {
        "required": ("params_1:IPADAPTER_PARAMS", "params_2:IPADAPTER_PARAMS"),
        "optional": ("params_3:IPADAPTER_PARAMS", "params_4:IPADAPTER_PARAMS", "params_5:IPADAPTER_PARAMS"),
        "outputs": ("IPADAPTER_PARAMS",), "nodes": {}, "special": "params",
        "options": {f"params_{i}": _BY_FROM_PARAMS for i in range(1, 6)},
        "wires": {}, "needs": [], "output_map": [None],
        "removed": "removed: its regions, in order, go to the IPAdapter From Params node it feeds",
    },
    "IPAdapterFromParams": {
        "required": ("model:MODEL", "ipadapter:IPADAPTER", "ipadapter_params:IPADAPTER_PARAMS", "combine_embeds:COMBO",
                     "embeds_scaling:COMBO"),
        "optional": ("image_negative:IMAGE", "clip_vision:CLIP_VISION"), "outputs": ("MODEL",),
        "nodes": {}, "special": "from params",
        "options": {n: {"params": "set on each region's Encode Image Prompt / Apply IPAdapter"} for n in (
            "model", "ipadapter", "ipadapter_params", "combine_embeds", "embeds_scaling", "image_negative", "clip_vision")},
        "wires": {}, "needs": [], "output_map": ["apply.0"],
    },
}
PACK.update(REGIONS)

# The pack's inputs and outputs have one table, nodes/pack_interface.py (the drop-in ids serve the same): each
# entry's lists are taken from there, so a recipe can never describe another interface than the one served.
# The first-generation nodes are no longer in that pack (nor in the table): their lists stay here.
for _node_id, _entry in PACK.items():
    if _node_id not in pack_interface.NODES:
        continue
    _entry["required"], _entry["optional"], _entry["outputs"] = pack_interface.signature(_node_id)
