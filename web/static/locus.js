// Light curve: one uPlot series per passband (detections with ±1σ bars) plus upper limits (open ▽).
// Magnitudes grow downwards. Zoom by dragging, reset by double-click; hover shows values in the legend.
(function () {
  var el = document.getElementById("lightcurve");
  var d = JSON.parse(document.getElementById("lc-data").textContent);
  if (!d.x.length) { el.textContent = "No measurements."; el.dataset.points = "0"; return; }
  var data = [d.x];
  var series = [{ label: "MJD", value: function (u, v) { return v == null ? "–" : v.toFixed(5); } }];
  var npoints = 0;
  d.series.forEach(function (s) {
    data.push(s.y);
    npoints += s.n;
    var ul = s.kind === "upper_limit";
    series.push({
      label: s.band + (ul ? " limit" : ""), stroke: s.colour, width: 0,
      value: function (u, v) { return v == null ? "–" : v.toFixed(3); },
      points: ul ? { show: false } : { show: true, size: 6, fill: s.colour, stroke: s.colour },
    });
  });
  function drawExtras(u) {
    var ctx = u.ctx;
    ctx.save();
    d.series.forEach(function (s, si) {
      if (!u.series[si + 1].show) return;
      ctx.strokeStyle = s.colour; ctx.fillStyle = s.colour; ctx.lineWidth = 1 * devicePixelRatio;
      for (var i = 0; i < d.x.length; i++) {
        var y = s.y[i]; if (y == null) continue;
        var px = u.valToPos(d.x[i], "x", true), py = u.valToPos(y, "y", true);
        if (px < u.bbox.left || px > u.bbox.left + u.bbox.width) continue;
        if (s.kind === "upper_limit") {
          var r = 4 * devicePixelRatio;
          ctx.beginPath(); ctx.moveTo(px - r, py - r); ctx.lineTo(px + r, py - r); ctx.lineTo(px, py + r); ctx.closePath(); ctx.stroke();
        } else if (s.err[i] != null) {
          var y0 = u.valToPos(y - s.err[i], "y", true), y1 = u.valToPos(y + s.err[i], "y", true);
          ctx.beginPath(); ctx.moveTo(px, y0); ctx.lineTo(px, y1); ctx.stroke();
        }
      }
    });
    ctx.restore();
  }
  var width = Math.max(280, el.clientWidth - 2);
  var opts = {
    width: width, height: width < 500 ? 260 : 340,
    scales: { x: { time: false }, y: { dir: -1 } },
    axes: [{ label: "MJD" }, { label: "magnitude", size: 55 }],
    cursor: { drag: { x: true, y: true, uni: 40 } },
    series: series,
    hooks: { draw: [drawExtras] },
  };
  var u = new uPlot(opts, data, el);
  el.dataset.points = String(npoints);
  window.albireoChart = u;
  window.addEventListener("resize", function () {
    var w = Math.max(280, el.clientWidth - 2);
    u.setSize({ width: w, height: w < 500 ? 260 : 340 });
  });
})();
