// facerelay web client: join a room with camera and microphone, see everyone as the server
// relays them. Signalling protocol: docs/signalling.md. State is exposed as window.facerelay
// for the browser tests.

const $ = (id) => document.getElementById(id);

const state = {
  mode: "room", // or "roulette"
  rouletteStatus: null, // what the roulette status line says (waiting, or with whom)
  ws: null,
  pc: null,
  id: null,
  room: null,
  name: null,
  names: new Map(), // participant id -> display name
  media: new Map(), // participant id → {camera, microphone}: on or off, as its page says
  faces: new Map(), // participant id → what its video carries (the server says so): swapped, held, blurred, unswapped
  token: null, // authorises the face API for this session
  trackOwners: new Map(), // remote track id -> participant id
  pendingCandidates: [],
  local: null, // the camera + microphone MediaStream
  leaving: false,
  retries: 0,
  reconnectTimer: null,
  nodes: [], // in a cluster: the pages of the other live nodes (from the welcome)
  server: null, // in a cluster's roulette: the node this page talks to after a move (null: its own)
  move: null, // roulette: the move just announced ({url, ticket}), done when the socket closes
  ticket: null, // roulette: the ticket to enter with on the node moved to (used once)
  welcomed: false, // this call has had a session already (a later welcome is a reconnection)
  partner: null, // roulette: who you talk with ({id, name}), and whom you talked with last
  lastPartner: null,
  chosen: null, // the face to put back after a reconnection: {photo: Blob} or {gallery: name}
  statsTimer: null,
  tilesTimer: null,
  lastBytes: new Map(),
};
window.facerelay = state;

// ---------------------------------------------------------------------------------- UI bits

function setStatus(text) { $("status").textContent = text; }
function showError(text) {
  $("error").textContent = text ?? "";
  $("error").hidden = !text;
}

const SERVER_ERRORS = {
  room_full: "This room is full. Try another room name.",
  server_full: "The server is full right now. Please try again in a few minutes.",
  shutting_down: "The server is restarting. Please try again in a minute.",
  no_h264: "Your browser did not offer H.264 video, which facerelay needs. Try Chrome, Edge or Safari.",
  invalid_room: "Room names are 1 to 64 characters.",
  invalid_name: "Names are 1 to 64 characters.",
  connection_lost: "The video connection was lost.",
  roulette_full: "The roulette is full right now. Please try again in a few minutes.",
  no_partner: "There is nobody to report or block right now.",
  token_required: "This server admits people by invitation: open the link you were sent.",
  bad_token: "This invitation link is not valid. Ask for a new one.",
  token_expired: "This invitation link has expired. Ask for a new one.",
  token_wrong_room: "This invitation link is for another room.",
  not_allowed: "Your invitation lets you watch and listen: your camera and microphone are not sent.",
  cluster_unavailable: "The service cannot place calls right now. Please try again in a moment.",
};

// What the face calls' refusals mean, in plain words (docs/api.md lists the codes).
const FACE_ERRORS = {
  not_joined: "Join the call first, then choose a face.",
  consent_required: "Tick the box to confirm that this face is yours, or that its owner agreed.",
  not_allowed: "Your invitation does not let you choose a face.",
  uploads_disabled: "This server lets you choose a face from its gallery only.",
  image_too_large: "This photo is too large. Please use a smaller one.",
  upload_timeout: "The photo took too long to arrive. Please try again.",
  upload_busy: "Your previous photo is still being looked at. Please try again in a moment.",
  not_an_image: "This file is not a photo that can be read. Please use a JPEG, PNG or WebP photo.",
  no_face: "No face was found in this photo. Please use a clear photo of one face, from the front.",
  several_faces: "This photo shows several faces. Please use a photo of one face.",
  not_in_gallery: "This gallery face is not available any more.",
  swap_unavailable: "Face swap is not available on this server.",
  swap_capacity: "All face-swap places on this server are taken. You are in the call with your own face.",
};

