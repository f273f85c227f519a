// Every word of the web page comes from web/text.js, checked in Debian Chromium with the
// pseudo-translation (?pseudo-text: text.js wraps every string it hands out in ⟦…⟧). On the
// landing page, an invitation, a room call of two (Ann and Bob, each with the face panel open
// and the Stats overlay on; where the server has a gallery, Ann wears its first face) and the
// roulette (waiting), every visible text node and the aria-label, placeholder, alt and title of
// every visible element must be inside ⟦…⟧, or be the user's own data: the names typed (Ann,
// Bob), the room's name, the gallery's face names (its file names) and the names of the camera
// and microphone in their menus. Every element that names its text (data-text…), shown or not,
// must have been filled. A few known strings are checked word for word. Prints what it checked,
// per screen, as one JSON line. Screenshot text-call.png (Ann's page).
// Usage: node tests/browser/text.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR

import { fail, finish, launch, openPage, until, waiting } from "./lib.mjs";

const [base, dir = "test-artifacts"] = process.argv.slice(2);
const browser = await launch();
const room = `text-${Date.now()}`;
const names = ["Ann", "Bob"];

// Checks the page as it is now: what it shows and says that is neither wrapped nor the user's
// own (`own`: the names and the room; the page adds its gallery's faces and its devices' names).
const scan = (page, own) => page.evaluate(async (own) => {
  const allowed = new Set(own);
  for (const d of await navigator.mediaDevices.enumerateDevices()) if (d.label) allowed.add(d.label);
  try {
    for (const face of (await (await fetch("/api/gallery")).json()).faces ?? []) allowed.add(face);
  } catch {
    // No gallery.
  }
  const wrapped = (t) => /^⟦[\s\S]*⟧$/.test(t);
  const visible = (el) => el.checkVisibility({ visibilityProperty: true, checkVisibilityCSS: true });
  const where = (el) => {
    const self = el.id ? `#${el.id}` : `${el.localName}${el.classList.length ? `.${[...el.classList].join(".")}` : ""}`;
    const holder = el.parentElement?.closest("[id], [data-participant]");
    const context = holder ? (holder.id ? `#${holder.id}` : `figure[data-participant]`) : "";
    return context ? `${context} ${self}` : self;
  };
  const checked = { texts: 0, attributes: 0, ownData: 0 };
  const bad = [];
  const judge = (value, place) => {
    const t = value.trim();
    if (wrapped(t)) return;
    if (allowed.has(t)) checked.ownData += 1;
    else bad.push({ place, text: t });
  };
  // Text: a device's name in a menu counts as shown when its menu is.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || el.closest("script, style")) continue;
    if (!visible(el.closest("select") ?? el)) continue;
    checked.texts += 1;
    judge(node.textContent, where(el));
  }
  for (const el of document.body.querySelectorAll("*")) {
    if (!visible(el)) continue;
    for (const name of ["aria-label", "placeholder", "alt", "title"]) {
      const value = el.getAttribute(name);
      if (!value?.trim()) continue;
      checked.attributes += 1;
      judge(value, `${where(el)} [${name}]`);
    }
  }
  checked.attributes += 1;
  judge(document.title, "document title");
  // Every element that names its text was filled by text.js, shown or not.
  const unfilled = [];
  for (const el of document.querySelectorAll("[data-text]")) {
    if (!wrapped(el.textContent.trim())) unfilled.push(`${where(el)}: ${el.dataset.text}`);
  }
  for (const name of ["aria-label", "placeholder", "alt", "title"]) {
    for (const el of document.querySelectorAll(`[data-text-${name}]`)) {
      if (!wrapped(el.getAttribute(name) ?? "")) unfilled.push(`${where(el)} [${name}]: ${el.getAttribute(`data-text-${name}`)}`);
    }
  }
  return { checked, bad, unfilled };
}, own);

