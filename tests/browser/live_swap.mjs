// The live swap in Debian Chromium. Both pages' camera is the project's drawn test card (a y4m
// file given as FAKE_VIDEO); Ann picks a face, and Bob must see Ann's video with the face
// swapped (the stand-in swapper paints it green), the "face-swapped" badge, and the rest as is.
// Usage: FAKE_VIDEO=card.y4m node tests/browser/live_swap.mjs URL ARTIFACT_DIR PHOTO FACE_BOX

import { annAndBob, faceCore, green, launch, look, meanRgb, nextFrame, uplink, waitForBadge } from "./lib.mjs";

const [base, dir = "test-artifacts", photo, box] = process.argv.slice(2);
const browser = await launch();
const link = `${base}?room=live-${Date.now()}`;

// A rectangle of the remote (not self) video.
const remote = "figure:not([data-participant=self]) video";
const sample = (page, rect) => meanRgb(page, remote, rect);

let ok = false;
try {
  const { ann, bob } = await annAndBob(browser, link);
  // The centre of the face box, before and after Ann picks a face.
  const core = faceCore(box);
  const before = await sample(bob, core);
  const corner = await sample(bob, [0, 80, 200, 240]);
  await ann.click("#face");
  await ann.check("#face-consent");
  await ann.setInputFiles("#face-file", photo);
  if (!(await waitForBadge(bob, "face-swapped"))) {
    const said = await ann.textContent("#face-state");
    throw new Error(`Bob never sees the face-swapped badge: ${JSON.stringify(await look(bob))}; Ann reads "${said}"; Ann's camera uplink: ${JSON.stringify(await uplink(ann))}; Ann's signalling: ${ann.signalling.join(", ")}; Bob's: ${bob.signalling.join(", ")}`);
  }
  console.log(`Ann's camera uplink: ${JSON.stringify(await uplink(ann))}`);
  // The badge follows the first swapped frames; the picture, once Bob's decoder has them.
  let after = await sample(bob, core);
  for (const deadline = Date.now() + 20_000; !green(after) && Date.now() < deadline;) {
    if (await nextFrame(bob, remote, deadline - Date.now())) after = await sample(bob, core);
  }
  const cornerAfter = await sample(bob, [0, 80, 200, 240]);
  console.log(`face centre RGB before ${before}, after ${after}; grid area ${corner} -> ${cornerAfter}`);
  const greener = green(after) && before[1] - before[0] < 20;
  const restSame = cornerAfter.every((c, i) => Math.abs(c - corner[i]) < 12);
  ok = greener && restSame;
  if (!greener) console.log("FAIL: the face did not turn into the stand-in swapper's green");
  if (!restSame) console.log("FAIL: the rest of the picture changed");
  await bob.screenshot({ path: `${dir}/live-swap.png` });
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
