"""What each drop-in id computes: our public node functions, driven by the converter's recipes.

The encode + apply ids run their recipe in nodes/migrate_table.py (PACK[id]: options -> our inputs, fixed wires),
so the converter and these ids share one mapping. Loaders, embeds and face ids are written out below. The values
of the pack's own types are ours: IPADAPTER = Pipeline, EMBEDS = PackEmbeds, INSIGHTFACE = FaceSettings.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from ...ip_core.embeds import ImagePromptEmbeds, build_image_prompt, combine_embeds
from ...ip_core import tiles as tiling
from ...ip_core.embeds_file import save_embeds
from ...ip_core.errors import IPAdapterError
from ...ip_core.preprocess import contrast_adaptive_sharpen
from ...ip_core.presets import choose_lora, lora_names
from .. import face_analysis, host, migrate, migrate_table, pack_interface
from ..common import LoadedAdapter
from ..families import family_for
from ..nodes_animation import IPACombineFrameWeights, IPAFrameWeights, IPAFrameWeightsFromStrategy, IPAPromptSchedule
from ..nodes_apply import IPAApplyAdapter, model_family
from ..nodes_encode import IPAEncodeImagePrompt
from ..nodes_faceid import IPAEncodeFace
from ..nodes_load import IPALoadAdapter
from ..nodes_toolkit import IPALoadEmbeds, IPANoise, IPAUnifiedLoader
from .settings import legacy


@dataclass
class Pipeline:
    """IPADAPTER: an adapter, the CLIP vision model its loader picked (or None), and the FaceID loader's provider."""
    adapter: LoadedAdapter
    clip_vision: object = None
    provider: str = "CPU"


@dataclass
class PackEmbeds:
    """EMBEDS: an image prompt of ours with the adapter that made it; negative = the encoder's neg_embed output
    (the prompt's unconditional side)."""
    prompt: ImagePromptEmbeds
    adapter: Optional[LoadedAdapter]  # None for embeds loaded from a file (their metadata still names the adapter)
    negative: bool = False

    def features(self) -> torch.Tensor:
        return self.prompt.uncond_features if self.negative else self.prompt.cond_features


@dataclass
class FaceSettings:
    """INSIGHTFACE: the face analyser's settings (Encode Face loads and caches the analyser itself)."""
    provider: str
    model_name: str


def _result(out):
    return out["result"] if isinstance(out, dict) else out


def _pipeline(value, name="ipadapter") -> Pipeline:
    if not isinstance(value, Pipeline):
        raise IPAdapterError(
            f"input '{name}' must be an IPADAPTER from IPAdapter Model Loader or a Unified Loader (the drop-in ids), got "
            f"{type(value).__name__}; this pack's own Load IPAdapter gives an IPA_ADAPTER, for Apply IPAdapter.")
    return value


def _embeds(value, name) -> PackEmbeds:
    if not isinstance(value, PackEmbeds):
        raise IPAdapterError(f"input '{name}' must be EMBEDS from IPAdapter Encoder / Combine Embeds (the drop-in ids), "
                             f"got {type(value).__name__}.")
    return value


def _clip_vision(pipe: Pipeline, clip_vision):
    chosen = clip_vision if clip_vision is not None else pipe.clip_vision
    if chosen is None:
        raise IPAdapterError("no CLIP vision model: connect a Load CLIP Vision node to clip_vision (IPAdapter Model "
                             "Loader loads the adapter only), or load with IPAdapter Unified Loader.")
    return chosen


def dynamic_choices(kind) -> list:
    try:
        if kind == pack_interface.FILES_IPADAPTER:
            return host.adapter_files()
        root = host.input_directory()  # the pack's saved embeds: .ipadpt files anywhere in the input folder
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
                      if f.endswith(".ipadpt"))
    except Exception:  # listing must never break the node menu
        return []


# ------------------------------------------------------------------------------------------ loaders
def model_loader(ipadapter_file):
    return (Pipeline(_result(IPALoadAdapter().load(ipadapter_file))[0]),)


def unified_loader(model, preset, ipadapter=None):
    model, adapter, clip_vision = _result(IPAUnifiedLoader().load(model, preset))
    return model, Pipeline(adapter, clip_vision)


def unified_loader_faceid(model, preset, lora_strength, provider, ipadapter=None):
    """The preset's files, and its LoRA on the model it returns (the pack's Unified Loader FaceID does that; its
    FaceID nodes add none)."""
    model, adapter, clip_vision = _result(IPAUnifiedLoader().load(model, preset))
    return _faceid_lora(model, preset, adapter, float(lora_strength)), Pipeline(adapter, clip_vision, provider=provider)


