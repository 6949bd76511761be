"""The upload page served at ``GET /``: one self-contained HTML document, no external files.

Kept in a Python module so it ships with the package however it is installed.
"""

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>transferlab</title>
<style>
  :root { --ink: #1d2433; --muted: #667085; --accent: #2f6fde; --line: #d0d5dd; }
  * { box-sizing: border-box; }
  body { font: 16px/1.45 system-ui, sans-serif; color: var(--ink); margin: 0;
         background: #f6f7f9; }
  main { max-width: 760px; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  #model { color: var(--muted); margin: 0 0 1.25rem; font-size: .9rem; }
  #drop { display: block; border: 2px dashed var(--line); border-radius: 12px; background: #fff;
          padding: 2rem 1rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: var(--accent); background: #eef4ff; }
  #drop input { display: none; }
  #result { display: none; margin-top: 1.25rem; gap: 1.25rem; align-items: flex-start; }
  #result.shown { display: flex; flex-wrap: wrap; }
  #preview { max-width: 260px; max-height: 260px; border-radius: 8px; background: #fff;
             border: 1px solid var(--line); }
  #bars { flex: 1; min-width: 260px; }
  #top-label { font-size: 1.3rem; font-weight: 600; margin: 0 0 .5rem; }
  .row { margin: .35rem 0; }
  .row .name { display: flex; justify-content: space-between; font-size: .9rem; }
  .track { height: 10px; background: #e4e7ec; border-radius: 5px; overflow: hidden; }
  .fill { height: 100%; background: var(--accent); }
  #error { color: #b42318; margin-top: 1rem; min-height: 1.2em; }
  #status { color: var(--muted); font-size: .85rem; }
</style>
</head>
<body>
<main>
  <h1>Classify an image</h1>
  <p id="model">loading model&hellip;</p>
  <label id="drop" for="file">
    <input id="file" type="file" accept="image/*">
    <strong>Choose an image</strong> or drop it here
  </label>
  <div id="error" role="alert"></div>
  <section id="result" aria-live="polite">
    <img id="preview" alt="the uploaded image">
    <div id="bars">
      <p id="top-label"></p>
      <div id="rows"></div>
      <p id="status"></p>
    </div>
  </section>
</main>
<script>
"use strict";
const TOP_K = 5;
const $ = (id) => document.getElementById(id);

fetch("model").then((r) => r.json()).then((m) => {
  $("model").textContent = m.architecture + " \\u00b7 " + m.num_classes + " classes \\u00b7 "
    + m.backend + " backend";
}).catch(() => { $("model").textContent = "model information unavailable"; });

function showBars(result) {
  $("top-label").textContent = result.display || result.label;
  const rows = $("rows");
  rows.replaceChildren();
  for (const item of result.top_k) {
    const pct = (item.probability * 100).toFixed(1);
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("div");
    name.className = "name";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = item.display || item.label;
    const value = document.createElement("span");
    value.textContent = pct + "%";
    name.append(label, value);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = pct + "%";
    track.append(fill);
    row.append(name, track);
    rows.append(row);
  }
  $("status").textContent = result.milliseconds + " ms";
}

async function classify(file) {
  $("error").textContent = "";
  $("top-label").textContent = "";
  $("rows").replaceChildren();
  $("status").textContent = "classifying\\u2026";
  $("preview").src = URL.createObjectURL(file);
  $("result").classList.add("shown");
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("predict?top_k=" + TOP_K, { method: "POST", body });
    const data = await response.json();
    if (!response.ok) {
      throw new Error(typeof data.detail === "string" ? data.detail : response.statusText);
    }
    showBars(data);
  } catch (err) {
    $("status").textContent = "";
    $("error").textContent = "Could not classify " + file.name + ": " + err.message;
  }
}

$("file").addEventListener("change", (e) => {
  if (e.target.files.length) classify(e.target.files[0]);
});
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => {
  if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
