#!/usr/bin/env python3
"""Writes seed inputs for the room_connected fuzz target into
fuzz/seeds/room_connected/: one short story per operation of the target
(a VP8 keyframe, a NACK of what Bob received, PLI, FIR, TWCC, data on
every kind of channel, a new address bound by STUN, loss, commands), and
one with all of them. The byte layout is the one fuzz_targets/room_connected.rs
reads; libFuzzer starts from these instead of from nothing.

    python3 fuzz/seeds/room_connected.py
    cargo +nightly fuzz run room_connected fuzz/corpus/room_connected fuzz/seeds/room_connected
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "room_connected")

# Alice's streams, in the order the target lists them.
AUDIO, VIDEO, VIDEO_RTX, SIM_L, SIM_H = range(5)
# Bob's consumer SSRCs: audio, video, video RTX, simulcast, simulcast RTX.
C_AUDIO, C_VIDEO, C_VIDEO_RTX, C_SIM, C_SIM_RTX = range(5)

def time(ms):
    return bytes([0, min(255, ms // 4)])

def blob(data, scale):
    n = (len(data) + scale - 1) // scale
    return bytes([n]) + data + bytes(n * scale - len(data))

VP8_KEYFRAME = bytes([0x10, 0x50, 0x01, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + bytes(9)
VP8_DELTA = bytes([0x10, 0x51, 0x01, 0x00]) + bytes(16)

def rtp(stream, payload, marker=True, mid=True, rid=False, twcc=True, audio_level=False, src=0):
    flags = (1 if marker else 0) | (4 if mid else 0) | (8 if rid else 0) \
        | (16 if audio_level else 0) | (32 if twcc else 0)
    out = bytes([2, flags, 0, stream, src])
    out += struct.pack(">H", 3000)          # timestamp delta
    if audio_level:
        out += bytes([30])
    if twcc:
        out += struct.pack(">H", 1)
    return out + blob(payload, 5)

def rtcp(*packets, from_bob=True, src=0):
    head = (0 if from_bob else 1) | ((len(packets) - 1) << 6)
    return bytes([6, head, src]) + b"".join(packets)

def pli(media):
    return bytes([3, media])

def fir(media):
    return bytes([5, media, 1])

def nack(media, offsets=(1, 2)):
    out = bytes([6, media, len(offsets) - 1])
    for o in offsets:
        out += bytes([o]) + struct.pack(">H", 0x0003)
    return out

def twcc(media):
    return bytes([8, media]) + struct.pack(">HB", 1, 4) + struct.pack(">I", 0x00000100) \
        + blob(bytes([0x20, 0x04, 0x10, 0x10, 0x10, 0x10]), 1)

def rr(media):
    return bytes([0, media, 1, media]) + struct.pack(">IIIII", 0x01000002, 100, 10, 0, 0)

def remb(media):
    return bytes([9, media]) + struct.pack(">I", 0x0012ABCD)

def data(payload, binary=True):
    return bytes([9, 1 if binary else 0]) + blob(payload, 4)

def data_back(payload):
    return bytes([10, 1]) + blob(payload, 4)

def raw_channel(stream, label, negotiated=False):
    # Ordered and reliable (flags % 3 == 0), negotiated or announced by DCEP.
    return bytes([11, 12 if negotiated else 6]) + struct.pack(">H", stream) + blob(label, 1)

def raw_channel_write(payload):
    return bytes([12, 0, 1]) + blob(payload, 4)

def produce_data(stream, consume=True, open_first=True):
    flags = 3 | (16 if consume else 0) | (32 if open_first else 0)
    return bytes([13, flags]) + struct.pack(">H", stream) + blob(b"more", 1)

def stun_from(alt, to_bob=False, use_candidate=True):
    flags = (1 if to_bob else 0) | 2 | (8 if use_candidate else 0)
    return bytes([15, flags, 0xE0 | alt]) + struct.pack(">II", 100, 7)

def consumer_cmd(which):
    return bytes([18, which])

def producer_cmd(which):
    return bytes([19, which])

def loss(percent, jitter_ms=0):
    return bytes([23, percent, jitter_ms])

# Alice's synthetic sources: audio, video, simulcast layer l, layer h.
S_AUDIO, S_VIDEO, S_LOW, S_HIGH = range(4)

def media(*sources, on=True):
    return b"".join(bytes([22, s | (0 if on else 0x80)]) for s in sources)

ALL_MEDIA = media(S_AUDIO, S_VIDEO, S_LOW, S_HIGH)

def keyframe_request(consumer):
    return bytes([21, consumer])

SEEDS = {
    "vp8-keyframe": rtp(VIDEO, VP8_KEYFRAME) + rtp(VIDEO, VP8_DELTA) + time(100),
    "simulcast-rid": rtp(SIM_L, VP8_KEYFRAME, rid=True) + rtp(SIM_H, VP8_KEYFRAME, rid=True) + time(100),
    "audio-level": rtp(AUDIO, bytes(40), audio_level=True) + time(40),
    "rtx": rtp(VIDEO_RTX, struct.pack(">H", 5) + VP8_DELTA) + time(40),
    "media": ALL_MEDIA + time(1000) + media(S_HIGH, on=False) + time(500),
    "nack": media(S_VIDEO) + time(300) + rtcp(nack(C_VIDEO, (1, 2, 3))) + time(100),
    "pli-fir": ALL_MEDIA + time(600) + rtcp(pli(C_VIDEO)) + time(100) + rtcp(fir(C_SIM)) + time(600),
    "twcc-rr-remb": media(S_VIDEO) + time(200) + rtcp(twcc(C_VIDEO), rr(C_VIDEO), remb(C_VIDEO)) + time(100),
    "data": data(b"hello, bob") + data(b"text", binary=False) + time(40),
    "data-back": data_back(b"hello, alice") + time(40),
    "raw-channel": raw_channel(7, b"side") + time(20) + raw_channel_write(b"unannounced") + time(40),
    "produce-data": produce_data(9) + time(40) + time(40),
    # A channel announced in-band (stream 0, Alice picks even ids), then
    # produce-data of the same stream without opening it again.
    "dcep-then-produce": raw_channel(0, b"inband") + time(40)
        + produce_data(0, open_first=False) + time(40),
    "stun-new-address": stun_from(1) + rtp(VIDEO, VP8_DELTA, src=0xE1) + time(40),
    "loss": ALL_MEDIA + loss(25, 5) + time(1000) + time(1000),
    "commands": ALL_MEDIA + consumer_cmd(1) + consumer_cmd(64 + 1) + consumer_cmd(128 + 2) + producer_cmd(1)
        + time(100) + producer_cmd(0x81) + time(700) + keyframe_request(C_VIDEO) + time(600),
}
SEEDS["everything"] = b"".join(SEEDS[k] for k in sorted(SEEDS))

os.makedirs(OUT, exist_ok=True)
for name, body in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(body)
print(f"{len(SEEDS)} seeds in {OUT}")
