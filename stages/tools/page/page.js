// The page of `python -m stages.tools.page`. Talks to its own server only (/api/...).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;  // /api/info: classes, models with their test metrics, limits, test images
let studyShown = false;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const number = (x, digits = 3) => (x === null || x === undefined ? "–" : x.toFixed(digits));
const megabytes = (bytes) => (bytes / 1e6).toFixed(1);

async function askServer(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    return {error: "the page's server did not answer: is `python -m stages.tools.page` still running?"};
  }
  try {
    return await response.json();
  } catch (e) {
    return {error: `the server answered ${response.status} without a readable body`};
  }
}

// ---------------------------------------------------------------- your photo

function newCard(fileName) {
  const card = el("div", {class: "card"}, el("h2", {text: fileName}), el("p", {class: "note", text: "classifying..."}));
  $("results").prepend(card);
  return card;
}

function showError(card, message) {
  card.querySelector(".note").replaceWith(el("p", {class: "error", text: message}));
}

function showResult(card, result) {
  if (result.error) {
    showError(card, result.error);
    return;
  }
  const {negative, positive} = info.classes;
  const byName = Object.fromEntries(info.models.map((m) => [m.name, m]));
  const table = el("table", {class: "metrics results"},
    el("tr", {}, ...["model", `P(${positive})`, "", "label", "test accuracy", "test ECE", "Grad-CAM"]
      .map((h) => el("th", {text: h}))));
  for (const r of result.results) {
    const model = byName[r.model];
    const fill = el("span");
    fill.style.width = `${(100 * r.p).toFixed(1)}%`;  // CSSOM, which the page's CSP allows (style="" it does not)
    const bar = el("div", {class: "bar"}, fill);
    const cam = model.gradcam
      ? el("img", {src: `/api/gradcam?token=${result.token}&model=${r.model}`,
                   alt: `Grad-CAM of ${r.model}: where it found evidence for ${r.label}`})
      : document.createTextNode("no convolutional layer");
    table.append(el("tr", {class: "model-result", "data-model": r.model, "data-p": String(r.p)},
      el("td", {}, el("b", {text: r.model}), el("br"), el("span", {class: "note", text: model.description})),
      el("td", {class: "num p", text: r.p.toFixed(4)}),
      el("td", {}, bar),
      el("td", {class: r.label === positive ? "label-positive" : "label-negative", text: r.label}),
      el("td", {class: "num", text: number(model.accuracy)}),
      el("td", {class: "num", text: number(model.ece)}),
      el("td", {}, cam)));
  }
  const seen = el("div", {class: "seen"},
    el("img", {src: `/api/input?token=${result.token}`, alt: "the image as the models see it"}),
    `what the models see (${info.image_size}×${info.image_size})`);
  card.querySelector(".note").replaceWith(el("div", {class: "body"}, seen, table));
  card.dataset.done = "true";
}

async function classifyFiles(files) {
  for (const file of files) {  // one at a time: the server computes one image at a time anyway
    const card = newCard(file.name);
    if (file.size > info.max_upload_bytes) {  // the server refuses it too; no need to send it
      showError(card, `file too large: ${megabytes(file.size)} MB (limit ${megabytes(info.max_upload_bytes)} MB)`);
      card.dataset.done = "true";
      continue;
    }
    showResult(card, await askServer(`/api/classify?name=${encodeURIComponent(file.name)}`,
                                     {method: "POST", body: file}));
    card.dataset.done = "true";
  }
}

async function classifyTestImage(relative) {
  const card = newCard(`test split: ${relative}`);
  showResult(card, await askServer(`/api/test-image?file=${encodeURIComponent(relative)}`));
  card.dataset.done = "true";
}

// ---------------------------------------------------------------- the study

