"""Encode Image Prompt: reference images -> the adapter's cond / uncond tokens (IPA_EMBEDS)."""
from __future__ import annotations

from dataclasses import replace

import torch

from . import host
from ..ip_core.embeds import COMBINE_MODES, build_image_prompt, features_for, parse_reference_weights, weight_references
from ..ip_core.encoder_mask import apply_encoder_masks, encoder_masks
from ..ip_core.encoder_table import IMAGE_EMBEDS, EncoderOutput
from ..ip_core.errors import AdapterMismatchError, IPAdapterError, check_choice
from ..ip_core.preprocess import MODES as CROP_MODES
from ..ip_core.preprocess import preprocess_images, renormalize
from ..ip_core import tiles as tiling
from .families import family_for
from .families.base import NoImage
from .common import CATEGORY, LoadedAdapter, check_images, check_int, check_number, error_boundary, require

TILE_MODES = ("off", "tiled", "enhance")
ENCODE_CHUNK = 16  # references per encoder call: bounds memory, gives the progress bar steps


def _preprocess(images, crop: str, size: int, legacy: bool):
    if legacy and crop != "pad":  # the widely used pack's preprocessing: the host's clip_preprocess
        return host.clip_preprocess(images, size, crop=crop == "center")
    return preprocess_images(images, mode=crop, size=size)


def _encode(clip_vision, images, crop: str, progress, masks=None, legacy: bool = False):
    """IMAGE batch -> encoder output with image_embeds and penultimate_hidden_states (concatenated chunks)."""
    if not host.can_encode_pixels(clip_vision):
        raise IPAdapterError(
            f"clip_vision is a {type(clip_vision).__name__}, not ComfyUI's CLIP vision model; connect a Load CLIP Vision node."
        )
    size = int(getattr(clip_vision, "image_size", 224))
    embeds, hidden = [], []
    for start in range(0, images.shape[0], ENCODE_CHUNK):
        host.check_interrupt()
        pixels = _preprocess(images[start:start + ENCODE_CHUNK], crop, size, legacy)
        pixels = renormalize(pixels, *host.encoder_normalization(clip_vision))  # SigLIP: mean / std 0.5
        if masks is not None:  # one mask for all, or one per reference
            pixels = apply_encoder_masks(pixels, masks if masks.shape[0] == 1 else masks[start:start + ENCODE_CHUNK])
        out = host.encode_pixels(clip_vision, pixels)
        embeds.append(out.image_embeds)
        hidden.append(out.penultimate_hidden_states)
        progress.update(min(ENCODE_CHUNK, images.shape[0] - start))
    return EncoderOutput(torch.cat(embeds), torch.cat(hidden))


def _enhanced(clip_vision, image, whole, grid: int, ratio: float, crop: str, progress, output: str, legacy: bool = False):
    """The whole-image encoding plus its grid tiles' encoding merged back (ip_core.tiles.enhance), for the encoder
    output the adapter reads (`output`); the other output is the whole image's."""
    parts = tiling.grid_tiles(image, grid)  # [B, grid*grid, h, w, C]
    split = _encode(clip_vision, parts.reshape(-1, *parts.shape[2:]), crop, progress, legacy=legacy)
    if output == IMAGE_EMBEDS:
        return EncoderOutput(tiling.enhance(whole.image_embeds, tiling.merge_grid_embeds(split.image_embeds, grid), ratio),
                             whole.penultimate_hidden_states)
    return EncoderOutput(whole.image_embeds, tiling.enhance(
        whole.penultimate_hidden_states, tiling.merge_grid_hidden(split.penultimate_hidden_states, grid), ratio))


def _no_image(config, clip_vision, crop: str, progress, label: str, legacy: bool = False, count=None) -> NoImage:
    """What a family may pick "no image" from: a black image through the encoder (diffusers' Flux pipeline, when no
    negative image is given: features [1, ...]), the official recipe, the widely used pack's black picture."""
    size = int(getattr(clip_vision, "image_size", 224))
    features = lambda out: features_for(config, out, label)  # noqa: E731
    black = lambda: features(_encode(clip_vision, torch.zeros(1, size, size, 3), crop, progress))  # noqa: E731
    return NoImage(config, clip_vision, black, features, legacy=legacy, progress=count)


