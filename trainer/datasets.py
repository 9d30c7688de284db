"""Training data: the official JSON list, webdataset tar shards, and resumable, seeded batch order.

Preprocessing is the official one: training image = short side resize to `resolution` (bilinear, PIL) +
centre crop + [-1, 1]; CLIP image = transformers CLIPImageProcessor() defaults. Unreadable or corrupt
images become None and are dropped (and counted) by `collate`, never fatal.

Randomness lives outside the workers: the batch order is a permutation drawn from (seed, epoch), so a
resume skips the consumed batches without loading them and sees the same batches the uninterrupted run
saw; drops are drawn in the training loop from a saved generator.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import re
import tarfile
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from ip_core.text import decode_text, read_text

from .errors import TrainerConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # webdataset members read as the image


# ---------------------------------------------------------------------------------------------- images

def resize_center_crop(img: Image.Image, size: int, floor: bool = False) -> Image.Image:
    """torchvision Resize(size, BILINEAR) + CenterCrop(size) on a PIL image, without torchvision."""
    return resize_crop_box(img, size, floor)[0]


def resize_crop_box(img: Image.Image, size: int, floor: bool = False):
    """Short side resized to `size` (bilinear), centre square crop -> (image, top, left) in resized pixels.

    floor=False rounds the offset as torchvision's CenterCrop (tutorial_train.py); floor=True takes
    delta // 2 as tutorial_train_sdxl.py does (its crop offsets become SDXL's crop time ids)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    if floor:
        top, left = (new_h - size) // 2, (new_w - size) // 2
    else:
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size)), top, left


def train_image_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """[3, size, size] float in [-1, 1] (ToTensor + Normalize([0.5], [0.5]))."""
    return to_unit_range(resize_center_crop(img, size))


def to_unit_range(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).sub_(0.5).div_(0.5).contiguous()


class ClipPreprocessor:
    """transformers CLIPImageProcessor() defaults, as the official dataset (224, bicubic, centre crop)."""

    def __init__(self):
        self.processor = CLIPImageProcessor()

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.processor(images=img, return_tensors="pt").pixel_values[0]


def open_rgb(src) -> Image.Image:
    """Open and fully decode (so truncation is found here, not later), as RGB."""
    with Image.open(src) as im:
        im.load()
        return im.convert("RGB")


