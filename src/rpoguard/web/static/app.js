// rpoguard console: the few things a page does beyond plain HTML. No inline scripts (the CSP forbids them):
// data reaches a script through <script type="application/json"> blocks.
"use strict";

function readJson(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}

function drawDecisionsChart() {
  const canvas = document.getElementById("decisions-chart");
  const data = readJson("decisions-chart-data");
  if (!canvas || !data || typeof Chart === "undefined") {
    return;
  }
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [
        { label: data.allowed_label, data: data.allowed, backgroundColor: "#1f7a4d", stack: "d" },
        { label: data.blocked_label, data: data.blocked, backgroundColor: "#b3261e", stack: "d" },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true } },
    },
  });
}

// A page that follows something running (an import) reloads itself until it is done.
function followProgress() {
  const node = document.querySelector("[data-refresh-seconds]");
  if (node) {
    const seconds = Number(node.getAttribute("data-refresh-seconds")) || 2;
    window.setTimeout(() => window.location.reload(), seconds * 1000);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  drawDecisionsChart();
  followProgress();
});
