// Postern admin console: progressive enhancements only. Every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const dialog = document.getElementById("confirm-dialog");

  // Destructive forms carry data-confirm: ask in a <dialog> first. Without this script the
  // server answers with a confirmation page instead.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (form.dataset.confirmed === "yes") return;
      event.preventDefault();
      if (!dialog || typeof dialog.showModal !== "function") {
        if (window.confirm(form.dataset.confirm)) confirmAndSubmit(form);
        return;
      }
      document.getElementById("confirm-text").textContent = form.dataset.confirm;
      const button = form.querySelector("button[type=submit], button:not([type])");
      document.getElementById("confirm-ok").textContent = button ? button.textContent.trim() : "Confirm";
      dialog.returnValue = "";
      dialog.onclose = () => {
        if (dialog.returnValue === "ok") confirmAndSubmit(form);
      };
      dialog.showModal();
    });
  });

  function confirmAndSubmit(form) {
    form.dataset.confirmed = "yes";
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "confirm";
    input.value = "yes";
    form.appendChild(input);
    form.submit();
  }

  // Copy buttons: data-copy names the element whose text to copy.
  document.querySelectorAll("[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent);
        const label = button.textContent;
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = label; }, 1500);
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
    });
  });

  // Filter selects apply at once.
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form && select.form.submit());
  });
});
