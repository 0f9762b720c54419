/*
 * Inside one archive (issue 14): a row's "Browse" opens a <dialog> with the archive's folder
 * tree and a compare, with the current run or with another archive of the run.
 *
 * The routes (docs/api.md, "Inside an archive") reach the page as templates in #ra-config
 * (urls.inside: {name} and {path} filled in here, each path component percent-encoded). The
 * helpers shared with the rest of the dashboard come from archive.js (window.raDashboard).
 *
 *   - The tree is lazy: a folder's children are fetched (`entries?prefix=<folder>/`) when it is
 *     first expanded, one page at a time ("Load more" while the answer has `next`). Files get a
 *     download link to `file/<path>`; links and special entries are shown, never linked.
 *   - Compare asks `diff` (against the run, or `?against=<other>`): the summary's counts per
 *     bucket, then the changed paths grouped by folder (more pages on "Load more"). A file that
 *     changed, appeared or went gets "Show diff" (`diff/file/<path>`): its unified diff, each
 *     line keeping its +/-/space mark and a class; `not_text` says there is no text diff.
 *   - Entry names are hostile input: everything from the server is put in the page as text.
 *   - Search by path: `entries?search=<text>` lists the archive's paths containing the text
 *     (paged, "Load more"), shown with their whole path in place of the tree, each row as in
 *     the tree (download, box); "Back to the tree" returns to it.
 *   - Choosing paths (writers only): each file, link and folder row has a box (a folder's means
 *     `dir/`: the whole folder); a chosen folder's content shows checked and locked. The bar
 *     under the tree counts the choice ("3 items, 12 files, 4.1 MiB") and "Restore selected…"
 *     opens the dashboard's restore confirm (archive.js) for exactly those `paths`.
 *   - The dialog is modal: focus moves in, Escape (or Close) closes it, and focus goes back to
 *     the Browse button of the archive's row (found again by name: the list may have been
 *     re-rendered meanwhile).
 */
