"""Reading and writing adapter files without ever running code from them, within a memory budget.

Formats are recognised from the bytes, not the extension (renamed files are common): safetensors, the
torch zip format, and legacy torch pickles. The file is opened once and that file object is what the
readers get, so no library picks a reader from the suffix (torch.load does for ".safetensors" paths).
Pickles go through torch.load(weights_only=True), which only rebuilds tensors and plain containers and
refuses anything else before it can run.

Before anything is unpickled, the file is measured against a budget (see the limits below): its size, the
zip archive's declared uncompressed sizes, the pickle's length and opcode count, and the storage sizes a
legacy pickle declares. So a small file cannot make the reader allocate much more than its own size.
Then every layout is checked (keys are strings, values tensors, parts are dicts), and every adapter weight
must be a float (16/32/64-bit, bfloat16) with no NaN or infinity.
"""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import torch

from .errors import AdapterFileError, ForeignFileError, IPAdapterError

PREFIX_ALIASES = {
    "image_proj.": "image_proj",
    "ip_adapter.": "ip_adapter",
    # Some third-party exporters name the two halves after the official training wrapper's attributes.
    "image_proj_model.": "image_proj",
    "adapter_modules.": "ip_adapter",
    "ip_adapter_proj_model.": "image_proj",  # XLabs Flux
}
# XLabs Flux block weights, renamed as diffusers' loader does: double_blocks.{i}.processor.
# ip_adapter_double_stream_{k,v}_proj.{weight,bias} -> ip_adapter {i}.to_{k,v}_ip.{weight,bias}.
XLABS_BLOCK_KEY = re.compile(r"^double_blocks\.(\d+)\.processor\.ip_adapter_double_stream_([kv])_proj\.(weight|bias)$")

# Limits (documented in the README's Safety section). The largest released file a reader here meets is an
# OpenCLIP ViT-bigG .bin (10 GB); real pickles are a few hundred KB with ~30 opcodes per tensor.
MAX_FILE_BYTES = 16 * 1024**3
MAX_EXPANSION = 2  # what a file may unpack to (zip entries, tensors viewing shared data): 2x its size ...
EXPANSION_SLACK = 1024**2  # ... plus 1 MiB, so tiny compressed files stay readable
MAX_PICKLE_BYTES = 64 * 1024**2
MAX_PICKLE_OPS = 500_000
MAX_SAFETENSORS_HEADER = 64 * 1024**2
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
_REMEDY = "download it again"

# Other model files that end up where adapters belong, told apart by their key names (first match wins:
# checkpoints hold text encoders, OpenCLIP files hold a text tower, LoRAs name the layers they change).
# kind -> (what to call it, key prefixes, key substrings).
FOREIGN_KINDS = {
    "checkpoint": ("a model checkpoint (UNet, VAE and text encoder in one file)",
                   ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner."), ()),
    "lora": ("a LoRA", ("lora_unet_", "lora_te", "lycoris_"), (".lora_up.", ".lora_down.", ".lora_A.", ".lora_B.", ".lora.up.", ".lora.down.")),
    "controlnet": ("a ControlNet", ("control_model.", "input_hint_block.", "controlnet_cond_embedding."), ()),
    "clip_vision": ("a CLIP vision model (an image encoder)", ("vision_model.", "visual.", "visual_projection."), ()),
    "vae": ("a VAE", ("encoder.conv_in.", "decoder.conv_in.", "encoder.down.", "decoder.up."), ()),
    "diffusion_model": ("a diffusion model (UNet) on its own", ("input_blocks.", "middle_block.", "down_blocks.", "conv_in."), ()),
    "text_encoder": ("a text encoder", ("text_model.", "transformer.text_model.", "encoder.block."), ()),
}


def foreign_kind(keys) -> Optional[str]:
    """Which FOREIGN_KINDS entry a set of weight names belongs to, or None."""
    keys = [k for k in keys if isinstance(k, str)]
    for kind, (_, prefixes, parts) in FOREIGN_KINDS.items():
        if any(k.startswith(prefixes) or any(p in k for p in parts) for k in keys):
            return kind
    return None


def _foreign_file_error(path: Path, flat: dict) -> Optional[ForeignFileError]:
    inner = flat.get("state_dict")  # training checkpoints wrap their weights
    kind = foreign_kind(inner if isinstance(inner, dict) else flat)
    if kind is None:
        return None
    return ForeignFileError(
        f"{path.name}: this file is {FOREIGN_KINDS[kind][0]}, not an IP-Adapter "
        f"({len(flat)} weights such as {', '.join(sorted(map(str, flat))[:3])}). Load it where that kind of model is "
        "loaded, and give an IP-Adapter file (image_proj and ip_adapter weights) here.",
        kind,
    )


def _budget(size: int) -> int:
    return MAX_EXPANSION * size + EXPANSION_SLACK


def sniff_format(path_or_file) -> str:
    """'safetensors', 'torch-zip', 'torch-pickle' or 'unknown', from the file's first bytes."""
    if hasattr(path_or_file, "read"):
        pos = path_or_file.tell()
        head = path_or_file.read(16)
        path_or_file.seek(pos)
    else:
        with open(path_or_file, "rb") as f:
            head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:1] == b"\x80":
        return "torch-pickle"
    return "unknown"