def _encode_tiled(a, clip_vision, image, crop: str, combine: str, negative_image, weights=None, legacy: bool = False,
                  sharpening: float = 0.0):
    """One image prompt per tile and the tiles' masks. Each tile's references are combined as `combine` says;
    'batch' keeps one per frame (frame i attends to the tiles of reference i, each tile in its region), encoded
    ENCODE_CHUNK references at a time so that pixels and features stay bounded whatever the frame count."""
    config = a.config
    label = "the connected CLIP vision model"
    count = int(image.shape[0])
    layout = tiling.tile_layout(int(image.shape[1]), int(image.shape[2]))
    progress = host.progress_bar(layout.count * count + 1)
    neg = None
    if negative_image is not None:
        check_images(negative_image, "negative_image")
        neg = features_for(config, _encode(clip_vision, negative_image, crop, progress, legacy=legacy), label)
        if combine == "batch" and neg.shape[0] not in (1, count):
            raise IPAdapterError(f"{neg.shape[0]} negative images for {count} reference images; give one negative "
                                 "image, or one per reference")
    step = ENCODE_CHUNK if combine == "batch" else count  # merging modes need all references of a tile together
    prompts = [[] for _ in range(layout.count)]  # per tile, per chunk of references
    for start in range(0, count, step):
        parts = tiling.tile_images(image[start:start + step], layout, sharpening)  # [G, b, tile, tile, C]
        chunk_weights = None if weights is None else weights[start:start + step]
        chunk_neg = neg if neg is None or neg.shape[0] == 1 else neg[start:start + step]
        for g in range(layout.count):
            cond = weight_references(features_for(config, _encode(clip_vision, parts[g], crop, progress, legacy=legacy),
                                                  label), chunk_weights)
            if neg is None:  # the same "no image" for every tile and frame
                neg = chunk_neg = family_for(config).no_image_features(
                    config, cond[:1], _no_image(config, clip_vision, crop, progress, label, legacy))
            prompts[g].append(build_image_prompt(a.adapter, cond, chunk_neg, combine=combine,
                                                 encoder_name=config.encoder_name))
        del parts
    progress.update(1)
    host.check_interrupt()
    first = prompts[0][0]
    # Tile prompts act in their own regions: they are not re-combined before the projection (no features kept).
    # Rows region by region, each region's rows frame by frame (ImagePromptEmbeds.regions).
    return replace(first, cond=torch.cat([p.cond for tile in prompts for p in tile]),
                   uncond=torch.cat([p.uncond for tile in prompts for p in tile]),
                   region_masks=tiling.tile_masks(layout)[:, 0], cond_features=None, uncond_features=None)


