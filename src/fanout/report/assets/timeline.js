// The timeline renderer, shared by the page of `fanout report --html` and the live dashboard
// of `fanout serve`: `FanoutTimeline.mount(root, data, opts)` draws the Gantt (one row per
// concurrency slot, then the waits' rows) and the charts below it on canvases inside `root`,
// with zoom, pan and a hover card, and returns `{update(data), destroy()}`; the dashboard
// calls update() as a running run's timeline grows. `data` is what report/html.py's
// timeline_data() makes. No network, no library.
"use strict";
(function (global) {
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
                   "#9c755f", "#ff9da7", "#bab0ac", "#86bcb6", "#d4a6c8", "#8cd17d"];
  const WAIT_COLOURS = { deps: "#d9d9d9", queued: "#e8e8e8", lane: "#c6dbef", rpm: "#fdd0a2",
    tpm: "#fdae6b", retry_after: "#fcbba1", circuit: "#fb9a99", budget: "#dadaeb",
    backoff: "#fee391" };
  const FAILED = "#d62728";
  const LEFT = 64, AXIS = 22;
  const laneColour = (i) => PALETTE[i % PALETTE.length];

  const fmt = (s) => s === 0 ? "0" : s < 1 ? (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms"
    : s < 120 ? s.toFixed(s < 10 ? 2 : 1) + " s" : (s / 60).toFixed(1) + " min";
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;",
    ">": "&gt;", '"': "&quot;" })[c]);
  function el(tag, cls, parent) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }
  function resample(s, ts) {
    let j = -1;
    return ts.map((t) => { while (j + 1 < s.t.length && s.t[j + 1] <= t) j++; return j < 0 ? 0 : s.v[j]; });
  }

  // opts.stamp: the element whose data-* attributes record what was drawn (for tests);
  // opts.maxHeight: the Gantt's height in pixels before its rows get thinner
  function mount(root, data, opts) {
    opts = opts || {};
    const stamp = opts.stamp || root;
    const maxHeight = opts.maxHeight || 600;
    root.classList.add("ftl");
    root.textContent = "";
    const summary = el("p", "ftl-summary", root);
    const controls = el("div", "ftl-controls", root);
    const reset = el("button", "ftl-reset", controls);
    reset.type = "button"; reset.textContent = "reset zoom";
    el("span", "", controls).textContent = "wheel: zoom · drag: pan · double-click: reset";
    const legend = el("div", "ftl-legend", root);
    const wrap = el("div", "ftl-gantt-wrap", root);
    const gantt = el("canvas", "ftl-gantt", wrap);
    const chartBox = el("div", "ftl-charts", root);
    const card = el("div", "ftl-card", document.body);
    card.hidden = true;

    let D, Q, END, B, W, nBars, nWaits, waitRows, rows, rowH, byRow, waitByRow;
    let charts = [];
    let v0 = 0, v1 = 1;  // the visible time range, seconds
    let zoomed = false;  // a user's zoom survives updates; otherwise the view follows the run
    let width = 0, drawn = 0;
    const dpr = window.devicePixelRatio || 1;

    function load(data) {
      D = data; Q = D.q; END = D.end; B = D.bars; W = D.waits;
      nBars = B.s.length; nWaits = W ? W.r.length : 0;
      waitRows = W ? W.rows : 0;
      rows = D.slots + (waitRows ? waitRows + 1 : 0);  // one blank row between the bands
      rowH = Math.max(1, Math.min(18, Math.floor(maxHeight / Math.max(rows, 1))));
      if (!zoomed) { v0 = 0; v1 = END; } else { v1 = Math.min(v1, END); v0 = Math.min(v0, v1); }
      // per row, the bars in start order: the hover looks a bar up by binary search
      byRow = new Map();
      for (let i = 0; i < nBars; i++) {
        if (!byRow.has(B.s[i])) byRow.set(B.s[i], []);
        byRow.get(B.s[i]).push(i);
      }
      for (const list of byRow.values()) list.sort((a, b) => B.t0[a] - B.t0[b]);
      waitByRow = new Map();
      for (let i = 0; i < nWaits; i++) {
        const r = D.slots + 1 + W.r[i];
        if (!waitByRow.has(r)) waitByRow.set(r, []);
        waitByRow.get(r).push(i);
      }
      for (const list of waitByRow.values()) list.sort((a, b) => W.t0[a] - W.t0[b]);

      summary.textContent =
        `${D.attempts.toLocaleString()} attempts on ${D.slots} slots over ${fmt(END)}` +
        (B.aggregated ? " (aggregated: each block is the lane busiest in it)" : "") +
        (D.has_spans ? `; ${D.waits_total.toLocaleString()} waits` +
          (W || !D.waits_total ? "" : ` (${D.waits_note}: shown by the waiting chart)`)
          : "; this run's store has no spans: waits are not known");
      let lg = D.lanes.map((l, i) => `<span><i style="background:${laneColour(i)}"></i>lane ${esc(l)}</span>`).join("");
      lg += `<span><i style="background:#fff;border:2px solid ${FAILED}"></i>failed attempt</span>`;
      lg += `<span><i style="background:#555"></i>retry (attempt ≥ 2: dark top edge)</span>`;
      lg += D.wait_kinds.map((k) => `<span><i style="background:${WAIT_COLOURS[k] || "#eee"}"></i>waiting: ${esc(k)}</span>`).join("");
      legend.innerHTML = lg;

      chartBox.textContent = "";
      charts = [];
      const S = D.series;
      addChart("in flight (attempts running) and the concurrency limit",
        { "in flight": S["in flight"], "limit": S.limit_now }, { colours: ["#4e79a7", "#d62728"] });
      addChart("provider budget in use: requests and tokens per minute",
        { "RPM used": S.rpm_used, "TPM used": S.tpm_used }, { colours: ["#59a14f", "#f28e2b"], right: ["TPM used"] });
      addChart("tasks waiting, by cause", D.waiting, { stacked: true });
      for (const ch of charts) listen(ch.c);
    }

    function sizeCanvas(c, w, h) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      c.style.width = w + "px"; c.style.height = h + "px";
      const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0); return g;
    }
    const xOf = (t) => LEFT + (t - v0) / (v1 - v0) * (width - LEFT - 8);
    const tOf = (x) => v0 + (x - LEFT) / (width - LEFT - 8) * (v1 - v0);

    function axis(g, h) {
      g.fillStyle = "#666"; g.strokeStyle = "#eee"; g.font = "11px sans-serif";
      const span = v1 - v0, raw = span / 8, p = Math.pow(10, Math.floor(Math.log10(raw)));
      const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
      for (let t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
        const x = xOf(t);
        g.beginPath(); g.moveTo(x, AXIS - 4); g.lineTo(x, h); g.stroke();
        g.fillText(fmt(t), x + 2, 12);
      }
    }

    function drawGantt() {
      const h = AXIS + rows * rowH + 4;
      const g = sizeCanvas(gantt, width, h);
      g.clearRect(0, 0, width, h);
      axis(g, h);
      const lo = v0 / Q, hi = v1 / Q;
      drawn = 0;
      const fill = (t0, d, y, hh, colour) => {
        if (t0 > hi || t0 + d < lo) return false;
        const x0 = xOf(t0 * Q), x1 = xOf((t0 + d) * Q);
        g.fillStyle = colour;
        const w = x1 - Math.max(x0, LEFT);
        // a bar wider than a few pixels keeps a pixel free at its end: neighbours stay apart
        g.fillRect(Math.max(x0, LEFT), y, Math.max(w > 4 ? w - 1 : w, 1), hh);
        return true;
      };
      for (let i = 0; i < nWaits; i++) {
        const y = AXIS + (D.slots + 1 + W.r[i]) * rowH;
        fill(W.t0[i], W.d[i], y + rowH * 0.15, Math.max(rowH * 0.7, 1),
             WAIT_COLOURS[D.wait_kinds[W.k[i]]] || "#eee");
      }
      const gap = rowH >= 4 ? 1 : 0;
      for (let i = 0; i < nBars; i++) {
        const y = AXIS + B.s[i] * rowH;
        if (!fill(B.t0[i], B.d[i], y, rowH - gap, laneColour(B.l[i]))) continue;
        drawn++;
        if (B.aggregated || rowH < 4) continue;
        const x0 = Math.max(xOf(B.t0[i] * Q), LEFT), x1 = xOf((B.t0[i] + B.d[i]) * Q);
        const out = B.outcomes[B.o[i]];
        if (out !== "done" && out !== "running") {
          g.strokeStyle = FAILED; g.lineWidth = 2;
          g.strokeRect(x0 + 1, y + 1, Math.max(x1 - x0 - 2, 1), rowH - gap - 2);
        }
        if (B.n[i] > 1) { g.fillStyle = "#333"; g.fillRect(x0, y, Math.max(x1 - x0, 1), 2); }
        if (B.f && B.f[i] != null) {  // the first token of a streamed answer: a white tick
          g.fillStyle = "#fff"; g.fillRect(xOf((B.t0[i] + B.f[i]) * Q), y + 2, 1, rowH - gap - 4);
        }
      }
      g.fillStyle = "#444"; g.font = "11px sans-serif";
      g.clearRect(0, AXIS, LEFT - 2, h);
      const every = Math.ceil(14 / rowH);
      for (let s = 0; s < D.slots; s += every) g.fillText("slot " + s, 4, AXIS + s * rowH + Math.min(rowH, 12));
      if (waitRows) g.fillText("waiting", 4, AXIS + (D.slots + 1) * rowH + Math.min(rowH, 12));
      stamp.dataset.drawnBars = String(drawn);
      stamp.dataset.drawnWaits = String(nWaits);
    }

    // the charts: each a set of named step series on one canvas
    function addChart(title, series, copts) {
      const names = Object.keys(series).filter((k) => series[k] && series[k].t.length);
      if (!names.length) return;
      el("h2", "ftl-chart-title", chartBox).textContent = title;
      const c = el("canvas", "ftl-chart", chartBox);
      charts.push({ c, series, names, opts: copts || {} });
    }
    function drawChart(ch) {
      const h = 130, g = sizeCanvas(ch.c, width, h);
      g.clearRect(0, 0, width, h); axis(g, h);
      const top = AXIS + 4, bottom = h - 4;
      const stacked = ch.opts.stacked;
      let max = 1;
      if (stacked) {
        // stacked bins on a shared grid: the series of the waiting chart have the same times
        // when binned, otherwise they are resampled at each series' change points
        const ts = [...new Set(ch.names.flatMap((k) => ch.series[k].t))].sort((a, b) => a - b);
        const levels = ch.names.map((k) => resample(ch.series[k], ts));
        const sums = ts.map((_, j) => levels.reduce((a, l) => a + l[j], 0));
        max = Math.max(1, ...sums);
        const y = (v) => bottom - v / max * (bottom - top);
        const base = ts.map(() => 0);
        ch.names.forEach((k, i) => {
          g.fillStyle = WAIT_COLOURS[k] || PALETTE[i % PALETTE.length];
          g.beginPath();
          ts.forEach((t, j) => {
            const x = xOf(t), xn = xOf(j + 1 < ts.length ? ts[j + 1] : END);
            const top2 = base[j] + levels[i][j];
            g.rect(x, y(top2), Math.max(xn - x, 0.5), y(base[j]) - y(top2));
            base[j] = top2;
          });
          g.fill();
        });
      } else {
        ch.names.forEach((k) => {
          const s = ch.series[k], right = ch.opts.right && ch.opts.right.includes(k);
          if (!right) max = Math.max(max, Math.max(1, ...s.v));
        });
        ch.names.forEach((k, i) => {
          const s = ch.series[k], right = ch.opts.right && ch.opts.right.includes(k);
          const m = right ? Math.max(1, ...s.v) : max;
          const y = (v) => bottom - v / m * (bottom - top);
          g.strokeStyle = ch.opts.colours ? ch.opts.colours[i] : PALETTE[i];
          g.lineWidth = 1.5; g.beginPath();
          s.t.forEach((t, j) => {
            const x = xOf(t);
            if (j === 0) g.moveTo(x, y(s.v[j])); else { g.lineTo(x, y(s.v[j - 1])); g.lineTo(x, y(s.v[j])); }
          });
          g.lineTo(xOf(END), y(s.v[s.v.length - 1]));
          g.stroke();
          if (right) { g.fillStyle = g.strokeStyle; g.fillText(`${k} (max ${Math.round(m)}, right scale)`, width - 230, top + 10 + 12 * i); }
        });
      }
      g.clearRect(0, AXIS, LEFT - 2, h);
      g.fillStyle = "#444"; g.font = "11px sans-serif";
      g.fillText(String(Math.round(max)), 4, top + 8); g.fillText("0", 4, bottom);
      ch.names.forEach((k, i) => {
        if (ch.opts.right && ch.opts.right.includes(k)) return;
        g.fillStyle = stacked ? "#444" : (ch.opts.colours ? ch.opts.colours[i] : PALETTE[i]);
        const label = k, lw = g.measureText(label).width;
        const lx = width - 8 - 130 * (ch.names.length - i);
        const fc = g.fillStyle; g.fillStyle = "rgba(255,255,255,.85)"; g.fillRect(lx - 16, top - 2, lw + 22, 14);
        if (stacked) { g.fillStyle = WAIT_COLOURS[k] || PALETTE[i]; g.fillRect(lx - 14, top, 10, 10); g.fillStyle = "#444"; } else g.fillStyle = fc;
        g.fillText(label, lx, top + 9);
      });
    }

    function drawAll() {
      if (!root.isConnected) return;
      width = Math.max(wrap.clientWidth || root.clientWidth || 1200, 400);
      drawGantt();
      charts.forEach(drawChart);
    }

    // zoom around the pointer, drag to pan, double-click to reset
    function zoom(factor, x) {
      const t = tOf(x), span = Math.min(END, Math.max((v1 - v0) * factor, END / 1e5));
      v0 = Math.max(0, t - (t - v0) / (v1 - v0) * span); v1 = Math.min(END, v0 + span);
      v0 = Math.max(0, v1 - span); zoomed = span < END; drawAll();
    }
    function unzoom() { v0 = 0; v1 = END; zoomed = false; drawAll(); }
    let drag = null;
    function listen(c) {
      c.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY > 0 ? 1.25 : 0.8, e.offsetX); }, { passive: false });
      c.addEventListener("mousedown", (e) => { drag = { x: e.clientX, v0, v1 }; });
      c.addEventListener("dblclick", unzoom);
    }
    listen(gantt);
    const onUp = () => { drag = null; };
    const onMove = (e) => {
      if (!drag) return;
      const dt = (e.clientX - drag.x) / (width - LEFT - 8) * (drag.v1 - drag.v0);
      const span = drag.v1 - drag.v0;
      v0 = Math.min(Math.max(0, drag.v0 - dt), END - span); v1 = v0 + span; drawAll();
    };
    window.addEventListener("mouseup", onUp);
    window.addEventListener("mousemove", onMove);
    window.addEventListener("resize", drawAll);
    reset.addEventListener("click", unzoom);

    // the hover card
    function find(list, t0, d, t) {
      let lo = 0, hi = list.length - 1, hit = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (t0[list[mid]] <= t) { hit = mid; lo = mid + 1; } else hi = mid - 1;
      }
      // a bar narrower than a pixel: also accept the one just before the pointer
      const slack = 3 * (v1 - v0) / (width - LEFT) / Q;
      for (let k = hit; k >= 0 && k >= hit - 2; k--) {
        const i = list[k];
        if (t <= t0[i] + d[i] + slack) return i;
      }
      return -1;
    }
    gantt.addEventListener("mousemove", (e) => {
      const row = Math.floor((e.offsetY - AXIS) / rowH), t = tOf(e.offsetX) / Q;
      let html = "";
      if (byRow.has(row)) {
        const i = find(byRow.get(row), B.t0, B.d, t);
        if (i >= 0 && B.aggregated) {
          html = `<b>lane ${esc(D.lanes[B.l[i]])}</b>${B.c[i]} attempts (aggregated)<br>` +
            `${fmt(B.t0[i] * Q)} – ${fmt((B.t0[i] + B.d[i]) * Q)} · slot ${row}`;
        } else if (i >= 0) {
          const tok = B.x[i] == null ? "-" : B.x[i].toLocaleString();
          html = `<b>${esc(B.keys[B.k[i]])}</b>agent ${esc(B.agents[B.a[i]])} · lane ${esc(D.lanes[B.l[i]])}<br>` +
            `attempt ${B.n[i]} · ${esc(B.outcomes[B.o[i]])}<br>tokens ${tok}<br>` +
            (B.f && B.f[i] != null ? `first token after ${fmt(B.f[i] * Q)}<br>` : "") +
            `${fmt(B.t0[i] * Q)} + ${fmt(B.d[i] * Q)} · slot ${row}`;
        }
      } else if (waitByRow.has(row)) {
        const i = find(waitByRow.get(row), W.t0, W.d, t);
        if (i >= 0) html = `<b>waiting: ${esc(D.wait_kinds[W.k[i]])}</b>${fmt(W.t0[i] * Q)} + ${fmt(W.d[i] * Q)}`;
      }
      if (!html) { card.hidden = true; return; }
      card.innerHTML = html; card.hidden = false;
      card.style.left = Math.min(e.clientX + 14, window.innerWidth - 300) + "px";
      card.style.top = (e.clientY + 14) + "px";
    });
    gantt.addEventListener("mouseleave", () => { card.hidden = true; });

    // the page exercises itself as a user would (hover the first bar, zoom in on the run's
    // first tenth) and records what it saw on the stamp element, so a headless browser can
    // prove the card and the zoom work
    function selfCheck() {
      if (!nBars) return;
      const i = 0;  // the run's first attempt
      const r = gantt.getBoundingClientRect();
      const x = r.left + (xOf((B.t0[i] + B.d[i] / 2) * Q)), y = r.top + AXIS + B.s[i] * rowH + rowH / 2;
      gantt.dispatchEvent(new MouseEvent("mousemove", { clientX: x, clientY: y, bubbles: true }));
      stamp.dataset.hoverCard = card.hidden ? "" : card.textContent;
      const before = drawn;
      for (let k = 0; k < 10; k++) {
        gantt.dispatchEvent(new WheelEvent("wheel", { deltaY: -100, clientX: r.left + LEFT + 1, clientY: y, bubbles: true, cancelable: true }));
      }
      stamp.dataset.zoom = JSON.stringify({ before, after: drawn, v0, v1, end: END });
    }

    load(data);
    drawAll();
    return {
      update(data) { load(data); drawAll(); },
      redraw: drawAll,
      selfCheck,
      destroy() {
        window.removeEventListener("mouseup", onUp);
        window.removeEventListener("mousemove", onMove);
        window.removeEventListener("resize", drawAll);
        card.remove();
        root.textContent = "";
      },
    };
  }

  global.FanoutTimeline = { mount, fmt, esc };
})(window);
