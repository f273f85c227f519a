// facerelay minimal client: join a room with camera and microphone, show everyone else.
// Protocol: docs/signalling.md. State is exposed as window.facerelay for tests.

const $ = (id) => document.getElementById(id);
const state = { ws: null, pc: null, id: null, names: new Map(), pendingCandidates: [], local: null };
window.facerelay = state;

const params = new URLSearchParams(location.search);
$("room").value = params.get("room") ?? "";
$("name").value = localStorage.getItem("facerelay-name") ?? "";

function setStatus(text) { $("status").textContent = text; }
function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function tile(id, label) {
  let fig = document.querySelector(`figure[data-participant="${CSS.escape(id)}"]`);
  if (!fig) {
    fig = document.createElement("figure");
    fig.dataset.participant = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    fig.append(video, caption);
    $("grid").append(fig);
  }
  fig.querySelector("figcaption").textContent = label;
  return fig.querySelector("video");
}

function send(msg) {
  if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

// Only H.264 crosses the relay: put it (constrained baseline, packetization-mode 1) first.
function preferH264(transceiver) {
  const caps = RTCRtpReceiver.getCapabilities?.("video");
  if (!caps || !transceiver.setCodecPreferences) return;
  const h264 = caps.codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine ?? ""));
  if (h264.length === 0) {
    throw new Error("This browser cannot send H.264 video, which facerelay needs. Try Chrome, Edge or Safari.");
  }
  h264.sort((a, b) => /42e01f/.test(b.sdpFmtpLine) - /42e01f/.test(a.sdpFmtpLine));
  transceiver.setCodecPreferences(h264);
}

async function join(room, name) {
  showError("");
  setStatus("Starting camera…");
  try {
    state.local = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  } catch (e) {
    throw new Error(`Camera or microphone unavailable (${e.name}). Allow access and try again.`);
  }
  tile("self", `${name} (you)`).srcObject = state.local;
  tile("self", `${name} (you)`).muted = true;
  setStatus("Connecting…");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => send({ type: "join", room, name });
  ws.onclose = () => { setStatus("Disconnected"); cleanup(false); };
  ws.onmessage = (e) => onMessage(JSON.parse(e.data)).catch((err) => showError(err.message));
}

async function onMessage(msg) {
  switch (msg.type) {
    case "welcome": {
      state.id = msg.id;
      for (const p of msg.participants) state.names.set(p.id, p.name);
      const pc = new RTCPeerConnection({ iceServers: msg.iceServers });
      state.pc = pc;
      pc.onicecandidate = (e) => send({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null });
      pc.ontrack = (e) => {
        const stream = e.streams[0];
        if (!stream) return;
        const video = tile(stream.id, state.names.get(stream.id) ?? stream.id);
        if (video.srcObject !== stream) video.srcObject = stream;
      };
      pc.onconnectionstatechange = () => setStatus(`Room ${msg.room}: ${pc.connectionState}`);
      for (const track of state.local.getTracks()) {
        const t = pc.addTransceiver(track, { direction: "sendrecv", streams: [state.local] });
        if (track.kind === "video") preferH264(t);
      }
      await pc.setLocalDescription(await pc.createOffer());
      send({ type: "offer", sdp: pc.localDescription.sdp });
      $("join").hidden = true;
      $("leave").hidden = false;
      break;
    }
    case "answer":
      await state.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      await flushCandidates();
      break;
    case "offer":
      await state.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      await state.pc.setLocalDescription(await state.pc.createAnswer());
      send({ type: "answer", sdp: state.pc.localDescription.sdp });
      await flushCandidates();
      break;
    case "candidate":
      if (state.pc?.remoteDescription) await state.pc.addIceCandidate(msg.candidate);
      else state.pendingCandidates.push(msg.candidate);
      break;
    case "participant-joined":
      state.names.set(msg.participant.id, msg.participant.name);
      break;
    case "participant-left":
      document.querySelector(`figure[data-participant="${CSS.escape(msg.id)}"]`)?.remove();
      state.names.delete(msg.id);
      break;
    case "error":
      showError(msg.message);
      break;
    case "bye":
      showError(`The server ended the call: ${msg.reason}.`);
      break;
  }
}

async function flushCandidates() {
  for (const c of state.pendingCandidates.splice(0)) await state.pc.addIceCandidate(c);
}

function cleanup(closeSocket) {
  state.pc?.close();
  state.pc = null;
  if (closeSocket) state.ws?.close();
  for (const t of state.local?.getTracks() ?? []) t.stop();
  $("grid").replaceChildren();
  $("join").hidden = false;
  $("leave").hidden = true;
}

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const room = $("room").value.trim();
  const name = $("name").value.trim();
  localStorage.setItem("facerelay-name", name);
  history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);
  join(room, name).catch((err) => { showError(err.message); setStatus("Not connected"); });
});
$("leave").addEventListener("click", () => { send({ type: "leave" }); cleanup(true); setStatus("Left"); });
