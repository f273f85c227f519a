// facerelay web client: join a room with camera and microphone, see everyone as the server
// relays them. Signalling protocol: docs/signalling.md. State is exposed as window.facerelay
// for the browser tests. Its words are in text.js.

import { PSEUDO, TEXT, applyText } from "./text.js";

applyText();

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
  voices: new Map(), // participant id → what its audio carries (the server says so): disguised, silenced
  voice: "none", // the voice chosen: put back on after a reconnection or a move
  token: null, // authorises the face API for this session
  trackOwners: new Map(), // remote track id -> participant id
  pending: [], // server candidates that came before its description
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
    // Four corners, drawn (no font has to carry the symbol); the label says what it does.
    full.innerHTML = '<svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2"><path d="M1 5V1h4M11 1h4v4M15 11v4h-4M5 15H1v-4"/></svg>';
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
  // The badges: what the video carries (the face), then what the audio carries (the voice).
  for (const [key, value, texts, extra] of [
    ["face", state.faces.get(owner), TEXT.tile.badges, ""],
    ["voice", state.voices.get(owner), TEXT.tile.voiceBadges, " voice"],
  ]) {
    if (!texts[value]) continue;
    const badge = document.createElement("span");
    badge.className = `badge${extra}`;
    badge.dataset[key] = value;
    badge.textContent = texts[value];
    caption.append(badge);
  }
  // Another participant's camera or microphone off: its initials instead of a black picture,
  // a muted mark beside its name.
  const media = id === "self" ? null : state.media.get(id);
  if (media?.microphone === false) {
    const muted = document.createElement("span");
    muted.className = "muted";
    muted.textContent = TEXT.tile.muted;
    caption.append(muted);
  }
  let initials = fig.querySelector(".initials");
  if (media?.camera === false) {
    if (!initials) {
      initials = document.createElement("div");
      initials.className = "initials";
      fig.append(initials);
    }
    const name = state.names.get(id) ?? TEXT.tile.guest;
    initials.textContent = name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
    initials.setAttribute("aria-label", TEXT.tile.cameraIsOff(name));
    initials.setAttribute("role", "img");
  } else {
    initials?.remove();
  }
  fig.querySelector("video").setAttribute("aria-label", TEXT.tile.video(label));
  fig.querySelector(".fullscreen").setAttribute("aria-label", TEXT.tile.fullScreen(label));
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
  $("leave").textContent = state.mode === "roulette" ? TEXT.call.stop : TEXT.call.leave;
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
      return TEXT.errors.media.blocked;
    case "NotFoundError":
      return TEXT.errors.media.notFound;
    case "NotReadableError":
      return TEXT.errors.media.inUse;
    default:
      return TEXT.errors.media.other(e.name);
  }
}

// The camera request under way, if any: a join while the invitation is still starting the
// camera waits for that request rather than opening a second stream nothing would stop.
let cameraRequest = null;

async function startCamera() {
  // The invitation's preview already holds the camera: the call uses it.
  if (state.local?.getTracks().some((t) => t.readyState === "live")) return listDevices();
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error(TEXT.errors.media.insecure);
  }
  cameraRequest ??= navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 } },
    audio: true,
  }).finally(() => { cameraRequest = null; });
  try {
    state.local = await cameraRequest;
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
      const unnamed = kind === "videoinput" ? TEXT.call.cameraNumber(i + 1) : TEXT.call.microphoneNumber(i + 1);
      const o = new Option(d.label || unnamed, d.deviceId);
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
  button.textContent = kind === "audio"
    ? (track.enabled ? TEXT.call.microphoneOn : TEXT.call.microphoneOff)
    : (track.enabled ? TEXT.call.cameraOn : TEXT.call.cameraOff);
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
  if (h264.length === 0) throw new Error(TEXT.errors.server.no_h264);
  h264.sort((a, b) => /42e01f/.test(b.sdpFmtpLine) - /42e01f/.test(a.sdpFmtpLine));
  transceiver.setCodecPreferences(h264);
}

// ------------------------------------------------------------------------- signalling

