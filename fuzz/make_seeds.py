#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/seeds/<target>/ (committed; run again
after changing this file). Standard library only: every seed is built here byte by byte, small
and valid (or nearly) so that the fuzzer starts from inputs that reach deep into each parser.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

# An H.264 stream in pieces: SPS, PPS, facerelay's SEI mark, an IDR slice and a P slice.
SPS = bytes.fromhex("6742c01fda0280bfe5c04400000300040000030083c60c6580")
PPS = bytes.fromhex("68ce3c80")
SEI_UUID = bytes.fromhex("666163657265 6c61792d73776170 0101".replace(" ", ""))
SEI_PAYLOAD = b'{"facerelay":1,"swapped":true,"server":"00112233aabbccdd","t":1}'
SEI = bytes([6, 5, len(SEI_UUID) + len(SEI_PAYLOAD)]) + SEI_UUID + SEI_PAYLOAD + b"\x80"
IDR = bytes.fromhex("65888400") + bytes(range(1, 60))
P = bytes.fromhex("419a2422") + bytes(range(60, 100))


def annex_b(*nals):
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- signalling: one WebSocket text message each ----
def signalling():
    msgs = {
        "join": {"type": "join", "room": "demo", "name": "Ann"},
        "roulette": {"type": "roulette", "name": "Bob"},
        "offer": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"},
        "answer": {"type": "answer", "sdp": "v=0\r\n"},
        "candidate": {
            "type": "candidate",
            "candidate": {
                "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
            },
        },
        "end-of-candidates": {"type": "candidate", "candidate": None},
        "leave": {"type": "leave"},
        "next": {"type": "next"},
        "report": {"type": "report", "reason": "rude"},
    }
    for name, m in msgs.items():
        write("signalling", name + ".json", json.dumps(m))
    write("signalling", "not-json.txt", "{not json")


# ---- sdp: offers and answers as browsers send them ----
def section(kind, mid, pts, extra):
    lines = [
        f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(pts)}",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
        "a=setup:actpass",
        f"a=mid:{mid}",
        "a=sendrecv",
        "a=rtcp-mux",
    ]
    return "\r\n".join(lines + extra) + "\r\n"


def sdp():
    head = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS s\r\n"
    audio = section("audio", 0, ["111"], [
        "a=msid:s a", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=ssrc:1111 cname:x", "a=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host",
        "a=candidate:2 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active",
    ])
    video = section("video", 1, ["96", "102", "103"], [
        "a=msid:s v", "a=rtpmap:96 VP8/90000", "a=rtpmap:102 H264/90000",
        "a=rtcp-fb:102 nack pli",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102",
        "a=ssrc-group:FID 2222 3333", "a=ssrc:2222 cname:x", "a=ssrc:3333 cname:x",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    ])
    write("sdp", "browser-offer.sdp", head + audio + video)
    simulcast = video.replace("a=ssrc-group:FID 2222 3333\r\na=ssrc:2222 cname:x\r\na=ssrc:3333 cname:x\r\n",
                              "a=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n")
    write("sdp", "simulcast-offer.sdp", head + audio + simulcast)
    write("sdp", "vp8-only.sdp", head + section("video", 0, ["96"], ["a=rtpmap:96 VP8/90000"]))
    write("sdp", "answer.sdp", head + audio.replace("actpass", "active") + video.replace("actpass", "active"))


# ---- join_token: JWTs as `facerelay token` makes them, signed with the fuzzing secret ----
FUZZ_TOKEN_SECRET = b"the fuzz targets' join-token secret, 32+ chars"


def jwt(claims):
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(FUZZ_TOKEN_SECRET, head + b"." + body, hashlib.sha256).digest()
    return head + b"." + body + b"." + b64(sig)


def join_token():
    # Far in the future: the seeds stay valid.
    base = {"name": "Fuzz", "publish": True, "face": True, "exp": 4102444800, "iat": 1767225600}
    write("join_token", "lab.jwt", jwt(dict(base, room="lab")))
    write("join_token", "roulette.jwt", jwt(base))
    write("join_token", "expired.jwt", jwt(dict(base, room="lab", exp=1767225600)))
    write("join_token", "alg-none.jwt", b"eyJhbGciOiJub25lIn0.eyJyb29tIjoibGFiIn0.")


