// Live counts on the home page: poll /api/status every 5 s (alerts/s is computed server-side).
(function () {
  var url = document.currentScript.dataset.status;
  function tick() {
    fetch(url).then(function (r) { return r.json(); }).then(function (s) {
      document.getElementById("n-loci").textContent = s.counts.loci;
      document.getElementById("n-alerts").textContent = s.counts.alerts;
      document.getElementById("n-dlq").textContent = s.counts.dead_letters;
      document.getElementById("rate").textContent = s.alerts_per_second == null ? "–" : s.alerts_per_second.toFixed(1);
    }).catch(function () {});
  }
  tick();
  setInterval(tick, 5000);
})();
