// statcube map page: a choropleth of protected aggregates by area.
// Talks only to the Slicer API of the same server (no external scripts). Values shown are
// the API's published (cell-key protected) values; null means withheld.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("statcube-config").textContent);
  const api = (config.api_base || "").replace(/\/$/, "");
  const COLOURS = ["#eff3ff", "#bdd7e7", "#6baed6", "#3182bd", "#08519c"];
  const el = (id) => document.getElementById(id);
  const state = { model: null, features: [], drawSeq: 0 };

  async function getJSON(path) {
    const resp = await fetch(api + path, { headers: { Accept: "application/json" } });
    const body = await resp.json();
    if (!resp.ok) {
      throw new Error(body.message || ("request failed: " + resp.status));
    }
    return body;
  }

  function option(select, value, label) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    select.appendChild(o);
  }

  function status(text, isError) {
    const s = el("status");
    s.textContent = text;
    s.className = isError ? "error" : "";
  }

  function geography() {
    return state.model.dimensions.find((d) => d.info && d.info.geographic);
  }

  function timeDimension() {
    return state.model.dimensions.find((d) => d.role === "time");
  }

  async function loadCubes() {
    const cubes = await getJSON("/cubes");
    el("cube").innerHTML = "";
    cubes.forEach((c) => option(el("cube"), c.name, c.label));
    if (config.cube && cubes.some((c) => c.name === config.cube)) el("cube").value = config.cube;
    await loadCube();
  }

  async function loadCube() {
    const cube = el("cube").value;
    state.model = await getJSON("/cube/" + encodeURIComponent(cube) + "/model");
    const agg = el("aggregate");
    agg.innerHTML = "";
    state.model.aggregates.forEach((a) => option(agg, a.name, a.label));

    const level = el("level");
    level.innerHTML = "";
    const geo = geography();
    geo.levels.filter((l) => config.levels.includes(l.name))
      .forEach((l) => option(level, l.name, l.label));
    if ([...level.options].some((o) => o.value === "la")) level.value = "la";

    const tdim = timeDimension();
    const hier = tdim.hierarchies.find((h) => h.name === tdim.default_hierarchy_name);
    const finest = hier.levels[hier.levels.length - 1];
    const periods = await getJSON("/cube/" + encodeURIComponent(cube) + "/members/time?level=" + finest);
    const byName = Object.fromEntries(tdim.levels.map((l) => [l.name, l]));
    const last = byName[finest];
    const period = el("period");
    period.innerHTML = "";
    periods.data.slice().reverse().forEach((m) => {
      const path = hier.levels.map((ln) => m["time." + byName[ln].key]).join(",");
      option(period, path, String(m["time." + last.label_attribute]));
    });

    const fdim = el("filter-dim");
    fdim.innerHTML = "";
    option(fdim, "", "(no filter)");
    state.model.dimensions.filter((d) => d.role !== "time" && !(d.info && d.info.geographic) && d.is_flat)
      .forEach((d) => option(fdim, d.name, d.label));
    await loadFilterMembers();
  }

  async function loadFilterMembers() {
    const dim = el("filter-dim").value;
    const member = el("filter-member");
    member.innerHTML = "";
    member.disabled = !dim;
    if (dim) {
      const d = state.model.dimensions.find((x) => x.name === dim);
      const lvl = d.levels[0];
      const data = await getJSON("/cube/" + encodeURIComponent(el("cube").value) + "/members/" + encodeURIComponent(dim));
      data.data.forEach((m) => option(member, m[dim + "." + lvl.key], m[dim + "." + lvl.label_attribute]));
    }
    await draw();
  }

  function escapeKey(k) {
    return String(k).replace(/([\\!|:;,\-])/g, "\\$1");
  }

  function queryString(format) {
    const cuts = ["time:" + el("period").value.split(",").map(escapeKey).join(",")];
    if (el("filter-dim").value && el("filter-member").value) {
      cuts.push(el("filter-dim").value + ":" + escapeKey(el("filter-member").value));
    }
    const params = new URLSearchParams({
      drilldown: "geography:" + el("level").value,
      aggregates: el("aggregate").value,
      cut: cuts.join("|"),
      format: format,
    });
    return "/cube/" + encodeURIComponent(el("cube").value) + "/aggregate?" + params.toString();
  }

  // Equirectangular projection scaled by cos(latitude): good enough for GB areas.
  function projector(features) {
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    const visit = (c) => {
      if (typeof c[0] === "number") {
        minX = Math.min(minX, c[0]); maxX = Math.max(maxX, c[0]);
        minY = Math.min(minY, c[1]); maxY = Math.max(maxY, c[1]);
      } else c.forEach(visit);
    };
    features.forEach((f) => visit(f.geometry.coordinates));
    const k = Math.cos(((minY + maxY) / 2) * Math.PI / 180);
    const w = (maxX - minX) * k || 1, h = (maxY - minY) || 1;
    const scale = Math.min(580 / w, 680 / h);
    return (p) => [10 + (p[0] - minX) * k * scale, 10 + (maxY - p[1]) * scale];
  }

  function pathData(geometry, project) {
    const polys = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
    return polys.map((rings) => rings.map((ring) =>
      "M" + ring.map((p) => project(p).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join("")).join("");
  }

  function quantileBreaks(values) {
    const sorted = values.slice().sort((a, b) => a - b);
    const breaks = [];
    for (let i = 1; i < COLOURS.length; i++) {
      breaks.push(sorted[Math.min(sorted.length - 1, Math.floor((i * sorted.length) / COLOURS.length))]);
    }
    return breaks;
  }

  function classOf(value, breaks) {
    let c = 0;
    while (c < breaks.length && value >= breaks[c]) c++;
    return c;
  }

  function format(value, aggregate) {
    if (value === null || value === undefined) return "withheld (..)";
    const fn = state.model.aggregates.find((a) => a.name === aggregate);
    // a mean states no measure of its own (it is Cubes' expression "<sum> / <count>"):
    // info.measure names the measure of every aggregate
    const measure = fn && fn.info && fn.info.measure;
    const money = measure && state.model.measures.some((m) => m.name === measure && m.info.kind === "amount");
    return money ? "£" + Number(value).toLocaleString("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
      : Number(value).toLocaleString("en-GB");
  }

  function showTooltip(feature, evt) {
    const agg = el("aggregate").value;
    const tip = el("tooltip");
    const p = feature.properties;
    tip.textContent = p.name + " (" + p.code + "): " + format(p[agg], agg);
    tip.hidden = false;
    const panel = el("map-panel").getBoundingClientRect();
    let x, y;
    if (evt && evt.clientX !== undefined && evt.type !== "focus") {
      x = evt.clientX - panel.left + 12; y = evt.clientY - panel.top + 12;
    } else {
      const box = evt.target.getBoundingClientRect();
      x = box.left - panel.left + box.width / 2; y = box.top - panel.top + box.height / 2;
    }
    tip.style.left = Math.min(x, panel.width - 200) + "px";
    tip.style.top = y + "px";
  }

  async function draw() {
    const seq = ++state.drawSeq;  // only the newest request may paint (selections race)
    const url = queryString("geojson");
    el("csv-link").href = api + queryString("csv");
    el("geojson-link").href = api + url;
    status("Loading…");
    let fc;
    try {
      fc = await getJSON(url);
    } catch (err) {
      if (seq !== state.drawSeq) return;
      el("areas").innerHTML = "";
      status(err.message, true);
      el("map").setAttribute("data-drawn", "error:" + url);
      return;
    }
    if (seq !== state.drawSeq) return;
    state.features = fc.features;
    const agg = el("aggregate").value;
    const values = fc.features.map((f) => f.properties[agg]).filter((v) => v !== null && v !== undefined);
    const breaks = quantileBreaks(values);
    const project = projector(fc.features);
    const g = el("areas");
    g.innerHTML = "";
    const ns = "http://www.w3.org/2000/svg";
    fc.features.forEach((f) => {
      const path = document.createElementNS(ns, "path");
      const v = f.properties[agg];
      path.setAttribute("d", pathData(f.geometry, project));
      path.setAttribute("class", "area" + (v === null ? " withheld" : ""));
      path.setAttribute("fill", v === null ? "#b1b4b6" : COLOURS[classOf(v, breaks)]);
      path.setAttribute("tabindex", "0");
      path.setAttribute("data-code", f.properties.code);
      path.setAttribute("aria-label", f.properties.name + ": " + format(v, agg));
      path.addEventListener("mousemove", (e) => showTooltip(f, e));
      path.addEventListener("focus", (e) => showTooltip(f, e));
      path.addEventListener("click", (e) => showTooltip(f, e));
      path.addEventListener("mouseleave", () => { el("tooltip").hidden = true; });
      path.addEventListener("blur", () => { el("tooltip").hidden = true; });
      g.appendChild(path);
    });
    const legend = el("legend");
    legend.innerHTML = "";
    const bounds = [Math.min(...values)].concat(breaks).concat([Math.max(...values)]);
    COLOURS.forEach((c, i) => {
      const item = document.createElement("span");
      item.innerHTML = '<span class="swatch" style="background:' + c + '"></span>';
      item.appendChild(document.createTextNode(format(bounds[i], agg) + " – " + format(bounds[i + 1], agg)));
      legend.appendChild(item);
    });
    const period = el("period").selectedOptions[0];
    status(fc.features.length + " areas, " + (period ? period.textContent : "") + ". Quantile classes.");
    el("map").setAttribute("data-drawn", url);  // lets tests wait for this exact drawing
    el("map").setAttribute("data-draws", String(seq));
  }

  el("cube").addEventListener("change", () => loadCube().catch((e) => status(e.message, true)));
  el("filter-dim").addEventListener("change", () => loadFilterMembers().catch((e) => status(e.message, true)));
  ["aggregate", "level", "period", "filter-member"].forEach((id) =>
    el(id).addEventListener("change", () => draw().catch((e) => status(e.message, true))));
  loadCubes().catch((e) => status(e.message, true));
})();
