// A chosen face survives a reconnection, in Debian Chromium. Ann's camera is a y4m of a real
// face (FAKE_VIDEO); she picks the face in PHOTO; Bob waits for the "face-swapped" badge. Then
// Ann's signalling connection drops (or, with RESTART=1, the test restarts the server: this
// script writes DIR/PREFIX-restart and waits for DIR/PREFIX-restarted). Her page rejoins by
// itself and puts the face back on before it publishes again. Meanwhile Bob saves Ann's video
// every 150 ms as PREFIX-K.png with the badge on her tile, into PREFIX.json, until the badge
// has said "face-swapped" for two seconds; the Rust test measures the frames.
// Usage: FAKE_VIDEO=cam.y4m node tests/browser/reconnect_face.mjs URL DIR PHOTO PREFIX

import { existsSync, writeFileSync } from "node:fs";
import { annAndBob, frames, launch, sleep, waitForBadge } from "./lib.mjs";

const [base, dir = "test-artifacts", photo, prefix = "reconnect"] = process.argv.slice(2);
const browser = await launch();
const link = `${base}?room=reconnect-${Date.now()}`;

// Ann's video on Bob's page (its natural size) and the badge on her tile, if she is there.
async function grab(page) {
  return page.evaluate(() => {
    const fig = document.querySelector("figure:not([data-participant=self])");
    const v = fig?.querySelector("video");
    if (!v || v.videoWidth !== 640) return null;
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext("2d").drawImage(v, 0, 0);
    return { png: canvas.toDataURL("image/png"), badge: fig.querySelector(".badge")?.textContent ?? null };
  });
}

let ok = false;
try {
  const { ann, bob } = await annAndBob(browser, link);
  // One frame of Ann's own face, before she picks one (past the first 30 decoded frames of her
  // video): the Rust test's yardstick.
  if (!(await frames(bob, "figure:not([data-participant=self]) video", 30, 30_000))) throw new Error("Bob's video of Ann does not play");
  const own = await grab(bob);
  writeFileSync(`${dir}/${prefix}-before.png`, Buffer.from(own.png.split(",")[1], "base64"));
  await ann.click("#face");
  await ann.check("#face-consent");
  await ann.setInputFiles("#face-file", photo);
  if (!(await waitForBadge(bob, "face-swapped"))) throw new Error("no face-swapped badge before the drop");
  const oldId = await ann.evaluate(() => window.facerelay.id);

  const t0 = Date.now();
  if (process.env.RESTART) {
    writeFileSync(`${dir}/${prefix}-restart`, "");
    while (!existsSync(`${dir}/${prefix}-restarted`)) await sleep(50);
  } else {
    await ann.evaluate(() => window.facerelay.ws.close());
  }
  const records = [];
  let swappedSince = null;
  let k = 0;
  while (Date.now() - t0 < 30_000) {
    const annId = await ann.evaluate(() => window.facerelay.id);
    const g = annId !== oldId ? await grab(bob) : null;
    if (g) {
      writeFileSync(`${dir}/${prefix}-${k}.png`, Buffer.from(g.png.split(",")[1], "base64"));
      records.push({ k, badge: g.badge, ms: Date.now() - t0 });
      k += 1;
      if (g.badge === "face-swapped") swappedSince ??= Date.now();
      else swappedSince = null;
      if (swappedSince && Date.now() - swappedSince >= 2000) break;
    }
    await sleep(150);
  }
  const state = await ann.textContent("#face-state");
  const first = records.find((r) => r.badge === "face-swapped");
  writeFileSync(`${dir}/${prefix}.json`, JSON.stringify({ records, annReads: state, swappedAgainMs: first?.ms ?? null }));
  console.log(`${records.length} frames saved; the badge said face-swapped again after ${first?.ms} ms; Ann reads "${state}"`);
  await bob.screenshot({ path: `${dir}/${prefix}.png` });
  ok = Boolean(first) && swappedSince !== null;
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
