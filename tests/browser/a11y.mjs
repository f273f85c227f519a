// Accessibility of every screen, checked by axe-core (npm) in Debian Chromium: the landing page,
// an invitation, a room call with its face panel open, and the roulette. Fails on any serious
// or critical violation and prints what it found, per screen.
// Usage: node tests/browser/a11y.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR

import { fileURLToPath } from "node:url";
import { fail, finish, launch, openPage, rendered, until } from "./lib.mjs";

const [base] = process.argv.slice(2);
const browser = await launch();
const axePath = fileURLToPath(new URL("../../node_modules/axe-core/axe.min.js", import.meta.url));

async function check(page, screen, found) {
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help, target: v.nodes[0]?.target }));
  });
  found[screen] = result;
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

async function run() {
  const found = {};
  const bad = [];
  const landing = await openPage(browser, base, "Ann");
  bad.push(...(await check(landing, "landing", found)).map((v) => ({ screen: "landing", ...v })));
  const room = `a11y-${Date.now()}`;
  const invited = await openPage(browser, `${base}?room=${room}`, "Ann");
  bad.push(...(await check(invited, "invitation", found)).map((v) => ({ screen: "invitation", ...v })));
  await invited.click("#join");
  const bob = await openPage(browser, `${base}?room=${room}`, "Bob");
  await bob.click("#join");
  let r = await until([invited], (s) => s.remote.length === 1 && s.remote[0].width > 0);
  if (!r.ok) return fail("the call starts", r.states);
  await invited.click("#face");
  await rendered(invited);
  bad.push(...(await check(invited, "call with the face panel", found)).map((v) => ({ screen: "call", ...v })));
  const r1 = await openPage(browser, base, "Robin");
  await r1.click("#roulette");
  r = await until([r1], (s) => /Waiting/.test(s.status));
  if (!r.ok) return fail("the roulette waits", r.states);
  bad.push(...(await check(r1, "roulette", found)).map((v) => ({ screen: "roulette", ...v })));
  console.log(JSON.stringify(found));
  if (bad.length) return fail("no serious or critical accessibility violation", bad);
  return true;
}

await finish(browser, run);
