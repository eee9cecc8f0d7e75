// The Tidings page: a thin client of the local JSON API (/api/, documented at /api/openapi.json).
// All user content goes into the page as text (textContent / text nodes), never as HTML.
"use strict";

const state = {
  me: null,          // our feed id
  names: new Map(),  // feed id -> display name (or null)
  profiles: new Map(), // feed id -> profile (name, bio, avatar), for avatars
  view: "timeline",
  profileFeed: null, // the feed the profile view shows
  replyTo: null,     // entry id the composer answers
  previousView: "timeline",
  refreshTimer: null,
  reacted: new Map(), // entry id -> emojis reacted from this page (shown across re-renders)
};

const $ = (id) => document.getElementById(id);

// -- small DOM helpers ----------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function notice(message, isError) {
  const box = $("notice");
  box.textContent = message;
  box.className = isError ? "notice error" : "notice";
  box.hidden = !message;
  if (message && !isError) setTimeout(() => { if (box.textContent === message) box.hidden = true; }, 4000);
}

// -- the API ---------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(method, path, params) {
  let url = path;
  const init = { method, credentials: "same-origin", headers: {} };
  if (method === "GET" && params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value === undefined || value === null || value === "") continue;
      for (const v of Array.isArray(value) ? value : [value]) query.append(key, String(v));
    }
    url += "?" + query.toString();
  } else if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(params || {});
  }
  const response = await fetch(url, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) {
    $("login").hidden = false;
    setLive(false);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

async function attempt(fn, done) {
  try {
    const result = await fn();
    if (done) notice(done, false);
    return result;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) notice(err.message, true);
    return null;
  }
}

// -- names ----------------------------------------------------------------------------------------------
async function loadNames(feeds) {
  const todo = [...new Set(feeds)].filter((f) => !state.names.has(f));
  await Promise.all(todo.map(async (feed) => {
    try {
      const profile = await api("GET", "/api/profile", { feed });
      state.names.set(feed, profile.name);
      state.profiles.set(feed, profile);
    } catch (e) {
      state.names.set(feed, null);
    }
  }));
}

function label(feed) {
  const name = state.names.get(feed);
  const short = feed.slice(0, 10) + "…";
  return (name ? `${name} (${short})` : short) + (feed === state.me ? " (you)" : "");
}

function when(ts) {
  const d = new Date(ts);
  return d.toLocaleString();
}

// -- entries --------------------------------------------------------------------------------------------
function entryItem(entry, options) {
  const opts = options || {};
  const content = entry.content || {};
  const li = el("li", { class: "entry", dataset: { id: entry.id, type: entry.type } });
  if (opts.depth) li.classList.add(`depth-${Math.min(opts.depth, 2)}`);
  const author = el("button", { class: "author", type: "button", onclick: () => showProfile(entry.feed) }, label(entry.feed));
  li.append(el("div", { class: "head" }, avatarView(state.profiles.get(entry.feed)), author, el("span", { class: "muted" }, when(entry.ts))));
  if (entry.deleted || entry.content === null) {
    li.append(el("p", { class: "text muted" }, "(deleted)"));
  } else if (entry.type === "post") {
    if (content.reply) li.append(el("p", { class: "muted" }, "in reply to ", threadLink(content.reply)));
    li.append(el("p", { class: "text" }, String(content.text || "")));
    li.append(attachmentsView(entry) || "");
  } else if (entry.type === "repost") {
    const quoted = el("div", { class: "quoted" }, el("span", { class: "muted" }, "reposted…"));
    li.append(el("p", { class: "muted" }, "reposted"), quoted);
    fillQuote(quoted, content.target);
  } else if (entry.type === "reaction") {
    li.append(el("p", { class: "text" }, `${content.emoji || ""} on `, threadLink(content.target)));
  } else {
    li.append(el("p", { class: "muted" }, `${entry.type}`));
  }
  if (Array.isArray(entry.why) && entry.why.length) {
    const why = el("ul", { class: "why" });
    for (const reason of entry.why) why.append(el("li", {}, String(reason)));
    li.append(why);
  }
  if (entry.type === "post" || entry.type === "repost") li.append(actions(entry));
  return li;
}

function threadLink(id) {
  return el("button", { class: "link", type: "button", onclick: () => showThread(id) }, String(id).slice(0, 12) + "…");
}

