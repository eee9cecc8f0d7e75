// Private messages on the page (spec/protocol.md §8.6; the API of node/web/messages.py): the
// conversations with their unread counts, the requests of strangers apart, one conversation, writing
// and replying, and the unread badge in the navigation. Loaded before app.js, whose helpers (el, clear,
// api, attempt, label, when, loadNames, show, state) it uses once the page has started.
// Messages are shown only here: the timeline, search and profiles never show a box.
// All message text goes into the page as text (text nodes), never as HTML.
"use strict";

const dm = {
  with: null,   // the other feeds of the open conversation, or null: the list
  reply: null,  // the message the conversation's composer answers, or null
};

function snippet(text, n) {
  const flat = String(text || "").split(/\s+/).join(" ").trim();
  const most = n || 80;
  return flat.length <= most ? flat : flat.slice(0, most - 1) + "…";
}

// -- badges ----------------------------------------------------------------------------------------------
// the node's counts (GET /api/unread, the event stream's hello and messages): unread messages of the
// inbox in the navigation; those of strangers only beside the requests
function setBadges(counts) {
  if (!counts) return;
  const badge = $("unread-badge");
  badge.textContent = String(counts.unread || 0);
  badge.hidden = !counts.unread;
  badge.title = `${counts.unread || 0} unread private message${counts.unread === 1 ? "" : "s"}`;
  const requests = $("requests-badge");
  requests.textContent = String(counts.requests || 0);
  requests.hidden = !counts.requests;
}

async function loadBadges() {
  setBadges(await attempt(() => api("GET", "/api/unread")));
}

// the event stream: hello carries the counts; "messages" comes when they (or the newest message) change
function messagesHello(event) {
  try { setBadges(JSON.parse(event.data).messages); } catch (e) { /* an older node: no counts */ }
}

function messagesEvent(event) {
  setBadges(JSON.parse(event.data));
  if (state.view !== "messages") return;
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, 150);
}

// -- the list --------------------------------------------------------------------------------------------
function loadMessages() {
  return dm.with ? loadConversation() : loadInbox();
}

function showList() {
  dm.with = null;
  dm.reply = null;
  $("messages-list").hidden = false;
  $("conversation-view").hidden = true;
}

async function loadInbox() {
  showList();
  const inbox = await attempt(() => api("GET", "/api/inbox"));
  const requests = await attempt(() => api("GET", "/api/inbox", { requests: "1" }));
  if (!inbox || !requests) return;
  const feeds = [...inbox.items, ...requests.items].flatMap((c) => c.with ? [...c.with, c.last.feed] : [c.feed]);
  await loadNames(feeds);
  fillList($("inbox"), inbox.items, "No conversations yet: write to someone above.");
  fillList($("requests"), requests.items, "No requests.");
  setBadges({
    unread: inbox.items.reduce((n, c) => n + (c.unread || 0), 0),
    requests: requests.items.reduce((n, c) => n + (c.unread || 0), 0),
  });
}

function fillList(list, items, empty) {
  clear(list);
  for (const item of items) list.append(conversationItem(item));
  if (!items.length) list.append(el("li", { class: "muted" }, empty));
}

function conversationItem(c) {
  if (c.undecryptable) {
    return el("li", { class: "item muted" }, `${when(c.ts)} · ${label(c.feed)}: a message that could not be opened (${c.reason})`);
  }
  const open = el("button", { type: "button", class: "open", onclick: () => openConversation(c.with) },
    el("span", { class: "row" },
      el("strong", {}, c.with.map(label).join(", ")),
      c.unread ? el("span", { class: "badge", title: "unread" }, String(c.unread)) : null,
      el("span", { class: "muted" }, `${when(c.ts)} · ${c.messages} message${c.messages === 1 ? "" : "s"}`)),
    el("span", { class: "snippet" }, `${label(c.last.feed)}: ${snippet(c.last.text)}`));
  return el("li", { class: c.unread ? "item conversation unread" : "item conversation", dataset: { with: c.with.join(",") } }, open);
}