function tile(id, label) {
  let fig = document.querySelector(`figure[data-participant="${CSS.escape(id)}"]`);
  if (!fig) {
    fig = document.createElement("figure");
    fig.dataset.participant = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    // The tile takes the shape of its video (4:3, 16:9, portrait on a phone).
    const shape = () => {
      if (video.videoWidth && video.videoHeight) {
        fig.dataset.ratio = String(video.videoWidth / video.videoHeight);
        layoutGrid();
      }
    };
    video.addEventListener("loadedmetadata", shape);
    video.addEventListener("resize", shape);
    const caption = document.createElement("figcaption");
    const overlay = document.createElement("div");
    overlay.className = "overlay";
    overlay.hidden = $("stats").getAttribute("aria-pressed") !== "true";
    const full = document.createElement("button");
    full.type = "button";
    full.className = "fullscreen";
    full.textContent = "⛶";
    full.addEventListener("click", () => {
      if (document.fullscreenElement === fig) document.exitFullscreen();
      else fig.requestFullscreen?.().catch(() => {});
    });
    fig.append(video, caption, overlay, full);
    if (id === "self") $("grid").prepend(fig); else $("grid").append(fig);
  }
  const caption = fig.querySelector("figcaption");
  caption.textContent = label;
  const owner = id === "self" ? state.id : id;
  const badgeText = BADGES[state.faces.get(owner)];
  if (badgeText) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.face = state.faces.get(owner);
    badge.textContent = badgeText;
    caption.append(badge);
  }
  // Another participant's camera or microphone off: its initials instead of a black picture,
  // a muted mark beside its name.
  const media = id === "self" ? null : state.media.get(id);
  if (media?.microphone === false) {
    const muted = document.createElement("span");
    muted.className = "muted";
    muted.textContent = "muted";
    caption.append(muted);
  }
  let initials = fig.querySelector(".initials");
  if (media?.camera === false) {
    if (!initials) {
      initials = document.createElement("div");
      initials.className = "initials";
      fig.append(initials);
    }
    const name = state.names.get(id) ?? "Guest";
    initials.textContent = name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
    initials.setAttribute("aria-label", `${name}'s camera is off`);
    initials.setAttribute("role", "img");
  } else {
    initials?.remove();
  }
  fig.querySelector("video").setAttribute("aria-label", `Video of ${label}`);
  fig.querySelector(".fullscreen").setAttribute("aria-label", `Full screen: ${label}`);
  return fig.querySelector("video");
}

// The videos fill the space the call leaves them. Two (you and one other): the other as large as
// it fits, keeping its shape, and you small in its corner. Otherwise a grid of equal tiles, as
// many columns as make them largest.
const GAP = 12;
function layoutGrid() {
  const grid = $("grid");
  const figs = [...grid.querySelectorAll("figure")];
  grid.dataset.count = String(figs.length);
  const W = grid.clientWidth;
  const H = grid.clientHeight;
  if (!W || !H || figs.length === 0) return;
  const ratio = (f) => Number(f.dataset.ratio) || 4 / 3;
  const size = (f, w, h) => { f.style.width = `${Math.floor(w)}px`; f.style.height = `${Math.floor(h)}px`; };
  const main = figs.length === 2 ? figs.find((f) => f.dataset.participant !== "self") : null;
  if (main) {
    const r = ratio(main);
    const w = Math.min(W, H * r);
    size(main, w, w / r);
    main.style.left = main.style.top = "";
    const self = figs.find((f) => f !== main);
    const sw = Math.max(96, Math.min(280, w * 0.24));
    const sh = sw / ratio(self);
    size(self, sw, sh);
    self.style.left = `${(W + w) / 2 - sw - GAP}px`;
    self.style.top = `${(H + w / r) / 2 - sh - GAP}px`;
    grid.style.gridTemplateColumns = "";
    return;
  }
  let best = { w: 0, cols: 1 };
  for (let cols = 1; cols <= figs.length; cols++) {
    const rows = Math.ceil(figs.length / cols);
    const w = Math.min((W - GAP * (cols - 1)) / cols, ((H - GAP * (rows - 1)) / rows) * (4 / 3));
    if (w > best.w) best = { w, cols };
  }
  grid.style.gridTemplateColumns = `repeat(${best.cols}, ${Math.floor(best.w)}px)`;
  for (const f of figs) {
    size(f, best.w, best.w * 3 / 4);
    f.style.left = f.style.top = "";
  }
}
new MutationObserver(layoutGrid).observe($("grid"), { childList: true });
// The space changes with the window, and with a notice or an error shown above the videos.
new ResizeObserver(layoutGrid).observe($("grid"));

function removeTile(id) {
  document.querySelector(`figure[data-participant="${CSS.escape(id)}"]`)?.remove();
}

function show(section) {
  $("landing").hidden = section !== "landing";
  $("call").hidden = section !== "call";
  for (const el of document.querySelectorAll("[data-mode]")) el.hidden = el.dataset.mode !== state.mode;
  document.body.classList.toggle("roulette", section === "call" && state.mode === "roulette");
  document.body.classList.toggle("in-call", section === "call");
  if (section === "call") requestAnimationFrame(layoutGrid);
  $("leave").textContent = state.mode === "roulette" ? "Stop" : "Leave";
}

