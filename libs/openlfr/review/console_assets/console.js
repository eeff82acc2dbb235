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
    $("enlarge-scene-figure").hidden = role(item.li, "scene-figure").hidden;
    for (const which of ["probe", "reference", "scene"]) {
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
    // No scene crop was made (scene crops off at detect): no room taken for one.
    role(li, "scene-figure").hidden = !record.scene_url && !purged;
    loadChip(item, "scene", record.scene_url, purged || "no scene crop was sent", gen);
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