(() => {
  "use strict";

  const shared = window.raDashboard;
  const configNode = document.getElementById("ra-config");
  const dialog = document.getElementById("ra-inside");
  const rows = document.getElementById("ra-archive-rows");
  if (!shared || !configNode || !dialog || !rows) return;
  const templates = (JSON.parse(configNode.textContent).urls || {}).inside;
  if (!templates) return;
  const { api, el, humanSize, timeNode } = shared;
  const canChoose = Boolean(shared.canWrite && shared.restore);

  const PAGE = 200; // entries per listing page
  const DIFF_PAGE = 500; // changed paths per diff page
  const TOP = "(top folder)";
  // The diff's buckets, in the order the API pages them, with what people read.
  const BUCKETS = Object.freeze([
    ["added", "Added"],
    ["removed", "Removed"],
    ["modified", "Modified"],
    ["type_changed", "Type changed"],
  ]);
  const RUN = ""; // the compare target "current run" (no ?against=)

  const ui = {
    name: document.getElementById("ra-inside-name"),
    title: document.getElementById("ra-inside-title"),
    close: document.getElementById("ra-inside-close"),
    tree: document.getElementById("ra-inside-tree"),
    hidden: document.getElementById("ra-inside-hidden"),
    form: document.getElementById("ra-compare-form"),
    against: document.getElementById("ra-compare-with"),
    compare: document.getElementById("ra-compare"),
    alerts: document.getElementById("ra-inside-alerts"),
    search: document.getElementById("ra-inside-search"),
    searchText: document.getElementById("ra-inside-search-text"),
    searchClear: document.getElementById("ra-inside-search-clear"),
    results: document.getElementById("ra-inside-results"),
    resultsNote: document.getElementById("ra-inside-results-note"),
    selection: document.getElementById("ra-selection"),
    selectionCount: document.getElementById("ra-selection-count"),
    selectionClear: document.getElementById("ra-selection-clear"),
    restoreSelected: document.getElementById("ra-restore-selected"),
  };
  // The archive shown; seq (per opening) and compareSeq (per compare) drop stale answers.
  // chosen: the paths to restore, as the API spells them ("dir/" for a folder) -> their totals.
  const view = { name: null, seq: 0, compareSeq: 0, chosen: new Map(), search: null };

  // ---------------------------------------------------------------- URLs

  function encodePath(path) {
    return String(path).split("/").map(encodeURIComponent).join("/");
  }

  function fill(template, name, path, query) {
    let url = template.replace("{name}", () => encodeURIComponent(name));
    if (path !== undefined) url = url.replace("{path}", () => encodePath(path));
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") params.set(key, value);
    }
    const text = params.toString();
    return text ? `${url}?${text}` : url;
  }

  /** Say what failed inside the dialog (the page's alerts are behind the modal dialog). */
  function showError(err, context) {
    const close = el("button", {
      type: "button",
      className: "alert-close",
      "aria-label": "Dismiss",
      text: "×",
    });
    const text = el("span", { className: "alert-text", text: `${context}: ${err.message}` });
    const box = el(
      "div",
      { className: "alert alert-error", role: "alert", dataset: { code: err.code || "" } },
      [text, close],
    );
    close.addEventListener("click", () => box.remove());
    ui.alerts.replaceChildren(box);
  }

  function leaf(path) {
    return String(path).split("/").pop();
  }

  function folderOf(path) {
    const text = String(path);
    const cut = text.lastIndexOf("/");
    return cut < 0 ? "" : text.slice(0, cut);
  }

  function plural(n, word, many = `${word}s`) {
    return `${n} ${n === 1 ? word : many}`;
  }

  // ---------------------------------------------------------------- the tree

  function entrySize(entry) {
    if (entry.type === "dir") {
      return `${plural(Number(entry.files) || 0, "file")}, ${humanSize(entry.bytes)}`;
    }
    if (entry.type === "file") return humanSize(entry.size);
    return "—";
  }

  function entryRow(entry, { full = false } = {}) {
    const path = String(entry.path);
    const name = full ? path : leaf(path); // a search result shows where it is
    const item = el("li", { className: "entry", dataset: { path, type: String(entry.type) } });
    let nameNode;
    let action = el("span", { className: "entry-action" });
    if (entry.type === "dir") {
      nameNode = el("button", {
        type: "button",
        className: "entry-toggle entry-name",
        "aria-expanded": "false",
        text: name,
      });
      nameNode.addEventListener("click", () => toggleFolder(item, nameNode, path));
    } else {
      nameNode = el("span", { className: "entry-name", text: name });
      if (entry.type === "symlink") {
        nameNode.append(" → ", el("span", { text: String(entry.target ?? "") }), " ");
        nameNode.append(el("span", { className: "badge badge-muted", text: "link" }));
      } else if (entry.type === "special") {
        nameNode.append(" ", el("span", { className: "badge badge-muted", text: "special" }));
      } else if (entry.type === "file") {
        action = el("a", {
          className: "entry-action button button-small",
          href: fill(templates.file, view.name, path),
          download: name,
          "aria-label": `Download ${path}`,
          text: "Download",
        });
      }
    }
    const size = el("span", { className: "entry-size", text: entrySize(entry) });
    if (entry.type === "file") size.title = `${entry.size} bytes`;
    const mtime = el("span", { className: "entry-mtime" }, [timeNode(entry.mtime)]);
    const row = el("div", { className: "entry-row" }, [nameNode, size, mtime, action]);
    if (canChoose && entry.type !== "special") {
      row.classList.add("choosable");
      row.prepend(pickBox(entry));
    }
    item.append(row);
    return item;
  }

  // ---------------------------------------------------------------- choosing paths to restore

  function chosenKey(entry) {
    return entry.type === "dir" ? `${entry.path}/` : String(entry.path);
  }

  /** Tell whether ``path`` lies beneath a folder already chosen (it is restored with it). */
  function coveredBy(path) {
    for (const key of view.chosen.keys()) {
      if (key.endsWith("/") && String(path).startsWith(key)) return key;
    }
    return null;
  }

  function pickBox(entry) {
    const key = chosenKey(entry);
    const box = el("input", {
      type: "checkbox",
      className: "entry-check",
      "aria-label": entry.type === "dir" ? `Choose folder ${key}` : `Choose ${key}`,
      dataset: { key },
    });
    const folder = coveredBy(entry.path);
    box.checked = view.chosen.has(key) || Boolean(folder);
    box.disabled = Boolean(folder);
    if (folder) box.title = `Restored with ${folder}`;
    box.addEventListener("change", () => choose(entry, box.checked));
    return el("label", { className: "entry-pick" }, [box]);
  }

  function choose(entry, on) {
    const key = chosenKey(entry);
    if (on) {
      const files = entry.type === "dir" ? Number(entry.files) || 0 : entry.type === "file" ? 1 : 0;
      const bytes = entry.type === "dir" ? Number(entry.bytes) || 0 : Number(entry.size) || 0;
      view.chosen.set(key, { files, bytes });
      if (entry.type === "dir") {
        for (const other of [...view.chosen.keys()]) {
          if (other !== key && other.startsWith(key)) view.chosen.delete(other); // in it now
        }
      }
    } else {
      view.chosen.delete(key);
    }
    if (entry.type === "dir") syncBoxes();
    showSelection();
  }

  /** Every box shown says whether its path is chosen, alone or with a chosen folder. */
  function syncBoxes() {
    for (const box of dialog.querySelectorAll("input.entry-check")) {
      const key = box.dataset.key;
      const folder = coveredBy(key.endsWith("/") ? key.slice(0, -1) : key);
      box.checked = view.chosen.has(key) || Boolean(folder);
      box.disabled = Boolean(folder);
      box.title = folder ? `Restored with ${folder}` : "";
    }
  }

  function showSelection() {
    if (!ui.selection) return;
    let files = 0;
    let bytes = 0;
    for (const item of view.chosen.values()) {
      files += item.files;
      bytes += item.bytes;
    }
    const n = view.chosen.size;
    ui.selectionCount.textContent = n
      ? `${plural(n, "item")}, ${plural(files, "file")}, ${humanSize(bytes)}`
      : "Nothing chosen";
    ui.selectionCount.dataset.items = String(n);
    ui.restoreSelected.disabled = n === 0;
    ui.selectionClear.disabled = n === 0;
  }

  async function restoreSelected() {
    const paths = [...view.chosen.keys()].sort();
    if (!paths.length) return;
    await shared.restore(view.name, paths, () => dialog.close());
  }

  /** Fetch a page of folder ``prefix``'s children into ``list`` (then "Load more" if more). */
  async function loadPage(list, prefix, cursor) {
    const seq = view.seq;
    const query = { prefix: prefix ? `${prefix}/` : "", cursor, limit: PAGE };
    const data = await api("GET", fill(templates.entries, view.name, undefined, query));
    if (seq !== view.seq) return;
    if (!prefix && data.hidden) {
      ui.hidden.hidden = false;
      ui.hidden.textContent =
        `${plural(Number(data.hidden), "entry", "entries")} of this archive cannot be shown ` +
        "(names a restore would refuse).";
    }
    const entries = Array.isArray(data.entries) ? data.entries : [];
    list.append(...entries.map(entryRow));
    if (!entries.length && !cursor) {
      list.append(el("li", { className: "hint entry-empty", text: "Empty folder" }));
    }
    if (data.next) {
      list.append(loadMore(() => loadPage(list, prefix, data.next), "Could not list the archive"));
    }
  }

  /** A "Load more" button, as every paged list and the comparison show it. */
  function moreButton() {
    return el("button", {
      type: "button",
      className: "button button-small button-quiet load-more",
      text: "Load more",
    });
  }

  /** The "Load more" row of a paged list: runs ``load`` (the next page), then goes away. */
  function loadMore(load, failure) {
    const more = moreButton();
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        await load();
        more.parentElement.remove();
      } catch (err) {
        more.disabled = false;
        showError(err, failure);
      }
    });
    return el("li", { className: "entry-more" }, [more]);
  }

  // ---------------------------------------------------------------- search by path

  /** Fetch a page of the paths matching ``text`` into the results (then "Load more"). */
  async function loadResults(text, cursor) {
    const seq = view.seq;
    const query = { search: text, cursor, limit: PAGE };
    const data = await api("GET", fill(templates.entries, view.name, undefined, query));
    if (seq !== view.seq || text !== view.search) return;
    const entries = Array.isArray(data.entries) ? data.entries : [];
    ui.results.append(...entries.map((entry) => entryRow(entry, { full: true })));
    const total = Number(data.total) || 0;
    ui.resultsNote.textContent = total
      ? `${plural(total, "path")} contain “${text}”.`
      : `No path contains “${text}”.`;
    ui.resultsNote.hidden = false;
    if (data.next) {
      ui.results.append(loadMore(() => loadResults(text, data.next), "Could not search the archive"));
    }
  }

  async function search(event) {
    event.preventDefault();
    const text = ui.searchText.value.trim();
    if (!text) {
      showTree();
      return;
    }
    view.search = text;
    ui.results.replaceChildren();
    ui.results.hidden = false;
    ui.tree.hidden = true;
    ui.searchClear.hidden = false;
    ui.results.setAttribute("aria-busy", "true");
    try {
      await loadResults(text, null);
    } catch (err) {
      showError(err, "Could not search the archive");
    } finally {
      ui.results.removeAttribute("aria-busy");
    }
  }

  function showTree() {
    view.search = null;
    ui.results.replaceChildren();
    ui.results.hidden = true;
    ui.resultsNote.hidden = true;
    ui.tree.hidden = false;
    ui.searchClear.hidden = true;
    syncBoxes(); // a choice made among the results shows in the tree too
  }

  async function toggleFolder(item, button, path) {
    let list = item.querySelector(":scope > ul");
    if (button.getAttribute("aria-expanded") === "true") {
      button.setAttribute("aria-expanded", "false");
      if (list) list.hidden = true;
      return;
    }
    button.setAttribute("aria-expanded", "true");
    if (list) {
      list.hidden = false;
      return;
    }
    list = el("ul", { "aria-label": path });
    item.append(list);
    item.setAttribute("aria-busy", "true");
    try {
      await loadPage(list, path, null);
    } catch (err) {
      list.remove();
      button.setAttribute("aria-expanded", "false");
      showError(err, "Could not list the archive");
    } finally {
      item.removeAttribute("aria-busy");
    }
  }

  // ---------------------------------------------------------------- compare

  function targetLabel(against) {
    return against === RUN ? "the current run" : against;
  }

  function fillTargets() {
    // The archives that can be browsed (an unreadable one has no Browse), newest first.
    const names = [...rows.querySelectorAll('button[data-inside="browse"]')]
      .map((button) => button.dataset.name)
      .filter((name) => name !== view.name);
    ui.against.replaceChildren(
      el("option", { value: RUN, text: "Current run" }),
      ...names.map((name) => el("option", { value: name, text: name })),
    );
  }

  function summaryNode(data) {
    const summary = data.summary || {};
    const cells = BUCKETS.map(([key, label]) => {
      const bucket = summary[key] || {};
      const n = Number(bucket.entries) || 0;
      return el("div", { dataset: { bucket: key } }, [
        el("dt", { text: label }),
        el("dd", { text: `${n} (${humanSize(bucket.bytes || 0)})` }),
      ]);
    });
    cells.push(
      el("div", { dataset: { bucket: "unchanged" } }, [
        el("dt", { text: "Unchanged" }),
        el("dd", { text: String(Number(data.unchanged) || 0) }),
      ]),
    );
    return el("dl", { className: "compare-summary", "aria-label": "Changes per kind" }, cells);
  }

  function diffLines(text) {
    const lines = String(text).split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    return lines.map((line) => {
      let kind = "diff-ctx";
      if (line.startsWith("+++") || line.startsWith("---")) kind = "diff-file";
      else if (line.startsWith("@@")) kind = "diff-hunk";
      else if (line.startsWith("+")) kind = "diff-add";
      else if (line.startsWith("-")) kind = "diff-del";
      return el("span", { className: `diff-line ${kind}`, text: line });
    });
  }

  function note(text) {
    return el("p", { className: "hint diff-note", text });
  }

  function failure(text, tag) {
    return el(tag, { className: "alert alert-error", role: "alert", text });
  }

  async function showDiff(row, button, path, against) {
    const open = row.querySelector(".diff-view, .diff-note");
    if (open) {
      open.remove();
      button.textContent = "Show diff";
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.disabled = true;
    const seq = view.seq;
    try {
      const url = fill(templates.diff_file, view.name, path, { against });
      let node;
      try {
        const data = await api("GET", url);
        if (data.diff) {
          const label = `Diff of ${path}`;
          node = el("pre", { className: "diff-view", tabindex: "0", "aria-label": label });
          node.append(...diffLines(data.diff));
          if (data.note) row.append(note(String(data.note)));
        } else {
          node = note(String(data.note || "No differences."));
        }
      } catch (err) {
        if (err.code !== "not_text") throw err;
        node = note("Binary file — no text diff");
      }
      if (seq !== view.seq) return;
      row.append(node);
      button.textContent = "Hide diff";
      button.setAttribute("aria-expanded", "true");
    } catch (err) {
      showError(err, "Could not show the diff");
    } finally {
      button.disabled = false;
    }
  }

  function changeRow(change, bucket, against) {
    const path = String(change.path);
    const label = BUCKETS.find(([key]) => key === bucket)[1];
    const sizes =
      bucket === "added"
        ? humanSize(change.size_b)
        : bucket === "removed"
          ? humanSize(change.size_a)
          : `${humanSize(change.size_a)} → ${humanSize(change.size_b)}`;
    const row = el("li", { className: "change-row", dataset: { path, bucket } }, [
      el("span", { className: `badge change-${bucket}`, text: label }),
      el("span", { className: "entry-name", text: leaf(path) }),
      el("span", { className: "entry-size", text: sizes }),
    ]);
    if (bucket === "type_changed") {
      row.append(el("span", { className: "hint", text: `${change.type_a} → ${change.type}` }));
    } else if (bucket === "modified" && change.reason) {
      row.append(el("span", { className: "hint", text: `(${change.reason})` }));
    }
    if (change.type === "file" && bucket !== "type_changed") {
      const button = el("button", {
        type: "button",
        className: "button button-small",
        "aria-expanded": "false",
        "aria-label": `Show diff of ${path}`,
        text: "Show diff",
      });
      button.addEventListener("click", () => showDiff(row, button, path, against));
      row.append(button);
    }
    return row;
  }

  /** Put the rows of one diff page in their folder groups (made on first use, by folder). */
  function addChanges(groups, data, against) {
    for (const [bucket] of BUCKETS) {
      for (const change of Array.isArray(data[bucket]) ? data[bucket] : []) {
        const folder = folderOf(change.path);
        let group = groups.get(folder);
        if (!group) {
          group = el("ul", { className: "compare-list" });
          const section = el("section", { className: "compare-group", dataset: { folder } }, [
            el("h4", { text: folder || TOP }),
            group,
          ]);
          groups.set(folder, group);
          groups.box.append(section);
        }
        group.append(changeRow(change, bucket, against));
      }
    }
  }

  async function compare(event) {
    event.preventDefault();
    const against = ui.against.value;
    const opened = view.seq;
    const seq = ++view.compareSeq;
    const stale = () => seq !== view.compareSeq || opened !== view.seq;
    const button = ui.form.querySelector("button[type=submit]");
    button.disabled = true;
    ui.compare.replaceChildren(el("p", { className: "hint", text: "Comparing…" }));
    try {
      const url = (cursor) =>
        fill(templates.diff, view.name, undefined, { against, cursor, limit: DIFF_PAGE });
      const data = await api("GET", url(null));
      if (stale()) return;
      const heading = el("p", {
        className: "compare-heading",
        text: `Changes from ${view.name} to ${targetLabel(against)}`,
      });
      const box = el("div", { className: "compare-groups" });
      const groups = new Map();
      groups.box = box;
      addChanges(groups, data, against);
      const nodes = [heading, summaryNode(data), box];
      if (!Number(data.total)) nodes.push(el("p", { className: "hint", text: "No changes." }));
      let next = data.next;
      if (next) {
        const more = moreButton();
        more.addEventListener("click", async () => {
          more.disabled = true;
          try {
            const page = await api("GET", url(next));
            if (stale()) return;
            addChanges(groups, page, against);
            next = page.next;
            if (!next) more.remove(); // (.button's display would outdo a hidden attribute)
          } catch (err) {
            showError(err, "Could not compare");
          } finally {
            more.disabled = false;
          }
        });
        nodes.push(more);
      }
      ui.compare.replaceChildren(...nodes);
    } catch (err) {
      if (stale()) return;
      ui.compare.replaceChildren(
        failure(`Could not compare: ${err.message}`, "p"),
      );
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- the dialog

  async function openView(name) {
    view.name = name;
    view.seq += 1;
    ui.name.textContent = name;
    ui.tree.replaceChildren();
    ui.hidden.hidden = true;
    ui.compare.replaceChildren();
    ui.alerts.replaceChildren();
    ui.searchText.value = "";
    showTree();
    view.chosen.clear();
    showSelection();
    fillTargets();
    dialog.dataset.name = name;
    dialog.showModal();
    ui.title.focus();
    ui.tree.setAttribute("aria-busy", "true");
    try {
      await loadPage(ui.tree, "", null);
    } catch (err) {
      ui.tree.append(
        failure(`Could not list: ${err.message}`, "li"),
      );
    } finally {
      ui.tree.removeAttribute("aria-busy");
    }
  }

  function returnFocus() {
    const name = view.name;
    view.name = null;
    view.seq += 1;
    const button = [...rows.querySelectorAll('button[data-inside="browse"]')].find(
      (node) => node.dataset.name === name,
    );
    if (button) button.focus();
  }

  rows.addEventListener("click", (event) => {
    const button = event.target.closest('button[data-inside="browse"]');
    if (button) openView(button.dataset.name);
  });
  ui.close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", returnFocus);
  ui.form.addEventListener("submit", compare);
  ui.search.addEventListener("submit", search);
  ui.searchClear.addEventListener("click", () => {
    showTree();
    ui.searchText.focus();
  });
  if (ui.restoreSelected) {
    ui.restoreSelected.addEventListener("click", restoreSelected);
    ui.selectionClear.addEventListener("click", () => {
      view.chosen.clear();
      syncBoxes();
      showSelection();
    });
  }
})();