// -- one conversation ------------------------------------------------------------------------------------
function openConversation(feeds) {
  show("messages");
  dm.with = [...feeds];
  dm.reply = null;
  return loadConversation();
}

async function loadConversation() {
  $("messages-list").hidden = true;
  $("conversation-view").hidden = false;
  const people = dm.with;
  await loadNames(people);
  $("conversation-with").textContent = people.map(label).join(", ");
  const result = await attempt(() => api("GET", "/api/conversation", { with: people.join(",") }));
  if (!result || dm.with !== people) return; // left meanwhile
  await loadNames(result.items.map((m) => m.feed));
  const list = $("conversation");
  const byId = new Map(result.items.map((m) => [m.id, m]));
  clear(list);
  for (const m of result.items) list.append(messageItem(m, byId));
  if (!result.items.length) list.append(el("li", { class: "muted" }, "No messages yet: write the first."));
  showReplying();
  const last = list.lastElementChild;
  if (last && last.scrollIntoView) last.scrollIntoView({ block: "nearest" });
  await loadBadges(); // reading them marked them read
}

function messageItem(m, byId) {
  const classes = ["message"];
  if (m.feed === state.me) classes.push("mine");
  if (m.read === false) classes.push("unread");
  const li = el("li", { class: classes.join(" "), dataset: { id: m.id } });
  li.append(el("div", { class: "head" },
    avatarView(state.profiles.get(m.feed)),
    el("strong", {}, label(m.feed)),
    el("span", { class: "muted" }, when(m.ts)),
    m.read === false ? el("span", { class: "badge" }, "new") : null));
  if (m.reply) {
    const answered = byId.get(m.reply);
    const what = answered ? `${label(answered.feed)}: ${snippet(answered.text, 60)}` : `${m.reply.slice(0, 12)}…`;
    li.append(el("p", { class: "answers muted" }, `answering ${what}`));
  }
  li.append(el("p", { class: "text" }, String(m.text || "")));
  li.append(el("div", { class: "actions" },
    el("button", { type: "button", class: "reply", onclick: () => { dm.reply = m; showReplying(); $("dm-text").focus(); } }, "Reply")));
  return li;
}

function showReplying() {
  $("dm-replying").textContent = dm.reply ? `answering ${label(dm.reply.feed)}: ${snippet(dm.reply.text, 40)}` : "";
  $("dm-cancel-reply").hidden = !dm.reply;
}

// -- writing ---------------------------------------------------------------------------------------------
async function sendNew(ev) {
  ev.preventDefault();
  const to = $("dm-to").value.split(/[\s,]+/).filter(Boolean);
  const text = $("dm-new-text").value;
  if (!to.length || !text.trim()) return;
  const sent = await attempt(() => api("POST", "/api/dm", { to, text }), "Sent privately");
  if (!sent) return;
  $("dm-to").value = "";
  $("dm-new-text").value = "";
  await openConversation(sent.to);
}

async function sendInConversation(ev) {
  ev.preventDefault();
  const text = $("dm-text").value;
  if (!dm.with || !text.trim()) return;
  const body = dm.reply ? { reply: dm.reply.id, text } : { to: dm.with, text };
  if (!(await attempt(() => api("POST", "/api/dm", body), "Sent privately"))) return;
  $("dm-text").value = "";
  dm.reply = null;
  await loadConversation();
}

// a "Message" button for a profile: opens the conversation with that feed
function messageButton(feed) {
  return el("button", { type: "button", class: "message-feed", onclick: () => openConversation([feed]) }, "Message");
}

function wireMessages() {
  $("tab-messages").addEventListener("click", showList); // before app.js's tab handler: the list
  $("dm-new").addEventListener("submit", sendNew);
  $("dm-form").addEventListener("submit", sendInConversation);
  $("dm-back").addEventListener("click", () => { showList(); loadInbox(); });
  $("dm-cancel-reply").addEventListener("click", () => { dm.reply = null; showReplying(); });
}
