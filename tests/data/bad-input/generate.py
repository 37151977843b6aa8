"""Writes the bad-input corpus: one file per record value, and cases.jsonl
with each record's topic, key, headers and expected outcome.

    python3 tests/data/bad-input/generate.py

The files are committed; this script documents how they were made (and
remakes them byte for byte). tests/corpus.rs feeds them through the real
broker; the fuzz targets use them as seeds. Outcomes: a dead-letter reason code (README "Bad input")
(the record must be dead-lettered with it), or "ok" (processed),
"unknown_type" (accepted and counted, no effect), "duplicate" (skipped as
already applied). The corpus test sets input.max_record_bytes = 4096 so the
oversized case stays small.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
cases = []


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 1:
        return key + payload
    return key + varint(len(payload)) + payload


def s(number, text):
    return field(number, 2, text if isinstance(text, bytes) else text.encode())


def click_pb(event_id, customer, kind, ts=None):
    out = s(1, event_id) + s(2, customer) + s(3, kind)
    if ts is not None:
        out += field(4, 0, ts)
    return out


def purchase_pb(event_id, customer, kind, amount):
    return s(1, event_id) + s(2, customer) + s(3, kind) + field(6, 1, struct.pack("<d", amount))


def confluent(message, magic=0):
    return bytes([magic]) + struct.pack(">I", 42) + b"\x00" + message


PB = {"content-type": "application/x-protobuf"}


def case(name, value, expect, topic="clickstream", key="", headers=None, why=""):
    """key "" means: the customer id this case uses, c-<name>."""
    ext = "json" if not (headers or {}).get("content-type", "").endswith("protobuf") else "bin"
    file = f"{len(cases) + 1:02d}-{name}.{ext}"
    with open(os.path.join(HERE, file), "wb") as f:
        f.write(value if isinstance(value, bytes) else value.encode())
    entry = {"name": name, "file": file, "topic": topic, "expect": expect, "why": why}
    if key is None:
        entry["key"] = None
    elif isinstance(key, bytes):
        entry["key_hex"] = key.hex()
    else:
        entry["key"] = key or f"c-{name}"
    if headers:
        entry["headers"] = headers
    cases.append(entry)


def click(name, kind="page_view", **extra):
    body = {"event_id": f"e-{name}", "customer_id": f"c-{name}", "type": kind}
    body.update(extra)
    return json.dumps(body, separators=(",", ":"))


def buy(name, kind="purchase", **extra):
    body = {"event_id": f"e-{name}", "customer_id": f"c-{name}", "type": kind, "amount": 25.5}
    body.update(extra)
    return json.dumps(body, separators=(",", ":"))


# --- clickstream, JSON ---------------------------------------------------
case("truncated-json", '{"event_id":"e-truncated-json","customer_id":', "malformed", why="cut off mid-object")
case("not-an-object", "[1,2,3]", "invalid_field", why="an array where an event belongs")
case("json-null", "null", "invalid_field", why="a JSON null")
case("empty-value", "", "malformed", why="zero bytes")
case("trailing-garbage", click("trailing-garbage") + " xyz", "malformed", why="a valid object then junk")
case("bad-escape", '{"event_id":"e","customer_id":"c-bad-escape","type":"page_\\u12"}', "malformed",
     why="an invalid \\u escape")
case("byte-order-mark", b"\xef\xbb\xbf" + click("byte-order-mark").encode(), "malformed", why="UTF-8 BOM before the object")
case("non-utf8-value", b'{"event_id":"e","customer_id":"c-non-utf8-value","type":"pa\xffge"}', "malformed",
     why="invalid UTF-8 inside a string")
case("type-is-number", '{"event_id":"e","customer_id":"c-type-is-number","type":5}', "invalid_field",
     why="type is a number")
case("customer-is-number", '{"event_id":"e","customer_id":42,"type":"search"}', "invalid_field", key="42",
     why="customer_id is a number")
case("missing-customer", '{"event_id":"e","type":"search"}', "missing_customer_id", why="no customer_id")
case("empty-customer", '{"event_id":"e","customer_id":"","type":"search"}', "missing_customer_id", key="x",
     why="customer_id is empty")
case("blank-customer", '{"event_id":"e","customer_id":"   ","type":"search"}', "missing_customer_id", key="   ",
     why="customer_id is whitespace")
case("missing-event-id", '{"customer_id":"c-missing-event-id","type":"search"}', "missing_event_id",
     why="no event_id")
case("empty-event-id", '{"event_id":"","customer_id":"c-empty-event-id","type":"search"}', "missing_event_id",
     why="event_id is empty")
case("missing-type", '{"event_id":"e","customer_id":"c-missing-type"}', "missing_type", why="no type")
case("empty-type", '{"event_id":"e","customer_id":"c-empty-type","type":""}', "missing_type", why="type is empty")
case("no-key", click("no-key"), "missing_key", key=None, why="record without a key")
case("key-mismatch", click("key-mismatch"), "key_mismatch", key="someone-else", why="key is another customer")
case("non-utf8-key", click("non-utf8-key"), "key_mismatch", key=b"\xff\xfe", why="key bytes are not UTF-8")
case("huge-id", click("x" * 300).replace("c-" + "x" * 300, "c-" + "x" * 300), "invalid_field", key="c-" + "x" * 300,
     why="customer_id of 302 bytes (limit 256)")
case("far-future", click("far-future", ts="2999-01-01T00:00:00Z"), "future_timestamp", why="year 2999")
case("unparseable-ts", click("unparseable-ts", ts="yesterday"), "invalid_timestamp", why="ts is not a time")
case("ts-microseconds", click("ts-microseconds", ts=1_767_225_600_000_000_000), "invalid_timestamp",
     why="nanoseconds where milliseconds belong")
case("ts-negative", click("ts-negative", ts=-9_000_000_000_000_000), "invalid_timestamp", why="before year -10000")
case("rating-out-of-range", click("rating-out-of-range", "feedback", properties={"rating": 9}), "invalid_field",
     why="feedback rating 9 (1-5)")
case("deeply-nested", '{"event_id":"e","customer_id":"c-deeply-nested","type":"search","properties":{"x":'
     + "[" * 300 + "]" * 300 + "}}", "ok",
     why="300 levels inside a field engage ignores: skipped without recursion, the event itself is valid")
case("deeply-nested-rating", '{"event_id":"e","customer_id":"c-deeply-nested-rating","type":"feedback",'
     '"properties":{"rating":' + "[" * 300 + "]" * 300 + "}}", "invalid_field",
     why="300 levels where the rating number belongs")
case("oversized", click("oversized", pad="y" * 5000), "oversized", why="5 kB with max_record_bytes 4096")
case("avro-content-type", click("avro-content-type"), "unsupported_content_type",
     headers={"content-type": "application/avro"}, why="a format engage does not read")
case("unknown-type", click("unknown-type", "hologram_view"), "unknown_type", why="a type engage does not know yet")
case("valid-click", click("valid-click", "review"), "ok", why="a legitimate review among the garbage")
case("duplicate-event", click("valid-click", "review"), "duplicate", key="c-valid-click",
     why="the same event id again")
case("extra-fields", click("extra-fields", "search", future_field={"a": [1, 2]}), "ok",
     why="unknown fields are ignored")

# --- purchases, JSON -----------------------------------------------------
case("negative-amount", buy("negative-amount", amount=-5), "invalid_amount", topic="purchases", why="amount -5")
case("nan-amount", buy("nan-amount", amount="NaN"), "invalid_amount", topic="purchases", why="amount \"NaN\"")
case("huge-amount", buy("huge-amount", amount=1e15), "invalid_amount", topic="purchases", why="above max_amount")
case("missing-amount", json.dumps({"event_id": "e", "customer_id": "c-missing-amount", "type": "purchase"}),
     "invalid_amount", topic="purchases", why="no amount")
case("amount-overflow", buy("amount-overflow").replace("25.5", "1e400"), "malformed", topic="purchases",
     why="a number beyond f64")
case("amount-is-text", buy("amount-is-text", amount="twelve"), "invalid_amount", topic="purchases",
     why="amount is a word")
case("chargeback", buy("chargeback", "chargeback"), "unknown_purchase_type", topic="purchases",
     why="not purchase or refund")
case("click-on-purchases", buy("click-on-purchases", "page_view"), "unknown_purchase_type", topic="purchases",
     why="a clickstream type on the purchases topic")
case("valid-refund", buy("valid-refund", "refund"), "ok", topic="purchases", why="a legitimate refund")
case("amount-as-string", buy("amount-as-string", amount="19.99"), "ok", topic="purchases",
     why="a numeric string is accepted")

# --- protobuf ------------------------------------------------------------
case("pb-valid-click", click_pb("e-pb", "c-pb-valid-click", "product_view"), "ok", headers=PB,
     why="a legitimate protobuf click")
case("pb-truncated", click_pb("e-pb", "c-pb-truncated", "product_view")[:-4], "malformed", headers=PB,
     why="cut off inside the type string")
case("pb-garbage", bytes(range(0xF0, 0x100)) * 3, "malformed", headers=PB, why="random bytes")
case("pb-wrong-wire-type", field(2, 0, 7) + s(1, "e") + s(3, "search"), "invalid_field", headers=PB,
     key="c-pb-wrong-wire-type", why="customer_id sent as a varint")
case("pb-missing-customer", s(1, "e") + s(3, "search"), "missing_customer_id", headers=PB,
     why="no customer_id field")
case("pb-non-utf8", s(1, "e") + s(2, b"c-\xff") + s(3, "search"), "malformed", headers=PB, key=b"c-\xff",
     why="customer_id bytes are not UTF-8")
case("pb-ts-overflow", click_pb("e", "c-pb-ts-overflow", "search") + b"\x20" + b"\xff" * 11, "malformed",
     headers=PB, why="an 11-byte varint")
case("pb-confluent-valid", confluent(click_pb("e-cf", "c-pb-confluent-valid", "search")), "ok", headers=PB,
     why="Confluent-framed protobuf")
case("pb-confluent-short", b"\x00\x00\x00", "malformed", headers=PB, why="framing cut short")
case("pb-confluent-bad-magic", confluent(click_pb("e", "c-pb-confluent-bad-magic", "search"), magic=1),
     "malformed", headers=PB, why="magic byte 1 instead of 0")
case("pb-valid-purchase", purchase_pb("e-pbb", "c-pb-valid-purchase", "purchase", 42.0), "ok", topic="purchases",
     headers=PB, why="a legitimate protobuf purchase")
case("pb-nan-amount", purchase_pb("e", "c-pb-nan-amount", "purchase", float("nan")), "invalid_amount",
     topic="purchases", headers=PB, why="amount is NaN")
case("pb-negative-amount", purchase_pb("e", "c-pb-negative-amount", "refund", -3.0), "invalid_amount",
     topic="purchases", headers=PB, why="refund of -3")
case("pb-infinite-amount", purchase_pb("e", "c-pb-infinite-amount", "purchase", float("inf")), "invalid_amount",
     topic="purchases", headers=PB, why="amount is +inf")

for name in os.listdir(HERE):
    if name[:2].isdigit() and not any(c["file"] == name for c in cases):
        os.remove(os.path.join(HERE, name))
with open(os.path.join(HERE, "cases.jsonl"), "w") as f:
    for c in cases:
        f.write(json.dumps(c) + "\n")
print(f"{len(cases)} cases")
