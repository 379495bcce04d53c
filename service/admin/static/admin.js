// The admin panel's only script: live parts of a page, and confirmations. No build step.
"use strict";

// <div data-refresh="/admin/fragment/x" data-every="5"> is replaced by a fresh copy of
// itself every few seconds (the server renders the fragment), without a full reload.
function startRefresh(node) {
  const url = node.getAttribute("data-refresh");
  const every = Math.max(1, Number(node.getAttribute("data-every") || "5")) * 1000;
  async function tick() {
    try {
      const response = await fetch(url, { headers: { "X-Fragment": "1" }, credentials: "same-origin" });
      if (response.ok) {
        node.innerHTML = await response.text();
        node.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
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

document.addEventListener("DOMContentLoaded", () => {
  labelCells(document);
  document.addEventListener("refreshed", (event) => labelCells(event.target));
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  document.querySelectorAll("iframe[data-fit]").forEach(fitFrame);
  document.addEventListener("submit", guardConfirm, true);
  document.addEventListener("change", checkAll);
});