def _faceid_lora(model, preset, adapter: LoadedAdapter, strength: float):
    """The release's LoRA at `strength`: by default the LoRA file of models/loras the pack loads (found by its
    released name), through the host's LoRA loader as the pack applies it; corrected mode, or that file missing:
    the same release's LoRA stored in the adapter file (what the official FaceID code applies)."""
    family = model_family(model)
    if strength == 0 or not lora_names(preset, family):
        return model
    if legacy():
        found = choose_lora(preset, family, host.model_files(host.LORA_FOLDER)[0])
        if found is not None:
            return host.apply_lora_file(model, host.model_path(host.LORA_FOLDER, found), strength)
        logging.getLogger("ipadapter").warning(
            f"[IPAdapter] IPAdapter Unified Loader FaceID: no {lora_names(preset, family)[0]}.safetensors in models/"
            f"{host.LORA_FOLDER}; applying the LoRA stored in {adapter.name} instead (the same release's weights)")
    return family_for(adapter.config).finish(model.clone(), adapter, strength)  # the family's own LoRA step


def insightface_loader(provider, model_name):
    face_analysis.load_face_analyzer(provider, model_name)  # InsightFace missing: one message naming what to install
    return (FaceSettings(provider, model_name),)


# ------------------------------------------------------------------------------------------ recipes
_OURS = {"IPAEncodeImagePrompt": lambda: IPAEncodeImagePrompt().encode,
         "IPAApplyAdapter": lambda: IPAApplyAdapter().apply}


def _target_values(node_id, rule, name, value, pipe, kwargs, calls):
    """One option rule of a recipe: where the pack input `name` goes among our nodes' inputs."""
    if "unsupported" in rule or "ignore" in rule:
        if "unsupported" in rule and rule.get("same") is not None and value not in rule["same"]:
            raise IPAdapterError(f"{node_id}: {name}={value!r} has no counterpart here ({rule['unsupported']}); "
                                 f"use {rule['same'][0]!r}.")
        return
    if "part" in rule:
        value = pipe.adapter if rule["part"] == "adapter" else pipe.clip_vision
    elif name == "clip_vision" and value is None and rule.get("fallback"):
        value = pipe.clip_vision
    if value is None and "to" in rule:
        return
    if "values" in rule:
        if rule["values"].get(value) is None:
            raise IPAdapterError(f"{node_id}: {name}={value!r} has no counterpart here.")
        value = rule["values"][value]
    fmt = rule.get("format")
    if fmt == "text":
        value = f"{value:g}"
    elif fmt == "pack layer weights":
        value = migrate.pack_layer_weights(value)[0]
    if "linked_to" in rule and not isinstance(value, (int, float)):  # a weight list from IPAdapter Weights
        targets = [rule["linked_to"]]
        local, input_name = rule["to"].split(".", 1)
        if local in calls:  # frame_weights multiply Apply's weight
            kwargs[local][input_name] = 1.0
    else:
        targets = rule["to"] if isinstance(rule["to"], list) else [rule["to"]]
    for target in targets:
        local, input_name = target.split(".", 1)
        if local in calls:
            kwargs[local][input_name] = value


def run_recipe(node_id, inputs):
    """An encode + apply id through its converter recipe: our Encode Image Prompt(s), then Apply IPAdapter."""
    recipe = migrate_table.PACK[node_id]
    calls = recipe["nodes"]
    pipe = _pipeline(inputs["ipadapter"])
    if pipe.adapter.config.is_faceid and node_id in FACE_APPLY_IDS:
        return _faceid_apply(node_id, inputs)
    kwargs = {local: {} for local in calls}
    for name, rules in recipe["options"].items():
        for rule in rules if isinstance(rules, list) else [rules]:
            _target_values(node_id, rule, name, inputs.get(name), pipe, kwargs, calls)
    outputs = {}
    for local in ("encode", "compose", "apply"):
        if local not in calls:
            continue
        for target, source in recipe["wires"].items():
            where, input_name = target.split(".", 1)
            if where != local:
                continue
            if source == migrate_table.LEGACY:
                kwargs[local][input_name] = legacy()
            elif isinstance(source, str) and source.startswith("="):
                kwargs[local][input_name] = source[1:]
            elif isinstance(source, str):
                kwargs[local][input_name] = outputs[source]
            else:
                kwargs[local][input_name] = source
        if local != "apply" and "clip_vision" not in kwargs[local]:
            kwargs[local]["clip_vision"] = _clip_vision(pipe, None)
        result = _result(_OURS[calls[local]]()(**kwargs[local]))
        outputs.update({f"{local}.{i}": v for i, v in enumerate(result)})
    out = []
    for slot in recipe["output_map"]:  # None: an output the caller fills (the tiled ids' tiles and masks)
        out.append(inputs[slot[3:]] if isinstance(slot, str) and slot.startswith("in:") else outputs.get(slot))
    return tuple(out)


