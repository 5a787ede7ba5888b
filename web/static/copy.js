// Copy buttons: each button copies the text of the element named by its data-copy-target.
// The clipboard API needs a secure context (https or localhost); elsewhere the text is selected instead.
document.querySelectorAll("button.copy-button").forEach((button) => {
  button.addEventListener("click", async (event) => {
    event.preventDefault(); // the button sits in a <summary>: do not fold the details
    const target = document.getElementById(button.dataset.copyTarget);
    if (!target) return;
    try {
      await navigator.clipboard.writeText(target.textContent);
      button.textContent = "Copied";
    } catch (err) {
      const range = document.createRange();
      range.selectNodeContents(target);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
});
