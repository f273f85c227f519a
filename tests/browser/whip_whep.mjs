// WHIP and WHEP in Debian Chromium. A small test page publishes its fake camera with WHIP
// (POST /whip/ROOM with the publish key in KEY) as "Whipper", wearing the gallery face FACE; a
// room page joins the room and sees Whipper's video with the face-swapped badge; the watch page (/watch/ROOM/Whipper, a WHEP viewer) shows it
// full-window (screenshot watch.png). Then the publisher ends its session (DELETE) and
// publishes again: the watch page notices the stream stopped and plays the new one by itself;
// and when the watch page's own connection drops, it plays again too.
// Prints one JSON line of what it saw.
// Usage: KEY=… node tests/browser/whip_whep.mjs URL DIR

import { fail, finish, launch, openPage, sleep, until, waitForBadge } from "./lib.mjs";

const [base, dir = "test-artifacts"] = process.argv.slice(2);
const room = `whip-${Date.now()}`;
const browser = await launch();

// Publishes the page's camera with WHIP; returns the response's status and headers.
const whipPublish = (page) => page.evaluate(async ({ room, key, face }) => {
  const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 2000);
  });
  const response = await fetch(`/whip/${room}?name=Whipper&face=${face}`, {
    method: "POST",
    body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${key}` },
  });
  const answer = await response.text();
  if (response.status === 201) await pc.setRemoteDescription({ type: "answer", sdp: answer });
  window.whip = { pc, media, location: response.headers.get("Location") };
  return {
    status: response.status,
    location: response.headers.get("Location"),
    etag: response.headers.get("ETag"),
    token: response.headers.get("facerelay-token"),
    candidates: (answer.match(/a=candidate:/g) ?? []).length,
  };
}, { room, key: process.env.KEY, face: process.env.FACE });

const whipEnd = (page) => page.evaluate(async () => {
  const response = await fetch(window.whip.location, { method: "DELETE" });
  window.whip.pc.close();
  for (const t of window.whip.media.getTracks()) t.stop();
  return response.status;
});

// The watch page's video: its size and frames decoded.
const watched = (page) => page.evaluate(async () => {
  const v = document.getElementById("video");
  let frames = 0;
  (await window.facerelayWatch.pc?.getStats())?.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded ?? 0;
  });
  return { width: v.videoWidth, height: v.videoHeight, frames, status: document.getElementById("status").textContent };
});

// Waits until the watch page plays, on a session other than `old` (its resource URL).
async function waitWatching(page, ms = 30_000, old = null) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = { ...(await watched(page)), resource: await page.evaluate(() => window.facerelayWatch.resource) };
    if (last.width > 0 && last.frames > 10 && last.resource && last.resource !== old) return { ok: true, last };
    await sleep(250);
  }
  return { ok: false, last };
}

async function run() {
  const publisher = await openPage(browser, base, "publisher");
  const first = await whipPublish(publisher);
  if (first.status !== 201) return fail("WHIP answers 201", first);
  const viewer = await openPage(browser, `${base}?room=${room}`, "Ann");
  await viewer.click("#join");
  // Its caption: the name, then the badge.
  let r = await until([viewer], (s) => s.remote.some((t) => t.name?.startsWith("Whipper") && t.width > 0) && s.framesDecoded > 0);
  if (!r.ok) return fail("the room page sees Whipper", r.states);
  if (!(await waitForBadge(viewer, "face-swapped"))) return fail("Whipper's tile says face-swapped", await viewer.textContent("#grid"));

  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const watch = await context.newPage();
  await watch.goto(`${base}watch/${room}/Whipper`);
  let w = await waitWatching(watch);
  if (!w.ok) return fail("the watch page plays Whipper", w.last);
  await watch.screenshot({ path: `${dir}/watch.png` });
  const box = await watch.evaluate(() => { const r = document.getElementById("video").getBoundingClientRect(); return [r.width, r.height]; });

  const old = w.last.resource;
  const t0 = Date.now();
  const deleted = await whipEnd(publisher);
  const second = await whipPublish(publisher);
  if (second.status !== 201) return fail("WHIP again", second);
  w = await waitWatching(watch, 40_000, old);
  const recovered = Date.now() - t0;
  if (!w.ok) return fail("the watch page plays Whipper again", w.last);
  // The watch page's own connection drops: it starts again by itself.
  const t1 = Date.now();
  await watch.evaluate(() => window.facerelayWatch.pc.close());
  w = await waitWatching(watch, 30_000, w.last.resource);
  const recoveredOwn = Date.now() - t1;
  if (!w.ok) return fail("the watch page recovers from its own dropped connection", w.last);
  console.log(JSON.stringify({ first, deleted, second, box, recoveredMs: recovered, recoveredOwnMs: recoveredOwn, watch: w.last }));
  if (box[0] !== 1280 || box[1] !== 720) return fail("the video fills the window", box);
  return true;
}

await finish(browser, run);