/** The query of a link to this call: the room (or the roulette), and the join token if any. */
function linkParams() {
  const q = new URLSearchParams();
  if (state.mode === "roulette") q.set("roulette", "1"); else q.set("room", state.room);
  if (joinToken) q.set("token", joinToken);
  if (PSEUDO) q.set("pseudo-text", ""); // the pseudo-translation stays on (text.js)
  return q;
}

/**
 * Continues this call on another node of the cluster: its page, joining at once. Returns false,
 * and stays, when that node does not answer (it may just have died).
 *
 * A face chosen from a photo lives only in this page, and a reload would lose it: the page would
 * join the other node as its wearer. Such a page stays and talks to that node from here (its
 * face API answers this origin), putting the face back on there before any video is sent.
 */
async function goTo(nodeUrl) {
  try {
    await fetch(new URL("/healthz", nodeUrl), { mode: "no-cors", cache: "no-store" });
  } catch {
    return false;
  }
  clearTimeout(state.reconnectTimer);
  if (state.chosen?.photo) {
    const old = state.ws;
    state.ws = null; // its close is not this page losing the server
    old?.close();
    closePeer();
    state.server = new URL("/", nodeUrl).href;
    connect();
    return true;
  }
  state.leaving = true;
  state.ws?.close();
  const q = linkParams();
  q.set("name", state.name);
  q.set("join", "1");
  // A gallery face goes along by name (a photo never leaves this page: it is chosen again).
  if (state.chosen?.gallery) q.set("face", state.chosen.gallery);
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

/** The signalling socket of the node this page talks to. */
function socket() {
  const server = new URL(state.server ?? location.href);
  return new WebSocket(`${server.protocol === "https:" ? "wss" : "ws"}://${server.host}/ws`);
}

function connect() {
  setStatus(state.retries ? TEXT.status.reconnecting : TEXT.status.connecting);
  const ws = socket();
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
  setStatus(TEXT.status.reconnectingIn(delay));
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
  $("face-state").textContent = again ? TEXT.face.puttingBackOn : TEXT.face.puttingOn;
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
    $("face-state").textContent = TEXT.face.asYourself;
    relabel(state.id);
    const reason = err.message.replace(/\.$/, "");
    showError(again ? TEXT.face.notPutBackOn(reason) : TEXT.face.notPutOn(reason));
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
        setStatus(TEXT.status.roomServerSilent(delay));
        state.reconnectTimer = setTimeout(() => send(joinMessage()), delay * 1000);
      }
      break;
    case "roulette-move":
      state.move = { url: msg.url, ticket: msg.ticket };
      setStatus(TEXT.status.rouletteMove);
      break;
    case "welcome":
      state.retries = 0;
      state.nodes = msg.nodes ?? [];
      state.id = msg.id;
      state.token = msg.token;
      showError("");
      state.faces.clear();
      state.voices.clear();
      for (const p of msg.participants) noteParticipant(p);
      loadGallery();
      await reapplyFace(state.welcomed);
      // The voice too, before any audio is published.
      if (state.voice !== "none") await chooseVoice(state.voice);
      state.welcomed = true;
      await startPeer(msg.iceServers);
      sendMedia();
      setStatus(state.mode === "roulette" ? TEXT.status.rouletteConnectingMedia : TEXT.status.roomConnectingMedia(msg.room));
      break;
    case "roulette-waiting":
      removePartners();
      state.rouletteStatus = msg.online > 1
        ? TEXT.roulette.waitingWithOthers(msg.online)
        : TEXT.roulette.waitingAlone;
      setStatus(state.rouletteStatus);
      rouletteButtons();
      break;
    case "roulette-paired":
      noteParticipant(msg.partner);
      state.rouletteStatus = TEXT.roulette.talkingWith(msg.partner.name);
      setStatus(state.rouletteStatus);
      // With nobody else waiting, the roulette pairs the same two again: say so.
      notice(msg.partner.id === state.lastPartner?.id
        ? TEXT.roulette.sameAgain(msg.partner.name)
        : "");
      state.partner = msg.partner;
      rouletteButtons();
      break;
    case "roulette-ended":
      removePartners();
      state.lastPartner = state.partner ?? state.lastPartner;
      state.partner = null;
      rouletteButtons();
      notice(TEXT.roulette.ended[msg.reason] ?? TEXT.roulette.endedOtherwise);
      break;
    case "answer":
    case "offer":
    case "candidate":
      await negotiate(state, msg, send);
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
    case "voice-state":
      noteVoice(state.id, msg.state);
      $("voice-state").textContent = voiceStateText(msg.state, msg.reason);
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
      showError(TEXT.errors.server[msg.code] ?? msg.message);
      break;
    case "bye":
      showError(TEXT.errors.serverEnded(msg.reason));
      break;
  }
}