# ---- candidate: trickled candidate lines ----
def candidate():
    lines = {
        "host-udp": "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host generation 0",
        "srflx": "candidate:2 1 udp 1686052607 203.0.113.5 61000 typ srflx raddr 192.0.2.1 rport 50000",
        "relay": "candidate:3 1 udp 41885439 198.51.100.7 3478 typ relay raddr 203.0.113.5 rport 61000",
        "ipv6": "candidate:4 1 UDP 2122262783 2001:db8::1 50001 typ host",
        "mdns": "candidate:5 1 udp 2122260223 3a1f0e2b-1c2d-4e5f-8a9b-0c1d2e3f4a5b.local 50002 typ host",
        "tcp-passive": "candidate:6 1 tcp 1518280447 192.0.2.1 9 typ host tcptype passive",
        "a-prefix": "a=candidate:7 1 udp 2122260223 192.0.2.1 50003 typ host",
    }
    for name, line in lines.items():
        write("candidate", name + ".txt", line)


# ---- rtp_h264: packets as fuzzing::rtp_h264 reads them ----
def packet(payload, marker=False, step=1, new_ts=False):
    steps = {-1: 0, 1: 1, 2: 2, 40: 3}
    flags = (1 if marker else 0) | (steps[step] << 1) | (8 if new_ts else 0)
    return bytes([flags, len(payload)]) + payload


def fu_a(nal, size):
    header, body = nal[0], nal[1:]
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    out = []
    for i, c in enumerate(chunks):
        fu_header = (header & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        out.append(bytes([(header & 0xE0) | 28, fu_header]) + c)
    return out


def stap_a(*nals):
    return bytes([0x78]) + b"".join(struct.pack(">H", len(n)) + n for n in nals)


def rtp_h264():
    fragments = fu_a(IDR, 20)
    frame1 = ([packet(stap_a(SPS, PPS), new_ts=True)]
              + [packet(f, marker=i == len(fragments) - 1) for i, f in enumerate(fragments)])
    frame2 = [packet(P, marker=True, new_ts=True)]
    write("rtp_h264", "keyframe-then-delta.bin", b"".join(frame1 + frame2))
    single = [packet(SPS, new_ts=True), packet(PPS), packet(IDR, marker=True)]
    write("rtp_h264", "single-nal.bin", b"".join(single))
    # Reordering: the second and third fragments swapped on the way.
    f = fragments
    lossy = [packet(stap_a(SPS, PPS), new_ts=True), packet(f[0]), packet(f[2], step=2),
             packet(f[1], step=-1), packet(f[3], marker=True, step=2)] + frame2
    write("rtp_h264", "reordered.bin", b"".join(lossy))


# ---- face_image: a tiny PNG and a tiny baseline JPEG (whole, and cut and resealed) ----
def png(width, height, pixel):
    raw = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(width) for _ in range(1))
                   for y in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def face_image():
    write("face_image", "grey.png", png(16, 12, lambda x, y: (x * 16 + y * 5) & 255))
    # A baseline JPEG, 8x8 grey, built from standard tables (DC only).
    q = bytes([1] * 64)
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + q
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 8, 8, 1) + b"\x01\x11\x00"
    # DC table: one code of length 1 for category 0; AC table: one code of length 1 for EOB.
    dht_dc = b"\xff\xc4" + struct.pack(">H", 3 + 16 + 1) + b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    dht_ac = b"\xff\xc4" + struct.pack(">H", 3 + 16 + 1) + b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x00\x3f\x00"
    scan = bytes([0x3F])  # DC category 0 ("0"), EOB ("0"), padded with ones
    jpeg = b"\xff\xd8" + dqt + sof + dht_dc + dht_ac + sos + scan + b"\xff\xd9"
    write("face_image", "grey-baseline.jpg", jpeg)
    write("face_image", "cut-and-resealed.jpg", jpeg[:-3] + b"\xff\xd9")


# ---- onnx_initializer: a ModelProto with one graph and two float initializers ----
def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def tensor(name, dims, values, raw=True):
    t = b"".join(field(1, 0, varint(d)) for d in dims) + field(2, 0, varint(1))
    t += field(8, 2, name.encode())
    if raw:
        t += field(9, 2, struct.pack(f"<{len(values)}f", *values))
    else:
        t += field(4, 2, struct.pack(f"<{len(values)}f", *values))
    return t


def onnx_initializer():
    graph = field(1, 2, field(1, 2, b"x") + field(2, 2, b"y") + field(4, 2, b"Identity"))
    graph += field(5, 2, tensor("w", [2], [1.0, 2.0]))
    graph += field(5, 2, tensor("emap", [2, 2], [1.0, 0.0, 0.0, 1.0]))
    model = field(1, 0, varint(8)) + field(7, 2, graph)
    write("onnx_initializer", "raw-data.onnx", model)
    graph2 = field(5, 2, tensor("emap", [3], [0.5, -0.5, 0.25], raw=False))
    write("onnx_initializer", "float-data.onnx", field(7, 2, graph2))


# ---- container: raw H.264, MP4 (plain and fragmented), WebM ----
def box(kind, *children):
    body = b"".join(children)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full(kind, version_flags, *children):
    return box(kind, struct.pack(">I", version_flags), *children)