# ------------------------------------------------------------------------------------------ embeds
def encoder(ipadapter, image, weight, mask=None, clip_vision=None):
    pipe = _pipeline(ipadapter)
    prompt = _result(IPAEncodeImagePrompt().encode(pipe.adapter, _clip_vision(pipe, clip_vision), image,
                                                   reference_weights=f"{weight:g}", mask=mask, legacy=legacy()))[0]
    return PackEmbeds(prompt, pipe.adapter), PackEmbeds(prompt, pipe.adapter, negative=True)


def combine(embed1, method, embed2=None, embed3=None, embed4=None, embed5=None):
    given = [_embeds(e, f"embed{i}") for i, e in enumerate((embed1, embed2, embed3, embed4, embed5), 1) if e is not None]
    if method == "concat" and len(given) == 1:
        return (given[0],)
    if len({e.negative for e in given}) > 1:
        raise IPAdapterError("IPAdapter Combine Embeds: combine pos_embed outputs with pos_embed outputs, and neg_embed "
                             "with neg_embed, not both.")
    first = given[0]
    made_by = next((e.adapter for e in given if e.adapter is not None), None)
    if made_by is None:
        raise IPAdapterError("IPAdapter Combine Embeds: embeds loaded from files carry no adapter to combine them with; "
                             "connect at least one IPAdapter Encoder output made with the same adapter.")
    return (PackEmbeds(combine_embeds(made_by.adapter, [e.prompt for e in given], method), made_by, first.negative),)


def _fit_rows(features: torch.Tensor, rows: int) -> torch.Tensor:
    """As many rows as the reference features: the last repeated, or the extra ones left out."""
    if features.shape[0] < rows:
        features = torch.cat([features, features[-1:].expand(rows - features.shape[0], *features.shape[1:])])
    return features[:rows]


def embeds_apply(model, ipadapter, pos_embed, weight, weight_type, start_at, end_at, embeds_scaling, neg_embed=None,
                 attn_mask=None, clip_vision=None, batch=False):
    pipe, pos = _pipeline(ipadapter), _embeds(pos_embed, "pos_embed")
    prompt = pos.prompt
    if pos.negative or neg_embed is not None:
        # the given sides projected again: neg_embed's features are the unconditional ones
        cond = pos.features()
        uncond = _embeds(neg_embed, "neg_embed").features() if neg_embed is not None else prompt.uncond_features
        prompt = build_image_prompt(pipe.adapter.adapter, cond, _fit_rows(uncond, cond.shape[0]).contiguous(),
                                    combine="batch" if batch else "concat", encoder_name=prompt.encoder_name)
    elif batch and not prompt.per_batch_item and prompt.cond_features is not None:
        prompt = build_image_prompt(pipe.adapter.adapter, prompt.cond_features, prompt.uncond_features, combine="batch",
                                    encoder_name=prompt.encoder_name)
    return _result(IPAApplyAdapter().apply(model, pipe.adapter, prompt, weight, start_at, end_at, attn_mask=attn_mask,
                                           weight_type=weight_type, embeds_scaling=embeds_scaling, legacy=legacy()))


# ------------------------------------------------------------------------------------------ faces
def _plus_version(pipe: Pipeline) -> str:
    return "v2 (shortcut)" if any(s in pipe.adapter.name.lower() for s in ("plusv2", "kolors")) else "v1"


