"""The cache pass: run the frozen VAE, image encoder and text encoder once, store their outputs, train from them.

Stored per sample: the VAE posterior's mean and log-variance (the latent is *sampled anew each step* from
them, exactly as vae.encode(x).latent_dist.sample() would), the encoder features the adapter consumes
(image_embeds or penultimate hidden states) and the caption's text embeddings. Plus the two unconditional
values the drops need (empty-string text embedding, "no image" features).

Layout: cache_dir/chunk-r{rank}-{k}/{latent_mean,latent_logvar,features,text_embeds}.npy (plain .npy,
read with allow_pickle=False and memory-mapped) and cache_dir/meta.json, written last by the main process.
A cache whose fingerprint (models, resolution, encoder output, data, dtype) differs from the run's is refused.
"""
from __future__ import annotations

import bisect
import json
import os
import shutil

import numpy as np
import torch

from ip_core.text import read_text

from .datasets import expand_shards
from .errors import TrainerConfigError

FIELDS = ("latent_mean", "latent_logvar", "features", "text_embeds")
META = "meta.json"
VERSION = 1


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
        return [os.path.abspath(path), st.st_size, int(st.st_mtime)]
    except OSError:
        return [path]


def fingerprint(cfg, adapter_config) -> dict:
    data = _stat(cfg.data_json_file) if cfg.data_json_file else sorted(_stat_list(cfg.train_shards))
    return {
        "version": VERSION,
        "model": _stat(cfg.pretrained_model_name_or_path),
        "image_encoder": _stat(cfg.image_encoder_path),
        "resolution": cfg.resolution,
        "encoder_output": adapter_config.encoder_output,
        "encoder_width": adapter_config.encoder_width,
        "data": data,
        "data_root_path": os.path.abspath(cfg.data_root_path) if cfg.data_root_path else "",
        "cache_dtype": cfg.cache_dtype,
    }


def _stat_list(pattern: str) -> list:
    return [_stat(s) for s in expand_shards(pattern)]


def read_meta(cache_dir: str):
    path = os.path.join(cache_dir, META)
    if not os.path.isfile(path):
        return None
    return json.loads(read_text(path))


def check_ready(cache_dir: str, fp: dict) -> bool:
    """True: a complete cache for this run exists. False: none yet. Raises on a cache of something else."""
    meta = read_meta(cache_dir)
    if meta is None:
        return False
    if meta.get("fingerprint") != json.loads(json.dumps(fp)):
        diff = sorted(k for k in set(fp) | set(meta.get("fingerprint", {})) if meta.get("fingerprint", {}).get(k) != json.loads(json.dumps(fp)).get(k))
        raise TrainerConfigError(
            f"--cache_dir: {cache_dir!r} holds a cache of a different setup (differs in {diff}); "
            f"give a new --cache_dir, or delete this one to rebuild it"
        )
    return True


class ChunkWriter:
    """Appends rows; every `chunk_size` rows writes one chunk folder atomically (temp name + os.replace)."""

    def __init__(self, cache_dir: str, rank: int, dtype: str, chunk_size: int = 1024):
        self.dir, self.rank, self.dtype, self.chunk_size = cache_dir, rank, np.dtype(dtype), chunk_size
        self.rows = {f: [] for f in FIELDS}
        self.k = 0
        self.written = []

    def add(self, **batch) -> None:
        for f in FIELDS:
            self.rows[f].append(batch[f].detach().float().cpu().numpy().astype(self.dtype))
        if sum(len(a) for a in self.rows[FIELDS[0]]) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        n = sum(len(a) for a in self.rows[FIELDS[0]])
        if n == 0:
            return
        name = f"chunk-r{self.rank}-{self.k:05d}"
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        for f in FIELDS:
            np.save(os.path.join(tmp, f + ".npy"), np.concatenate(self.rows[f]), allow_pickle=False)
            self.rows[f] = []
        final = os.path.join(self.dir, name)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.written.append([name, n])
        self.k += 1


def write_meta(cache_dir: str, fp: dict, chunks: list, skipped: int, empty_text, uncond_features, scaling_factor: float) -> None:
    np.save(os.path.join(cache_dir, "empty_text.npy"), empty_text.float().cpu().numpy(), allow_pickle=False)
    np.save(os.path.join(cache_dir, "uncond_features.npy"), uncond_features.float().cpu().numpy(), allow_pickle=False)
    meta = {
        "fingerprint": fp,
        "chunks": sorted(chunks),
        "num_samples": int(sum(n for _, n in chunks)),
        "skipped_images": int(skipped),
        "vae_scaling_factor": float(scaling_factor),
    }
    tmp = os.path.join(cache_dir, META + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(tmp, os.path.join(cache_dir, META))


def clear_partial(cache_dir: str) -> None:
    """A cache pass that was killed leaves chunks and no meta: start it over."""
    if os.path.isdir(cache_dir) and read_meta(cache_dir) is None:
        for name in os.listdir(cache_dir):
            if name.startswith(("chunk-", ".chunk-")):
                shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)


class CachedDataset(torch.utils.data.Dataset):
    """Rows of a finished cache. Memory-mapped .npy (allow_pickle=False): workers share the page cache."""

    def __init__(self, cache_dir: str):
        meta = read_meta(cache_dir)
        if meta is None:
            raise TrainerConfigError(f"--cache_dir: {cache_dir!r} has no finished cache ({META} missing); run the cache pass")
        self.dir = cache_dir
        self.meta = meta
        self.chunks = [name for name, _ in meta["chunks"]]
        self.offsets = np.cumsum([0] + [n for _, n in meta["chunks"]]).tolist()
        self._open = {}
        if self.offsets[-1] == 0:
            raise TrainerConfigError(f"--cache_dir: {cache_dir!r} holds no samples (all images unreadable?)")

    def __len__(self) -> int:
        return self.offsets[-1]

    def _arrays(self, c: int) -> dict:
        if c not in self._open:
            base = os.path.join(self.dir, self.chunks[c])
            self._open[c] = {f: np.load(os.path.join(base, f + ".npy"), mmap_mode="r", allow_pickle=False) for f in FIELDS}
        return self._open[c]

    def __getitem__(self, i: int) -> dict:
        c = bisect.bisect_right(self.offsets, i) - 1
        arrs = self._arrays(c)
        row = i - self.offsets[c]
        out = {f: torch.from_numpy(np.array(arrs[f][row])) for f in FIELDS}
        out["index"] = i
        return out

    def __getstate__(self):  # memmaps are reopened in each worker
        d = dict(self.__dict__)
        d["_open"] = {}
        return d

    def uncond(self):
        empty = torch.from_numpy(np.load(os.path.join(self.dir, "empty_text.npy"), allow_pickle=False))
        feats = torch.from_numpy(np.load(os.path.join(self.dir, "uncond_features.npy"), allow_pickle=False))
        return empty, feats
