/* Draws an audit report's chart from <script type="application/json" id="chart-data">
   (rendered by Django's json_script). No inline script or style: the CSP forbids both. */
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  var canvas = document.getElementById("report-chart");
  if (!source || !canvas || typeof window.Chart === "undefined") {
    return;
  }
  var spec = JSON.parse(source.textContent);
  // The brand teal first, then colours that stay apart for common colour-vision deficiencies.
  var palette = ["#0b6e6e", "#e69f00", "#56b4e9", "#cc79a7", "#d55e00", "#009e73"];
  var reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: spec.labels,
      datasets: spec.datasets.map(function (dataset, index) {
        return {
          label: dataset.label,
          data: dataset.data,
          backgroundColor: palette[index % palette.length],
          borderWidth: 0
        };
      })
    },
    options: {
      responsive: true,
      aspectRatio: 3,
      animation: reduceMotion ? false : { duration: 300 },
      scales: {
        x: { stacked: spec.stacked, ticks: { autoSkip: true, maxRotation: 0 } },
        y: { stacked: spec.stacked, beginAtZero: true, ticks: { precision: 0 },
             title: { display: true, text: spec.axis } }
      },
      plugins: { legend: { display: spec.datasets.length > 1 } }
    }
  });
})();