def faceid(model, ipadapter, image, weight, weight_faceidv2, weight_type, combine_embeds, start_at, end_at,
           embeds_scaling, image_negative=None, attn_mask=None, clip_vision=None, insightface=None, weight_kolors=1.0,
           batch=False):
    pipe = _pipeline(ipadapter)
    if image_negative is not None and pipe.adapter.config.clip_width:  # plain FaceID: the pack ignores it too
        raise IPAdapterError(
            f"image_negative with a FaceID Plus adapter ({pipe.adapter.name}) is not computed by this pack (the widely "
            "used pack encodes it as the unconditional face image). Disconnect it to use a black image, as that pack "
            "does without one, or install ComfyUI_IPAdapter_plus for this graph.")
    settings = insightface if isinstance(insightface, FaceSettings) else FaceSettings(pipe.provider, "buffalo_l")
    cv = clip_vision if clip_vision is not None else pipe.clip_vision
    face, face_image = _result(IPAEncodeFace().encode(pipe.adapter, image, settings.provider, clip_vision=cv,
                                                      insightface_model=settings.model_name,
                                                      combine="batch" if batch else combine_embeds,
                                                      plus_version=_plus_version(pipe), legacy=legacy()))
    # the pack's FaceID nodes add no LoRA (its Unified Loader FaceID or a LoRA loader put it on the model)
    model = _result(IPAApplyAdapter().apply(model, pipe.adapter, face, weight, start_at, end_at, attn_mask=attn_mask,
                                            weight_type=weight_type, embeds_scaling=embeds_scaling,
                                            faceid_lora_strength=0.0, weight_faceidv2=weight_faceidv2,
                                            legacy=legacy(), weight_kolors=weight_kolors))[0]
    return model, face_image


# The pack's apply ids take its face path when the pipeline holds a FaceID adapter (SwarmUI sends IPAdapter after
# a Unified Loader FaceID): computed as IPAdapter FaceID (Batch: True) with the pack's weight_faceidv2, 2 x weight.
FACE_APPLY_IDS = {"IPAdapter": False, "IPAdapterAdvanced": False, "IPAdapterBatch": True}


def _faceid_apply(node_id, inputs):
    weight, weight_type = inputs["weight"], inputs["weight_type"]
    if not isinstance(weight, (int, float)):
        raise IPAdapterError(f"{node_id}: a list of weights with a FaceID adapter is not computed here; use IPAdapter "
                             "FaceID Batch with one weight.")
    if node_id == "IPAdapter":  # its three weight types, named as the recipe maps them
        weight_type = migrate_table.PACK[node_id]["options"]["weight_type"]["values"][weight_type]
    model, _ = faceid(inputs["model"], inputs["ipadapter"], inputs["image"], weight, 2 * weight, weight_type,
                      inputs.get("combine_embeds", "concat"), inputs["start_at"], inputs["end_at"],
                      inputs.get("embeds_scaling", "V only"), attn_mask=inputs.get("attn_mask"),
                      clip_vision=inputs.get("clip_vision"), batch=FACE_APPLY_IDS[node_id])
    return (model,)


# ------------------------------------------------------------------------------------------ helpers
def noise(type, strength, blur, image_optional=None):
    return _result(IPANoise().make(type, strength, blur, image=image_optional))


def weights(**inputs):  # our strategy carries the reference count too, which the pack's prompt schedule reads
    return _result(IPAFrameWeights().schedule(**inputs))


def weights_from_strategy(weights_strategy, image=None):
    return _result(IPAFrameWeightsFromStrategy().schedule(weights_strategy, image=image))


# ------------------------------------------------------------------------------------------ tiles
def tiled(node_id="IPAdapterTiled", **inputs):
    """IPAdapter Tiled (Batch): the model through its recipe (Encode Image Prompt, tiles 'tiled'; the Batch id with
    combine 'batch', one reference per frame), and the tiles and their masks the pack also outputs, from the same
    layout (ip_core.tiles): tile by tile, each with the batch's images."""
    model = run_recipe(node_id, inputs)[0]
    image = inputs["image"]
    layout = tiling.tile_layout(int(image.shape[1]), int(image.shape[2]))
    parts = tiling.tile_images(image, layout, float(inputs.get("sharpening", 0.0)))
    masks = tiling.tile_masks(layout, inputs.get("attn_mask"))
    return model, parts.reshape(-1, *parts.shape[2:]), masks.reshape(-1, *masks.shape[2:])


# ------------------------------------------------------------------------------------------ regions
@dataclass
class PackParams:
    """IPADAPTER_PARAMS: the regions of Regional Conditioning nodes, in order (Combine Params joins them)."""
    regions: tuple


def regional_conditioning(image, image_weight, prompt_weight, weight_type, start_at, end_at, mask=None, positive=None,
                          negative=None):
    if mask is not None:  # the text prompts act where the mask is (the host's ConditioningSetMask, area 'default')
        positive = host.mask_conditioning(positive, mask, prompt_weight) if positive is not None else None
        negative = host.mask_conditioning(negative, mask, prompt_weight) if negative is not None else None
    region = dict(image=image, attn_mask=mask, weight=image_weight, weight_type=weight_type, start_at=start_at,
                  end_at=end_at)
    return PackParams((region,)), positive, negative


