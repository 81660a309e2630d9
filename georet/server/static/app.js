// georet web map: a search box over `georet serve`; hits drawn as footprints with rank labels,
// their thumbnails as the backdrop, relational partners dashed and linked; "more like this" /
// "not this" on each hit re-ranks with those examples; dates filter hits ("when") and choose the two
// acquisitions a change query compares ("from"/"to"), whose hits show the place before and after.
// No network beyond this server.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const map = L.map("map", { zoomControl: true }).setView([0, 0], 2);
const imagery = L.layerGroup().addTo(map);  // the index's own rasters of the chosen date
const backdrop = L.layerGroup().addTo(map);
let imageryLayers = [];  // from /imagery: id, name, acquired, bounds, zoom
const footprints = L.layerGroup().addTo(map);
let features = [];
const marks = { like: params.getAll("like"), unlike: params.getAll("unlike") };

function api(path) {
  return fetch(path, { headers }).then(async (response) => {
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  });
}

function withToken(url) {
  return token ? `${url}?token=${encodeURIComponent(token)}` : url;
}

function thumbnailUrl(tileId) {
  return withToken(`tiles/${encodeURIComponent(tileId)}/thumbnail.png`);
}

function showImagery(date) {
  // the rasters acquired on `date` ("undated" for those without one) as map layers under the hits
  imagery.clearLayers();
  document.getElementById("imagery").value = date;
  for (const layer of imageryLayers) {
    if (layer.error || (layer.acquired || "undated") !== date) continue;
    const [west, south, east, north] = layer.bounds;
    L.tileLayer(withToken(`imagery/${layer.id}/{z}/{x}/{y}.png`), {
      bounds: L.latLngBounds([south, west], [north, east]), maxNativeZoom: layer.zoom[1], maxZoom: 22,
      className: "imagery-tiles", attribution: layer.name,
    }).addTo(imagery);
  }
  backdrop.eachLayer((overlay) => overlay.setOpacity(thumbnailOpacity()));
}

function thumbnailOpacity() {
  return document.getElementById("imagery").value ? 0 : 1;  // the imagery, when shown, replaces the thumbnails
}

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function boundsOf(geometry) {
  const ring = geometry.coordinates[0];
  const lats = ring.map((p) => p[1]), lons = ring.map((p) => p[0]);
  return L.latLngBounds([Math.min(...lats), Math.min(...lons)], [Math.max(...lats), Math.max(...lons)]);
}

function wktBounds(wkt) {
  const numbers = wkt.match(/-?\d+(\.\d+)?(e-?\d+)?/gi).map(Number);
  const lons = numbers.filter((_, i) => i % 2 === 0), lats = numbers.filter((_, i) => i % 2 === 1);
  return L.latLngBounds([Math.min(...lats), Math.min(...lons)], [Math.max(...lats), Math.max(...lons)]);
}

function select(index) {
  document.querySelectorAll(".hit").forEach((li, i) => li.classList.toggle("selected", i === index));
  const feature = features[index];
  const p = feature.properties;
  const lines = Object.entries(p).filter(([key]) => key !== "partner_wkt")
    .map(([key, value]) => `<b>${key}</b> ${value}`).join("<br>");
  L.popup().setLatLng(boundsOf(feature.geometry).getCenter()).setContent(lines).openOn(map);
  map.fitBounds(boundsOf(feature.geometry).pad(2));
}

