// The dashboard of `fanout serve`: a run list, a run page (status and counts, lanes,
// limiter, the live Gantt, a task table with a drawer per task) and the settings. It reads
// the HTTP API only (docs/service.md); the Gantt is drawn by timeline.js, the same renderer
// as `fanout report --html`. It stays light for a 100,000-task run: counts come aggregated,
// the screen is redrawn at most a few times a second, and only one page of the task table
// is ever in the DOM. No library, no build step, no network beyond this server.
"use strict";
(function () {
  const { fmt, esc } = window.FanoutTimeline;
  const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
  const TASK_STATES = ["waiting", "ready", "running", "done", "failed", "skipped", "cancelled"];
  const ERROR_CLASSES = ["transient", "permanent", "content", "cancelled", "dependency", "internal"];
  const PAGE = 50;  // task rows on screen at once
  const SPAN_COLOURS = { attempt: "#4e79a7", running: "#4e79a7", deps: "#bdbdbd", queued: "#d9d9d9", lane: "#9ecae1",
    rpm: "#fdb56b", tpm: "#f28e2b", retry_after: "#f4a582", circuit: "#e15759", budget: "#b9b2d6",
    backoff: "#edc948" };

  // The token arrives once in the URL (`?token=`): the server answers that request with a
  // cookie, so it is taken out of the address bar (no token in history or a shared screen)
  // and kept in memory for the fetches of this page.
  const here = new URL(location.href);
  const TOKEN = here.searchParams.get("token");
  if (TOKEN) {
    here.searchParams.delete("token");
    history.replaceState(null, "", here.pathname + here.search + here.hash);
  }
  const AUTH = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};

  async function api(path, init) {
    init = init || {};
    const r = await fetch(path, { ...init, credentials: "same-origin",
      headers: { ...AUTH, ...(init.headers || {}) } });
    if (!r.ok) {
      let msg = `${r.status} ${r.statusText}`;
      try {
        const j = await r.json();
        if (j && j.detail) msg = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
      } catch (e) { /* not JSON: the status line says it */ }
      throw new Error(msg);
    }
    return r.status === 204 ? null : r.json();
  }
  const postJSON = (path, body) => api(path, { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });

  // --- small helpers -----------------------------------------------------------------------
  const $ = (sel, root) => (root || document).querySelector(sel);
  const num = (n) => n == null ? "–" : Number(n).toLocaleString();
  const pct = (a, b) => b > 0 ? Math.max(0, Math.min(100, a / b * 100)) : 0;
  const dur = (s) => s == null ? "–" : fmt(Math.max(0, s));
  function when(t) {  // epoch seconds or an ISO string -> Date
    if (t == null || t === "") return null;
    const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
    return isNaN(d) ? null : d;
  }
  const clock = (t) => { const d = when(t); return d ? d.toLocaleString() : "–"; };
  const pill = (s) => `<span class="pill ${esc(s || "")}">${esc(s || "?")}</span>`;
  function bar(parts, total) {
    return `<div class="bar">${parts.map(([cls, v, left]) =>
      `<span class="${cls}" style="left:${left || 0}%;width:${v}%"></span>`).join("")}</div>`;
  }
  function setConn(cls, text) { const c = $("#conn"); c.className = cls; c.textContent = text; }

  // Work scheduled by a view, all stopped when the view is left.
  let scope = null;
  function newScope() {
    if (scope) scope.stop();
    const timers = [], closers = [];
    scope = {
      every(ms, fn) { const id = setInterval(fn, ms); timers.push(id); return id; },
      later(ms, fn) { const id = setTimeout(fn, ms); timers.push(id); return id; },
      onStop(fn) { closers.push(fn); },
      alive: true,
      stop() { this.alive = false; timers.forEach((t) => { clearInterval(t); clearTimeout(t); }); closers.forEach((f) => f()); },
    };
    return scope;
  }

  // A poller that never overlaps itself and backs off to `factor` times its own cost, so a
  // slow answer (a big run's timeline) never piles up requests nor keeps the server busy;
  // `when()` can hold it (a panel scrolled out of sight is not fetched).
  function poll(sc, minMs, fn, opts) {
    opts = opts || {};
    const factor = opts.factor || 4, when = opts.when || (() => true);
    let busy = false, next = 0, again = false;
    const tick = async (forced) => {
      if (forced && busy) { again = true; return; }  // asked during a fetch: one more after it
      if (!sc.alive || busy || (!forced && (Date.now() < next || document.hidden || !when()))) return;
      busy = true;
      const t0 = performance.now();
      try { await fn(); } catch (e) { /* shown by the view; try again later */ }
      const took = performance.now() - t0;
      next = Date.now() + Math.max(minMs, took * factor);
      busy = false;
      if (again) { again = false; tick(true); }
    };
    sc.every(250, () => tick(false));
    tick(false);
    return { now() { tick(true); } };
  }

  // Whether an element is on screen now (kept by an IntersectionObserver).
  function onScreen(sc, elem) {
    const seen = { now: true };
    const io = new IntersectionObserver((es) => { seen.now = es[es.length - 1].isIntersecting; });
    io.observe(elem);
    sc.onStop(() => io.disconnect());
    return () => seen.now;
  }

  // --- routes --------------------------------------------------------------------------------
  function route() {
    const h = location.hash.replace(/^#/, "") || "/";
    closeDrawer();
    document.querySelectorAll("#top nav a").forEach((a) =>
      a.classList.toggle("on", (a.dataset.nav === "settings") === h.startsWith("/settings")));
    const m = h.match(/^\/runs\/([^/?]+)/);
    if (m) return runView(decodeURIComponent(m[1]));
    if (h.startsWith("/settings")) return settingsView();
    return listView();
  }
  window.addEventListener("hashchange", route);

  // --- the run list --------------------------------------------------------------------------
  function listView() {
    const sc = newScope();
    document.title = "fanout · runs";
    const view = $("#view");
    view.innerHTML = `
      <section class="panel"><h2>Start a batch run</h2>
        <form class="upload" id="upload">
          <input type="file" name="input" accept=".jsonl,.json,application/jsonl" required>
          <button type="submit">start</button>
          <span class="muted">a JSONL file, one task a line (as <span class="mono">fanout batch</span> reads it)</span>
          <span id="upload-msg"></span>
        </form></section>
      <section class="panel"><h2>Runs <span class="muted" id="runs-n"></span></h2>
        <div class="table-wrap"><table id="runs"><thead><tr><th>run</th><th>kind</th><th>status</th>
          <th>progress</th><th class="num">done</th><th class="num">failed</th><th class="num">total</th>
          <th>started</th><th>owner</th></tr></thead><tbody></tbody></table></div>
        <div class="pager" id="runs-pager"></div></section>`;
    let page = 0, runs = [];
    $("#upload").addEventListener("submit", async (e) => {
      e.preventDefault();
      const msg = $("#upload-msg");
      msg.className = "muted"; msg.textContent = "uploading…";
      try {
        const r = await api("api/runs", { method: "POST", body: new FormData(e.target) });
        location.hash = "#/runs/" + encodeURIComponent(r.id);
      } catch (err) { msg.className = "error"; msg.textContent = err.message; }
    });
    function draw() {
      const pages = Math.max(1, Math.ceil(runs.length / PAGE));
      page = Math.min(page, pages - 1);
      $("#runs-n").textContent = `(${runs.length.toLocaleString()})`;
      $("#runs tbody").innerHTML = runs.slice(page * PAGE, (page + 1) * PAGE).map((r) => {
        const c = r.request_counts || {}, t = c.total || 0;
        return `<tr class="click" data-id="${esc(r.id)}"><td class="mono"><a href="#/runs/${encodeURIComponent(r.id)}">${esc(r.id)}</a></td>
          <td>${esc(r.kind)}</td><td>${pill(r.status)}</td>
          <td>${bar([["ok", pct(c.completed, t)], ["bad", pct(c.failed, t), pct(c.completed, t)]])}</td>
          <td class="num">${num(c.completed)}</td><td class="num">${num(c.failed)}</td><td class="num">${num(t)}</td>
          <td>${esc(clock(r.created_at))}</td>
          <td>${r.owner === "server" ? "this server" : '<span class="muted" title="started by another process: read-only here">other process</span>'}</td></tr>`;
      }).join("") || `<tr><td colspan="9" class="muted">no runs yet: start one above, or with <span class="mono">fanout batch</span></td></tr>`;
      $("#runs-pager").innerHTML = pages > 1 ? `<button data-p="-1" ${page ? "" : "disabled"}>‹ newer</button>
        <span>page ${page + 1} of ${pages}</span><button data-p="1" ${page + 1 < pages ? "" : "disabled"}>older ›</button>` : "";
    }
    $("#runs tbody").addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-id]");
      if (tr && e.target.tagName !== "A") location.hash = "#/runs/" + encodeURIComponent(tr.dataset.id);
    });
    $("#runs-pager").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-p]");
      if (b) { page += Number(b.dataset.p); draw(); }
    });
    poll(sc, 2000, async () => {
      try {
        runs = (await api("api/runs")).runs || [];
        setConn("polling", "refreshing every 2 s");
      } catch (err) { setConn("down", err.message); throw err; }
      draw();
    });
  }

  // --- the run page --------------------------------------------------------------------------
  function runView(id) {
    const sc = newScope();
    document.title = "fanout · " + id;
    const base = "api/runs/" + encodeURIComponent(id);
    const view = $("#view");
    view.innerHTML = `
      <section class="panel" id="head"><div class="run-head">
          <h1 class="mono">${esc(id)}</h1><span id="kind" class="muted"></span><span id="status"></span>
          <span id="owner" class="muted"></span>
          <div class="actions"><button type="button" class="danger" id="cancel">cancel run</button>
            <button type="button" id="resume">resume</button></div></div>
        <div class="counts" id="counts"></div><div class="progress" id="progress"></div>
        <div id="breakdown"></div><p class="note error" id="head-msg"></p></section>
      <div class="grid2">
        <section class="panel"><h2>Lanes <span class="muted">in flight vs limit · queue · oldest wait</span></h2><div id="lanes"></div></section>
        <section class="panel"><h2>Limiter <span class="muted">per provider</span> <a href="#/settings" class="muted">change limits</a></h2><div id="limiter"></div></section>
      </div>
      <section class="panel"><h2>Timeline</h2>
        <p class="note muted" id="gantt-note" hidden><button type="button" id="gantt-refresh">refresh the timeline</button> <span id="gantt-when"></span></p>
        <div id="gantt" class="muted">waiting for the first attempts…</div></section>
      <section class="panel" id="tasks-panel"><h2>Tasks <span class="muted" id="tasks-n"></span></h2>
        <div class="filters" id="filters">
          <label>state <select data-f="state"><option value="">any</option>${TASK_STATES.map((s) => `<option>${s}</option>`).join("")}</select></label>
          <label>lane <select data-f="lane"><option value="">any</option></select></label>
          <label>agent <input data-f="agent" list="agents" placeholder="any" size="16"><datalist id="agents"></datalist></label>
          <label>error <select data-f="error"><option value="">any</option>${ERROR_CLASSES.map((s) => `<option>${s}</option>`).join("")}</select></label>
        </div>
        <div class="table-wrap"><table id="tasks"><thead><tr><th class="num">#</th><th>key</th><th>state</th><th>lane</th>
          <th>agent</th><th class="num">tries</th><th>error</th><th class="num">wall</th></tr></thead><tbody></tbody></table></div>
        <div class="pager" id="pager"></div></section>`;

    let run = null, dirty = true, tasksDirty = true, ended = false;
    const filters = { state: "", lane: "", agent: "", error: "" };
    let offset = 0, taskTotal = 0;
    const agentsSeen = new Set(), lanesSeen = new Set();

    // the header, lanes and limiter: redrawn at most 4 times a second, only when changed
    function drawHead() {
      if (!run) return;
      const c = run.request_counts || {}, t = c.total || 0;
      const left = Math.max(0, t - (c.completed || 0) - (c.failed || 0));
      $("#kind").textContent = run.kind || "";
      $("#status").innerHTML = pill(run.status);
      const other = run.owner === "other";
      $("#owner").textContent = other ? "started by another process: read-only here" : "";
      const done = TERMINAL.has(run.status);
      const cancel = $("#cancel"), resume = $("#resume");
      cancel.disabled = other || done || run.status === "cancelling";
      // the server says what can be resumed (interrupted, crashed, out of budget); a
      // cancelled run is over for good
      resume.disabled = other || !(run.resumable ?? run.status === "failed");
      const started = when(run.created_at), finished = when(run.finished_at);
      const elapsed = started ? ((finished || new Date()) - started) / 1000 : null;
      const tp = run.throughput;
      const st = run.states || {};
      $("#counts").innerHTML = [
        ["total", num(t)], ["completed", num(c.completed)], ["failed", num(c.failed)],
        ...(c.cancelled ? [["cancelled", num(c.cancelled)]] : []), ...(c.skipped ? [["skipped", num(c.skipped)]] : []),
        ["running", num(st.running || 0)], ["left", num(left)],
        ["retries", num(run.retries || 0)],
        ["elapsed", dur(elapsed)], ...(run.eta_s != null && !done ? [["eta", dur(run.eta_s)]] : []),
        ["throughput", tp == null ? "–" : (typeof tp === "number" ? tp.toFixed(1) + " /s" : esc(JSON.stringify(tp)))],
        ["cost", run.cost_usd == null ? "–" : "$" + Number(run.cost_usd).toFixed(4)],
      ].map(([k, v]) => `<div class="c-${k}"><b>${v}</b><span>${k}</span></div>`).join("");
      $("#progress").innerHTML = bar([["ok", pct(c.completed, t)], ["bad", pct(c.failed, t), pct(c.completed, t)]]);
      const bd = Object.entries(run.breakdown || {}).filter(([, v]) => v > 0);
      const sum = bd.reduce((a, [, v]) => a + v, 0);
      $("#breakdown").innerHTML = sum > 0 ? `<div class="breakdown" title="where the tasks' time went">${bd.map(([k, v]) =>
        `<span style="width:${v / sum * 100}%;background:${SPAN_COLOURS[k] || "#999"}" title="${esc(k)} ${dur(v)}"></span>`).join("")}</div>
        <div class="bd-legend">${bd.map(([k, v]) => `<span><i style="background:${SPAN_COLOURS[k] || "#999"}"></i>${esc(k)} ${dur(v)} (${(v / sum * 100).toFixed(0)}%)</span>`).join("")}</div>` : "";
      drawLanes(); drawLimiter();
    }
    function drawLanes() {
      const lanes = run.lanes || [];
      for (const l of lanes) lanesSeen.add(l.name);
      const sel = $('select[data-f="lane"]');
      if (sel.options.length - 1 < lanesSeen.size) {
        sel.innerHTML = `<option value="">any</option>` + [...lanesSeen].map((l) => `<option>${esc(l)}</option>`).join("");
        sel.value = filters.lane;
      }
      $("#lanes").innerHTML = lanes.length ? `<table class="meter"><thead><tr><th>lane</th><th class="barcell">in flight</th>
        <th class="num">limit</th><th class="num">queued</th><th class="num">oldest wait</th></tr></thead><tbody>${lanes.map((l) =>
        `<tr><td>${esc(l.name)}</td><td class="barcell"><div class="barline">${bar([[l.limit && l.in_flight >= l.limit ? "hot" : "use", pct(l.in_flight, l.limit || l.in_flight || 1)]])}
        <span class="v">${num(l.in_flight)}</span></div></td><td class="num">${l.limit == null ? "∞" : num(l.limit)}</td>
        <td class="num">${num(l.queued)}</td><td class="num">${dur(l.oldest_wait_s)}</td></tr>`).join("")}</tbody></table>`
        : `<p class="muted">${TERMINAL.has(run.status) ? "the run is over: no lane is busy" : "no lane reported yet"}</p>`;
    }
    function drawLimiter() {
      const lim = run.limiter || [];
      $("#limiter").innerHTML = lim.length ? `<div class="table-wrap"><table class="meter"><thead><tr><th>provider</th><th>RPM used / budget</th>
        <th>TPM used / budget</th><th class="num">learned</th><th class="num" title="adaptive concurrency">conc.</th><th>Retry-After</th></tr></thead><tbody>${lim.map((p, i) => {
          const use = (u, b) => b ? `<div class="barline">${bar([[u >= b ? "hot" : "use", pct(u, b)]])}<span class="v">${num(Math.round(u || 0))} / ${num(b)}</span></div>`
            : `<span class="muted">${num(Math.round(u || 0))} / no budget</span>`;
          return `<tr><td>${esc(p.provider)}</td><td class="barcell">${use(p.rpm_used, p.rpm_budget)}</td>
            <td class="barcell">${use(p.tpm_used, p.tpm_budget)}</td>
            <td class="num" title="the rate the limiter has learned the provider accepts">${p.learned_rps == null ? "–" : Number(p.learned_rps).toFixed(1) + " req/s"}</td>
            <td class="num" title="adaptive concurrency now">${num(p.concurrency)}</td><td data-ra="${i}"></td></tr>`;
        }).join("")}</tbody></table></div>` : `<p class="muted">${TERMINAL.has(run.status) ? "the run is over: no provider is in use" : run.owner === "other" ? "run by another process: its limiter is not visible here" : "no provider reported yet"}</p>`;
      tickPauses();
    }
    // Retry-After pauses count down between two answers of the server
    function tickPauses() {
      if (!run) return;
      (run.limiter || []).forEach((p, i) => {
        const cell = $(`td[data-ra="${i}"]`);
        if (!cell) return;
        const until = when(p.retry_after_until);
        const left = until ? (until - Date.now()) / 1000 : 0;
        cell.innerHTML = left > 0 ? `<span class="pause">paused ${left.toFixed(1)} s</span>` : `<span class="muted">–</span>`;
      });
    }
    sc.every(250, () => {
      if (dirty) { dirty = false; drawHead(); } else tickPauses();
      // the table at most once a second: a busy run changes it all the time
      if (tasksDirty && !tasksBusy && (Date.now() - tasksAt > 1000 && tableSeen() || !tasksAt)) { tasksDirty = false; tasksAt = Date.now(); loadTasks(); }
    });

    async function loadRun() {
      try {
        run = await api(base);
        dirty = true;
        $("#head-msg").textContent = "";
      } catch (err) { $("#head-msg").textContent = err.message; throw err; }
      if (TERMINAL.has(run.status)) { if (!ended) finish(); } else if (!es && !ended) listen();
    }
    // once the run is over its status is asked again only on a resume (a forced poll)
    const runPoll = poll(sc, 1000, loadRun, { when: () => !ended });

    // the task table: one page from the server, fetched again when tasks changed
    let tasksBusy = false, tasksAt = 0;
    const tableSeen = onScreen(sc, $("#tasks-panel"));  // off screen: fetched when scrolled to
    async function loadTasks() {
      tasksBusy = true;
      const q = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
      for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
      try {
        const r = await api(`${base}/tasks?${q}`);
        taskTotal = r.total;
        drawTasks(r.tasks || []);
      } catch (err) {
        $("#tasks tbody").innerHTML = `<tr><td colspan="8" class="error">${esc(err.message)}</td></tr>`;
      } finally { tasksBusy = false; }
    }
    let openKey = null;
    function drawTasks(tasks) {
      for (const t of tasks) {
        if (t.agent && !agentsSeen.has(t.agent)) {
          agentsSeen.add(t.agent);
          $("#agents").insertAdjacentHTML("beforeend", `<option value="${esc(t.agent)}">`);
        }
        if (t.lane) lanesSeen.add(t.lane);
      }
      $("#tasks-n").textContent = `(${num(taskTotal)}${Object.values(filters).some(Boolean) ? " matching" : ""})`;
      $("#tasks tbody").innerHTML = tasks.map((t) =>
        `<tr class="click${t.key === openKey ? " sel" : ""}" data-key="${esc(t.key)}"><td class="num">${num(t.n)}</td>
          <td class="key mono" title="${esc(t.key)}">${esc(t.key)}</td><td>${pill(t.state)}</td><td>${esc(t.lane || "")}</td>
          <td>${esc(t.agent || "")}</td><td class="num">${num(t.tries)}</td><td>${esc(t.error_class || "")}</td>
          <td class="num">${dur(t.wall_s)}</td></tr>`).join("")
        || `<tr><td colspan="8" class="muted">no task ${Object.values(filters).some(Boolean) ? "matches these filters" : "yet"}</td></tr>`;
      const pages = Math.max(1, Math.ceil(taskTotal / PAGE)), p = Math.floor(offset / PAGE);
      $("#pager").innerHTML = `<button data-o="first" ${p ? "" : "disabled"}>« first</button>
        <button data-o="prev" ${p ? "" : "disabled"}>‹ prev</button><span>page ${(p + 1).toLocaleString()} of ${pages.toLocaleString()}</span>
        <button data-o="next" ${p + 1 < pages ? "" : "disabled"}>next ›</button><button data-o="last" ${p + 1 < pages ? "" : "disabled"}>last »</button>`;
    }
    $("#filters").addEventListener("change", (e) => {
      const f = e.target.dataset.f;
      if (!f) return;
      filters[f] = e.target.value.trim();
      offset = 0; tasksDirty = true; tasksAt = 0;
    });
    $("#pager").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-o]");
      if (!b) return;
      const last = Math.max(0, (Math.ceil(taskTotal / PAGE) - 1) * PAGE);
      offset = { first: 0, prev: Math.max(0, offset - PAGE), next: Math.min(last, offset + PAGE), last }[b.dataset.o];
      tasksDirty = true; tasksAt = 0;
    });
    $("#tasks tbody").addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-key]");
      if (!tr) return;
      openKey = tr.dataset.key;
      document.querySelectorAll("#tasks tr.sel").forEach((r) => r.classList.remove("sel"));
      tr.classList.add("sel");
      openDrawer(base, openKey, () => run && run.owner !== "other", () => { tasksDirty = true; });
    });
    sc.every(2000, () => { if (!ended) tasksDirty = true; });

    // the Gantt: the report's renderer, given the run's timeline again as it grows. A big
    // run's timeline costs the server a read of every attempt, and that time is taken from
    // the run: it is fetched at most every 3 s and at most a tenth of the time, only while
    // the Gantt is on screen; once one fetch took over 2 s it is fetched again only when
    // asked (the button) and once more when the run ends.
    let tl = null, onDemand = false;
    const ganttBox = $("#gantt"), ganttNote = $("#gantt-note"), ganttSeen = onScreen(sc, ganttBox);
    const ganttPoll = poll(sc, 3000, async () => {
      if (ended && tl && tl.final) return;
      const t0 = performance.now();
      if (!tl) ganttBox.textContent = "reading the timeline…";
      const data = await api(`${base}/timeline`);
      if (!sc.alive || !data || !data.bars) return;
      if (!tl) {
        ganttBox.classList.remove("muted");
        tl = FanoutTimeline.mount(ganttBox, data, { maxHeight: 360 });
        sc.onStop(() => tl.destroy());
      } else tl.update(data);
      tl.final = ended;
      const took = performance.now() - t0;
      onDemand = !ended && (onDemand || took > 2000);
      ganttNote.hidden = !onDemand;
      if (onDemand) {
        $("#gantt-when").textContent = `as of ${new Date().toLocaleTimeString()}: this run's timeline took ` +
          `${dur(took / 1000)} to read, so it is read again when asked, and when the run ends`;
      }
    }, { factor: 10, when: () => !onDemand && ganttSeen() });
    $("#gantt-refresh").addEventListener("click", () => ganttPoll.now());

    // cancel asks twice (a second click within 4 s) rather than with a modal dialog
    let armed = null;
    $("#cancel").addEventListener("click", async (e) => {
      const b = e.currentTarget;
      if (!armed) {
        b.classList.add("armed"); b.textContent = "click again to cancel";
        armed = sc.later(4000, () => { armed = null; b.classList.remove("armed"); b.textContent = "cancel run"; });
        return;
      }
      clearTimeout(armed); armed = null;
      b.classList.remove("armed"); b.textContent = "cancel run"; b.disabled = true;
      try {
        const r = await postJSON(`${base}/cancel`);
        if (run) { run.status = r.status; dirty = true; }
      } catch (err) { $("#head-msg").textContent = "cancel: " + err.message; }
      runPoll.now();
    });
    $("#resume").addEventListener("click", async (e) => {
      e.currentTarget.disabled = true;
      try {
        const r = await postJSON(`${base}/resume`);
        if (run) { run.status = r.status; dirty = true; }
        reopen();
      } catch (err) { $("#head-msg").textContent = "resume: " + err.message; }
      runPoll.now();
    });

    // live: the run's events over SSE (the browser reconnects with Last-Event-ID by itself);
    // a task event only marks the table stale, so 100,000 of them cost no DOM work
    let es = null;
    function listen() {
      es = new EventSource(`${base}/events`);
      sc.onStop(() => es && es.close());
      es.onopen = () => { if (!ended) setConn("live", "live"); };
      es.onerror = () => {
        if (ended) return;
        setConn(es.readyState === EventSource.CLOSED ? "polling" : "down",
          es.readyState === EventSource.CLOSED ? "polling every second" : "reconnecting…");
      };
      es.addEventListener("counts", (e) => {
        const d = JSON.parse(e.data);
        if (run) {
          if (d.request_counts) run.request_counts = d.request_counts;
          if (d.status) run.status = d.status;
          dirty = true;
        }
      });
      es.addEventListener("task", () => { tasksDirty = true; });
      es.addEventListener("run", () => runPoll.now());
      es.addEventListener("end", () => { es.close(); es = null; runPoll.now(); });
    }
    function finish() {
      ended = true;
      if (es) { es.close(); es = null; }
      setConn("", "run over: nothing more to stream");
      tasksDirty = true;
      ganttPoll.now();
    }
    function reopen() { ended = false; if (tl) tl.final = false; if (!es) listen(); }
  }

  // --- the task drawer -----------------------------------------------------------------------
  let drawerSeq = 0;
  async function openDrawer(base, key, canAct, changed) {
    const seq = ++drawerSeq;
    const d = $("#drawer");
    d.hidden = false;
    $("#drawer-title").textContent = key;
    $("#drawer-body").innerHTML = `<p class="muted">loading…</p>`;
    let t;
    try { t = await api(`${base}/tasks/${encodeURIComponent(key)}`); } catch (err) {
      if (seq === drawerSeq) $("#drawer-body").innerHTML = `<p class="error">${esc(err.message)}</p>`;
      return;
    }
    if (seq !== drawerSeq) return;
    const attempts = t.attempts || [], spans = t.spans || [];
    const origin = Math.min(...[...attempts.map((a) => a.t0), ...spans.map((s) => s.t0)].filter((v) => typeof v === "number"));
    const rel = (v) => typeof v === "number" && isFinite(origin) ? "+" + dur(v - origin) : esc(v == null ? "–" : String(v));
    const out = t.output == null ? "" : typeof t.output === "string" ? t.output : JSON.stringify(t.output, null, 2);
    const live = !["done", "failed", "skipped", "cancelled"].includes(t.state);
    const split = attempts.some((a) => a.tokens_in !== undefined || a.tokens_out !== undefined);
    $("#drawer-body").innerHTML = `
      <dl class="facts"><dt>state</dt><dd>${pill(t.state)}</dd><dt>attempts</dt><dd>${attempts.length}</dd>
        ${t.lane ? `<dt>lane</dt><dd>${esc(t.lane)}</dd>` : ""}${t.agent ? `<dt>agent</dt><dd>${esc(t.agent)}</dd>` : ""}
        ${t.tokens_in != null || t.tokens_out != null ? `<dt>tokens</dt><dd>${num(t.tokens_in)} in · ${num(t.tokens_out)} out</dd>` : ""}
        ${t.error ? `<dt>error</dt><dd class="error">${esc(typeof t.error === "string" ? t.error : JSON.stringify(t.error))}</dd>` : ""}</dl>
      <p><button type="button" class="danger" id="task-cancel" ${live && canAct() ? "" : "disabled"}>cancel this task</button>
        <span id="task-msg" class="muted"></span></p>
      <h3>Attempts</h3>${attempts.length ? `<table><thead><tr><th class="num">#</th><th>start</th><th class="num">took</th>
        ${split ? `<th class="num">tokens in</th><th class="num">out</th>` : `<th class="num">tokens</th>`}<th>outcome</th></tr></thead><tbody>${attempts.map((a) =>
        `<tr><td class="num">${num(a.attempt)}</td><td>${rel(a.t0)}</td><td class="num">${a.t1 == null ? "running" : dur(a.t1 - a.t0)}</td>
        ${split ? `<td class="num">${num(a.tokens_in)}</td><td class="num">${num(a.tokens_out)}</td>` : `<td class="num">${num(a.tokens)}</td>`}
        <td class="${a.error ? "error" : ""}" style="white-space:normal">${esc(a.error || a.outcome || "")}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">none yet</p>`}
      <h3>Time spent</h3>${spans.length ? `<table><tbody>${spans.map((s) =>
        `<tr><td><i style="display:inline-block;width:10px;height:10px;border-radius:2px;background:${SPAN_COLOURS[s.kind] || "#999"}"></i> ${esc(s.kind)}</td>
        <td>${rel(s.t0)}</td><td class="num">${s.t1 == null ? "…" : dur(s.t1 - s.t0)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">no spans recorded</p>`}
      <h3>Output</h3>${out ? `<pre id="task-output">${esc(out)}</pre>` : `<p class="muted">no output${live ? " yet" : ""}</p>`}`;
    $("#task-cancel").addEventListener("click", async (e) => {
      e.currentTarget.disabled = true;
      try {
        const r = await postJSON(`${base}/tasks/${encodeURIComponent(key)}/cancel`);
        $("#task-msg").textContent = "asked: " + (r.status || "cancelling");
        changed();
        setTimeout(() => { if (seq === drawerSeq && !$("#drawer").hidden) openDrawer(base, key, canAct, changed); }, 800);
      } catch (err) { $("#task-msg").className = "error"; $("#task-msg").textContent = err.message; }
    });
  }
  function closeDrawer() { drawerSeq++; $("#drawer").hidden = true; document.querySelectorAll("#tasks tr.sel").forEach((r) => r.classList.remove("sel")); }
  $("#drawer-close").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDrawer(); });

  // --- settings ------------------------------------------------------------------------------
  function settingsView() {
    const sc = newScope();
    document.title = "fanout · settings";
    const view = $("#view");
    view.innerHTML = `<section class="panel settings"><h2>Settings <span class="muted">apply at once to every run this server drives</span></h2>
      <form id="settings"><p class="muted">loading…</p></form><p id="settings-msg"></p></section>`;
    let now = null;
    const form = $("#settings");
    function draw(s) {
      now = s;
      const lanes = Object.entries(s.lanes || {}), provs = Object.entries(s.providers || {});
      const v = (x) => x == null ? "" : esc(String(x));
      form.innerHTML = `
        <fieldset><legend>Concurrency</legend><label>calls in flight at once <input type="number" min="1" ${s.max_concurrency ? `max="${v(s.max_concurrency)}"` : ""} name="concurrency" value="${v(s.concurrency)}"></label>
          ${s.max_concurrency ? `<span class="muted">at most ${num(s.max_concurrency)}: the server's --concurrency</span>` : ""}</fieldset>
        <fieldset><legend>Lane limits</legend>${lanes.length ? `<table><tbody>${lanes.map(([n, l]) =>
          `<tr><td>${esc(n)}</td><td><input type="number" min="1" data-lane="${esc(n)}" value="${v(l)}" placeholder="no limit" disabled></td></tr>`).join("")}</tbody></table>
          <p class="muted note">fixed while the server runs: set them in fanout.yaml (<span class="mono">lanes:</span>) and start the server again</p>`
          : `<p class="muted">no lanes configured</p>`}</fieldset>
        <fieldset><legend>Provider budgets</legend>${provs.length ? `<table><thead><tr><th>provider</th><th>requests / min</th><th>tokens / min</th></tr></thead><tbody>${provs.map(([n, p]) =>
          `<tr><td>${esc(n)}</td><td><input type="number" min="1" data-prov="${esc(n)}" data-k="rpm" value="${v(p && p.rpm)}" placeholder="no budget"></td>
          <td><input type="number" min="1" data-prov="${esc(n)}" data-k="tpm" value="${v(p && p.tpm)}" placeholder="no budget"></td></tr>`).join("")}</tbody></table>`
          : `<p class="muted">no providers configured</p>`}</fieldset>
        <button type="submit">save</button> <span class="muted">only the fields you changed are sent</span>`;
    }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const patch = {}, numOf = (inp) => inp.value === "" ? null : Number(inp.value);
      const c = form.querySelector('[name="concurrency"]');
      if (c && numOf(c) !== (now.concurrency ?? null)) patch.concurrency = numOf(c);
      form.querySelectorAll("[data-lane]:not(:disabled)").forEach((inp) => {
        const n = inp.dataset.lane;
        if (numOf(inp) !== ((now.lanes || {})[n] ?? null)) (patch.lanes = patch.lanes || {})[n] = numOf(inp);
      });
      form.querySelectorAll("[data-prov]").forEach((inp) => {
        const n = inp.dataset.prov, k = inp.dataset.k, was = ((now.providers || {})[n] || {})[k] ?? null;
        if (numOf(inp) !== was) ((patch.providers = patch.providers || {})[n] = patch.providers[n] || {})[k] = numOf(inp);
      });
      const msg = $("#settings-msg");
      if (!Object.keys(patch).length) { msg.className = "muted"; msg.textContent = "nothing changed"; return; }
      try {
        const got = await api("api/settings", { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify(patch) });
        draw(got);
        // what the server answers is what holds now: say so when it kept another value
        const kept = [];
        if ("concurrency" in patch && got.concurrency !== patch.concurrency) kept.push(`concurrency stays ${got.concurrency}`);
        for (const [n, p] of Object.entries(patch.providers || {})) {
          for (const [k, want] of Object.entries(p)) {
            const have = ((got.providers || {})[n] || {})[k] ?? null;
            if (have !== want) kept.push(`${n} ${k} stays ${have ?? "unset"}`);
          }
        }
        msg.className = kept.length ? "error" : "";
        msg.textContent = kept.length ? "not applied by the server: " + kept.join("; ") : "saved: " + JSON.stringify(patch);
      } catch (err) { msg.className = "error"; msg.textContent = err.message; }
    });
    api("api/settings").then((s) => { if (sc.alive) { draw(s); setConn("", "settings"); } },
      (err) => { form.innerHTML = `<p class="error">${esc(err.message)}</p>`; });
  }

  route();
})();