def combine_params(params_1, params_2, params_3=None, params_4=None, params_5=None):
    given = [p for p in (params_1, params_2, params_3, params_4, params_5) if p is not None]
    for i, p in enumerate(given, 1):
        if not isinstance(p, PackParams):
            raise IPAdapterError(f"IPAdapter Combine Params: params_{i} must be IPADAPTER_PARAMS from IPAdapter Regional "
                                 f"Conditioning or Combine Params, got {type(p).__name__}.")
    return (PackParams(tuple(r for p in given for r in p.regions)),)


def from_params(model, ipadapter, ipadapter_params, combine_embeds, embeds_scaling, image_negative=None,
                clip_vision=None):
    """IPAdapter From Params: per region, our Encode Image Prompt and Apply IPAdapter (attn_mask = the region's mask),
    each applied to the model the previous one made (the converter builds the same chain: migrate_table.REGIONS)."""
    pipe = _pipeline(ipadapter)
    if not isinstance(ipadapter_params, PackParams):
        raise IPAdapterError("IPAdapter From Params: ipadapter_params must come from IPAdapter Regional Conditioning or "
                             f"Combine Params, got {type(ipadapter_params).__name__}.")
    cv = _clip_vision(pipe, clip_vision)
    for region in ipadapter_params.regions:
        prompt = _result(IPAEncodeImagePrompt().encode(pipe.adapter, cv, region["image"], combine=combine_embeds,
                                                       negative_image=image_negative, legacy=legacy()))[0]
        model = _result(IPAApplyAdapter().apply(model, pipe.adapter, prompt, region["weight"], region["start_at"],
                                                region["end_at"], attn_mask=region["attn_mask"],
                                                weight_type=region["weight_type"], embeds_scaling=embeds_scaling,
                                                legacy=legacy()))[0]
    return (model,)


# ------------------------------------------------------------------------------------------ images, files, loaders
PREP_SIZE = 224  # the pack's Prep Image For ClipVision output side


def _square_box(h: int, w: int, crop_position: str) -> tuple:
    """(top, left, side) of the square crop_position keeps: centred, or against the named edge."""
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    top = {"top": 0, "bottom": h - side}.get(crop_position, top)
    left = {"left": 0, "right": w - side}.get(crop_position, left)
    return top, left, side


def prep_image(image, interpolation, crop_position, sharpening):
    """Prep Image For ClipVision: a 224 x 224 IMAGE, as the pack makes it: a square cut at crop_position (or black
    bars around the short side, 'pad'), then resized on 8-bit values with PIL's filter of that name, then sharpened
    (contrast-adaptive) where sharpening > 0."""
    from PIL import Image

    if interpolation not in Image.Resampling.__members__:
        raise IPAdapterError(f"Prep Image For ClipVision: unknown interpolation {interpolation!r}; use one of "
                             f"{', '.join(Image.Resampling.__members__)}.")
    x = image.permute(0, 3, 1, 2)
    _, _, h, w = x.shape
    if crop_position == "pad":
        if h != w:  # the long side's excess split in two, each side of the short one (integer half, as the pack)
            half = abs(h - w) // 2
            pad = (half, half, 0, 0) if h > w else (0, 0, half, half)
            x = torch.nn.functional.pad(x, pad)
    else:
        top, left, side = _square_box(h, w, crop_position)
        x = x[:, :, top:top + side, left:left + side]
    out = []
    for img in x:
        u8 = img.float().mul(255).byte().permute(1, 2, 0).cpu().numpy()  # truncated to 8 bits, as the pack's PIL round trip
        pil = Image.fromarray(u8[:, :, 0] if u8.shape[2] == 1 else u8)
        resized = torch.from_numpy(np.asarray(pil.resize((PREP_SIZE, PREP_SIZE), resample=Image.Resampling[interpolation])).copy())
        out.append((resized[:, :, None] if resized.ndim == 2 else resized).float().div(255))
    # channels first in memory, as the pack's result: its IPAdapter Noise seeds from the pixel sum, whose float value
    # depends on the order the sum runs in
    out = torch.stack(out).to(image.device).permute(0, 3, 1, 2).contiguous()
    if sharpening > 0:
        out = contrast_adaptive_sharpen(out, sharpening)
    return (out.permute(0, 2, 3, 1),)


