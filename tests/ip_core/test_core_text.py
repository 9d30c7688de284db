"""ip_core.text: the one text reader; UTF-8 with or without a byte-order mark (Windows Notepad writes one)."""
import pytest

from ip_core.text import decode_text, read_text

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("prefix", [b"", BOM])
def test_read_text_drops_a_leading_bom_only(tmp_path, prefix):
    f = tmp_path / "a.json"
    f.write_bytes(prefix + '{"caf\u00e9": "\ufeff inside stays"}'.encode("utf-8"))
    assert read_text(f) == '{"caf\u00e9": "\ufeff inside stays"}'
    assert decode_text(prefix + b"one") == "one"


def test_read_text_still_refuses_what_is_not_utf8(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(BOM + b"caf\xe9")
    with pytest.raises(UnicodeDecodeError):
        read_text(f)
    assert decode_text(b"caf\xe9", errors="replace") == "caf\ufffd"
