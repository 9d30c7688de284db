"""Text files written by Windows Notepad (UTF-8 with a byte-order mark) read wherever the project reads JSON or text:
the trainer's data files, its YAML / TOML / JSON configs, captions in shards, the feature cache's metadata, an
open_clip model config. (Workflow JSON is read by nodes/migrate.py, whose own tests cover it.)"""
import io
import json
import tarfile

import pytest

from trainer.cache import META, read_meta
from trainer.datasets import iter_tar_samples, load_json_items
from trainer.frozen_models import image_encoder_arch
from trainer.train_config import read_config_file

BOM = b"\xef\xbb\xbf"
ITEMS = [{"image_file": "a.png", "text": "caf\u00e9"}, {"image_file": "b.png", "text": "two"}]


@pytest.mark.parametrize("prefix", [b"", BOM])
@pytest.mark.parametrize("lines", [False, True])
def test_data_json_and_json_lines(tmp_path, prefix, lines):
    f = tmp_path / "data.json"
    text = "\n".join(json.dumps(i) for i in ITEMS) if lines else json.dumps(ITEMS)
    f.write_bytes(prefix + text.encode("utf-8"))
    assert load_json_items(str(f)) == ITEMS


@pytest.mark.parametrize("prefix", [b"", BOM])
@pytest.mark.parametrize("suffix, text", [(".yaml", "train_batch_size: 3\n"), (".toml", "train_batch_size = 3\n"),
                                          (".json", '{"train_batch_size": 3}')])
def test_config_files(tmp_path, prefix, suffix, text):
    f = tmp_path / f"c{suffix}"
    f.write_bytes(prefix + text.encode("utf-8"))
    assert read_config_file(str(f)) == {"train_batch_size": 3}


def test_captions_in_shards(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in [("x/1.jpg", b"IMG1"), ("x/1.txt", BOM + b"one"), ("x/2.png", b"IMG2"),
                           ("x/2.json", BOM + b'{"caption": "two"}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert list(iter_tar_samples(str(path))) == [("x/1", b"IMG1", "one"), ("x/2", b"IMG2", "two")]


def test_cache_metadata_and_encoder_config(tmp_path):
    (tmp_path / META).write_bytes(BOM + b'{"fingerprint": {"a": 1}}')
    assert read_meta(str(tmp_path)) == {"fingerprint": {"a": 1}}
    arch = tmp_path / "tower.json"
    arch.write_bytes(BOM + b'{"embed_dim": 8}')
    assert image_encoder_arch(str(arch)) == {"embed_dim": 8}