def avcc():
    return (bytes([1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1]) + struct.pack(">H", len(SPS)) + SPS
            + bytes([1]) + struct.pack(">H", len(PPS)) + PPS)


def length_prefixed(*nals):
    return b"".join(struct.pack(">I", len(n)) + n for n in nals)


def mp4(fragmented, overlapping=False):
    s1 = length_prefixed(SEI, IDR)
    s2 = length_prefixed(P)
    avc1 = box(b"avc1", bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", 64, 48)
               + bytes(50), box(b"avcC", avcc()))
    stsd = full(b"stsd", 0, struct.pack(">I", 1), avc1)
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomavc1")
    tkhd = full(b"tkhd", 3, bytes(8), struct.pack(">I", 1), bytes(68))
    hdlr = full(b"hdlr", 0, bytes(4), b"vide", bytes(12), b"video\x00")

    def moov(stbl_tail, mvex=b""):
        stbl = box(b"stbl", stsd, *stbl_tail)
        trak = box(b"trak", tkhd, box(b"mdia", hdlr, box(b"minf", stbl)))
        return box(b"moov", trak, mvex)

    if not fragmented:
        # mdat right after ftyp and moov: compute the offset with a placeholder first.
        def tables(offset):
            if overlapping:
                # 1000 chunks of one sample each, all at the same offset: the same bytes read
                # over and over.
                sizes, chunks, per_chunk = [len(s1)] * 1000, [offset] * 1000, 1
            else:
                sizes, chunks, per_chunk = [len(s1), len(s2)], [offset], 2
            return [full(b"stsz", 0, struct.pack(">II", 0, len(sizes)),
                         struct.pack(f">{len(sizes)}I", *sizes)),
                    full(b"stsc", 0, struct.pack(">I", 1), struct.pack(">III", 1, per_chunk, 1)),
                    full(b"stco", 0, struct.pack(">I", len(chunks)),
                         struct.pack(f">{len(chunks)}I", *chunks))]
        head = ftyp + moov(tables(0))
        head = ftyp + moov(tables(len(head) + 8))
        return head + box(b"mdat", s1, s2)
    mvex = box(b"mvex", full(b"trex", 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    head = ftyp + moov([full(b"stsz", 0, bytes(8)), full(b"stsc", 0, bytes(4)),
                        full(b"stco", 0, bytes(4))], mvex)

    def moof(offset):
        # trun: data offset and sample size present (flags 0x201).
        trun = full(b"trun", 0x201, struct.pack(">Ii", 2, offset), struct.pack(">II", len(s1), len(s2)))
        tfhd = full(b"tfhd", 0x20000, struct.pack(">I", 1))
        return box(b"moof", full(b"mfhd", 0, struct.pack(">I", 1)), box(b"traf", tfhd, trun))

    m = moof(0)
    m = moof(len(m) + 8)
    return head + m + box(b"mdat", s1, s2)


def ebml(id_bytes, payload):
    n = len(payload)
    size = bytes([0x80 | n]) if n < 127 else b"\x01" + n.to_bytes(7, "big")
    return id_bytes + size + payload


def webm(private):
    header = ebml(b"\x1a\x45\xdf\xa3", ebml(b"\x42\x82", b"webm"))
    entry = ebml(b"\xd7", b"\x01") + ebml(b"\x83", b"\x01") + ebml(b"\x86", b"V_MPEG4/ISO/AVC")
    if private:
        entry += ebml(b"\x63\xa2", avcc())
        frames = [length_prefixed(SEI, IDR), length_prefixed(P)]
    else:
        frames = [annex_b(SPS, PPS, SEI, IDR), annex_b(P)]
    tracks = ebml(b"\x16\x54\xae\x6b", ebml(b"\xae", entry))
    blocks = b"".join(ebml(b"\xa3", b"\x81" + struct.pack(">h", i) + b"\x80" + f)
                      for i, f in enumerate(frames))
    # The cluster of unknown size, as live recorders write it.
    cluster = b"\x1f\x43\xb6\x75\x01\xff\xff\xff\xff\xff\xff\xff" + ebml(b"\xe7", b"\x00") + blocks
    segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + tracks + cluster
    return header + segment


def container():
    write("container", "stream.h264", annex_b(SPS, PPS, SEI, IDR, P))
    write("container", "plain.mp4", mp4(False))
    write("container", "fragmented.mp4", mp4(True))
    write("container", "in-band.webm", webm(False))
    write("container", "avcc.webm", webm(True))
    write("container", "overlapping-samples.mp4", mp4(False, overlapping=True))


if __name__ == "__main__":
    for make in (signalling, join_token, sdp, candidate, rtp_h264, face_image, onnx_initializer, container):
        make()