// One notice at a time, in order. A confirmation the person must be able to read (a report,
// a block) is held for NOTICE_HOLD_MS: what comes meanwhile (the next pairing) waits behind it.
const NOTICE_HOLD_MS = 4000;
const notices = { until: 0, timer: null, next: undefined };

function notice(text, hold = false) {
  const now = Date.now();
  if (now < notices.until) {
    notices.next = text;
    return;
  }
  clearTimeout(notices.timer);
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
  if (!hold) return;
  notices.until = now + NOTICE_HOLD_MS;
  notices.next = undefined;
  notices.timer = setTimeout(() => {
    notices.until = 0;
    if (notices.next !== undefined) notice(notices.next);
  }, NOTICE_HOLD_MS);
}

// Clears the notice at once, held or not (leaving the call).
function clearNotice() {
  clearTimeout(notices.timer);
  notices.until = 0;
  notices.next = undefined;
  notice("");
}

// Roulette buttons work only when they would do something: Next with a partner, Report and
// Block with a partner or, while waiting, the last one.
function rouletteButtons() {
  $("next").disabled = !state.partner;
  $("report").disabled = $("block").disabled = !(state.partner || state.lastPartner);
}

function removePartners() {
  for (const fig of document.querySelectorAll("figure:not([data-participant=self])")) fig.remove();
}

// ------------------------------------------------------------------------------ media

function mediaError(e) {
  switch (e.name) {
    case "NotAllowedError":
      return "Camera and microphone access was blocked. Allow it in your browser (the camera icon in the address bar) and try again.";
    case "NotFoundError":
      return "No camera or microphone was found. Connect one and try again.";
    case "NotReadableError":
      return "Your camera is in use by another program. Close it and try again.";
    default:
      return `The camera could not start (${e.name}).`;
  }
}

async function startCamera() {
  // The invitation's preview already holds the camera: the call uses it.
  if (state.local?.getTracks().some((t) => t.readyState === "live")) return listDevices();
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("This page needs a secure connection (https) to use the camera.");
  }
  try {
    state.local = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: true,
    });
  } catch (e) {
    throw new Error(mediaError(e));
  }
  await listDevices();
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [["videoinput", $("cam-select")], ["audioinput", $("mic-select")]]) {
    const current = state.local?.getTracks().find((t) => `${t.kind}input` === kind)?.getSettings().deviceId;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const o = new Option(d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`, d.deviceId);
      o.selected = d.deviceId === current;
      return o;
    }));
  }
}

async function switchDevice(kind, deviceId) {
  const constraints = kind === "video"
    ? { video: { deviceId: { exact: deviceId }, width: { ideal: 640 }, height: { ideal: 480 } } }
    : { audio: { deviceId: { exact: deviceId } } };
  let fresh;
  try {
    fresh = (await navigator.mediaDevices.getUserMedia(constraints)).getTracks()[0];
  } catch (e) {
    showError(mediaError(e));
    return;
  }
  const old = state.local.getTracks().find((t) => t.kind === kind);
  fresh.enabled = old?.enabled ?? true;
  const sender = state.pc?.getSenders().find((s) => s.track?.kind === kind);
  await sender?.replaceTrack(fresh); // same codec and size: no renegotiation needed
  if (old) { state.local.removeTrack(old); old.stop(); }
  state.local.addTrack(fresh);
}

function toggle(kind, button) {
  const track = state.local?.getTracks().find((t) => t.kind === kind);
  if (!track) return;
  track.enabled = !track.enabled;
  button.setAttribute("aria-pressed", String(track.enabled));
  button.textContent = `${kind === "audio" ? "Microphone" : "Camera"} ${track.enabled ? "on" : "off"}`;
  sendMedia();
}

// Tells the others whether this page's camera and microphone are on.
function sendMedia() {
  const on = (kind) => state.local?.getTracks().find((t) => t.kind === kind)?.enabled ?? false;
  send({ type: "media", camera: on("video"), microphone: on("audio") });
}

// Only H.264 crosses the relay: offer it alone, constrained baseline first.
function preferH264(transceiver) {
  const caps = RTCRtpReceiver.getCapabilities?.("video");
  if (!caps || !transceiver.setCodecPreferences) return;
  const h264 = caps.codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine ?? ""));
  if (h264.length === 0) throw new Error(SERVER_ERRORS.no_h264);
  h264.sort((a, b) => /42e01f/.test(b.sdpFmtpLine) - /42e01f/.test(a.sdpFmtpLine));
  transceiver.setCodecPreferences(h264);
}

// ------------------------------------------------------------------------- signalling

/** The query of a link to this call: the room (or the roulette), and the join token if any. */
function linkParams() {
  const q = new URLSearchParams();
  if (state.mode === "roulette") q.set("roulette", "1"); else q.set("room", state.room);
  if (joinToken) q.set("token", joinToken);
  return q;
}

/**
 * Continues this call on another node of the cluster: its page, joining at once. Returns false,
 * and stays, when that node does not answer (it may just have died).
 */
async function goTo(nodeUrl) {
  try {
    await fetch(new URL("/healthz", nodeUrl), { mode: "no-cors", cache: "no-store" });
  } catch {
    return false;
  }
  state.leaving = true;
  clearTimeout(state.reconnectTimer);
  state.ws?.close();
  const q = linkParams();
  q.set("name", state.name);
  q.set("join", "1");
  location.assign(`${new URL("/", nodeUrl)}?${q}`);
  return true;
}

/** The claims of a join token (its middle part), or null; the server checks its signature. */
function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function send(msg) {
  if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function connect() {
  setStatus(state.retries ? "Reconnecting…" : "Connecting…");
  const server = new URL(state.server ?? location.href);
  const ws = new WebSocket(`${server.protocol === "https:" ? "wss" : "ws"}://${server.host}/ws`);
  state.ws = ws;
  ws.onopen = () => send(joinMessage());
  ws.onmessage = (e) => onMessage(JSON.parse(e.data)).catch((err) => showError(err.message));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    closePeer();
    if (state.leaving) return;
    if (state.move) {
      // The roulette partner waits on another node: this page talks to it from now on (the
      // chosen face goes with it and is put back on before any video is sent).
      state.server = state.move.url;
      state.ticket = state.move.ticket;
      state.move = null;
      connect();
      return;
    }
    // This node went away and the cluster has others: continue on one that answers.
    if (state.retries >= 2 && state.nodes.length > 0) {
      const nodes = [...state.nodes];
      (async () => {
        for (const node of nodes) if (await goTo(node)) return;
        reconnectLater();
      })();
      return;
    }
    reconnectLater();
  };
}

