// otrain-label: the page. No build step, no library: the server answers JSON, this
// file keeps a queue of upcoming candidates loaded ahead, so that a key press shows
// the next one from memory while the decision travels to the server.
"use strict";

const LOOKAHEAD = 12;          // single view: candidates loaded ahead
const REFILL_BELOW = 60;       // ask the server for more when the queue is shorter

const state = {
  view: "single",
  queue: [],                   // candidate numbers still to show, in order
  cache: new Map(),            // number -> promise of the candidate's view
  decided: new Set(),          // numbers decided on this page, maybe not yet saved
  batches: [],                 // sizes of the decisions made here, for undo
  marked: new Set(),           // grid: the odd ones out
  gridIds: [],
  majority: "bogus",
  gridSize: 30,
  shown: null,
  posting: Promise.resolve(),
  refilling: null,
  exhausted: false,
};
// Key press -> next candidate on screen, in ms (read by the benchmark and the tests).
window.otrainTimings = [];

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function flash(text, bad = false) {
  const box = $("flash");
  box.textContent = text;
  box.className = bad ? "bad" : "";
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, bad ? 8000 : 2500);
}

function showProgress(p) {
  if (!p) return;
  $("progress").textContent =
    `${p.done} / ${p.total} labelled · ${p.real} real · ${p.bogus} bogus · ` +
    `${p.skip} skipped · ${p.per_minute} per minute`;
}

function load(id) {
  if (!state.cache.has(id)) {
    const promise = api(`/api/candidate/${id}`).catch((err) => ({ id, error: err.message }));
    state.cache.set(id, promise);
  }
  return state.cache.get(id);
}

function prefetch(ids) { ids.forEach(load); }

