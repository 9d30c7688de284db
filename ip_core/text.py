"""Reading text files (JSON, YAML, TOML, captions): UTF-8 with or without a byte-order mark, since Windows
Notepad saves UTF-8 with one and JSON / TOML parsers refuse it. One reader for the package and the trainer."""
from __future__ import annotations

ENCODING = "utf-8-sig"  # UTF-8; a leading BOM is dropped (files this package writes carry none)


def read_text(path) -> str:
    """The file's text. OSError and UnicodeDecodeError reach the caller, which names the file and the remedy."""
    with open(path, "r", encoding=ENCODING) as fh:
        return fh.read()


def decode_text(data: bytes, errors: str = "strict") -> str:
    """Bytes read some other way (a member of a tar archive) as text, as read_text reads a file."""
    return data.decode(ENCODING, errors=errors)