// Lost the server: try again with backoff, keeping the camera running.
function reconnectLater() {
  const delay = Math.min(30, 2 ** state.retries);
  state.retries += 1;
  setStatus(`Connection lost. Reconnecting in ${delay} s…`);
  state.reconnectTimer = setTimeout(connect, delay * 1000);
}

// The join (or roulette) message, with the link's join token (servers with
// `server.token_secret`).
function joinMessage() {
  const token = joinToken ? { token: joinToken } : {};
  const ticket = state.ticket ? { ticket: state.ticket } : {};
  state.ticket = null;
  return state.mode === "roulette"
    ? { type: "roulette", name: state.name, ...token, ...ticket }
    : { type: "join", room: state.room, name: state.name, ...token };
}

// The face chosen before this session (on the invitation screen, or before a reconnection or a
// move: a new session, the server knows nothing of the old one) goes on before any video is
// published; if it cannot, the page says so and claims nothing.
async function reapplyFace(again) {
  const chosen = state.chosen;
  if (!chosen) return;
  $("face-state").textContent = again ? "Putting your face back on…" : "Putting your face on…";
  try {
    const result = chosen.photo
      ? await faceRequest("POST", "/api/face?consent=true", chosen.photo)
      : await faceRequest("POST", `/api/face/gallery/${encodeURIComponent(chosen.gallery)}`, null);
    showFace(result);
  } catch (err) {
    state.chosen = null;
    markGallery();
    noteFace(state.id, "none");
    $("face-preview").hidden = true;
    $("face-state").textContent = "You appear as yourself.";
    relabel(state.id);
    const what = again ? "could not be put back on after the reconnection" : "could not be put on";
    showError(`Your face ${what} (${err.message.replace(/\.$/, "")}). The others see your own face.`);
  }
}