async function fillQuote(box, target) {
  if (!target) return;
  try {
    const original = await api("GET", "/api/entry", { entry: target });
    await loadNames([original.feed]);
    clear(box);
    box.append(el("span", { class: "muted" }, label(original.feed) + ": "));
    box.append(el("span", { class: "text" }, String((original.content || {}).text || "(deleted)")));
    box.append(attachmentsView(original) || "");
  } catch (e) {
    clear(box);
    box.append(el("span", { class: "muted" }, "(not stored here)"));
  }
}

function actions(entry) {
  const target = entry.type === "repost" && entry.content ? entry.content.target : entry.id;
  const bar = el("div", { class: "actions" });
  bar.append(el("button", { class: "reply", type: "button", onclick: () => startReply(target) }, "Reply"));
  for (const emoji of ["👍", "❤️", "🎉"]) {
    bar.append(el("button", {
      class: "react", type: "button", title: `react ${emoji}`, dataset: { emoji },
      onclick: async () => {
        const ok = await attempt(() => api("POST", "/api/react", { entry: target, emoji }), `Reacted ${emoji}`);
        if (!ok) return;
        state.reacted.set(target, [...(state.reacted.get(target) || []), emoji]);
        showReacted(bar, target);
      },
    }, emoji));
  }
  const counts = entry.reactions && typeof entry.reactions === "object" ? Object.entries(entry.reactions) : [];
  if (counts.length) {
    const total = counts.map(([emoji, people]) => `${emoji} ${Number(people)}`).join(" · ");
    bar.append(el("span", { class: "counts", title: "reactions (people)" }, total));
  }
  bar.append(el("button", { class: "repost", type: "button", onclick: () => attempt(() => api("POST", "/api/repost", { entry: target }), "Reposted").then(refresh) }, "Repost"));
  bar.append(el("button", { class: "thread", type: "button", onclick: () => showThread(target) }, "Thread"));
  showReacted(bar, target);
  if (entry.feed === state.me) {
    bar.append(el("button", {
      class: "delete", type: "button",
      onclick: async () => {
        if (!confirm("Delete this entry here and at your peers?")) return;
        if (await attempt(() => api("POST", "/api/delete", { entry: entry.id }), "Deleted")) refresh();
      },
    }, "Delete"));
  }
  return bar;
}

function showReacted(bar, target) {
  const emojis = state.reacted.get(target);
  if (!emojis) return;
  let mark = bar.querySelector(".mine");
  if (!mark) { mark = el("span", { class: "mine" }); bar.append(mark); }
  mark.textContent = `you reacted ${emojis.join(" ")}`;
}

async function renderEntries(list, entries, depths) {
  await loadNames(entries.map((e) => e.feed));
  const fresh = new Set();
  const old = new Set([...list.querySelectorAll(".entry")].map((n) => n.dataset.id));
  clear(list);
  for (const entry of entries) {
    const item = entryItem(entry, { depth: depths ? depths.get(entry.id) : 0 });
    if (old.size && !old.has(entry.id)) { item.classList.add("fresh"); fresh.add(entry.id); }
    list.append(item);
  }
  if (!entries.length) list.append(el("li", { class: "muted" }, "Nothing here yet."));
}

// -- views ----------------------------------------------------------------------------------------------
function show(view) {
  if (view !== "thread") state.previousView = view;
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("current", tab.dataset.view === view);
}

async function loadTimeline() {
  const params = { ranker: $("ranker").value || "chronological", explain: $("explain").checked ? "1" : "", limit: 50 };
  const swarm = $("swarm-filter").value;
  if (swarm) params.swarm = swarm;
  const result = await attempt(() => api("GET", "/api/timeline", params));
  if (result) await renderEntries($("timeline"), result.items);
}

async function showThread(id) {
  show("thread");
  const result = await attempt(() => api("GET", "/api/thread", { entry: id }));
  if (!result) return;
  const depths = new Map();
  for (const item of result.items) {
    const parent = (item.content || {}).reply;
    depths.set(item.id, parent && depths.has(parent) ? depths.get(parent) + 1 : 0);
  }
  await renderEntries($("thread"), result.items, depths);
}

async function showProfile(feed) {
  state.profileFeed = feed || state.me;
  show("profile");
  await loadProfile();
}

