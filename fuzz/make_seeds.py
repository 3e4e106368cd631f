#!/usr/bin/env python3
"""Writes the seed corpus in seeds/<target>/: a few small valid and invalid inputs.

Input layout (see src/lib.rs): byte 0 sets the limit (max_frame_size = 4 x byte, or
max_protocols = byte % 64), byte 1 the read size (1 + byte), the rest is the wire.
Run from anywhere: python3 fuzz/make_seeds.py
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def frame(proto, payload, flags=0, payload_len=None):
    proto = proto.encode() if isinstance(proto, str) else proto
    n = len(payload) if payload_len is None else payload_len
    return varint(flags) + varint(len(proto)) + proto + varint(n) + payload


def snappy_literal(data):
    """Raw snappy of `data` as one literal (valid for up to 60 bytes)."""
    assert 0 < len(data) <= 60
    return varint(len(data)) + bytes([(len(data) - 1) << 2]) + data


def name_list(names, count=None):
    out = varint(len(names) if count is None else count)
    for n in names:
        n = n.encode() if isinstance(n, str) else n
        out += varint(len(n)) + n
    return out


FRAMES = {
    "one_frame": bytes([64, 255]) + frame("/a/1", b"hello"),
    "two_frames_one_byte_reads": bytes([64, 0]) + frame("/a", b"x" * 10) + frame("/b", b""),
    "empty_frame": bytes([0, 7]) + frame("", b""),
    "frame_at_limit": bytes([4, 3]) + frame("/l", b"1234567890123456"),
    "frame_one_past_limit": bytes([4, 3]) + frame("/l", b"12345678901234567"),
    "compressed": bytes([64, 255]) + frame("/z", snappy_literal(b"abcabcabc"), flags=1),
    "compressed_corrupt": bytes([64, 255]) + frame("/z", b"\x09\xff\x00", flags=1),
    "compressed_claims_4gib": bytes([64, 255])
    + frame("/z", varint(0xFFFFFFFF) + b"\x00", flags=1),
    "unknown_flags": bytes([64, 255]) + frame("/a", b"", flags=2),
    "protocol_257": bytes([64, 255]) + varint(0) + varint(257) + b"p" * 257 + varint(0),
    "protocol_not_utf8": bytes([64, 255]) + frame(b"\xff\xfe", b"x"),
    "length_4gib": bytes([255, 255]) + frame("/a", b"", payload_len=1 << 32),
    "truncated": bytes([64, 1]) + frame("/a", b"hello")[:-2],
    "non_minimal_varint": bytes([64, 255]) + b"\x80\x00" + varint(0) + varint(0),
    "frame_then_garbage": bytes([64, 5]) + frame("/a", b"ok") + b"\xff\xff\xff",
}

LISTS = {
    "two_names": bytes([8, 255]) + name_list(["/chain/1/consensus/1", "/chain/1/sync/1"]),
    "two_names_one_byte_reads": bytes([8, 0]) + name_list(["/a", "/b/c"]),
    "empty_list": bytes([8, 255]) + name_list([]),
    "too_many": bytes([2, 255]) + name_list(["/a", "/b", "/c"]),
    "count_4gib": bytes([63, 255]) + varint(1 << 32),
    "empty_name": bytes([8, 255]) + name_list([""]),
    "name_256": bytes([8, 255]) + name_list(["n" * 256]),
    "name_257": bytes([8, 255]) + name_list(["n" * 257]),
    "name_not_utf8": bytes([8, 255]) + name_list([b"\xff\xfe"]),
    "truncated": bytes([8, 3]) + name_list(["/abc", "/def"])[:-2],
    "non_minimal_varint": bytes([8, 255]) + b"\x81\x00" + b"a",
}

for target, seeds in (("frame_decoder", FRAMES), ("exchange_decoder", LISTS)):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {d}")
