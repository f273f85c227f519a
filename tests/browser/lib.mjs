// Shared by the browser tests: Debian Chromium with a fake camera, and what a page shows.

import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      // A server with a self-signed certificate: accept that certificate's key, and only it.
      ...(process.env.CHROMIUM_ACCEPT_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.CHROMIUM_ACCEPT_SPKI}`] : []),
      // Names resolved to test addresses, e.g. "MAP facerelay.test 192.0.2.2" (the deployment test).
      ...(process.env.CHROMIUM_HOST_RULES ? [`--host-resolver-rules=${process.env.CHROMIUM_HOST_RULES}`] : []),
      // A y4m file as the camera instead of Chromium's test pattern (FAKE_VIDEO=path).
      ...(process.env.FAKE_VIDEO ? [`--use-file-for-fake-video-capture=${process.env.FAKE_VIDEO}`] : []),
      // A WAV file as the microphone instead of Chromium's beeps (FAKE_AUDIO=path; it loops).
      ...(process.env.FAKE_AUDIO ? [`--use-file-for-fake-audio-capture=${process.env.FAKE_AUDIO}`] : []),
    ],
  });
}

// A page of its own (its own context) at `url`, with `name` typed in; `init`, if given, runs in
// the page before its own scripts.
export async function openPage(browser, url, name, viewport = { width: 960, height: 720 }, init = null) {
  const context = await browser.newContext({ viewport });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.log(`[${name}] ${m.text()}`); });
  // The signalling a page exchanged (when, which way, which message; an SDP's media sections),
  // for failure messages: `signalling(page)`.
  page.signalling = [];
  const start = Date.now();
  page.on("websocket", (ws) => {
    const note = (dir) => (f) => {
      let m;
      try { m = JSON.parse(f.payload); } catch { return; }
      if (m.type === "candidate") return;
      const media = m.sdp ? ` m=${(m.sdp.match(/^m=/gm) ?? []).length}` : "";
      page.signalling.push(`${Date.now() - start} ${dir} ${m.type}${media}${m.code ? ` ${m.code}` : ""}`);
    };
    ws.on("framesent", note(">"));
    ws.on("framereceived", note("<"));
    const origin = new URL(ws.url()).host;
    page.signalling.push(`${Date.now() - start} open ${origin}`);
    ws.on("close", () => page.signalling.push(`${Date.now() - start} closed ${origin}`));
  });
  // A cluster node may send the page to another: the log says when and where.
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) page.signalling.push(`${Date.now() - start} page ${f.url()}`);
  });
  await page.goto(url);
  // A link with a join token fills the name itself (read-only).
  if (!(await page.locator("#name").evaluate((e) => e.readOnly))) await page.fill("#name", name);
  return page;
}

// Remote tiles (name, video size), frames decoded across inbound video, status and errors.
export async function look(page) {
  return page.evaluate(async () => {
    const remote = [...document.querySelectorAll("figure:not([data-participant=self])")].map((f) => {
      const v = f.querySelector("video");
      // The caption is the name, then the face badge when the server reports one.
      const caption = f.querySelector("figcaption");
      const badge = caption?.querySelector(".badge")?.textContent ?? null;
      const name = caption?.firstChild?.textContent;
      return { name, badge, width: v.videoWidth, height: v.videoHeight };
    });
    let framesDecoded = 0;
    const stats = await window.facerelay.pc?.getStats();
    stats?.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") framesDecoded += s.framesDecoded ?? 0;
    });
    const error = document.getElementById("error");
    return {
      remote,
      framesDecoded,
      status: document.getElementById("status").textContent,
      error: error.hidden ? null : error.textContent,
    };
  });
}

// What a page's call connection carries: each transceiver's mid, direction and received track,
// and the stream ids the last remote description gave its tracks (a failed check's detail).
export async function transceivers(page) {
  return page.evaluate(() => {
    const pc = window.facerelay.pc;
    if (!pc) return null;
    return {
      signaling: pc.signalingState,
      transceivers: pc.getTransceivers().map((t) => ({
        mid: t.mid, direction: t.direction, current: t.currentDirection,
        kind: t.receiver.track.kind, track: t.receiver.track.id, state: t.receiver.track.readyState,
      })),
      msid: (pc.remoteDescription?.sdp ?? "").split("\r\n").filter((l) => l.startsWith("a=msid:")),
    };
  });
}

// What a page's camera uplink does (its outbound video and the connection's estimate): frames
// captured, encoded and sent, bytes, why the encoder limits quality (`bandwidth`, `cpu`), and
// the bandwidth the browser believes it has. For failure messages.
export async function uplink(page) {
  return page.evaluate(async () => {
    const stats = await window.facerelay.pc?.getStats();
    const out = {};
    stats?.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        Object.assign(out, {
          framesEncoded: s.framesEncoded, framesSent: s.framesSent, bytesSent: s.bytesSent,
          width: s.frameWidth, fps: s.framesPerSecond, targetBitrate: s.targetBitrate,
          limitedBy: s.qualityLimitationReason, limitedFor: s.qualityLimitationDurations,
          keyFramesEncoded: s.keyFramesEncoded, pli: s.pliCount, nack: s.nackCount,
        });
      }
      // What the camera gave the encoder: its frames, and the track's state.
      if (s.type === "media-source" && s.kind === "video") {
        Object.assign(out, { sourceFrames: s.frames, sourceFps: s.framesPerSecond });
      }
      if (s.type === "candidate-pair" && s.nominated) {
        out.availableOutgoingBitrate = s.availableOutgoingBitrate;
        out.rtt = s.currentRoundTripTime;
      }
    });
    const camera = window.facerelay.local?.getVideoTracks()[0];
    if (camera) out.camera = { state: camera.readyState, muted: camera.muted, enabled: camera.enabled };
    return out;
  });
}

// What a page receives, per incoming video track: packets, frames received and decoded,
// keyframes, and the keyframe requests (PLI, FIR) and NACKs it sent. For failure messages.
export async function inbound(page) {
  return page.evaluate(async () => {
    const stats = await window.facerelay.pc?.getStats();
    const out = [];
    stats?.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out.push({
          track: s.trackIdentifier, owner: window.facerelay.trackOwners.get(s.trackIdentifier) ?? null,
          packets: s.packetsReceived, lost: s.packetsLost, framesReceived: s.framesReceived,
          framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded, width: s.frameWidth,
          pli: s.pliCount, fir: s.firCount, nack: s.nackCount,
        });
      }
    });
    return out;
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `check(page state)` on each page until all pass or `ms` elapse; returns the states. A
// page that is navigating (a cluster node sent it to another) counts as not there yet.
export async function until(pages, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  let states;
  while (Date.now() < deadline) {
    states = await Promise.all(pages.map((p) => look(p).catch(() => null)));
    if (states.every((s) => s !== null && check(s))) return { ok: true, states };
    await sleep(300);
  }
  return { ok: false, states };
}

// Waits until the other participant's tile (the first remote tile) carries a badge with this
// text; returns whether it did within `ms` (one generous deadline: a loaded machine's swap stage
// may take a while to report its first swapped frames).
export async function waitForBadge(page, text, ms = 45_000) {
  return page
    .waitForFunction((t) => [...document.querySelectorAll("figure:not([data-participant=self]) .badge")]
      .some((b) => b.textContent === t), text, { timeout: ms })
    .then(() => true, () => false);
}

// Ann and Bob join the room of `link`, Ann first; resolves once Bob sees Ann's 640-px video.
export async function annAndBob(browser, link) {
  const ann = await openPage(browser, link, "Ann");
  await ann.click("#join");
  const bob = await openPage(browser, link, "Bob");
  await bob.click("#join");
  const r = await until([bob], (s) => s.remote.length === 1 && s.remote[0].width === 640);
  if (!r.ok) {
    const detail = { bob: r.states, bobCall: await transceivers(bob), ann: await look(ann), annCall: await transceivers(ann), annUplink: await uplink(ann), annSignalling: ann.signalling, bobSignalling: bob.signalling };
    throw new Error(`Bob does not see Ann: ${JSON.stringify(detail)}`);
  }
  return { ann, bob };
}

// A failed check: says what and with which states, and returns false (the script then exits 1).
export function fail(what, detail) {
  console.log(`FAIL: ${what}: ${JSON.stringify(detail)}`);
  return false;
}

// Page states: the one remote tile is `name`'s video, playing; or nobody, waiting in the roulette.
export const playing = (name) => (s) =>
  s.remote.length === 1 && s.remote[0].name === name && s.remote[0].width > 0 && s.framesDecoded > 0;
export const waiting = (s) => s.remote.length === 0 && /Waiting/.test(s.status);

// Runs `run` (true when every check passed), closes the browser whatever happens, and exits
// with the outcome.
export async function finish(browser, run) {
  let ok = false;
  try {
    ok = await run();
  } finally {
    await browser.close();
  }
  process.exit(ok ? 0 : 1);
}

// Mean RGB of a rectangle [x0, y0, x1, y1] of the video `selector` finds, drawn at its natural
// size.
export async function meanRgb(page, selector, rect) {
  return page.evaluate(([sel, [a, b, c, d]]) => {
    const v = document.querySelector(sel);
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(v, 0, 0);
    const px = ctx.getImageData(a, b, c - a, d - b).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < px.length; i += 4) for (let k = 0; k < 3; k++) sum[k] += px[i + k];
    return sum.map((s) => Math.round(s / (px.length / 4)));
  }, [selector, rect]);
}

// Resolves true when the video `selector` finds shows its next frame, false after `ms`.
export async function nextFrame(page, selector, ms) {
  return page.evaluate(([sel, ms]) => new Promise((done) => {
    document.querySelector(sel).requestVideoFrameCallback(() => done(true));
    setTimeout(() => done(false), ms);
  }), [selector, ms]);
}

// Waits for `n` more frames of the video `selector` (each a decoded frame, not a timer tick),
// counted in the page (one round trip, whatever the machine's load); false if they do not come
// within `ms`.
export async function frames(page, selector, n, ms) {
  return page.evaluate(([sel, n, ms]) => new Promise((done) => {
    const video = document.querySelector(sel);
    let seen = 0;
    const timer = setTimeout(() => done(false), ms);
    const next = () => video.requestVideoFrameCallback(() => {
      seen += 1;
      if (seen >= n) { clearTimeout(timer); done(true); } else next();
    });
    next();
  }), [selector, n, ms]);
}

// Resolves once the page has drawn twice: what is in its DOM now is laid out and painted.
export async function rendered(page) {
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
}

// Waits until the element `selector` reads `text`; false after `ms`.
export async function waitForText(page, selector, text, ms = 45_000) {
  return page
    .waitForFunction(([sel, t]) => document.querySelector(sel)?.textContent === t, [selector, text], { timeout: ms })
    .then(() => true, () => false);
}

// The centre half of a face box "x0,y0,x1,y1" (where the stand-in swapper paints green).
export function faceCore(box) {
  const [x0, y0, x1, y1] = box.split(",").map(Number);
  return [x0 + (x1 - x0) / 4, y0 + (y1 - y0) / 4, x1 - (x1 - x0) / 4, y1 - (y1 - y0) / 4].map(Math.round);
}

// Whether a mean RGB is the stand-in swapper's green.
export const green = ([r, g, b]) => g - r > 40 && g - b > 40;
