// One camera, in Debian Chromium. An invitation starts the camera as it opens; a camera slow to
// start (each request held for 800 ms here) is still starting when the person clicks "Join": the
// call waits for that same request instead of opening the camera a second time, so every track
// the page opened is the one it sends, and leaving the room turns every one of them off.
// Usage: node tests/browser/camera.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR

import { fail, finish, launch, look, openPage, until } from "./lib.mjs";

const [base] = process.argv.slice(2);
const browser = await launch();

// Every stream the page's requests opened: whether each is live, and whether the call sends it.
const streams = (page) => page.evaluate(() => window.openedStreams.map((s) => ({
  live: s.getTracks().some((t) => t.readyState === "live"),
  sent: s === window.facerelay.local,
})));

// A camera slow to start: each request answers 800 ms after the stream opened, and the page
// keeps every stream opened in `openedStreams`.
function slowCamera() {
  const request = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  window.openedStreams = [];
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await request(constraints);
    window.openedStreams.push(stream);
    await new Promise((done) => setTimeout(done, 800));
    return stream;
  };
}

async function run() {
  const page = await openPage(browser, `${base}?room=camera-${Date.now()}`, "Ann", undefined, slowCamera);
  await page.click("#join");
  const r = await until([page], (s) => / · connected$/.test(s.status));
  if (!r.ok) return fail("Ann's call connects", r.states);
  const during = await streams(page);
  if (during.length !== 1 || !during[0].live || !during[0].sent) {
    return fail("the camera is opened once, and that stream is the one the call sends", during);
  }
  await page.click("#leave");
  await page.waitForFunction(() => !document.getElementById("landing").hidden);
  const after = await streams(page);
  if (after.some((s) => s.live)) return fail("leaving turns off every stream the page opened", after);
  console.log(JSON.stringify({ during, after, status: (await look(page)).status }));
  return true;
}

await finish(browser, run);