async function onMessage(msg) {
  switch (msg.type) {
    case "redirect":
      // In a cluster: the room lives on another node; the page continues there. If that node
      // does not answer, ask again shortly: once its lease runs out the room is placed anew.
      if (!(await goTo(msg.url))) {
        const delay = Math.min(5, 1 + state.retries);
        state.retries += 1;
        setStatus(`The room's server does not answer. Trying again in ${delay} s…`);
        state.reconnectTimer = setTimeout(() => send(joinMessage()), delay * 1000);
      }
      break;
    case "roulette-move":
      state.move = { url: msg.url, ticket: msg.ticket };
      setStatus("Someone is waiting for you on another server. Moving there…");
      break;
    case "welcome":
      state.retries = 0;
      state.nodes = msg.nodes ?? [];
      state.id = msg.id;
      state.token = msg.token;
      showError("");
      state.faces.clear();
      for (const p of msg.participants) noteParticipant(p);
      loadGallery();
      await reapplyFace(state.welcomed);
      state.welcomed = true;
      await startPeer(msg.iceServers);
      sendMedia();
      setStatus(state.mode === "roulette" ? "Roulette · connecting media…" : `Room “${msg.room}” · connecting media…`);
      break;
    case "roulette-waiting":
      removePartners();
      state.rouletteStatus = msg.online > 1
        ? `Waiting for someone… ${msg.online} people in the roulette`
        : "Waiting for someone… you are the only one in the roulette right now";
      setStatus(state.rouletteStatus);
      rouletteButtons();
      break;
    case "roulette-paired":
      noteParticipant(msg.partner);
      state.rouletteStatus = `Talking with ${msg.partner.name}`;
      setStatus(state.rouletteStatus);
      // With nobody else waiting, the roulette pairs the same two again: say so.
      notice(msg.partner.id === state.lastPartner?.id
        ? `Nobody else is waiting right now, so you are with ${msg.partner.name} again.`
        : "");
      state.partner = msg.partner;
      rouletteButtons();
      break;
    case "roulette-ended":
      removePartners();
      state.lastPartner = state.partner ?? state.lastPartner;
      state.partner = null;
      rouletteButtons();
      notice({
        next: "Your partner moved on. Finding someone new…",
        stop: "Your partner left the roulette. Finding someone new…",
        disconnected: "Your partner's connection dropped. Finding someone new…",
      }[msg.reason] ?? "The chat ended. Finding someone new…");
      break;
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
      noteParticipant(msg.participant);
      relabel(msg.participant.id);
      break;
    case "face-state":
      noteFace(state.id, msg.state);
      $("face-state").textContent = faceStateText(msg.state, msg.reason);
      relabel(state.id);
      break;
    case "participant-updated":
      noteParticipant(msg.participant);
      relabel(msg.participant.id);
      break;
    case "participant-left":
      removeTile(msg.id);
      state.names.delete(msg.id);
      break;
    case "error":
      if (["room_full", "server_full", "roulette_full", "shutting_down", "invalid_room", "invalid_name",
        "token_required", "bad_token", "token_expired", "token_wrong_room", "cluster_unavailable"].includes(msg.code)) {
        leave();
      }
      // A roulette request the server could not aim at anyone: its confirmation was wrong.
      if (msg.code === "no_partner") clearNotice();
      showError(SERVER_ERRORS[msg.code] ?? msg.message);
      break;
    case "bye":
      showError(`The server ended the call: ${msg.reason}.`);
      break;
  }
}

function noteParticipant(p) {
  state.names.set(p.id, p.name);
  state.media.set(p.id, { camera: p.camera !== false, microphone: p.microphone !== false });
  noteFace(p.id, p.face ?? (p.swapped ? "swapped" : "none"));
}

function noteFace(id, face) {
  if (face && face !== "none") state.faces.set(id, face); else state.faces.delete(id);
}

// The badge on a tile, by what the video carries: a held frame is still the swapped face.
const BADGES = {
  swapped: "face-swapped",
  held: "face-swapped",
  blurred: "face hidden",
  unswapped: "not swapped",
};

// What the wearer is told about its own face, by state and reason.
function faceStateText(face, reason) {
  const why = reason === "busy" ? "Swap paused: the server is busy." : "Your face is not found:";
  switch (face) {
    case "swapped": return "This is the face the others see on you.";
    case "held": return `${why} the others see your last swapped frame.`;
    case "blurred": return reason ? `${why} the others see you blurred.` : "Starting the swap: the others see you blurred until it works.";
    case "unswapped": return "Your face is not being swapped: the others see your own face.";
    default: return "You appear as yourself.";
  }
}

// Redraws a tile's caption (name and badge) after a change.
function relabel(id) {
  const self = id === state.id;
  const fig = document.querySelector(`figure[data-participant="${CSS.escape(self ? "self" : id)}"]`);
  if (!fig) return;
  const label = self ? fig.querySelector("figcaption").firstChild?.textContent ?? "" : state.names.get(id) ?? "Guest";
  tile(self ? "self" : id, label);
}

// ------------------------------------------------------------------------- face picker

