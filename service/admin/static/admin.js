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

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  document.addEventListener("submit", guardConfirm, true);
  document.addEventListener("change", checkAll);
});
