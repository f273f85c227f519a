// A live swap with a real face in Debian Chromium, captured for the Rust test to measure. Both
// pages' camera is a y4m file (FAKE_VIDEO) made from a packaged photo; Ann picks the face in
// PHOTO, Bob waits for Ann's "face-swapped" badge and then saves COUNT frames of Ann's video,
// decoded by Chromium at their natural size, as PREFIX-0.png, PREFIX-1.png, … and a screenshot
// of his page as PREFIX.png.
// Usage: FAKE_VIDEO=cam.y4m node tests/browser/live_swap_capture.mjs URL DIR PHOTO PREFIX COUNT

import { writeFileSync } from "node:fs";
import { annAndBob, frames, launch, waitForBadge, waitForText } from "./lib.mjs";

const [base, dir = "test-artifacts", photo, prefix = "capture", count = "4"] = process.argv.slice(2);
const browser = await launch();
const link = `${base}?room=real-${Date.now()}`;
const REMOTE = "figure:not([data-participant=self]) video";
const SWAPPED = "This is the face the others see on you.";

// One decoded frame of the remote (not self) video as a PNG data URL.
async function grab(page) {
  return page.evaluate(() => {
    const v = document.querySelector("figure:not([data-participant=self]) video");
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext("2d").drawImage(v, 0, 0);
    return canvas.toDataURL("image/png");
  });
}

let ok = false;
try {
  const { ann, bob } = await annAndBob(browser, link);
  await ann.click("#face");
  const says = await ann.textContent("#face-swapper");
  console.log(`Ann's face panel: "${says}"`);
  if (!/mesh swapper/.test(says)) throw new Error("the face panel does not say which swapper runs");
  await ann.check("#face-consent");
  await ann.setInputFiles("#face-file", photo);
  const badge = (await waitForBadge(bob, "face-swapped")) ? "face-swapped" : null;
  console.log(`Bob sees Ann's badge "${badge}"`);
  // A loaded server may pause the swap for a moment: Ann then reads that it is busy, and the
  // others see her last swapped frame (held: still the swapped face, which is what a capture
  // measures) or her picture hidden. A capture is taken only while her page says swapped or
  // held, and kept only if that did not change between the check and the grab (Bob's five
  // decoded frames in between carry what was in flight when it last changed).
  const SHOWN = [
    SWAPPED,
    "Swap paused: the server is busy. The others see your last swapped frame.",
    "Your face is not found: the others see your last swapped frame.",
  ];
  await ann.evaluate(() => {
    const el = document.getElementById("face-state");
    let last = el.textContent;
    window.faceChanges = 0;
    new MutationObserver(() => {
      if (el.textContent !== last) { last = el.textContent; window.faceChanges += 1; }
    }).observe(el, { childList: true, characterData: true, subtree: true });
  });
  const notSwapped = async () => new Error(`Ann's page does not say her face is swapped: "${await ann.textContent("#face-state")}"`);
  const capture = async () => {
    const deadline = Date.now() + 45_000;
    while (Date.now() < deadline) {
      const shown = await ann.waitForFunction((ok) => ok.includes(document.getElementById("face-state").textContent), SHOWN,
        { timeout: Math.max(1, deadline - Date.now()) }).then(() => true, () => false);
      if (!shown) break;
      const before = await ann.evaluate(() => window.faceChanges);
      if (!(await frames(bob, REMOTE, 5, 30_000))) throw new Error("Bob's video of Ann stopped");
      const url = await grab(bob);
      if ((await ann.evaluate(() => window.faceChanges)) === before) return url;
    }
    throw await notSwapped();
  };
  if (!(await waitForText(ann, "#face-state", SWAPPED))) {
    throw await notSwapped();
  }
  console.log(`Ann reads "${SWAPPED}"`);
  // Past the swap's first detections and the encoder's next keyframe: 60 more decoded frames.
  if (!(await frames(bob, REMOTE, 60, 30_000))) throw new Error("Bob's video of Ann stopped");
  for (let k = 0; k < Number(count); k++) {
    const url = await capture();
    writeFileSync(`${dir}/${prefix}-${k}.png`, Buffer.from(url.split(",")[1], "base64"));
    if (!(await frames(bob, REMOTE, 10, 30_000))) throw new Error("Bob's video of Ann stopped");
  }
  await bob.screenshot({ path: `${dir}/${prefix}.png` });
  ok = badge === "face-swapped";
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
