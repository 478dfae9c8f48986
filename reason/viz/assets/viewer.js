/* reason tree viewer: draws the searches held in <script id="reason-data"> (docs/viewer.md).
 *
 * Input (docs/tree-schema.md): {version, title, panes: [i] or [i, j], views: [view, ...]}; a view
 * is {label, problem, strategy, answer, gold, correct, chosen, candidates, ledger, info, tree,
 * pieces}, tree is Tree.to_dict() ({version, meta, ledger, nodes: [{id, parent, token_ids, text,
 * logprobs, count, depth, finish_reason, scores, extra}]}).
 *
 * The page shows one or two views side by side. Each pane lays its tree out top-down (leaves on a
 * grid, a parent centred over its children), draws it as SVG, and zooms (wheel, buttons) and pans
 * (drag). Clicking a node shows its text, scores and strategy state; its toggle collapses or expands
 * its subtree. The chosen answer's path is marked (class "on-path"). Text from the model is only
 * ever set with textContent. Nothing is fetched.
 *
 * For tests: every drawn node is <g class="node" data-id=ID> inside <section class="pane">,
 * its collapse control is the child with class "toggle", and window.reasonViewer.ready is true
 * once the first drawing is done (openedMs: performance.now() at that moment; startedMs: when the
 * script began; paintedMs: two animation frames after openedMs).
 */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var DX = 24, DY = 60;
  var LABEL_ZOOM = 1.2;  // in trees over LABEL_NODES nodes, step texts are drawn only from this zoom on
  var LABEL_NODES = 600;
  var CHAR = 5.6;  // the width of one label character (9px monospace), in tree units
  var ENDED = {eos: true, answer: true, max_depth: true, repetition: true};
  var FINISH_COLOURS = {eos: "#3c9a5f", answer: "#3c9a5f", stop: "#4a7fc1", segment: "#7a68c6", length: "#d98c2b",
    max_depth: "#c4453c", repetition: "#c4453c"};
  var LEDGER = [["prompt_tokens", "prompt tokens"], ["prefill_tokens", "prefill"], ["generated_tokens", "generated"],
    ["merged_tokens", "merged"], ["unique_tree_tokens", "tree tokens"], ["draft_proposed", "drafts proposed"],
    ["draft_accepted", "drafts accepted"], ["forward_passes", "forwards"], ["prm_calls", "PRM calls"],
    ["value_calls", "value calls"], ["wall_seconds", "wall"]];

  var STARTED = performance.now();  // the script's start: openedMs - startedMs is the viewer's own work
  var DATA = JSON.parse(document.getElementById("reason-data").textContent);

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmt(v) {
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
  }
  function short(text, n) {
    var t = String(text || "").replace(/\s+/g, " ").trim();
    return t.length > n ? t.slice(0, n - 1) + "…" : t;
  }

  /* ---- one tree's index: records with children, depth, the chosen path, candidates ---------- */
  function indexView(view) {
    var byId = new Map(), root = null;
    view.tree.nodes.forEach(function (n) {
      byId.set(n.id, {n: n, kids: [], parent: null, collapsed: false, size: 1, depth: 0, x: 0, y: 0});
    });
    view.tree.nodes.forEach(function (n) {
      var r = byId.get(n.id);
      if (n.parent === null || !byId.has(n.parent)) { if (!root) root = r; return; }
      r.parent = byId.get(n.parent);
      r.parent.kids.push(r);
    });
    byId.forEach(function (r) { r.kids.sort(function (a, b) { return a.n.id - b.n.id; }); });
    var order = [root], i;
    for (i = 0; i < order.length; i++) {
      var kids = order[i].kids;
      for (var j = 0; j < kids.length; j++) { kids[j].depth = order[i].depth + 1; order.push(kids[j]); }
    }
    for (i = order.length - 1; i > 0; i--) order[i].parent.size += order[i].size;
    var onPath = new Set(), cur = view.chosen === null || view.chosen === undefined ? null : byId.get(view.chosen);
    while (cur) { onPath.add(cur.n.id); cur = cur.parent; }
    var cands = new Map();
    (view.candidates || []).forEach(function (c, k) { cands.set(c.node_id, k); });
    var keys = new Set();
    view.tree.nodes.forEach(function (n) { Object.keys(n.scores || {}).forEach(function (k) { keys.add(k); }); });
    var ranges = {};
    keys.forEach(function (k) {
      var lo = Infinity, hi = -Infinity;
      view.tree.nodes.forEach(function (n) {
        var v = (n.scores || {})[k];
        if (typeof v === "number") { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      });
      ranges[k] = [lo, hi];
    });
    return {byId: byId, root: root, onPath: onPath, cands: cands, scoreKeys: Array.from(keys), ranges: ranges,
      particle: particleSteps(view.info || {})};
  }

  /* Particle filtering's history: for each node, the steps where it was in the pool, its weight there
   * (when the step did not resample) and how many slots resampling gave it. */
  function particleSteps(info) {
    var out = new Map();
    (Array.isArray(info.history) ? info.history : []).forEach(function (h) {
      if (!h || !Array.isArray(h.pool)) return;
      var picks = {};
      (h.picks || []).forEach(function (p) { picks[p] = (picks[p] || 0) + 1; });
      h.pool.forEach(function (id, i) {
        var w = !h.resampled && Array.isArray(h.weights) && h.weights.length === h.pool.length ? h.weights[i] : null;
        if (!out.has(id)) out.set(id, []);
        out.get(id).push({iteration: h.iteration, step: h.step, weight: w, picked: picks[i] || 0, ess: h.ess});
      });
    });
    return out;
  }

  /* ---- layout: visible leaves on a grid in depth-first order, parents centred over children ---- */
  function layout(ix) {
    var order = [], stack = [ix.root];
    while (stack.length) {
      var r = stack.pop();
      order.push(r);
      if (!r.collapsed) for (var i = r.kids.length - 1; i >= 0; i--) stack.push(r.kids[i]);
    }
    var next = 0;
    order.forEach(function (r) {
      r.y = r.depth * DY;
      if (r.collapsed || !r.kids.length) r.x = (next++) * DX;
    });
    for (var k = order.length - 1; k >= 0; k--) {
      var p = order[k];
      if (!p.collapsed && p.kids.length) p.x = (p.kids[0].x + p.kids[p.kids.length - 1].x) / 2;
    }
    return order;
  }

  function radius(r) { return 5 + 2 * Math.log2(Math.max(1, r.n.count || 1)); }

  function colour(pane, r) {
    var by = pane.colourBy, n = r.n;
    if (by === "finish") return FINISH_COLOURS[n.finish_reason] || "#9aa0a6";
    if (by && by.indexOf("score:") === 0) {
      var key = by.slice(6), v = (n.scores || {})[key], range = pane.ix.ranges[key];
      if (typeof v !== "number") return "#d0d3d6";
      var t = range[1] > range[0] ? (v - range[0]) / (range[1] - range[0]) : 1;
      return "hsl(" + Math.round(120 * t) + ",62%,48%)";
    }
    return "#9aa0a6";
  }

  /* ---- drawing ---------------------------------------------------------------------------- */
  function draw(pane) {
    pane.labelled = pane.k >= LABEL_ZOOM || pane.ix.byId.size <= LABEL_NODES;
    var ix = pane.ix, order = layout(ix), plain = [], chosen = [], last = {};
    order.forEach(function (r) {  // the room to the next node of the same row, for its label
      r.room = Infinity;
      r.roomLeft = last[r.depth] ? r.x - last[r.depth].x : Infinity;
      if (last[r.depth]) last[r.depth].room = r.x - last[r.depth].x;
      last[r.depth] = r;
    });
    var frag = document.createDocumentFragment();
    order.forEach(function (r) {
      var id = r.n.id, rad = radius(r);
      if (r.parent) {
        var seg = "M" + r.parent.x + "," + (r.parent.y + radius(r.parent)) + "L" + r.x + "," + (r.y - rad);
        (ix.onPath.has(id) ? chosen : plain).push(seg);
      }
      var cls = "node";
      if (ix.onPath.has(id)) cls += " on-path";
      if (id === pane.view.chosen) cls += " chosen";
      if (ix.cands.has(id)) cls += " candidate";
      if (ENDED[r.n.finish_reason]) cls += " ended";
      if (r.collapsed) cls += " collapsed";
      if (id === pane.selected) cls += " selected";
      var g = svg("g", {"class": cls, "data-id": id, transform: "translate(" + r.x + "," + r.y + ")"});
      g.appendChild(svg("circle", {r: rad, fill: colour(pane, r)}));
      if ((r.n.count || 1) > 1) {
        var c = svg("text", {"class": "count", y: 3});
        c.textContent = r.n.count;
        g.appendChild(c);
      }
      var chars = Math.min(24, Math.floor((r.room - rad - 8) / CHAR)), left = false;
      if (chars < 3 && ix.onPath.has(id)) {  // the chosen path's steps take the room on their left if need be
        chars = Math.min(24, Math.floor((r.roomLeft - rad - 8) / CHAR));
        left = true;
      }
      if (pane.labelled && chars >= 3) {
        var label = svg("text", {"class": left ? "label left" : "label", x: left ? -rad - 3 : rad + 3, y: -rad});
        label.textContent = r.parent ? short(r.n.text, chars) : "prompt";
        g.appendChild(label);
      }
      if (r.kids.length) {
        var t = svg("g", {"class": "toggle", transform: "translate(0," + (rad + 7) + ")"});
        t.appendChild(svg("rect", {x: -5, y: -5, width: 10, height: 10, rx: 2}));
        var s = svg("text", {y: 3.5});
        s.textContent = r.collapsed ? "+" : "−";
        t.appendChild(s);
        g.appendChild(t);
        if (r.collapsed) {
          var hidden = svg("text", {"class": "hidden-count", y: rad + 22});
          hidden.textContent = "+" + (r.size - 1);
          g.appendChild(hidden);
        }
      }
      frag.appendChild(g);
      r.el = g;
    });
    pane.edges.setAttribute("d", plain.join(""));
    pane.chosenEdges.setAttribute("d", chosen.join(""));
    pane.nodes.textContent = "";
    pane.nodes.appendChild(frag);
    pane.order = order;
    pane.shown.textContent = order.length + " of " + ix.byId.size + " nodes shown";
  }

  /* ---- zoom and pan ----------------------------------------------------------------------- */
  function apply(pane) {
    pane.viewport.setAttribute("transform", "translate(" + pane.tx + "," + pane.ty + ") scale(" + pane.k + ")");
    if ((pane.k >= LABEL_ZOOM || pane.ix.byId.size <= LABEL_NODES) !== pane.labelled) draw(pane);
  }
  function fit(pane, measured) {
    var lo = Infinity, hi = -Infinity, bottom = 0;
    pane.order.forEach(function (r) { lo = Math.min(lo, r.x); hi = Math.max(hi, r.x); bottom = Math.max(bottom, r.y); });
    var box = measured || pane.svg.getBoundingClientRect(), w = Math.max(box.width, 100), h = Math.max(box.height, 100);
    var k = Math.min((w - 60) / Math.max(hi - lo, 1), (h - 60) / Math.max(bottom, 1), 1.6);
    pane.k = Math.max(k, 0.05);
    pane.tx = w / 2 - pane.k * (lo + hi) / 2;
    pane.ty = 30;
    apply(pane);
  }
  function zoom(pane, factor, cx, cy) {
    var k = Math.min(Math.max(pane.k * factor, 0.02), 12);
    pane.tx = cx - (cx - pane.tx) * (k / pane.k);
    pane.ty = cy - (cy - pane.ty) * (k / pane.k);
    pane.k = k;
    apply(pane);
  }
  function centre(pane, r) {
    var box = pane.svg.getBoundingClientRect();
    pane.tx = box.width / 2 - pane.k * r.x;
    pane.ty = box.height / 3 - pane.k * r.y;
    apply(pane);
  }

  /* ---- the node panel --------------------------------------------------------------------- */
  function row(dl, key, value) {
    dl.appendChild(el("dt", null, key));
    dl.appendChild(el("dd", null, value));
  }
  function tokenColour(lp) {
    var p = Math.exp(lp);
    return "hsl(" + Math.round(120 * p) + ",70%," + Math.round(82 - 10 * p) + "%)";
  }
  function tokenSpans(pane, n) {
    var box = el("div", "tokens");
    var pieces = pane.view.pieces ? pane.view.pieces[String(n.id)] : null;
    var lps = n.logprobs || [];
    if (!pieces && (n.text || "").length === (n.token_ids || []).length) pieces = Array.from(n.text);
    if (!lps.length) { box.appendChild(el("p", "note", "no logprobs were recorded for this node")); return box; }
    if (!pieces) box.appendChild(el("p", "note", "token texts were not saved; token ids shown (reason view --model decodes them)"));
    lps.forEach(function (lp, i) {
      var s = el("span", "tok", pieces ? pieces[i] : "#" + n.token_ids[i] + " ");
      s.style.backgroundColor = tokenColour(lp);
      s.title = "token " + n.token_ids[i] + " · logprob " + lp.toFixed(3) + " · p " + Math.exp(lp).toFixed(3);
      box.appendChild(s);
    });
    return box;
  }
  function pathText(pane, r) {
    var parts = [];
    for (var c = r; c && c.parent; c = c.parent) parts.push(c.n.text || "");
    return parts.reverse().join("");
  }
  function stateRows(dl, pane, n) {
    var extra = n.extra || {};
    Object.keys(extra).forEach(function (key) {
      var v = extra[key];
      if (key === "mcts" && v && typeof v === "object") {
        var q = v.N ? v.W / v.N : null;
        row(dl, "MCTS", "N " + v.N + " · Q " + (q === null ? "–" : fmt(q)) + " · prior " + fmt(v.P) +
          (v.E && v.V !== null && v.V !== undefined ? " · leaf value " + fmt(v.V) : "") +
          " · samples drawn " + v.M);
      } else if (Array.isArray(v) && v.every(function (x) { return typeof x === "number"; })) {
        row(dl, key, v.map(fmt).join(", "));
      } else {
        row(dl, key, typeof v === "object" ? short(JSON.stringify(v), 160) : fmt(v));
      }
    });
    var steps = pane.ix.particle.get(n.id);
    if (steps) {
      row(dl, "particle", steps.map(function (s) {
        return "step " + s.step + (s.iteration ? " (sweep " + s.iteration + ")" : "") +
          (s.weight !== null ? " w " + fmt(s.weight) : "") + (s.picked ? " picked ×" + s.picked : "");
      }).join("; "));
    }
  }
  function showNode(pane, id) {
    var r = pane.ix.byId.get(id);
    if (!r) return;
    if (pane.selected !== null && pane.ix.byId.get(pane.selected) && pane.ix.byId.get(pane.selected).el)
      pane.ix.byId.get(pane.selected).el.classList.remove("selected");
    pane.selected = id;
    if (r.el) r.el.classList.add("selected");
    var n = r.n, box = pane.detail;
    box.textContent = "";
    var head = (r.parent ? "node " + id : "root (prompt)") + (pane.ix.onPath.has(id) ? " · on the chosen path" : "");
    box.appendChild(el("h3", null, head));
    var dl = el("dl");
    row(dl, "depth", r.depth);
    row(dl, "multiplicity", "×" + (n.count || 1));
    row(dl, "finish", n.finish_reason || "–");
    row(dl, "tokens", (n.token_ids || []).length);
    row(dl, "children", r.kids.length + (r.size > 1 ? " (subtree " + r.size + " nodes)" : ""));
    Object.keys(n.scores || {}).forEach(function (k) { row(dl, k, fmt(n.scores[k])); });
    if (pane.ix.cands.has(id)) {
      var c = pane.view.candidates[pane.ix.cands.get(id)];
      row(dl, "candidate", "answer " + c.answer + (c.score !== null && c.score !== undefined ? " · score " + fmt(c.score) : ""));
    }
    stateRows(dl, pane, n);
    box.appendChild(dl);
    box.appendChild(el("h4", null, r.parent ? "step text" : "prompt"));
    if (pane.tokens.checked && r.parent) box.appendChild(tokenSpans(pane, n));
    else box.appendChild(el("pre", "step", n.text || ""));
    if (r.parent) {
      box.appendChild(el("h4", null, "path from the prompt"));
      box.appendChild(el("pre", "path", pathText(pane, r)));
    }
  }

  function reveal(pane, id) {
    var r = pane.ix.byId.get(id), changed = false;
    for (var c = r && r.parent; c; c = c.parent) if (c.collapsed) { c.collapsed = false; changed = true; }
    if (changed) draw(pane);
    if (r) { showNode(pane, id); centre(pane, r); }
  }

  /* ---- the pane ------------------------------------------------------------------------- */
  function summary(view) {
    var box = el("div", "summary");
    box.appendChild(el("h2", null, view.label));
    if (view.problem) box.appendChild(el("p", "problem", short(view.problem, 400)));
    var ans = el("p", "answer");
    ans.appendChild(el("b", null, "answer: "));
    ans.appendChild(el("span", "value", view.answer === null || view.answer === undefined ? "none" : view.answer));
    if (view.strategy) ans.appendChild(el("span", "muted", " · " + view.strategy));
    if (view.gold !== null && view.gold !== undefined) ans.appendChild(el("span", "muted", " · gold " + view.gold));
    if (view.correct === true) ans.appendChild(el("span", "right", " ✓ correct"));
    if (view.correct === false) ans.appendChild(el("span", "wrong", " ✗ wrong"));
    box.appendChild(ans);
    var led = el("div", "ledger"), ledger = view.ledger || {};
    LEDGER.forEach(function (pair) {
      if (ledger[pair[0]] === undefined) return;
      var v = pair[0] === "wall_seconds" ? ledger[pair[0]].toFixed(2) + " s" : fmt(ledger[pair[0]]);
      var chip = el("span", "chip");
      chip.appendChild(el("span", "muted", pair[1] + " "));
      chip.appendChild(el("b", null, v));
      led.appendChild(chip);
    });
    box.appendChild(led);
    return box;
  }

  function candidateTable(pane) {
    var view = pane.view, wrap = el("div", "candidates");
    wrap.appendChild(el("h3", null, "candidates (" + (view.candidates || []).length + ")"));
    var extra = [], info = view.info || {}, n = (view.candidates || []).length;
    Object.keys(info).forEach(function (key) {  // info lists aligned with the candidates (e.g. TreePO advantages)
      var v = info[key];
      if (Array.isArray(v) && v.length === n && n && v.every(function (x) { return typeof x === "number"; })) extra.push([key, v]);
      else if (v && typeof v === "object" && !Array.isArray(v)) Object.keys(v).forEach(function (sub) {
        var w = v[sub];
        if (Array.isArray(w) && w.length === n && n && w.every(function (x) { return typeof x === "number"; }))
          extra.push([key + " " + sub, w]);
      });
    });
    var table = el("table"), head = el("tr");
    ["", "answer", "score", "×", "node"].concat(extra.map(function (e) { return e[0]; })).forEach(function (h) {
      head.appendChild(el("th", null, h));
    });
    table.appendChild(head);
    (view.candidates || []).forEach(function (c, i) {
      var tr = el("tr", c.node_id === view.chosen ? "chosen" : "");
      tr.dataset.node = c.node_id;
      tr.appendChild(el("td", null, c.node_id === view.chosen ? "★" : ""));
      tr.appendChild(el("td", null, c.answer === null ? "none" : c.answer));
      tr.appendChild(el("td", null, c.score === null || c.score === undefined ? "–" : fmt(c.score)));
      tr.appendChild(el("td", null, c.count || 1));
      tr.appendChild(el("td", null, c.node_id));
      extra.forEach(function (e) { tr.appendChild(el("td", null, fmt(e[1][i]))); });
      tr.addEventListener("click", function () { reveal(pane, c.node_id); });
      table.appendChild(tr);
    });
    wrap.appendChild(table);
    return wrap;
  }

  function button(text, title, fn) {
    var b = el("button", null, text);
    b.type = "button";
    b.title = title;
    b.addEventListener("click", fn);
    return b;
  }

  function makePane(slot, index) {
    var view = DATA.views[index];
    var pane = {view: view, ix: indexView(view), k: 1, tx: 0, ty: 0, selected: null, order: []};
    pane.colourBy = pane.ix.scoreKeys.length ? "score:" + pane.ix.scoreKeys[0] : "finish";
    var sec = el("section", "pane");
    sec.dataset.pane = slot;
    sec.dataset.view = index;
    sec.appendChild(summary(view));
    var bar = el("div", "toolbar");
    bar.appendChild(button("fit", "fit the tree in the pane", function () { fit(pane); }));
    bar.appendChild(button("+", "zoom in", function () { var b = pane.svg.getBoundingClientRect(); zoom(pane, 1.4, b.width / 2, b.height / 2); }));
    bar.appendChild(button("−", "zoom out", function () { var b = pane.svg.getBoundingClientRect(); zoom(pane, 1 / 1.4, b.width / 2, b.height / 2); }));
    bar.appendChild(button("expand all", "show every node", function () {
      pane.ix.byId.forEach(function (r) { r.collapsed = false; }); draw(pane); fit(pane);
    }));
    bar.appendChild(button("chosen path", "collapse everything off the chosen path", function () {
      pane.ix.byId.forEach(function (r) { r.collapsed = r.kids.length > 0 && !pane.ix.onPath.has(r.n.id); });
      draw(pane); fit(pane);
    }));
    var pick = el("select", "colour-by");
    pick.title = "colour nodes by";
    pane.ix.scoreKeys.map(function (k) { return ["score:" + k, "score " + k]; }).concat([["finish", "finish reason"]])
      .forEach(function (o) { var opt = el("option", null, o[1]); opt.value = o[0]; pick.appendChild(opt); });
    pick.value = pane.colourBy;
    pick.addEventListener("change", function () { pane.colourBy = pick.value; draw(pane); });
    bar.appendChild(pick);
    var lab = el("label", "tokens-toggle");
    pane.tokens = el("input");
    pane.tokens.type = "checkbox";
    pane.tokens.addEventListener("change", function () { if (pane.selected !== null) showNode(pane, pane.selected); });
    lab.appendChild(pane.tokens);
    lab.appendChild(document.createTextNode(" tokens by logprob"));
    bar.appendChild(lab);
    pane.shown = el("span", "muted shown");
    bar.appendChild(pane.shown);
    sec.appendChild(bar);

    var body = el("div", "body");
    var canvas = el("div", "canvas");
    pane.svg = svg("svg", {"class": "tree"});
    pane.viewport = svg("g", {"class": "viewport"});
    pane.edges = svg("path", {"class": "edges"});
    pane.chosenEdges = svg("path", {"class": "edges chosen-edges"});
    pane.nodes = svg("g", {"class": "nodes"});
    pane.viewport.appendChild(pane.edges);
    pane.viewport.appendChild(pane.chosenEdges);
    pane.viewport.appendChild(pane.nodes);
    pane.svg.appendChild(pane.viewport);
    canvas.appendChild(pane.svg);
    body.appendChild(canvas);
    var side = el("aside", "panel");
    pane.detail = el("div", "detail");
    pane.detail.appendChild(el("p", "note", "click a node to see its text, scores and strategy state; its small box collapses it"));
    side.appendChild(pane.detail);
    side.appendChild(candidateTable(pane));
    body.appendChild(side);
    sec.appendChild(body);

    pane.svg.addEventListener("click", function (e) {
      var g = e.target.closest ? e.target.closest("g.node") : null;
      if (!g || pane.dragged) return;
      var r = pane.ix.byId.get(Number(g.dataset.id));
      if (e.target.closest("g.toggle")) { toggle(pane, r); return; }
      showNode(pane, r.n.id);
    });
    pane.svg.addEventListener("dblclick", function (e) {
      var g = e.target.closest ? e.target.closest("g.node") : null;
      if (g) toggle(pane, pane.ix.byId.get(Number(g.dataset.id)));
    });
    pane.svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      var b = pane.svg.getBoundingClientRect();
      zoom(pane, Math.exp(-e.deltaY * 0.0015), e.clientX - b.left, e.clientY - b.top);
    }, {passive: false});
    pane.svg.addEventListener("pointerdown", function (e) {
      pane.drag = {x: e.clientX, y: e.clientY, tx: pane.tx, ty: pane.ty};
      pane.dragged = false;
    });
    window.addEventListener("pointermove", function (e) {
      if (!pane.drag) return;
      var dx = e.clientX - pane.drag.x, dy = e.clientY - pane.drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) pane.dragged = true;
      pane.tx = pane.drag.tx + dx;
      pane.ty = pane.drag.ty + dy;
      if (pane.dragged) apply(pane);
    });
    window.addEventListener("pointerup", function () {
      pane.drag = null;
      setTimeout(function () { pane.dragged = false; }, 0);
    });
    pane.section = sec;
    return pane;
  }

  function toggle(pane, r) {
    if (!r || !r.kids.length) return;
    r.collapsed = !r.collapsed;
    var before = {x: r.x, y: r.y};
    draw(pane);
    pane.tx += pane.k * (before.x - r.x);  // keep the toggled node where it was on screen
    apply(pane);
  }

  /* ---- the page: pickers and panes ------------------------------------------------------ */
  var panes = [];
  function show(pane, box) {  // the first drawing, fitted to the pane's box measured before its nodes exist
    pane.k = 0;
    draw(pane);
    fit(pane, box);
    if (pane.view.chosen !== null && pane.view.chosen !== undefined) showNode(pane, pane.view.chosen);
  }

  function mount(slot, index) {  // a picker changed: (re)place the pane in ``slot``, refit the other
    var main = document.querySelector("main.panes");
    var old = main.querySelector('section.pane[data-pane="' + slot + '"]');
    var pane = index === null ? null : makePane(slot, index);
    if (!pane) { if (old) old.remove(); }
    else if (old) main.replaceChild(pane.section, old);
    else main.appendChild(pane.section);
    panes[slot] = pane;
    main.classList.toggle("two", main.querySelectorAll("section.pane").length === 2);
    if (pane) show(pane, pane.svg.getBoundingClientRect());
    panes.forEach(function (other) { if (other && other !== pane) fit(other); });
  }

  function picker(slot, allowNone, value) {
    var s = el("select", "picker");
    s.dataset.slot = slot;
    if (allowNone) { var none = el("option", null, "(none: one tree)"); none.value = ""; s.appendChild(none); }
    DATA.views.forEach(function (v, i) { var o = el("option", null, v.label); o.value = String(i); s.appendChild(o); });
    s.value = value === null || value === undefined ? "" : String(value);
    s.addEventListener("change", function () { mount(slot, s.value === "" ? null : Number(s.value)); });
    return s;
  }

  function start() {
    var top = el("header", "top");
    top.appendChild(el("h1", null, DATA.title || "reason · search tree"));
    var picks = el("div", "pickers");
    if (DATA.views.length > 1 || DATA.panes.length > 1) {
      picks.appendChild(el("span", "muted", DATA.views.length + " trees · "));
      picks.appendChild(picker(0, false, DATA.panes[0]));
      picks.appendChild(el("span", "muted", " beside "));
      picks.appendChild(picker(1, true, DATA.panes.length > 1 ? DATA.panes[1] : null));
    }
    top.appendChild(picks);
    var legend = el("div", "legend muted",
      "gold: the chosen answer's path · ★ chosen · dashed ring: candidate · dark ring: path ended · number: multiplicity");
    top.appendChild(legend);
    document.body.appendChild(top);
    document.body.appendChild(el("main", "panes"));
    var main = document.querySelector("main.panes");
    DATA.panes.forEach(function (index, slot) {
      panes[slot] = makePane(slot, index);
      main.appendChild(panes[slot].section);
    });
    main.classList.toggle("two", panes.length === 2);
    var boxes = panes.map(function (pane) { return pane.svg.getBoundingClientRect(); });  // one cheap layout
    panes.forEach(function (pane, slot) { show(pane, boxes[slot]); });
    window.reasonViewer = {ready: true, openedMs: performance.now(), startedMs: STARTED, panes: panes,
      nodes: function (slot) { return panes[slot] ? panes[slot].ix.byId.size : 0; }};
    document.documentElement.dataset.ready = "1";
    requestAnimationFrame(function () {
      requestAnimationFrame(function () { window.reasonViewer.paintedMs = performance.now(); });
    });
  }

  start();
})();
