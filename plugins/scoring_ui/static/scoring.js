// Draws the Scoring view's charts from the page's own JSON (#chart-data) with the vendored Chart.js,
// and keeps links to Airflow's UI working from inside Airflow's sandboxed iframe.
(function () {
  "use strict";
  var COLORS = { run: "#3182ce", previous: "#a0aec0", reference: "#ed8936", reject: "#e53e3e", ok: "#38a169" };
  window.scoringCharts = {};

  function data() {
    var node = document.getElementById("chart-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  function draw(canvas, config) {
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    var chart = new Chart(canvas, config);
    window.scoringCharts[canvas.id] = chart;
    return chart;
  }

  function runPage(pipeline, runId) {
    var url = new URL(window.location.href);
    var target = new URL("run", url);
    target.searchParams.set("pipeline", pipeline);
    target.searchParams.set("run_id", runId);
    if (url.searchParams.get("embed")) target.searchParams.set("embed", "true");
    return target.toString();
  }

  function distribution(canvas, d) {
    var datasets = [{ label: "this window (" + d.run.label + ")", data: d.run.points, borderColor: COLORS.run,
      backgroundColor: "rgba(49,130,206,0.15)", fill: true, borderWidth: 2.5, pointRadius: 2, tension: 0.2, order: 0 }];
    d.previous.forEach(function (p, i) {
      datasets.push({ label: p.label, data: p.points, borderColor: COLORS.previous, borderWidth: 1,
        borderDash: i === 0 ? [] : [4, 3], pointRadius: 0, tension: 0.2, fill: false, order: 1 });
    });
    draw(canvas, { type: "line", data: { datasets: datasets }, options: {
      parsing: false,
      scales: { x: { type: "linear", title: { display: true, text: "score" } },
                y: { title: { display: true, text: "density" }, beginAtZero: true } },
      plugins: { legend: { labels: { boxWidth: 12 } } } } });
  }

  function reference(canvas, d) {
    draw(canvas, { type: "bar", data: { labels: d.labels, datasets: [
      { label: "training reference", data: d.reference, backgroundColor: "rgba(237,137,54,0.55)" },
      { label: "this window", data: d.observed, backgroundColor: "rgba(49,130,206,0.7)" }] },
      options: { scales: { y: { title: { display: true, text: "fraction of rows" }, beginAtZero: true } } } });
  }

  function trend(canvas, d, runId) {
    var marked = d.run_ids.map(function (id) { return id === runId ? 6 : 3; });
    draw(canvas, { type: "line", data: { labels: d.labels, datasets: [
      { label: "mean score", data: d.mean, yAxisID: "y", borderColor: COLORS.run, backgroundColor: COLORS.run,
        pointRadius: marked, spanGaps: true },
      { label: "reject rate", data: d.reject_rate, yAxisID: "rate", borderColor: COLORS.reject,
        backgroundColor: COLORS.reject, pointRadius: marked, borderDash: [5, 3], spanGaps: true }] },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { y: { position: "left", title: { display: true, text: "mean score" } },
                  rate: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                          title: { display: true, text: "reject rate" },
                          ticks: { callback: function (v) { return (100 * v).toFixed(v < 0.01 ? 2 : 1) + "%"; } } } },
        onClick: function (event, elements) {
          if (elements.length) window.location.href = runPage(canvas.dataset.pipeline, d.run_ids[elements[0].index]);
        } } });
  }

  function heat(psi, threshold) {
    var t = Math.sqrt(Math.min(1, psi / (threshold || 0.2)));  // square root: small drift still shows
    return "rgba(197,48,48," + (0.08 + 0.85 * t).toFixed(3) + ")";
  }

  function drift(canvas, d, runId) {
    draw(canvas, { type: "matrix", data: { datasets: [{ label: "PSI", data: d.cells,
      backgroundColor: function (c) { var v = c.dataset.data[c.dataIndex]; return v ? heat(v.psi, v.threshold) : "#fff"; },
      borderColor: function (c) { var v = c.dataset.data[c.dataIndex]; return v && v.drifted ? "#742a2a" : (v && v.run_id === runId ? COLORS.run : "#e2e8f0"); },
      borderWidth: function (c) { var v = c.dataset.data[c.dataIndex]; return v && (v.drifted || v.run_id === runId) ? 2 : 1; },
      width: function (c) { var a = c.chart.chartArea; return a ? a.width / d.windows.length - 2 : 10; },
      height: function (c) { var a = c.chart.chartArea; return a ? a.height / d.features.length - 2 : 10; } }] },
      options: {
        plugins: { legend: { display: false }, tooltip: { callbacks: {
          title: function (items) { var v = items[0].raw; return v.y + " · " + v.x; },
          label: function (item) { var v = item.raw; return "PSI " + v.psi.toFixed(4) + " (threshold " + v.threshold + ")"; } } } },
        scales: { x: { type: "category", labels: d.windows, offset: true, grid: { display: false } },
                  y: { type: "category", labels: d.features, offset: true, grid: { display: false } } } } });
  }

  function shadow(canvas, d) {
    draw(canvas, { type: "line", data: { labels: d.labels, datasets: [
      { label: "label agreement", data: d.label_agreement, yAxisID: "share", borderColor: COLORS.ok, backgroundColor: COLORS.ok },
      { label: "mean |score difference|", data: d.mean_abs_diff, yAxisID: "diff", borderColor: COLORS.run, backgroundColor: COLORS.run },
      { label: "PSI", data: d.psi, yAxisID: "psi", borderColor: COLORS.reference, backgroundColor: COLORS.reference, borderDash: [4, 3] }] },
      options: { interaction: { mode: "index", intersect: false },
        scales: { share: { position: "left", min: 0, max: 1, title: { display: true, text: "label agreement" } },
                  diff: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                          title: { display: true, text: "mean |score difference|" } },
                  psi: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                         title: { display: true, text: "PSI" } } },
        plugins: { tooltip: { callbacks: { footer: function (items) { return "challenger " + d.challengers[items[0].dataIndex]; } } } } } });
  }

  function cost(canvas, d, runId) {
    var marked = d.run_ids.map(function (id) { return id === runId ? 6 : 3; });
    draw(canvas, { type: "line", data: { labels: d.labels, datasets: [
      { label: "CPU-s per million rows", data: d.cpu_per_mrow, yAxisID: "cpu", borderColor: COLORS.run,
        backgroundColor: COLORS.run, pointRadius: marked, spanGaps: true },
      { label: "scoring CPU-s per million rows", data: d.score_cpu_per_mrow, yAxisID: "cpu", borderColor: COLORS.previous,
        backgroundColor: COLORS.previous, pointRadius: marked, spanGaps: true },
      { label: "rows per CPU second", data: d.rows_per_cpu_second, yAxisID: "rate", borderColor: COLORS.ok,
        backgroundColor: COLORS.ok, pointRadius: marked, borderDash: [5, 3], spanGaps: true }] },
      options: { interaction: { mode: "index", intersect: false },
        scales: { cpu: { position: "left", beginAtZero: true, title: { display: true, text: "CPU-s per million rows" } },
                  rate: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                          title: { display: true, text: "rows per CPU second" } } },
        onClick: function (event, elements) {
          if (elements.length) window.location.href = runPage(canvas.dataset.pipeline, d.run_ids[elements[0].index]);
        } } });
  }

  var ROLE_COLORS = { champion: COLORS.run, challenger: COLORS.ok };

  // One realised metric over the evaluated windows: a line per role, the training holdout dashed.
  function performance(canvas, d) {
    var datasets = ["champion", "challenger"].filter(function (role) { return d.series[role]; }).map(function (role) {
      return { label: role, data: d.series[role], borderColor: ROLE_COLORS[role], backgroundColor: ROLE_COLORS[role],
        pointRadius: 3, spanGaps: true };
    });
    if (d.reference !== null && d.reference !== undefined) {
      datasets.push({ label: "training holdout", data: d.labels.map(function () { return d.reference; }),
        borderColor: COLORS.reference, backgroundColor: COLORS.reference, borderDash: [6, 4], pointRadius: 0 });
    }
    draw(canvas, { type: "line", data: { labels: d.labels, datasets: datasets },
      options: { interaction: { mode: "index", intersect: false },
        scales: { y: { title: { display: true, text: canvas.dataset.metric } } } } });
  }

  // Mean score (x) against the observed positive rate (y) per score decile, one curve per role, and the diagonal.
  function calibration(canvas, d) {
    var datasets = d.roles.map(function (curve) {
      var color = ROLE_COLORS[curve.role] || COLORS.run;
      return { label: curve.role + " (" + curve.model + ")", data: curve.points, borderColor: color, backgroundColor: color,
        showLine: true, pointRadius: 4 };
    });
    datasets.push({ label: "perfectly calibrated", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: COLORS.previous,
      borderDash: [4, 4], showLine: true, pointRadius: 0 });
    draw(canvas, { type: "scatter", data: { datasets: datasets }, options: {
      scales: { x: { type: "linear", min: 0, max: 1, title: { display: true, text: "mean score in the decile" } },
                y: { min: 0, max: 1, title: { display: true, text: "observed positive rate" } } },
      plugins: { tooltip: { callbacks: { label: function (item) {
        var p = item.raw; return "score " + p.x.toFixed(3) + " → observed " + p.y.toFixed(3) + (p.rows ? " (" + p.rows + " rows)" : "");
      } } } } } });
  }

  var DRAW = { distribution: distribution, reference: reference, trend: trend, drift: drift, shadow: shadow, cost: cost,
    performance: performance, calibration: calibration };

  function drawAll() {
    if (typeof Chart === "undefined") return;
    var all = data();
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var kind = canvas.dataset.chart;
      var d = all[kind];
      if (d && canvas.dataset.key) d = d[canvas.dataset.key];
      if (d && DRAW[kind]) DRAW[kind](canvas, d, canvas.dataset.runId);
    });
  }

  // Links into Airflow's own UI: inside Airflow the page is an iframe sandboxed without
  // top-navigation, so a target=_top link cannot leave it. Same origin, though: ask the UI's
  // router to go there (history entry + popstate), as its own links do; standalone, the link works as is.
  function followInAirflow(event) {
    var link = event.target.closest("a.airflow");
    if (!link || window.top === window || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    try {
      var top = window.top;
      var target = new URL(link.href, top.location.href);
      if (target.origin !== top.location.origin) return;
      var state = top.history.state || {};
      top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: (state.idx || 0) + 1 },
        "", target.pathname + target.search + target.hash);
      top.dispatchEvent(new top.PopStateEvent("popstate", { state: top.history.state }));
      event.preventDefault();
    } catch (e) {
      // another origin or a browser that refuses: leave the click to the browser
    }
  }

  // Empty filter fields are left out of the query instead of being sent as "" (which the server refuses).
  function dropEmptyFilters(event) {
    event.target.querySelectorAll("input, select").forEach(function (field) {
      if (field.value === "") field.disabled = true;
    });
  }

  document.addEventListener("click", followInAirflow);
  document.querySelectorAll("form.filters").forEach(function (form) { form.addEventListener("submit", dropEmptyFilters); });
  drawAll();
})();