def tokenize(tokenizer, texts) -> torch.Tensor:
    return tokenizer(
        texts, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids


# ---------------------------------------------------------------------------------------------- JSON data

EAGER_CHECK = 1000  # entries checked when the file is read; the rest when first used (entry index in the error)


def entry_problem(item) -> Optional[str]:
    """Why a data entry cannot be used, or None."""
    if not isinstance(item, dict):
        return f"is a {type(item).__name__}, not an object"
    for key in ("image_file", "text"):
        if key not in item:
            return f"lacks {key!r}"
        if not isinstance(item[key], str):
            return f"has a {type(item[key]).__name__} as {key!r}, not a string"
    return None


def _entry_error(path: str, index: int, item, problem: str) -> TrainerConfigError:
    return TrainerConfigError(
        f"--data_json_file: entry {index} of {path!r} {problem}: {str(item)[:120]}; every entry must be "
        f'{{"image_file": "<path under --data_root_path>", "text": "<caption>"}}'
    )


def load_json_items(path: str) -> list:
    """Official format: a JSON list of {"image_file": ..., "text": ...}; JSON lines also accepted.

    The first EAGER_CHECK entries are checked here; the others as the loader reaches them (ImageTextDataset)."""
    try:
        raw = read_text(path)
    except UnicodeDecodeError as e:
        raise TrainerConfigError(
            f"--data_json_file: {path!r} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 JSON"
        ) from None
    except OSError as e:
        raise TrainerConfigError(f"--data_json_file: cannot read {path!r} ({e.strerror})") from None
    try:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            try:
                data = [json.loads(line) for line in raw.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                raise TrainerConfigError(f"--data_json_file: {path!r} is neither JSON nor JSON lines ({e})") from None
    except RecursionError:
        raise TrainerConfigError(
            f"--data_json_file: {path!r} is nested too deeply to read; it must be a flat list of "
            f'{{"image_file": ..., "text": ...}} objects'
        ) from None
    if not isinstance(data, list) or not data:
        raise TrainerConfigError(f"--data_json_file: {path!r} must be a non-empty list of {{\"image_file\": ..., \"text\": ...}}")
    for i, item in enumerate(data[:EAGER_CHECK]):
        problem = entry_problem(item)
        if problem:
            raise _entry_error(path, i, item, problem)
    return data


@dataclass
class BadEntry:
    """A data entry found unusable inside a loader worker: raised in the main process (raise_bad_entries),
    where it becomes one clear message instead of a worker traceback."""

    message: str


def raise_bad_entries(batch: dict) -> None:
    if batch.get("bad_entries"):
        raise TrainerConfigError(batch["bad_entries"][0])


class ImageTextDataset(torch.utils.data.Dataset):
    """Map-style dataset over the official JSON items. Items: dict(image, clip_image, input_ids, index), None
    (an unreadable image: skipped and counted) or BadEntry (a malformed entry: stops training)."""

    def __init__(self, items: list, root: str, tokenizer, size: int, source: str = "the data file", tokenizer_2=None):
        self.items = items
        self.tokenizer_2 = tokenizer_2
        self.root = root or ""
        self.tokenizer = tokenizer
        self.size = size
        self.source = source
        self.clip = ClipPreprocessor()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        item = self.items[idx]
        problem = entry_problem(item) if idx >= EAGER_CHECK else None
        if problem:
            return BadEntry(str(_entry_error(self.source, idx, item, problem)))
        try:
            img = open_rgb(os.path.join(self.root, item["image_file"]))
        except Exception:
            return None
        return make_sample(img, item["text"], idx, self.tokenizer, self.size, self.clip, self.tokenizer_2)


def make_sample(img, text, index, tokenizer, size, clip, tokenizer_2=None) -> dict:
    """One training sample. With tokenizer_2 (SDXL, tutorial_train_sdxl.py): the second tokenizer's ids and the
    time ids' parts: original (height, width), crop (top, left) after the short-side resize, target (size, size)."""
    if tokenizer_2 is None:
        return {
            "image": train_image_tensor(img, size),
            "clip_image": clip(img),
            "input_ids": tokenize(tokenizer, text)[0],
            "index": index,
        }
    cropped, top, left = resize_crop_box(img, size, floor=True)
    return {
        "image": to_unit_range(cropped),
        "clip_image": clip(img),
        "input_ids": tokenize(tokenizer, text)[0],
        "input_ids_2": tokenize(tokenizer_2, text)[0],
        "time_ids": torch.tensor([img.size[1], img.size[0], top, left, size, size], dtype=torch.float32),
        "index": index,
    }


def collate(samples: list) -> dict:
    """Stack the readable samples; `skipped` counts the unreadable ones (None); `bad_entries` the malformed."""
    bad = [s.message for s in samples if isinstance(s, BadEntry)]
    good = [s for s in samples if s is not None and not isinstance(s, BadEntry)]
    out = {"skipped": len(samples) - len(good) - len(bad), "size": len(good), "bad_entries": bad}
    if good:
        for k in good[0]:
            vals = [s[k] for s in good]
            out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else torch.tensor(vals)
    return out


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of indices: permutation of range(n) seeded by (seed, epoch), this rank's share, from `start`.

    Ranks get equal counts (indices padded by wrap-around, as DistributedSampler) so DDP steps stay in lock step.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0, shuffle: bool = True):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.start, self.shuffle = rank, world, start, shuffle

    def indices(self) -> list:
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 100003 + int(self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = math.ceil(self.n / self.world) * self.world
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return order[self.rank :: self.world]

    def all_batches(self) -> list:
        idx = self.indices()
        return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    def __iter__(self):
        yield from self.all_batches()[self.start :]

    def __len__(self) -> int:
        return max(0, math.ceil(math.ceil(self.n / self.world) / self.batch_size) - self.start)


def check_split(world: int, items: Optional[int] = None, shards: Optional[int] = None, workers: int = 0) -> None:
    """Data that cannot be split over `world` processes is refused before any model loads.

    A JSON list needs at least one sample per process (a count that is not a multiple of world is fine: the
    sampler repeats up to world - 1 samples per epoch, as torch's DistributedSampler). Shards are split whole over
    processes x dataloader workers, so each of those needs one."""
    if world <= 1:
        return
    if items is not None and items < world:
        raise TrainerConfigError(
            f"--data_json_file has {items} sample(s) for {world} processes: every process needs at least one; "
            f"add data or launch at most {max(items, 1)} process(es)"
        )
    if shards is not None:
        readers = world * max(1, workers)
        if shards < readers:
            raise TrainerConfigError(
                f"--train_shards: {shards} shard(s) for {world} processes x {max(1, workers)} dataloader worker(s) = {readers} "
                f"readers; shards are split whole, so some would read nothing and end every epoch early. Split the data "
                f"into at least {readers} tar files, or lower --dataloader_num_workers / the number of processes"
            )


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return math.ceil(math.ceil(n / world) / batch_size)


# ---------------------------------------------------------------------------------------------- webdataset shards

_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_shards(pattern: str) -> list:
    """'a/{000..012}.tar', 'a/{x,y}.tar', several patterns separated by '::' or whitespace."""
    out = []
    for part in re.split(r"::|\s+", pattern.strip()):
        if part:
            out.extend(_expand_one(part))
    return out


def _expand_one(s: str) -> list:
    m = _BRACE.search(s)
    if not m:
        return [s]
    body, head, tail = m.group(1), s[: m.start()], s[m.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.group(1), rng.group(2)
        width = len(a) if a.startswith("0") else 0
        opts = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        opts = body.split(",")
    return [x for o in opts for x in _expand_one(head + o + tail)]


def _caption_from(name: str, data: bytes) -> Optional[str]:
    if name.endswith(".txt"):
        return decode_text(data, errors="replace").strip()
    if name.endswith(".json"):
        try:
            d = json.loads(data)
        except Exception:
            return None
        for k in ("text", "caption", "prompt"):
            if isinstance(d, dict) and k in d:
                return str(d[k])
    return None


def iter_tar_samples(path: str) -> Iterator[tuple]:
    """(key, image bytes or None, caption or None) per sample key of a webdataset tar (members grouped by key)."""
    key, img, cap = None, None, None
    with tarfile.open(path, "r|*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            k = os.path.join(os.path.dirname(member.name), base.split(".", 1)[0])
            ext = "." + base.split(".", 1)[1].lower() if "." in base else ""
            if k != key:
                if key is not None:
                    yield key, img, cap
                key, img, cap = k, None, None
            fh = tf.extractfile(member)
            data = fh.read() if fh is not None else b""
            if ext in IMAGE_SUFFIXES:
                img = data
            else:
                c = _caption_from(ext, data)
                if c is not None:
                    cap = c
        if key is not None:
            yield key, img, cap


class TarShardDataset(torch.utils.data.IterableDataset):
    """webdataset tar shards, streamed. Shards are split across ranks and workers, shuffled per epoch, with an
    in-worker shuffle buffer; all seeded, so `skip_batches` resumes at the same samples (given the same worker count).
    """

    def __init__(self, shards: list, tokenizer, size: int, seed: int, batch_size: int, rank: int = 0, world: int = 1, shuffle_buffer: int = 1000,
                 tokenizer_2=None):
        self.shards, self.tokenizer, self.size, self.seed = list(shards), tokenizer, size, int(seed)
        self.tokenizer_2 = tokenizer_2
        self.batch_size, self.rank, self.world, self.buffer = batch_size, rank, world, shuffle_buffer
        self.epoch, self.skip_batches = 0, 0
        self.clip = None

    def set_position(self, epoch: int, skip_batches: int) -> None:
        self.epoch, self.skip_batches = int(epoch), int(skip_batches)

    def raw_samples(self, worker: int, num_workers: int) -> Iterator[tuple]:
        order = list(self.shards)
        random.Random(self.seed * 100003 + self.epoch).shuffle(order)
        mine = order[self.rank * num_workers + worker :: self.world * num_workers]
        rng = random.Random((self.seed * 100003 + self.epoch) * 4099 + self.rank * 131 + worker)
        buf = []
        for shard in mine:
            try:
                for s in iter_tar_samples(shard):
                    buf.append(s)
                    if len(buf) >= self.buffer:
                        yield buf.pop(rng.randrange(len(buf)))
            except (tarfile.TarError, OSError):
                # A truncated shard ends early; its readable samples were used.
                continue
        rng.shuffle(buf)
        yield from buf

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.clip is None:
            self.clip = ClipPreprocessor()
        # DataLoader takes batches round-robin from workers: worker w made batches w, w+nw, ... of those consumed.
        mine = len(range(worker, self.skip_batches, nw))
        skip = mine * self.batch_size
        for i, (key, img_bytes, cap) in enumerate(self.raw_samples(worker, nw)):
            if i < skip:
                continue
            if img_bytes is None or cap is None:
                yield None
                continue
            try:
                img = open_rgb(io.BytesIO(img_bytes))
            except Exception:
                yield None
                continue
            yield make_sample(img, cap, -1, self.tokenizer, self.size, self.clip, self.tokenizer_2)