# ---------------------------------------------------------------------------------------------- budgets


class _BoundedReader:
    """A read-only view of a stream that refuses any read past `limit` bytes (a pickle's declared string
    lengths are checked before anything allocates them)."""

    def __init__(self, f, limit: int, what: str):
        self.f, self.remaining, self.what = f, limit, what

    def read(self, n=-1):
        if n is None or n < 0 or n > self.remaining:
            raise AdapterFileError(f"{self.what} declares more data than the file holds ({n} bytes); the file is corrupt: {_REMEDY}.")
        data = self.f.read(n)
        self.remaining -= len(data)
        return data

    def readline(self):
        line = self.f.readline(self.remaining)
        self.remaining -= len(line)
        return line


def _scan_pickle(f, name: str, what: str, limit: int) -> list:
    """Walk one pickle's opcodes without building anything: count them, and return its persistent ids.

    A tiny stack machine over pickletools' opcode table: containers stay opaque (None); only strings,
    numbers, globals and tuples keep values, which is what torch's persistent ids are made of.
    """
    stack, marks, memo, pids = [], [], {}, []
    ops = 0
    reader = _BoundedReader(f, limit, f"{name}: {what}")
    try:
        for op, arg, _ in pickletools.genops(reader):
            ops += 1
            if ops > MAX_PICKLE_OPS:
                raise AdapterFileError(
                    f"{name}: {what} has more than {MAX_PICKLE_OPS:,} pickle operations (a real weights file has a few "
                    f"thousand); refused before unpickling so it cannot exhaust memory. Use a .safetensors file."
                )
            code = op.name
            if code == "STOP":
                break
            if code == "MARK":
                marks.append(len(stack))
            elif code in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif code == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif code in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif code == "GLOBAL":
                stack.append(("global", arg))
            elif code == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(("global", f"{module} {attr}"))
            elif code == "TUPLE":
                at = marks.pop()
                items = tuple(stack[at:])
                del stack[at:]
                stack.append(items)
            elif code in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(code[-1])
                if len(stack) < n:
                    raise IndexError("stack underflow")
                items = tuple(stack[len(stack) - n:])
                del stack[len(stack) - n:]
                stack.append(items)
            elif code == "BINPERSID":
                pids.append(stack.pop())
                stack.append(None)
            elif code == "PERSID":
                pids.append(arg)
                stack.append(None)
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    at = marks.pop()
                    del stack[at:]
                    keep = before.index(pickletools.markobject)
                else:
                    keep = len(before)
                if keep:
                    if len(stack) < keep:
                        raise IndexError("stack underflow")
                    del stack[len(stack) - keep:]
                pushed = len(op.stack_after)
                stack.extend([arg if arg is not None and pushed == 1 and not before else None] * pushed)
        else:
            raise ValueError("the pickle ends before its STOP opcode")
    except IPAdapterError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, EOFError, UnicodeDecodeError, struct.error, OSError,
            zipfile.BadZipFile, zlib.error) as e:
        raise AdapterFileError(f"{name}: {what} is not a valid pickle ({str(e)[:200]}); the file is truncated or corrupt: {_REMEDY}.") from None
    return stack, pids


_STORAGE_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
}