async function faceRequest(method, path, body) {
  const response = await fetch(new URL(path, state.server ?? location.href), {
    method,
    body,
    headers: { Authorization: `Bearer ${state.token}` },
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(FACE_ERRORS[json.code] ?? json.message ?? `The server answered ${response.status}.`);
  return json;
}

function showFace(result) {
  const preview = $("face-preview");
  preview.hidden = !result.swapped;
  if (result.preview) preview.src = result.preview;
  // What the others see comes with the server's `face-state` messages; until the first one:
  if (!result.swapped) noteFace(state.id, "none");
  else if (!state.faces.has(state.id)) noteFace(state.id, "blurred");
  $("face-state").textContent = faceStateText(state.faces.get(state.id));
  relabel(state.id);
}

// `chosen`: what to put back after a reconnection ({photo} or {gallery}; null for no face). The
// photo stays in this page's memory only, for the call.
async function pickFace(method, path, body, busy, chosen = null) {
  showError("");
  $("face-state").textContent = busy;
  try {
    showFace(await faceRequest(method, path, body));
    state.chosen = chosen;
    markGallery();
  } catch (err) {
    $("face-state").textContent = state.faces.has(state.id)
      ? "Your previous face is still on."
      : "You appear as yourself.";
    showError(err.message);
  }
}

// What each swapper the server may run does, in one sentence for the face panel.
const SWAPPERS = {
  mesh: "This server uses its mesh swapper: the face in your photo is fitted onto your face as you move; your own eyes and mouth show through.",
  inswapper: "This server uses the inswapper_128 model: it redraws your face with the identity of the face in your photo.",
};

async function loadGallery() {
  let info;
  try {
    info = await (await fetch("/api/gallery")).json();
  } catch {
    info = { available: false, faces: [] };
  }
  $("face-unavailable").hidden = info.available;
  $("face-choices").hidden = !info.available;
  // A server that takes gallery faces only shows no upload.
  $("face-upload").hidden = info.uploads === false;
  const swapper = SWAPPERS[info.swapper];
  $("face-swapper").hidden = !info.available || !swapper;
  $("face-swapper").textContent = swapper ?? "";
  fillGallery($("gallery"), info.faces, (name) =>
    pickFace("POST", `/api/face/gallery/${encodeURIComponent(name)}`, null, "Looking for the face…", { gallery: name }));
}

// A list of gallery faces, each with its picture and name; `pick(name)` on a click.
function fillGallery(list, faces, pick) {
  list.replaceChildren(...faces.map((name) => {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "listitem");
    b.dataset.face = name;
    b.setAttribute("aria-label", `Wear the gallery face ${name}`);
    const img = document.createElement("img");
    img.src = `/api/gallery/${encodeURIComponent(name)}`;
    img.alt = "";
    const caption = document.createElement("span");
    caption.className = "name";
    caption.textContent = name;
    b.append(img, caption);
    b.addEventListener("click", () => pick(name));
    return b;
  }));
  markGallery();
}

// The gallery face chosen, if any, is marked (and said to be chosen to screen readers).
function markGallery() {
  for (const b of document.querySelectorAll(".gallery button")) {
    b.setAttribute("aria-pressed", String(state.chosen?.gallery === b.dataset.face));
  }
}

async function startPeer(iceServers) {
  const pc = new RTCPeerConnection({ iceServers });
  state.pc = pc;
  pc.onicecandidate = (e) => send({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null });
  pc.ontrack = (e) => {
    const stream = e.streams[0];
    if (!stream) return;
    state.trackOwners.set(e.track.id, stream.id);
    const self = stream.id === state.id;
    const video = self
      ? tile("self", `${state.name} (you, as others see you)`)
      : tile(stream.id, state.names.get(stream.id) ?? "Guest");
    if (video.srcObject !== stream) video.srcObject = stream;
    if (self) video.muted = true;
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (state.mode === "room") setStatus(`Room “${state.room}” · ${s}`);
    else if (s === "failed" || s === "disconnected") setStatus(`Roulette · ${s}`);
    else if (state.rouletteStatus) setStatus(state.rouletteStatus);
  };
  for (const track of state.local.getTracks()) {
    const t = pc.addTransceiver(track, { direction: "sendrecv", streams: [state.local] });
    if (track.kind === "video") preferH264(t);
  }
  await pc.setLocalDescription(await pc.createOffer());
  send({ type: "offer", sdp: pc.localDescription.sdp });
}

async function flushCandidates() {
  for (const c of state.pendingCandidates.splice(0)) await state.pc.addIceCandidate(c);
}

function closePeer() {
  state.pc?.close();
  state.pc = null;
  state.pendingCandidates = [];
  state.trackOwners.clear();
  for (const fig of document.querySelectorAll("figure:not([data-participant=self])")) fig.remove();
  // Until the server's self-view is back, show the raw camera.
  if (state.local) tile("self", `${state.name} (you)`).srcObject = state.local;
}

// ------------------------------------------------------------------------------ stats

async function updateStats() {
  if (!state.pc || $("stats").getAttribute("aria-pressed") !== "true") return;
  const report = await state.pc.getStats();
  let rtt = null;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime;
  });
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const owner = state.trackOwners.get(s.trackIdentifier);
    const id = owner === state.id ? "self" : owner;
    const overlay = document.querySelector(`figure[data-participant="${CSS.escape(id ?? "")}"] .overlay`);
    if (!overlay) return;
    const last = state.lastBytes.get(s.id);
    state.lastBytes.set(s.id, { bytes: s.bytesReceived, t: s.timestamp });
    const kbps = last ? Math.round(((s.bytesReceived - last.bytes) * 8) / (s.timestamp - last.t)) : 0;
    const fps = Math.round(s.framesPerSecond ?? 0);
    overlay.textContent = `${fps} fps · ${kbps} kb/s${rtt != null ? ` · ${Math.round(rtt * 1000)} ms` : ""}`;
  });
}

