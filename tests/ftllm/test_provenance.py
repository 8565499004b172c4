"""Every benchmark result says where, when, how and from which code it was measured."""
import re

from ftllm.provenance import provenance


def test_provenance_names_device_date_command_and_commit():
    meta = provenance(["benchmarks/x.py", "--out", "a b.json"])
    assert meta["device"] and re.match(r"\d{4}-\d\d-\d\dT", meta["date"])
    assert meta["command"] == "python benchmarks/x.py --out 'a b.json'"
    assert meta["code"] is None or re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", meta["code"])
    assert len(meta["loadavg"]) == 3