async function refill() {
  if (state.refilling) return state.refilling;
  state.refilling = (async () => {
    const data = await api(`/api/queue?n=${Math.max(200, 4 * state.gridSize)}`);
    const have = new Set(state.queue);
    for (const id of data.queue) {
      if (!have.has(id) && !state.decided.has(id)) state.queue.push(id);
    }
    state.exhausted = data.queue.length === 0;
  })().finally(() => { state.refilling = null; });
  return state.refilling;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function stampsHtml(view, small = false) {
  return view.images.map((src, k) =>
    small ? `<img src="${src}" alt="${view.channels[k]}">`
      : `<figure><img src="${src}" alt="${view.channels[k]}"><figcaption>${view.channels[k]}` +
        `</figcaption></figure>`).join("");
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function renderCard(view) {
  const card = $("card");
  card.dataset.id = view.id;
  if (view.error) {
    card.className = "card error";
    card.innerHTML = `<p class="name">${escapeHtml(view.name || "")}</p>` +
      `<p><b>This file cannot be read</b>: ${escapeHtml(view.error)}</p>` +
      `<p>Any key (<kbd>r</kbd>, <kbd>b</kbd> or <kbd>s</kbd>) skips it.</p>`;
    return;
  }
  card.className = "card";
  const score = view.p_real === undefined ? "" :
    `<span class="score">P(real) ${fmt(view.p_real, 3)}` +
    (view.p_real_std === undefined ? "" : ` ± ${fmt(view.p_real_std, 3)}`) + "</span>";
  card.innerHTML = `<div class="stamps">${stampsHtml(view)}</div><div class="meta">` +
    `<span class="name">${escapeHtml(view.name)}</span>` +
    `<span>mag ${fmt(view.mag, 2)}${view.magerr === null ? "" : " ± " + fmt(view.magerr, 2)}` +
    `${view.filter ? " (" + escapeHtml(view.filter) + ")" : ""}</span>` +
    `<span>FWHM ${fmt(view.fwhm, 2)} px</span>` +
    `<span>RA ${fmt(view.ra, 5)} Dec ${fmt(view.dec, 5)}</span>` +
    (view.nan_pixels ? `<span>${view.nan_pixels} NaN pixels (magenta)</span>` : "") +
    (view.edge ? "<span>EDGE</span>" : "") + score + "</div>";
}

async function showSingle(started) {
  if (state.queue.length < REFILL_BELOW && !state.exhausted) {
    const wait = refill();
    if (state.queue.length === 0) await wait;
  }
  const id = state.queue[0];
  if (id === undefined) {
    state.shown = null;
    $("card").className = "card done";
    $("card").dataset.id = "";
    $("card").innerHTML = "<p>Every candidate is labelled. 🎉</p>" +
      "<p>Next: <code>otrain-convert --cutouts OUT</code> builds the datacube.</p>";
    return;
  }
  state.shown = id;
  prefetch(state.queue.slice(0, LOOKAHEAD));
  const view = await load(id);
  if (state.shown !== id || state.view !== "single") return;
  renderCard(view);
  if (started !== undefined) window.otrainTimings.push(performance.now() - started);
}

function post(path, body) {
  // Decisions reach the server one after another, in the order they were made.
  const result = state.posting.then(() => api(path, body));
  state.posting = result.catch(() => {});
  return result;
}

function decide(decisions, started) {
  const ids = decisions.map((d) => d.id);
  ids.forEach((id) => state.decided.add(id));
  state.queue = state.queue.filter((id) => !state.decided.has(id));
  state.batches.push(ids.length);
  post("/api/label", { decisions })
    .then((data) => {
      showProgress(data.progress);
      const skipped = data.filed.filter((f, k) => f.label !== decisions[k].label);
      if (skipped.length) flash(`${skipped.length} unreadable file(s) filed as skip`);
    })
    .catch((err) => {
      // Not saved (a file of that name exists already...): show it again.
      ids.forEach((id) => state.decided.delete(id));
      state.queue = ids.concat(state.queue.filter((id) => !ids.includes(id)));
      state.batches.pop();
      flash(`not saved: ${err.message}`, true);
      redraw();
    });
  redraw(started);
}

function undo(started) {
  const count = state.batches.pop() || 1;
  post("/api/undo", { count })
    .then((data) => {
      showProgress(data.progress);
      if (!data.undone.length) { flash("nothing to undo"); return; }
      for (const id of data.undone) {
        state.decided.delete(id);
        state.cache.delete(id);
      }
      state.queue = data.undone.concat(state.queue.filter((id) => !data.undone.includes(id)));
      flash(`undone: ${data.undone.length} decision(s)`);
      redraw(started);
    })
    .catch((err) => flash(`undo failed: ${err.message}`, true));
}

// -- grid view ----------------------------------------------------------------------

function renderGridLabels() {
  const minority = state.majority === "bogus" ? "real" : "bogus";
  $("minority").textContent = minority;
  $("majority").textContent = state.majority;
}

async function showGrid(started) {
  if (state.queue.length < state.gridSize * 2 && !state.exhausted) {
    const wait = refill();
    if (state.queue.length < state.gridSize) await wait;
  }
  state.gridIds = state.queue.slice(0, state.gridSize);
  state.marked = new Set();
  prefetch(state.queue.slice(0, state.gridSize * 2));
  renderGridLabels();
  const ids = state.gridIds;
  const views = await Promise.all(ids.map(load));
  if (state.view !== "grid" || state.gridIds !== ids) return;
  const cells = $("cells");
  cells.innerHTML = "";
  if (!ids.length) {
    cells.innerHTML = "<p>Every candidate is labelled.</p>";
    return;
  }
  views.forEach((view, k) => {
    const cell = document.createElement("div");
    cell.className = view.error ? "cell error" : "cell";
    cell.dataset.id = ids[k];
    cell.title = view.name || "";
    cell.innerHTML = view.error
      ? `<b>unreadable</b> (filed as skip)<br>${escapeHtml(view.name || "")}`
      : `<div class="row">${stampsHtml(view, true)}</div><div class="caption">` +
        `${escapeHtml(view.name)}${view.p_real === undefined ? "" : " · " + fmt(view.p_real, 2)}</div>`;
    cell.addEventListener("click", () => {
      if (view.error) return;
      const id = ids[k];
      if (state.marked.has(id)) state.marked.delete(id); else state.marked.add(id);
      cell.classList.toggle("marked", state.marked.has(id));
    });
    cells.appendChild(cell);
  });
  if (started !== undefined) window.otrainTimings.push(performance.now() - started);
}

function fileGrid(started) {
  if (!state.gridIds.length) return;
  const minority = state.majority === "bogus" ? "real" : "bogus";
  const decisions = state.gridIds.map((id) => ({
    id, label: state.marked.has(id) ? minority : state.majority,
  }));
  decide(decisions, started);
}

// -- dispatch -----------------------------------------------------------------------

function redraw(started) {
  $("single").hidden = state.view !== "single";
  $("grid").hidden = state.view !== "grid";
  return state.view === "single" ? showSingle(started) : showGrid(started);
}

function act(key, started) {
  const help = $("help");
  if (help.open) {
    if (key === "Escape" || key === "?") help.close();
    return;
  }
  if (key === "?") { help.showModal(); return; }
  if (key === "g") { state.view = state.view === "single" ? "grid" : "single"; redraw(started); return; }
  if (key === "u") { undo(started); return; }
  if (state.view === "grid") {
    if (key === "Enter") fileGrid(started);
    else if (key === "m") {
      state.majority = state.majority === "bogus" ? "real" : "bogus";
      renderGridLabels();
    }
    return;
  }
  const labels = { r: "real", b: "bogus", s: "skip" };
  if (labels[key] && state.shown !== null) {
    decide([{ id: state.shown, label: labels[key] }], started);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const known = ["r", "b", "s", "u", "g", "m", "?", "Enter", "Escape"];
  if (!known.includes(event.key)) return;
  if (event.key === "Enter" && event.target.tagName === "BUTTON") return;
  event.preventDefault();
  act(event.key, performance.now());
});

for (const button of document.querySelectorAll("button[data-key]")) {
  button.addEventListener("click", (event) => {
    event.currentTarget.blur();
    act(button.dataset.key, performance.now());
  });
}

(async function start() {
  try {
    const info = await api("/api/state");
    state.gridSize = info.grid_size;
    $("description").textContent = info.description;
    showProgress(info.progress);
    await refill();
    await redraw();
  } catch (err) {
    $("card").className = "card error";
    $("card").textContent = `cannot reach the server: ${err.message}`;
  }
})();