def _check_zip_budget(f, size: int, name: str) -> None:
    """The archive's declared uncompressed sizes against the file size, then the pickle inside."""
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
            declared = sum(i.file_size for i in infos)
            if declared > _budget(size):
                raise AdapterFileError(
                    f"{name}: the archive declares {declared:,} bytes uncompressed in a {size:,}-byte file (more than "
                    f"{MAX_EXPANSION}x its size): refused before unpacking, it could exhaust memory (a compression bomb, or a "
                    f"repacked file). torch writes these archives uncompressed: save it again with torch.save, or use a .safetensors file."
                )
            pickles = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
            if not pickles:
                raise AdapterFileError(f"{name}: a zip archive without a torch data.pkl; not a torch file. Use an adapter .safetensors or .bin file.")
            info = pickles[0]
            if info.file_size > MAX_PICKLE_BYTES:
                raise AdapterFileError(
                    f"{name}: its pickle is {info.file_size:,} bytes (a real weights file's is well under 1 MB, the limit is "
                    f"{MAX_PICKLE_BYTES:,}); refused before unpickling. Use a .safetensors file."
                )
            with z.open(info) as pf:
                _scan_pickle(pf, name, "the archive's data.pkl", info.file_size)
    except IPAdapterError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, NotImplementedError, RuntimeError, struct.error) as e:
        raise AdapterFileError(f"{name}: a damaged zip archive ({str(e)[:200]}); the file is truncated or corrupt: {_REMEDY}.") from None
    finally:
        f.seek(0)


def _check_legacy_budget(f, size: int, name: str) -> None:
    """A legacy torch file is five pickles, then the storages' bytes; the storages it declares must fit in the rest."""
    try:
        magic, _ = _scan_pickle(f, name, "the file", min(size, MAX_PICKLE_BYTES))
        if magic != [_TORCH_LEGACY_MAGIC]:
            raise AdapterFileError(
                f"{name}: a pickle, but not a torch weights file (no torch magic number); nothing in it was unpickled. "
                "Use the adapter's .safetensors or .bin release."
            )
        for what in ("protocol version", "system info"):
            _scan_pickle(f, name, f"the {what} pickle", min(size - f.tell(), MAX_PICKLE_BYTES))
        _, pids = _scan_pickle(f, name, "the main pickle", min(size - f.tell(), MAX_PICKLE_BYTES))
        _scan_pickle(f, name, "the storage list", min(size - f.tell(), MAX_PICKLE_BYTES))
        declared = {}
        for pid in pids:
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise AdapterFileError(f"{name}: an unknown kind of stored object ({str(pid)[:80]}); not a torch weights file: {_REMEDY}.")
            storage_type, key, numel = pid[1], pid[2], pid[4]
            type_name = storage_type[1].split(" ")[-1] if isinstance(storage_type, tuple) and len(storage_type) == 2 else ""
            if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
                raise AdapterFileError(f"{name}: a storage declares {numel!r} elements; the file is corrupt: {_REMEDY}.")
            declared[str(key)] = numel * _STORAGE_BYTES.get(type_name, 16)
        rest = size - f.tell()
        if sum(declared.values()) > rest:
            raise AdapterFileError(
                f"{name}: the file declares {sum(declared.values()):,} bytes of tensor data but holds only {rest:,} after "
                f"its pickle; refused before allocating. It is truncated or corrupt: {_REMEDY}."
            )
    finally:
        f.seek(0)


def _walk_tensors(data, name: str, limit: int) -> None:
    """Every tensor the pickle built, materialised, must fit the budget (stride tricks can make a view of a
    tiny storage claim terabytes)."""
    seen, todo, total = set(), [data], 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo.extend(obj)
    if total > limit:
        raise AdapterFileError(
            f"{name}: its tensors would take {total:,} bytes in memory, more than {MAX_EXPANSION}x the file's size "
            "(views that repeat a little data); refused. Save the weights as plain contiguous tensors (save_file / torch.save "
            "of .contiguous() tensors)."
        )


# ---------------------------------------------------------------------------------------------- readers


def _read_safetensors(path: Path, size: int) -> dict:
    from safetensors.torch import load_file

    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > min(MAX_SAFETENSORS_HEADER, size - 8):
        raise AdapterFileError(
            f"{path.name}: its safetensors header claims {header_len:,} bytes in a {size:,}-byte file; the file is truncated or corrupt: {_REMEDY}."
        )
    try:
        # The format was read from the bytes above; load_file reads the header and memory-maps the data.
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError is not importable under one stable name across versions
        raise AdapterFileError(
            f"{path.name}: not a readable safetensors file ({str(e)[:300]}). It is probably truncated or corrupt: {_REMEDY}."
        ) from None