async function loadProfile() {
  const feed = state.profileFeed || state.me;
  const profile = await attempt(() => api("GET", "/api/profile", { feed }));
  if (!profile) return;
  state.names.set(feed, profile.name);
  state.profiles.set(feed, profile);
  showAvatar($("profile-avatar"), profile);
  $("profile-name").textContent = profile.name || "(no name)";
  $("profile-feed").textContent = feed;
  $("profile-bio").textContent = profile.bio || "";
  const mine = feed === state.me;
  $("profile-form").hidden = !mine;
  if (mine) {
    $("profile-edit-name").value = profile.name || "";
    $("profile-edit-bio").value = profile.bio || "";
  }
  const bar = $("profile-actions");
  clear(bar);
  if (!mine) {
    const following = await attempt(() => api("GET", "/api/following"));
    const follows = following && following.items.some((f) => f.feed === feed);
    const act = (kind, text) => el("button", {
      type: "button", class: kind,
      onclick: async () => { if (await attempt(() => api("POST", `/api/${kind}`, { feed }), text)) loadProfile(); },
    }, kind.charAt(0).toUpperCase() + kind.slice(1));
    bar.append(follows ? act("unfollow", "Unfollowed") : act("follow", "Followed"));
    bar.append(act("mute", "Muted"), act("unmute", "Unmuted"), act("block", "Blocked"), act("unblock", "Unblocked"), messageButton(feed));
  }
  const log = await attempt(() => api("GET", "/api/log", { feed, limit: 50 }));
  if (log) await renderEntries($("profile-log"), log.items.filter((e) => e.type !== "box")); // messages: only in Messages
  else clear($("profile-log"));
}

async function loadSwarms() {
  const result = await attempt(() => api("GET", "/api/swarms"));
  if (!result) return;
  const list = $("swarms");
  clear(list);
  const filter = $("swarm-filter");
  const chosen = filter.value;
  while (filter.options.length > 1) filter.remove(1);
  for (const swarm of result.items) {
    filter.append(el("option", { value: swarm.name }, swarm.name));
    list.append(el("li", { class: "item row" },
      el("strong", {}, swarm.name),
      el("span", { class: "muted" }, `${swarm.members} members found`),
      el("button", { type: "button", onclick: () => { show("timeline"); filter.value = swarm.name; $("ranker").value = "chronological"; loadTimeline(); } }, "Posts"),
      el("button", { type: "button", onclick: async () => { if (await attempt(() => api("POST", "/api/swarms/leave", { name: swarm.name }), `Left ${swarm.name}`)) loadSwarms(); } }, "Leave"),
    ));
  }
  if ([...filter.options].some((o) => o.value === chosen)) filter.value = chosen;
  if (!result.items.length) list.append(el("li", { class: "muted" }, "No swarms yet: join one by name."));
}

async function loadPeers() {
  const status = await attempt(() => api("GET", "/api/status"));
  const peers = await attempt(() => api("GET", "/api/peers"));
  if (!status || !peers) return;
  await loadNames([...status.connections.map((c) => c.feed), ...peers.items.map((p) => p.feed)]);
  const conns = $("connections");
  clear(conns);
  for (const c of status.connections) {
    const path = c.path === "relayed" ? `relayed via ${c.relay}` : "direct";
    conns.append(el("li", { class: "item" },
      el("strong", {}, label(c.feed)), " ", el("span", { class: "muted" }, `${c.address} · ${path} · received ${c.received}, sent ${c.sent} entries`)));
  }
  if (!status.connections.length) conns.append(el("li", { class: "muted" }, "No peer connected now."));
  const list = $("peers");
  clear(list);
  for (const p of peers.items) {
    const seen = p.connected ? "connected" : `last seen ${when(p.last_seen)}`;
    list.append(el("li", { class: "item" }, el("strong", {}, label(p.feed)), " ",
      el("span", { class: "muted" }, `${(p.addresses || []).join(", ") || "(inbound only)"} · ${seen} · via ${p.source}`)));
  }
  if (!peers.items.length) list.append(el("li", { class: "muted" }, "No peers met yet."));
}

async function loadStatus() {
  const status = await attempt(() => api("GET", "/api/status"));
  if (!status) return false;
  $("login").hidden = true;
  state.me = status.feed;
  await loadNames([status.feed]);
  $("me").textContent = label(status.feed);
  $("sync").textContent = `${status.peers} peer${status.peers === 1 ? "" : "s"} connected · ${status.entries} entries`;
  return true;
}