async function showStudy() {
  const study = await askServer("/api/study");
  if (study.error) {
    $("figures").append(el("p", {class: "error", text: study.error}));
    return;
  }
  const table = $("study-table");
  table.append(el("tr", {}, ...["model", "", "test accuracy", "ROC AUC", "log loss", "ECE", "extended test accuracy"]
    .map((h) => el("th", {text: h}))));
  for (const m of study.models) {
    const interval = m.ci_low === null || m.ci_low === undefined ? "" : ` [${number(m.ci_low)}, ${number(m.ci_high)}]`;
    table.append(el("tr", {class: "study-row", "data-model": m.name},
      el("td", {}, el("b", {text: m.name})), el("td", {text: m.description}),
      el("td", {class: "num accuracy", text: number(m.accuracy) + interval}),
      el("td", {class: "num", text: number(m.roc_auc)}), el("td", {class: "num", text: number(m.log_loss)}),
      el("td", {class: "num", text: number(m.ece)}), el("td", {class: "num", text: number(m.extended_accuracy)})));
  }
  let group = null;
  for (const figure of study.figures) {
    if (figure.group !== group) {
      group = figure.group;
      $("figures").append(el("h3", {text: group}));
    }
    $("figures").append(el("figure", {},
      el("img", {src: "/" + figure.path, alt: `${figure.group}: ${figure.title}`, loading: "lazy"}),
      el("figcaption", {text: figure.path})));
  }
  if (!study.figures.length) $("figures").append(el("p", {class: "note", text: "no figures in plots/evaluate/ yet: run dvc repro"}));
}

function showView(name) {
  $("view-photo").hidden = name !== "photo";
  $("view-study").hidden = name !== "study";
  $("tab-photo").classList.toggle("active", name === "photo");
  $("tab-study").classList.toggle("active", name === "study");
  if (name === "study" && !studyShown) {
    studyShown = true;
    showStudy();
  }
}

// ---------------------------------------------------------------- start

async function start() {
  info = await askServer("/api/info");
  if (info.error) {
    $("results").append(el("p", {class: "error", text: info.error}));
    return;
  }
  const {negative, positive} = info.classes;
  document.title = `${negative} or ${positive}? The study in a browser`;
  $("title").textContent = `${negative} or ${positive}? Five models on your photo`;
  $("limits").textContent = `up to ${megabytes(info.max_upload_bytes)} MB and ${(info.max_pixels / 1e6).toFixed(1)} Mpx each`;
  const untrained = info.models.filter((m) => !m.trained).map((m) => m.name);
  $("note").textContent = `Each model gives P(${positive}); it says ${positive} when P(${positive}) ≥ ${info.threshold}. ` +
    "Test accuracy and ECE (expected calibration error) are the model's on the test split. Grad-CAM: where the " +
    "model found the evidence for its label (red = most)." + (untrained.length ? ` Not trained yet: ${untrained.join(", ")}.` : "");
  for (const file of info.test_images) $("test-image").append(el("option", {value: file, text: file}));
  if (!info.test_images.length) $("test-image").append(el("option", {value: "", text: "(no test split: run dvc repro split)"}));

  $("tab-photo").addEventListener("click", () => showView("photo"));
  $("tab-study").addEventListener("click", () => showView("study"));
  $("files").addEventListener("change", (event) => {
    classifyFiles([...event.target.files]);
    event.target.value = "";  // the same file may be chosen again
  });
  // Files dropped anywhere on the page are classified (a browser would otherwise leave
  // the page to open them); the drop zone lights up meanwhile.
  const drop = $("drop");
  document.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  document.addEventListener("dragleave", (event) => { if (!event.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    showView("photo");
    classifyFiles([...event.dataTransfer.files]);
  });
  $("classify-test").addEventListener("click", () => { if ($("test-image").value) classifyTestImage($("test-image").value); });
  $("random-test").addEventListener("click", () => {
    if (!info.test_images.length) return;
    $("test-image").value = info.test_images[Math.floor(Math.random() * info.test_images.length)];
    classifyTestImage($("test-image").value);
  });
  document.body.dataset.ready = "true";
}

start();
