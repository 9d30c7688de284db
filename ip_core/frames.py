"""Frames: which reference, weight and mask each frame of a batch gets, and weight schedules over frames.

The widely used pack's rules, as plain functions:
- fewer per-frame values (references, weights, masks) than frames: the last one is repeated;
- the same number: one each;
- more values than frames: the pack silently drops the extra ones. Here that is an error, since it is
  almost always a wrong frame count (a silent misalignment otherwise).
- AnimateDiff-style context windows: the host calls the model on a sub-batch of frames and names them in
  transformer_options["ad_params"] = {"full_length": F, "sub_idxs": [...]}; values are extended to F frames
  by the rule above, then the window's frames are picked.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import IPAdapterError, check_choice

TIMINGS = ("custom", "linear", "ease_in_out", "ease_in", "ease_out", "random")
METHODS = ("full batch", "shift batches", "alternate batches")
# Bounds on a schedule, whatever the caller checked: each frame setting (the widely used pack's widget maximum)
# and the whole schedule (one Python float per frame; a reference batch times 9999 frames could ask for 10**8).
MAX_FRAME_SETTING = 9999
MAX_SCHEDULE_FRAMES = 100_000


def frame_sources(count: int, frames: int, what: str = "references") -> list:
    """Index of the value each of `frames` frames uses, out of `count` values (last one repeated)."""
    if count < 1:
        raise IPAdapterError(f"no {what} to spread over {frames} frames; give at least one.")
    if count > frames:
        raise IPAdapterError(
            f"{what}: {count} given for {frames} frames, but at most one per frame is used. Make the batch {count} "
            f"frames long, or give at most {frames} (fewer than frames: the last one is repeated)."
        )
    return [min(i, count - 1) for i in range(frames)]


def frame_picks(count: int, full: Optional[int], idxs: Sequence[int], what: str = "references") -> list:
    """Index of the value each frame of `idxs` uses, out of `count` values, the frames being of an animation of
    `full` frames. full None: the animation's length is not known (a context window that does not say it): each
    frame still picks by the rule (the last value repeated), only a surplus of values cannot be found."""
    if full is not None:
        sources = frame_sources(count, full, what)
        return [sources[i] for i in idxs]
    frame_sources(count, count, what)  # at least one value
    return [min(int(i), count - 1) for i in idxs]


def window_of(extra_options: Optional[dict], batch_per_chunk: int) -> tuple:
    """(full_length, frame indices) of the frames in this model call.

    Without a context window (no ad_params, or sub_idxs None): all batch_per_chunk frames. With one, the
    window's frames out of full_length; checked, since a window outside the batch would pick wrong frames.
    full_length None (given as None): a window that does not say the animation's length; returned as None.
    """
    ad = (extra_options or {}).get("ad_params")
    subs = ad.get("sub_idxs") if isinstance(ad, dict) else None
    if subs is None:
        return batch_per_chunk, list(range(batch_per_chunk))
    full = ad.get("full_length", 0)
    subs = [int(i) for i in subs]
    if full is not None and (not isinstance(full, int) or full < 1):
        raise IPAdapterError(f"context window without a valid full_length ({full!r}); whatever splits the animation into windows must set it.")
    if len(subs) != batch_per_chunk:
        raise IPAdapterError(
            f"the context window names {len(subs)} frames but the model was called on {batch_per_chunk}; "
            "the context window's ad_params do not match the batch."
        )
    bad = [i for i in subs if not 0 <= i < (full if full is not None else float("inf"))]
    if bad:
        raise IPAdapterError(
            f"the context window names frames {bad} outside the animation's {full} frames; check the context "
            "options (window length and overlap) against the batch size."
        )
    return full, subs


def parse_weights(text: str) -> list:
    """'1.0, 0.5\\n0' -> [1.0, 0.5, 0.0] (commas or new lines)."""
    out = []
    for part in str(text).replace("\n", ",").split(","):
        if part.strip() == "":
            continue
        try:
            value = float(part)
        except ValueError:
            raise IPAdapterError(f"weights: {part.strip()!r} is not a number; write numbers separated by commas.") from None
        if not math.isfinite(value):
            raise IPAdapterError(f"weights: {part.strip()} is not a finite number.")
        out.append(value)
        if len(out) > MAX_SCHEDULE_FRAMES:
            raise IPAdapterError(f"weights: more than {MAX_SCHEDULE_FRAMES} numbers; give at most {MAX_SCHEDULE_FRAMES} (one per frame).")
    return out


def _eased(timing: str, start: float, end: float, i: int, n: int, rng: random.Random) -> float:
    # the pack's arithmetic order, so that the floats are the same: (end - start) * i / n, i / n * pi
    if timing == "linear":
        return start + (end - start) * i / n
    if timing == "ease_in_out":
        return start + (end - start) * (1 - math.cos(i / n * math.pi)) / 2
    if timing == "ease_in":
        return start + (end - start) * math.sin(i / n * math.pi / 2)
    if timing == "ease_out":
        return start + (end - start) * (1 - math.cos(i / n * math.pi / 2))
    return rng.uniform(start, end)  # "random"


@dataclass
class FrameSchedule:
    """Per-frame weights and, given reference images, which image each frame shows (image_2: the one it
    fades to, for "shift"/"alternate"); indices into the reference batch, or None."""

    weights: list
    weights_invert: list
    image_1: Optional[list]
    image_2: Optional[list]

    @property
    def total_frames(self) -> int:
        return len(self.weights)


def frame_schedule(weights="1.0, 0.0", timing="linear", frames=0, start_frame=0, end_frame=9999,
                   add_starting_frames=0, add_ending_frames=0, method="full batch", images: int = 0,
                   seed: Optional[int] = None) -> FrameSchedule:
    """The widely used pack's IPAdapter Weights: a list of weights (timing "custom"), or a transition from
    the first to the last listed weight over `frames` frames (linear / eased / random) held before
    start_frame and after end_frame; with `images` references, the schedule is repeated per image (full
    batch), or as cross-fades between consecutive images (shift) or alternating pairs (alternate).
    "random" draws from random.Random(seed) (the pack draws from Python's global generator).
    """
    check_choice(timing, "timing", TIMINGS)
    check_choice(method, "method", METHODS)
    for name, v in (("frames", frames), ("start_frame", start_frame), ("end_frame", end_frame),
                    ("add_starting_frames", add_starting_frames), ("add_ending_frames", add_ending_frames), ("images", images)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise IPAdapterError(f"{name} must be a whole number >= 0, got {v!r}.")
        if name != "images" and v > MAX_FRAME_SETTING:
            raise IPAdapterError(f"{name} is {v}; give at most {MAX_FRAME_SETTING}.")
    values = parse_weights(weights) if isinstance(weights, str) else [float(w) for w in weights]
    rng = random.Random(seed)
    if timing != "custom":
        frames = max(frames, 2)
        start, end = (values[0], values[-1]) if values else (0.0, 1.0)
        end_frame = min(end_frame, frames)
        steps = end_frame - start_frame
        if steps < 2:
            raise IPAdapterError(
                f"a {timing} transition needs at least 2 frames between start_frame ({start_frame}) and "
                f"end_frame ({end_frame}, at most frames = {frames}); widen the range."
            )
        values = [start] * start_frame
        values += [_eased(timing, start, end, i, steps - 1, rng) for i in range(steps)]
        if timing != "random":
            values[-1] = end  # the transition lands exactly on the last weight
        values += [end] * (frames - end_frame)
    if not values:
        values = [0.0]
    span = len(values)
    image_1 = image_2 = None
    if images and images < 2 and method != "full batch":
        raise IPAdapterError(f"method {method!r} fades between images and needs at least 2; got {images}.")
    total = schedule_length(span, images, method, add_starting_frames, add_ending_frames)
    if total > MAX_SCHEDULE_FRAMES:
        raise IPAdapterError(
            f"the schedule would be {total} frames long ({span} per transition, {images} images, method {method!r}); "
            f"at most {MAX_SCHEDULE_FRAMES} frames are made. Give fewer frames or images.")
    if images:
        first, last = 0, images - 1
        if method == "shift batches":
            # each consecutive pair (i, i+1) over one span of frames: a cross-fade with weights rising
            pairs = images - 1
            values = values * pairs
            image_1 = [i for i in range(pairs) for _ in range(span)]
            image_2 = [i + 1 for i in range(pairs) for _ in range(span)]
        elif method == "alternate batches":
            once, low, high = values, min(values), max(values)
            mirrored = once + [high - (w - low) for w in once]  # there and back, within the weights' range
            evens = [i for i in range(0, images, 2) for _ in range(2)][1:]
            odds = [i for i in range(1, images, 2) for _ in range(2)]
            values = mirrored * (len(evens) // 2)
            if images % 2:
                evens = evens[:-1]
            else:
                odds = odds[:-1]
                values = values + once
            image_1 = [i for i in evens for _ in range(span)]
            image_2 = [i for i in odds for _ in range(span)]
        else:
            values = values * images
            image_1 = [i for i in range(images) for _ in range(span)]
        if add_starting_frames:
            values = [values[0]] * add_starting_frames + values
            image_1 = [first] * add_starting_frames + image_1
            if image_2 is not None:
                image_2 = [first] * add_starting_frames + image_2
        if add_ending_frames:
            values = values + [values[-1]] * add_ending_frames
            image_1 = image_1 + [last] * add_ending_frames
            if image_2 is not None:
                image_2 = image_2 + [last] * add_ending_frames
    return FrameSchedule(values, values[::-1], image_1, image_2)


def schedule_length(span: int, images: int, method: str, add_starting_frames: int = 0, add_ending_frames: int = 0) -> int:
    """Frames of frame_schedule's result for a transition (or custom list) of `span` frames, before making it."""
    if not images:
        return span
    if method == "shift batches":
        body = span * (images - 1)
    elif method == "alternate batches":  # pairs there and back, plus one more way when the count is even
        body = 2 * span * ((images + 1) // 2 - 1) + (span if images % 2 == 0 else 0)
    else:
        body = span * images
    return body + add_starting_frames + add_ending_frames


def check_frame_weights(weights: Sequence[float], name: str = "frame_weights") -> list:
    """A per-frame weight list as Apply takes it: finite numbers, at least one."""
    if isinstance(weights, (int, float)):
        weights = [weights]
    out = []
    for w in weights:
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise IPAdapterError(f"{name} must be numbers, got {w!r}.") from None
        if not math.isfinite(w):
            raise IPAdapterError(f"{name} contains {w}; give finite numbers.")
        out.append(w)
    if not out:
        raise IPAdapterError(f"{name} is empty; give at least one weight (or disconnect it).")
    return out


def prompt_schedule(prompt: str, images: int, frames: int, add_starting_frames: int = 0,
                    add_ending_frames: int = 0) -> str:
    """The text prompt-schedule nodes read (`"FRAME": "PROMPT",` one per line), as the widely used pack's Prompt
    Schedule From Weights Strategy writes it: one non-empty line of `prompt` per reference image (the last line
    repeated for more images, extra lines left out), each keyed by the frame where its image starts (`frames`
    per image after the added starting frames: the strategy's setting, as the pack reads it), plus the first
    line at frame 0 when starting frames were added and the last line after the end when ending frames were.
    No lines or no images: the empty text."""
    for name, v in (("images", images), ("frames", frames), ("add_starting_frames", add_starting_frames),
                    ("add_ending_frames", add_ending_frames)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SCHEDULE_FRAMES:
            raise IPAdapterError(f"{name} must be a whole number from 0 to {MAX_SCHEDULE_FRAMES}, got {v!r}.")
    lines = [line for line in str(prompt).split("\n") if line.strip()]
    if not lines or not images:
        return ""
    lines = (lines + [lines[-1]] * images)[:images]
    keyed = [(0, lines[0])] if add_starting_frames else []
    keyed += [(i * frames + add_starting_frames, line) for i, line in enumerate(lines)]
    if add_ending_frames:
        keyed.append((images * frames + add_starting_frames, lines[-1]))
    return "".join(f'"{frame}": "{line}",\n' for frame, line in keyed)
