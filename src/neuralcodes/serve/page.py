"""The search page: plain HTML, CSS and a small script, no framework and nothing loaded from elsewhere.

The server fills in only numbers and :func:`html.escape`-d text; the script builds every result with
``textContent``, so no label or file name is ever parsed as HTML.
"""

from __future__ import annotations

import html
from typing import Any

from neuralcodes.retrieval.rerank import RERANKERS


def page_html(info: dict[str, Any], max_upload_bytes: int) -> str:
    model = html.escape(str(info.get("model", "")))
    count = int(info.get("images", 0))
    steps = "".join(
        f'<option value="{html.escape(name)}">{html.escape(step.about or name)}</option>'
        for name, step in RERANKERS.items()
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>neuralcodes image search</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body data-max-upload="{int(max_upload_bytes)}">
<header>
  <h1>Image search</h1>
  <p class="about">{count:,} images &middot; {model} &middot; backend {html.escape(str(info.get("backend", "")))}</p>
</header>
<main>
  <section id="ask">
    <label id="drop" for="file">
      <input id="file" type="file" accept="image/*">
      <span>Drop an image here, or <u>choose a file</u></span>
      <small>or click any image below to search with it</small>
    </label>
    <div class="controls">
      <label>results <select id="k"><option>6</option><option selected>12</option><option>24</option><option>48</option></select></label>
      <label>re-ranking <select id="rerank"><option value="" selected>none</option>{steps}</select></label>
      <img id="query" alt="your query" hidden>
    </div>
    <p id="status" role="status" aria-live="polite"></p>
  </section>
  <section>
    <h2 id="results-title" hidden></h2>
    <div id="results" class="grid"></div>
  </section>
  <section>
    <h2>The collection</h2>
    <div id="collection" class="grid"></div>
    <button id="more" type="button">more</button>
  </section>
</main>
</body>
</html>
"""


CSS = """
:root { font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
body { margin: 0 auto; max-width: 1200px; padding: 0 1rem 3rem; }
h1 { margin: 1rem 0 0; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.about { color: #666; margin: .2rem 0 1rem; }
#drop { display: flex; flex-direction: column; align-items: center; gap: .3rem; padding: 1.6rem; cursor: pointer;
        border: 2px dashed #999; border-radius: 10px; background: #fff; }
#drop.over { border-color: #2c7be5; background: #eef5ff; }
#drop input { position: absolute; width: 1px; height: 1px; opacity: 0; }
#drop small { color: #777; }
.controls { display: flex; align-items: center; gap: 1rem; margin: .6rem 0; }
#query { max-height: 96px; border-radius: 6px; border: 1px solid #ccc; }
#status { min-height: 1.2em; color: #555; } #status.error { color: #b00020; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .8rem; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 8px; overflow: hidden; }
figure img { display: block; width: 100%; height: 150px; object-fit: cover; cursor: pointer; background: #eee; }
figcaption { padding: .3rem .45rem; font-size: .8rem; display: flex; flex-direction: column; gap: .1rem; }
figcaption .label { font-weight: 600; } figcaption .distance { color: #2c7be5; }
figcaption .path { color: #888; }
figcaption span { overflow-wrap: anywhere; }
#more { margin-top: .8rem; }
"""


SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const maxUpload = Number(document.body.dataset.maxUpload);
let browsed = 0;

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function span(cls, text) {
  const element = document.createElement("span");
  element.className = cls;
  element.textContent = text;  // labels and file names are data: never parsed as markup
  return element;
}

function figure(item) {
  const fig = document.createElement("figure");
  fig.dataset.id = item.id;
  const img = document.createElement("img");
  img.src = item.thumbnail;
  img.alt = item.label || item.path;
  img.title = "search with this image";
  img.loading = "lazy";
  img.addEventListener("click", () => searchById(item.id));
  fig.append(img);
  const caption = document.createElement("figcaption");
  caption.append(span("label", item.label || "(no label)"));
  if (typeof item.distance === "number") caption.append(span("distance", "d = " + item.distance.toFixed(3)));
  caption.append(span("path", item.path));
  fig.append(caption);
  return fig;
}

function rerankQuery() {
  const step = $("rerank").value;
  return step ? "&rerank=" + encodeURIComponent(step) : "";
}

function showResults(data, title) {
  $("results-title").hidden = false;
  // Re-ranked results are in the step's order, not by distance: say so next to the distances.
  $("results-title").textContent = data.rerank ? title + " (re-ranked: " + data.rerank + ")" : title;
  $("results").replaceChildren(...data.results.map(figure));
  setStatus(data.results.length + " results");
}

async function fail(response) {
  let detail = response.statusText;
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (error) { /* not JSON: keep the status text */ }
  setStatus("Error " + response.status + ": " + detail, true);
}

async function searchFile(file) {
  if (!file) return;
  if (file.size > maxUpload) {
    setStatus("That file is over the upload limit of " + Math.round(maxUpload / 1048576) + " MiB.", true);
    return;
  }
  $("query").src = URL.createObjectURL(file);
  $("query").hidden = false;
  const form = new FormData();
  form.append("image", file);
  setStatus("Searching…");
  try {
    const response = await fetch("/api/search?k=" + $("k").value + rerankQuery(), { method: "POST", body: form });
    if (!response.ok) return fail(response);
    showResults(await response.json(), "Nearest to " + file.name);
  } catch (error) {
    setStatus("The server cannot be reached: " + error.message, true);
  }
}

async function searchById(id) {
  $("query").src = "/api/images/" + encodeURIComponent(id) + "/thumbnail";
  $("query").hidden = false;
  setStatus("Searching…");
  const response = await fetch("/api/images/" + encodeURIComponent(id) + "/neighbours?k=" + $("k").value + rerankQuery());
  if (!response.ok) return fail(response);
  const data = await response.json();
  showResults(data, "Nearest to " + data.query.path);
  window.scrollTo({ top: 0, behavior: "smooth" });
}

async function browse() {
  const response = await fetch("/api/images?limit=48&offset=" + browsed);
  if (!response.ok) return fail(response);
  const data = await response.json();
  $("collection").append(...data.images.map(figure));
  browsed += data.images.length;
  $("more").hidden = browsed >= data.total;
}

const drop = $("drop");
["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  searchFile(event.dataTransfer.files[0]);
});
$("file").addEventListener("change", (event) => searchFile(event.target.files[0]));
$("more").addEventListener("click", browse);
browse();
"""
