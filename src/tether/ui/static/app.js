// tether ui: live pages. The server sends the store's change token by server-sent events;
// when it differs from the one this page was rendered with, the page fetches its own
// <main> again and swaps it in, keeping the scroll positions. Nothing is loaded from elsewhere.
(function () {
  "use strict";
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  if (!main || !window.EventSource) return;
  let token = main.dataset.token || "";
  let busy = false, again = false, last = 0;
  const MIN_GAP_MS = 700;

  function scrollers() {
    return Array.from(document.querySelectorAll(".timeline-box, .logs-box"));
  }

  async function refresh() {
    if (busy) { again = true; return; }
    const wait = last + MIN_GAP_MS - Date.now();
    if (wait > 0) { busy = true; setTimeout(() => { busy = false; refresh(); }, wait); return; }
    busy = true; again = false; last = Date.now();
    try {
      const response = await fetch(location.href, { headers: { "X-Tether-Partial": "1" }, cache: "no-store" });
      if (response.ok) {
        const html = await response.text();
        const x = window.scrollX, y = window.scrollY;
        const inner = scrollers().map((el) => [el.scrollLeft, el.scrollTop]);
        main.innerHTML = html;
        main.dataset.token = token = response.headers.get("X-Tether-Token") || token;
        scrollers().forEach((el, i) => { if (inner[i]) { el.scrollLeft = inner[i][0]; el.scrollTop = inner[i][1]; } });
        window.scrollTo(x, y);
        document.dispatchEvent(new CustomEvent("tether:updated", { detail: { token } }));
      }
    } finally {
      busy = false;
      if (again) refresh();
    }
  }

  function connect() {
    const source = new EventSource("/events?token=" + encodeURIComponent(token));
    source.onopen = () => live && live.classList.add("on");
    source.onerror = () => live && live.classList.remove("on");
    source.onmessage = (event) => { if (event.data !== token) refresh(); };
  }
  connect();

  // Hovering a resource copy marks the task runs that used it.
  document.addEventListener("mouseover", (event) => {
    const band = event.target.closest && event.target.closest("[data-resource-id]");
    document.querySelectorAll(".lane.used").forEach((el) => el.classList.remove("used"));
    if (!band) return;
    (band.dataset.usedBy || "").split(" ").filter(Boolean).forEach((id) => {
      const lane = document.querySelector('.lane[data-task-run-id="' + CSS.escape(id) + '"]');
      if (lane) lane.classList.add("used");
    });
  });
})();