function noteParticipant(p) {
  state.names.set(p.id, p.name);
  state.media.set(p.id, { camera: p.camera !== false, microphone: p.microphone !== false });
  noteFace(p.id, p.face ?? (p.swapped ? "swapped" : "none"));
  noteVoice(p.id, p.voice);
}

function noteVoice(id, voice) {
  if (voice && voice !== "none") state.voices.set(id, voice); else state.voices.delete(id);
}

function voiceStateText(voice, reason) {
  if (voice === "silenced") return TEXT.voice.silenced[reason] ?? TEXT.voice.silenced.error;
  return voice === "disguised" ? TEXT.voice.disguised : TEXT.voice.own;
}

// Makes `voice` this participant's (from the next audio packet on). Before a session there is
// nothing to call: the choice is kept and made at the welcome.
async function chooseVoice(voice) {
  state.voice = voice;
  $("voice-select").value = voice;
  if (!state.token) return;
  $("voice-state").textContent = TEXT.voice.choosing;
  try {
    await faceRequest("PUT", "/api/voice", JSON.stringify({ voice }));
    noteVoice(state.id, voice === "none" ? "none" : "disguised");
    $("voice-state").textContent = voiceStateText(state.voices.get(state.id) ?? "none");
    relabel(state.id);
  } catch (err) {
    showError(TEXT.voice.notChosen(err.message.replace(/\.$/, "")));
    $("voice-state").textContent = voiceStateText(state.voices.get(state.id) ?? "none");
  }
}

function noteFace(id, face) {
  if (face && face !== "none") state.faces.set(id, face); else state.faces.delete(id);
}

// What the wearer is told about its own face, by state and reason.
function faceStateText(face, reason) {
  const busy = reason === "busy";
  switch (face) {
    case "swapped": return TEXT.face.swapped;
    case "held": return busy ? TEXT.face.heldBusy : TEXT.face.heldLost;
    case "blurred": return !reason ? TEXT.face.blurredStarting : busy ? TEXT.face.blurredBusy : TEXT.face.blurredLost;
    case "unswapped": return TEXT.face.unswapped;
    default: return TEXT.face.asYourself;
  }
}

// Redraws a tile's caption (name and badge) after a change.
function relabel(id) {
  const self = id === state.id;
  const fig = document.querySelector(`figure[data-participant="${CSS.escape(self ? "self" : id)}"]`);
  if (!fig) return;
  const label = self ? fig.querySelector("figcaption").firstChild?.textContent ?? "" : state.names.get(id) ?? TEXT.tile.guest;
  tile(self ? "self" : id, label);
}

// ------------------------------------------------------------------------- face picker

