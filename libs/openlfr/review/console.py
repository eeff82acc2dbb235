"""The operator console: one self-contained HTML page (inline CSS and JavaScript, nothing fetched
from elsewhere) served at ``/console``.

The page asks for an API token (kept in ``sessionStorage``, sent as ``Authorization: Bearer``,
never put in a URL), loads ``/v1/alerts``, then follows ``/v1/alerts/stream`` with ``fetch()``
streaming (``EventSource`` cannot send the header). The face crops are fetched with the token
too and shown from ``blob:`` URLs. Everything from the API is written with ``textContent``,
never as HTML. A Content-Security-Policy allows only this page's own script and style (by
hash), images from ``blob:`` and requests to the same origin.

Stable hooks for tests and tooling: ``#token``, ``#token-save``, ``#token-clear``,
``#filter-status``, ``#conn-status[data-state]`` (``idle``, ``connecting``, ``live``,
``reconnecting``, ``error``), ``#error``, ``#alerts[data-loaded]``, ``#more``; each alert is
``li.alert[data-alert-id][data-status]`` holding ``[data-role=probe|reference|status|reviews|
note|reject-form|reject-reason|error|...]`` and ``button[data-action=confirm|reject|
reject-submit|reject-cancel]``; each review step is ``li[data-step][data-decision][data-reviewer]``.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { font-family: system-ui, sans-serif; color: #1b1b1b; background: #f4f5f7; }
body { margin: 0; }
header { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; padding: .75rem 1rem;
  background: #13294b; color: #fff; position: sticky; top: 0; z-index: 1; }
header h1 { font-size: 1.1rem; margin: 0 1rem 0 0; }
header input, header select, header button { font-size: .95rem; }
#token { width: 18rem; }
#conn-status { padding: .15rem .5rem; border-radius: .25rem; background: #555; }
#conn-status[data-state="live"] { background: #1d7a3a; }
#conn-status[data-state="error"], #conn-status[data-state="reconnecting"] { background: #a4262c; }
#error { margin: 1rem; padding: .75rem 1rem; background: #fde7e9; border: 1px solid #a4262c; color: #6b0f14; }
main { padding: 0 1rem 2rem; }
#alerts { list-style: none; padding: 0; margin: 1rem 0; display: grid; gap: 1rem; }
li.alert { background: #fff; border: 1px solid #d0d4da; border-left: 6px solid #8a8f98; border-radius: .35rem;
  padding: .75rem 1rem; display: grid; grid-template-columns: auto 1fr; gap: 1rem; }
li.alert[data-status="pending"] { border-left-color: #c77700; }
li.alert[data-status="awaiting_second"] { border-left-color: #0a58ca; }
li.alert[data-status="confirmed"] { border-left-color: #1d7a3a; }
li.alert[data-status="rejected"] { border-left-color: #6c757d; opacity: .85; }
.faces { display: flex; gap: .75rem; }
figure { margin: 0; text-align: center; font-size: .8rem; color: #444; }
figure img { width: 150px; height: 150px; object-fit: contain; background: #e9ecef; display: block; }
.missing { display: flex; width: 150px; height: 150px; align-items: center; justify-content: center;
  background: #e9ecef; color: #555; padding: .25rem; box-sizing: border-box; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .75rem; margin: .5rem 0; font-size: .9rem; }
dt { color: #555; }
dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
.status-line { margin: 0; font-size: 1rem; }
ol.reviews { margin: .25rem 0; padding-left: 0; list-style: none; font-size: .9rem; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: .5rem; }
.actions input { width: 18rem; }
.reject-form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
button[data-action="confirm"] { background: #1d7a3a; color: #fff; border: 0; padding: .35rem .8rem;
  border-radius: .25rem; }
button[data-action="reject"], button[data-action="reject-submit"] { background: #a4262c; color: #fff; border: 0;
  padding: .35rem .8rem; border-radius: .25rem; }
button:disabled { opacity: .5; }
.item-error { color: #a4262c; margin: .25rem 0 0; }
[hidden] { display: none !important; }
"""

