// Every word the web page shows or says (index.html with app.js, watch.html with watch.js), in
// English, in one place. The pages' elements name their text by key (data-text="landing.title",
// data-text-aria-label, data-text-placeholder, data-text-alt, data-text-title) and applyText
// fills them; the scripts take the rest from TEXT.
//
// To translate: copy ENGLISH below, keep every key and translate each value. A value that is a
// function receives the values its English version shows (a room name, a person's name, a
// number of seconds) and returns the whole sentence, so the translation may place them where
// its language wants them. The tables under `errors` are looked up by the codes the server
// sends (docs/api.md, docs/signalling.md): keep those keys as they are. Set the pages' `lang`
// attribute (index.html, watch.html) to the translation's language.
//
// Pseudo-translation: with `?pseudo-text` in the page's address, every string handed out is
// wrapped in ⟦…⟧ (a function's whole result; the values it receives stay as given). Text that
// shows without the brackets did not come from here (tests/browser/text.mjs checks this).

const ENGLISH = {
  // The document and its header.
  page: {
    title: "facerelay",
    brand: "facerelay",
  },

  // The status line in the header.
  status: {
    notConnected: "Not connected",
    startingCamera: "Starting camera…",
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    reconnectingIn: (seconds) => `Connection lost. Reconnecting in ${seconds} s…`,
    roomServerSilent: (seconds) => `The room's server does not answer. Trying again in ${seconds} s…`,
    rouletteMove: "Someone is waiting for you on another server. Moving there…",
    roomConnectingMedia: (room) => `Room “${room}” · connecting media…`,
    rouletteConnectingMedia: "Roulette · connecting media…",
    // `connection`: one of `connection` below (or the browser's own word for a new state).
    room: (room, connection) => `Room “${room}” · ${connection}`,
    roulette: (connection) => `Roulette · ${connection}`,
    // The media connection's states, as the browser names them.
    connection: {
      new: "new",
      connecting: "connecting",
      connected: "connected",
      disconnected: "disconnected",
      failed: "failed",
      closed: "closed",
    },
    linkCopied: (link) => `Link copied: ${link}`,
  },

  // The first screen: a name, a room or the roulette.
  landing: {
    title: "Video rooms and roulette",
    what: "Video calls where you may wear a face you choose: it replaces yours live, and everyone in the call is told when a face is swapped.",
    name: "Your name",
    namePlaceholder: "e.g. Sam",
    room: "Room name",
    roomPlaceholder: "e.g. friday-call",
    join: "Join room",
    or: "or",
    roulette: "Meet a random stranger",
    hint: "Share a room's link and others land in the same room. The roulette pairs you with someone new; press Next to move on. Your camera stays off until you join or try on a face.",
    tryFace: "Try on a face first",
  },

  // The first screen opened from a room's link (?room=NAME).
  invitation: {
    title: (room) => `You are invited to room “${room}”`,
    join: (room) => `Join room “${room}”`,
    camera: "Your camera",
    cameraStarting: "Starting your camera…",
    cameraReady: "Your camera. Nothing is sent until you join or try on a face.",
    // The preview: the camera through the server with the chosen face, seen by nobody else.
    previewStarting: (face) => `Putting ${face}'s face on your camera…`,
    previewing: (face) => `You with ${face}'s face, through the server: this is how the others will see you. Nobody else sees it until you join.`,
    previewFailed: (why) => `The preview is not available (${why}). Your face still goes on when you join.`,
    previewLost: "the connection to the server was lost",
    face: "Your face in the call (optional)",
    gallery: "Gallery faces",
    asYourself: "You will appear as yourself.",
    wearing: (face) => `You will wear ${face}'s face. It goes on before your video is sent.`,
  },

  // The call: its control bar and the tiles of its videos.
  call: {
    label: "Call",
    controls: "Call controls",
    microphoneOn: "Microphone on",
    microphoneOff: "Microphone off",
    cameraOn: "Camera on",
    cameraOff: "Camera off",
    cameraSelect: "Camera",
    microphoneSelect: "Microphone",
    // A device the browser gives no name: the n-th camera or microphone.
    cameraNumber: (n) => `Camera ${n}`,
    microphoneNumber: (n) => `Microphone ${n}`,
    face: "Face…",
    stats: "Stats",
    copyLink: "Copy link",
    next: "Next",
    report: "Report",
    block: "Block",
    leave: "Leave",
    stop: "Stop",
    participants: "Participants",
  },

  // One video's tile: its caption, badge, marks and buttons.
  tile: {
    you: (name) => `${name} (you)`,
    youAsOthersSeeYou: (name) => `${name} (you, as others see you)`,
    guest: "Guest",
    // `label`: the caption, e.g. "Ann" or "Ann (you)".
    video: (label) => `Video of ${label}`,
    fullScreen: (label) => `Full screen: ${label}`,
    muted: "muted",
    cameraIsOff: (name) => `${name}'s camera is off`,
    // The badge, by what the video carries: a held frame is still the swapped face.
    badges: {
      swapped: "face-swapped",
      held: "face-swapped",
      blurred: "face hidden",
      unswapped: "not swapped",
    },
    // The voice badge, by what the audio carries (none: no badge).
    voiceBadges: {
      disguised: "voice disguised",
      silenced: "voice silenced",
    },
    // How well the video arrives: the mark's label (screen readers) and its tooltip.
    quality: {
      good: "connection good",
      fair: "connection fair",
      poor: "connection poor",
    },
    qualityTitle: {
      good: "Connection good",
      fair: "Connection fair",
      poor: "Connection poor",
    },
    // The Stats overlay: frames a second, kilobits a second and, when known, the round trip in
    // milliseconds (null when unknown).
    stats: (fps, kbps, rttMs) => `${fps} fps · ${kbps} kb/s${rttMs != null ? ` · ${rttMs} ms` : ""}`,
  },

  // The roulette's status lines and notices.
  roulette: {
    waitingWithOthers: (online) => `Waiting for someone… ${online} people in the roulette`,
    waitingAlone: "Waiting for someone… you are the only one in the roulette right now",
    talkingWith: (name) => `Talking with ${name}`,
    sameAgain: (name) => `Nobody else is waiting right now, so you are with ${name} again.`,
    // Why the pair ended, by the reason the server gives.
    ended: {
      next: "Your partner moved on. Finding someone new…",
      stop: "Your partner left the roulette. Finding someone new…",
      disconnected: "Your partner's connection dropped. Finding someone new…",
    },
    endedOtherwise: "The chat ended. Finding someone new…",
    findingSomeoneNew: "Finding someone new…",
    // `who`: the partner's name, or thisPerson.
    reported: (who) => `Reported, thank you. You will not meet ${who} again. Finding someone new…`,
    blocked: (who) => `Blocked. You will not meet ${who} again. Finding someone new…`,
    thisPerson: "this person",
  },

  // The voice choice in the face panel.
  voice: {
    label: "Your voice",
    presets: {
      none: "Your own voice",
      lower: "Lower (deeper, larger)",
      higher: "Higher (lighter, smaller)",
      neutral: "Neutral (pitch up, formants down)",
      robot: "Robot (monotone)",
    },
    hint: "The server disguises your voice before anyone hears it: pitch and formants are moved apart, towards no one in particular (never someone else's voice). Everyone sees a badge that says your voice is disguised.",
    own: "The others hear your own voice.",
    disguised: "The others hear your disguised voice.",
    choosing: "Changing your voice…",
    // Why the disguise could not be applied: the others hear silence, never your own voice.
    silenced: {
      busy: "Voice paused: the server is busy. The others hear silence, not your voice.",
      stalled: "Voice paused: the server fell behind. The others hear silence, not your voice.",
      error: "Your voice could not be disguised. The others hear silence, not your voice.",
    },
    notChosen: (reason) => `Your voice could not be changed (${reason}).`,
  },

  // The face panel in the call.
  face: {
    title: "Your face",
    unavailable: "Face swap is not available on this server.",
    preview: "The face you wear",
    consent: "This face is mine, or its owner agreed to my using it.",
    upload: "Upload a photo",
    none: "No swap",
    gallery: "Gallery faces",
    wear: (face) => `Wear the gallery face ${face}`,
    hint: "One clear photo of one face. It stays in the server's memory for this call only and is never stored or logged. Everyone in the call sees a badge on your video that says whether your face is swapped or hidden, and the others never see your own face while one is chosen.",
    // What each swapper the server may run does, in one sentence.
    swappers: {
      mesh: "This server uses its mesh swapper: the face in your photo is fitted onto your face as you move; your own eyes and mouth show through.",
      inswapper_128: "This server uses the inswapper_128 model: it redraws your face with the identity of the face in your photo.",
      hyperswap_1a_256: "This server uses the HyperSwap 1a model: it redraws your face with the identity of the face in your photo.",
      hyperswap_1b_256: "This server uses the HyperSwap 1b model: it redraws your face with the identity of the face in your photo.",
      hyperswap_1c_256: "This server uses the HyperSwap 1c model: it redraws your face with the identity of the face in your photo.",
      simswap_256: "This server uses the SimSwap model: it redraws your face with the identity of the face in your photo.",
    },
    // What the wearer is told about its own face, by state and reason (busy: the server is
    // busy; lost: the face is not found).
    asYourself: "You appear as yourself.",
    swapped: "This is the face the others see on you.",
    heldBusy: "Swap paused: the server is busy. The others see your last swapped frame.",
    heldLost: "Your face is not found: the others see your last swapped frame.",
    blurredBusy: "Swap paused: the server is busy. The others see you blurred.",
    blurredLost: "Your face is not found: the others see you blurred.",
    blurredStarting: "Starting the swap: the others see you blurred until it works.",
    unswapped: "Your face is not being swapped: the others see your own face.",
    previousStillOn: "Your previous face is still on.",
    lookingGallery: "Looking for the face…",
    lookingPhoto: "Looking for the face in your photo…",
    removing: "Removing the face…",
    puttingOn: "Putting your face on…",
    puttingBackOn: "Putting your face back on…",
    // `reason`: what went wrong, one of the errors below without its final full stop.
    notPutOn: (reason) => `Your face could not be put on (${reason}). The others see your own face.`,
    notPutBackOn: (reason) => `Your face could not be put back on after the reconnection (${reason}). The others see your own face.`,
  },

  errors: {
    // The signalling errors, by the server's code.
    server: {
      room_full: "This room is full. Try another room name.",
      server_full: "The server is full right now. Please try again in a few minutes.",
      shutting_down: "The server is restarting. Please try again in a minute.",
      no_h264: "Your browser did not offer H.264 video, which facerelay needs. Try Chrome, Edge or Safari.",
      invalid_room: "Room names are 1 to 64 characters.",
      invalid_name: "Names are 1 to 64 characters.",
      connection_lost: "The video connection was lost.",
      roulette_full: "The roulette is full right now. Please try again in a few minutes.",
      no_partner: "There is nobody to report or block right now.",
      token_required: "This server admits people by invitation: open the link you were sent.",
      bad_token: "This invitation link is not valid. Ask for a new one.",
      token_expired: "This invitation link has expired. Ask for a new one.",
      token_wrong_room: "This invitation link is for another room.",
      not_allowed: "Your invitation lets you watch and listen: your camera and microphone are not sent.",
      cluster_unavailable: "The service cannot place calls right now. Please try again in a moment.",
    },
    // What the face calls' refusals mean, in plain words, by the server's code.
    face: {
      not_joined: "Join the call first, then choose a face.",
      consent_required: "Tick the box to confirm that this face is yours, or that its owner agreed.",
      not_allowed: "Your invitation does not let you choose a face.",
      uploads_disabled: "This server lets you choose a face from its gallery only.",
      image_too_large: "This photo is too large. Please use a smaller one.",
      upload_timeout: "The photo took too long to arrive. Please try again.",
      upload_busy: "Your previous photo is still being looked at. Please try again in a moment.",
      not_an_image: "This file is not a photo that can be read. Please use a JPEG, PNG or WebP photo.",
      no_face: "No face was found in this photo. Please use a clear photo of one face, from the front.",
      several_faces: "This photo shows several faces. Please use a photo of one face.",
      not_in_gallery: "This gallery face is not available any more.",
      swap_unavailable: "Face swap is not available on this server.",
      swap_capacity: "All face-swap places on this server are taken. You are in the call with your own face.",
    },
    // The camera and microphone could not start (`name`: the browser's name for the error).
    media: {
      blocked: "Camera and microphone access was blocked. Allow it in your browser (the camera icon in the address bar) and try again.",
      notFound: "No camera or microphone was found. Connect one and try again.",
      inUse: "Your camera is in use by another program. Close it and try again.",
      other: (name) => `The camera could not start (${name}).`,
      insecure: "This page needs a secure connection (https) to use the camera.",
    },
    // An HTTP answer the page has no words for (`status`: its number).
    serverAnswered: (status) => `The server answered ${status}.`,
    // `reason`: the server's word for why.
    serverEnded: (reason) => `The server ended the call: ${reason}.`,
  },

  // The watch page (/watch/ROOM/PARTICIPANT).
  watch: {
    title: "facerelay · watch",
    video: "The participant's video, as the others see it",
    connectionLost: "Connection lost. Reconnecting…",
    waitingFor: (who, room) => `Waiting for ${who} in room ${room}…`,
    // `reason`: the browser's words for why.
    unreachable: (reason) => `Cannot reach the server (${reason}). Trying again…`,
    streamStopped: "The stream stopped. Reconnecting…",
  },
};

