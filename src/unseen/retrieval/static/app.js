"use strict";
// The gallery search page: upload a query (or pick a gallery image) and show the top-k grid from the JSON API.

const $ = (id) => document.getElementById(id);
let info = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function k() {
  const value = parseInt($("k").value, 10);
  const max = info ? info.limits.max_k : 100;
  return Number.isFinite(value) ? Math.min(Math.max(value, 1), max) : 10;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showResults(answer, queryLabel) {
  const grid = $("results");
  grid.replaceChildren();
  let same = 0;
  for (const hit of answer.hits) {
    const card = element("figure", "result");
    card.dataset.row = hit.row;
    if (queryLabel) {
      const match = hit.label === queryLabel;
      same += match;
      card.classList.add(match ? "same" : "other");
    }
    const image = element("img");
    image.src = hit.thumbnail;
    image.alt = hit.name;
    image.title = "search with this image";
    image.addEventListener("click", () => searchRow(hit.row, hit.label, hit.name, hit.thumbnail));
    const meta = element("div", "meta");
    meta.append(element("span", "label", hit.label || "—"), element("span", "similarity", hit.similarity.toFixed(3)));
    const bar = element("div", "bar");
    const fill = element("div");
    fill.style.width = `${Math.max(0, hit.similarity) * 100}%`;
    bar.append(fill);
    card.append(element("div", "rank", `#${hit.rank}`), image, meta, bar, element("div", "name", hit.name));
    grid.append(card);
  }
  $("summary").textContent = queryLabel
    ? `${answer.hits.length} nearest; ${same} share the query's label "${queryLabel}"`
    : `${answer.hits.length} nearest by cosine similarity`;
}

function showQuery(src, caption) {
  $("query-preview").hidden = false;
  $("query-image").src = src;
  $("query-caption").textContent = caption;
}

async function searchUpload(file) {
  if (!file) return;
  showQuery(URL.createObjectURL(file), file.name);
  setStatus(`searching with ${file.name}…`);
  const form = new FormData();
  form.append("image", file);
  try {
    const answer = await getJSON(`/api/search?k=${k()}`, { method: "POST", body: form });
    showResults(answer, null);
    setStatus(`${file.name}: ${answer.query.width}×${answer.query.height}`);
  } catch (error) {
    $("results").replaceChildren();
    $("summary").textContent = "";
    setStatus(error.message, true);
  }
}

async function searchRow(row, label, name, thumbnail) {
  showQuery(thumbnail, `gallery row ${row}: ${name}${label ? ` (${label})` : ""}`);
  setStatus(`searching with gallery row ${row}…`);
  try {
    const answer = await getJSON(`/api/search/${row}?k=${k()}`);
    showResults(answer, label || null);
    setStatus(`gallery row ${row} (itself left out)`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function showGallery() {
  if (!info) return;
  const limit = 24;
  const offset = Math.floor(Math.random() * Math.max(1, info.images - limit + 1));
  const page = await getJSON(`/api/items?offset=${offset}&limit=${limit}`);
  const grid = $("gallery");
  grid.replaceChildren();
  for (const item of page.items) {
    const image = element("img");
    image.src = item.thumbnail;
    image.alt = item.name;
    image.title = `${item.label || item.name}: search with this image`;
    image.addEventListener("click", () => searchRow(item.row, item.label, item.name, item.thumbnail));
    grid.append(image);
  }
}

async function start() {
  try {
    info = await getJSON("/api/index");
    const model = info.model;
    const recall = info["recall@10"] == null ? "exact search" : `recall@10 ${info["recall@10"].toFixed(3)} vs exact`;
    $("index-info").textContent = `${info.images} images (${info.labels} labels) · ${info.kind} index, ${recall} · ` +
      `model ${model.run || model.checkpoint} step ${model.step ?? "?"}, sha256 ${model.fingerprint.slice(0, 12)}`;
    $("k").max = info.limits.max_k;
    await showGallery();
  } catch (error) {
    setStatus(`cannot read the index: ${error.message}`, true);
  }
}

$("query-file").addEventListener("change", (event) => searchUpload(event.target.files[0]));
$("shuffle").addEventListener("click", showGallery);
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  searchUpload(event.dataTransfer.files[0]);
});
start();
