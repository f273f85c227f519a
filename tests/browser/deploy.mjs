// The deployment of docker-compose.yml, run as processes by tests/it/deploy.rs: two Debian
// Chromium pages open the room at BASE (Caddy, HTTPS) with every peer connection forced through
// TURN (iceTransportPolicy "relay", so media must pass coturn with the credentials the node
// hands out). Both pick a face from a photo and must see each other swapped, over a relay
// candidate pair. Then the node hosting the room is stopped as compose stops it (SIGTERM; its
// PID from NODE_PIDS, "origin=pid,origin=pid"): a probe of its /healthz through Caddy, and one
// of its own address (NODE_DIRECT, "origin=http://…/,…") as compose's healthcheck makes, must
// read 503 "draining", and the pages must meet again on the other node, still swapped and
// relayed. With CROWD_WS (a node's own ws:// address) and CROWD_SIZE, that many signalling
// sockets are opened straight from loopback first, the address Caddy connects from: a node that
// counted Caddy's connections as that address would refuse the pages (429).
// Writes DIR/deploy.json (what was seen) and DIR/deploy-*.png.
// Usage: FAKE_VIDEO=cam.y4m NODE_PIDS=… node --experimental-websocket tests/browser/deploy.mjs
//          BASE DIR PHOTO_ANN PHOTO_BOB

import { writeFileSync } from "node:fs";
import { launch, openPage, until, look, sleep, waitForBadge, fail } from "./lib.mjs";

const [base, dir, photoAnn, photoBob] = process.argv.slice(2);
const pids = new Map((process.env.NODE_PIDS ?? "").split(",").filter(Boolean).map((e) => e.split("=")));
const browser = await launch();
const link = `${base}?room=deploy-${Date.now()}`;

// Every RTCPeerConnection of the page relays through TURN, whatever the page asks for.
const relayOnly = () => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = function (config, ...rest) {
    return new Native({ ...config, iceTransportPolicy: "relay" }, ...rest);
  };
  window.RTCPeerConnection.prototype = Native.prototype;
};

// The page's selected ICE candidate pair: both ends' types, and the bytes it carried.
async function path(page) {
  return page.evaluate(async () => {
    const stats = await window.facerelay.pc?.getStats();
    if (!stats) return null;
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      local: local?.candidateType, localAddress: `${local?.address}:${local?.port}`, relayProtocol: local?.relayProtocol,
      remote: remote?.candidateType, remoteAddress: `${remote?.address}:${remote?.port}`,
      bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived,
    };
  });
}

// The node a page talks to (a page that moved with a photo face keeps its first origin).
const nodeOf = (page) => page.evaluate(() => new URL(window.facerelay.server ?? location.href).origin).catch(() => null);

// Both pages see the other's video with the face-swapped badge. With `strict`, a tile that plays
// video without a face badge on the way there fails: it shows the wearer's own face.
const swappedPair = async (pages, strict = false) => {
  let bare = null;
  const seen = await until(pages, (s) => {
    const r = s.remote[0];
    if (strict && r && r.width > 0 && s.framesDecoded > 0 && r.badge === null) bare ??= s;
    return s.remote.length === 1 && r.width > 0 && s.framesDecoded > 0;
  }, 45_000);
  if (bare) return fail("a tile played the other's video without a face badge", bare);
  if (!seen.ok) return fail("the pages do not see each other", seen.states);
  for (const p of pages) {
    if (!(await waitForBadge(p, "face-swapped", 45_000))) {
      return fail("no face-swapped badge", { ...(await look(p)), face: await p.textContent("#face-state") });
    }
  }
  return true;
};

const report = { rounds: [] };
async function round(name, pages) {
  const paths = await Promise.all(pages.map(path));
  const states = await Promise.all(pages.map(look));
  const origins = await Promise.all(pages.map(nodeOf));
  report.rounds.push({ name, paths, origins, remote: states.map((s) => s.remote) });
  console.log(`${name}: on ${origins.join(", ")}; pairs ${JSON.stringify(paths)}`);
  await Promise.all(pages.map((p, i) => p.screenshot({ path: `${dir}/deploy-${name}-${i}.png` })));
  const relayed = paths.every((p) => p && p.local === "relay" && p.bytesReceived > 0);
  return relayed || fail("a selected pair that is not relayed", paths);
}

let ok = false;
const crowd = [];
try {
  if (process.env.CROWD_WS) {
    for (let i = 0; i < Number(process.env.CROWD_SIZE); i++) {
      const ws = new WebSocket(process.env.CROWD_WS);
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error(`crowd socket ${i} refused`)); });
      crowd.push(ws);
    }
    console.log(`${crowd.length} signalling sockets open from loopback`);
  }
  const ann = await openPage(browser, link, "Ann", undefined, relayOnly);
  await ann.click("#join");
  const bob = await openPage(browser, link, "Bob", undefined, relayOnly);
  await bob.click("#join");
  for (const [page, photo] of [[ann, photoAnn], [bob, photoBob]]) {
    await page.click("#face");
    await page.check("#face-consent");
    await page.setInputFiles("#face-file", photo);
  }
  ok = (await swappedPair([ann, bob])) && (await round("first", [ann, bob]));
  for (const ws of crowd) ws.close();
  if (ok) {
    // Stop the room's node as `docker compose stop` does; a load balancer's probe reads 503.
    const origin = await nodeOf(ann);
    const pid = pids.get(origin);
    if (!pid) throw new Error(`no PID for ${origin} in NODE_PIDS`);
    process.kill(Number(pid), "SIGTERM");
    const stopped = Date.now();
    const probe = await (await browser.newContext()).newPage();
    const answer = await probe.goto(`${origin}/healthz`);
    report.drain = { status: answer.status(), body: await answer.text(), ms: Date.now() - stopped };
    console.log(`node ${origin} stopped; /healthz through Caddy after ${report.drain.ms} ms: ${report.drain.status} ${report.drain.body}`);
    await probe.close();
    // And as compose's healthcheck probes it: a new connection to the node itself, 3 s at most.
    const own = new Map((process.env.NODE_DIRECT ?? "").split(",").filter(Boolean).map((e) => e.split("="))).get(origin);
    try {
      const r = await fetch(`${own}healthz`, { signal: AbortSignal.timeout(3000) });
      report.drainDirect = { status: r.status, body: await r.text() };
    } catch (e) {
      report.drainDirect = { error: String(e) };
    }
    console.log(`its own /healthz (${own}): ${JSON.stringify(report.drainDirect)}`);
    if (report.drain.status !== 503 || !report.drain.body.includes("draining")
      || report.drainDirect.status !== 503 || !report.drainDirect.body.includes("draining")) {
      ok = fail("the draining node's /healthz", [report.drain, report.drainDirect]);
    } else {
      // Until both are on the other node, and after: a tile that plays the other's video
      // without the badge would be that person's own face.
      const moved = async () => (await Promise.all([ann, bob].map(nodeOf))).every((o) => o && o !== origin);
      while (!(await moved()) && Date.now() - stopped < 60_000) await sleep(200);
      ok = (await moved()) ? (await swappedPair([ann, bob], true)) && (await round("after-stop", [ann, bob]))
        : fail("the pages stayed on the stopped node", await Promise.all([ann, bob].map(nodeOf)));
      report.movedAfterMs = Date.now() - stopped;
    }
  }
} finally {
  writeFileSync(`${dir}/deploy.json`, JSON.stringify(report));
  for (const ws of crowd) ws.close();
  await browser.close();
}
process.exit(ok ? 0 : 1);