// What a few elements say now (text, or an attribute with "#id@attr").
const read = (page, targets) => page.evaluate((targets) => Object.fromEntries(targets.map((t) => {
  if (t === "title") return [t, document.title];
  const [id, attr] = t.split("@");
  const el = document.getElementById(id);
  return [t, el ? (attr ? el.getAttribute(attr) : el.textContent) : null];
})), targets);

// Waits until `test(page state)` holds in the page, up to `ms`; returns whether it did.
const waitIn = (page, test, arg, ms = 15_000) =>
  page.waitForFunction(test, arg, { timeout: ms }).then(() => true, () => false);

async function run() {
  const report = {};
  const problems = [];
  const screen = async (label, page) => {
    const r = await scan(page, [...names, room]);
    report[label] = r.checked;
    for (const b of r.bad) problems.push({ screen: label, ...b });
    for (const u of r.unfilled) problems.push({ screen: label, unfilled: u });
  };
  const expect = async (label, page, want) => {
    const got = await read(page, Object.keys(want));
    for (const [k, v] of Object.entries(want)) {
      const ok = v instanceof RegExp ? v.test(got[k] ?? "") : got[k] === v;
      if (!ok) problems.push({ screen: label, key: k, want: String(v), got: got[k] });
    }
  };

  // The landing page.
  const landing = await openPage(browser, `${base}?pseudo-text`, "Ann");
  await screen("landing", landing);
  await expect("landing", landing, {
    title: "⟦facerelay⟧",
    "landing-title": "⟦Video rooms and roulette⟧",
    "name@placeholder": "⟦e.g. Sam⟧",
    roulette: "⟦Meet a random stranger⟧",
    status: "⟦Not connected⟧",
  });
  // Where the server has a gallery, the landing page offers to try a face on first.
  const gallery = await landing.evaluate(async () => (await (await fetch("/api/gallery")).json()).faces?.length > 0);
  if (gallery) {
    if (!(await waitIn(landing, () => !document.getElementById("try-face").hidden, null, 5_000))) {
      return fail("the landing page offers to try a face on", null);
    }
    await landing.click("#try-face");
    const opened = await waitIn(landing, () => !document.getElementById("invite-camera-view").hidden
      && document.querySelectorAll("#invite-gallery button").length > 0 && document.getElementById("try-face").hidden);
    if (!opened) return fail("trying a face on shows the camera and the gallery", null);
    await screen("landing, trying a face on", landing);
  }
  await landing.context().close();

  // An invitation, its camera started.
  const ann = await openPage(browser, `${base}?room=${room}&pseudo-text`, "Ann");
  if (!(await waitIn(ann, () => document.getElementById("invite-preview").videoWidth > 0))) {
    return fail("the invitation shows Ann's camera", await read(ann, ["invite-camera"]));
  }
  // The gallery, where the server has one.
  if (gallery && !(await waitIn(ann, () => document.querySelectorAll("#invite-gallery button").length > 0))) {
    return fail("the invitation shows the gallery", null);
  }
  await screen("invitation", ann);
  await expect("invitation", ann, {
    "landing-title": `⟦You are invited to room “${room}”⟧`,
    join: `⟦Join room “${room}”⟧`,
    "invite-camera": "⟦Your camera. Nothing is sent until you join or try on a face.⟧",
    "invite-preview@aria-label": "⟦Your camera⟧",
  });
  // Where the server has a gallery: a face tried on, the preview through the server.
  const tried = await ann.$("#invite-gallery button");
  if (tried) {
    await tried.click();
    const previewing = await waitIn(ann, () => /through the server/.test(document.getElementById("invite-camera").textContent), null, 15_000);
    if (!previewing) return fail("the preview of the face starts", await read(ann, ["invite-camera", "invite-face-state"]));
    await screen("invitation preview", ann);
    await expect("invitation preview", ann, { "invite-camera": /^⟦You with .+'s face, through the server/ });
  }

  // A room call of two, each with the face panel open and the Stats overlay on.
  await ann.click("#join");
  const bob = await openPage(browser, `${base}?room=${room}&pseudo-text`, "Bob");
  await bob.click("#join");
  let r = await until([ann, bob], (s) => s.remote.length === 1 && s.remote[0].width > 0 && s.framesDecoded > 0);
  if (!r.ok) return fail("Ann and Bob see each other", r.states);
  for (const page of [ann, bob]) {
    await page.click("#face");
    await page.click("#stats");
  }
  // Mic off and on again: both of its labels.
  await ann.click("#mic");
  await expect("call (Ann)", ann, { mic: "⟦Microphone off⟧", "mic@aria-pressed": "false" });
  await ann.click("#mic");
  // Where the server has a gallery, Ann wears its first face: the badges and the face's state.
  const face = await ann.$("#gallery button");
  if (face) {
    await face.click();
    const badged = await waitIn(bob, () => !!document.querySelector("figure:not([data-participant=self]) .badge"), null, 20_000);
    if (!badged) return fail("Bob sees a badge on Ann's tile", await read(ann, ["face-state", "error"]));
    // Ann may wear it already (tried on in the invitation): wait for the server's answer.
    await waitIn(ann, () => !/Looking/.test(document.getElementById("face-state").textContent), null, 10_000);
  }
  // Every tile's statistics and connection mark are in.
  for (const page of [ann, bob]) {
    const filled = await waitIn(page, () => {
      const figs = [...document.querySelectorAll("figure")];
      return figs.length === 2 && figs.every((f) => f.querySelector(".overlay").textContent && f.querySelector(".quality"))
        && /connected/.test(document.getElementById("status").textContent);
    });
    if (!filled) return fail("the Stats overlays and connection marks fill in", await read(page, ["grid", "status"]));
  }
  await screen("call (Ann)", ann);
  await screen("call (Bob)", bob);
  await expect("call (Ann)", ann, {
    status: `⟦Room “${room}” · ⟦connected⟧⟧`,
    mic: "⟦Microphone on⟧",
    leave: "⟦Leave⟧",
    "face-title": "⟦Your face⟧",
    "grid@aria-label": "⟦Participants⟧",
    "face-state": face ? /^⟦(This is the face|Starting the swap|Your face is not found)/ : "⟦You appear as yourself.⟧",
  });
  const tiles = await ann.evaluate(() => [...document.querySelectorAll("figure")].map((f) => ({
    caption: f.querySelector("figcaption").firstChild?.textContent,
    overlay: f.querySelector(".overlay").textContent,
  })));
  const self = tiles.find((t) => t.caption?.startsWith("⟦"));
  const other = tiles.find((t) => t.caption === "Bob");
  if (!/^⟦Ann \(you(, as others see you)?\)⟧$/.test(self?.caption ?? "") || !other) problems.push({ screen: "call (Ann)", tiles });
  // (The figures are measurements: only their units are words.)
  if (!tiles.every((t) => /^⟦\S+ fps · \S+ kb\/s( · \S+ ms)?⟧$/.test(t.overlay))) problems.push({ screen: "call (Ann)", overlays: tiles });
  await ann.screenshot({ path: `${dir}/text-call.png` });
  for (const page of [ann, bob]) await page.context().close();

  // The roulette, waiting.
  const robin = await openPage(browser, `${base}?pseudo-text`, "Ann");
  await robin.click("#roulette");
  r = await until([robin], waiting);
  if (!r.ok) return fail("the roulette waits", r.states);
  await screen("roulette", robin);
  await expect("roulette", robin, { leave: "⟦Stop⟧", next: "⟦Next⟧", report: "⟦Report⟧", block: "⟦Block⟧" });

  console.log(JSON.stringify({ room, gallery: !!face, checked: report, problems: problems.length }));
  if (problems.length) return fail("every word on every screen comes from text.js", problems);
  return true;
}

await finish(browser, run);
