"""WHIP and WHEP with aiortc, a WebRTC stack facerelay did not write.

Publishes NUMBERS_Y4M as "Numbers" and FACE_Y4M as "Newton" wearing the gallery face FACE
(both looped, H.264, over WHIP into ROOM), then watches "Newton" over WHEP and writes every
tenth frame it decodes, after the first second, as OUT/whep-K.ppm (RGB). Keeps publishing for
SECONDS in all, ends every session with DELETE, and prints one JSON line of what happened.

    python aiortc_whip_whep.py BASE_URL ROOM KEY NUMBERS_Y4M FACE_Y4M FACE OUT SECONDS
"""

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def h264_only(transceiver):
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/H264"])


async def negotiate(pc, url, headers):
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp", **headers}
    status, answer_headers, body = await asyncio.to_thread(http, "POST", url, pc.localDescription.sdp, headers)
    if status != 201:
        raise RuntimeError(f"POST {url}: {status} {body}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return urljoin(url, answer_headers.get("Location"))


async def publish(base, room, key, path, name, face=None):
    pc = RTCPeerConnection()
    player = MediaPlayer(path, loop=True)
    h264_only(pc.addTransceiver(player.video, direction="sendonly"))
    query = f"?name={name}" + (f"&face={face}" if face else "")
    resource = await negotiate(pc, f"{base}whip/{room}{query}", {"Authorization": f"Bearer {key}"})
    return pc, resource


async def watch(base, room, who, out, seconds):
    pc = RTCPeerConnection()
    h264_only(pc.addTransceiver("video", direction="recvonly"))
    seen = {"frames": 0, "saved": 0, "size": None}

    @pc.on("track")
    def on_track(track):
        async def read():
            # A frame saved every half second after the first: how many are saved depends on
            # time, not on how fast this machine decodes.
            next_save = time.monotonic() + 1
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                seen["frames"] += 1
                seen["size"] = [frame.width, frame.height]
                if time.monotonic() >= next_save:
                    next_save += 0.5
                    rgb = frame.reformat(format="rgb24")
                    plane = rgb.planes[0]
                    row = rgb.width * 3
                    data = bytes(plane)
                    pixels = b"".join(data[y * plane.line_size: y * plane.line_size + row] for y in range(rgb.height))
                    with open(f"{out}/whep-{seen['saved']}.ppm", "wb") as f:
                        f.write(b"P6\n%d %d\n255\n" % (rgb.width, rgb.height) + pixels)
                    seen["saved"] += 1

        asyncio.ensure_future(read())

    resource = await negotiate(pc, f"{base}whep/{room}/{who}", {})
    await asyncio.sleep(seconds)
    return pc, resource, seen


async def main():
    base, room, key, numbers, face_video, face, out, seconds = sys.argv[1:9]
    seconds = float(seconds)
    t0 = time.monotonic()
    numbers_pc, numbers_resource = await publish(base, room, key, numbers, "Numbers")
    newton_pc, newton_resource = await publish(base, room, key, face_video, "Newton", face)
    # Newton publishes video once its connection is up; WHEP finds him then.
    for _ in range(40):
        await asyncio.sleep(0.25)
        watcher = None
        try:
            watcher = await watch(base, room, "Newton", out, 0)
            break
        except RuntimeError as e:
            if "404" not in str(e):
                raise
    if watcher is None:
        raise RuntimeError("Newton never published video")
    watch_pc, watch_resource, seen = watcher
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    deleted = []
    for resource in (watch_resource, numbers_resource, newton_resource):
        status, _, _ = await asyncio.to_thread(http, "DELETE", resource)
        deleted.append(status)
    for pc in (watch_pc, numbers_pc, newton_pc):
        await pc.close()
    print(json.dumps({"whep": seen, "deleted": deleted}))


asyncio.run(main())
