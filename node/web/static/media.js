// Pictures and files on the page (spec/protocol.md §8.5): attachments shown with their alt text,
// avatars, and attaching from the composer (file picker and paste). Loaded before app.js, whose
// helpers (el, clear, notice, ApiError) it uses once the page has started.
// A picture is an <img> of /api/blobs/&id, which the node serves as a picture only after checking it;
// a file is only ever a download link: never <img>, <iframe>, <object> or <embed>.
"use strict";

const PICTURE_TYPES = new Set(["image/jpeg", "image/png", "image/webp", "image/gif"]);
const MAX_ATTACHMENTS = 4;
const pending = []; // files chosen or pasted for the next post: {file, alt, url, node}

function blobUrl(id) {
  return "/api/blobs/" + encodeURIComponent(id);
}

function sizeText(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// -- showing ---------------------------------------------------------------------------------------------
function attachmentsView(entry) {
  const list = Array.isArray(entry.attachments) ? entry.attachments : [];
  if (!list.length) return null;
  const box = el("div", { class: "attachments" });
  for (const a of list) box.append(attachmentView(a));
  return box;
}

function attachmentView(a) {
  const picture = PICTURE_TYPES.has(a.mime);
  if (picture && (a.held || a.preview_held)) return pictureView(a);
  if (!picture && a.held) return fileView(a, "");
  return placeholderView(a);
}

function pictureView(a) {
  // the picture itself, else its small preview until the picture arrives
  const alt = a.alt || "";
  const img = el("img", { src: blobUrl(a.held ? a.blob : a.preview), alt, loading: "lazy", decoding: "async" });
  if (alt) img.title = alt;
  if (a.width && a.height) { img.width = a.width; img.height = a.height; } // layout hints only
  const figure = el("figure", { class: a.held ? "attachment picture" : "attachment picture preview", dataset: { blob: a.blob } }, img);
  if (alt) figure.append(el("figcaption", {}, alt));
  if (!a.held) figure.append(el("figcaption", { class: "muted" }, "a preview: the picture is not here yet"));
  // the node serves what fails its checks as a download: then offer it as one
  img.addEventListener("error", () => figure.replaceWith(a.held ? fileView(a, "not shown: not a valid picture") : placeholderView(a)));
  return figure;
}

function fileView(a, note) {
  const name = `${String(a.blob).slice(1, 17)}.bin`;
  const link = el("a", { href: blobUrl(a.blob), download: name, rel: "noopener" }, `Download file (${sizeText(a.size)})`);
  return el("div", { class: "attachment file", dataset: { blob: a.blob } },
    link, a.alt ? el("span", { class: "alt" }, ` ${a.alt}`) : null, note ? el("span", { class: "muted" }, ` ${note}`) : null);
}

function placeholderView(a) {
  const what = PICTURE_TYPES.has(a.mime) ? "picture" : "file";
  const pixels = a.width && a.height ? `, ${a.width}×${a.height}` : "";
  return el("div", { class: "attachment placeholder", role: "img", "aria-label": a.alt || what, dataset: { blob: a.blob } },
    el("span", { class: "alt" }, a.alt || `(a ${what} without a description)`),
    el("span", { class: "muted" }, ` · ${what}, ${sizeText(a.size)}${pixels}, not here yet`));
}

function avatarView(profile, extraClass) {
  const a = profile && profile.avatar;
  if (!a || !PICTURE_TYPES.has(a.mime) || !(a.held || a.preview_held)) return null;
  // an avatar is small: its preview is enough, and lighter
  const img = el("img", { class: extraClass ? `avatar ${extraClass}` : "avatar", src: blobUrl(a.preview_held ? a.preview : a.blob),
    alt: a.alt || `avatar of ${profile.name || "this feed"}` });
  img.addEventListener("error", () => img.remove());
  return img;
}

function showAvatar(box, profile) {
  clear(box);
  const img = avatarView(profile, "large");
  if (img) box.append(img);
}

// -- attaching -------------------------------------------------------------------------------------------
function addPending(file) {
  if (pending.length >= MAX_ATTACHMENTS) {
    notice(`A post carries at most ${MAX_ATTACHMENTS} pictures or files.`, true);
    return;
  }
  const picture = file.type && file.type.startsWith("image/");
  const item = { file, url: picture ? URL.createObjectURL(file) : null };
  item.alt = el("input", { class: "alt-text", placeholder: "Describe it (alt text)", maxlength: "1000", "aria-label": "alt text" });
  const shown = item.url ? el("img", { src: item.url, alt: "" }) : el("span", { class: "muted" }, `${file.name || "file"} (${sizeText(file.size)})`);
  const remove = el("button", { type: "button", class: "remove", title: "remove", onclick: () => dropPending(item) }, "✕");
  item.node = el("li", { class: "pending" }, shown, item.alt, remove);
  pending.push(item);
  $("compose-attachments").append(item.node);
}

function dropPending(item) {
  const at = pending.indexOf(item);
  if (at >= 0) pending.splice(at, 1);
  if (item.url) URL.revokeObjectURL(item.url);
  item.node.remove();
}

function clearPending() {
  for (const item of [...pending]) dropPending(item);
}

function pastePictures(ev) {
  const files = ev.clipboardData ? [...ev.clipboardData.files] : [];
  const pictures = files.filter((f) => f.type && f.type.startsWith("image/"));
  if (!pictures.length) return; // plain text pastes as usual
  ev.preventDefault();
  for (const file of pictures) addPending(file);
}

async function uploadFile(file) {
  // the raw bytes: application/octet-stream is a type no other site can make a browser send
  const response = await fetch("/api/blobs", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/octet-stream" }, body: file,
  });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

async function uploadPending() {
  // each file is prepared by the node as the CLI does it (metadata stripped); then the post names them
  const refs = [];
  for (const item of pending) {
    const ref = await uploadFile(item.file);
    const alt = item.alt.value.trim();
    refs.push(alt ? { ...ref, alt } : ref);
  }
  return refs;
}

function wireMedia() {
  $("compose-files").addEventListener("change", (ev) => {
    for (const file of ev.target.files) addPending(file);
    ev.target.value = "";
  });
  $("compose").addEventListener("paste", pastePictures);
}
