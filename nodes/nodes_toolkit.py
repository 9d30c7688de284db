"""The image-prompt toolkit: loader presets, combining / saving / loading image prompts, noise negatives,
regional image prompts. The math lives in ip_core (presets, embeds, embeds_file, noise); these nodes choose
and pass it, and add the host's folders."""
from __future__ import annotations

import os

import torch

from . import host
from ..ip_core.families import load_adapter
from ..ip_core.embeds import COMBINE_METHODS, ImagePromptEmbeds, check_embeds_fit, combine_embeds
from ..ip_core.embeds_file import load_embeds, note_of, save_embeds
from ..ip_core.errors import AdapterMismatchError, IPAdapterError
from ..ip_core.noise import MAX_BLUR, NOISE_TYPES, make_noise
from ..ip_core.presets import PRESET_NAMES, adapter_config_of_file, choose_adapter, choose_encoder, vision_encoder_of_file
from ..ip_core.presets import preset as find_preset
from .common import CATEGORY, LoadedAdapter, check_int, check_number, error_boundary, require, with_advice
from .nodes_apply import IPAApplyAdapter, model_family
from .nodes_faceid import PLUS_VERSIONS

MAX_NOISE_SEED = 0xFFFFFFFFFFFFFFFF  # torch.manual_seed's range
EMBEDS_EXTENSIONS = (".safetensors", ".ipadpt")  # .ipadpt (the other pack's pickles) are listed to be refused clearly


class IPAUnifiedLoader:
    DESCRIPTION = (
        "Loads the IP-Adapter and the CLIP vision model a preset needs for the connected model (SD1.5 or SDXL). "
        "Files are found by their released names (as the widely used pack's loader finds them), else by their "
        "contents, so renamed files work. The choices are shown on the node. FaceID presets (last in the list) "
        "also return the ViT-H CLIP vision model, as the pack does: connect the adapter to Encode Face (InsightFace), "
        "and clip_vision too for FACEID PLUS / PLUS V2. Their two files share one layout: on Encode Face set "
        "plus_version to v2 for FACEID PLUS V2 and to v1 for FACEID PLUS. Apply IPAdapter applies the LoRA "
        "stored in the adapter file (no LoRA file needed)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "IPA_ADAPTER", "CLIP_VISION")
    RETURN_NAMES = ("model", "ipadapter", "clip_vision")
    OUTPUT_TOOLTIPS = ("The input model, unchanged (connect it to Apply IPAdapter).", "The preset's adapter.",
                       "The CLIP vision model the adapter needs (FaceID presets: ViT-H/14, used by FaceID Plus / PlusV2 on Encode Face).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 or SDXL model: it decides which release of the preset is loaded."}),
                "preset": (list(PRESET_NAMES), {"default": PRESET_NAMES[1], "tooltip": "Which released adapter: LIGHT (weak), STANDARD, VIT-G (bigG encoder), PLUS (16 tokens, strong), PLUS FACE / FULL FACE (portraits); FACEID ones (InsightFace face identity; PLUS V2 needs plus_version v2 on Encode Face, PLUS v1)."}),
            }
        }

    @error_boundary
    def load(self, model, preset):
        p = find_preset(preset)
        family = model_family(model)
        if family not in ("sd15", "sdxl"):
            raise AdapterMismatchError(f"the model is {family or 'not a ComfyUI model'}; presets exist for SD1.5 and SDXL models only.")
        names, folders = host.model_files(host.FOLDER)
        choice = choose_adapter(p.name, family, names,
                                lambda n: adapter_config_of_file(host.model_path(host.FOLDER, n)), folders)
        path = host.model_path(host.FOLDER, choice.name)
        adapter = load_adapter(path, device="cpu", dtype=torch.float32)
        layout = p.releases[family].layout
        if not layout.fits(adapter.config, family):
            raise AdapterMismatchError(
                f"{choice.name} is named as preset '{p.name}' but holds {adapter.config.description}, not a "
                f"{layout.describe(family)} adapter; replace the file, or load it with Load IPAdapter.")
        cv_names, cv_folders = host.model_files(host.CLIP_VISION_FOLDER)
        cv_choice = choose_encoder(p.clip_vision_name, cv_names,
                                   lambda n: vision_encoder_of_file(host.model_path(host.CLIP_VISION_FOLDER, n)), cv_folders)
        clip_vision = host.load_clip_vision(host.model_path(host.CLIP_VISION_FOLDER, cv_choice.name))
        loaded = LoadedAdapter(adapter, os.path.basename(path))
        text = (f"{p.name}: adapter {choice.name} ({choice.how}): {adapter.config.description}; "
                f"CLIP vision {cv_choice.name} ({cv_choice.how})")
        if p.plus_v2 is not None:  # one file layout for both: only the user's setting tells them apart
            text += f"; on Encode Face set plus_version to {PLUS_VERSIONS[0] if p.plus_v2 else PLUS_VERSIONS[1]}"
        return {"ui": {"text": [text]}, "result": (model, loaded, clip_vision)}


