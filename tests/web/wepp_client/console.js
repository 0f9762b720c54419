/*
 * A WEPPcloud-like archive console and StatusStream client (test material), written from
 * WEPPcloud's documented behaviour only:
 *   - fetch is wrapped to send X-CSRFToken from <meta name="csrf-token">;
 *   - URLs come from the data- attributes of [data-controller="archive-dashboard"];
 *   - a POST succeeded only when its JSON body has Success: true; otherwise body.Error is
 *     shown, whatever the HTTP status;
 *   - list rows show name, comment, size, modified and download_url; in_progress/job_id say
 *     whether a job runs;
 *   - the StatusStream opens ws(s)://<host>/weppcloud-microservices/status/<runid>:archive
 *     (asking for no replay), shows {"type":"status","data":line} frames, answers ping with
 *     pong, fires trigger callbacks for "rq:<id> TRIGGER   <controller> <EVENT>" lines,
 *     reconnects after a close after 1.5, 3, 6, 12, then 15 s, and stops for good on hangup.
 * Everything it sees is recorded in window.__wepp for the test to read.
 */
(() => {
  "use strict";

  const record = (window.__wepp = {
    opens: 0, closes: [], hangups: 0, statuses: [], triggers: [], reconnectDelays: [],
    posts: [], messages: [], lists: 0, sockets: [],
  });

  // ------------------------------------------------------------- fetch with the CSRF token
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const plainFetch = window.fetch.bind(window);
  window.fetch = (input, init = {}) => {
    const method = (init.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      init.headers = { ...(init.headers || {}), "X-CSRFToken": csrf };
    }
    return plainFetch(input, init);
  };

  // ------------------------------------------------------------- StatusStream
  const BACKOFF_MS = [1500, 3000, 6000, 12000, 15000];
  const TRIGGER = /^rq:(\S+) TRIGGER\s+(\S+) (\S+)$/;

  class StatusStream {
    constructor(path, onLine, onTrigger) {
      this.path = path;
      this.onLine = onLine;
      this.onTrigger = onTrigger;
      this.attempt = 0;
      this.stopped = false;
      this.connect();
    }

    url() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      return `${scheme}//${location.host}${this.path}`;
    }

    connect() {
      const ws = new WebSocket(this.url());
      record.sockets.push(ws.url);
      this.ws = ws;
      ws.addEventListener("open", () => {
        record.opens += 1;
        this.attempt = 0;
      });
      ws.addEventListener("message", (event) => {
        const frame = JSON.parse(event.data);
        if (frame.type === "ping") ws.send(JSON.stringify({ type: "pong" }));
        else if (frame.type === "hangup") {
          record.hangups += 1;
          this.stopped = true;
          ws.close();
        } else if (frame.type === "status") {
          const line = String(frame.data);
          record.statuses.push(line);
          this.onLine(line);
          const match = TRIGGER.exec(line);
          if (match) {
            record.triggers.push({ jobId: match[1], controller: match[2], event: match[3] });
            this.onTrigger(match[2], match[3], match[1]);
          }
        }
      });
      ws.addEventListener("close", (event) => {
        record.closes.push(event.code);
        if (this.stopped) return;
        const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
        this.attempt += 1;
        record.reconnectDelays.push(delay);
        setTimeout(() => this.connect(), delay);
      });
    }
  }

  // ------------------------------------------------------------- the console
  const root = document.querySelector('[data-controller="archive-dashboard"]');
  const urls = {
    archives: root.dataset.archivesUrl,
    archive: root.dataset.archiveApiUrl,
    restore: root.dataset.restoreApiUrl,
    remove: root.dataset.deleteApiUrl,
  };
  const $ = (id) => document.getElementById(id);

  function say(text) {
    record.messages.push(text);
    $("message").textContent = text;
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    record.posts.push({ url, status: response.status, answer });
    if (answer.Success !== true) {
      say(answer.Error || "Request failed");
      return null;
    }
    return answer;
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function button(label, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", action);
    const td = document.createElement("td");
    td.append(b);
    return td;
  }

  async function loadList() {
    const response = await fetch(urls.archives, { cache: "no-store" });
    const body = await response.json();
    record.lists += 1;
    const rows = (body.archives || []).map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.name = a.name;
      const link = document.createElement("a");
      link.href = a.download_url;
      link.textContent = a.name;
      const name = document.createElement("td");
      name.append(link);
      tr.append(
        name,
        cell(a.comment),
        cell(String(a.size)),
        cell(a.modified),
        button("Restore", async () => {
          if (await post(urls.restore, { archive_name: a.name })) say(`Restoring ${a.name}`);
        }),
        button("Delete", async () => {
          if (await post(urls.remove, { archive_name: a.name })) {
            say(`Deleted ${a.name}`);
            loadList();
          }
        }),
      );
      return tr;
    });
    $("rows").replaceChildren(...rows);
    root.dataset.inProgress = String(Boolean(body.in_progress));
    root.dataset.jobId = body.job_id || "";
  }

  $("archive-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await post(urls.archive, { comment: $("comment").value });
    if (answer) say(`Archiving (job ${answer.job_id})`);
  });

  const done = { ARCHIVE_COMPLETE: "Archive complete", RESTORE_COMPLETE: "Restore complete",
                 ARCHIVE_FAILED: "Archive failed", RESTORE_FAILED: "Restore failed" };
  window.__weppStream = new StatusStream(
    root.dataset.statusUrl,
    (line) => {
      $("log").textContent += `${line}\n`;
    },
    (controller, event) => {
      if (controller !== "archive") return;
      say(done[event] || event);
      loadList();
    },
  );
  loadList();
})();