/** Whether this page shows the pseudo-translation (`?pseudo-text` in its address). */
export const PSEUDO = typeof location !== "undefined" && new URLSearchParams(location.search).has("pseudo-text");

// The same table with every string, and every function's result, wrapped in ⟦…⟧.
function pseudo(table) {
  const out = {};
  for (const [key, value] of Object.entries(table)) {
    if (typeof value === "string") out[key] = `⟦${value}⟧`;
    else if (typeof value === "function") out[key] = (...args) => `⟦${value(...args)}⟧`;
    else out[key] = pseudo(value);
  }
  return out;
}

/** The page's words (see above). */
export const TEXT = PSEUDO ? pseudo(ENGLISH) : ENGLISH;

/** The string at a key path such as "landing.title", or undefined. */
function lookup(path) {
  const value = path.split(".").reduce((table, key) => table?.[key], TEXT);
  return typeof value === "string" ? value : undefined;
}

// The attributes an element may take from TEXT: data-text-NAME="key.path" sets NAME.
const ATTRIBUTES = ["aria-label", "placeholder", "alt", "title"];

/**
 * Fills the text of every element under `root` that names it: data-text (its textContent; on
 * <title>, the document's title) and data-text-aria-label, -placeholder, -alt and -title.
 */
export function applyText(root = document) {
  const missing = [];
  for (const el of root.querySelectorAll("[data-text]")) {
    const text = lookup(el.dataset.text);
    if (text === undefined) missing.push(el.dataset.text); else el.textContent = text;
  }
  for (const attr of ATTRIBUTES) {
    for (const el of root.querySelectorAll(`[data-text-${attr}]`)) {
      const path = el.getAttribute(`data-text-${attr}`);
      const text = lookup(path);
      if (text === undefined) missing.push(path); else el.setAttribute(attr, text);
    }
  }
  if (missing.length) console.error(`text.js has no string for ${missing.join(", ")}`);
}
