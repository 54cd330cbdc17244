// Chats in localStorage: they outlive the tab and are shared by the origin's tabs.
//
// One key per chat (`jarvis-trio.chat.<id>`), so saving a streaming answer writes that
// chat only, and an index (`jarvis-trio.chats.v1`, the ids). A chat's id is its session
// id (X-Session-Id). What a tab is showing, and the API key, stay in the tab's
// sessionStorage.

export const INDEX = "jarvis-trio.chats.v1";
export const CHAT_PREFIX = "jarvis-trio.chat.";
export const TAB = "jarvis-trio.tab.v1";
const OLD_TAB_CHAT = "jarvis-trio.chat.v1"; // before chats were kept: one per tab

function read(storage, key) {
  try {
    return JSON.parse(storage.getItem(key) || "null");
  } catch (_) {
    return null;
  }
}

export function isChat(value) {
  return Boolean(value) && typeof value.id === "string" && Array.isArray(value.turns);
}

export function newId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function newChat() {
  const now = Date.now();
  return { id: newId(), title: "", renamed: false, system: "", model: "", agent: false, createdAt: now,
    updatedAt: now, turns: [] };
}

/** Every stored chat, newest first. */
export function loadChats() {
  const ids = read(localStorage, INDEX);
  const chats = [];
  for (const id of Array.isArray(ids) ? ids : []) {
    const chat = loadChat(id);
    if (chat) chats.push(chat);
  }
  // A tab of the page before chats were kept: its chat joins the list.
  const old = read(sessionStorage, OLD_TAB_CHAT);
  if (old && typeof old.sessionId === "string" && Array.isArray(old.turns)) {
    sessionStorage.removeItem(OLD_TAB_CHAT);
    if (old.turns.length && !chats.some((c) => c.id === old.sessionId)) {
      const chat = { ...newChat(), id: old.sessionId, turns: old.turns };
      chats.push(chat);
      saveChat(chat);
    }
    if (old.apiKey) saveTab({ ...loadTab(), apiKey: old.apiKey, current: old.sessionId });
  }
  chats.sort((a, b) => b.updatedAt - a.updatedAt);
  return chats;
}

export function loadChat(id) {
  const chat = read(localStorage, CHAT_PREFIX + id);
  if (!isChat(chat) || chat.id !== id) return null;
  return { ...newChat(), ...chat };
}

/** Save one chat (and the index). False when the browser refused (storage full). */
export function saveChat(chat) {
  try {
    localStorage.setItem(CHAT_PREFIX + chat.id, JSON.stringify(chat));
    const ids = read(localStorage, INDEX);
    const list = Array.isArray(ids) ? ids : [];
    if (!list.includes(chat.id)) localStorage.setItem(INDEX, JSON.stringify([chat.id, ...list]));
    return true;
  } catch (_) {
    return false;
  }
}

export function saveIndex(chats) {
  try {
    localStorage.setItem(INDEX, JSON.stringify(chats.map((c) => c.id)));
  } catch (_) {
    // storage full: the chats' own keys still hold them; saveChat reports it
  }
}

export function removeChat(id, chats) {
  localStorage.removeItem(CHAT_PREFIX + id);
  saveIndex(chats);
}

export function loadTab() {
  const tab = read(sessionStorage, TAB);
  return { current: "", apiKey: "", ...(tab && typeof tab === "object" ? tab : {}) };
}

export function saveTab(tab) {
  sessionStorage.setItem(TAB, JSON.stringify(tab));
}

export const PREFS = "jarvis-trio.prefs.v1";

export function loadPrefs() {
  const prefs = read(localStorage, PREFS);
  return { model: "", ...(prefs && typeof prefs === "object" ? prefs : {}) };
}

export function savePrefs(prefs) {
  try {
    localStorage.setItem(PREFS, JSON.stringify(prefs));
  } catch (_) {
    // a full storage loses the default model, nothing else
  }
}
