#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (idempotent; run from anywhere).

Seeds are small, real inputs: RESP frames as clients send them, records in the engine's
format (engine/FORMAT.md; CRC-32/IEEE = zlib.crc32), protobuf encodings of the KV requests
(proto/proto/kv.proto). The layouts of the fuzz inputs are described in each target's header.
"""
import os
import random
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- resp_parser
def mb(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def resp(ctrl, split, chunk, fill, stream):
    return bytes([ctrl, split, chunk, fill]) + stream


write("resp_parser", "set_multibulk", resp(0, 128, 1, ord("a"), mb(b"SET", b"key", b"value")))
write(
    "resp_parser",
    "pipelined_mixed",
    resp(
        0, 77, 3, 0,
        mb(b"SET", b"a", b"\r\n\r\n") + b"PING\r\n" + b"\r\n\n   \n" + b"*0\r\n"
        + b"set \"a b\" 'c\\'d' \"\\x41\\n\"\n" + mb(b"GET", b"a") + b"*-1\r\n" + b"*-10\r\n",
    ),
)
write("resp_parser", "inline_quoting", resp(0, 200, 0, 0, b"SET \"hello world\" 'it''s' \"\\x00\\xff\\t\" plain\r\n"))
write("resp_parser", "bulk_not_terminated", resp(0, 10, 2, 0, b"*1\r\n$3\r\nfooXY"))
write("resp_parser", "expected_dollar", resp(0, 50, 5, 0, b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"))
write("resp_parser", "binary_bulk", resp(0, 30, 7, 0, mb(b"SET", b"k\r\n", b"\r\n\x00*$\r\n\xff")))
write(
    "resp_parser",
    "replies",
    resp(0, 90, 4, 0,
         b"+OK\r\n-ERR x\r\n:42\r\n:-7\r\n$3\r\nfoo\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n*-1\r\n*0\r\n"),
)
write("resp_parser", "too_big_mbulk_count", resp(0xC0, 255, 0, ord("1"), b"*"))
write("resp_parser", "too_big_inline", resp(0xC0, 0, 200, ord("x"), b"\r\n"))
write("resp_parser", "small_limits", resp(0x3F, 60, 1, 0, mb(b"MSET", b"a", b"1", b"b", b"1234567890") + b"GET a\n"))

# ---------------------------------------------------------------- record_decode
PUT, DELETE, EXPIRE, CLEAR = 1, 2, 3, 4


def record(lsn, epoch, expire, tag, key, value):
    body = struct.pack("<QIQBII", lsn, epoch, expire, tag, len(key), len(value)) + key + value
    return struct.pack("<I", zlib.crc32(body)) + body


write("record_decode", "put", record(42, 7, 1_700_000_000_000, PUT, b"k\x00ey", b"va\r\nlue"))
write("record_decode", "delete", record(1, 1, 0, DELETE, b"key", b""))
write(
    "record_decode",
    "stream",
    record(0, 0, 0, PUT, b"a", b"1") + record(1, 0, 0, PUT, b"b", b"22")
    + record(2, 1, 99, EXPIRE, b"a", b"") + record(3, 1, 0, DELETE, b"b", b"")
    + record(4, 2, 0, CLEAR, b"", b""),
)
write("record_decode", "torn_tail", (record(5, 1, 0, PUT, b"x", b"y" * 40) * 2)[:-3])
write("record_decode", "zeroed", bytes(64))
seg_header = b"SKVLOG\x00\x01" + struct.pack("<QQQ", 0, 0, 0x1234) + bytes(28)
seg_header += struct.pack("<I", zlib.crc32(seg_header))
write("record_decode", "segment_file", seg_header + record(0, 0, 0, PUT, b"key-00001", b"v" * 100))

# ---------------------------------------------------------------- segment_recovery
# The input drives Unstructured choices (ops, then the damage); any bytes are a valid input.
rng = random.Random(20240601)
for n in (32, 96, 256, 600, 1500, 3000):
    write("segment_recovery", "random_%d" % n, bytes(rng.randrange(256) for _ in range(n)))
write("segment_recovery", "mostly_puts", bytes([0x10, 0x01, 0x00, 0x20] * 40))

# ---------------------------------------------------------------- hint_recovery
# The same writes as segment_recovery (common/log.rs), then the choice of hint and damage.
rng = random.Random(20261208)
for n in (64, 256, 600, 1500, 3000):
    write("hint_recovery", "random_%d" % n, bytes(rng.randrange(256) for _ in range(n)))
write("hint_recovery", "mostly_puts", bytes([0x10, 0x01, 0x00, 0x20] * 40))


# ---------------------------------------------------------------- grpc_decode
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def f_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def f_varint(num, v):
    return varint(num << 3) + varint(v)


write("grpc_decode", "get", f_bytes(1, b"user:1"))
write("grpc_decode", "set", f_bytes(1, b"k") + f_bytes(2, b"v" * 10) + f_varint(3, 60_000) + f_varint(4, 3))
write("grpc_decode", "del", f_bytes(1, b"a") + f_bytes(1, b"b") + f_bytes(1, b"") + f_varint(2, 2))
write("grpc_decode", "expire", f_bytes(1, b"k") + f_varint(2, 1500) + f_varint(3, 1))
write("grpc_decode", "ttl", f_bytes(1, b"\x00\xffbin"))
write("grpc_decode", "mget", f_bytes(1, b"k1") + f_bytes(1, b"k2"))
write(
    "grpc_decode",
    "mset",
    f_bytes(1, f_bytes(1, b"k1") + f_bytes(2, b"v1")) + f_bytes(1, f_bytes(1, b"k2") + f_bytes(2, b"")) + f_varint(2, 3),
)
write("grpc_decode", "unknown_fields", f_bytes(1, b"k") + f_varint(15, 7) + f_bytes(99, b"x") + varint(16 << 3 | 5) + b"\x01\x02\x03\x04")
write("grpc_decode", "unknown_enum", f_bytes(1, b"k") + f_varint(4, 42) + f_varint(3, (1 << 64) - 1))
