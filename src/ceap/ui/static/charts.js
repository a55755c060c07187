// Renders every Vega-Lite spec of the page (script.vl-spec) with the vendored vega-embed.
// Each chart's element gets data-rendered="true" once drawn (the browser tests wait on it).
(function () {
  function draw() {
    document.querySelectorAll("script.vl-spec").forEach(function (block) {
      var target = document.getElementById(block.dataset.target);
      var spec = JSON.parse(block.textContent);
      vegaEmbed(target, spec, { actions: false, renderer: "svg" })
        .then(function () { target.dataset.rendered = "true"; })
        .catch(function (error) { console.error("chart " + block.dataset.target + ": " + error); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