def _read_pickle(f, path: Path, safe_alternative: str) -> object:
    try:
        # A file object, never the path: torch.load picks safetensors from a ".safetensors" suffix.
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if "weights only" not in str(e).lower():
            raise AdapterFileError(f"{path.name}: the file is truncated or corrupt ({first}); {_REMEDY}.") from None
        raise AdapterFileError(
            f"{path.name}: refused to load. The pickle holds objects other than tensors and plain containers, "
            f"which could run code, so nothing in it was executed ({first}). "
            f"Use {safe_alternative}, or convert the file where you trust it."
        ) from None
    except MemoryError:
        raise AdapterFileError(f"{path.name}: not enough memory to read it ({path.stat().st_size:,} bytes); close other programs or use a smaller file.") from None
    except Exception as e:  # whatever torch's reader trips on, the file's bytes are at fault
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise AdapterFileError(f"{path.name}: the file is truncated or corrupt ({first}); {_REMEDY}.") from None


def read_tensor_file(path, safe_alternative: str = "the .safetensors release of this adapter"):
    """(format, contents) of a weights file, read without running code, within the budget; every failure names the file.

    safe_alternative: what to use instead when a pickle is refused.
    """
    path = Path(path)
    if path.is_dir():
        raise AdapterFileError(f"{path}: a folder, not a file; give the weights file inside it.")
    if not path.is_file():
        raise AdapterFileError(f"{path}: no such file. Check the path.")
    try:
        return _read_checked(path, safe_alternative)
    except OSError as e:  # permissions, a file removed while reading, I/O errors
        raise AdapterFileError(f"{path.name}: cannot be read ({e.strerror or e}); check the file and its permissions.") from None


def _read_checked(path: Path, safe_alternative: str):
    size = path.stat().st_size
    if size == 0:
        raise AdapterFileError(f"{path.name}: the file is empty (an interrupted download?); {_REMEDY}.")
    if size > MAX_FILE_BYTES:
        raise AdapterFileError(
            f"{path.name}: {size:,} bytes, over the {MAX_FILE_BYTES // 1024**3} GiB limit for one weights file (the largest "
            "released CLIP vision file is about 10 GB); not an adapter or image encoder file."
        )
    with open(path, "rb") as f:
        fmt = sniff_format(f)
        if fmt == "safetensors":
            return fmt, _read_safetensors(path, size)
        if fmt == "torch-zip":
            _check_zip_budget(f, size, path.name)
        elif fmt == "torch-pickle":
            _check_legacy_budget(f, size, path.name)
        else:
            raise AdapterFileError(
                f"{path.name}: unrecognised file format (neither safetensors nor a torch file); "
                f"it may be truncated, an HTML error page, or another kind of file. {_REMEDY[0].upper() + _REMEDY[1:]}."
            )
        data = _read_pickle(f, path, safe_alternative)
    _walk_tensors(data, path.name, _budget(size))
    return fmt, data


# ---------------------------------------------------------------------------------------------- layouts


def _check_keys(mapping: dict, name: str, where: str) -> None:
    bad = [k for k in mapping if not isinstance(k, str)]
    if bad:
        raise AdapterFileError(
            f"{name}: {where} has a key {bad[0]!r} of type {type(bad[0]).__name__}; weight names must be strings "
            "such as 'image_proj.proj.weight'. The file is not an IP-Adapter file: use one in the released layout."
        )


