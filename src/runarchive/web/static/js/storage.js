/*
 * The dashboard's tabs (Archives, Storage, Activity) and its Storage panel: the storage chart,
 * the totals in words, and the retention policy form with its prune preview.
 *
 * The tabs follow the WAI-ARIA tabs pattern: one tab in the Tab order, arrow keys (Home/End)
 * move between tabs and show each one's panel at once; a "#storage" or "#activity" in the
 * address opens that tab. Showing a tab sends "ra:tab" (static/js/activity.js listens).
 *
 * The chart is the server's SVG (GET …/archive/storage.svg, drawn from the list's own answer):
 * an <img>, reloaded when the list (archive.js sends "ra:listed" with each answer) changed, its
 * alt text the same totals in words the panel shows. Nothing here parses or builds SVG.
 *
 * The policy form shows the policy that applies (GET …/archive/policy) and, for the run's
 * owners, saves the run's own (PUT; a value that is not a whole number from 0 to 100000 is said
 * at the form before anything is sent, and the server's 400 message is shown there too).
 * "Preview prune" asks the dry run (POST …/archive/prune?dry_run=1) of the *saved* policy, so
 * it is disabled while the form holds unsaved changes; it lists exactly what would be removed
 * and kept and the bytes freed. "Prune now" asks, then queues the prune job, which the job
 * panel watches like any other (PRUNE_COMPLETE / PRUNE_FAILED end it); the list refresh that
 * follows redraws the chart. All URLs come from #ra-config; data is put in the page as text.
 */
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const configNode = $("ra-config");
  const shared = window.raDashboard;
  if (!configNode || !shared || !$("ra-panel-storage")) return;
  const config = JSON.parse(configNode.textContent);
  const urls = config.urls;
  const canWrite = Boolean(config.can_write);
  const { api, el, humanSize } = shared;

  const RULES = Object.freeze(["keep_last", "keep_daily", "keep_weekly", "keep_monthly"]);
  const RULE_LABELS = Object.freeze({
    keep_last: "Newest", keep_daily: "Daily", keep_weekly: "Weekly", keep_monthly: "Monthly",
  });
  const MAX_KEEP = 100000;
  const CHART_MIN = 320; // the route's range of widths (web/storage_chart.py)
  const CHART_MAX = 640; // wider, and the page's text would outgrow the chart's
  const RESIZE_DEBOUNCE_MS = 250;
  const WHOLE = /^\d+$/;

  // ---------------------------------------------------------------- tabs

  const tabs = [...document.querySelectorAll('.tabs [role="tab"]')];

  function visibleTabs() {
    return tabs.filter((tab) => !tab.hidden);
  }

  function selectTab(tab, { focus = false } = {}) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      const panel = $(other.getAttribute("aria-controls"));
      if (panel) panel.hidden = !selected;
    }
    if (focus) tab.focus();
    document.dispatchEvent(new CustomEvent("ra:tab", { detail: { tab: tab.id } }));
  }

  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const shown = visibleTabs();
      const at = shown.indexOf(tab);
      let next = null;
      if (event.key === "ArrowRight") next = shown[(at + 1) % shown.length];
      else if (event.key === "ArrowLeft") next = shown[(at - 1 + shown.length) % shown.length];
      else if (event.key === "Home") next = shown[0];
      else if (event.key === "End") next = shown[shown.length - 1];
      if (!next) return;
      event.preventDefault();
      selectTab(next, { focus: true });
    });
  }

  const activityTab = $("ra-tab-activity");
  if (activityTab && urls.audit) activityTab.hidden = false; // the audit route exists

  // ---------------------------------------------------------------- totals and chart

  const ui = {
    panel: $("ra-panel-storage"),
    summary: $("ra-storage-summary"),
    chart: $("ra-storage-chart"),
    form: $("ra-policy-form"),
    save: $("ra-policy-save"),
    previewBtn: $("ra-prune-preview-btn"),
    policyState: $("ra-policy-state"),
    policyError: $("ra-policy-error"),
    preview: $("ra-prune-preview"),
    pruneSummary: $("ra-prune-summary"),
    removeList: $("ra-prune-remove"),
    keepList: $("ra-prune-keep"),
    pruneBtn: $("ra-prune-btn"),
  };
  const inputs = Object.fromEntries(RULES.map((rule) => [rule, $(`ra-${rule}`)]));
  const state = {
    list: null,
    chartKey: null,
    chartVersion: 0,
    saved: null, // the policy as the server last said it
    pending: false,
    pruneJob: null,
    pruneCount: 0,
  };

  function plural(n, noun) {
    return `${n} ${noun}${n === 1 ? "" : "s"}`;
  }

  function percent(part, whole) {
    return whole > 0 ? `${Math.round((100 * part) / whole)} %` : "—";
  }

  /** Say the run's storage in words (the chart's alt text too). */
  function totalsText(data) {
    const archives = Array.isArray(data.archives) ? data.archives : [];
    const usage = data.usage && typeof data.usage === "object" ? data.usage : null;
    const count = usage && Number.isFinite(usage.archives_count) ? usage.archives_count : archives.length;
    const bytes = usage && Number.isFinite(usage.archives_bytes)
      ? usage.archives_bytes
      : archives.reduce((sum, a) => sum + (Number(a.size) || 0), 0);
    const parts = [`${plural(count, "archive")}, ${humanSize(bytes)} in all`];
    if (usage && Number.isFinite(usage.quota_bytes)) {
      parts.push(`quota ${humanSize(usage.quota_bytes)} (${percent(bytes, usage.quota_bytes)} used)`);
    }
    if (usage && Number.isFinite(usage.quota_count)) {
      parts.push(`at most ${plural(usage.quota_count, "archive")}`);
    }
    if (usage && Number.isFinite(usage.run_bytes)) {
      parts.push(`the run itself ${humanSize(usage.run_bytes)}`);
    }
    if (usage && Number.isFinite(usage.disk_free_bytes)) {
      parts.push(`${humanSize(usage.disk_free_bytes)} free on the disk`);
    }
    const pinned = archives.filter((a) => a.pinned === true).length;
    const damaged = archives.filter((a) => a.health === "damaged").length;
    if (pinned) parts.push(`${pinned} pinned`);
    if (damaged) parts.push(`${damaged} damaged`);
    return `${parts.join("; ")}.`;
  }

  /** The width the chart is shown at, so the server draws its text at a legible size. */
  function chartWidth() {
    const shown = ui.chart.parentElement.clientWidth || CHART_MAX;
    const width = Math.floor(Math.min(CHART_MAX, shown) / 10) * 10;
    return Math.max(CHART_MIN, width);
  }

  function renderStorage() {
    const data = state.list;
    if (!data) return;
    const text = totalsText(data);
    ui.summary.textContent = text;
    if (ui.panel.hidden) return; // the chart is fetched when the panel is shown
    const width = chartWidth();
    const key = JSON.stringify([data.archives, data.usage, width]);
    if (key === state.chartKey) return;
    state.chartKey = key;
    state.chartVersion += 1;
    const sep = urls.storage_chart.includes("?") ? "&" : "?";
    ui.chart.alt = `Storage chart: ${text}`;
    ui.chart.src = `${urls.storage_chart}${sep}width=${width}&v=${state.chartVersion}`;
    ui.chart.dataset.version = String(state.chartVersion);
  }

  document.addEventListener("ra:listed", (event) => {
    state.list = event.detail;
    renderStorage();
    updatePolicyButtons();
  });

  // ---------------------------------------------------------------- the policy form

  function formValues() {
    const values = {};
    const errors = [];
    for (const rule of RULES) {
      const raw = inputs[rule].value.trim();
      const ok = WHOLE.test(raw) && Number(raw) <= MAX_KEEP;
      inputs[rule].setAttribute("aria-invalid", String(!ok));
      if (ok) values[rule] = Number(raw);
      else errors.push(`${RULE_LABELS[rule]} must be a whole number from 0 to ${MAX_KEEP}.`);
    }
    return { values, errors };
  }

  function sameAsSaved(values) {
    return Boolean(state.saved) && RULES.every((rule) => values[rule] === state.saved[rule]);
  }

  function showPolicyError(text) {
    ui.policyError.textContent = text || "";
    ui.policyError.hidden = !text;
  }

  function updatePolicyButtons() {
    if (!ui.save) return;
    const { values, errors } = formValues();
    const dirty = !errors.length && !sameAsSaved(values);
    const busy = state.pending || shared.isBusy();
    ui.save.disabled = busy || Boolean(errors.length) || !dirty || !state.saved;
    ui.previewBtn.disabled = busy || Boolean(errors.length) || dirty || !state.saved;
    if (ui.pruneBtn) ui.pruneBtn.disabled = busy;
    if (errors.length) ui.policyState.textContent = "";
    else if (dirty) ui.policyState.textContent = "Unsaved changes: save to preview the new policy.";
    else if (ui.policyState.dataset.kind !== "info") ui.policyState.textContent = "";
  }

  function fillPolicy(policy) {
    state.saved = Object.fromEntries(RULES.map((rule) => [rule, Number(policy[rule]) || 0]));
    for (const rule of RULES) {
      inputs[rule].value = String(state.saved[rule]);
      inputs[rule].setAttribute("aria-invalid", "false");
    }
    showPolicyError("");
    updatePolicyButtons();
  }

  function setPolicyState(text) {
    ui.policyState.dataset.kind = text ? "info" : "";
    ui.policyState.textContent = text;
  }

  async function loadPolicy() {
    try {
      fillPolicy(await api("GET", urls.policy));
    } catch (err) {
      showPolicyError(`Could not load the policy: ${err.message}`);
    }
  }

  async function savePolicy(event) {
    event.preventDefault();
    if (!ui.save || ui.save.disabled) return;
    const { values, errors } = formValues();
    if (errors.length) {
      showPolicyError(errors.join(" "));
      return;
    }
    state.pending = true;
    updatePolicyButtons();
    try {
      fillPolicy(await api("PUT", urls.policy, values));
      hidePreview();
      setPolicyState("Saved.");
    } catch (err) {
      showPolicyError(`Could not save the policy: ${err.message}`);
    } finally {
      state.pending = false;
      updatePolicyButtons();
    }
  }

  function onPolicyInput() {
    const { errors } = formValues();
    showPolicyError(errors.join(" "));
    setPolicyState("");
    hidePreview();
    updatePolicyButtons();
  }

  // ---------------------------------------------------------------- preview and prune

  function hidePreview() {
    if (!ui.preview) return;
    ui.preview.hidden = true;
    state.pruneCount = 0;
  }

  function nameItems(names) {
    if (!names.length) return [el("li", { className: "muted", text: "none" })];
    return names.map((name) => {
      const listed = (state.list && state.list.archives || []).find((a) => a.name === name);
      const size = listed ? ` (${humanSize(listed.size)})` : "";
      return el("li", { dataset: { name } }, [
        el("span", { className: "mono", text: String(name) }),
        size,
      ]);
    });
  }

  async function previewPrune() {
    if (ui.previewBtn.disabled) return;
    const sep = urls.prune.includes("?") ? "&" : "?";
    state.pending = true;
    updatePolicyButtons();
    let plan;
    try {
      plan = await api("POST", `${urls.prune}${sep}dry_run=1`);
    } catch (err) {
      showPolicyError(`Could not preview the prune: ${err.message}`);
      return;
    } finally {
      state.pending = false;
      updatePolicyButtons();
    }
    const remove = Array.isArray(plan.remove) ? plan.remove.map(String) : [];
    const keep = Array.isArray(plan.keep) ? plan.keep.map(String) : [];
    state.pruneCount = remove.length;
    ui.removeList.replaceChildren(...nameItems(remove));
    ui.keepList.replaceChildren(...nameItems(keep));
    ui.pruneSummary.textContent = remove.length
      ? `Pruning now removes ${plural(remove.length, "archive")} and frees ` +
        `${humanSize(plan.bytes_freed)}; ${keep.length} kept.`
      : `Nothing to prune: the policy keeps all ${plural(keep.length, "archive")}.`;
    ui.pruneBtn.hidden = remove.length === 0;
    ui.preview.hidden = false;
    ui.preview.focus();
  }

  async function pruneNow() {
    if (!ui.pruneBtn || ui.pruneBtn.disabled || !state.pruneCount) return;
    const question =
      `Remove ${plural(state.pruneCount, "archive")} of run ${config.runid} now?\n\n` +
      "The prune decides again when it runs, by the saved policy. This cannot be undone.";
    if (!window.confirm(question)) return;
    state.pending = true;
    updatePolicyButtons();
    try {
      const data = await api("POST", urls.prune);
      state.pruneJob = String(data.job_id);
      hidePreview();
      setPolicyState("Prune started: the job panel follows it.");
      shared.watchJob(state.pruneJob, "prune");
    } catch (err) {
      showPolicyError(`Could not start the prune: ${err.message}`);
    } finally {
      state.pending = false;
      updatePolicyButtons();
    }
  }

  document.addEventListener("ra:jobfinished", (event) => {
    const { jobId, ok } = event.detail;
    if (jobId === state.pruneJob) {
      state.pruneJob = null;
      setPolicyState(ok ? "Prune complete." : "The prune failed: see the job panel.");
    }
    updatePolicyButtons();
  });

  // The job panel's busy state gates Save, Preview and Prune now (archive.js sets it).
  new MutationObserver(updatePolicyButtons).observe($("ra-dashboard"), {
    attributes: true,
    attributeFilter: ["data-busy"],
  });

  if (ui.form) {
    ui.form.addEventListener("submit", savePolicy);
    ui.form.addEventListener("input", onPolicyInput);
  }
  if (ui.previewBtn) ui.previewBtn.addEventListener("click", previewPrune);
  if (ui.pruneBtn) ui.pruneBtn.addEventListener("click", pruneNow);
  document.addEventListener("ra:tab", (event) => {
    if (event.detail.tab === "ra-tab-storage") renderStorage();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderStorage, RESIZE_DEBOUNCE_MS); // redrawn if its width changed
  });

  loadPolicy();
  /** Open the tab the address names (#storage, #activity), at load and when it changes. */
  function openFromHash() {
    const wanted = { "#storage": "ra-tab-storage", "#activity": "ra-tab-activity" }[location.hash];
    const tab = wanted ? $(wanted) : null;
    if (tab && !tab.hidden) selectTab(tab);
  }

  window.addEventListener("hashchange", openFromHash);
  openFromHash();
})();
