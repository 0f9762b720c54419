/*
 * The dashboard's Activity tab: the run's audit log (GET …/archive/audit?cursor=&limit=, write
 * access; the tab exists only for the run's owners and only when the server hands out the
 * route's URL as urls.audit).
 *
 * Events come newest first, a page at a time: "Load more" asks for the page after the
 * answer's "next" cursor and appends it; the tab reloads its first page each time it is shown,
 * on "Refresh", and when a job ends while it is shown. Each row says when (local time, the
 * ISO time in its title), the action, its outcome (a word and a colour), who and from where,
 * the archive and the bytes. Everything is put in the page as text.
 */
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const configNode = $("ra-config");
  const shared = window.raDashboard;
  const rows = $("ra-audit-rows");
  if (!configNode || !shared || !rows) return;
  const config = JSON.parse(configNode.textContent);
  const url = config.urls.audit;
  if (!url) return;
  const { api, el, humanSize, localTime } = shared;

  const PAGE = 50;
  // The audit vocabulary's outcomes (core.audit.Outcome); any other word gets a plain badge.
  const OUTCOME_CLASS = Object.freeze({
    accepted: "badge",
    done: "badge badge-ok",
    refused: "badge badge-warn",
    failed: "badge badge-error",
    canceled: "badge badge-muted",
  });
  const ui = {
    panel: $("ra-panel-activity"),
    empty: $("ra-audit-empty"),
    more: $("ra-audit-more"),
    refresh: $("ra-audit-refresh"),
  };
  const state = { next: null, seq: 0, loading: false };

  function pageUrl(cursor) {
    const target = new URL(url, location.href);
    target.searchParams.set("limit", String(PAGE));
    if (cursor) target.searchParams.set("cursor", cursor);
    return target.pathname + target.search;
  }

  function text(value) {
    return value === undefined || value === null || value === "" ? "—" : String(value);
  }

  function eventRow(event) {
    const iso = event.time ? String(event.time) : "";
    const when = iso
      ? el("time", { datetime: iso, title: iso, text: localTime(iso) })
      : document.createTextNode("—");
    const outcome = text(event.outcome);
    const bytes = Number(event.bytes);
    const who = event.remote_addr ? `${text(event.user)} (${event.remote_addr})` : text(event.user);
    return el("tr", { dataset: { id: text(event.id), action: text(event.action) } }, [
      el("td", { dataset: { label: "Time" } }, [when]),
      el("td", {
        dataset: { label: "Action" },
        title: event.detail ? String(event.detail) : undefined,
        text: event.detail ? `${text(event.action)}: ${event.detail}` : text(event.action),
      }),
      el("td", { dataset: { label: "Outcome" } }, [
        el("span", {
          className: OUTCOME_CLASS[outcome] || "badge badge-muted",
          dataset: { outcome },
          text: outcome,
        }),
      ]),
      el("td", { dataset: { label: "User" }, text: who }),
      el("td", {
        className: "mono",
        dataset: { label: "Archive" },
        text: text(event.archive),
      }),
      el("td", {
        className: "num",
        dataset: { label: "Bytes" },
        title: Number.isFinite(bytes) && event.bytes !== null ? `${bytes} bytes` : undefined,
        text: Number.isFinite(bytes) && event.bytes !== null ? humanSize(bytes) : "—",
      }),
    ]);
  }

  async function load({ more = false } = {}) {
    const seq = ++state.seq;
    state.loading = true;
    ui.more.disabled = true;
    let data;
    try {
      data = await api("GET", pageUrl(more ? state.next : null));
    } catch (err) {
      if (seq === state.seq) shared.showApiError(err, "Could not load the activity");
      return;
    } finally {
      if (seq === state.seq) {
        state.loading = false;
        ui.more.disabled = false;
      }
    }
    if (seq !== state.seq) return; // a newer load is on its way
    const events = Array.isArray(data.events) ? data.events : [];
    const made = events.map(eventRow);
    if (more) rows.append(...made);
    else rows.replaceChildren(...made);
    state.next = data.next ? String(data.next) : null;
    ui.more.hidden = !state.next;
    ui.empty.hidden = rows.childElementCount > 0;
    if (more && made.length) {
      // "Load more" may have gone: the keyboard goes on from the first new row.
      made[0].tabIndex = -1;
      made[0].focus();
    }
  }

  ui.more.addEventListener("click", () => load({ more: true }));
  ui.refresh.addEventListener("click", () => load());
  document.addEventListener("ra:tab", (event) => {
    if (event.detail.tab === "ra-tab-activity") load();
  });
  document.addEventListener("ra:jobfinished", () => {
    if (!ui.panel.hidden) load();
  });
})();
