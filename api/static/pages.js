// The pages' few behaviours that need a script: a file, not inline, so the Content-Security-Policy
// (api/headers.py) can allow the service's own scripts only. The pages work without it.
//
// * The error summary of a form that was sent back (data-focus-on-load) gets the focus, so a
//   screen reader reads the errors first and a keyboard user tabs straight to their links; a
//   link in it focuses its field and shows the field's label too (GOV.UK error summary).
// * A print button (data-print) opens the browser's print dialog; without the script it stays
//   hidden and the page says to use the browser's print command.
document.addEventListener("DOMContentLoaded", function () {
  var summary = document.querySelector("[data-focus-on-load]");
  if (summary) {
    summary.focus();
    summary.addEventListener("click", function (event) {
      var link = event.target.closest("a[href^='#']");
      var field = link && document.getElementById(link.getAttribute("href").slice(1));
      if (!field) return;
      event.preventDefault();
      var label = document.querySelector("label[for='" + field.id + "']");
      (label || field).scrollIntoView();
      field.focus({ preventScroll: true });
    });
  }
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
});