// Who speaks (the audio level of each participant's sound) and how well each one's video
// arrives (packets lost, frames per second), on their tiles, four times a second.
const tileStats = new Map(); // inbound video stats id → {lost, received}
async function watchTiles() {
  if (!state.pc) return;
  let report;
  try {
    report = await state.pc.getStats();
  } catch {
    return;
  }
  const fig = (owner) => document.querySelector(`figure[data-participant="${CSS.escape(owner === state.id ? "self" : owner ?? "")}"]`);
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const f = fig(state.trackOwners.get(s.trackIdentifier));
    if (!f) return;
    if (s.kind === "audio") {
      f.classList.toggle("speaking", (s.audioLevel ?? 0) > 0.04);
      return;
    }
    const last = tileStats.get(s.id) ?? { lost: 0, received: 0 };
    tileStats.set(s.id, { lost: s.packetsLost ?? 0, received: s.packetsReceived ?? 0 });
    const lost = (s.packetsLost ?? 0) - last.lost;
    const got = (s.packetsReceived ?? 0) - last.received;
    const share = lost + got > 0 ? lost / (lost + got) : 0;
    const level = got === 0 || share > 0.08 ? "poor" : share > 0.02 || (s.framesPerSecond ?? 30) < 10 ? "fair" : "good";
    let q = f.querySelector(".quality");
    if (!q) {
      q = document.createElement("span");
      q.className = "quality";
      q.setAttribute("role", "img");
      f.append(q);
    }
    if (q.dataset.level !== level) {
      q.dataset.level = level;
      q.setAttribute("aria-label", `connection ${level}`);
      q.title = `Connection ${level}`;
    }
  });
}

// ------------------------------------------------------------------------------ flow

// Joins the room `room`, or the roulette when `room` is null.
async function join(room, name) {
  showError("");
  clearNotice();
  state.partner = state.lastPartner = null;
  rouletteButtons();
  state.mode = room === null ? "roulette" : "room";
  state.room = room;
  state.name = name;
  state.leaving = false;
  localStorage.setItem("facerelay-name", name);
  if (room !== null) history.replaceState(null, "", `?${linkParams().toString()}`);
  setStatus("Starting camera…");
  await startCamera();
  show("call");
  tile("self", `${name} (you)`).srcObject = state.local;
  tile("self", `${name} (you)`).muted = true;
  connect();
  state.statsTimer = setInterval(updateStats, 1000);
  state.tilesTimer = setInterval(watchTiles, 250);
}

function leave() {
  showError("");
  clearNotice();
  state.partner = state.lastPartner = null;
  state.leaving = true;
  clearTimeout(state.reconnectTimer);
  clearInterval(state.statsTimer);
  clearInterval(state.tilesTimer);
  send({ type: state.mode === "roulette" ? "stop" : "leave" });
  state.ws?.close();
  closePeer();
  for (const t of state.local?.getTracks() ?? []) t.stop();
  state.local = null;
  state.faces.clear();
  state.chosen = null;
  markGallery();
  state.token = null;
  state.server = state.move = state.ticket = null;
  state.welcomed = false;
  $("face-panel").hidden = true;
  $("face").setAttribute("aria-expanded", "false");
  $("face-preview").hidden = true;
  $("face-state").textContent = "You appear as yourself.";
  $("grid").replaceChildren();
  show("landing");
  setStatus("Not connected");
}