// A call to the face or voice API for the call's session, or for the one `token` names (the preview's).
async function faceRequest(method, path, body, token = state.token) {
  const response = await fetch(new URL(path, state.server ?? location.href), {
    method,
    body,
    headers: { Authorization: `Bearer ${token}` },
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(TEXT.errors.face[json.code] ?? json.message ?? TEXT.errors.serverAnswered(response.status));
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
      ? TEXT.face.previousStillOn
      : TEXT.face.asYourself;
    showError(err.message);
  }
}

async function loadGallery() {
  const info = await galleryInfo();
  $("face-unavailable").hidden = info.available;
  $("face-choices").hidden = !info.available;
  // A server that takes gallery faces only shows no upload.
  $("face-upload").hidden = info.uploads === false;
  const swapper = TEXT.face.swappers[info.swapper];
  $("face-swapper").hidden = !info.available || !swapper;
  $("face-swapper").textContent = swapper ?? "";
  fillGallery($("gallery"), info.faces, (name) =>
    pickFace("POST", `/api/face/gallery/${encodeURIComponent(name)}`, null, TEXT.face.lookingGallery, { gallery: name }));
}

// A list of gallery faces, each with its picture and name; `pick(name)` on a click.
function fillGallery(list, faces, pick) {
  list.replaceChildren(...faces.map((name) => {
    const item = document.createElement("div");
    item.setAttribute("role", "listitem");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.face = name;
    b.setAttribute("aria-label", TEXT.face.wear(name));
    const img = document.createElement("img");
    img.src = `/api/gallery/${encodeURIComponent(name)}`;
    img.alt = "";
    const caption = document.createElement("span");
    caption.className = "name";
    caption.textContent = name;
    b.append(img, caption);
    b.addEventListener("click", () => pick(name));
    item.append(b);
    return item;
  }));
  markGallery();
}

// The gallery face chosen, if any, is marked (and said to be chosen to screen readers).
function markGallery() {
  for (const b of document.querySelectorAll(".gallery button")) {
    b.setAttribute("aria-pressed", String(state.chosen?.gallery === b.dataset.face));
  }
}

// A connection that sends the camera and microphone to the server (the call's or the preview's);
// `say` sends a signalling message on its socket. The offer goes out once `ontrack` is set.
function mediaConnection(iceServers, say) {
  const pc = new RTCPeerConnection({ iceServers });
  pc.onicecandidate = (e) => say({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null });
  for (const track of state.local.getTracks()) {
    const t = pc.addTransceiver(track, { direction: "sendrecv", streams: [state.local] });
    if (track.kind === "video") preferH264(t);
  }
  return pc;
}

async function sendOffer(pc, say) {
  await pc.setLocalDescription(await pc.createOffer());
  say({ type: "offer", sdp: pc.localDescription.sdp });
}

// The server's side of a negotiation (`answer`, `offer`, `candidate`) for `conn`, the call
// (`state`) or the preview: each holds `pc` and the candidates that came before its
// description (`pending`).
async function negotiate(conn, msg, say) {
  const pc = conn.pc;
  if (!pc) return;
  if (msg.type === "candidate") {
    if (pc.remoteDescription) await pc.addIceCandidate(msg.candidate);
    else conn.pending.push(msg.candidate);
    return;
  }
  await pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp });
  if (msg.type === "offer") {
    await pc.setLocalDescription(await pc.createAnswer());
    say({ type: "answer", sdp: pc.localDescription.sdp });
  }
  for (const c of conn.pending.splice(0)) await pc.addIceCandidate(c);
}

async function startPeer(iceServers) {
  const pc = mediaConnection(iceServers, send);
  state.pc = pc;
  pc.ontrack = (e) => {
    const stream = e.streams[0];
    if (!stream) return;
    state.trackOwners.set(e.track.id, stream.id);
    const self = stream.id === state.id;
    const video = self
      ? tile("self", TEXT.tile.youAsOthersSeeYou(state.name))
      : tile(stream.id, state.names.get(stream.id) ?? TEXT.tile.guest);
    if (video.srcObject !== stream) video.srcObject = stream;
    if (self) video.muted = true;
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    const said = TEXT.status.connection[s] ?? s;
    if (state.mode === "room") setStatus(TEXT.status.room(state.room, said));
    else if (s === "failed" || s === "disconnected") setStatus(TEXT.status.roulette(said));
    else if (state.rouletteStatus) setStatus(state.rouletteStatus);
  };
  await sendOffer(pc, send);
}

