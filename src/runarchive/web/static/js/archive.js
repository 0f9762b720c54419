/*
 * Archive dashboard: create, list, download, restore and delete a run's archives and watch the
 * jobs live. Plain JS, no framework, no build step; the server hands over everything it knows
 * (URLs, trigger and event names, limits) in the JSON block #ra-config.
 *
 * How a job is watched
 * --------------------
 * Two sources report on a job, and either may be missing or late:
 *   - the websocket /status/<runid>:archive relays the run's status lines (PROGRESS lines move
 *     the bar; a TRIGGER line ends the job). It reconnects with exponential backoff and jitter,
 *     and the server may refuse it (socket cap), so it is never relied on. Protocol version 2
 *     (docs/api.md): the first connect asks for the retained lines (since=0), a reconnect only
 *     for those after the last seq seen, so no line is shown twice; a "hangup" frame means
 *     "do not come back" (access ended), any close without one means "reconnect";
 *   - polling /rq/api/jobstatus/<id> every poll_interval_ms fills the status and times, and
 *     ends the job too when the job reports its final trigger or a final RQ state.
 * Whichever arrives first calls finishJob(jobId, outcome); it acts only for the job being
 * watched and only once, so a late duplicate from the other source is ignored.
 *
 * A reload while a job runs resumes it: the list says in_progress with the job id and the page
 * watches that job again. Data from the server is only ever put in the page as text.
 *
 * What people see
 * ---------------
 *   - The activity log turns the status lines into sentences ("12:04:31 Archive started",
 *     "Adding climate/…", "Archive ready: <name> (812 files, 4.1 MiB)"); the raw lines stay one
 *     disclosure away ("Show raw status lines"). Times are when the page saw a line, except for
 *     the lines the server replays on connect: those show the job's own recorded times
 *     (enqueued, started, ended) or none. Lines of a job that is over are labelled "From the
 *     last job (ended HH:MM)".
 *   - File counts are regular files, as the table's Files column: a restore reports folders and
 *     links in its last PROGRESS lines too, so the page counts a restore by the archive's files.
 *   - The outcome of a row's Restore or Delete (started, refused, done, failed) is shown in that
 *     row (or where the deleted row was), and focused when it answers a click; the alerts at the
 *     top stay the live region screen readers hear.
 *   - The connection reads Live, Polling (the socket is refused but HTTP answers) or Offline —
 *     retrying (the server does not answer at all).
 *   - While a job is queued or running, users who may write the run see a Cancel button (see
 *     "the Cancel button" below).
 */
