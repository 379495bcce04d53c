// The admin panel's only script: live parts of a page, and confirmations. No build step.
"use strict";

// <div data-refresh="/admin/fragment/x" data-every="5"> is replaced by a fresh copy of
// itself every few seconds (the server renders the fragment), without a full reload.
function startRefresh(node) {
  const url = node.getAttribute("data-refresh");
  const every = Math.max(1, Number(node.getAttribute("data-every") || "5")) * 1000;
  // A ticked box or a focused field in the part would be lost by a refresh.
  const busy = () => node.querySelector("input:checked") || node.contains(document.activeElement);
  async function tick() {
    try {
      const response = busy() ? null : await fetch(url, { headers: { "X-Fragment": "1" }, credentials: "same-origin" });
      const html = response && response.ok ? await response.text() : null;
      // Asked again once the answer is in: the person may have ticked a box meanwhile.
      if (html !== null && !busy()) {
        node.innerHTML = html;
        node.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
        // A part that says it is final (a mailing at 100 %) is not fetched again.
        if (node.querySelector("[data-refresh-stop]")) return;
      }
    } catch (_) {
      // A missed refresh is retried on the next tick.
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

// <button data-confirm="Redeliver 3 rows?"> asks before its form is sent.
function guardConfirm(event) {
  const button = event.submitter;
  const question = button && button.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}

// <input type="checkbox" data-check-all="name"> ticks every checkbox of that name.
function checkAll(event) {
  const box = event.target;
  const name = box.getAttribute && box.getAttribute("data-check-all");
  if (!name) return;
  for (const other of document.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
    other.checked = box.checked;
  }
}

// <iframe data-fit> (a same-origin frame whose document runs no script) is as tall as
// its document, so the page scrolls and the frame never does.
function fitFrame(frame) {
  function fit() {
    const doc = frame.contentDocument;
    if (!doc || !doc.documentElement) return;
    const border = frame.offsetHeight - frame.clientHeight;
    const height = Math.ceil(doc.documentElement.getBoundingClientRect().height) + border;
    if (Math.abs(frame.offsetHeight - height) > 1) frame.style.height = `${height}px`;
  }
  frame.addEventListener("load", fit);
  new ResizeObserver(fit).observe(frame);
  if (frame.contentDocument && frame.contentDocument.readyState === "complete") fit();
}

// On phones a table's rows are cards (phone.css): each cell is labelled with its column's
// heading. Templates label the main lists themselves; this labels the rest.
function labelCells(root) {
  for (const table of root.querySelectorAll("table.data")) {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    for (const row of table.querySelectorAll("tbody tr")) {
      [...row.children].forEach((cell, i) => {
        if (!cell.hasAttribute("data-label") && heads[i] && !cell.hasAttribute("colspan")) {
          cell.setAttribute("data-label", heads[i]);
        }
      });
    }
  }
}

// <time datetime="...Z"> comes in UTC; it is shown in the viewer's own zone (UTC stays
// in its title, for a hover), and with data-relative as "3 min ago" (the moment itself
// in the title). Without this script the UTC text stays.
const pad = (n) => String(n).padStart(2, "0");

function localText(date) {
  const zone = new Intl.DateTimeFormat("en", { timeZoneName: "short" })
    .formatToParts(date).find((part) => part.type === "timeZoneName");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    (zone ? ` ${zone.value}` : "");
}

function relativeText(date, now) {
  const seconds = Math.round((now - date) / 1000);
  const size = Math.abs(seconds);
  if (size < 45) return "just now";
  for (const [unit, span] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (size >= span * 0.95 || unit === "min") {
      const count = Math.max(1, Math.round(size / span));
      return seconds > 0 ? `${count} ${unit} ago` : `in ${count} ${unit}`;
    }
  }
  return "just now";
}

function localTimes(root) {
  const now = Date.now();
  for (const node of root.querySelectorAll("time[datetime]")) {
    const date = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) continue;
    if (!node.dataset.utc) node.dataset.utc = node.textContent.trim();
    const local = localText(date);
    if (node.hasAttribute("data-relative")) {
      node.textContent = relativeText(date, now);
      node.title = local === node.dataset.utc ? local : `${local} (${node.dataset.utc})`;
    } else {
      node.textContent = local;
      node.title = node.dataset.utc;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  setInterval(() => localTimes(document), 30000);
  document.addEventListener("refreshed", (event) => localTimes(event.target));
  labelCells(document);
  document.addEventListener("refreshed", (event) => labelCells(event.target));
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  document.querySelectorAll("iframe[data-fit]").forEach(fitFrame);
  document.addEventListener("submit", guardConfirm, true);
  document.addEventListener("change", checkAll);
});
