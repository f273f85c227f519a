// An invitation in Debian Chromium: Bob is in room R; Ann opens the room's link (/?room=R). Her
// page says she is invited to R and what facerelay does, shows her camera, asks only for her
// name and a face (the room is fixed, no roulette), and she picks the gallery face "Ada" before
// joining: her preview then shows her camera through the server with Ada's face on (the stand-in
// swapper paints the face green; both cameras are the drawn test card), and joining ends the
// preview's seat. Bob's page puts Ann's tile full screen with its button, and back. Bob's
// page records the badge on Ann's tile from its first appearance: her face is on before her
// video arrives, so it never reads as unswapped. Screenshot invite.png.
// Usage: FAKE_VIDEO=card.y4m node tests/browser/invite.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR FACE_BOX

import { faceCore, fail, finish, green, launch, meanRgb, openPage, sleep, until } from "./lib.mjs";

const [base, dir = "test-artifacts", box] = process.argv.slice(2);

// A figure of the server's /metrics, as the page reads it.
async function figure(page, name) {
  return page.evaluate(async (n) => {
    const text = await (await fetch("/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith(n));
    return line ? Number(line.split(" ").pop()) : null;
  }, name);
}
const browser = await launch();
const room = `invite-${Date.now()}`;
const link = `${base}?room=${room}`;

async function run() {
  const bob = await openPage(browser, base, "Bob");
  await bob.fill("#room", room);
  await bob.click("#join");
  let r = await until([bob], (s) => /connected/.test(s.status));
  if (!r.ok) return fail("Bob is in the room", r.states);

  const ann = await openPage(browser, link, "Ann");
  await ann.waitForSelector("#invite-gallery button[data-face=Ada]", { timeout: 10_000 });
  const screen = await ann.evaluate(() => {
    const visible = (id) => { const e = document.getElementById(id); return !!e && !e.hidden && e.offsetParent !== null; };
    return {
      title: document.getElementById("landing-title").textContent,
      what: document.getElementById("what").textContent.replace(/\s+/g, " ").trim(),
      join: document.getElementById("join").textContent,
      room: visible("room-field"),
      roulette: visible("roulette"),
      faces: [...document.querySelectorAll("#invite-gallery button")].map((b) => b.querySelector(".name").textContent),
    };
  });
  const expected = {
    title: `You are invited to room “${room}”`,
    join: `Join room “${room}”`,
    room: false,
    roulette: false,
    faces: ["Ada"],
  };
  for (const [k, v] of Object.entries(expected)) {
    if (JSON.stringify(screen[k]) !== JSON.stringify(v)) return fail(`invitation screen: ${k}`, screen);
  }
  if (!/everyone in the call is told when a face is swapped/.test(screen.what)) return fail("the landing says what facerelay does", screen.what);
  const preview = await ann
    .waitForFunction(() => document.getElementById("invite-preview").videoWidth > 0, null, { timeout: 10_000 })
    .then(() => true, () => false);
  if (!preview) return fail("the invitation shows Ann's camera", await ann.textContent("#invite-camera"));
  const core = faceCore(box);
  const camera = await meanRgb(ann, "#invite-preview", core);
  if (green(camera)) return fail("before a face is chosen the preview is the camera itself", camera);
  if ((await figure(ann, 'facerelay_joins_total{place="preview"}')) !== null) return fail("nothing is sent before a face is chosen", null);
  await ann.click("#invite-gallery button[data-face=Ada]");
  // Confirmed at once: the gallery marks Ada, and the line under it says she will be worn, or
  // already what the server makes of the preview (its face-state follows within milliseconds).
  const pressed = await ann.getAttribute("#invite-gallery button[data-face=Ada]", "aria-pressed");
  const chosen = await ann.textContent("#invite-face-state");
  if (pressed !== "true" || !/wear Ada's face|Starting the swap|the face the others see on you/.test(chosen)) {
    return fail("the choice is confirmed", { pressed, chosen });
  }
  // The preview: Ann's camera back from the server with Ada's face on.
  const swapped = await ann
    .waitForFunction(() => {
      const v = document.getElementById("invite-preview");
      return v.srcObject !== window.facerelay.local && v.videoWidth > 0 && /through the server/.test(document.getElementById("invite-camera").textContent);
    }, null, { timeout: 15_000 })
    .then(() => true, () => false);
  if (!swapped) return fail("the preview comes through the server", await ann.textContent("#invite-camera"));
  let face = null;
  for (let i = 0; i < 50 && !(face && green(face)); i++) {
    await sleep(200);
    face = await meanRgb(ann, "#invite-preview", core);
  }
  if (!green(face)) return fail("the preview shows the chosen face (the stand-in's green)", { camera, face });
  // The server's word on what the others see follows the frames (debounced).
  await ann.waitForFunction(() => /the face the others see on you/.test(document.getElementById("invite-face-state").textContent), null, { timeout: 5_000 }).catch(() => {});
  const previewState = await ann.textContent("#invite-face-state");
  if (!/the face the others see on you/.test(previewState)) return fail("the preview says what the others will see", previewState);
  if ((await figure(ann, 'facerelay_joins_total{place="preview"}')) !== 1) return fail("one preview", null);
  await ann.screenshot({ path: `${dir}/invite.png` });
  await ann.click("#join");

  // Bob: Ann's tile and its badge, every 100 ms from its first appearance.
  const seen = [];
  const t0 = Date.now();
  while (Date.now() - t0 < 20_000) {
    const tile = await bob.evaluate(() => {
      const fig = [...document.querySelectorAll("figure:not([data-participant=self])")]
        .find((f) => f.querySelector("figcaption")?.textContent.startsWith("Ann"));
      return fig ? { badge: fig.querySelector(".badge")?.textContent ?? null, width: fig.querySelector("video").videoWidth } : null;
    });
    if (tile) seen.push(tile);
    if (seen.filter((s) => s.width > 0).length >= 10) break;
    await sleep(100);
  }
  console.log(JSON.stringify({ screen, chosen, camera, face, previewState, badges: [...new Set(seen.map((s) => s.badge))], samples: seen.length }));
  if (!seen.some((s) => s.width > 0)) return fail("Bob sees Ann's video", seen);
  if (seen.some((s) => s.width > 0 && (s.badge === null || s.badge === "not swapped"))) {
    return fail("Ann's video never arrives without her face badge", seen);
  }
  // A tile goes full screen with its button, and back.
  await bob.click("figure:not([data-participant=self]) button.fullscreen");
  const full = await bob
    .waitForFunction(() => document.fullscreenElement?.matches("figure:not([data-participant=self])"), null, { timeout: 5_000 })
    .then(() => true, () => false);
  if (!full) return fail("Ann's tile goes full screen on Bob's page", null);
  await bob.evaluate(() => document.exitFullscreen());
  const annGallery = await ann.evaluate(() => document.querySelector("#gallery button[data-face=Ada]")?.getAttribute("aria-pressed"));
  if (annGallery !== "true") return fail("in the call, Ada is marked as Ann's face", annGallery);
  // The preview's seat went with the join: Bob and Ann are all the server holds.
  let seats = null;
  for (let i = 0; i < 25 && seats !== 2; i++) {
    seats = await figure(ann, "facerelay_participants ");
    if (seats !== 2) await sleep(200);
  }
  if (seats !== 2) return fail("the preview ends when Ann joins", seats);
  return true;
}

await finish(browser, run);