def split_prefixed(flat: dict, path: Path) -> dict:
    _check_keys(flat, path.name, "the file")
    out = {"image_proj": {}, "ip_adapter": {}}
    unknown = []
    for key, value in flat.items():
        xlabs = XLABS_BLOCK_KEY.match(key) if isinstance(key, str) else None
        if xlabs:
            out["ip_adapter"][f"{xlabs.group(1)}.to_{xlabs.group(2)}_ip.{xlabs.group(3)}"] = value
            continue
        for prefix, part in PREFIX_ALIASES.items():
            if key.startswith(prefix):
                out[part][key[len(prefix):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        foreign = _foreign_file_error(path, flat) if len(unknown) == len(flat) else None
        if foreign is not None:
            raise foreign
        sample = ", ".join(sorted(map(str, unknown))[:5])
        raise AdapterFileError(
            f"{path.name}: not an IP-Adapter file: {len(unknown)} of {len(flat)} keys have neither an image_proj. "
            f"nor an ip_adapter. prefix (e.g. {sample}). Use an IP-Adapter file (image_proj and ip_adapter weights)."
        )
    return out


def check_weights(tensors: dict, name: str, prefix: str = "") -> None:
    """Every weight a float tensor (fp16/bf16/fp32/fp64) with only finite values, or a refusal naming it."""
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise AdapterFileError(f"{name}: {prefix}{key} is a {type(t).__name__}, not a tensor; the file is not a weights file for this. Use the original release.")
        if t.dtype not in FLOAT_DTYPES:
            raise AdapterFileError(
                f"{name}: {prefix}{key} holds {str(t.dtype).replace('torch.', '')} values; weights must be float16, bfloat16, "
                "float32 or float64 (quantised, integer, boolean, complex and fp8 files are not supported). Use the original release."
            )
    for key, t in tensors.items():
        flat = t.detach().reshape(-1) if t.is_contiguous() else t.detach().contiguous().reshape(-1)
        step = 1 << 22  # bounded temporaries, whatever the tensor's size
        for start in range(0, flat.numel(), step):
            if not torch.isfinite(flat[start:start + step]).all():
                raise AdapterFileError(
                    f"{name}: {prefix}{key} contains NaN or infinite values (a diverged training run or a damaged file); "
                    "use a checkpoint from before the problem, or download it again."
                )


def _check_parts(sd: dict, path: Path) -> dict:
    for part in ("image_proj", "ip_adapter"):
        _check_keys(sd[part], path.name, part)
        check_weights(sd[part], path.name, f"{part}.")
    if not sd["image_proj"] and not sd["ip_adapter"]:
        raise AdapterFileError(f"{path.name}: the file holds no IP-Adapter weights; use an IP-Adapter file.")
    return sd


def load_adapter_state_dict(path) -> dict:
    """{"image_proj": {...}, "ip_adapter": {...}} from a .safetensors or pickle file, safely.

    Guarantees: string keys, float tensors with finite values; the layout itself is checked by detect_config.
    """
    path = Path(path)
    fmt, data = read_tensor_file(path)
    if fmt == "safetensors":
        return _check_parts(split_prefixed(data, path), path)
    if not isinstance(data, dict):
        raise AdapterFileError(f"{path.name}: holds a {type(data).__name__}, not a dict of weights; not an IP-Adapter file. Use an IP-Adapter file.")
    _check_keys(data, path.name, "the file")
    # nested files name the two halves as flat files prefix them (Kolors' ipa-faceid-plus.bin: adapter_modules)
    parts = {prefix[:-1]: part for prefix, part in PREFIX_ALIASES.items()}
    if any(name in data for name in parts):
        extra = sorted(set(data) - set(parts))
        if extra:
            raise AdapterFileError(f"{path.name}: unexpected top-level entries {extra[:5]} beside image_proj / ip_adapter; use an IP-Adapter file in the released layout.")
        sd = {"image_proj": {}, "ip_adapter": {}}
        for name, part in parts.items():
            value = data.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise AdapterFileError(
                    f"{path.name}: {name} is a {type(value).__name__}, not a dict of named tensors; the file is not in the "
                    "released layout. Use the original release, or save the weights as {name: tensor} dicts."
                )
            if sd[part]:
                raise AdapterFileError(f"{path.name}: two top-level entries hold the {part} weights ({sorted(n for n in data if parts[n] == part)}); the file mixes two adapters: download it again.")
            sd[part] = dict(value)
        return _check_parts(sd, path)
    return _check_parts(split_prefixed(data, path), path)


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 (and writers may recreate the file): give it the mode open() would (0666 less the umask)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_adapter_state_dict(sd: dict, path, format: Optional[str] = None) -> Path:
    """Write the released layout: flat prefixed safetensors (default) or the nested .bin dict.

    Tensors are cloned contiguous so nothing shares storage (a shared tensor is what makes some savers
    silently drop weights). The write is atomic: a crash never leaves half a file under the final name.
    """
    path = Path(path)
    if format is None:
        format = "bin" if path.suffix in (".bin", ".pt", ".pth") else "safetensors"
    if format not in ("safetensors", "bin"):
        raise ValueError(f"unknown format {format!r}: use 'safetensors' or 'bin'")
    clean = {
        part: {k: v.detach().to("cpu").contiguous().clone() for k, v in sd[part].items()} for part in ("image_proj", "ip_adapter")
    }
    if format == "safetensors":
        from safetensors.torch import save_file

        flat = {f"{part}.{k}": v for part in ("image_proj", "ip_adapter") for k, v in clean[part].items()}
        atomic_write(path, lambda tmp: save_file(flat, tmp, metadata={"format": "pt"}))
    else:
        atomic_write(path, lambda tmp: torch.save(clean, tmp))
    return path