class IPACombineEmbeds:
    DESCRIPTION = (
        "Combines up to five image prompts of one adapter into one: their CLIP features (all references, in "
        "input order) are merged before the projection, with the widely used pack's methods: concat, add, "
        "subtract (first minus the mean of the others), average, norm average, max, min."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("One image prompt for the same adapter.",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        optional = {f"embeds_{i}": ("IPA_EMBEDS", {"tooltip": "Another image prompt made with the same adapter."}) for i in range(2, 6)}
        return {
            "required": {
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter all the image prompts were made with (it projects the merged features)."}),
                "embeds_1": ("IPA_EMBEDS", {"tooltip": "The first image prompt (for subtract: the one the others are taken from)."}),
                "method": (list(COMBINE_METHODS), {"default": "concat", "tooltip": "concat: all references side by side; add / average / max / min: element-wise over references; subtract: first minus the mean of the rest; norm average: each feature over its norm across references, averaged."}),
            },
            "optional": optional,
        }

    @error_boundary
    def combine(self, ipadapter, embeds_1, method, embeds_2=None, embeds_3=None, embeds_4=None, embeds_5=None):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        given = [(i, e) for i, e in enumerate((embeds_1, embeds_2, embeds_3, embeds_4, embeds_5), 1) if e is not None]
        for i, e in given:
            require(e, "IPA_EMBEDS", f"embeds_{i}", ImagePromptEmbeds)
        return (combine_embeds(a.adapter, [e for _, e in given], method),)


class IPASaveEmbeds:
    DESCRIPTION = (
        "Saves an image prompt to ComfyUI's output folder as .safetensors, with the adapter that made it "
        "(layout, fingerprint) and your description in the metadata. Move the file to the input folder to load it."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embeds": ("IPA_EMBEDS", {"tooltip": "The image prompt to save."}),
                "filename_prefix": ("STRING", {"default": "ipadapter/embeds", "tooltip": "File name prefix inside the output folder; a counter and .safetensors are added."}),
                "description": ("STRING", {"default": "", "multiline": True, "tooltip": "Free text stored in the file's metadata (shown when it is loaded)."}),
            }
        }

    @error_boundary
    def save(self, embeds, filename_prefix, description=""):
        embeds = require(embeds, "IPA_EMBEDS", "embeds", ImagePromptEmbeds)
        if not isinstance(filename_prefix, str) or not isinstance(description, str):
            raise IPAdapterError("filename_prefix and description must be text; connect STRING values or type them in.")
        folder, filename, counter, subfolder, _ = host.save_path(filename_prefix, host.output_directory())
        name = f"{filename}_{counter:05}_.safetensors"
        with host.refusals(f"saving {os.path.join(subfolder, name)}", "Choose a shorter filename_prefix, or free space "
                           "or permission in the output folder."):
            save_embeds(embeds, os.path.join(folder, name), description)
        return {"ui": {"text": [f"saved {os.path.join(subfolder, name)} ({embeds.description})"]}, "result": ()}


class IPALoadEmbeds:
    DESCRIPTION = (
        "Loads an image prompt saved by Save Image Prompt Embeds from ComfyUI's input folder. Only safetensors "
        "files are read; pickles (such as the widely used pack's .ipadpt files) are refused without running them. "
        "The embeds still refuse an adapter other than the one that made them."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("The saved image prompt.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        try:
            root = host.input_directory()
            files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                           if f.lower().endswith(EMBEDS_EXTENSIONS))
        except Exception:  # listing must never break the node menu
            files = []
        return {
            "required": {"embeds_file": (files, {"tooltip": "An embeds .safetensors file in the input folder."})},
            "optional": {"ipadapter": ("IPA_ADAPTER", {"tooltip": "Optional: check now that the file was made with this adapter."})},
        }

    @error_boundary
    def load(self, embeds_file, ipadapter=None):
        path = host.annotated_input_path(embeds_file)
        embeds = load_embeds(path)
        if ipadapter is not None:
            a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
            try:
                check_embeds_fit(a.adapter, embeds)
            except AdapterMismatchError as e:
                raise with_advice(AdapterMismatchError(f"{embeds_file}: {e}"),
                                  f"Connect the Load IPAdapter that made this file, or encode the reference with {a.name} "
                                  "(Encode Image Prompt) and save it again with Save Image Prompt Embeds.") from None
        note = note_of(path)
        text = f"{embeds_file}: {embeds.description}" + (f"; {note}" if note else "")
        return {"ui": {"text": [text]}, "result": (embeds,)}


class IPANoise:
    DESCRIPTION = (
        "Makes a noise image to use as negative_image on Encode Image Prompt (guidance then pushes away from a "
        "noisy reference): fade, dissolve, gaussian or shuffle, as the widely used pack makes them (the same "
        "pixels for the same inputs). Seeded: by default the seed comes from the image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("A 224x224 noise image (one per input image).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "type": (list(NOISE_TYPES), {"default": "fade", "tooltip": "fade: blend with uniform noise; dissolve: replace random pixels; gaussian: add Gaussian noise; shuffle: elastic warp, flips and noise."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "How much noise (0 = the image itself)."}),
                "blur": ("INT", {"default": 0, "min": 0, "max": MAX_BLUR, "step": 1, "tooltip": f"Gaussian blur kernel in pixels after the noise (0 = none; even sizes become the next odd one); 0 to {MAX_BLUR}."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Optional image to disturb (centre-cropped, resized to 224); none = black."}),
                "seed_override": ("INT", {"default": -1, "min": -1, "max": MAX_NOISE_SEED, "tooltip": f"-1: the seed is derived from the image (the widely used pack's behaviour); otherwise this seed, 0 to {MAX_NOISE_SEED}."}),
            },
        }

    @error_boundary
    def make(self, type, strength, blur, image=None, seed_override=-1):
        strength = check_number(strength, "strength", 0.0, 1.0)
        blur = check_int(blur, "blur", 0, MAX_BLUR)
        seed = check_int(seed_override, "seed_override", -1, MAX_NOISE_SEED)
        return (make_noise(type, strength, blur, image, None if seed < 0 else seed),)


class _Regions(tuple):
    """IPA_REGIONS: (embeds, mask, weight) triples, in the order they were added."""


class IPARegion:
    DESCRIPTION = (
        "Pairs an image prompt with the region where it acts (a mask) and its weight; chain Region nodes to "
        "collect several, then one Apply IPAdapter (regions) node applies them all."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_REGIONS",)
    RETURN_NAMES = ("regions",)
    OUTPUT_TOOLTIPS = ("The regions so far, this one last.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embeds": ("IPA_EMBEDS", {"tooltip": "The image prompt for this region."}),
                "mask": ("MASK", {"tooltip": "Where it acts (1) and not (0); any size, stretched to the image."}),
                "weight": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05, "tooltip": "lambda for this region."}),
            },
            "optional": {"regions": ("IPA_REGIONS", {"tooltip": "Regions from an earlier Region node, to add this one to."})},
        }

    @error_boundary
    def add(self, embeds, mask, weight, regions=None):
        embeds = require(embeds, "IPA_EMBEDS", "embeds", ImagePromptEmbeds)
        weight = check_number(weight, "weight", -1.0, 5.0)
        if not isinstance(mask, torch.Tensor):
            raise IPAdapterError(f"mask must be a MASK, got {type(mask).__name__}; connect a mask (e.g. Load Image (as Mask)).")
        earlier = tuple(regions) if regions is not None else ()
        return (_Regions(earlier + ((embeds, mask, weight),)),)


class IPAApplyRegions:
    DESCRIPTION = (
        "Applies every region's image prompt, each limited to its mask with its own weight, in one node: the same "
        "as chaining one Apply IPAdapter per region (they add up)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with every region's adapter applied (a clone).",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 or SDXL model to patch."}),
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter all the regions' image prompts were made with."}),
                "regions": ("IPA_REGIONS", {"tooltip": "From Image Prompt Region nodes."}),
                "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fraction of the schedule where the image prompts start."}),
                "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fraction of the schedule where they stop."}),
            }
        }

    @error_boundary
    def apply(self, model, ipadapter, regions, start_at, end_at):
        if not isinstance(regions, _Regions) or not regions:
            raise IPAdapterError("regions must come from an Image Prompt Region node (at least one region).")
        apply = IPAApplyAdapter()
        for embeds, mask, weight in regions:
            (model,) = apply.apply(model, ipadapter, embeds, weight, start_at, end_at, attn_mask=mask)
        return (model,)
