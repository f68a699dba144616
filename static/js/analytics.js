/* Draws the no-show dashboard's charts from <script type="application/json" id="analytics-data">
   (rendered by Django's json_script). No inline script or style: the CSP forbids both. The tables
   under each chart carry the same figures for screen readers and for browsers without script. */
(function () {
  "use strict";
  var source = document.getElementById("analytics-data");
  if (!source || typeof window.Chart === "undefined") {
    return;
  }
  var spec = JSON.parse(source.textContent);
  // The brand teal first, then colours that stay apart for common colour-vision deficiencies.
  var palette = ["#0b6e6e", "#e69f00", "#56b4e9", "#cc79a7", "#d55e00", "#009e73"];
  var reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function draw(canvasId, chart, type, integers) {
    var canvas = document.getElementById(canvasId);
    if (!canvas || !chart) {
      return;
    }
    new window.Chart(canvas, {
      type: type,
      data: {
        labels: chart.labels,
        datasets: chart.datasets.map(function (dataset, index) {
          var colour = palette[index % palette.length];
          return {
            label: dataset.label,
            data: dataset.data,
            backgroundColor: colour,
            borderColor: colour,
            borderWidth: type === "line" ? 2 : 0,
            spanGaps: true
          };
        })
      },
      options: {
        responsive: true,
        aspectRatio: 3,
        animation: reduceMotion ? false : { duration: 300 },
        scales: {
          x: { ticks: { autoSkip: true, maxRotation: 0 } },
          y: { beginAtZero: true, ticks: integers ? { precision: 0 } : {},
               title: { display: true, text: chart.axis } }
        },
        plugins: { legend: { display: chart.datasets.length > 1 } }
      }
    });
  }

  draw("analytics-funnel", spec.funnel, "bar", true);
  draw("analytics-no-show", spec.no_show, "bar", false);
  draw("analytics-response", spec.response, "line", false);
})();