class IPAEncodeImagePrompt:
    DESCRIPTION = (
        "Turns reference images into image prompt tokens for one IP-Adapter: preprocesses them (crop mode), runs "
        "the CLIP vision model, checks that it is the encoder the adapter needs, and projects them. The "
        "unconditional tokens follow the official recipe (zero embedding, or a zero image through the encoder for "
        "plus/full-face), or come from negative_image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Image prompt tokens (cond and uncond) for the adapter they were made with.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter the tokens are for (from Load IPAdapter)."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "The CLIP vision model the adapter was trained with (usually ViT-H/14; some SDXL adapters need ViT-bigG/14)."}),
                "image": ("IMAGE", {"tooltip": "One or more reference images (a batch)."}),
            },
            "optional": {
                "crop": (list(CROP_MODES), {"default": "center", "tooltip": "center: the official centre crop; pad: keep the whole image, pad to square with the CLIP mean colour; squash: resize to square ignoring aspect."}),
                "combine": (list(COMBINE_MODES), {"default": "concat", "tooltip": "Several references: concat = all tokens side by side; batch = reference i for batch item i; average, norm average, add, subtract (first minus the mean of the others), max, min = one merged reference (CLIP features merged before the projection, as Combine Image Prompts does)."}),
                "negative_image": ("IMAGE", {"tooltip": "Optional image(s) whose tokens replace the unconditional ones (guidance pushes away from them). One, or one per reference."}),
                "reference_weights": ("STRING", {"default": "", "tooltip": "One weight per reference image ('1, 0.5'), or one for all; empty = all 1. Scales each reference's CLIP features before the projection (the widely used pack's encoder weight), -1..3."}),
                "mask": ("MASK", {"tooltip": "Optional mask over the CLIP input: the encoder sees the reference only where the mask is 1 (it follows the crop mode). One mask, or one per reference."}),
                "tiles": (list(TILE_MODES), {"default": "off", "tooltip": "tiled: cut the reference into 256 px squares (short side one tile, up to 4 along the long side), each acting on its own part of the image (with combine 'batch', each frame gets its own reference's tiles); enhance: also encode an enhance_tiles x enhance_tiles grid and add it to the whole-image encoding."}),
                "enhance_tiles": ("INT", {"default": 2, "min": 1, "max": tiling.MAX_ENHANCE_GRID, "tooltip": f"enhance: tiles per side of the grid (1 = off); 1 to {tiling.MAX_ENHANCE_GRID}."}),
                "enhance_ratio": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "enhance: scale of the whole-image encoding (one image: added beside the tiles; several: blended with them)."}),
                "legacy": ("BOOLEAN", {"default": False, "tooltip": "Reproduce ComfyUI_IPAdapter_plus: the host's clip_preprocess instead of the exact official preprocessing (crop center / squash), and for plus / full-face adapters a black image as the unconditional input instead of the official zero (normalised) image. Set by the workflow converter (python -m nodes.migrate --legacy)."}),
                "tile_sharpening": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "tiles 'tiled': contrast-adaptive sharpening of the resized reference before it is cut into tiles (the widely used pack's IPAdapter Tiled sharpening); 0 = none."}),
            },
        }

    @error_boundary
    def encode(self, ipadapter, clip_vision, image, crop="center", combine="concat", negative_image=None,
               reference_weights="", mask=None, tiles="off", enhance_tiles=2, enhance_ratio=1.0, legacy=False,
               tile_sharpening=0.0):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        config = a.config
        if config.is_faceid:
            raise AdapterMismatchError(
                f"{a.name} is a FaceID adapter ({config.description}): it takes a face embedding, not CLIP image "
                "features. Use the Encode Face (InsightFace) node with it."
            )
        check_images(image, "image")
        check_choice(crop, "crop mode", CROP_MODES)
        check_choice(combine, "combine mode", COMBINE_MODES)
        check_choice(tiles, "tiles mode", TILE_MODES)
        weights = parse_reference_weights(reference_weights, image.shape[0])
        if tiles != "off" and mask is not None:
            raise IPAdapterError(
                f"mask with tiles {tiles!r} is not supported: the tiles already choose which part of the reference each "
                "encoding sees. Disconnect the mask, or set tiles to 'off'.")
        tile_sharpening = check_number(tile_sharpening, "tile_sharpening", 0.0, 1.0)
        if tile_sharpening and tiles != "tiled":
            raise IPAdapterError(f"tile_sharpening {tile_sharpening} sharpens tiles, and tiles is {tiles!r}: set tiles to "
                                 "'tiled', or tile_sharpening to 0.")
        if tiles == "tiled":
            return (_encode_tiled(a, clip_vision, image, crop, combine, negative_image, weights, legacy, tile_sharpening),)
        masks = None
        if mask is not None:
            masks = encoder_masks(mask, image.shape[0], tuple(image.shape[1:3]), crop, int(getattr(clip_vision, "image_size", 224)))
        enhance_ratio = check_number(enhance_ratio, "enhance_ratio", 0.0, 1.0)
        grid = check_int(enhance_tiles, "enhance_tiles", 1, tiling.MAX_ENHANCE_GRID) if tiles == "enhance" else 1
        if grid > 1:
            tiling.check_grid(grid, image.shape[1], image.shape[2])
        total = image.shape[0] * (1 + grid * grid * (grid > 1)) + (negative_image.shape[0] if isinstance(negative_image, torch.Tensor) else 1)
        progress = host.progress_bar(total)
        label = "the connected CLIP vision model"
        whole = _encode(clip_vision, image, crop, progress, masks, legacy=legacy)
        family = family_for(config)
        family.check_encoder(config, whole)
        if grid > 1:
            whole = _enhanced(clip_vision, image, whole, grid, enhance_ratio, crop, progress, config.encoder_output, legacy)
        cond = weight_references(features_for(config, whole, label), weights)
        if negative_image is not None:
            check_images(negative_image, "negative_image")
            uncond = features_for(config, _encode(clip_vision, negative_image, crop, progress, legacy=legacy), label)
        else:
            no_image = _no_image(config, clip_vision, crop, progress, label, legacy, count=progress)
            uncond = family.no_image_features(config, cond, no_image)
        host.check_interrupt()
        return (build_image_prompt(a.adapter, cond, uncond, combine=combine, encoder_name=config.encoder_name),)
