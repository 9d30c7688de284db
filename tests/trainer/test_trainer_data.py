"""Data: official preprocessing, seeded resumable batch order, shard patterns and tar reading, cache rows."""
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.datasets import EpochBatchSampler, expand_shards, iter_tar_samples, resize_center_crop, train_image_tensor


@pytest.mark.parametrize("size_wh", [(37, 23), (23, 37), (40, 40), (17, 64)])
def test_resize_crop_matches_torchvision(size_wh):
    tv = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, size=(size_wh[1], size_wh[0], 3), dtype=np.uint8))
    ref = tv.Compose([tv.Resize(16, interpolation=tv.InterpolationMode.BILINEAR), tv.CenterCrop(16), tv.ToTensor(), tv.Normalize([0.5], [0.5])])(img)
    assert torch.equal(train_image_tensor(img, 16), ref)
    assert resize_center_crop(img, 16).size == (16, 16)


def test_batch_order_is_seeded_and_resumable():
    full = EpochBatchSampler(10, 3, seed=5, epoch=2).all_batches()
    assert sorted(i for b in full for i in b) == list(range(10)) and [len(b) for b in full] == [3, 3, 3, 1]
    assert list(EpochBatchSampler(10, 3, seed=5, epoch=2, start=2)) == full[2:]
    assert EpochBatchSampler(10, 3, seed=5, epoch=3).all_batches() != full  # reshuffled each epoch
    r0 = EpochBatchSampler(10, 2, seed=1, epoch=0, rank=0, world=2).indices()
    r1 = EpochBatchSampler(10, 2, seed=1, epoch=0, rank=1, world=2).indices()
    assert len(r0) == len(r1) == 5 and sorted(r0 + r1) == list(range(10))


def test_shard_patterns():
    assert expand_shards("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert expand_shards("a-{x,y}-{1..2}.tar") == ["a-x-1.tar", "a-x-2.tar", "a-y-1.tar", "a-y-2.tar"]
    assert expand_shards("a.tar::b.tar") == ["a.tar", "b.tar"]


def test_tar_samples_grouped_by_key(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in [("x/1.jpg", b"IMG1"), ("x/1.txt", b"one"), ("x/2.png", b"IMG2"), ("x/2.json", b'{"caption": "two"}'), ("x/3.txt", b"no image")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    got = list(iter_tar_samples(str(path)))
    assert got == [("x/1", b"IMG1", "one"), ("x/2", b"IMG2", "two"), ("x/3", None, "no image")]


def test_cache_rows_roundtrip(tmp_path):
    from trainer import cache

    w = cache.ChunkWriter(str(tmp_path), rank=0, dtype="float32", chunk_size=3)
    rows = {f: torch.randn(5, 2, 3) for f in cache.FIELDS}
    w.add(**{f: v[:2] for f, v in rows.items()})
    w.add(**{f: v[2:] for f, v in rows.items()})
    w.flush()
    fp = {"version": cache.VERSION, "x": 1}
    cache.write_meta(str(tmp_path), fp, w.written, 2, torch.zeros(4, 8), torch.zeros(1, 6), 0.18215)
    ds = cache.CachedDataset(str(tmp_path))
    assert len(ds) == 5 and cache.check_ready(str(tmp_path), fp)
    for i in range(5):
        for f in cache.FIELDS:
            assert torch.equal(ds[i][f], rows[f][i])
    with pytest.raises(Exception, match="--cache_dir"):
        cache.check_ready(str(tmp_path), {"version": cache.VERSION, "x": 2})


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_split_across_ranks_and_workers_without_repeats(tmp_path, workers):
    from trainer.datasets import TarShardDataset

    shards = []
    for s in range(6):
        path = tmp_path / f"s-{s}.tar"
        with tarfile.open(path, "w") as tf:
            for k in range(3):
                for ext, data in (("png", b"IMG"), ("txt", f"caption {s}-{k}".encode())):
                    info = tarfile.TarInfo(f"{s}-{k}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        shards.append(str(path))
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ds = TarShardDataset(shards, tokenizer=None, size=16, seed=3, batch_size=2, rank=rank, world=2, shuffle_buffer=4)
            ds.set_position(epoch, 0)
            for w in range(workers):
                seen += [key for key, _, _ in ds.raw_samples(w, workers)]
        assert sorted(seen) == sorted(f"{s}-{k}" for s in range(6) for k in range(3))  # every sample once per epoch


def test_data_that_cannot_be_split_over_the_processes_is_refused_with_the_numbers():
    from trainer.datasets import check_split
    from trainer.errors import TrainerConfigError

    check_split(1, items=1)  # one process: anything goes
    check_split(4, items=5)  # not a multiple: the sampler repeats 3 samples per epoch, as DistributedSampler
    with pytest.raises(TrainerConfigError, match="3 sample\\(s\\) for 4 processes.*at most 3 process"):
        check_split(4, items=3)
    check_split(2, shards=4, workers=2)
    with pytest.raises(TrainerConfigError, match="3 shard\\(s\\) for 2 processes x 2 dataloader worker\\(s\\) = 4 readers.*at least 4 tar"):
        check_split(2, shards=3, workers=2)
    with pytest.raises(TrainerConfigError, match="1 shard\\(s\\) for 2 processes x 1 dataloader worker\\(s\\)"):
        check_split(2, shards=1, workers=0)
