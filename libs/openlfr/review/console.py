"""The operator console: one self-contained HTML page (inline CSS and JavaScript, nothing fetched
from elsewhere) served at ``/console``.

The page asks for an API token (kept in ``sessionStorage``, sent as ``Authorization: Bearer``,
never put in a URL), asks ``/v1/me`` who holds it (shown in the header with the roles), loads
``/v1/alerts`` and ``/v1/alerts/summary`` (counts per status and "needs my review", the cameras
and deployments to filter by), then follows ``/v1/alerts/stream`` with ``fetch()`` streaming
(``EventSource`` cannot send the header). The face crops are fetched with the token too and shown
from ``blob:`` URLs; a click on either face shows both large. Each alert's subject category, legal
basis and expiry are read from ``/v1/alerts/{id}/subject`` (once per subject per load). Times are
shown in the browser's time zone with its UTC offset and relative to now ("3 min ago"), the UTC
time in the tooltip. Everything from the API is written with ``textContent``, never as HTML. A
Content-Security-Policy allows only this page's own script and style (by hash), images from
``blob:`` and requests to the same origin.

Only the actions the holder may take now are offered (the API refuses the others anyway): none
to a token without the ``reviewer`` role, none on a final alert, none on an alert awaiting its
second review to the reviewer who made the first, no Confirm once the crops were deleted; the
card says why in ``[data-role=why-not]``. An optional sound and browser notification announce
each new alert that arrives on the stream (``#notify``, kept in ``localStorage``); the
notification names the camera only, not the subject.

Stable hooks for tests and tooling: ``#token``, ``#token-save``, ``#token-clear``, ``#whoami``
(``[data-name]``, ``[data-roles]``), ``#filter-status`` (``mine`` for "needs my review", ``""``
for all, or a status), ``#filter-camera``, ``#filter-deployment``, ``#counts`` holding
``button[data-count-for=mine|pending|awaiting_second|confirmed|rejected]`` with the number in
``[data-count]``, ``#notify[data-notified]`` (new alerts announced), ``#conn-status[data-state]``
(``idle``, ``connecting``, ``live``, ``reconnecting``, ``error``), ``#error``,
``#alerts[data-loaded]``, ``#more``, ``#enlarge`` (a ``dialog`` with ``#enlarge-probe``,
``#enlarge-reference``, ``#enlarge-close``); each alert is ``li.alert[data-alert-id][data-status]``
holding ``[data-role=probe|reference|status|subject|category|legal-basis|expiry|camera|
deployment|time|time-relative|score|reviews|why-not|note|reject-form|reject-reason|error|...]``
and ``button[data-action=enlarge|confirm|reject|reject-submit|reject-cancel]``; each review step
is ``li[data-step][data-decision][data-reviewer]``.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { font-family: system-ui, sans-serif; color: #1b1b1b; background: #f4f5f7; font-size: 14px; }
body { margin: 0; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; padding: .45rem .75rem;
  background: #13294b; color: #fff; }
.top { position: sticky; top: 0; z-index: 2; }
header h1 { font-size: 1rem; margin: 0 .5rem 0 0; }
header input, header select, header button { font-size: .85rem; }
#token { width: 12rem; }
#whoami { display: flex; gap: .35rem; align-items: center; }
#whoami .role { background: #2d4a7a; border-radius: .2rem; padding: 0 .35rem; font-size: .8rem; }
#conn-status { padding: .1rem .45rem; border-radius: .25rem; background: #555; font-size: .85rem; }
#conn-status[data-state="live"] { background: #1d7a3a; }
#conn-status[data-state="error"], #conn-status[data-state="reconnecting"] { background: #a4262c; }
.toolbar { display: flex; flex-wrap: wrap; gap: .4rem .75rem; align-items: center; padding: .4rem .75rem;
  background: #fff; border-bottom: 1px solid #d0d4da; }
#counts { display: flex; gap: .35rem; flex-wrap: wrap; }
#counts button { border: 1px solid #c4c9d0; background: #f4f5f7; border-radius: 1rem; padding: .1rem .6rem;
  font-size: .85rem; cursor: pointer; }
#counts button[aria-pressed="true"] { background: #13294b; color: #fff; border-color: #13294b; }
#counts [data-count] { font-weight: 600; font-variant-numeric: tabular-nums; }
#error { margin: .5rem .75rem; padding: .5rem .75rem; background: #fde7e9; border: 1px solid #a4262c; color: #6b0f14; }
main { padding: 0 .75rem 1.5rem; }
#empty { margin: .75rem 0; }
#alerts { list-style: none; padding: 0; margin: .5rem 0; display: grid; gap: .5rem;
  grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); align-items: start; }
li.alert { background: #fff; border: 1px solid #d0d4da; border-left: 5px solid #8a8f98; border-radius: .3rem;
  padding: .4rem .55rem; display: grid; grid-template-columns: auto 1fr; gap: .6rem; min-width: 0; }
li.alert[data-status="pending"] { border-left-color: #c77700; }
li.alert[data-status="awaiting_second"] { border-left-color: #0a58ca; }
li.alert[data-status="confirmed"] { border-left-color: #1d7a3a; }
li.alert[data-status="rejected"] { border-left-color: #6c757d; }
li.alert[data-status="rejected"] .faces { opacity: .75; }
.faces { display: flex; gap: .35rem; }
figure { margin: 0; text-align: center; font-size: .72rem; color: #444; }
button.face { padding: 0; border: 0; background: none; cursor: zoom-in; display: block; }
button.face:focus-visible { outline: 2px solid #0a58ca; }
figure img { width: 112px; height: 112px; object-fit: contain; background: #e9ecef; display: block; }
.missing { display: flex; width: 112px; height: 112px; align-items: center; justify-content: center;
  background: #e9ecef; color: #555; padding: .2rem; box-sizing: border-box; font-size: .72rem; }
.info { min-width: 0; display: flex; flex-direction: column; gap: .12rem; }
.line { display: flex; flex-wrap: wrap; gap: .1rem .7rem; align-items: baseline; font-size: .85rem; }
.line .k { color: #5a6068; }
.line b { font-weight: 600; font-variant-numeric: tabular-nums; }
.head { font-size: .95rem; }
.status { font-size: .8rem; border-radius: .2rem; padding: 0 .35rem; background: #e9ecef; }
li.alert[data-status="pending"] .status { background: #fff0d6; color: #7a4700; }
li.alert[data-status="awaiting_second"] .status { background: #dde8fb; color: #0a3d91; }
li.alert[data-status="confirmed"] .status { background: #d9f0df; color: #12532a; }
.category { font-size: .78rem; border-radius: .2rem; padding: 0 .35rem; background: #13294b; color: #fff; }
.category:empty { display: none; }
.expired { color: #a4262c; font-weight: 600; }
.ids { font-size: .72rem; line-height: 1.4; color: #6a7078; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; margin: 0; }
ol.reviews { margin: 0; padding-left: 0; list-style: none; font-size: .8rem; color: #333; }
.actions { display: flex; flex-wrap: wrap; gap: .35rem; align-items: center; margin-top: .15rem; }
.actions input { width: 11rem; font-size: .8rem; }
.reject-form { display: flex; flex-wrap: wrap; gap: .35rem; align-items: center; }
.actions button { font-size: .82rem; padding: .2rem .6rem; border-radius: .25rem; }
button[data-action="confirm"] { background: #1d7a3a; color: #fff; border: 0; }
button[data-action="reject"], button[data-action="reject-submit"] { background: #a4262c; color: #fff; border: 0; }
button:disabled { opacity: .5; }
.why-not { font-size: .8rem; color: #5a6068; margin: .1rem 0 0; font-style: italic; }
.item-error { color: #a4262c; margin: .1rem 0 0; font-size: .82rem; }
dialog#enlarge { border: 0; border-radius: .4rem; padding: .75rem; max-width: 95vw; }
dialog#enlarge::backdrop { background: rgba(10, 20, 40, .7); }
.big { display: flex; gap: .75rem; flex-wrap: wrap; justify-content: center; }
.big img { width: min(420px, 44vw); height: min(420px, 44vw); object-fit: contain; background: #e9ecef; }
#enlarge-caption { margin: .5rem 0; font-size: .9rem; }
[hidden] { display: none !important; }
"""