(() => {
  "use strict";

  // Websocket frame types of the status relay (the protocol, not run data).
  const FRAME = Object.freeze({ STATUS: "status", PING: "ping", PONG: "pong", HANGUP: "hangup" });
  // Job kinds, as jobstatus reports them.
  const KIND = Object.freeze({
    ARCHIVE: "archive", RESTORE: "restore", UNDO: "undo", FORK: "fork", PRUNE: "prune",
  });
  // Free-text status lines the page reacts to (see runarchive.jobs.lines).
  const LINE_PREFIX = Object.freeze({
    ERROR: "Error: ",
    DELETED: "Archive deleted: ",
    DAMAGED: "Archive damaged: ", // the scrub found damage: the list shows the badge
  });
  // Used only when the server sends no trigger: RQ's final states and what they mean.
  const DEFAULT_FINAL_STATES = Object.freeze({
    finished: true,
    failed: false,
    stopped: false,
    canceled: false,
  });
  // How far along RQ's states before the end a job is. A poll answered just before the worker
  // took the job can arrive after the worker's STARTED line: the panel never moves back.
  const PROGRESS_RANK = Object.freeze({ queued: 0, deferred: 0, scheduled: 0, started: 1 });
  const MAX_LOG_LINES = 400;
  const WS_BACKOFF_BASE_MS = 500;
  const WS_BACKOFF_MAX_MS = 30000;
  const WS_STABLE_MS = 5000; // a socket open this long resets the backoff
  const POLL_MAX_MS = 10000;
  // RQ records a job's end (time, traceback) just after the job published its trigger.
  const TRACE_RETRIES = 20;
  const TRACE_RETRY_MS = 500;
  const LIST_DEBOUNCE_MS = 300;
  const LIST_RETRY_MS = 5000; // the first list could not be loaded: try again
  const MAX_ALERTS = 4;
  const MAX_ACTIVITY = 200;
  // Lines arriving this soon after the socket opened are the server's replay: not "seen now".
  const REPLAY_WINDOW_MS = 500;
  // Answers from the health check that mean the service is not there.
  const OFFLINE_STATUSES = new Set([0, 502, 503, 504]);

  const $ = (id) => document.getElementById(id);

  const configNode = $("ra-config");
  const root = $("ra-dashboard");
  if (!configNode || !root) return;
  const config = JSON.parse(configNode.textContent);
  const urls = config.urls;
  const constants = config.constants || {};
  const TRIGGERS = constants.triggers || {};
  const EVENTS = constants.events || {};
  const EVENT_NAMES = new Set(Object.values(EVENTS));
  const SUCCESS_TRIGGERS = new Set(
    [TRIGGERS.ARCHIVE_COMPLETE, TRIGGERS.RESTORE_COMPLETE, TRIGGERS.PRUNE_COMPLETE,
     TRIGGERS.UNDO_COMPLETE, TRIGGERS.FORK_COMPLETE].filter(Boolean),
  );
  const FAILURE_TRIGGERS = new Set(
    [TRIGGERS.ARCHIVE_FAILED, TRIGGERS.RESTORE_FAILED, TRIGGERS.PRUNE_FAILED,
     TRIGGERS.UNDO_FAILED, TRIGGERS.FORK_FAILED].filter(Boolean),
  );
  const UNDO_TRIGGERS = new Set([TRIGGERS.UNDO_COMPLETE, TRIGGERS.UNDO_FAILED].filter(Boolean));
  const FORK_TRIGGERS = new Set([TRIGGERS.FORK_COMPLETE, TRIGGERS.FORK_FAILED].filter(Boolean));
  const ARCHIVE_TRIGGERS = new Set(
    [TRIGGERS.ARCHIVE_COMPLETE, TRIGGERS.ARCHIVE_FAILED].filter(Boolean),
  );
  const PRUNE_TRIGGERS = new Set([TRIGGERS.PRUNE_COMPLETE, TRIGGERS.PRUNE_FAILED].filter(Boolean));

  const FINAL_STATES = constants.final_states || DEFAULT_FINAL_STATES;
  const MAX_COMMENT = Number(constants.max_comment) || 40;
  const POLL_MS = Math.max(200, Number(config.poll_interval_ms) || 1000);
  // No frame at all (the server pings) for three ping intervals: the socket is dead, reconnect.
  const WS_IDLE_MS = 3 * (Number(config.ws_ping_interval_ms) || 30000);
  const canWrite = Boolean(config.can_write);
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.content : "";

  const ui = {
    alerts: $("ra-alerts"),
    conn: $("ra-connection"),
    connText: $("ra-connection-text"),
    form: $("ra-archive-form"),
    comment: $("ra-comment"),
    commentCount: $("ra-comment-count"),
    archiveBtn: $("ra-archive-btn"),
    jobCard: $("ra-job"),
    jobId: $("ra-job-id"),
    jobStatus: $("ra-job-status"),
    jobStarted: $("ra-job-started"),
    jobEnded: $("ra-job-ended"),
    progress: $("ra-progress"),
    progressLabel: $("ra-progress-label"),
    log: $("ra-status-log"),
    activity: $("ra-activity"),
    activityNote: $("ra-activity-note"),
    tracePanel: $("ra-trace-panel"),
    trace: $("ra-trace"),
    rows: $("ra-archive-rows"),
    empty: $("ra-empty"),
    loading: $("ra-loading"),
    refresh: $("ra-refresh"),
    undo: $("ra-undo"),
    undoText: $("ra-undo-text"),
    undoBtn: $("ra-undo-btn"),
    fork: $("ra-fork"),
    forkForm: $("ra-fork-form"),
    forkName: $("ra-fork-name"),
    forkId: $("ra-fork-id"),
    forkAlerts: $("ra-fork-alerts"),
    forkCancel: $("ra-fork-cancel"),
    forkTitle: $("ra-fork-title"),
    confirm: $("ra-confirm"),
    confirmName: $("ra-confirm-name"),
    confirmScope: $("ra-confirm-scope"),
    confirmPaths: $("ra-confirm-paths"),
    confirmSummary: $("ra-confirm-summary"),
    confirmCancel: $("ra-confirm-cancel"),
    confirmRestore: $("ra-confirm-restore"),
  };

  const state = {
    job: null, // the watched job: {id, kind, done, pollTimer, pollDelay, fraction, lastError …}
    finished: new Set(), // ids of jobs already finished here: never watched again
    triggers: new Map(), // job id -> outcome, from TRIGGER lines (also of jobs not yet watched)
    pending: false, // a POST is on its way
    settling: false, // a job just ended; the list is being refreshed
    listLoaded: false,
    listSeq: 0,
    renderedKey: null, // the archive list as last rendered (JSON)
    listTimer: null,
    ws: null,
    wsAttempts: 0,
    wsTimer: null,
    wsIdleTimer: null,
    failureAlert: null, // a failure alert still waiting for the traceback's last line
    archives: new Map(), // name -> archive, as last listed (the table's file counts)
    note: null, // the outcome shown at a row: {name, kind, text, index, jobId}
    offline: false, // the last request could not reach the server
    wsOpenedAt: 0,
    wsSeq: 0, // seq of the last status line seen: a reconnect asks only for later ones
    wsHungUp: false, // the server said hangup: do not reconnect
    lineJob: null, // the job the last rq:<id> line named: free-text lines belong to it
    jobLog: new Map(), // job id -> {kind, archive, files, bytes, fileCount, ended}
    lastJobId: null, // the latest job in the activity log
    endedShown: new Map(), // job id -> ended_at (ISO), once known
    forkOf: null, // the archive the open Fork dialog is for
    forkOpener: null, // the row's Fork… button: focus goes back to it
    confirmSeq: 0, // per opening of the restore confirm: a late preview answer is dropped
  };

  // ---------------------------------------------------------------- small helpers

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  /** Return ``url`` if it points at this site over http(s), else null (never javascript:). */
  function sameOriginUrl(url) {
    if (!url) return null;
    try {
      const parsed = new URL(url, location.href);
      return parsed.origin === location.origin ? String(url) : null;
    } catch {
      return null;
    }
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function humanSize(bytes) {
    const n = Number(bytes);
    if (!Number.isFinite(n) || n < 0) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    if (unit === 0) return `${value} B`;
    return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
  }

  function localTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  function clockTime(date, seconds = true) {
    const options = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (seconds) options.second = "2-digit";
    return date.toLocaleTimeString(undefined, options);
  }

  function timeNode(iso) {
    if (!iso) return document.createTextNode("—");
    return el("time", { datetime: iso, title: `${iso} (UTC)`, text: localTime(iso) });
  }

  // ---------------------------------------------------------------- alerts

  function clearAlerts() {
    ui.alerts.replaceChildren();
  }

  function showAlert(kind, message, code) {
    const close = el("button", {
      type: "button",
      className: "alert-close",
      "aria-label": "Dismiss",
      text: "×",
    });
    const box = el(
      "div",
      {
        className: `alert alert-${kind}`,
        role: kind === "error" ? "alert" : "status",
        dataset: code ? { code } : {},
      },
      [el("span", { className: "alert-text", text: message }), close],
    );
    close.addEventListener("click", () => box.remove());
    ui.alerts.append(box);
    while (ui.alerts.childElementCount > MAX_ALERTS) ui.alerts.firstElementChild.remove();
    return box;
  }

  function showApiError(err, context) {
    const prefix = context ? `${context}: ` : "";
    const box = showAlert("error", prefix + err.message, err.code);
    if (err.status === 401 && config.urls.login) {
      // The login page the server named (ours, or the host's under init_app), never a guess.
      const next = encodeURIComponent(location.pathname);
      const sep = config.urls.login.includes("?") ? "&" : "?";
      box.insertBefore(
        el("a", {
          href: `${config.urls.login}${sep}next=${next}`, className: "alert-link", text: "Log in again",
        }),
        box.lastChild,
      );
    }
  }

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      headers["X-CSRFToken"] = csrfToken;
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body || {});
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      setOffline(true);
      throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
    }
    setOffline(false);
    let data = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try {
        data = await response.json();
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      const message =
        error.message ||
        (response.status === 401
          ? "your session has expired"
          : `${response.status} ${response.statusText}`.trim());
      throw new ApiError(response.status, error.code || String(response.status), message);
    }
    return data;
  }

  // ---------------------------------------------------------------- busy state

  function updateBusy() {
    const busy = Boolean(state.job) || state.pending || state.settling || !state.listLoaded;
    root.dataset.busy = String(busy);
    ui.jobCard.setAttribute("aria-busy", String(Boolean(state.job)));
    if (ui.archiveBtn) ui.archiveBtn.disabled = busy;
    if (ui.undoBtn) ui.undoBtn.disabled = busy;
    for (const button of ui.rows.querySelectorAll("button[data-action]")) {
      // A damaged archive's Restore stays off: the server refuses it (409, the damage named).
      button.disabled = busy || button.dataset.refused === "damaged";
    }
    updateCancel();
  }

  // ---------------------------------------------------------------- the archive list

  function renderArchives(archives) {
    ui.loading.hidden = true;
    ui.empty.hidden = archives.length > 0;
    state.archives = new Map(archives.map((archive) => [String(archive.name), archive]));
    const key = JSON.stringify(archives);
    if (key !== state.renderedKey) {
      // Re-render only on change, and keep the keyboard focus on the same control.
      const focused = document.activeElement;
      const keep = ui.rows.contains(focused) ? { ...focused.dataset } : null;
      ui.rows.replaceChildren(...archives.map(archiveRow));
      state.renderedKey = key;
      placeNote();
      if (keep && keep.action) {
        const again = [...ui.rows.querySelectorAll("[data-action]")].find(
          (node) => node.dataset.action === keep.action && node.dataset.name === keep.name,
        );
        if (again) again.focus();
      } else if (keep && keep.noteFor) {
        focusNote();
      }
    }
    updateBusy();
  }

  // ---------------------------------------------------------------- outcomes at the row

  function rowOf(name) {
    return [...ui.rows.querySelectorAll("tr[data-name]")].find((tr) => tr.dataset.name === name);
  }

  /** Show ``text`` at archive ``name``'s row (or where it was); one note at a time. */
  // The note lives in ``state`` (the list redraws its rows, and the note with them), so
  // a fork's "Open <new run>" link is kept there too, not only in the DOM.
  function setRowNote(name, kind, text, { focus = false, jobId = null, newRun = null } = {}) {
    const row = rowOf(name);
    const rows = [...ui.rows.querySelectorAll("tr[data-name]")];
    const index = row ? rows.indexOf(row) : state.note ? state.note.index : 0;
    state.note = { name, kind, text, index: Math.max(0, index), jobId, newRun };
    placeNote();
    if (focus) focusNote();
  }

  function clearRowNote() {
    state.note = null;
    placeNote();
  }

  /** Put the note in its row's actions cell, or in a row of its own where the row was. */
  function placeNote() {
    for (const old of ui.rows.querySelectorAll(".row-note, tr.row-gone")) old.remove();
    const note = state.note;
    if (!note) return;
    const box = el("p", {
      className: `row-note row-note-${note.kind}`,
      tabindex: "-1",
      dataset: { noteFor: note.name, kind: note.kind },
      text: note.text,
    });
    if (note.newRun) linkNewRun(box, note.newRun);
    const row = rowOf(note.name);
    if (row) {
      row.querySelector(".cell-actions").append(box);
      return;
    }
    const gone = el("tr", { className: "row-gone", dataset: { gone: note.name } }, [
      el("td", { colspan: "6" }, [box]),
    ]);
    const rows = ui.rows.querySelectorAll("tr[data-name]");
    const before = rows[Math.min(note.index, rows.length)] || null;
    ui.rows.insertBefore(gone, before);
  }

  function focusNote() {
    const box = ui.rows.querySelector(".row-note");
    if (!box) return;
    box.focus({ preventScroll: true });
    box.scrollIntoView({ block: "nearest" });
  }

  function archiveRow(archive) {
    const name = String(archive.name);
    const nameCell = el("td", { className: "cell-name", dataset: { label: "Name" } }, [
      el("span", { className: "mono archive-name", text: name }),
    ]);
    if (archive.readable === false) {
      nameCell.append(
        " ",
        el("span", {
          className: "badge badge-warn",
          title: archive.error || "",
          text: "unreadable",
        }),
      );
    }
    const pinned = archive.pinned === true;
    if (pinned) {
      nameCell.append(
        " ",
        el("span", {
          className: "badge badge-pin",
          title: "Pinned: never pruned, and not deleted until unpinned",
          text: "pinned",
        }),
      );
    }
    // What the scrub found: a badge with a word (not only a colour), and the damage in text.
    const damaged = archive.health === "damaged";
    if (damaged) {
      nameCell.append(
        " ",
        el("span", {
          className: "badge badge-danger",
          dataset: { health: "damaged" },
          title: archive.damage || "",
          text: "Damaged",
        }),
        el("span", {
          className: "row-damage",
          dataset: { damageFor: name },
          text: `Damaged: ${String(archive.damage || "the scrub found damage").replace(/\.$/, "")}. Restore is refused.`,
        }),
      );
    } else if (archive.health === "ok" && archive.checked_at) {
      nameCell.append(
        " ",
        el("span", {
          className: "badge badge-ok",
          dataset: { health: "ok" },
          title: `Every byte checked ${new Date(archive.checked_at).toLocaleString()}`,
          text: "verified",
        }),
      );
    }
    const links = Number(archive.links) || 0;
    if (links > 0) {
      nameCell.append(
        " ",
        el("span", {
          className: "badge badge-muted",
          title: "Holds symbolic links: runarchive, unzip and bsdtar restore them as links",
          text: `${links} link${links === 1 ? "" : "s"}`,
        }),
      );
    }
    const comment = archive.comment ? String(archive.comment) : "";
    const actions = el("td", { className: "cell-actions", dataset: { label: "Actions" } });
    const href = sameOriginUrl(archive.download_url);
    if (href) {
      actions.append(
        el("a", {
          className: "button button-small",
          href,
          download: name,
          dataset: { action: "download", name },
          "aria-label": `Download ${name}`,
          text: "Download",
        }),
      );
    }
    if (archive.readable !== false) {
      // Opened by static/js/inside.js; not a data-action: browsing stays possible mid-job.
      actions.append(
        el("button", {
          type: "button",
          className: "button button-small",
          dataset: { inside: "browse", name },
          "aria-label": `Browse ${name}`,
          text: "Browse",
        }),
      );
    }
    if (canWrite) {
      actions.append(
        el("button", {
          type: "button",
          className: "button button-small",
          dataset: damaged
            ? { action: "restore", name, refused: "damaged" }
            : { action: "restore", name },
          "aria-label": damaged
            ? `Restore refused: ${name} is damaged`
            : `Restore the run from ${name}`,
          title: damaged ? "Damaged: the server refuses to restore it" : undefined,
          disabled: damaged ? "" : undefined,
          text: "Restore",
        }),
      );
      if (ui.fork && urls.fork && archive.readable !== false) {
        actions.append(
          el("button", {
            type: "button",
            className: "button button-small",
            dataset: { action: "fork", name },
            "aria-label": `Fork ${name} into a new run`,
            "aria-haspopup": "dialog",
            text: "Fork…",
          }),
        );
      }
      actions.append(
        el("button", {
          type: "button",
          className: "button button-small button-toggle",
          dataset: { action: "pin", name },
          "aria-pressed": String(pinned),
          "aria-label": `Pin ${name}`,
          title: pinned ? "Pinned: press to unpin" : "Pin: never pruned, not deleted until unpinned",
          text: "Pin",
        }),
        el("button", {
          type: "button",
          className: "button button-small button-danger",
          dataset: { action: "delete", name, pinned: String(pinned) },
          "aria-label": `Delete ${name}`,
          // Still focusable: a press says why instead of doing nothing.
          "aria-disabled": pinned ? "true" : undefined,
          title: pinned ? "Pinned: unpin it to delete it" : undefined,
          text: "Delete",
        }),
      );
    }
    return el("tr", { dataset: { name } }, [
      nameCell,
      el("td", {
        className: comment ? "cell-comment" : "cell-comment muted",
        dataset: { label: "Comment" },
        text: comment || "—",
      }),
      el("td", {
        className: "num",
        dataset: { label: "Size" },
        title: `${archive.size} bytes`,
        text: humanSize(archive.size),
      }),
      el("td", {
        className: "num",
        dataset: { label: "Files" },
        text: archive.files === undefined ? "—" : String(archive.files),
      }),
      el("td", { dataset: { label: "Created" } }, [timeNode(archive.created)]),
      actions,
    ]);
  }

  async function refreshList() {
    const seq = ++state.listSeq;
    clearTimeout(state.listTimer);
    let data;
    try {
      data = await api("GET", urls.list);
    } catch (err) {
      if (seq !== state.listSeq) return;
      showApiError(err, "Could not load the archives");
      if (!state.listLoaded) {
        ui.loading.textContent = "Could not load the archives; retrying…";
        state.listTimer = setTimeout(refreshList, LIST_RETRY_MS);
      }
      return;
    }
    if (seq !== state.listSeq) return; // a newer refresh is on its way
    state.listLoaded = true;
    renderArchives(Array.isArray(data.archives) ? data.archives : []);
    renderUndo(data.undo);
    // The storage panel (static/js/storage.js) draws from the same answer.
    document.dispatchEvent(new CustomEvent("ra:listed", { detail: data }));
    if (data.in_progress && data.job_id && !state.finished.has(data.job_id)) {
      watchJob(String(data.job_id), null);
    }
  }

  /** The "Undo restore" banner, while what the last restore replaced is kept. */
  function renderUndo(undo) {
    if (!ui.undo) return;
    state.undo = undo && undo.available ? undo : null;
    ui.undo.hidden = !state.undo;
    if (!state.undo) return;
    const when = state.undo.at ? new Date(state.undo.at).toLocaleString() : "earlier";
    const until = state.undo.expires ? new Date(state.undo.expires).toLocaleString() : "the next job";
    ui.undoText.textContent =
      `The restore from ${state.undo.restored} (${when}) can be undone until ${until} ` +
      `or the next archive or restore; what it replaced holds ${humanSize(state.undo.bytes || 0)}.`;
  }

  async function undoRestore() {
    if (!state.undo) return;
    const question =
      `Undo the restore from ${state.undo.restored}?\n\n` +
      "The run gets back exactly what that restore replaced; what the restore wrote is removed.";
    if (!window.confirm(question)) return;
    const data = await post(urls.undo, {}, "Could not undo the restore");
    if (!data) return;
    const jobId = String(data.job_id);
    jobRecord(jobId, KIND.UNDO);
    watchJob(jobId, KIND.UNDO);
  }

  function scheduleListRefresh() {
    clearTimeout(state.listTimer);
    state.listTimer = setTimeout(refreshList, LIST_DEBOUNCE_MS);
  }

  // ---------------------------------------------------------------- actions

  async function post(url, body, context, name) {
    clearAlerts();
    if (state.note && !state.job) clearRowNote();
    state.pending = true;
    updateBusy();
    try {
      return await api("POST", url, body);
    } catch (err) {
      showApiError(err, context);
      if (name) setRowNote(name, "error", `${context}: ${err.message}`, { focus: true });
      // 409: another job holds the run (watch it); 404: the archive is gone (drop its row).
      if (err.status === 409 || err.status === 404) scheduleListRefresh();
      return null;
    } finally {
      state.pending = false;
      updateBusy();
    }
  }

  async function startArchive(event) {
    event.preventDefault();
    if (root.dataset.busy === "true") return;
    // One rule in every interface: the server trims and cuts to MAX_COMMENT and says so.
    const comment = ui.comment.value.trim();
    const data = await post(urls.archive, { comment }, "Could not start the archive");
    if (!data) return;
    if (data.comment_cut) {
      showAlert("info", `The comment was cut to ${MAX_COMMENT} characters: “${data.comment}”`, "cut");
    }
    ui.comment.value = "";
    updateCounter();
    watchJob(String(data.job_id), KIND.ARCHIVE);
  }

  function plural(n, word, many = `${word}s`) {
    return `${n} ${n === 1 ? word : many}`;
  }

  /** The preview's one sentence: "Restores 1 file (2.3 KiB), changes 2 (…), removes 2 files
   * created since (…)." — the server's counts, from the diff the restore would plan. */
  function previewSentence(preview) {
    const count = (part) => ({ n: Number(part && part.files) || 0, b: humanSize((part && part.bytes) || 0) });
    const restores = count(preview.restores);
    const changes = count(preview.changes);
    const removes = count(preview.removes);
    return (
      `Restores ${plural(restores.n, "file")} (${restores.b}), ` +
      `changes ${changes.n} (${changes.b}), ` +
      `removes ${plural(removes.n, "file")} created since (${removes.b}).`
    );
  }

  function previewNode(preview) {
    const cells = [
      ["restores", "Restores", preview.restores],
      ["changes", "Changes", preview.changes],
      ["removes", "Removes (created since)", preview.removes],
    ].map(([key, label, part]) =>
      el("div", { dataset: { count: key, files: String(Number(part.files) || 0), bytes: String(Number(part.bytes) || 0) } }, [
        el("dt", { text: label }),
        el("dd", { text: `${plural(Number(part.files) || 0, "file")}, ${humanSize(part.bytes || 0)}` }),
      ]),
    );
    cells.push(
      el("div", { dataset: { count: "unchanged", files: String(Number(preview.unchanged) || 0) } }, [
        el("dt", { text: "Unchanged" }),
        el("dd", { text: plural(Number(preview.unchanged) || 0, "file") }),
      ]),
    );
    const nodes = [
      el("p", { className: "confirm-sentence", text: previewSentence(preview) }),
      el("dl", { className: "compare-summary", "aria-label": "What this restore does" }, cells),
    ];
    const sample = Array.isArray(preview.sample) ? preview.sample : [];
    if (sample.length) {
      const more = (Number(preview.removes.files) || 0) - Math.min(sample.length, 5);
      const text = `Removed: ${sample.slice(0, 5).join(", ")}${more > 0 ? ` and ${more} more` : ""}.`;
      nodes.push(el("p", { className: "hint confirm-sample", text }));
    }
    return nodes;
  }

  /**
   * Ask before a restore, in the confirm dialog, with what the restore would do: the server's
   * preview (restore-preview, with each chosen path) is fetched first and Restore is offered
   * only once it answered; a preview that fails (locked, busy, damaged) says why and offers
   * no Restore. Resolves true when the user chose Restore.
   */
  function confirmRestore(name, paths) {
    const box = ui.confirm;
    const seq = ++state.confirmSeq;
    const opener = document.activeElement;
    ui.confirmName.textContent = name;
    ui.confirmScope.textContent = paths
      ? `Only the ${plural(paths.length, "chosen path")} below ${paths.length === 1 ? "is" : "are"} ` +
        "restored (a folder becomes exactly the archive's folder); everything else in run " +
        `${config.runid} stays as it is.`
      : `Every file of run ${config.runid}, except its archives, is replaced by the archive's content.`;
    ui.confirmPaths.replaceChildren(...(paths || []).map((p) => el("li", { className: "mono", text: p })));
    ui.confirmPaths.hidden = !paths;
    ui.confirmSummary.replaceChildren(el("p", { className: "hint", text: "Checking what this restore changes…" }));
    ui.confirmSummary.setAttribute("aria-busy", "true");
    ui.confirmRestore.hidden = true;
    ui.confirmCancel.textContent = "Cancel";
    box.dataset.state = "checking";
    box.showModal();
    ui.confirmCancel.focus();
    const query = new URLSearchParams();
    for (const path of paths || []) query.append("path", path);
    const url = `${urls.restore_preview}/${name}/restore-preview${paths ? `?${query}` : ""}`;
    api("GET", url).then(
      (preview) => {
        if (seq !== state.confirmSeq || !box.open) return;
        ui.confirmSummary.replaceChildren(...previewNode(preview));
        ui.confirmRestore.hidden = false;
        box.dataset.state = "ready";
      },
      (err) => {
        if (seq !== state.confirmSeq || !box.open) return;
        ui.confirmSummary.replaceChildren(
          el("p", { className: "alert confirm-refusal", role: "alert", dataset: { code: err.code || "" },
                    text: `This restore cannot start: ${err.message}` }),
        );
        ui.confirmCancel.textContent = "Close";
        box.dataset.state = "refused";
        setRowNote(name, "error", `This restore cannot start: ${err.message}`); // seen on close
        // 409: another job or a lock holds the run (the list shows it); 404: the archive is gone.
        if (err.status === 409 || err.status === 404) scheduleListRefresh();
      },
    ).finally(() => ui.confirmSummary.removeAttribute("aria-busy"));
    return new Promise((resolve) => {
      let chosen = false;
      const restore = () => {
        chosen = true;
        box.close();
      };
      const cancel = () => box.close();
      box.addEventListener(
        "close",
        () => {
          ui.confirmRestore.removeEventListener("click", restore);
          ui.confirmCancel.removeEventListener("click", cancel);
          state.confirmSeq += 1;
          if (!chosen && opener && opener.isConnected) opener.focus();
          resolve(chosen);
        },
        { once: true },
      );
      ui.confirmRestore.addEventListener("click", restore);
      ui.confirmCancel.addEventListener("click", cancel);
    });
  }

  /**
   * Restore from archive ``name`` (only ``paths``, when given) once confirmed; ``beforeStart``
   * runs after the confirm, before the job is asked for. Resolves true when a job started.
   */
  async function restoreArchive(name, paths = null, beforeStart = null) {
    if (!(await confirmRestore(name, paths))) return false;
    if (beforeStart) beforeStart();
    const body = { archive_name: name };
    if (paths) body.paths = paths;
    const data = await post(urls.restore, body, "Could not start the restore", name);
    if (!data) return false;
    const jobId = String(data.job_id);
    jobRecord(jobId, KIND.RESTORE).archive = name;
    const what = paths ? `Restore of ${plural(paths.length, "chosen path")} from ${name}` : `Restore from ${name}`;
    setRowNote(name, "info", `${what} started…`, { focus: true, jobId });
    watchJob(jobId, KIND.RESTORE);
    return true;
  }

  async function deleteArchive(name) {
    if (!window.confirm(`Delete archive ${name}?\n\nThis cannot be undone.`)) return;
    const body = { archive_name: name };
    const data = await post(urls.delete, body, "Could not delete the archive", name);
    if (!data) return;
    const deleted = data.deleted || name;
    showAlert("success", `Deleted ${deleted}.`);
    setRowNote(name, "success", `Deleted ${deleted}.`);
    await refreshList();
    focusNote();
  }

  // ---------------------------------------------------------------- fork into a new run

  function openFork(name, opener) {
    state.forkOf = name;
    state.forkOpener = opener;
    ui.forkName.textContent = name;
    ui.forkId.value = "";
    ui.forkAlerts.replaceChildren();
    ui.fork.showModal();
    ui.forkId.focus();
  }

  function closeFork() {
    if (ui.fork.open) ui.fork.close();
  }

  function forkError(message) {
    ui.forkAlerts.replaceChildren(
      el("div", { className: "alert alert-error", role: "alert" }, [
        el("span", { className: "alert-text", text: message }),
      ]),
    );
    ui.forkId.focus();
  }

  /** The new run's dashboard (the server's URL template: a mounted host's URLs included). */
  function dashboardOf(runid) {
    return urls.dashboard ? urls.dashboard.replace("{runid}", encodeURIComponent(runid)) : null;
  }

  async function submitFork(event) {
    event.preventDefault();
    const name = state.forkOf;
    if (!name || root.dataset.busy === "true") return;
    const wanted = ui.forkId.value.trim();
    if (wanted && !ui.forkId.checkValidity()) {
      forkError("Use letters, digits and _ . ; - only, or leave it empty for a fresh id.");
      return;
    }
    const body = { archive_name: name };
    if (wanted) body.new_runid = wanted;
    state.pending = true;
    updateBusy();
    let data;
    try {
      data = await api("POST", urls.fork, body);
    } catch (err) {
      // The dialog stays open with the reason (a taken or bad id), so it can be corrected.
      forkError(`Could not start the fork: ${err.message}`);
      if (err.status === 409 && err.code !== "run_exists") scheduleListRefresh();
      return;
    } finally {
      state.pending = false;
      updateBusy();
    }
    closeFork();
    const jobId = String(data.job_id);
    const rec = jobRecord(jobId, KIND.FORK);
    rec.archive = name;
    rec.newRunid = String(data.new_runid);
    setRowNote(name, "info", `Fork of ${name} into ${rec.newRunid} started…`, {
      focus: true, jobId,
    });
    watchJob(jobId, KIND.FORK);
  }

  /** Add "Open <new run>" to a fork's success notes: the alert and the row's note. */
  function linkNewRun(box, runid) {
    const href = dashboardOf(runid);
    if (!box || !href) return;
    const link = el("a", {
      href, className: "alert-link", dataset: { newRun: runid }, text: `Open ${runid}`,
    });
    const close = box.querySelector(".alert-close");
    if (close) box.insertBefore(link, close);
    else box.append(" ", link);
  }

  async function togglePin(button) {
    const name = button.dataset.name;
    const pin = button.getAttribute("aria-pressed") !== "true";
    const url = `${urls.pin}/${name}/${pin ? "pin" : "unpin"}`;
    const context = pin ? "Could not pin the archive" : "Could not unpin the archive";
    const data = await post(url, {}, context, name);
    if (!data) return;
    setRowNote(
      name,
      "success",
      data.pinned ? `Pinned ${name}: never pruned, not deleted until unpinned.` : `Unpinned ${name}.`,
    );
    await refreshList();
    // The button was disabled while the request ran (which drops the focus): give it back.
    const again = [...ui.rows.querySelectorAll('button[data-action="pin"]')].find(
      (node) => node.dataset.name === name,
    );
    if (again) again.focus();
  }

  function onRowClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const name = button.dataset.name;
    if (button.dataset.action === "restore") restoreArchive(name);
    else if (button.dataset.action === "fork") openFork(name, button);
    else if (button.dataset.action === "pin") togglePin(button);
    else if (button.dataset.action === "delete" && button.dataset.pinned === "true") {
      setRowNote(name, "error", `${name} is pinned: unpin it to delete it.`, { focus: true });
    } else if (button.dataset.action === "delete") deleteArchive(name);
  }

  function updateCounter() {
    if (!ui.commentCount) return;
    const n = ui.comment.value.trim().length;
    ui.commentCount.textContent =
      n > MAX_COMMENT ? `${n}/${MAX_COMMENT} — will be cut to ${MAX_COMMENT}` : `${n}/${MAX_COMMENT}`;
  }

  // ---------------------------------------------------------------- the job panel

  function setJobStatus(text, status) {
    ui.jobStatus.textContent = text;
    ui.jobStatus.dataset.status = status || text;
  }

  /** Show the status a poll reported, unless the panel already shows a later one. */
  function setPolledStatus(status) {
    const shown = ui.jobStatus.dataset.status;
    if (
      Object.hasOwn(PROGRESS_RANK, shown) &&
      Object.hasOwn(PROGRESS_RANK, status) &&
      PROGRESS_RANK[status] < PROGRESS_RANK[shown]
    ) {
      return;
    }
    setJobStatus(status || "unknown");
  }

  function resetJobPanel(jobId) {
    ui.jobId.textContent = jobId;
    ui.jobId.title = jobId;
    setJobStatus("queued", "queued");
    ui.jobStarted.textContent = "—";
    ui.jobEnded.textContent = "—";
    ui.progress.value = 0;
    ui.progress.removeAttribute("data-done");
    ui.progressLabel.textContent = "Waiting for the worker…";
    ui.tracePanel.hidden = true;
    ui.trace.textContent = "";
  }

  function renderTimes(info) {
    if (info.started_at) ui.jobStarted.replaceChildren(timeNode(info.started_at));
    if (info.ended_at) ui.jobEnded.replaceChildren(timeNode(info.ended_at));
  }

  /**
   * Return ``[done, total]`` regular files for a progress report of job ``jobId``.
   *
   * An archive counts regular files throughout. A restore counts regular files while it
   * extracts, then every entry (folders and links too) once it swaps: it is counted by the
   * archive's own file count (the table's Files), else by the first total it reported.
   */
  function fileCounts(jobId, p) {
    const reported = Number(p.files_total) || 0;
    const done = Number(p.files_done) || 0;
    const rec = jobRecord(jobId, p.op === KIND.RESTORE ? KIND.RESTORE : null);
    if (rec.kind !== KIND.RESTORE && p.op !== KIND.RESTORE) return [done, reported];
    if (!rec.fileCount) {
      const listed = rec.archive ? state.archives.get(rec.archive) : null;
      rec.fileCount = listed && Number.isFinite(Number(listed.files)) ? Number(listed.files) : 0;
      if (!rec.fileCount) rec.fileCount = reported;
    }
    return [Math.min(done, rec.fileCount), rec.fileCount];
  }

  function renderProgress(p) {
    const job = state.job;
    if (!job || !p) return;
    const [filesDone, filesTotal] = fileCounts(job.id, p);
    const rec = jobRecord(job.id);
    rec.files = filesTotal;
    rec.bytes = Number(p.bytes_total) || 0;
    const bytesTotal = Number(p.bytes_total) || 0;
    let fraction = 0;
    if (bytesTotal > 0) fraction = Number(p.bytes_done) / bytesTotal;
    else if (filesTotal > 0) fraction = Number(p.files_done) / filesTotal;
    fraction = Math.min(1, Math.max(0, fraction));
    if (fraction < job.fraction) return; // polling can lag the websocket: never move back
    job.fraction = fraction;
    job.progressShown = true;
    ui.progress.value = Math.round(fraction * 1000) / 10;
    const percent = Math.floor(fraction * 100);
    ui.progressLabel.textContent =
      `${p.op ? `${p.op}: ` : ""}${filesDone}/${filesTotal} files · ` +
      `${humanSize(p.bytes_done)} of ${humanSize(bytesTotal)} (${percent}%)`;
  }

  // ---------------------------------------------------------------- watching a job

  function outcomeOfTrigger(trigger) {
    if (SUCCESS_TRIGGERS.has(trigger)) return { ok: true, trigger };
    if (FAILURE_TRIGGERS.has(trigger)) return { ok: false, trigger };
    return null;
  }

  function outcomeOfStatus(info) {
    if (info.trigger) {
      const outcome = outcomeOfTrigger(info.trigger);
      if (outcome) return outcome;
    }
    if (Object.hasOwn(FINAL_STATES, info.status)) {
      return { ok: Boolean(FINAL_STATES[info.status]), trigger: null };
    }
    return null;
  }

  function watchJob(jobId, kind) {
    if (state.finished.has(jobId)) return;
    if (state.job && state.job.id === jobId) return;
    if (state.job) clearTimeout(state.job.pollTimer);
    state.job = {
      id: jobId,
      kind,
      done: false,
      pollTimer: null,
      pollDelay: POLL_MS,
      fraction: 0,
      progressShown: false,
      lastError: null,
    };
    root.dataset.jobId = jobId;
    jobRecord(jobId, kind);
    resetJobPanel(jobId);
    updateActivityNote();
    updateBusy();
    const early = state.triggers.get(jobId); // its TRIGGER beat the POST response
    if (early) {
      finishJob(jobId, early, "websocket");
      return;
    }
    pollJob(jobId);
  }

  async function pollJob(jobId) {
    const job = state.job;
    if (!job || job.id !== jobId || job.done) return;
    try {
      const info = await api("GET", urls.jobstatus + encodeURIComponent(jobId));
      if (state.job !== job || job.done) return;
      job.pollDelay = POLL_MS;
      if (!job.kind && info.kind) job.kind = info.kind;
      setPolledStatus(info.status);
      renderTimes(info);
      fillTimes(jobId, info);
      renderProgress(info.progress);
      const outcome = outcomeOfStatus(info);
      if (outcome) {
        finishJob(jobId, outcome, "polling", info);
        return;
      }
    } catch (err) {
      if (state.job !== job || job.done) return;
      if (err.status === 404) {
        finishJob(jobId, { ok: null, trigger: null }, "polling");
        return;
      }
      if (err.status === 401 || err.status === 403) {
        showApiError(err, "Cannot follow the job");
        return;
      }
      job.pollDelay = Math.min(job.pollDelay * 2, POLL_MAX_MS); // server busy or unreachable
    }
    job.pollTimer = setTimeout(() => pollJob(jobId), job.pollDelay);
  }

  /** End the watched job once, whoever reports it first (websocket TRIGGER or polling). */
  function finishJob(jobId, outcome, via, info) {
    const job = state.job;
    if (!job || job.id !== jobId || job.done) return false;
    job.done = true;
    clearTimeout(job.pollTimer);
    state.finished.add(jobId);
    state.job = null;
    const isArchive = outcome.trigger
      ? ARCHIVE_TRIGGERS.has(outcome.trigger)
      : job.kind !== KIND.RESTORE && job.kind !== KIND.UNDO && job.kind !== KIND.PRUNE;
    const isUndo = outcome.trigger ? UNDO_TRIGGERS.has(outcome.trigger) : job.kind === KIND.UNDO;
    const isFork = outcome.trigger ? FORK_TRIGGERS.has(outcome.trigger) : job.kind === KIND.FORK;
    const isPrune = outcome.trigger ? PRUNE_TRIGGERS.has(outcome.trigger) : job.kind === KIND.PRUNE;
    const what = isPrune
      ? "Prune"
      : isArchive ? "Archive" : isUndo ? "Undo" : isFork ? "Fork" : "Restore";
    root.dataset.lastOutcome = outcome.ok === null ? "unknown" : outcome.ok ? "ok" : "failed";
    root.dataset.lastFinishedVia = via;
    const rec = jobRecord(jobId);
    const atRow = state.note && state.note.jobId === jobId ? state.note.name : null;
    if (outcome.ok) {
      job.fraction = 1;
      ui.progress.value = 100;
      ui.progress.dataset.done = "true";
      if (!job.progressShown) ui.progressLabel.textContent = "Done";
      setJobStatus(`${what.toLowerCase()} complete`, "finished");
      if (isFork) {
        const made = rec.newRunid || "the new run";
        const text = `Fork complete: ${made} holds ${rec.archive || "the archive"}.`;
        const box = showAlert("success", text, "fork_complete");
        if (rec.newRunid) linkNewRun(box, rec.newRunid);
        if (atRow) setRowNote(atRow, "success", text, { jobId, newRun: rec.newRunid || null });
      } else {
        showAlert("success", isArchive ? "Archive created." : `${what} complete.`);
        if (atRow) setRowNote(atRow, "success", restoreDoneText(rec, atRow), { jobId });
      }
    } else if (outcome.ok === false && /^Canceled by /.test(job.lastError || "")) {
      // A cancel is the user's own act, not a crash: say so, and no stack trace.
      setJobStatus(`${what.toLowerCase()} canceled`, "failed");
      ui.progressLabel.textContent = "Canceled";
      const text = `${what} canceled (${job.lastError.replace(/^Canceled/, "canceled")}).`;
      const box = showAlert("info", text);
      box.dataset.code = "job_canceled";
      if (atRow) setRowNote(atRow, "info", text, { jobId });
    } else if (outcome.ok === false) {
      setJobStatus(`${what.toLowerCase()} failed`, "failed");
      if (job.fraction === 0) ui.progressLabel.textContent = "Failed before any progress";
      const text = `${what} failed${job.lastError ? `: ${job.lastError}` : "."}`;
      const box = showAlert("error", text);
      box.dataset.code = "job_failed";
      state.failureAlert = job.lastError ? null : box;
      if (atRow) setRowNote(atRow, "error", text, { jobId });
    } else {
      setJobStatus("unknown", "unknown");
      ui.progressLabel.textContent = "—";
      showAlert("info", "The server no longer knows this job; the list shows the current state.");
    }
    if (outcome.ok === false && !/^Canceled by /.test(job.lastError || "")) loadTrace(jobId);
    else settleTimes(jobId, info);
    updateActivityNote();
    // Stay busy until the list shows the job's result (or a job someone started meanwhile).
    state.settling = true;
    updateBusy();
    refreshList().finally(() => {
      state.settling = false;
      updateBusy();
    });
    document.dispatchEvent(
      new CustomEvent("ra:jobfinished", {
        detail: { jobId, ok: outcome.ok, trigger: outcome.trigger, via },
      }),
    );
    return true;
  }

  /** Show the job's times; the end time is recorded just after the trigger, so retry. */
  async function settleTimes(jobId, known) {
    let info = known;
    for (let attempt = 0; attempt <= TRACE_RETRIES; attempt += 1) {
      if (!info) {
        try {
          info = await api("GET", urls.jobstatus + encodeURIComponent(jobId));
        } catch {
          return; // the times are a nicety; the outcome is already shown
        }
      }
      fillTimes(jobId, info);
      if (state.job || ui.jobId.textContent !== jobId) return; // another job took the panel
      renderTimes(info);
      if (info.ended_at) return;
      info = null;
      await sleep(TRACE_RETRY_MS);
    }
  }

  async function loadTrace(jobId) {
    ui.tracePanel.hidden = false;
    ui.trace.textContent = "Loading the stack trace…";
    for (let attempt = 0; attempt < TRACE_RETRIES; attempt += 1) {
      let info;
      try {
        info = await api("GET", urls.jobinfo + encodeURIComponent(jobId));
      } catch (err) {
        ui.trace.textContent =
          err.status === 403
            ? "Only the run's owners can see the stack trace."
            : `Could not load the stack trace: ${err.message}`;
        return;
      }
      fillTimes(jobId, info);
      if (ui.jobId.textContent !== jobId) return; // another job took the panel
      renderTimes(info);
      if (info.exc_info) {
        ui.trace.textContent = info.exc_info;
        const last = info.exc_info.trim().split("\n").pop();
        if (state.failureAlert && last) {
          // "pkg.module.Error: message" → the same "… failed: message" the Error: line gives.
          const reason = last.replace(/^[\w.]+: /, "");
          const text = state.failureAlert.querySelector(".alert-text");
          text.textContent = text.textContent.replace(/\.$/, `: ${reason}`);
          state.failureAlert = null;
          const note = state.note;
          if (note && note.jobId === jobId && note.kind === "error") {
            setRowNote(note.name, "error", note.text.replace(/\.$/, `: ${reason}`), { jobId });
          }
        }
        ui.tracePanel.dataset.jobId = jobId;
        return;
      }
      // The trigger is published before RQ stores the traceback: give it a moment.
      if (!Object.hasOwn(FINAL_STATES, info.status) || attempt < 4) {
        await sleep(TRACE_RETRY_MS);
        continue;
      }
      break;
    }
    ui.trace.textContent = "No stack trace was recorded for this job.";
  }

  // ---------------------------------------------------------------- status lines

  const JOB_LINE = /^rq:(\S+) ([A-Z]+) +(.*)$/;
  const TRIGGER_REST = /^\S+ ([A-Z_]+)$/;
  const PROGRESS_REST = /^(\w+) (\d+)\/(\d+) files (\d+)\/(\d+) bytes$/;

  /** Parse a status line like runarchive.jobs.lines.parse_line. */
  function parseLine(text) {
    const match = JOB_LINE.exec(text);
    if (!match || !EVENT_NAMES.has(match[2])) return { text };
    const [, jobId, event, rest] = match;
    if (event === EVENTS.TRIGGER) {
      const trig = TRIGGER_REST.exec(rest);
      return trig ? { text, jobId, event, trigger: trig[1] } : { text };
    }
    if (event === EVENTS.PROGRESS) {
      const prog = PROGRESS_REST.exec(rest);
      if (!prog) return { text };
      const [, op, fd, ft, bd, bt] = prog;
      const progress = {
        op,
        files_done: Number(fd),
        files_total: Number(ft),
        bytes_done: Number(bd),
        bytes_total: Number(bt),
      };
      return { text, jobId, event, progress };
    }
    return { text, jobId, event, call: rest };
  }

  function lineClass(line) {
    if (line.event === EVENTS.TRIGGER) return "line line-trigger";
    if (line.event === EVENTS.PROGRESS) return "line line-progress";
    if (line.event === EVENTS.EXCEPTION || line.text.startsWith(LINE_PREFIX.ERROR)) {
      return "line line-error";
    }
    if (line.event) return "line line-event";
    return "line";
  }

  // ---------------------------------------------------------------- the activity log

  /** Return what the page knows of job ``jobId`` (made on first use). */
  function jobRecord(jobId, kind) {
    let rec = state.jobLog.get(jobId);
    if (!rec) {
      rec = { kind: null, archive: null, files: 0, bytes: 0, fileCount: 0 };
      state.jobLog.set(jobId, rec);
    }
    if (kind && !rec.kind) rec.kind = kind;
    return rec;
  }

  /** Learn a job's kind and archive from its call: ``restore_archive_rq(<runid>, <name>)``. */
  function learnCall(jobId, call) {
    const match = /^(\w+)\(([^,)]*)(?:, ([^)]+))?\)$/.exec(call || "");
    if (!match) return jobRecord(jobId);
    if (match[1].startsWith("fork")) {
      // fork_archive_rq(<runid>, <name>, <new runid>)
      const rec = jobRecord(jobId, KIND.FORK);
      const [archive, newRunid] = (match[3] || "").split(", ");
      if (archive && !rec.archive) rec.archive = archive;
      if (newRunid && !rec.newRunid) rec.newRunid = newRunid;
      return rec;
    }
    const kind = match[1].startsWith("restore")
      ? KIND.RESTORE
      : match[1].startsWith("prune")
        ? KIND.PRUNE
        : KIND.ARCHIVE;
    const rec = jobRecord(jobId, kind);
    if (match[3] && !rec.archive) rec.archive = match[3];
    return rec;
  }

  function restoreDoneText(rec, name) {
    const listed = state.archives.get(name);
    const count = listed && Number.isFinite(Number(listed.files)) ? listed.files : rec.fileCount;
    return count ? `Restore complete: ${count} files from ${name}.` : `Restore complete: ${name}.`;
  }

  /**
   * Turn one parsed status line into a sentence for people, or null (PROGRESS moves the bar;
   * COMPLETED and EXCEPTION add nothing the next lines do not say). ``stamp`` names the job
   * time that dates a replayed line: enqueued, started or ended.
   */
  function describe(line, jobId) {
    const text = line.text;
    const rec = jobId ? jobRecord(jobId) : null;
    if (line.event) {
      if (line.event === EVENTS.ENQUEUED || line.event === EVENTS.STARTED) {
        const known = learnCall(line.jobId, line.call);
        const queued = line.event === EVENTS.ENQUEUED;
        const what =
          known.kind === KIND.FORK
            ? `Fork of ${known.archive || "an archive"} into ${known.newRunid || "a new run"}`
            : known.kind === KIND.RESTORE
              ? `Restore${known.archive ? ` from ${known.archive}` : ""}`
              : known.kind === KIND.PRUNE
                ? "Prune"
                : "Archive";
        return {
          text: `${what} ${queued ? "queued" : "started"}`,
          stamp: queued ? "enqueued" : "started",
        };
      }
      if (line.event === EVENTS.TRIGGER && FAILURE_TRIGGERS.has(line.trigger)) {
        const what = ARCHIVE_TRIGGERS.has(line.trigger)
          ? "Archive"
          : FORK_TRIGGERS.has(line.trigger)
            ? "Fork"
            : PRUNE_TRIGGERS.has(line.trigger)
              ? "Prune"
              : "Restore";
        return { text: `${what} failed`, kind: "error", stamp: "ended" };
      }
      return null;
    }
    let match = /^(Adding|Restored) (.+)$/.exec(text);
    if (match) {
      return { text, coalesce: `${match[1]}:${jobId || ""}` }; // one line that keeps moving
    }
    match = /^Archive ready: (.+)$/.exec(text);
    if (match) {
      // the bytes read from the run (the table shows the zip's own, compressed, size)
      const size = rec && rec.bytes ? `, ${humanSize(rec.bytes)} of run data` : "";
      const files = rec && rec.files ? ` (${rec.files} files${size})` : "";
      return { text: `Archive ready: ${match[1]}${files}`, kind: "done", stamp: "ended" };
    }
    match = /^Restore complete: (.+)$/.exec(text);
    if (match) {
      const done = restoreDoneText(rec || { fileCount: 0 }, match[1]);
      return { text: done.replace(/\.$/, ""), kind: "done", stamp: "ended" };
    }
    match = /^Fork complete: (\S+) from (.+)$/.exec(text);
    if (match) return { text: `Fork complete: ${match[1]} from ${match[2]}`, kind: "done", stamp: "ended" };
    match = /^Cleared NoDb cache entries after restore \((\d+)\)$/.exec(text);
    if (match) return { text: `Cleared ${match[1]} cached NoDb entries` };
    if (text.startsWith(LINE_PREFIX.ERROR)) return { text, kind: "error", stamp: "ended" };
    if (text.startsWith(LINE_PREFIX.DELETED)) return { text, kind: "done", job: false };
    if (text.startsWith(LINE_PREFIX.DAMAGED)) return { text, kind: "error", job: false };
    return { text };
  }

  function appendActivity(line) {
    if (!ui.activity) return;
    const jobId = line.jobId || state.lineJob;
    const entry = describe(line, jobId);
    if (!entry) return;
    const replayed = Date.now() - state.wsOpenedAt < REPLAY_WINDOW_MS;
    const seen = replayed ? null : new Date();
    const last = ui.activity.lastElementChild;
    if (entry.coalesce && last && last.dataset.coalesce === entry.coalesce) {
      last.querySelector(".what").textContent = entry.text;
      if (seen) setEntryTime(last, seen);
      return;
    }
    const item = el("li", {
      className: `entry${entry.kind ? ` entry-${entry.kind}` : ""}`,
      dataset: {
        job: entry.job === false || !jobId ? undefined : jobId,
        stamp: entry.stamp,
        coalesce: entry.coalesce,
      },
    }, [el("span", { className: "when" }), el("span", { className: "what", text: entry.text })]);
    if (seen) setEntryTime(item, seen);
    const log = ui.activity;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    log.append(item);
    while (log.childElementCount > MAX_ACTIVITY) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (jobId && entry.job !== false) state.lastJobId = jobId;
    updateActivityNote();
  }

  function setEntryTime(item, date) {
    const iso = date.toISOString();
    item.dataset.dated = "true";
    item.querySelector(".when").replaceChildren(
      el("time", { datetime: iso, title: localTime(iso), text: clockTime(date) }),
    );
  }

  /** Date the job's replayed key lines by the times the server recorded for the job. */
  function fillTimes(jobId, info) {
    if (!ui.activity || !info) return;
    if (info.ended_at) state.endedShown.set(jobId, info.ended_at);
    for (const item of ui.activity.querySelectorAll("li[data-stamp]")) {
      if (item.dataset.job !== jobId || item.dataset.dated) continue;
      const iso = info[`${item.dataset.stamp}_at`];
      const date = iso ? new Date(iso) : null;
      if (date && !Number.isNaN(date.getTime())) setEntryTime(item, date);
    }
    updateActivityNote();
  }

  /** Say whose lines the log shows: the running job's, or the last job's and when it ended. */
  function updateActivityNote() {
    const note = ui.activityNote;
    if (!note) return;
    const jobId = state.lastJobId;
    const running = state.job && (!jobId || state.job.id === jobId);
    if (running || !jobId || !ui.activity.childElementCount) {
      note.hidden = true;
      note.textContent = "";
      return;
    }
    const ended = state.endedShown.get(jobId);
    const date = ended ? new Date(ended) : null;
    const when = date && !Number.isNaN(date.getTime()) ? ` (ended ${clockTime(date, false)})` : "";
    note.textContent = `From the last job${when}`;
    note.hidden = false;
    if (!ended) askEnded(jobId);
  }

  const askedEnded = new Set();

  /** Fetch once when a job the log shows, not watched here, ended. */
  async function askEnded(jobId) {
    if (askedEnded.has(jobId)) return;
    askedEnded.add(jobId);
    try {
      const info = await api("GET", urls.jobstatus + encodeURIComponent(jobId));
      if (info.ended_at) fillTimes(jobId, info);
      else askedEnded.delete(jobId); // not ended yet: ask again when the log next changes
    } catch {
      // gone or unreachable: the label stays without a time
    }
  }

  // ---------------------------------------------------------------- raw status lines

  function appendLog(line) {
    const log = ui.log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    log.append(el("div", { className: lineClass(line), text: line.text }));
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight; // follow unless the user scrolled up
  }

  function handleLine(text) {
    const line = parseLine(text);
    if (line.jobId) state.lineJob = line.jobId;
    if (line.event === EVENTS.PROGRESS && line.jobId) {
      const [, total] = fileCounts(line.jobId, line.progress);
      const rec = jobRecord(line.jobId);
      rec.files = total;
      rec.bytes = line.progress.bytes_total;
    }
    appendLog(line);
    appendActivity(line);
    const job = state.job;
    const current = job && line.jobId === job.id;
    if (!line.event) {
      if (job && text.startsWith(LINE_PREFIX.ERROR)) {
        job.lastError = text.slice(LINE_PREFIX.ERROR.length);
      }
      if (text.startsWith(LINE_PREFIX.DELETED) || text.startsWith(LINE_PREFIX.DAMAGED)) {
        scheduleListRefresh();
      }
      return;
    }
    if (line.event === EVENTS.PROGRESS) {
      if (current) renderProgress(line.progress);
    } else if (line.event === EVENTS.TRIGGER) {
      const outcome = outcomeOfTrigger(line.trigger);
      if (!outcome) return;
      state.triggers.set(line.jobId, outcome);
      if (current) finishJob(line.jobId, outcome, "websocket");
      else if (!state.finished.has(line.jobId)) scheduleListRefresh();
    } else if (line.event === EVENTS.STARTED) {
      if (current) setJobStatus("started");
      else if (!state.finished.has(line.jobId) && !state.triggers.has(line.jobId)) {
        scheduleListRefresh(); // someone else started a job on this run: watch it too
      }
    } else if (line.event === EVENTS.ENQUEUED && !current) {
      if (!state.finished.has(line.jobId) && !state.triggers.has(line.jobId)) {
        scheduleListRefresh();
      }
    }
  }

  // ---------------------------------------------------------------- websocket

  function setConnection(mode, text) {
    if (root.dataset.ws === mode && ui.connText.textContent === text) return; // no re-announce
    root.dataset.ws = mode;
    ui.conn.dataset.state = mode;
    ui.connText.textContent = text;
  }

  /** Without a live socket: Offline when the server does not answer, else Polling. */
  function showFallback() {
    if (root.dataset.ws === "live" && state.ws) return;
    if (state.offline) setConnection("offline", "Offline — retrying");
    else setConnection("polling", "Polling (live updates reconnecting)");
  }

  function setOffline(offline) {
    if (state.offline === offline) return;
    state.offline = offline;
    if (root.dataset.ws !== "live" || !state.ws) showFallback();
  }

  /** Ask the health check whether the server is there at all (the socket cannot tell). */
  async function probeServer() {
    if (!urls.health) return;
    try {
      const response = await fetch(urls.health, { cache: "no-store", credentials: "omit" });
      setOffline(OFFLINE_STATUSES.has(response.status));
    } catch {
      setOffline(true);
    }
  }

  /** The socket URL from a path or an absolute http(s)/ws(s) URL, secure when the page is. */
  function wsUrl() {
    const url = new URL(urls.ws, location.href);
    const secure = location.protocol === "https:" || url.protocol === "https:";
    url.protocol = secure || url.protocol === "wss:" ? "wss:" : "ws:";
    url.searchParams.set("since", String(state.wsSeq)); // 0 at first: the retained lines
    return url.href;
  }

  function armIdle(ws) {
    clearTimeout(state.wsIdleTimer);
    state.wsIdleTimer = setTimeout(() => ws.close(), WS_IDLE_MS);
  }

  function connectSocket() {
    clearTimeout(state.wsTimer);
    if (!urls.ws || !("WebSocket" in window)) {
      setConnection("polling", "Polling");
      return;
    }
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    let openedAt = 0;
    // Offline stays Offline — retrying until the server answers: no flicker per attempt.
    if (root.dataset.ws !== "live" && !state.offline) setConnection("connecting", "Connecting…");
    ws.addEventListener("open", () => {
      openedAt = Date.now();
      state.wsOpenedAt = openedAt;
      if (state.wsSeq === 0) {
        // First connect: the server sends the retained lines; a reconnect, only the missed.
        ui.log.replaceChildren();
        if (ui.activity) ui.activity.replaceChildren();
        state.lineJob = null;
        state.lastJobId = null;
        updateActivityNote();
      }
      setOffline(false);
      setConnection("live", "Live");
      armIdle(ws);
    });
    ws.addEventListener("message", (event) => {
      armIdle(ws);
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === FRAME.STATUS) {
        // The server sends each line once; a lower seq means its numbering restarted.
        if (typeof frame.seq === "number") state.wsSeq = frame.seq;
        handleLine(String(frame.data));
      } else if (frame.type === FRAME.PING) ws.send(JSON.stringify({ type: FRAME.PONG }));
      else if (frame.type === FRAME.HANGUP) {
        state.wsHungUp = true; // access ended or the run is gone: do not come back
        ws.close();
      }
    });
    ws.addEventListener("close", () => {
      if (state.ws !== ws) return;
      state.ws = null;
      clearTimeout(state.wsIdleTimer);
      if (state.wsHungUp) {
        setConnection("polling", "Live updates ended by the server");
        return;
      }
      if (openedAt && Date.now() - openedAt >= WS_STABLE_MS) state.wsAttempts = 0;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const ceiling = Math.min(WS_BACKOFF_MAX_MS, WS_BACKOFF_BASE_MS * 2 ** state.wsAttempts);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    state.wsAttempts += 1;
    showFallback();
    probeServer();
    state.wsTimer = setTimeout(connectSocket, delay);
  }

  // ---------------------------------------------------------------- the Cancel button
  //
  // Shown while the watched job is queued or running, to users who may write the run (the
  // template renders it for them only). A click asks POST /rq/api/canceljob/<id>; the job then
  // ends as every job does — its TRIGGER line or polling calls finishJob — and the failure
  // alert carries its "Error:" line, "Canceled by <user>". A 409 means it can no longer be
  // canceled (it ended, or a restore is swapping in and will finish): said as information,
  // and the job is left to finish. The button hides when no job runs.

  const cancelButton = $("ra-cancel-btn");
  const cancelState = { pending: false, asked: null }; // asked: the job id a cancel was sent for

  function updateCancel() {
    if (!cancelButton) return;
    const job = state.job && !state.job.done ? state.job : null;
    cancelButton.hidden = !job;
    const asked = Boolean(job) && cancelState.asked === job.id;
    cancelButton.disabled = !job || cancelState.pending || asked;
    cancelButton.textContent = cancelState.pending || asked ? "Canceling…" : "Cancel job";
  }

  async function cancelJob() {
    const job = state.job;
    if (!job || job.done || cancelState.pending) return;
    cancelState.pending = true;
    updateCancel();
    try {
      const data = await api("POST", urls.canceljob + encodeURIComponent(job.id));
      if (state.job === job && !job.done) {
        cancelState.asked = job.id;
        ui.progressLabel.textContent =
          data && data.status === "canceled" ? "Canceled" : "Canceling…";
      }
    } catch (err) {
      if (err.status === 409) showAlert("info", err.message, err.code);
      else showApiError(err, "Could not cancel the job");
    } finally {
      cancelState.pending = false;
      updateCancel();
    }
  }

  if (cancelButton) cancelButton.addEventListener("click", cancelJob);

  // ---------------------------------------------------------------- start

  if (ui.form) {
    ui.comment.addEventListener("input", updateCounter);
    ui.form.addEventListener("submit", startArchive);
    updateCounter();
  }
  ui.rows.addEventListener("click", onRowClick);
  ui.refresh.addEventListener("click", () => refreshList());
  if (ui.undoBtn) ui.undoBtn.addEventListener("click", () => undoRestore());
  if (ui.fork) {
    ui.forkForm.addEventListener("submit", submitFork);
    ui.forkCancel.addEventListener("click", closeFork);
    // Escape or Cancel: the keyboard is back on the row's Fork… button.
    ui.fork.addEventListener("close", () => {
      const opener = state.forkOpener;
      state.forkOf = null;
      state.forkOpener = null;
      const again = opener && opener.isConnected
        ? opener
        : [...ui.rows.querySelectorAll('[data-action="fork"]')].find(
          (node) => opener && node.dataset.name === opener.dataset.name,
        );
      if (again && !(state.note && document.activeElement && document.activeElement.closest(".row-note"))) {
        again.focus();
      }
    });
  }
  window.addEventListener("pagehide", () => {
    clearTimeout(state.wsTimer);
    const ws = state.ws;
    state.ws = null; // a deliberate close: no reconnect
    if (ws) ws.close();
  });
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return; // back from the back/forward cache: catch up
    connectSocket();
    refreshList();
  });
  connectSocket();
  refreshList();
  // What static/js/inside.js shares with this page (one copy of each rule).
  window.raDashboard = Object.freeze({
    api, el, humanSize, localTime, timeNode, sameOriginUrl, showAlert, showApiError, canWrite,
    restore: restoreArchive, // (name, paths, beforeStart) -> Promise<started>
    watchJob: (jobId, kind) => {
      jobRecord(jobId, kind);
      watchJob(jobId, kind);
    },
    refreshList,
    isBusy: () => root.dataset.busy === "true",
  });
})();