function closePeer() {
  state.pc?.close();
  state.pc = null;
  state.pending = [];
  state.trackOwners.clear();
  for (const fig of document.querySelectorAll("figure:not([data-participant=self])")) fig.remove();
  // Until the server's self-view is back, show the raw camera.
  if (state.local) tile("self", TEXT.tile.you(state.name)).srcObject = state.local;
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
    // Two reads close together see the same sample: nothing new to show.
    if (last && s.timestamp <= last.t) return;
    state.lastBytes.set(s.id, { bytes: s.bytesReceived, t: s.timestamp });
    const kbps = last ? Math.round(((s.bytesReceived - last.bytes) * 8) / (s.timestamp - last.t)) : 0;
    const fps = Math.round(s.framesPerSecond ?? 0);
    overlay.textContent = TEXT.tile.stats(fps, kbps, rtt != null ? Math.round(rtt * 1000) : null);
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
      q.setAttribute("aria-label", TEXT.tile.quality[level]);
      q.title = TEXT.tile.qualityTitle[level];
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
  setStatus(TEXT.status.startingCamera);
  await startCamera();
  stopPreview();
  show("call");
  tile("self", TEXT.tile.you(name)).srcObject = state.local;
  tile("self", TEXT.tile.you(name)).muted = true;
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
  $("face-state").textContent = TEXT.face.asYourself;
  for (const [id, on] of [["mic", TEXT.call.microphoneOn], ["cam", TEXT.call.cameraOn]]) {
    $(id).setAttribute("aria-pressed", "true");
    $(id).textContent = on;
  }
  $("grid").replaceChildren();
  // The camera is off again: the preview screen waits to be asked for.
  stopPreview();
  $("invite-preview").srcObject = null;
  $("invite-camera-view").hidden = $("invite-face").hidden = true;
  $("invite-face-state").textContent = TEXT.invitation.asYourself;
  offerTryFace();
  show("landing");
  setStatus(TEXT.status.notConnected);
}

// "Try on a face first", where the server has gallery faces to try.
async function offerTryFace() {
  const info = await galleryInfo();
  $("try-face").hidden = !(info.available && info.faces.length > 0) || !$("invite-camera-view").hidden;
}

// A link to a room (?room=NAME) is an invitation: the page says so, asks only for a name and,
// where the server swaps faces, which face to wear, which goes on before any video is sent.
function invitation(room) {
  $("landing-title").textContent = TEXT.invitation.title(room);
  $("join").textContent = TEXT.invitation.join(room);
  $("room-field").hidden = true;
  $("or").hidden = true;
  $("roulette").hidden = true;
  previewScreen();
}

// Your camera and the gallery before you join: on an invitation at once, on the landing page
// when you ask ("Try on a face first"). A face chosen here goes on before any video is sent.
async function previewScreen() {
  $("try-face").hidden = true;
  $("invite-camera-view").hidden = false;
  $("invite-camera").textContent = TEXT.invitation.cameraStarting;
  startCamera().then(() => {
    if (!preview.pc) showOwnCamera();
  }, (err) => {
    $("invite-camera").textContent = err.message;
  });
  const info = await galleryInfo();
  if (!info.available || info.faces.length === 0) return;
  $("invite-face").hidden = false;
  fillGallery($("invite-gallery"), info.faces, (name) => {
    // A second click puts the choice back.
    state.chosen = state.chosen?.gallery === name ? null : { gallery: name };
    markGallery();
    $("invite-face-state").textContent = state.chosen
      ? TEXT.invitation.wearing(name)
      : TEXT.invitation.asYourself;
    if (state.chosen) startPreview();
    else stopPreview();
  });
}

async function galleryInfo() {
  try {
    return await (await fetch("/api/gallery")).json();
  } catch {
    return { available: false, faces: [] };
  }
}

function showOwnCamera() {
  if (!state.local) return;
  $("invite-preview").srcObject = state.local;
  $("invite-preview").hidden = false;
  $("invite-camera").textContent = TEXT.invitation.cameraReady;
}

// ------------------------------------------------------------------------------ preview

// Before joining, with a gallery face chosen: the camera goes to the server in a preview of its
// own (signalling `preview`: nobody else sees it) and comes back with the face on, as the others
// will see it. Without a face nothing is sent: the preview is the camera itself.
const preview = { ws: null, pc: null, token: null, pending: [] };
state.preview = preview;