async function loadRankers() {
  const result = await attempt(() => api("GET", "/api/rankers"));
  if (!result) return;
  const select = $("ranker");
  clear(select);
  for (const r of result.items) select.append(el("option", { value: r.name, title: r.description }, r.name));
  select.value = "chronological";
  describeRanker(result.items);
  select.addEventListener("change", () => { describeRanker(result.items); loadTimeline(); });
}

function describeRanker(items) {
  const chosen = items.find((r) => r.name === $("ranker").value);
  $("ranker-description").textContent = chosen ? chosen.description : "";
}

function refresh() {
  loadStatus();
  if (state.view === "timeline") return loadTimeline();
  if (state.view === "profile") return loadProfile();
  if (state.view === "peers") return loadPeers();
  if (state.view === "swarms") return loadSwarms();
  if (state.view === "messages") return loadMessages(); // static/messages.js
  return null;
}

// -- composing -------------------------------------------------------------------------------------------
function startReply(id) {
  state.replyTo = id;
  show("timeline");
  $("compose-reply").textContent = `replying to ${id.slice(0, 12)}…`;
  $("compose-cancel-reply").hidden = false;
  $("compose-text").focus();
}

function stopReply() {
  state.replyTo = null;
  $("compose-reply").textContent = "";
  $("compose-cancel-reply").hidden = true;
}

async function submitPost(ev) {
  ev.preventDefault();
  const text = $("compose-text").value.trim();
  if (!text) return;
  const attachments = await attempt(uploadPending); // pictures and files first (static/media.js)
  if (!attachments) return;
  const call = state.replyTo
    ? () => api("POST", "/api/reply", { entry: state.replyTo, text, attachments })
    : () => api("POST", "/api/post", { text, attachments });
  const written = await attempt(call, state.replyTo ? "Replied" : "Posted");
  if (!written) return;
  $("compose-text").value = "";
  clearPending();
  stopReply();
  await loadTimeline();
}

// -- live updates ----------------------------------------------------------------------------------------
function setLive(on) {
  const badge = $("live");
  badge.textContent = on ? "live" : "offline";
  badge.className = on ? "live on" : "live off";
}

function listen() {
  const source = new EventSource("/api/events");
  source.addEventListener("hello", (ev) => { setLive(true); messagesHello(ev); });
  source.addEventListener("messages", messagesEvent); // a private message for us (static/messages.js)
  source.addEventListener("changed", () => {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, 150);
  });
  source.onerror = () => setLive(false);
  source.onopen = () => setLive(true);
}

// -- start -----------------------------------------------------------------------------------------------
function wire() {
  wireMessages(); // first: its tab handler runs before the one below
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      const view = tab.dataset.view;
      if (view === "profile") { showProfile(state.me); return; }
      show(view);
      refresh();
    });
  }
  $("compose").addEventListener("submit", submitPost);
  wireMedia();
  $("compose-cancel-reply").addEventListener("click", stopReply);
  $("explain").addEventListener("change", loadTimeline);
  $("swarm-filter").addEventListener("change", () => {
    if ($("swarm-filter").value && !["chronological", "swarm"].includes($("ranker").value)) $("ranker").value = "chronological";
    loadTimeline();
  });
  $("thread-back").addEventListener("click", () => { show(state.previousView); refresh(); });
  $("profile-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: $("profile-edit-name").value, bio: $("profile-edit-bio").value };
    const face = $("profile-edit-avatar").files[0];
    if (face) {
      const avatar = await attempt(() => uploadFile(face));
      if (!avatar) return;
      body.avatar = avatar;
    }
    if (await attempt(() => api("POST", "/api/profile", body), "Profile saved")) {
      $("profile-edit-avatar").value = "";
      state.names.delete(state.me);
      await loadStatus();
      await loadProfile();
    }
  });
  $("goto-feed").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const feed = $("goto-feed-id").value.trim();
    if (feed) showProfile(feed);
  });
  $("swarm-join").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("swarm-name").value.trim();
    if (name && await attempt(() => api("POST", "/api/swarms/join", { name }), `Joined ${name}`)) {
      $("swarm-name").value = "";
      loadSwarms();
    }
  });
  $("search-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const result = await attempt(() => api("GET", "/api/search", { q: $("search-q").value }));
    if (result) await renderEntries($("search-results"), result.items);
  });
}

async function start() {
  wire();
  if (!(await loadStatus())) return;
  await loadRankers();
  await loadSwarms();
  await loadTimeline();
  listen();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
