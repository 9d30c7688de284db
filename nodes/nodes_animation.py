"""Animation: per-frame weight schedules (and which reference image each frame shows) for Apply IPAdapter,
weight lists joined, and the prompt schedule that goes with a schedule's reference images.

The schedule maths is ip_core.frames (frame_schedule and prompt_schedule: the widely used pack's IPAdapter
Weights and Prompt Schedule rules); these nodes only read the widgets and gather the images. The drop-in ids
of that pack (nodes/dropin/) compute through these nodes.
"""
from __future__ import annotations

import torch

from ..ip_core.errors import IPAdapterError
from ..ip_core.frames import (MAX_FRAME_SETTING, MAX_SCHEDULE_FRAMES, METHODS, TIMINGS, check_frame_weights, frame_schedule,
                               prompt_schedule)
from .common import CATEGORY, check_images, check_int, error_boundary

STRATEGY = "IPA_WEIGHTS_STRATEGY"
_FIELDS = ("weights", "timing", "frames", "start_frame", "end_frame", "add_starting_frames", "add_ending_frames",
           "method", "seed")
IMAGES = "images"  # a strategy also holds how many reference images its schedule was made with (prompt schedule)
_FRAME_FIELDS = ("frames", "start_frame", "end_frame", "add_starting_frames", "add_ending_frames")
MAX_SEED = 2 ** 32 - 1
_BOUND = f" 0 to {MAX_FRAME_SETTING}; the whole schedule is at most {MAX_SCHEDULE_FRAMES} frames."


def _gather(image, order):
    return None if order is None else image[torch.tensor(order, dtype=torch.long, device=image.device)]


def _run(strategy: dict, image):
    # The node's own bounds (linked values skip the host's widget check; a strategy may come from anywhere)
    strategy = dict(strategy, **{f: check_int(strategy[f], f, 0, MAX_FRAME_SETTING) for f in _FRAME_FIELDS},
                    seed=check_int(strategy["seed"], "seed", 0, MAX_SEED))
    images = 0
    if image is not None:
        check_images(image, "image")
        images = int(image.shape[0])
    s = frame_schedule(images=images, **strategy)
    return (s.weights, s.weights_invert, s.total_frames, _gather(image, s.image_1) if image is not None else None,
            _gather(image, s.image_2) if image is not None else None, {**strategy, IMAGES: images})


def _strategy(value) -> dict:
    if not isinstance(value, dict) or set(value) != {*_FIELDS, IMAGES}:
        raise IPAdapterError("weights_strategy must come from an IPAdapter Frame Weights node of this pack.")
    return value


_OUTPUTS = dict(
    RETURN_TYPES=("FLOAT", "FLOAT", "INT", "IMAGE", "IMAGE", STRATEGY),
    RETURN_NAMES=("weights", "weights_invert", "total_frames", "image_1", "image_2", "weights_strategy"),
    OUTPUT_TOOLTIPS=(
        "One weight per frame: connect to Apply IPAdapter's frame_weights.",
        "The same weights in reverse order (for a second Apply node that fades out while the first fades in).",
        "Number of frames of the schedule (use it as the batch size).",
        "Per frame, the reference image it shows (connect to Encode Image Prompt with combine 'batch').",
        "Per frame, the image it fades to (shift / alternate batches), for a second Apply node with weights_invert.",
        "These settings (and the number of reference images), to reuse with IPAdapter Frame Weights From Strategy "
        "or IPAdapter Prompt Schedule.",
    ),
)


class IPAFrameWeights:
    DESCRIPTION = (
        "Per-frame weights for animations: a list ('custom'), or a transition from the first to the last listed weight "
        "over `frames` frames (linear, ease in / out / in-out, random), held before start_frame and after end_frame. "
        "With reference images, the schedule repeats per image (full batch) or cross-fades between them."
    )
    CATEGORY = CATEGORY + "/animation"
    FUNCTION = "schedule"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = _OUTPUTS["RETURN_TYPES"], _OUTPUTS["RETURN_NAMES"], _OUTPUTS["OUTPUT_TOOLTIPS"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weights": ("STRING", {"default": "1.0, 0.0", "multiline": True, "tooltip": "Numbers separated by commas or new lines. custom: the weights themselves; other timings: from the first to the last."}),
                "timing": (list(TIMINGS), {"default": "linear", "tooltip": "custom: the list as given; otherwise the curve of the transition."}),
                "frames": ("INT", {"default": 0, "min": 0, "max": MAX_FRAME_SETTING, "tooltip": "Frames of one transition (at least 2)." + _BOUND}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": MAX_FRAME_SETTING, "tooltip": "Frames held at the first weight before the transition." + _BOUND}),
                "end_frame": ("INT", {"default": MAX_FRAME_SETTING, "min": 0, "max": MAX_FRAME_SETTING, "tooltip": "Frame where the transition ends (at most frames); the rest hold the last weight." + _BOUND}),
                "add_starting_frames": ("INT", {"default": 0, "min": 0, "max": MAX_FRAME_SETTING, "tooltip": "With images: extra frames at the start showing the first image." + _BOUND}),
                "add_ending_frames": ("INT", {"default": 0, "min": 0, "max": MAX_FRAME_SETTING, "tooltip": "With images: extra frames at the end showing the last image." + _BOUND}),
                "method": (list(METHODS), {"default": "full batch", "tooltip": "With images: full batch = the schedule once per image; shift = cross-fade each image into the next; alternate = pairs fading back and forth."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Reference images the schedule walks through (image_1 / image_2 outputs)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "tooltip": f"random timing: the seed of the draws (the same seed gives the same weights); 0 to {MAX_SEED}."}),
            },
        }

    @error_boundary
    def schedule(self, weights="1.0, 0.0", timing="linear", frames=0, start_frame=0, end_frame=9999, add_starting_frames=0,
                 add_ending_frames=0, method="full batch", image=None, seed=0):
        values = (weights, timing, frames, start_frame, end_frame, add_starting_frames, add_ending_frames, method, seed)
        return _run(dict(zip(_FIELDS, values)), image)


