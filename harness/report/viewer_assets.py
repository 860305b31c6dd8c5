"""The sample viewer's styles and script (viewer.py writes them into DIR/index.html).

The script builds every element with createElement and fills it with textContent: text from a
results file is never parsed as HTML.
"""

VIEWER_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f}
header{padding:.8rem 1rem .2rem}h1{font-size:1.3rem;margin:0}.meta{color:#666;margin:.2rem 0}
#controls{display:flex;flex-wrap:wrap;gap:.4rem .9rem;padding:.5rem 1rem;background:#f5f5f7;position:sticky;top:0;z-index:2;border-bottom:1px solid #ddd}
#controls label{font-size:.85rem;color:#444}#controls select,#controls input{font:inherit;font-size:.9rem}
#controls input[type=number]{width:5.5rem}#controls input[type=search]{width:14rem}
main{padding:0 1rem 1rem}#status{color:#444;margin:.5rem 0}
table{border-collapse:collapse;width:100%;table-layout:fixed}th,td{padding:.3rem .5rem;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600;font-size:.85rem}td.num,th.num{text-align:right;width:7.5rem;font-variant-numeric:tabular-nums}th.num{overflow-wrap:anywhere}
th.doc{width:7rem}tbody tr{cursor:pointer}tbody tr:hover{background:#f0f6ff}
td .clip{display:block;max-height:4.4em;overflow:hidden;white-space:pre-wrap;word-break:break-word}
.up{color:#1a7f37}.down{color:#cf222e}.pager{display:flex;gap:1rem;align-items:center;margin:.6rem 0}
dialog{width:min(70rem,94vw);max-height:88vh;border:1px solid #ccc;border-radius:6px;padding:1rem 1.2rem}
dialog .close{float:right;font-size:1.2rem;border:none;background:none;cursor:pointer}
dialog h2{font-size:1rem;margin:.2rem 0 .6rem}dialog h3{font-size:.85rem;color:#555;margin:.8rem 0 .2rem}
dialog pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f9;padding:.5rem;margin:0;max-height:22rem;overflow:auto;font-size:.85rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8rem}ins{background:#d7f5dd;text-decoration:none}del{background:#ffd8d3}
.scores td{padding:.1rem .6rem .1rem 0;border:none}
"""

VIEWER_JS = r"""
(function () {
  "use strict";
  var PAGE = 50;
  var manifest = JSON.parse(document.getElementById("manifest").textContent);
  var sets = manifest.sets, loaded = {}, waiting = {};
  var state = {page: 0, rows: []};
  var $ = function (id) { return document.getElementById(id); };
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function option(select, value, text) { var o = el("option", text); o.value = value; select.appendChild(o); }
  window.harnessData = function (id, rows) {
    loaded[id] = rows;
    (waiting[id] || []).forEach(function (f) { f(rows); });
    delete waiting[id];
  };
  function load(id, done) {
    if (loaded[id]) { done(loaded[id]); return; }
    if (waiting[id]) { waiting[id].push(done); return; }
    waiting[id] = [done];
    var s = document.createElement("script");
    s.src = "data/" + encodeURIComponent(id) + ".js";
    s.onerror = function () { $("status").textContent = "could not load " + s.src; };
    document.body.appendChild(s);
  }
  function tasks() {
    var seen = [];
    sets.forEach(function (s) { if (seen.indexOf(s.task) < 0) { seen.push(s.task); } });
    return seen;
  }
  function setsOf(task) { return sets.filter(function (s) { return s.task === task; }); }
  function current() {
    var task = $("task").value, list = setsOf(task);
    var a = list.filter(function (s) { return s.id === $("run-a").value; })[0] || list[0];
    var b = list.filter(function (s) { return s.id === $("run-b").value; })[0] || null;
    return {task: task, a: a, b: b && b !== a ? b : null};
  }
  function fillRuns() {
    var list = setsOf($("task").value), a = $("run-a"), b = $("run-b");
    var keepA = a.value, keepB = b.value;
    a.textContent = ""; b.textContent = "";
    option(b, "", "— none —");
    list.forEach(function (s) { option(a, s.id, s.model + " (" + s.n + ")"); option(b, s.id, s.model); });
    if (list.some(function (s) { return s.id === keepA; })) { a.value = keepA; }
    if (list.some(function (s) { return s.id === keepB; })) { b.value = keepB; }
  }
  function fillMetrics() {
    var c = current(), m = $("metric"), keep = m.value;
    m.textContent = "";
    c.a.metrics.forEach(function (name) { option(m, name, name + (c.a.higher[name] === false ? " ↓" : " ↑")); });
    if (c.a.metrics.indexOf(keep) >= 0 && !state.taskChanged) { m.value = keep; }
    else if (c.a.primary) { m.value = c.a.primary; }
    state.taskChanged = false;
    var s = $("sort"), keepSort = s.value;
    s.textContent = "";
    if (c.b) { option(s, "change", "largest change first"); }
    option(s, "doc", "document order");
    option(s, "asc", "score, lowest first");
    option(s, "desc", "score, highest first");
    if (keepSort && Array.prototype.some.call(s.options, function (o) { return o.value === keepSort; })
        && !(c.b && !state.hadB)) { s.value = keepSort; }
    state.hadB = !!c.b;
  }
  function pairRows(a, b) {
    if (!b) { return a.map(function (r) { return {a: r, b: null}; }); }
    var byDoc = {}, seen = {};
    b.forEach(function (r) { var n = (seen[r.doc] = (seen[r.doc] || 0) + 1); byDoc[r.doc + "#" + n] = r; });
    seen = {};
    return a.map(function (r) { var n = (seen[r.doc] = (seen[r.doc] || 0) + 1); return {a: r, b: byDoc[r.doc + "#" + n] || null}; });
  }
  function score(r, metric) { return r && Object.prototype.hasOwnProperty.call(r.scores, metric) ? r.scores[metric] : null; }
  var generation = 0;
  function refresh() {
    var c = current(), metric = $("metric").value, mine = ++generation;
    $("summary").textContent = sets.length + " sample sets · " + tasks().length + " tasks · from the results files' per-sample records";
    load(c.a.id, function (rowsA) {
      var go = function (rowsB) {
        if (mine !== generation) { return; }  /* a later change is being shown instead */
        metric = $("metric").value;
        var q = $("search").value.trim().toLowerCase();
        var lo = $("min").value === "" ? null : parseFloat($("min").value);
        var hi = $("max").value === "" ? null : parseFloat($("max").value);
        var rows = pairRows(rowsA, rowsB).filter(function (p) {
          if (q) {
            var hay = [p.a.doc, p.a.prompt, p.a.output, p.a.target, p.b ? p.b.output : ""].join("\n").toLowerCase();
            if (hay.indexOf(q) < 0) { return false; }
          }
          var v = score(p.a, metric);
          if ((lo !== null || hi !== null) && v === null) { return false; }
          return (lo === null || v >= lo) && (hi === null || v <= hi);
        });
        var sort = $("sort").value;
        var key = function (p) {
          if (sort === "change") {
            var x = score(p.a, metric), y = score(p.b, metric);
            return x === null || y === null ? -1 : Math.abs(y - x);
          }
          return score(p.a, metric);
        };
        if (sort !== "doc") {
          rows = rows.map(function (p, i) { return {p: p, i: i, k: key(p)}; });
          rows.sort(function (x, y) {
            if (x.k === null || y.k === null) { return (x.k === null) - (y.k === null) || x.i - y.i; }
            var d = sort === "asc" ? x.k - y.k : y.k - x.k;
            return d || x.i - y.i;
          });
          rows = rows.map(function (x) { return x.p; });
        }
        state.rows = rows;
        state.pages = Math.max(1, Math.ceil(rows.length / PAGE));
        state.page = Math.min(state.page, state.pages - 1);
        render(c, metric);
        document.body.dataset.shown = String(mine);
      };
      if (c.b) { load(c.b.id, go); } else { go(null); }
    });
  }
  function fmt(v) { return v === null || v === undefined ? "—" : (Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4).replace(/\.?0+$/, "")); }
  function render(c, metric) {
    var head = $("samples").tHead, body = $("samples").tBodies[0];
    head.textContent = ""; body.textContent = "";
    var tr = el("tr");
    tr.appendChild(el("th", "document", "doc"));
    tr.appendChild(el("th", metric + (c.b ? " (run)" : ""), "num"));
    if (c.b) { tr.appendChild(el("th", metric + " (against)", "num")); tr.appendChild(el("th", "change", "num")); }
    var rowsA = loaded[c.a.id] || [];
    var has = function (field) { return rowsA.some(function (r) { return r[field] !== ""; }); };
    var cols = c.b ? (has("output") ? ["output", "output (against)"] : ["target"])
                   : ["prompt", "output", "target"].filter(has);
    cols.forEach(function (name) { tr.appendChild(el("th", c.b && name === "output" ? "output (run)" : name)); });
    head.appendChild(tr);
    var start = state.page * PAGE;
    state.rows.slice(start, start + PAGE).forEach(function (p, i) {
      var row = el("tr");
      row.dataset.index = String(start + i);
      row.appendChild(el("td", p.a.doc));
      var x = score(p.a, metric);
      row.appendChild(el("td", fmt(x), "num"));
      if (c.b) {
        var y = score(p.b, metric);
        row.appendChild(el("td", fmt(y), "num"));
        var d = x === null || y === null ? null : y - x;
        var better = d === null || d === 0 ? "" : ((d > 0) === (c.a.higher[metric] !== false) ? "up" : "down");
        row.appendChild(el("td", d === null ? "—" : (d > 0 ? "+" : "") + fmt(d), "num " + better));
      }
      cols.forEach(function (name) {
        var text = name === "output (against)" ? (p.b ? p.b.output : "(no such document)") : p.a[name];
        var td = el("td"); td.appendChild(el("span", text, "clip")); row.appendChild(td);
      });
      row.addEventListener("click", function () { openDetail(c, p); });
      body.appendChild(row);
    });
    var total = c.a.n;
    $("status").textContent = state.rows.length + " of " + total + " samples" + (c.b ? ", paired by document id" : "");
    $("page").textContent = "page " + (state.page + 1) + " of " + state.pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= state.pages - 1;
  }
  function words(text) { return text.split(/(\s+)/).filter(function (w) { return w !== ""; }); }
  function wordDiff(a, b) {
    /* longest common subsequence of words; outputs longer than 3000 words are shown undiffed */
    var x = words(a), y = words(b), n = x.length, m = y.length;
    if (n * m > 9e6) { return [["del", a], ["ins", b]]; }
    var dp = new Array(n + 1);
    for (var i = 0; i <= n; i++) { dp[i] = new Uint32Array(m + 1); }
    for (i = n - 1; i >= 0; i--) { for (var j = m - 1; j >= 0; j--) {
      dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
    } }
    var out = [], push = function (kind, w) {
      if (out.length && out[out.length - 1][0] === kind) { out[out.length - 1][1] += w; } else { out.push([kind, w]); }
    };
    i = 0; j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { push("same", x[i]); i++; j++; }
      else if (dp[i + 1][j] >= dp[i][j + 1]) { push("del", x[i]); i++; }
      else { push("ins", y[j]); j++; }
    }
    while (i < n) { push("del", x[i++]); }
    while (j < m) { push("ins", y[j++]); }
    return out;
  }
  function block(parent, title, text) {
    parent.appendChild(el("h3", title));
    parent.appendChild(el("pre", text === "" ? "(empty)" : text));
  }
  function scoresTable(parent, title, r) {
    parent.appendChild(el("h3", title));
    var t = el("table", null, "scores");
    Object.keys(r.scores).forEach(function (k) { var tr = el("tr"); tr.appendChild(el("td", k)); tr.appendChild(el("td", fmt(r.scores[k]))); t.appendChild(tr); });
    parent.appendChild(t);
  }
  function openDetail(c, p) {
    var box = $("detail-body");
    box.textContent = "";
    box.appendChild(el("h2", c.task + " · " + p.a.doc));
    block(box, "prompt", p.a.prompt);
    if (p.a.choices) { block(box, "choices", p.a.choices.join("\n")); }
    block(box, "target", p.a.target);
    if (c.b) {
      box.appendChild(el("h3", "output: " + c.a.model + " → " + c.b.model + " (word diff: removed, added)"));
      var diff = el("pre", null, "diff");
      wordDiff(p.a.output, p.b ? p.b.output : "").forEach(function (part) {
        diff.appendChild(part[0] === "same" ? document.createTextNode(part[1]) : el(part[0], part[1]));
      });
      box.appendChild(diff);
      var pair = el("div", null, "pair"), left = el("div"), right = el("div");
      block(left, "output · " + c.a.model, p.a.output);
      scoresTable(left, "scores · " + c.a.model, p.a);
      if (p.b) { block(right, "output · " + c.b.model, p.b.output); scoresTable(right, "scores · " + c.b.model, p.b); }
      pair.appendChild(left); pair.appendChild(right); box.appendChild(pair);
    } else {
      block(box, "output · " + c.a.model, p.a.output);
      scoresTable(box, "scores", p.a);
    }
    $("detail").showModal();
  }
  function reset() { state.page = 0; refresh(); }
  tasks().forEach(function (t) { option($("task"), t, t); });
  $("task").addEventListener("change", function () { state.taskChanged = true; fillRuns(); fillMetrics(); reset(); });
  $("run-a").addEventListener("change", function () { fillMetrics(); reset(); });
  $("run-b").addEventListener("change", function () { fillMetrics(); reset(); });
  ["metric", "sort"].forEach(function (id) { $(id).addEventListener("change", reset); });
  ["search", "min", "max"].forEach(function (id) { $(id).addEventListener("input", reset); });
  $("prev").addEventListener("click", function () { if (state.page > 0) { state.page--; refresh(); } });
  $("next").addEventListener("click", function () { if (state.page < state.pages - 1) { state.page++; refresh(); } });
  fillRuns(); fillMetrics(); refresh();
})();
"""
