// The event page's Aladin Lite view: the 90% and 50% credible regions (MOCs) and the loci inside.
// Aladin Lite (npm aladin-lite, vendored by `make portal-assets`) draws the overlays on WebGL; its
// background survey is fetched from a HiPS server and stays black where none is reachable.
import A from "./vendor/aladin-lite/aladin.js";

const el = document.getElementById("aladin-lite-div");
el.dataset.state = "loading";
A.init.then(async () => {
  const aladin = A.aladin("#aladin-lite-div", {
    target: `${el.dataset.ra} ${el.dataset.dec}`, fov: Number(el.dataset.fov), projection: "AIT",
    showReticle: false, showCooGrid: true, cooFrame: "ICRS",
  });
  const add = async (url, color, opacity) => {
    const json = await (await fetch(url)).json();
    aladin.addMOC(A.MOCFromJSON(json, { color: color, opacity: opacity, lineWidth: 2, fill: true }));
    return Object.values(json).reduce((n, cells) => n + cells.length, 0);
  };
  const cells90 = await add(el.dataset.moc90, "#e63946", 0.25);
  const cells50 = await add(el.dataset.moc50, "#fca311", 0.35);
  const loci = (await (await fetch(el.dataset.loci)).json()).data;
  const cat = A.catalog({ name: "loci inside", sourceSize: 12, color: "#2ec4f1" });
  aladin.addCatalog(cat);
  cat.addSources(loci.map((l) => A.source(l.ra, l.dec, { locus_id: l.locus_id })));
  el.dataset.mocCells = String(cells90 + cells50);
  el.dataset.sources = String(loci.length);
  el.dataset.state = "ready";
  window.albireoAladin = aladin;
}).catch((err) => { el.dataset.state = "failed"; el.dataset.error = String(err); });