async function startPreview() {
  const face = state.chosen?.gallery;
  if (!face) return;
  $("invite-camera").textContent = TEXT.invitation.previewStarting(face);
  if (preview.token) return previewFace();
  if (preview.ws) return; // the welcome puts the face on
  const ws = socket();
  preview.ws = ws;
  const say = (msg) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); };
  ws.onopen = () => say({ type: "preview", ...(joinToken ? { token: joinToken } : {}) });
  ws.onmessage = (e) => onPreviewMessage(JSON.parse(e.data), say).catch((err) => previewFailed(err.message));
  ws.onclose = () => { if (preview.ws === ws) previewFailed(TEXT.invitation.previewLost); };
}

async function onPreviewMessage(msg, say) {
  switch (msg.type) {
    case "welcome":
      preview.token = msg.token;
      if (!state.local) await startCamera();
      await previewFace();
      preview.pc = mediaConnection(msg.iceServers, say);
      preview.pc.ontrack = (e) => {
        const stream = e.streams[0];
        if (e.track.kind !== "video" || !stream) return;
        $("invite-preview").srcObject = stream;
        $("invite-preview").hidden = false;
        $("invite-camera").textContent = TEXT.invitation.previewing(state.chosen?.gallery ?? "");
      };
      await sendOffer(preview.pc, say);
      break;
    case "face-state":
      $("invite-face-state").textContent = faceStateText(msg.state, msg.reason);
      break;
    case "error":
      previewFailed(TEXT.errors.server[msg.code] ?? msg.message);
      break;
    default:
      await negotiate(preview, msg, say);
  }
}

// Puts the chosen face on the preview (or takes it off).
async function previewFace() {
  const face = state.chosen?.gallery;
  if (!preview.token || !face) return;
  await faceRequest("POST", `/api/face/gallery/${encodeURIComponent(face)}`, null, preview.token);
  if (preview.pc) $("invite-camera").textContent = TEXT.invitation.previewing(face);
}

// Ends the preview (its seat on the server is freed) and shows the camera itself again.
function stopPreview() {
  const { ws, pc } = preview;
  Object.assign(preview, { ws: null, pc: null, token: null, pending: [] });
  if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "leave" }));
  ws?.close();
  pc?.close();
  showOwnCamera();
}

function previewFailed(why) {
  stopPreview();
  $("invite-camera").textContent = TEXT.invitation.previewFailed(why.replace(/\.$/, ""));
}

function start(room) {
  join(room, $("name").value.trim()).catch((err) => {
    showError(err.message);
    setStatus(TEXT.status.notConnected);
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
$("next").addEventListener("click", () => endPair("next", TEXT.roulette.findingSomeoneNew, false));
$("report").addEventListener("click", () => {
  const who = (state.partner ?? state.lastPartner)?.name ?? TEXT.roulette.thisPerson;
  endPair("report", TEXT.roulette.reported(who), true);
});
$("block").addEventListener("click", () => {
  const who = (state.partner ?? state.lastPartner)?.name ?? TEXT.roulette.thisPerson;
  endPair("block", TEXT.roulette.blocked(who), true);
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
    pickFace("POST", "/api/face?consent=true", file, TEXT.face.lookingPhoto, { photo: file });
  }
});
$("voice-select").addEventListener("change", (e) => chooseVoice(e.target.value));
$("face-none").addEventListener("click", () => pickFace("DELETE", "/api/face", null, TEXT.face.removing));
$("copy-link").addEventListener("click", async () => {
  const link = `${location.origin}/?room=${encodeURIComponent(state.room)}`;
  try { await navigator.clipboard.writeText(link); setStatus(TEXT.status.linkCopied(link)); } catch { setStatus(link); }
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
$("try-face").addEventListener("click", () => previewScreen());
if ($("room").value) {
  invitation($("room").value);
  ($("name").value ? $("join") : $("name")).focus();
} else {
  offerTryFace();
  $("name").focus();
}
// A page sent here by another node of the cluster (…&join=1) goes straight back into the call,
// wearing the gallery face it wore there (…&face=NAME), put on before its video is relayed.
if (params.get("join") === "1" && $("name").value) {
  if (params.get("face")) state.chosen = { gallery: params.get("face") };
  start(params.get("roulette") === "1" ? null : $("room").value);
}
show("landing");