SCRIPT = r"""
"use strict";
(() => {
  const TOKEN_KEY = "openlfr.review.token";
  const NOTIFY_KEY = "openlfr.review.notify";
  const STATUS_TEXT = {
    pending: "pending: waiting for the first review",
    awaiting_second: "awaiting the second review",
    confirmed: "confirmed by two reviewers",
    rejected: "rejected",
  };
  const COUNT_KEYS = ["mine", "pending", "awaiting_second", "confirmed", "rejected"];
  const $ = (id) => document.getElementById(id);
  const list = $("alerts");
  const template = $("alert-template");
  const state = {
    token: "", gen: 0, items: new Map(), abort: null, cursor: null, me: null, subjects: new Map(),
    summaryTimer: null, audio: null, notified: 0,
  };
  try { state.token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { state.token = ""; }
  $("token").value = state.token;
  try { $("notify").checked = localStorage.getItem(NOTIFY_KEY) === "on"; } catch (e) { /* storage off */ }

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

  // -- time: local with its UTC offset, relative to now, UTC in the tooltip -----------------------

  const pad = (n) => String(n).padStart(2, "0");

  function fmtLocal(ts, withSeconds) {
    const d = new Date(ts * 1000);
    const off = -d.getTimezoneOffset();
    const sign = off >= 0 ? "+" : "-";
    const zone = "UTC" + sign + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + (withSeconds ? ":" + pad(d.getSeconds()) : "") + " " + zone;
  }

  function fmtUtc(ts) {
    return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function fmtRelative(ts) {
    const s = Math.round(Date.now() / 1000 - ts);
    const a = Math.abs(s);
    let text;
    if (a < 45) text = a + " s";
    else if (a < 90 * 60) text = Math.round(a / 60) + " min";
    else if (a < 36 * 3600) text = Math.round(a / 3600) + " h";
    else text = Math.round(a / 86400) + " days";
    return s >= 0 ? text + " ago" : "in " + text;
  }

  function setTime(el, ts, withSeconds) {
    el.textContent = fmtLocal(ts, withSeconds);
    el.title = fmtUtc(ts);
    el.dateTime = new Date(ts * 1000).toISOString();
  }

  function refreshRelative() {
    for (const el of document.querySelectorAll("[data-relative-ts]")) {
      el.textContent = "(" + fmtRelative(Number(el.dataset.relativeTs)) + ")";
    }
  }

  function setRelative(el, ts) {
    el.dataset.relativeTs = String(ts);
    el.textContent = "(" + fmtRelative(ts) + ")";
  }

  function fmtNumber(x) { return typeof x === "number" ? x.toFixed(3) : "unknown"; }

  // -- who is signed in, and what they may do ---------------------------------------------------

  function showMe(me) {
    const el = $("whoami");
    el.replaceChildren();
    el.hidden = !me;
    if (!me) { delete el.dataset.name; delete el.dataset.roles; return; }
    el.dataset.name = me.name;
    el.dataset.roles = me.roles.join(" ");
    const label = document.createElement("span");
    label.textContent = "Signed in as";
    const name = document.createElement("strong");
    name.dataset.role = "me-name";
    name.textContent = me.name;
    el.append(label, name);
    for (const r of me.roles) {
      const badge = document.createElement("span");
      badge.className = "role";
      badge.textContent = r;
      el.appendChild(badge);
    }
    $("counts").querySelector('[data-count-for="mine"]').hidden = !me.may_review;
  }

  // The API's rule (the store's review()): anyone with the reviewer role may make the first step,
  // only someone else the second; nothing after a final decision; no confirm once crops are gone.
  function allowed(record) {
    const me = state.me;
    if (record.status === "confirmed" || record.status === "rejected") return { confirm: false, reject: false, why: "" };
    if (!me) return { confirm: false, reject: false, why: "" };
    if (!me.may_review) {
      return { confirm: false, reject: false,
        why: "Read only: reviewing needs the reviewer role (you have " + me.roles.join(", ") + ")." };
    }
    const first = record.reviews.find((s) => s.step === 1);
    if (record.next_step === 2 && first && first.reviewer === me.name) {
      return { confirm: false, reject: false,
        why: "You made the first review; the second must be made by a different reviewer." };
    }
    if (record.crops_purged_ts) {
      return { confirm: false, reject: true, why: "The face crops were deleted (retention): it can be rejected, not confirmed." };
    }
    return { confirm: true, reject: true, why: "" };
  }

  function needsMyReview(record) {
    if (!state.me || !state.me.may_review) return false;
    if (record.status === "pending") return true;
    if (record.status !== "awaiting_second") return false;
    const first = record.reviews.find((s) => s.step === 1);
    return !first || first.reviewer !== state.me.name;
  }

  // -- filters and counts -------------------------------------------------------------------------

  function filters() {
    return { status: $("filter-status").value, camera: $("filter-camera").value, deployment: $("filter-deployment").value };
  }

  function matchesFilters(record) {
    const f = filters();
    if (f.camera && record.camera_id !== f.camera) return false;
    if (f.deployment && record.deployment_id !== f.deployment) return false;
    if (f.status === "mine") return needsMyReview(record);
    return !f.status || f.status === record.status;
  }

  function listParams(cursor) {
    const f = filters();
    const params = new URLSearchParams({ limit: "100" });
    if (f.status === "mine") params.set("needs_my_review", "true");
    else if (f.status) params.set("status", f.status);
    if (f.camera) params.set("camera_id", f.camera);
    if (f.deployment) params.set("deployment_id", f.deployment);
    if (cursor) params.set("cursor", cursor);
    return params;
  }

  function fillChoices(select, values, allText) {
    const chosen = select.value;
    const options = [new Option(allText, "")].concat(values.map((v) => new Option(v, v)));
    if (chosen && !values.includes(chosen)) options.push(new Option(chosen, chosen));
    select.replaceChildren(...options);
    select.value = chosen;
  }

  async function loadSummary(gen) {
    const f = filters();
    const params = new URLSearchParams();
    if (f.camera) params.set("camera_id", f.camera);
    if (f.deployment) params.set("deployment_id", f.deployment);
    const res = await fetch("/v1/alerts/summary?" + params.toString(), { headers: headers(), cache: "no-store" });
    if (gen !== state.gen || !res.ok) return;
    const summary = await res.json();
    if (gen !== state.gen) return;
    const numbers = Object.assign({ mine: summary.needs_my_review }, summary.statuses);
    for (const key of COUNT_KEYS) {
      $("counts").querySelector('[data-count-for="' + key + '"] [data-count]').textContent = String(numbers[key] || 0);
    }
    fillChoices($("filter-camera"), summary.cameras, "every camera");
    fillChoices($("filter-deployment"), summary.deployments, "every deployment");
    $("counts").dataset.loaded = "true";
  }

  function summarySoon() {
    const gen = state.gen;
    clearTimeout(state.summaryTimer);
    state.summaryTimer = setTimeout(() => loadSummary(gen), 250);
  }

  function markView() {
    const status = $("filter-status").value;
    for (const b of $("counts").querySelectorAll("button")) {
      b.setAttribute("aria-pressed", String(b.dataset.countFor === status));
    }
  }

  // -- the list -----------------------------------------------------------------------------------

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

  function subjectFacts(alertId, subjectId) {
    let pending = state.subjects.get(subjectId);
    if (!pending) {
      pending = fetch("/v1/alerts/" + alertId + "/subject", { headers: headers(), cache: "no-store" })
        .then(async (res) => (res.ok ? { facts: await res.json() } : { error: await apiError(res) }))
        .catch((e) => ({ error: "could not ask: " + e.message }));
      state.subjects.set(subjectId, pending);
    }
    return pending;
  }

  async function loadSubject(item, gen) {
    const li = item.li;
    const answer = await subjectFacts(item.record.alert_id, item.record.subject_id);
    if (gen !== state.gen) return;
    const basis = role(li, "legal-basis");
    const expiry = role(li, "expiry");
    if (answer.error) {
      basis.textContent = "unknown";
      basis.title = answer.error;
      expiry.textContent = "unknown (" + answer.error + ")";
      return;
    }
    const f = answer.facts;
    role(li, "category").textContent = f.category.replace(/_/g, " ");
    basis.textContent = f.legal_basis;
    basis.title = f.legal_basis;
    setTime(expiry, f.expires_ts, false);
    expiry.textContent = (f.expired ? "expired " : "") + fmtLocal(f.expires_ts, false);
    expiry.classList.toggle("expired", f.expired);
    setRelative(role(li, "expiry-relative"), f.expires_ts);
    if (f.status !== "active") role(li, "category").textContent += " (" + f.status + ")";
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

  function enlarge(item) {
    for (const which of ["probe", "reference"]) {
      const small = role(item.li, which);
      const big = $("enlarge-" + which);
      const missing = $("enlarge-" + which + "-missing");
      const shown = !small.hidden && small.src;
      big.hidden = !shown;
      missing.hidden = !!shown;
      if (shown) big.src = small.src;
      else missing.textContent = role(item.li, which + "-missing").textContent;
    }
    const r = item.record;
    $("enlarge-caption").textContent = r.subject_id + " \u2014 camera " + r.camera_id + ", " +
      fmtLocal(r.capture_ts, true) + ", score " + fmtNumber(r.score);
    $("enlarge").dataset.alertId = r.alert_id;
    $("enlarge").showModal();
  }

  function createItem(record, gen) {
    const li = template.content.firstElementChild.cloneNode(true);
    li.dataset.alertId = record.alert_id;
    const item = { li, record, urls: [] };
    state.items.set(record.alert_id, item);
    role(li, "subject").textContent = record.subject_id;
    role(li, "watchlist").textContent = record.watchlist_id;
    role(li, "camera").textContent = record.camera_id;
    setTime(role(li, "time"), record.capture_ts, true);
    setRelative(role(li, "time-relative"), record.capture_ts);
    role(li, "score").textContent = fmtNumber(record.score);
    role(li, "margin").textContent = fmtNumber(record.margin);
    role(li, "threshold").textContent = fmtNumber(record.threshold);
    role(li, "deployment").textContent = record.deployment_id || "none";
    role(li, "model").textContent = record.embedder_model;
    role(li, "alert-id").textContent = record.alert_id;
    role(li, "ids").title = "model " + record.embedder_model + ", alert " + record.alert_id + ", track " + record.track_id;
    const purged = record.crops_purged_ts ? "deleted " + fmtLocal(record.crops_purged_ts, false) + " (retention)" : null;
    loadChip(item, "probe", record.probe_url, purged || "no probe image", gen);
    loadChip(item, "reference", record.reference_url, purged || "no watchlist image was sent", gen);
    loadSubject(item, gen);
    for (const b of li.querySelectorAll('[data-action="enlarge"]')) b.addEventListener("click", () => enlarge(item));
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
        " " + fmtLocal(s.ts, false) + " (" + fmtRelative(s.ts) + ")";
      if (s.reason) text += " \u2014 " + s.reason;
      entry.textContent = text;
      entry.title = fmtUtc(s.ts);
      reviews.appendChild(entry);
    }
    const may = allowed(record);
    role(li, "actions").hidden = !(may.confirm || may.reject);
    action(li, "confirm").hidden = !may.confirm;
    role(li, "note").hidden = !may.confirm;
    action(li, "reject").hidden = !may.reject;
    if (!may.reject) role(li, "reject-form").hidden = true;
    action(li, "confirm").textContent = record.next_step === 2 ? "Confirm (second review)" : "Confirm";
    const why = role(li, "why-not");
    why.textContent = may.why;
    why.hidden = !may.why;
  }

  function upsert(record, gen) {
    let item = state.items.get(record.alert_id);
    const isNew = !item;
    if (!item) {
      if (!matchesFilters(record)) return false;
      item = createItem(record, gen);
    }
    updateItem(item, record);
    updateEmpty();
    return isNew;
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
      summarySoon();
    } catch (e) {
      itemError(item, "Not recorded: " + e.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  async function loadPage(gen, cursor) {
    const res = await fetch("/v1/alerts?" + listParams(cursor).toString(), { headers: headers(), cache: "no-store" });
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

  // -- notice of new alerts -------------------------------------------------------------------------

  function beep() {
    try {
      const ctx = state.audio || (state.audio = new AudioContext());
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.15, ctx.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.35);
      return true;
    } catch (e) {
      return false;
    }
  }

  function announce(record) {
    if (!$("notify").checked) return;
    const done = [];
    if (beep()) done.push("sound");
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        // The camera only: desktop notification centres keep their messages.
        new Notification("New alert to review", { body: "Camera " + record.camera_id, tag: record.alert_id });
        done.push("notification");
      } catch (e) { /* a page cannot always notify (some browsers need a service worker) */ }
    }
    state.notified += 1;
    $("notify").dataset.notified = String(state.notified);
    $("notify").dataset.lastNotice = done.join("+") || "none";
  }

  // -- the stream -----------------------------------------------------------------------------------

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
    if (kind === "alert") {
      const known = state.items.has(payload.alert_id);
      upsert(payload, gen);
      if (!known) announce(payload);
      summarySoon();
    } else if (kind === "review") {
      upsert(payload.alert, gen);
      summarySoon();
    } else if (kind === "resync") {
      loadPage(gen, null);
      summarySoon();
    }
  }

  async function loadMe(gen) {
    const res = await fetch("/v1/me", { headers: headers(), cache: "no-store" });
    if (gen !== state.gen) return "stale";
    if (!res.ok) return { status: res.status, message: await apiError(res) };
    state.me = await res.json();
    showMe(state.me);
    return null;
  }

  async function follow(gen) {
    let backoff = 1000;
    while (gen === state.gen) {
      const controller = new AbortController();
      state.abort = controller;
      try {
        setConn("connecting", "connecting\u2026");
        const refused = await loadMe(gen);
        if (refused === "stale") return;
        if (refused) {
          if (refused.status === 401 || refused.status === 403) {
            setConn("error", "refused");
            showError("The API refused this token. " + refused.message);
            return;
          }
          throw new Error(refused.message);
        }
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
        await Promise.all([loadSummary(gen), loadPage(gen, null)]);
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
    state.me = null;
    state.subjects.clear();
    showMe(null);
    showError("");
    clearList();
    if (!state.token) {
      setConn("idle", "enter a token");
      return;
    }
    follow(state.gen);
  }

  function reload() {
    const gen = state.gen;
    for (const item of state.items.values()) item.urls.forEach((u) => URL.revokeObjectURL(u));
    state.items.clear();
    list.replaceChildren();
    list.dataset.loaded = "false";
    state.cursor = null;
    markView();
    if (state.token && state.me) {
      loadPage(gen, null);
      loadSummary(gen);
    }
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
  for (const id of ["filter-status", "filter-camera", "filter-deployment"]) $(id).addEventListener("change", reload);
  for (const b of $("counts").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      $("filter-status").value = $("filter-status").value === b.dataset.countFor ? "" : b.dataset.countFor;
      reload();
    });
  }
  $("notify").addEventListener("change", () => {
    const on = $("notify").checked;
    try { localStorage.setItem(NOTIFY_KEY, on ? "on" : "off"); } catch (e) { /* storage off */ }
    if (on) {
      // Created on the click: browsers let a page make sound only after a gesture.
      try { if (!state.audio) state.audio = new AudioContext(); } catch (e) { state.audio = null; }
      if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
    }
  });
  $("enlarge-close").addEventListener("click", () => $("enlarge").close());
  $("enlarge").addEventListener("click", (ev) => { if (ev.target === $("enlarge")) $("enlarge").close(); });
  $("more").addEventListener("click", () => {
    if (state.cursor) loadPage(state.gen, state.cursor);
  });
  setInterval(refreshRelative, 15000);
  markView();
  start();
})();
"""

