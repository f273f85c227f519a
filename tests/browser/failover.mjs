// Two Debian Chromium pages in a room on one node of a cluster; that node is killed (SIGKILL,
// NODE_PID): both pages must continue on another node of the cluster by themselves and see
// each other again there.
// Usage: NODE_PID=… node tests/browser/failover.mjs http://127.0.0.1:PORT/ [ARTIFACT_DIR]

import { launch, openPage, until, look, sleep } from "./lib.mjs";

const base = process.argv[2];
const dir = process.argv[3] ?? "test-artifacts";
const browser = await launch();
const link = `${base}?room=${encodeURIComponent(`failover-${Date.now()}`)}`;
const seeing = (s) => s.remote.length === 1 && s.remote[0].width > 0 && s.framesDecoded > 0;

let ok = false;
try {
  const alice = await openPage(browser, link, "Alice");
  await alice.click("#join");
  const bob = await openPage(browser, link, "Bob");
  await bob.click("#join");
  const first = await until([alice, bob], seeing);
  if (!first.ok) {
    console.log("not both playing within 30 s:", JSON.stringify(first.states));
  } else {
    const origin = new URL(base).origin;
    process.kill(Number(process.env.NODE_PID), "SIGKILL");
    const killed = Date.now();
    // Both pages leave the dead node for another, then see each other there.
    const moved = () => [alice, bob].every((p) => new URL(p.url()).origin !== origin);
    while (!moved() && Date.now() - killed < 45_000) await sleep(200);
    const again = await until([alice, bob], seeing, 30_000);
    const origins = [alice, bob].map((p) => new URL(p.url()).origin);
    const states = await Promise.all([alice, bob].map(look));
    ok = again.ok && origins.every((o) => o !== origin) && origins[0] === origins[1]
      && states[0].remote[0]?.name === "Bob" && states[1].remote[0]?.name === "Alice";
    console.log(`node ${origin} killed; after ${((Date.now() - killed) / 1000).toFixed(1)} s the pages are on ${origins.join(", ")}: ` +
      `Alice sees ${states[0].remote[0]?.name}, Bob sees ${states[1].remote[0]?.name}`);
    await alice.screenshot({ path: `${dir}/failover.png` });
  }
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