def save_pack_embeds(embeds, filename_prefix):
    """IPAdapter Save Embeds: our safetensors embeds file (never a pickle), named .ipadpt as the pack names its files so
    that IPAdapter Load Embeds lists it; a neg_embed output is saved as the side it is."""
    e = _embeds(embeds, "embeds")
    p = e.prompt
    if e.negative:
        p = replace(p, cond=p.uncond, uncond=p.cond, cond_features=p.uncond_features, uncond_features=p.cond_features)
    folder, filename, counter, subfolder, _ = host.save_path(filename_prefix, host.output_directory())
    name = f"{filename}_{counter:05}.ipadpt"
    with host.refusals(f"saving {os.path.join(subfolder, name)}", "Choose a shorter filename_prefix, or free space or "
                       "permission in the output folder."):
        save_embeds(p, os.path.join(folder, name), "saved by IPAdapter Save Embeds (ComfyUI_IPAdapter_plus id)")
    return {"ui": {"text": [f"saved {os.path.join(subfolder, name)} (safetensors)"]}, "result": ()}


def load_pack_embeds(embeds):
    """IPAdapter Load Embeds: files saved by IPAdapter Save Embeds here; the pack's own .ipadpt files are pickles and are
    refused unread (Load Image Prompt Embeds says what to do)."""
    return (PackEmbeds(_result(IPALoadEmbeds().load(embeds))[0], None),)


def unified_loader_community(model, preset, ipadapter=None):
    return unified_loader(model, preset)


COMPUTE = {
    "IPAdapterModelLoader": model_loader,
    "IPAdapterUnifiedLoader": unified_loader,
    "IPAdapterUnifiedLoaderFaceID": unified_loader_faceid,
    "IPAdapterInsightFaceLoader": insightface_loader,
    "IPAdapterEncoder": encoder,
    "IPAdapterCombineEmbeds": combine,
    "IPAdapterEmbeds": embeds_apply,
    "IPAdapterEmbedsBatch": lambda **kw: embeds_apply(**kw, batch=True),
    "IPAdapterFaceID": faceid,
    "IPAdapterFaceIDKolors": faceid,
    "IPAAdapterFaceIDBatch": lambda **kw: faceid(**kw, batch=True),
    "IPAdapterNoise": noise,
    "IPAdapterWeights": weights,
    "IPAdapterWeightsFromStrategy": weights_from_strategy,
    "IPAdapterTiled": tiled,
    "IPAdapterTiledBatch": lambda **kw: tiled("IPAdapterTiledBatch", **kw),
    "IPAdapterRegionalConditioning": regional_conditioning,
    "IPAdapterCombineParams": combine_params,
    "IPAdapterFromParams": from_params,
    "PrepImageForClipVision": prep_image,
    "IPAdapterSaveEmbeds": save_pack_embeds,
    "IPAdapterLoadEmbeds": load_pack_embeds,
    "IPAdapterUnifiedLoaderCommunity": unified_loader_community,
    "IPAdapterCombineWeights": lambda **kw: _result(IPACombineFrameWeights().combine(**kw)),
    "IPAdapterPromptScheduleFromWeightsStrategy": lambda **kw: _result(IPAPromptSchedule().schedule(**kw)),
}
RECIPE_IDS = ("IPAdapter", "IPAdapterAdvanced", "IPAdapterBatch", "IPAdapterStyleComposition",
              "IPAdapterStyleCompositionBatch", "IPAdapterMS", "IPAdapterClipVisionEnhancer",
              "IPAdapterClipVisionEnhancerBatch", "IPAdapterPreciseStyleTransfer", "IPAdapterPreciseStyleTransferBatch",
              "IPAdapterPreciseComposition", "IPAdapterPreciseCompositionBatch")


def run(node_id: str, inputs: dict):
    """Compute one drop-in id (the host calls this with the node's inputs; a JSON null arrives as None)."""
    if node_id in COMPUTE:
        return COMPUTE[node_id](**inputs)
    if node_id in RECIPE_IDS:
        return run_recipe(node_id, inputs)
    raise IPAdapterError(
        f"{node_id} ({pack_interface.NODES[node_id]['display_name']}) is recognised, but this pack does not compute it "
        "as a drop-in: convert the workflow to this pack's nodes with `python -m nodes.migrate` (it says what each "
        "node becomes), or install ComfyUI_IPAdapter_plus for it.")
