"""Command line: `python -m ip_core inspect FILE... [--json]` and `python -m ip_core example DIR`.

Exit codes (ip_core.errors, the same for every command line of the project): 0 success; 1 an expected failure
(a file that cannot be used, a folder that cannot be written: the message says why and what to do); 2 a bad
command line (argparse); 3 an unexpected internal error (a short message on stderr, the traceback in the log
file it names); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import load_adapter_state_dict, sniff_format
from .config import make_config
from .families import detect_config
from .errors import (EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, IPAdapterError, log_unexpected,
                     unexpected_message)
from .layers import layer_specs

SAFETY = {
    "safetensors": "yes (safetensors: plain tensors, no code)",
    "torch-zip": "yes (torch file read with weights_only=True: tensors only, no code runs)",
    "torch-pickle": "yes (legacy torch pickle read with weights_only=True: tensors only, no code runs)",
}


def inspect_file(path) -> dict:
    """Everything a user wants to know about an adapter file, or why it cannot be used."""
    path = Path(path)
    info = {"file": str(path), "ok": False}
    try:
        try:
            fmt = sniff_format(path) if path.is_file() and path.stat().st_size else "missing or empty"
        except OSError:
            fmt = "unreadable"
        info["format"] = fmt
        sd = load_adapter_state_dict(path)
        info["safe_to_load"] = SAFETY.get(fmt, "no")
        config = detect_config(sd)
    except IPAdapterError as e:
        info["error"] = str(e) if path.name in str(e) else f"{path.name}: {e}"  # layout errors name no file
        info.setdefault("safe_to_load", "refused" if "refused" in str(e) else "n/a")
        return info
    except Exception as e:  # one file's bug must not hide the report on the others
        info["error"] = unexpected_message(f"inspect {path.name}", e, log_unexpected(e, f"python -m ip_core inspect {path}"))
        info.setdefault("safe_to_load", "n/a")
        return info
    params = sum(t.numel() for part in sd.values() for t in part.values())
    dtypes = sorted({str(t.dtype).replace("torch.", "") for part in sd.values() for t in part.values()})
    info.update(
        ok=True,
        variant=config.variant,
        description=config.description,
        base_model=config.base_model_name,
        tokens=config.num_tokens,
        layers=config.num_layers,
        context_dim=config.context_dim,
        parameters=params,
        dtypes=dtypes,
        encoder=config.encoder_name,
        encoder_output=config.encoder_output,
        encoder_width=config.encoder_width,
        encoder_requirement=config.encoder_requirement,
        lora_rank=config.lora_rank,
    )
    if config.token_dim:  # Kolors FaceID-Plus: tokens wider than the context, mapped by the UNet's encoder_hid_proj
        info["token_dim"] = config.token_dim
    if config.is_faceid:
        info["needs_insightface"] = True
        info["needs_clip_vision"] = config.clip_requirement or False
    return info


def _print_text(info: dict) -> None:
    print(info["file"])
    if not info["ok"]:
        print(f"  ERROR: {info['error']}")
        print(f"  safe to load: {info.get('safe_to_load')}")
        return
    print(f"  variant:        {info['description']}")
    dit = info["base_model"] in ("Flux", "SD3.5")  # DiTs: no cross-attention layers, blocks are patched
    layers = "patched blocks" if dit else "cross-attention layers"
    print(f"  base model:     {info['base_model']} (context {info['context_dim']}, {info['layers']} {layers})")
    hid = (f" x {info['token_dim']}, through the model's encoder_hid_proj to {info['context_dim']} (a Kolors UNet)"
           if info.get("token_dim") else "")
    print(f"  tokens:         {info['tokens']}{hid}")
    print(f"  parameters:     {info['parameters']:,} ({', '.join(info['dtypes'])})")
    print(f"  image encoder:  {info['encoder_requirement']}")
    if info.get("needs_insightface"):
        lora = f"rank {info['lora_rank']} on to_q/k/v/out of every attention layer (self and cross)" if info["lora_rank"] else "none"
        print(f"  FaceID LoRA:    {lora}")
        print("  encoders:       InsightFace (buffalo_l or antelopev2)"
              + (f" + CLIP vision ({info['needs_clip_vision']})" if info["needs_clip_vision"] else ", no CLIP vision"))
    print(f"  safe to load:   {info['safe_to_load']}")


EXAMPLES = {
    "ip-adapter_sd15.safetensors": ("base", "sd15", 768, 1024),
    "ip-adapter-plus_sd15.safetensors": ("plus", "sd15", 768, 1280),
    "ip-adapter-full-face_sd15.bin": ("full-face", "sd15", 768, 1280),
}


def write_examples(out_dir) -> list:
    """Random-weight files in the released layouts (for trying `inspect` with no downloads)."""
    import torch

    from .adapter import IPAdapter, save_adapter

    torch.manual_seed(0)
    out = []
    for name, (variant, base, ctx, width) in EXAMPLES.items():
        adapter = IPAdapter(make_config(variant, layer_specs(base), ctx, width)).half()
        out.append(save_adapter(adapter, Path(out_dir) / name))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ip_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="detect the variant of IP-Adapter files and check they load safely")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    e = sub.add_parser("example", help="write random-weight adapter files in the released layouts to DIR")
    e.add_argument("dir")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except IPAdapterError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        print(unexpected_message(f"python -m ip_core {args.command}", e, log_unexpected(e, f"python -m ip_core {args.command}")),
              file=sys.stderr)
        return EXIT_INTERNAL


def _run(args) -> int:
    if args.command == "example":
        try:
            paths = write_examples(args.dir)
        except OSError as e:
            raise IPAdapterError(f"cannot write the example files to {args.dir} ({e.strerror or e}); give a writable folder.") from None
        for path in paths:
            print(path)
        return EXIT_OK
    infos = []
    for f in args.files:
        info = inspect_file(f)
        infos.append(info)
        if not args.json:
            _print_text(info)  # as each file is read, so a long run shows progress
    if args.json:
        print(json.dumps(infos, indent=2))
    return EXIT_OK if all(i["ok"] for i in infos) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