SCRIPT = r"""
"use strict";
(() => {
  const TOKEN_KEY = "openlfr.review.token";
  const STATUS_TEXT = {
    pending: "pending: waiting for the first review",
    awaiting_second: "awaiting the second review",
    confirmed: "confirmed by two reviewers",
    rejected: "rejected",
  };
  const $ = (id) => document.getElementById(id);
  const list = $("alerts");
  const template = $("alert-template");
  const state = { token: "", gen: 0, items: new Map(), abort: null, cursor: null };
  try { state.token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { state.token = ""; }
  $("token").value = state.token;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const headers = (extra) => Object.assign({ Authorization: "Bearer " + state.token }, extra || {});
  const role = (root, name) => root.querySelector('[data-role="' + name + '"]');
  const action = (root, name) => root.querySelector('[data-action="' + name + '"]');

  function formatDetail(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return (where ? where + ": " : "") + (d.msg || JSON.stringify(d));
      }).join("; ");
    }
    return null;
  }

  async function apiError(res) {
    let detail = null;
    try { detail = formatDetail((await res.json()).detail); } catch (e) { detail = null; }
    return "HTTP " + res.status + ": " + (detail || res.statusText || "request failed");
  }

  function showError(text) {
    const el = $("error");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function setConn(name, text) {
    const el = $("conn-status");
    el.dataset.state = name;
    el.textContent = text;
  }

  function fmtTime(ts) {
    return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function fmtNumber(x) { return typeof x === "number" ? x.toFixed(3) : "unknown"; }

  function filterStatus() { return $("filter-status").value; }

  function updateEmpty() { $("empty").hidden = state.items.size > 0 || !state.token; }

  function clearList() {
    for (const item of state.items.values()) item.urls.forEach((u) => URL.revokeObjectURL(u));
    state.items.clear();
    list.replaceChildren();
    list.dataset.loaded = "false";
    state.cursor = null;
    $("more").hidden = true;
    updateEmpty();
  }

  async function loadChip(item, which, url, missingText, gen) {
    const img = role(item.li, which);
    const missing = role(item.li, which + "-missing");
    const showMissing = (text) => { img.hidden = true; missing.hidden = false; missing.textContent = text; };
    if (!url) { showMissing(missingText); return; }
    try {
      const res = await fetch(url, { headers: headers(), cache: "no-store" });
      if (gen !== state.gen) return;
      if (!res.ok) { showMissing(await apiError(res)); return; }
      const blobUrl = URL.createObjectURL(await res.blob());
      item.urls.push(blobUrl);
      img.src = blobUrl;
      img.hidden = false;
      missing.hidden = true;
    } catch (e) {
      if (gen === state.gen) showMissing("could not load the image: " + e.message);
    }
  }

  function placeItem(li, record) {
    for (const other of list.children) {
      const r = state.items.get(other.dataset.alertId).record;
      if (r.capture_ts < record.capture_ts || (r.capture_ts === record.capture_ts && r.alert_id < record.alert_id)) {
        list.insertBefore(li, other);
        return;
      }
    }
    list.appendChild(li);
  }

  function createItem(record, gen) {
    const li = template.content.firstElementChild.cloneNode(true);
    li.dataset.alertId = record.alert_id;
    const item = { li, record, urls: [] };
    state.items.set(record.alert_id, item);
    role(li, "subject").textContent = record.subject_id;
    role(li, "watchlist").textContent = record.watchlist_id;
    role(li, "camera").textContent = record.camera_id;
    role(li, "time").textContent = fmtTime(record.capture_ts);
    role(li, "score").textContent = fmtNumber(record.score);
    role(li, "margin").textContent = fmtNumber(record.margin);
    role(li, "threshold").textContent = fmtNumber(record.threshold);
    role(li, "deployment").textContent = record.deployment_id || "none";
    role(li, "model").textContent = record.embedder_model;
    role(li, "alert-id").textContent = record.alert_id;
    const purged = record.crops_purged_ts ? "deleted " + fmtTime(record.crops_purged_ts) + " (retention)" : null;
    loadChip(item, "probe", record.probe_url, purged || "no probe image", gen);
    loadChip(item, "reference", record.reference_url, purged || "no watchlist image was sent", gen);
    action(li, "confirm").addEventListener("click", () => {
      review(item, "confirm", role(li, "note").value);
    });
    action(li, "reject").addEventListener("click", () => {
      role(li, "reject-form").hidden = false;
      role(li, "reject-reason").focus();
    });
    action(li, "reject-cancel").addEventListener("click", () => {
      role(li, "reject-form").hidden = true;
      role(li, "reject-reason").value = "";
      itemError(item, "");
    });
    action(li, "reject-submit").addEventListener("click", () => {
      const reason = role(li, "reject-reason").value.trim();
      if (!reason) { itemError(item, "A reject needs a reason: say why the alert is wrong."); return; }
      review(item, "reject", reason);
    });
    placeItem(li, record);
    return item;
  }

  function updateItem(item, record) {
    item.record = record;
    const li = item.li;
    li.dataset.status = record.status;
    role(li, "status").textContent = STATUS_TEXT[record.status] || record.status;
    const reviews = role(li, "reviews");
    reviews.replaceChildren();
    for (const s of record.reviews) {
      const entry = document.createElement("li");
      entry.dataset.step = String(s.step);
      entry.dataset.decision = s.decision;
      entry.dataset.reviewer = s.reviewer;
      let text = "Review " + s.step + ": " + s.reviewer + " " + (s.decision === "confirm" ? "confirmed" : "rejected") +
        " at " + fmtTime(s.ts);
      if (s.reason) text += " \u2014 " + s.reason;
      entry.textContent = text;
      reviews.appendChild(entry);
    }
    const final = record.status === "confirmed" || record.status === "rejected";
    role(li, "actions").hidden = final;
    action(li, "confirm").textContent = record.next_step === 2 ? "Confirm (second review)" : "Confirm";
  }

  function upsert(record, gen) {
    let item = state.items.get(record.alert_id);
    if (!item) {
      const f = filterStatus();
      if (f && f !== record.status) return;
      item = createItem(record, gen);
    }
    updateItem(item, record);
    updateEmpty();
  }

  function itemError(item, text) {
    const el = role(item.li, "error");
    el.textContent = text || "";
    el.hidden = !text;
  }

  async function refreshOne(item) {
    const res = await fetch("/v1/alerts/" + item.record.alert_id, { headers: headers(), cache: "no-store" });
    if (res.ok) updateItem(item, await res.json());
  }

  async function review(item, decision, reason) {
    const buttons = item.li.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    itemError(item, "");
    try {
      const res = await fetch("/v1/alerts/" + item.record.alert_id + "/reviews", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ decision, reason: reason || null, step: item.record.next_step }),
      });
      if (!res.ok) {
        const message = await apiError(res);
        itemError(item, "Not recorded. " + message);
        if (res.status === 409) await refreshOne(item);
        return;
      }
      updateItem(item, await res.json());
      role(item.li, "note").value = "";
      role(item.li, "reject-reason").value = "";
      role(item.li, "reject-form").hidden = true;
    } catch (e) {
      itemError(item, "Not recorded: " + e.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  async function loadPage(gen, cursor) {
    const params = new URLSearchParams({ limit: "100" });
    if (filterStatus()) params.set("status", filterStatus());
    if (cursor) params.set("cursor", cursor);
    const res = await fetch("/v1/alerts?" + params.toString(), { headers: headers(), cache: "no-store" });
    if (gen !== state.gen) return false;
    if (!res.ok) { showError("Could not load the alerts. " + await apiError(res)); return false; }
    const page = await res.json();
    if (gen !== state.gen) return false;
    page.items.forEach((r) => upsert(r, gen));
    // A fresh load sets where "older" starts only once; later reloads keep the reader's place.
    if (cursor || state.cursor === null) state.cursor = page.next_cursor;
    $("more").hidden = state.cursor === null;
    list.dataset.loaded = "true";
    updateEmpty();
    return true;
  }

  function handleBlock(block, gen) {
    let kind = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") kind = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (!data) return;
    const payload = JSON.parse(data);
    if (kind === "alert") upsert(payload, gen);
    else if (kind === "review") upsert(payload.alert, gen);
    else if (kind === "resync") loadPage(gen, null);
  }

  async function follow(gen) {
    let backoff = 1000;
    while (gen === state.gen) {
      const controller = new AbortController();
      state.abort = controller;
      try {
        setConn("connecting", "connecting\u2026");
        const res = await fetch("/v1/alerts/stream", {
          headers: headers({ Accept: "text/event-stream" }), signal: controller.signal, cache: "no-store",
        });
        if (gen !== state.gen) return;
        if (!res.ok) {
          const message = await apiError(res);
          if (res.status === 401 || res.status === 403) {
            setConn("error", "refused");
            showError("The API refused this token. " + message);
            return;
          }
          throw new Error(message);
        }
        setConn("live", "live");
        backoff = 1000;
        // Anything raised while the stream was down is in the list: load it after connecting.
        await loadPage(gen, null);
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done || gen !== state.gen) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            handleBlock(block, gen);
          }
        }
      } catch (e) {
        if (gen !== state.gen) return;
        setConn("error", "disconnected: " + e.message);
      }
      if (gen !== state.gen) return;
      setConn("reconnecting", "reconnecting\u2026");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 30000);
    }
  }

  function start() {
    state.gen += 1;
    if (state.abort) state.abort.abort();
    state.abort = null;
    showError("");
    clearList();
    if (!state.token) {
      setConn("idle", "enter a token");
      return;
    }
    follow(state.gen);
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    try { sessionStorage.setItem(TOKEN_KEY, state.token); } catch (e) { /* storage off: keep it in memory */ }
    start();
  });
  $("token-clear").addEventListener("click", () => {
    state.token = "";
    $("token").value = "";
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage off */ }
    start();
  });
  $("filter-status").addEventListener("change", () => {
    const gen = state.gen;
    for (const item of state.items.values()) item.urls.forEach((u) => URL.revokeObjectURL(u));
    state.items.clear();
    list.replaceChildren();
    if (state.token) loadPage(gen, null);
  });
  $("more").addEventListener("click", () => {
    if (state.cursor) loadPage(state.gen, state.cursor);
  });
  start();
})();
"""