function draw(collection) {
  backdrop.clearLayers();
  footprints.clearLayers();
  features = collection.features;
  const list = document.getElementById("hits");
  list.innerHTML = "";
  const all = [];
  features.forEach((feature, index) => {
    const p = feature.properties;
    const isRegion = p.region !== undefined;
    const bounds = boundsOf(feature.geometry);
    all.push(bounds);
    if (!isRegion) L.imageOverlay(thumbnailUrl(p.tile_id), bounds, { opacity: thumbnailOpacity() }).addTo(backdrop);
    const rank = isRegion ? p.region : p.rank;
    const score = isRegion ? p.best_score : p.score;
    L.geoJSON(feature, { style: { color: "#d7191c", weight: 2, fillOpacity: 0.05 } })
      .bindTooltip(String(rank), { permanent: true, direction: "center", className: "rank-label" })
      .on("click", () => select(index)).addTo(footprints);
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.tileId = isRegion ? "" : p.tile_id;
    li.dataset.rank = rank;
    li.innerHTML = `${isRegion ? "" : `<img alt="" src="${thumbnailUrl(p.tile_id)}">`}<div>
      <span class="rank">#${rank}</span> <span class="score">${Number(score).toFixed(3)}</span>
      <span class="scene">${isRegion ? `region of ${p.tiles} tiles` : (p.scene || "")}</span><br>
      <small>${isRegion ? "" : p.tile_id}${p.acquired ? ` · ${p.acquired}` : ""}</small></div>`;
    if (p.before_tile_id) {  // a change hit: the place at the earlier date beside the later one
      const before = document.createElement("div");
      before.className = "before";
      before.innerHTML = `<img alt="before" src="${thumbnailUrl(p.before_tile_id)}"> before: ${p.before_acquired}
        → after: ${p.acquired}`;
      for (const [text, date] of [["see before", p.before_acquired], ["see after", p.acquired]]) {
        const button = document.createElement("button");  // the imagery of that date under the hit
        button.type = "button";
        button.className = text.replace(" ", "-");
        button.textContent = text;
        button.addEventListener("click", (event) => {
          event.stopPropagation();
          showImagery(date);
          map.fitBounds(boundsOf(feature.geometry).pad(1));
        });
        before.appendChild(button);
      }
      li.querySelector("div").appendChild(before);
    }
    if (p.partner_wkt) {
      const partnerBounds = wktBounds(p.partner_wkt);
      L.rectangle(partnerBounds, { color: "#00bee6", weight: 2, dashArray: "6 4", fill: false })
        .bindTooltip(`partner of #${rank}`).addTo(footprints);
      L.imageOverlay(thumbnailUrl(p.partners.split(",")[0]), partnerBounds, { opacity: thumbnailOpacity() })
        .addTo(backdrop);
      const partner = document.createElement("div");
      partner.className = "partner";
      partner.textContent = `partner ${p.partners.split(",")[0]} at ${Math.round(p.partner_distance_m)} m`;
      li.querySelector("div").appendChild(partner);
    }
    if (!isRegion) {
      const buttons = document.createElement("div");
      buttons.className = "marks";
      for (const [kind, text] of [["like", "more like this"], ["unlike", "not this"]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = kind;
        button.textContent = text;
        button.addEventListener("click", (event) => { event.stopPropagation(); mark(p.tile_id, kind); });
        buttons.appendChild(button);
      }
      const scene = document.createElement("form");  // "this tile is a …": an example of a class, then relabel
      scene.className = "scene-example";
      scene.innerHTML = `<input name="scene" list="known-scenes" placeholder="forest" size="9" required>
        <button type="submit">this tile is a …</button>`;
      scene.addEventListener("click", (event) => event.stopPropagation());
      scene.addEventListener("submit", (event) => {
        event.preventDefault();
        markScene(p.tile_id, scene.elements.scene.value.trim());
      });
      buttons.appendChild(scene);
      li.querySelector("div").appendChild(buttons);
    }
    li.addEventListener("click", () => select(index));
    list.appendChild(li);
  });
  if (all.length) map.fitBounds(all.reduce((a, b) => a.extend(b), L.latLngBounds(all[0].getSouthWest(), all[0].getNorthEast())).pad(0.2));
  const download = document.getElementById("download");
  download.href = URL.createObjectURL(new Blob([JSON.stringify(collection)], { type: "application/geo+json" }));
  download.hidden = false;
  const kind = collection.georet && collection.georet.score ? ` — score: ${collection.georet.score}` : "";
  setStatus(`${features.length} ${features.length && features[0].properties.region !== undefined ? "regions" : "hits"}${kind}`);
}

function showMarks() {
  const list = document.getElementById("label-list");
  list.innerHTML = "";
  for (const kind of ["like", "unlike"]) {
    for (const tileId of marks[kind]) {
      const item = document.createElement("li");
      item.className = kind;
      item.textContent = `${kind === "like" ? "+" : "−"} ${tileId}`;
      list.appendChild(item);
    }
  }
  document.getElementById("labels").hidden = !(marks.like.length || marks.unlike.length);
}

function mark(tileId, kind) {
  const other = kind === "like" ? "unlike" : "like";
  marks[other] = marks[other].filter((t) => t !== tileId);
  if (!marks[kind].includes(tileId)) marks[kind].push(tileId);
  showMarks();
  search();
}

function markScene(tileId, scene) {
  setStatus(`marking ${tileId} as ${scene} and relabelling…`);
  fetch("scenes", { method: "POST", headers: { ...headers, "Content-Type": "application/json" },
                    body: JSON.stringify({ tile_id: tileId, scene }) })
    .then(async (response) => {
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      const counts = Object.entries(body).map(([name, n]) => `${name} ${n}`).join(", ");
      setStatus(`relabelled: ${counts}`);
      loadScenes();
      search();
    })
    .catch((error) => setStatus(error.message, true));
}

function search() {
  const q = document.getElementById("q").value.trim();
  if (!q && !marks.like.length) { setStatus("type something to search for", true); return; }
  const query = new URLSearchParams({ k: document.getElementById("k").value });
  if (q) query.set("q", q);
  const scene = document.getElementById("scene").value;
  if (scene) query.set("scene", scene);
  const minScore = document.getElementById("min_score").value;
  if (minScore !== "") query.set("min_score", minScore);
  if (document.getElementById("dissolve").checked) query.set("dissolve", "true");
  for (const name of ["when", "from", "to"]) {
    const value = document.getElementById(name).value.trim();
    if (value) query.set(name, value);
  }
  for (const kind of ["like", "unlike"]) for (const tileId of marks[kind]) query.append(kind, tileId);
  setStatus("searching…");
  const pageParams = new URLSearchParams(query);
  if (token) pageParams.set("token", token);
  history.replaceState(null, "", `?${pageParams}`);
  api(`search?${query}`).then(draw).catch((error) => setStatus(error.message, true));
}

document.getElementById("search").addEventListener("submit", (event) => { event.preventDefault(); search(); });
document.getElementById("imagery").addEventListener("change", (event) => showImagery(event.target.value));
document.getElementById("clear-labels").addEventListener("click", () => {
  marks.like = [];
  marks.unlike = [];
  showMarks();
  search();
});
showMarks();

function showScenes(info) {  // the scene filter and the classes offered by "this tile is a …"
  const select = document.getElementById("scene");
  const chosen = select.value;
  while (select.options.length > 1) select.remove(1);
  const known = document.getElementById("known-scenes");
  known.innerHTML = "";
  for (const scene of info.scenes || []) {
    select.add(new Option(scene, scene));
    known.appendChild(new Option(scene));
  }
  select.value = chosen;
}

function loadScenes() {
  api("info").then(showScenes).catch((error) => setStatus(error.message, true));
}

api("info").then((info) => {
  showScenes(info);
  if (params.get("scene")) document.getElementById("scene").value = params.get("scene");
  const dates = document.getElementById("known-dates");
  for (const date of info.dates || []) dates.appendChild(new Option(date));
  document.getElementById("dates").hidden = !(info.dates || []).length;
  document.title = `georet — ${info.tiles} tiles`;
}).catch((error) => setStatus(error.message, true)).finally(() => {
  if (params.get("k")) document.getElementById("k").value = params.get("k");
  if (params.get("min_score")) document.getElementById("min_score").value = params.get("min_score");
  document.getElementById("dissolve").checked = params.get("dissolve") === "true";
  if (params.get("q")) document.getElementById("q").value = params.get("q");
  for (const name of ["when", "from", "to"]) if (params.get(name)) document.getElementById(name).value = params.get(name);
  if (params.get("q") || marks.like.length) search();
});

api("imagery").then((layers) => {
  imageryLayers = layers;
  const dates = [...new Set(layers.filter((l) => !l.error).map((l) => l.acquired || "undated"))].sort();
  const select = document.getElementById("imagery");
  for (const date of dates) select.add(new Option(date, date));
  document.getElementById("imagery-row").hidden = !dates.length;
  if (dates.length) showImagery(params.get("imagery") || dates[dates.length - 1]);  // the latest by default
}).catch((error) => setStatus(error.message, true));
