// Forms show only the fields of the choice made: <label data-show-when="audience=topic">
// is hidden unless the form's `audience` (radio buttons or a select) is "topic"
// ("source=sql|http": any of them). Without this script every field shows, each labelled
// with the choice it belongs to.
"use strict";

function applyChoices(form) {
  for (const node of form.querySelectorAll("[data-show-when]")) {
    const [name, values] = node.getAttribute("data-show-when").split("=");
    const field = form.elements.namedItem(name);
    const value = field ? field.value : "";
    node.hidden = !values.split("|").includes(value);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form")) {
    if (!form.querySelector("[data-show-when]")) continue;
    applyChoices(form);
    form.addEventListener("change", () => applyChoices(form));
  }
});