BODY = """
<header>
  <h1>OpenLFR alert review</h1>
  <form id="token-form" autocomplete="off">
    <label for="token">API token</label>
    <input id="token" name="token" type="password" spellcheck="false" autocomplete="off">
    <button id="token-save" type="submit">Use token</button>
    <button id="token-clear" type="button">Forget token</button>
  </form>
  <label>Show
    <select id="filter-status">
      <option value="">all alerts</option>
      <option value="pending">pending</option>
      <option value="awaiting_second">awaiting second review</option>
      <option value="confirmed">confirmed</option>
      <option value="rejected">rejected</option>
    </select>
  </label>
  <span id="conn-status" data-state="idle">not connected</span>
</header>
<main>
  <div id="error" role="alert" hidden></div>
  <p id="empty" hidden>No alerts yet. New alerts appear here as they are raised.</p>
  <ul id="alerts" data-loaded="false" aria-live="polite"></ul>
  <button id="more" type="button" hidden>Load older alerts</button>
</main>
<template id="alert-template">
  <li class="alert" data-alert-id="" data-status="">
    <div class="faces">
      <figure>
        <img data-role="probe" alt="face seen by the camera" hidden>
        <span class="missing" data-role="probe-missing">loading\u2026</span>
        <figcaption>Camera (probe)</figcaption>
      </figure>
      <figure>
        <img data-role="reference" alt="watchlist image" hidden>
        <span class="missing" data-role="reference-missing">loading\u2026</span>
        <figcaption>Watchlist image</figcaption>
      </figure>
    </div>
    <div>
      <p class="status-line">Status: <strong data-role="status"></strong></p>
      <dl>
        <dt>Subject</dt><dd data-role="subject"></dd>
        <dt>Watchlist</dt><dd data-role="watchlist"></dd>
        <dt>Camera</dt><dd data-role="camera"></dd>
        <dt>Captured</dt><dd data-role="time"></dd>
        <dt>Score</dt><dd data-role="score"></dd>
        <dt>Margin</dt><dd data-role="margin"></dd>
        <dt>Threshold</dt><dd data-role="threshold"></dd>
        <dt>Deployment</dt><dd data-role="deployment"></dd>
        <dt>Model</dt><dd data-role="model"></dd>
        <dt>Alert</dt><dd data-role="alert-id"></dd>
      </dl>
      <ol class="reviews" data-role="reviews"></ol>
      <div class="actions" data-role="actions">
        <input data-role="note" type="text" maxlength="2000" placeholder="note (optional) for a confirm"
               aria-label="note for a confirm">
        <button type="button" data-action="confirm">Confirm</button>
        <button type="button" data-action="reject">Reject\u2026</button>
        <div class="reject-form" data-role="reject-form" hidden>
          <input data-role="reject-reason" type="text" maxlength="2000" placeholder="why is this alert wrong?"
                 aria-label="reason for rejecting">
          <button type="button" data-action="reject-submit">Reject with this reason</button>
          <button type="button" data-action="reject-cancel">Cancel</button>
        </div>
      </div>
      <p class="item-error" data-role="error" role="alert" hidden></p>
    </div>
  </li>
</template>
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<meta name="referrer" content="no-referrer">\n'
    "<title>OpenLFR alert review</title>\n"
    f"<style>{STYLE}</style>\n</head>\n<body>{BODY}<script>{SCRIPT}</script>\n</body>\n</html>\n"
)

#: The page may run only its own script and style, show images only from blob: URLs, and talk
#: only to its own origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_csp_hash(SCRIPT)}",
        f"style-src {_csp_hash(STYLE)}",
        "img-src blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Headers the console page is served with.
CONSOLE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