class IPAFrameWeightsFromStrategy:
    DESCRIPTION = "The schedule of an IPAdapter Frame Weights node again (same settings), e.g. for other images."
    CATEGORY = CATEGORY + "/animation"
    FUNCTION = "schedule"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = _OUTPUTS["RETURN_TYPES"], _OUTPUTS["RETURN_NAMES"], _OUTPUTS["OUTPUT_TOOLTIPS"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"weights_strategy": (STRATEGY, {"tooltip": "From IPAdapter Frame Weights."})},
            "optional": {"image": ("IMAGE", {"tooltip": "Reference images the schedule walks through."})},
        }

    @error_boundary
    def schedule(self, weights_strategy, image=None):
        strategy = _strategy(weights_strategy)
        out = _run({f: strategy[f] for f in _FIELDS}, image)
        # the strategy passes on as it came, with the image count it was made with (as the widely used pack)
        return (*out[:5], dict(strategy))


MIN_WEIGHT, MAX_WEIGHT = -1.0, 5.0  # a typed weight: Apply IPAdapter's weight range (a linked list: any finite numbers)


def _weight_list(value, name) -> list:
    if isinstance(value, (list, tuple)) and len(value) > MAX_SCHEDULE_FRAMES:
        raise IPAdapterError(f"{name}: {len(value)} weights; give at most {MAX_SCHEDULE_FRAMES} (one per frame).")
    return check_frame_weights(value if isinstance(value, (list, tuple)) else [value], name)


class IPACombineFrameWeights:
    DESCRIPTION = "Two weight lists (or single weights) one after the other: the frames of one schedule, then the other's."
    CATEGORY = CATEGORY + "/animation"
    FUNCTION = "combine"
    RETURN_TYPES = ("FLOAT", "INT")
    RETURN_NAMES = ("weights", "count")
    OUTPUT_TOOLTIPS = ("weights_1's weights, then weights_2's: connect to Apply IPAdapter's frame_weights.",
                       "How many weights (frames) that is: use it as the batch size.")

    @classmethod
    def INPUT_TYPES(cls):
        number = {"default": 0.0, "min": MIN_WEIGHT, "max": MAX_WEIGHT, "step": 0.05}
        return {"required": {
            "weights_1": ("FLOAT", {**number, "tooltip": "A weight, or a list of per-frame weights (from IPAdapter Frame Weights)."}),
            "weights_2": ("FLOAT", {**number, "tooltip": "A weight, or a list of per-frame weights, put after weights_1's."}),
        }}

    @error_boundary
    def combine(self, weights_1=0.0, weights_2=0.0):
        joined = _weight_list(weights_1, "weights_1") + _weight_list(weights_2, "weights_2")
        if len(joined) > MAX_SCHEDULE_FRAMES:
            raise IPAdapterError(f"the two lists hold {len(joined)} weights together; at most {MAX_SCHEDULE_FRAMES} (one per frame).")
        return joined, len(joined)


class IPAPromptSchedule:
    DESCRIPTION = (
        "A prompt schedule for the frames of an IPAdapter Frame Weights schedule: one line of `prompt` per reference "
        "image, keyed by the frame where that image starts (\"frame\": \"prompt\", lines), for prompt-schedule nodes."
    )
    CATEGORY = CATEGORY + "/animation"
    FUNCTION = "schedule"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt_schedule",)
    OUTPUT_TOOLTIPS = ("'\"frame\": \"prompt\",' lines; empty without prompt lines or without reference images.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "weights_strategy": (STRATEGY, {"tooltip": "From IPAdapter Frame Weights (made with reference images)."}),
            "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "One prompt per line, in the order of the reference images; the last line is repeated for the remaining images, empty lines are skipped."}),
        }}

    @error_boundary
    def schedule(self, weights_strategy, prompt=""):
        s = _strategy(weights_strategy)
        if not isinstance(prompt, str):
            raise IPAdapterError(f"prompt must be text, got {type(prompt).__name__}; connect a text (STRING) output.")
        frames = {f: check_int(s[f], f, 0, MAX_FRAME_SETTING) for f in ("frames", "add_starting_frames", "add_ending_frames")}
        return (prompt_schedule(prompt, check_int(s[IMAGES], IMAGES, 0, MAX_SCHEDULE_FRAMES), **frames),)