BODY = """
<div class="top">
<header>
  <h1>OpenLFR alert review</h1>
  <span id="whoami" hidden></span>
  <form id="token-form" autocomplete="off">
    <label for="token">API token</label>
    <input id="token" name="token" type="password" spellcheck="false" autocomplete="off">
    <button id="token-save" type="submit">Use token</button>
    <button id="token-clear" type="button">Forget token</button>
  </form>
  <label title="a short sound, and a browser notification naming the camera, for each new alert">
    <input id="notify" type="checkbox" data-notified="0"> sound + notification for new alerts</label>
  <span id="conn-status" data-state="idle">not connected</span>
</header>
<div class="toolbar">
  <div id="counts" role="group" aria-label="alerts per state" data-loaded="false">
    <button type="button" data-count-for="mine" hidden>needs my review <span data-count>0</span></button>
    <button type="button" data-count-for="pending">pending <span data-count>0</span></button>
    <button type="button" data-count-for="awaiting_second">awaiting second <span data-count>0</span></button>
    <button type="button" data-count-for="confirmed">confirmed <span data-count>0</span></button>
    <button type="button" data-count-for="rejected">rejected <span data-count>0</span></button>
  </div>
  <label>Show
    <select id="filter-status">
      <option value="">all alerts</option>
      <option value="mine">needs my review</option>
      <option value="pending">pending</option>
      <option value="awaiting_second">awaiting second review</option>
      <option value="confirmed">confirmed</option>
      <option value="rejected">rejected</option>
    </select>
  </label>
  <label>Camera <select id="filter-camera"><option value="">every camera</option></select></label>
  <label>Deployment <select id="filter-deployment"><option value="">every deployment</option></select></label>
</div>
</div>
<main>
  <div id="error" role="alert" hidden></div>
  <p id="empty" hidden>No alerts here. New alerts appear as they are raised.</p>
  <ul id="alerts" data-loaded="false" aria-live="polite"></ul>
  <button id="more" type="button" hidden>Load older alerts</button>
</main>
<dialog id="enlarge" aria-label="both faces, enlarged">
  <div class="big">
    <figure>
      <img id="enlarge-probe" alt="face seen by the camera, enlarged">
      <span class="missing" id="enlarge-probe-missing" hidden></span>
      <figcaption>Camera (probe)</figcaption>
    </figure>
    <figure>
      <img id="enlarge-reference" alt="watchlist image, enlarged">
      <span class="missing" id="enlarge-reference-missing" hidden></span>
      <figcaption>Watchlist image</figcaption>
    </figure>
  </div>
  <p id="enlarge-caption"></p>
  <button id="enlarge-close" type="button">Close</button>
</dialog>
<template id="alert-template">
  <li class="alert" data-alert-id="" data-status="">
    <div class="faces">
      <figure>
        <button type="button" class="face" data-action="enlarge" title="enlarge both faces">
          <img data-role="probe" alt="face seen by the camera" hidden>
          <span class="missing" data-role="probe-missing">loading\u2026</span>
        </button>
        <figcaption>Camera</figcaption>
      </figure>
      <figure>
        <button type="button" class="face" data-action="enlarge" title="enlarge both faces">
          <img data-role="reference" alt="watchlist image" hidden>
          <span class="missing" data-role="reference-missing">loading\u2026</span>
        </button>
        <figcaption>Watchlist</figcaption>
      </figure>
    </div>
    <div class="info">
      <div class="line head">
        <span class="status" data-role="status"></span>
        <strong data-role="subject"></strong>
        <span class="category" data-role="category" title="subject category (registry)"></span>
      </div>
      <div class="line">
        <span><span class="k">Camera</span> <b data-role="camera"></b></span>
        <span><span class="k">Deployment</span> <b data-role="deployment"></b></span>
        <span><span class="k">Seen</span> <time data-role="time"></time> <span data-role="time-relative"></span></span>
      </div>
      <div class="line">
        <span><span class="k">Score</span> <b data-role="score"></b></span>
        <span><span class="k">Margin</span> <b data-role="margin"></b></span>
        <span><span class="k">Threshold</span> <b data-role="threshold"></b></span>
        <span><span class="k">Watchlist</span> <b data-role="watchlist"></b></span>
      </div>
      <div class="line">
        <span><span class="k">Legal basis</span> <b data-role="legal-basis">\u2026</b></span>
        <span><span class="k">Entry expires</span> <time data-role="expiry">\u2026</time>
          <span data-role="expiry-relative"></span></span>
      </div>
      <ol class="reviews" data-role="reviews"></ol>
      <div class="actions" data-role="actions" hidden>
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
      <p class="why-not" data-role="why-not" hidden></p>
      <p class="item-error" data-role="error" role="alert" hidden></p>
      <p class="ids" data-role="ids"><span data-role="model"></span> \u00b7 alert <span data-role="alert-id"></span></p>
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
