// The watch page: one participant's swapped video and audio, full-window, no controls (for an
// OBS Browser Source). It plays the stream of /whep/ROOM/PARTICIPANT and starts again whenever
// the stream stops (the participant left, the connection dropped): every 2 s until it plays.
// Options: ?transparent (no black background), ?token=… (servers with join tokens),
// ?sound (unmuted audio; browsers may need a click first). Its words are in text.js.

import { TEXT, applyText } from "./text.js";

applyText();

const [, , room, who] = location.pathname.split("/").map(decodeURIComponent);
const params = new URLSearchParams(location.search);
const token = params.get("token");
if (params.has("transparent")) document.documentElement.classList.add("transparent");
const video = document.getElementById("video");
video.muted = !params.has("sound");
const statusLine = document.getElementById("status");
const state = { pc: null, resource: null, retry: null, frames: 0, stalledSince: null };
window.facerelayWatch = state;

function say(text) { statusLine.textContent = text; }

function waitForCandidates(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
}

function stop() {
  state.pc?.close();
  state.pc = null;
  if (state.resource) fetch(state.resource, { method: "DELETE" }).catch(() => {});
  state.resource = null;
}

function later(text) {
  stop();
  say(text);
  clearTimeout(state.retry);
  state.retry = setTimeout(start, 2000);
}

async function start() {
  clearTimeout(state.retry);
  stop();
  state.frames = 0;
  state.stalledSince = null;
  const pc = new RTCPeerConnection();
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    video.srcObject = stream;
  };
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") later(TEXT.watch.connectionLost);
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForCandidates(pc);
    const headers = { "Content-Type": "application/sdp" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(`/whep/${encodeURIComponent(room)}/${encodeURIComponent(who)}`, {
      method: "POST", body: pc.localDescription.sdp, headers,
    });
    if (response.status !== 201) {
      const problem = await response.json().catch(() => ({}));
      return later(response.status === 404
        ? TEXT.watch.waitingFor(who, room)
        : (problem.message ?? TEXT.errors.serverAnswered(response.status)));
    }
    state.resource = new URL(response.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    say("");
  } catch (err) {
    later(TEXT.watch.unreachable(err.message));
  }
}

// A stream that stops sending frames (its participant left) is started again.
setInterval(async () => {
  const pc = state.pc;
  if (!pc || !state.resource) return;
  let frames = 0;
  try {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded ?? 0;
    });
  } catch {
    // A closed connection has no statistics: it is gone.
    if (state.pc === pc) later(TEXT.watch.connectionLost);
    return;
  }
  if (frames > state.frames) {
    state.frames = frames;
    state.stalledSince = null;
  } else if (state.stalledSince === null) {
    state.stalledSince = Date.now();
  } else if (Date.now() - state.stalledSince > 3000) {
    state.stalledSince = null;
    state.frames = 0;
    later(TEXT.watch.streamStopped);
  }
}, 1000);

window.addEventListener("pagehide", stop);
start();
