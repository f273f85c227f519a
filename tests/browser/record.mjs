// Bob records Ann's relayed video in Debian Chromium with MediaRecorder: one more H.264 encode
// at 1 Mbit/s, as a viewer's recording of a call would be. Ann's camera is a y4m of a real face
// (FAKE_VIDEO). First a recording before she picks a face (PREFIX-plain.webm), then, once the
// badge says "face-swapped", one in WebM (PREFIX-swapped.webm) and one in MP4
// (PREFIX-swapped.mp4, where this Chromium records MP4). The Rust test runs `verify` on them.
// Usage: FAKE_VIDEO=cam.y4m node tests/browser/record.mjs URL DIR PHOTO PREFIX

import { writeFileSync } from "node:fs";
import { annAndBob, frames, launch, waitForBadge } from "./lib.mjs";

const [base, dir = "test-artifacts", photo, prefix = "record"] = process.argv.slice(2);
const browser = await launch();
const link = `${base}?room=record-${Date.now()}`;

const REMOTE = "figure:not([data-participant=self]) video";

// Records Ann's tile on Bob's page with `mime` until the tile has shown `count` more frames (a
// loaded machine shows them more slowly; 30 s at most); the file's bytes, base64, or null when
// this browser cannot record that type.
async function record(page, mime, count) {
  return page.evaluate(
    async ({ mime, count }) => {
      if (!MediaRecorder.isTypeSupported(mime)) return null;
      const v = document.querySelector("figure:not([data-participant=self]) video");
      const rec = new MediaRecorder(v.srcObject, { mimeType: mime, videoBitsPerSecond: 1_000_000 });
      const parts = [];
      rec.ondataavailable = (e) => parts.push(e.data);
      const done = new Promise((r) => (rec.onstop = r));
      rec.start();
      await new Promise((r) => {
        let seen = 0;
        const timer = setTimeout(r, 30_000);
        const next = () => v.requestVideoFrameCallback(() => {
          seen += 1;
          if (seen >= count) { clearTimeout(timer); r(); } else next();
        });
        next();
      });
      rec.stop();
      await done;
      const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
      let s = "";
      for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(s);
    },
    { mime, count },
  );
}

function save(name, b64) {
  if (b64 === null) return false;
  writeFileSync(`${dir}/${prefix}-${name}`, Buffer.from(b64, "base64"));
  return true;
}

let ok = false;
try {
  const { ann, bob } = await annAndBob(browser, link);
  if (!(await frames(bob, REMOTE, 30, 30_000))) throw new Error("Bob's video of Ann stopped");
  const webm = "video/webm;codecs=h264";
  if (!save("plain.webm", await record(bob, webm, 90))) throw new Error(`cannot record ${webm}`);
  await ann.click("#face");
  await ann.check("#face-consent");
  await ann.setInputFiles("#face-file", photo);
  if (!(await waitForBadge(bob, "face-swapped"))) throw new Error("no face-swapped badge");
  if (!(await frames(bob, REMOTE, 15, 30_000))) throw new Error("Bob's video of Ann stopped");
  save("swapped.webm", await record(bob, webm, 120));
  const mp4 = save("swapped.mp4", await record(bob, "video/mp4;codecs=avc1.42E01F", 120));
  console.log(`recorded: plain.webm, swapped.webm${mp4 ? ", swapped.mp4" : " (this Chromium records no MP4)"}`);
  ok = true;
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