// A link to a room (?room=NAME) is an invitation: the page says so, asks only for a name and,
// where the server swaps faces, which face to wear, which goes on before any video is sent.
async function invitation(room) {
  $("landing-title").textContent = `You are invited to room “${room}”`;
  $("join").textContent = `Join room “${room}”`;
  $("room-field").hidden = true;
  $("or").hidden = true;
  $("roulette").hidden = true;
  // Your camera before you join (it is sent only once you do).
  $("invite-camera-view").hidden = false;
  startCamera().then(() => {
    $("invite-preview").srcObject = state.local;
    $("invite-preview").hidden = false;
    $("invite-camera").textContent = "Your camera. Nothing is sent until you join.";
  }, (err) => {
    $("invite-camera").textContent = err.message;
  });
  let info;
  try {
    info = await (await fetch("/api/gallery")).json();
  } catch {
    return;
  }
  if (!info.available || info.faces.length === 0) return;
  $("invite-face").hidden = false;
  fillGallery($("invite-gallery"), info.faces, (name) => {
    // A second click puts the choice back.
    state.chosen = state.chosen?.gallery === name ? null : { gallery: name };
    markGallery();
    $("invite-face-state").textContent = state.chosen
      ? `You will wear ${name}'s face. It goes on before your video is sent.`
      : "You will appear as yourself.";
  });
}

function start(room) {
  join(room, $("name").value.trim()).catch((err) => {
    showError(err.message);
    setStatus("Not connected");
    show("landing");
  });
}
$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  start($("room").value.trim());
});
$("roulette").addEventListener("click", () => {
  if (!$("name").reportValidity()) return;
  start(null);
});
// Next, Report and Block end the pair here at once (the server says so to the partner); the
// page waits for the next pairing.
function endPair(type, text, hold) {
  removePartners();
  state.lastPartner = state.partner ?? state.lastPartner;
  state.partner = null;
  rouletteButtons();
  notice(text, hold);
  send({ type });
}
$("next").addEventListener("click", () => endPair("next", "Finding someone new…", false));
$("report").addEventListener("click", () => {
  const who = (state.partner ?? state.lastPartner)?.name ?? "this person";
  endPair("report", `Reported, thank you. You will not meet ${who} again. Finding someone new…`, true);
});
$("block").addEventListener("click", () => {
  const who = (state.partner ?? state.lastPartner)?.name ?? "this person";
  endPair("block", `Blocked. You will not meet ${who} again. Finding someone new…`, true);
});
$("leave").addEventListener("click", leave);
$("mic").addEventListener("click", (e) => toggle("audio", e.currentTarget));
$("cam").addEventListener("click", (e) => toggle("video", e.currentTarget));
$("cam-select").addEventListener("change", (e) => switchDevice("video", e.target.value));
$("mic-select").addEventListener("change", (e) => switchDevice("audio", e.target.value));
$("stats").addEventListener("click", (e) => {
  const on = e.currentTarget.getAttribute("aria-pressed") !== "true";
  e.currentTarget.setAttribute("aria-pressed", String(on));
  for (const o of document.querySelectorAll(".overlay")) o.hidden = !on;
  updateStats();
});
$("face").addEventListener("click", (e) => {
  const open = e.currentTarget.getAttribute("aria-expanded") !== "true";
  e.currentTarget.setAttribute("aria-expanded", String(open));
  $("face-panel").hidden = !open;
});
// Uploading needs the uploader's word that they may use the face.
$("face-consent").addEventListener("change", (e) => {
  $("face-file").disabled = !e.target.checked;
  $("face-file-label").setAttribute("aria-disabled", String(!e.target.checked));
});
$("face-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (file && $("face-consent").checked) {
    pickFace("POST", "/api/face?consent=true", file, "Looking for the face in your photo…", { photo: file });
  }
});
$("face-none").addEventListener("click", () => pickFace("DELETE", "/api/face", null, "Removing the face…"));
$("copy-link").addEventListener("click", async () => {
  const link = `${location.origin}/?room=${encodeURIComponent(state.room)}`;
  try { await navigator.clipboard.writeText(link); setStatus(`Link copied: ${link}`); } catch { setStatus(link); }
});

// A shared link (/?room=NAME) opens that room: straight in when the name is known.
const params = new URLSearchParams(location.search);
$("room").value = params.get("room") ?? "";
$("name").value = params.get("name") ?? localStorage.getItem("facerelay-name") ?? "";
// A link with a join token (`facerelay token`) names the room and the name it admits.
const joinToken = params.get("token");
const claims = tokenClaims(joinToken);
if (claims) {
  if (claims.room) $("room").value = claims.room;
  if (claims.name) { $("name").value = claims.name; $("name").readOnly = true; }
}
if ($("room").value) {
  invitation($("room").value);
  ($("name").value ? $("join") : $("name")).focus();
} else {
  $("name").focus();
}
// A page sent here by another node of the cluster (…&join=1) goes straight back into the call.
if (params.get("join") === "1" && $("name").value) {
  start(params.get("roulette") === "1" ? null : $("room").value);
}
show("landing");
