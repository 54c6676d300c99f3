/* SlowFast Explorer's browser player: keeps the runs it is sent (visuals/player.py's deltas)
   and draws any step of them. Python decides what a step means; this file only draws.
   SlowFastPlayer.mount(element, {compare: bool}) -> player; player.receive(message). */
(function (root) {
  "use strict";
  if (root.SlowFastPlayer) return;
  const SPEEDS = [2, 5, 10, 25, 60];  // Play: steps per second
  const FOLLOW_MS = 0;  // a live run: one step per frame (no frame skipped), every step shown
  const MASK_BG = "#e3e3e3", LO = [255, 243, 176], HI = [95, 179, 200], NOW = "#d62728", SPAN = "#111";
  const SEGMENTS = {0: [["#dbe9f6", "#08519c"]], 1: [["#dbe9f6", "#6baed6"], ["#a1d99b", "#00441b"]],
    2: [["#dbe9f6", "#9ecae1"], ["#fdd49e", "#d7301f"], ["#a1d99b", "#00441b"]]};
  const TABS = ["Certainty", "Stages", "Convergence", "Cache", "Speed"];
  const ROW_HEIGHTS = [10, 8, 6, 5, 4, 3, 2, 1.5, 1, 0.75, 0.5, 0.25];  // the heatmap's row heights, px
  const players = root.SlowFastPlayers = root.SlowFastPlayers || [];

  function el(tag, cls, parent, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function rgb(hex) { return [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16)); }
  function mix(a, b, t) { return "rgb(" + a.map((x, i) => Math.round(x + (b[i] - x) * t)).join(",") + ")"; }
  function u16(s) {
    const bin = atob(s), out = new Float32Array(bin.length >> 1);
    for (let i = 0; i < out.length; i++) out[i] = (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / 65535;
    return out;
  }

  /* One run: its header, deltas and what they imply per position. */
  class Run {
    constructor(head) {
      this.head = head; this.G = head.gen; this.steps = []; this.conf = []; this.end = null;
      this.strs = {}; this.decodedAt = new Int32Array(this.G).fill(-1); this.decTok = new Int32Array(this.G);
      this.changes = [];  // per step: Map position -> argmax token
      this.edits = [];  // per step: Map position -> the token a decoded position took (llada2's editing)
      const t = (head.thresholds || []).map(x => x[0]).slice(0, 2).sort((a, b) => a - b);
      this.edges = [0, ...t, 1]; this.segs = SEGMENTS[t.length].map(s => s.map(rgb));
    }
    add(d) {
      if (d.i !== this.steps.length) return;  // a repeated or out-of-order delta
      Object.assign(this.strs, d.strs || {});
      this.conf.push(u16(d.conf));
      d.dec.forEach((p, k) => { this.decodedAt[p] = d.i; this.decTok[p] = d.tok[k]; });
      const m = new Map();
      if (d.arg || d.arg16) {  // every prediction: four bytes each (arg), or two where every id fits (arg16)
        const w = d.arg ? 4 : 2, b = atob(d.arg || d.arg16), v = new DataView(Uint8Array.from(b, c => c.charCodeAt(0)).buffer);
        for (let p = 0; p < b.length / w; p++) m.set(p, w === 4 ? v.getInt32(4 * p, true) : v.getUint16(2 * p, true));
        d.chg = [...m.keys()]; }
      else d.chg.forEach((p, k) => m.set(p, d.chg_tok[k]));
      this.changes.push(m);
      this.edits.push(new Map((d.ed || []).map((p, k) => [p, d.ed_tok[k]])));
      this.steps.push(d);
    }
    get last() { return this.steps.length - 1; }
    color(c) {
      for (let k = 0; k < this.segs.length; k++) {
        const a = this.edges[k], b = this.edges[k + 1];
        if (c < b || k === this.segs.length - 1) return mix(this.segs[k][0], this.segs[k][1], b > a ? Math.min(Math.max((c - a) / (b - a), 0), 1) : 1);
      }
    }
    argmaxAt(p, s) {
      for (let i = s; i >= 0; i--) { const t = this.changes[i].get(p); if (t !== undefined) return t; }
      return null;
    }
    tokAt(p, s) {  // a decoded position's token as of step s: its last edit, else what it was decoded to
      for (let i = s; i > this.decodedAt[p]; i--) { const t = this.edits[i].get(p); if (t !== undefined) return t; }
      return this.decTok[p];
    }
    str(id) { const s = this.strs[id]; return s ? s : ["#" + id, "#" + id, 0]; }
    decodedBy(s) { let n = 0; for (let p = 0; p < this.G; p++) if (this.decodedAt[p] >= 0 && this.decodedAt[p] <= s) n++; return n; }
    textAt(s) {
      if (this.end && this.end.text != null && s === this.last) return this.end.text;
      let out = "", pending = false;
      for (let p = 0; p < this.G; p++) {
        const at = this.decodedAt[p];
        if (at < 0 || at > s) { pending = true; continue; }
        const [raw, , isEnd] = this.str(this.tokAt(p, s));
        if (isEnd) break;
        if (pending) { out += this.head.mask; pending = false; }
        out += raw;
      }
      return pending ? out + this.head.mask : out;
    }
  }

  /* One run's canvas and heatmap (a compare shows one per configuration). */
  class Slot {
    constructor(player, parent, run, compact) {
      this.player = player; this.run = run; this.compact = compact;
      this.box = el("div", "sfp-slot", parent);
      if (compact) this.label = el("div", "sfp-slot-label", this.box, run.head.label || run.head.sampler);
      this.cells = el("div", "sfp-canvas", this.box);
      this.cellEls = [];
      for (let p = 0; p < run.G; p++) {
        const c = el("span", "sf-cell", this.cells, run.head.mask); c.dataset.pos = p; this.cellEls.push(c);
      }
      this.heatBox = el("div", "sfp-heat", compact ? this.box : player.panels.Certainty);
      this.heat = el("canvas", "sfp-heat-cells", this.heatBox);
      this.mark = el("canvas", "sfp-heat-mark", this.heatBox);
      this.tip = el("div", "sfp-tip", compact ? this.box : player.panels.Certainty);
      this.axis = el("div", "sfp-axis", compact ? this.box : player.panels.Certainty);
      this.drawn = 0;
      if (root.ResizeObserver) {  // a wider or newly shown box (a tab, a window): draw it again at its width
        let width = 0;
        new ResizeObserver(() => { const w = this.heatBox.clientWidth; if (w && w !== width) { width = w; this.redraw(); this.drawMark(this.marked == null ? -1 : this.marked); } }).observe(this.heatBox);
      }
      this.heatBox.addEventListener("mousemove", e => this.hover(e));
      this.heatBox.addEventListener("mouseleave", () => { this.tip.style.display = "none"; });
    }
    geometry() {
      const run = this.run, n = Math.max(this.player.rowsFor(this), 1);
      const W = Math.max(this.heatBox.clientWidth || 600, 200), left = 34, strip = 6;
      const cw = (W - left - strip - 2) / run.G;
      // rows of a few fixed heights (a new height redraws every row): at most 300 px up to 300 steps, 600 beyond
      const rh = this.compact ? this.player.rowHeight : ROW_HEIGHTS.find(h => h <= (n <= 300 ? 300 : 600) / n) || 0.25;
      let cap = 64; while (cap < n) cap *= 2;  // rows the canvas holds before it is made anew
      return {W, left, strip, cw, rh, n, cap};
    }
    redraw() { this.drawn = 0; this.g = null; this.drawRows(); }
    drawRows() {
      const run = this.run, g = this.geometry(), dpr = root.devicePixelRatio || 1;
      if (!this.g || g.W !== this.g.W || g.rh !== this.g.rh || g.cap !== this.g.cap) {
        this.g = g; this.drawn = 0;
        for (const c of [this.heat, this.mark]) {
          c.width = Math.round(g.W * dpr); c.height = Math.round(g.cap * g.rh * dpr); c.style.height = g.cap * g.rh + "px";
          c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
        }
        this.axis.innerHTML = "";
        const every = Math.max(8, Math.ceil(run.G / 8 / 8) * 8);
        for (let p = 0; p < run.G; p += every) el("span", "", this.axis, String(p)).style.left = (g.left + g.strip + p * g.cw) + "px";
      }
      this.heatBox.style.height = Math.max(g.n * g.rh, 2) + "px";
      const x = this.heat.getContext("2d"), {left, strip, cw, rh} = this.g, x0 = left + strip;
      const edges = []; for (let e = run.head.block; e < run.G; e += run.head.block) edges.push(e);
      for (let s = this.drawn; s <= run.last; s++) {
        const d = run.steps[s], row = run.conf[s], y = s * rh;
        x.fillStyle = (run.head.colors[d.stage] || ["#9467bd"])[0]; x.fillRect(left, y, strip - 1, rh);
        for (let p = 0; p < run.G; p++) {
          const at = run.decodedAt[p];
          if (at >= 0 && at < s) continue;  // decoded before this forward: blank
          x.fillStyle = run.color(row[p]); x.fillRect(x0 + p * cw, y, Math.max(cw, 1), rh);
          if (at === s) { x.fillStyle = "#111"; x.fillRect(x0 + p * cw + cw * 0.25, y + rh * 0.2, Math.max(cw * 0.5, 1), Math.max(rh * 0.6, 0.5)); }
        }
        x.fillStyle = "#999"; edges.forEach(e => x.fillRect(x0 + e * cw - 0.5, y, 1, rh));
        if (d.span) {
          x.fillStyle = "#1f77b4"; x.fillRect(x0 + d.span[0] * cw - 1, y, 2, rh);
          x.fillStyle = "#d62728"; x.fillRect(x0 + d.span[1] * cw - 1, y, 2, rh);
        }
        if (s % Math.max(1, Math.ceil(12 / rh)) === 0) { x.fillStyle = "#555"; x.font = "9px sans-serif"; x.fillText(String(s), 2, y + Math.min(Math.max(rh, 8), 9)); }
      }
      this.drawn = run.last + 1;
    }
    drawMark(s) {
      const m = this.mark.getContext("2d"), g = this.g; this.marked = s; if (!g) return;
      m.clearRect(0, 0, g.W, g.cap * g.rh);
      if (s < 0) return;
      m.strokeStyle = NOW; m.lineWidth = 2; m.strokeRect(g.left + 1, s * g.rh, g.W - g.left - 2, Math.max(g.rh, 2));
      m.fillStyle = NOW; m.beginPath(); m.moveTo(g.left - 8, s * g.rh - 3); m.lineTo(g.left - 1, s * g.rh + g.rh / 2); m.lineTo(g.left - 8, s * g.rh + g.rh + 3); m.fill();
    }
    hover(e) {
      const g = this.g, run = this.run; if (!g) return;
      const r = this.heat.getBoundingClientRect(), box = this.tip.parentNode.getBoundingClientRect();
      const s = Math.floor((e.clientY - r.top) / g.rh), p = Math.floor((e.clientX - r.left - g.left - g.strip) / g.cw);
      if (s < 0 || s > run.last || p < 0 || p >= run.G) { this.tip.style.display = "none"; return; }
      const at = run.decodedAt[p], tok = run.argmaxAt(p, s);
      const state = at >= 0 && at < s ? "decoded at step " + at : at === s ? "decoded at this step" : "masked";
      this.tip.textContent = "step " + s + " (" + run.steps[s].stage + "), position " + p + ": " + state +
        (at >= 0 && at < s ? "" : ", confidence " + run.conf[s][p].toFixed(3) + ", argmax " + JSON.stringify(tok === null ? "?" : run.str(tok)[0]));
      this.tip.style.display = "block";
      this.tip.style.left = Math.min(e.clientX - box.left + 12, box.width - 220) + "px"; this.tip.style.top = (e.clientY - box.top + 12) + "px";
    }
    drawCanvas(s) {
      const run = this.run, d = run.steps[s], now = new Set(d ? d.dec : []), total = Math.max(run.last, 1);
      const span = d && d.span ? d.span : [0, 0];
      for (let p = 0; p < run.G; p++) {
        const c = this.cellEls[p], at = run.decodedAt[p], done = at >= 0 && at <= s;
        let text = run.head.mask, bg = MASK_BG, tip = "position " + p + ": masked";
        if (done) {
          const [raw, cell] = run.str(run.tokAt(p, s));
          text = cell; bg = mix(LO, HI, at / total);
          tip = "position " + p + ": " + JSON.stringify(raw) + "\ndecoded at step " + at + " (" + run.steps[at].stage + ")\nconfidence when decoded " + run.conf[at][p].toFixed(3);
        } else if (d) {
          const tok = run.argmaxAt(p, s);
          tip += "\ncurrent argmax " + JSON.stringify(tok === null ? "?" : run.str(tok)[0]) + " (" + run.conf[s][p].toFixed(3) + ")";
        }
        if (c.textContent !== text) c.textContent = text;
        c.style.background = bg; c.title = tip;
        c.classList.toggle("sf-now", now.has(p)); c.classList.toggle("sf-masked", !done); c.classList.toggle("sf-span", p >= span[0] && p < span[1]);
      }
    }
  }

  class Player {
    constructor(host, opts) {
      this.host = host; this.compare = !!(opts && opts.compare);
      this.runs = []; this.slots = []; this.shown = -1; this.follow = true; this.timer = null; this.tab = TABS[0];
      this.pending = false; this.plotted = {}; this.lastFrame = 0;
      host.innerHTML = "";
      const top = el("div", "sfp", host);
      this.status = el("div", "sfp-status", top, this.compare ? "Press Compare to run the configurations." : "No run yet: press Run, or replay a trace.");
      this.note = el("div", "sfp-note", top);
      this.verdict = el("div", "sfp-verdict", top);
      if (!this.compare) { el("div", "sfp-label", top, "Text"); this.text = el("div", "sfp-text", top); }
      this.canvasArea = el("div", "sfp-slots" + (this.compare ? " sfp-compare" : ""), top);
      const bar = el("div", "sfp-controls", top);
      this.prev = el("button", "sfp-prev", bar, "◀ Step");
      this.playBtn = el("button", "sfp-play", bar, "▶ Play");
      this.next = el("button", "sfp-next", bar, "Step ▶");
      this.slider = el("input", "sfp-slider", bar); this.slider.type = "range"; this.slider.min = 0; this.slider.max = 0; this.slider.value = 0;
      this.slider.setAttribute("aria-label", "step");
      this.stepLabel = el("span", "sfp-step", bar, "step –");
      this.speed = el("select", "sfp-speed", bar); this.speed.setAttribute("aria-label", "playback speed");
      SPEEDS.forEach(v => { const o = el("option", "", this.speed, v + " steps/s"); o.value = v; });
      this.speed.value = "10";
      this.prev.onclick = () => this.stepBy(-1);
      this.next.onclick = () => this.stepBy(1);
      this.playBtn.onclick = () => (this.timer ? this.pause() : this.play());
      this.slider.addEventListener("input", () => { this.pause(); this.show(+this.slider.value); });
      this.speed.addEventListener("change", () => { if (this.timer) { this.pause(); this.play(); } });
      if (!this.compare) {
        this.explainHead = el("h3", "sfp-explain-head", top, "What you are seeing");
        this.explain = el("div", "sfp-explain", top);
        this.intro = el("details", "sfp-intro", top);
        const tabs = el("div", "sfp-tabs", top); this.tabBtns = {}; this.panels = {};
        const panelBox = el("div", "sfp-panels", top);
        for (const name of TABS) {
          const b = el("button", "sfp-tab", tabs, name); b.onclick = () => this.selectTab(name); this.tabBtns[name] = b;
          const panel = el("div", "sfp-panel sfp-panel-" + name.toLowerCase(), panelBox); this.panels[name] = panel;
          if (name === "Certainty") { this.legend = el("div", "sfp-legend", panel); }
          else { this.plotDivs = this.plotDivs || {}; this.plotDivs[name] = el("div", "sfp-plot", panel); }
        }
        this.selectTab(TABS[0]);
      }
      players.push(this);
    }
    get run() { return this.runs[0]; }
    get lastStep() { return this.runs.reduce((m, r) => Math.max(m, r.last), -1); }
    rowsFor(slot) { return slot.run.last + 1; }
    /* a compare draws every run at one height per forward, so a short run is visibly short */
    get rowHeight() { return Math.max(1, Math.min(6, Math.floor(400 / Math.max(this.lastStep + 1, 1)))); }

    receive(m) {
      if (typeof m === "string") { if (!m) return; m = JSON.parse(m); }
      if (Array.isArray(m)) { m.forEach(x => this.receive(x)); return; }
      if (!m || typeof m !== "object") return;
      if (m.reset) this.reset(m.reset);
      let run = this.runs[m.slot || 0];
      if (m.head) {
        if (!m.slot) this.reset();
        run = new Run(m.head); this.runs[m.slot || 0] = run;
        this.slots[m.slot || 0] = new Slot(this, this.canvasArea, run, this.compare);
        if (!this.compare) this.drawLegend(run);
        if (this.intro && m.head.intro) this.intro.innerHTML = m.head.intro;
        this.follow = true;
      }
      if (!run || (m.run && run.head.id !== m.run)) return;
      (m.steps || []).forEach(d => run.add(d));
      if (m.end) {
        run.end = m.end; run.endAt = performance.now();
        for (const [i, h] of Object.entries(m.end.explain || {})) if (run.steps[+i]) run.steps[+i].explain = h;
        if (m.end.note) this.note.innerHTML = m.end.note;
        if (m.end.show != null) { this.follow = false; this.shown = Math.min(m.end.show, this.lastStep); }
      }
      if (m.note != null) this.note.innerHTML = m.note;
      this.slider.max = Math.max(this.lastStep, 0);
      this.slots.forEach(s => s && s.drawRows());
      if (this.compare) this.slots.forEach(s => s && s.drawRows());  // a longer run may have changed the row height
      if (this.follow) this.schedule(); else this.show(Math.max(this.shown, 0));
    }
    reset(note) {
      this.pause(); this.runs = []; this.slots = []; this.canvasArea.innerHTML = ""; this.shown = -1; this.plotted = {};
      if (this.slider) { this.slider.max = 0; this.slider.value = 0; }
      this.verdict.textContent = ""; this.verdict.className = "sfp-verdict"; this.note.textContent = "";
      if (this.panels) this.panels.Certainty.querySelectorAll(".sfp-heat, .sfp-axis, .sfp-tip").forEach(e => e.remove());
      if (typeof note === "string") this.status.textContent = note;
    }
    schedule() {  // live: advance one step per frame until the newest is on screen
      if (this.pending) return;
      this.pending = true;
      const tick = (t) => {
        this.pending = false;
        if (!this.follow || this.shown >= this.lastStep) { if (this.follow && this.shown === this.lastStep) this.show(this.shown); return; }
        if (t - this.lastFrame < FOLLOW_MS) { this.pending = true; requestAnimationFrame(tick); return; }
        this.lastFrame = t;
        this.show(this.lastStep - this.shown > 400 ? this.lastStep : this.shown + 1);
        if (this.shown < this.lastStep) { this.pending = true; requestAnimationFrame(tick); }
      };
      requestAnimationFrame(tick);
    }
    stepBy(k) { this.pause(); this.show(Math.min(Math.max(this.shown + k, 0), this.lastStep)); }
    play() {
      if (this.lastStep < 1) return;
      this.follow = false;
      if (this.shown >= this.lastStep) this.show(0);
      this.playBtn.textContent = "❚❚ Pause";
      const every = 1000 / (+this.speed.value || 10);
      this.timer = setInterval(() => {
        if (this.shown >= this.lastStep) { this.pause(); return; }
        this.show(this.shown + 1);
      }, every);
    }
    pause() {
      this.follow = false;
      if (this.timer) { clearInterval(this.timer); this.timer = null; }
      if (this.playBtn) this.playBtn.textContent = "▶ Play";
    }
    stateWord(s) {
      const last = this.lastStep, ended = this.runs.length && this.runs.every(r => r.end);
      if (!ended) return this.follow ? "running" : "decoding; showing step " + s + " of " + last + " so far";
      if (s < last) return "replaying step " + s + " of " + last;
      const e = this.run.end;
      return e.state === "ended" ? "ended: " + (e.error || "") : e.state;
    }
    show(s) {
      if (!this.runs.length) return;
      s = Math.min(Math.max(s | 0, 0), this.lastStep);
      this.shown = s; this.slider.value = s;
      this.stepLabel.textContent = "step " + s + " / " + this.lastStep;
      this.slots.forEach(slot => { if (!slot) return; const k = Math.min(s, slot.run.last); if (k >= 0) slot.drawCanvas(k); slot.drawMark(k); });
      const word = this.stateWord(s);
      if (this.compare) { this.status.textContent = word + " · forward " + (s + 1) + " of the longest run's " + (this.lastStep + 1); return; }
      const run = this.run, d = run.steps[s];
      if (!d) return;
      this.status.textContent = word + " | " + d.line;
      this.showText(run, s);
      const head = "What you are seeing: step " + s + " of " + run.last;
      if (this.explainHead.textContent !== head) this.explainHead.textContent = head;
      this.explain.innerHTML = d.explain;
      this.showVerdict(s);
      this.drawPlotMarker(s);
    }
    showText(run, s) {  // the text as of step s; at the end, where the task's checker stopped is marked
      const text = run.textAt(s), v = run.end && run.end.verdict;
      this.text.textContent = "";
      if (!v || v.correct || v.where == null || s !== run.last || v.where >= text.length) { this.text.textContent = text; return; }
      let end = v.where + 1;
      while (end < text.length && !",.;".includes(text[end])) end++;
      this.text.append(text.slice(0, v.where));
      el("mark", "sfp-where", this.text, text.slice(v.where, end)).title = "where the checker stopped: " + v.reason;
      this.text.append(text.slice(end));
    }
    showVerdict(s) {
      const e = this.run.end, v = e && e.verdict;
      if (!v || s !== this.run.last) { this.verdict.textContent = ""; this.verdict.className = "sfp-verdict"; return; }
      this.verdict.className = "sfp-verdict " + (v.correct ? "sfp-right" : "sfp-wrong");
      this.verdict.textContent = (v.correct ? "✓ right" : "✗ wrong") + " (" + v.task + "): " + v.reason;
    }
    drawLegend(run) {
      const t = run.head.thresholds || [];
      const stops = [];
      run.segs.forEach((seg, k) => { stops.push(mix(seg[0], seg[0], 0) + " " + (run.edges[k] * 100) + "%", mix(seg[1], seg[1], 0) + " " + (run.edges[k + 1] * 100) + "%"); });
      this.legend.innerHTML = "";
      el("span", "", this.legend, "Certainty of masked positions (rows: steps, top to bottom; columns: positions): 0 ");
      const bar = el("span", "sfp-legend-bar", this.legend); bar.style.background = "linear-gradient(90deg," + stops.join(",") + ")";
      el("span", "", this.legend, " 1 · breaks at " + (t.length ? t.map(x => x[1] + " " + x[0]).join(", ") : "none") + " · ■ decoded this step · blank: decoded earlier · left strip: stage · blue/red bars: span start/end");
    }
    selectTab(name) {
      this.tab = name;
      for (const n of TABS) { this.tabBtns[n].classList.toggle("sfp-active", n === name); this.panels[n].style.display = n === name ? "" : "none"; }
      if (name === "Certainty") this.slots.forEach(s => s && s.redraw() && 0);
      if (this.shown >= 0) this.show(this.shown);
    }
    /* Stages, convergence, cache, speed: Plotly figures of the whole run so far, drawn when
       their tab is visible; a step only moves the marker. */
    drawPlotMarker(s) {
      if (this.compare || this.tab === "Certainty" || !this.run) return;
      const div = this.plotDivs[this.tab], P = root.Plotly;
      if (!P) { div.textContent = "This plot needs Plotly.js, which did not load."; return; }
      const key = this.run.head.id + ":" + this.run.last + ":" + (this.run.end ? 1 : 0);
      if (this.plotted[this.tab] !== key) {
        const now = performance.now();
        if (!this.run.end && this.plotted[this.tab] && now - (this.plottedAt || 0) < 500) { this.later(); }
        else {
          const fig = FIGS[this.tab](this.run);
          fig.layout.shapes = [marker(s)].concat(fig.layout.shapes || []);
          P.react(div, fig.data, fig.layout, {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["toImage", "lasso2d", "select2d"]});
          this.plotted[this.tab] = key; this.plottedAt = now; return;
        }
      }
      if (div.layout) P.relayout(div, {"shapes[0].x0": s, "shapes[0].x1": s});
    }
    later() { if (this.laterTimer) return; this.laterTimer = setTimeout(() => { this.laterTimer = null; this.drawPlotMarker(this.shown); }, 550); }
  }

  function marker(s) { return {type: "line", xref: "x", yref: "paper", x0: s, x1: s, y0: 0, y1: 1, line: {color: NOW, width: 2}}; }
  function base(title, extra) {
    return Object.assign({title: {text: title, x: 0.01, xanchor: "left", font: {size: 13}}, height: 300,
      margin: {l: 50, r: 44, t: 40, b: 80}, font: {size: 11}, showlegend: true,
      legend: {orientation: "h", y: -0.22, yanchor: "top", x: 0, font: {size: 10}}, xaxis: {title: {text: "step"}, zeroline: false},
      plot_bgcolor: "white", uirevision: "sfp"}, extra || {});
  }
  function steps(run) { return run.steps.map(d => d.i); }
  const FIGS = {
    Stages(run) {
      const data = [], byStage = {};
      run.steps.forEach(d => { (byStage[d.stage] = byStage[d.stage] || []).push(d.i); });
      for (const [st, xs] of Object.entries(byStage)) data.push({type: "bar", x: xs, y: xs.map(() => run.G), width: 1, name: st, opacity: 0.25, marker: {color: (run.head.colors[st] || ["#9467bd"])[0]}, hovertemplate: "step %{x}: " + st + "<extra></extra>"});
      const sx = run.steps.filter(d => d.span);
      data.push({type: "scatter", mode: "lines", line: {shape: "hv", color: "#1f77b4", width: 2}, name: "span start", x: sx.map(d => d.i - 0.5), y: sx.map(d => d.span[0])});
      data.push({type: "scatter", mode: "lines", line: {shape: "hv", color: "#d62728", width: 2}, name: "span end", x: sx.map(d => d.i - 0.5), y: sx.map(d => d.span[1])});
      const est = run.steps.filter(d => d.est != null);
      if (est.length) data.push({type: "scatter", mode: "markers", name: "this forward's horizon estimate", x: est.map(d => d.i), y: est.map(d => d.est), marker: {symbol: "diamond-open", size: 7, color: "#9467bd"}});
      const dx = [], dy = [];
      run.steps.forEach(d => d.dec.forEach(p => { dx.push(d.i); dy.push(p + 0.5); }));
      data.push({type: "scatter", mode: "markers", name: "decoded", x: dx, y: dy, marker: {size: 4, color: "#111"}, hovertemplate: "step %{x}: decoded position %{y:.0f}<extra></extra>"});
      return {data, layout: base("Stages and span per step", {barmode: "overlay", bargap: 0, yaxis: {title: {text: "position"}, range: [0, run.G]}})};
    },
    Convergence(run) {
      const data = [], sf = run.steps.some(d => d.est != null || d.sp != null);
      const changed = run.steps.map((d, i) => d.chg.filter(p => !(run.decodedAt[p] >= 0 && run.decodedAt[p] < i)).length);
      if (sf) {
        const e = run.steps.filter(d => d.est != null), sp = run.steps.filter(d => d.sp != null);
        data.push({type: "scatter", mode: "lines+markers", name: "this forward's horizon estimate", x: e.map(d => d.i), y: e.map(d => d.est), line: {color: "#9467bd"}});
        data.push({type: "scatter", mode: "markers", name: "window's " + run.head.spread_label, x: sp.map(d => d.i), y: sp.map(d => d.sp), yaxis: "y2", marker: {color: "#2ca02c", size: 7}});
        const layout = base("Convergence: the horizon estimates and their spread", {
          xaxis: {title: {text: "step"}, zeroline: false, anchor: "y2"},
          yaxis: {title: {text: "horizon (position)"}, domain: [0.55, 1], range: [0, run.G]},
          yaxis2: {title: {text: run.head.spread_label}, domain: [0, 0.42], rangemode: "tozero"}, height: 380,
          shapes: run.head.spread != null ? [{type: "line", xref: "paper", x0: 0, x1: 1, yref: "y2", y0: run.head.spread, y1: run.head.spread, line: {color: "#d62728", dash: "dash", width: 1}}] : [],
          annotations: run.head.spread != null ? [{xref: "paper", x: 1, xanchor: "right", yref: "y2", y: run.head.spread, yanchor: "bottom", text: "stability threshold " + run.head.spread, showarrow: false, font: {size: 10, color: "#d62728"}}] : []});
        return {data, layout};
      }
      const eb = run.steps.filter(d => d.eb);
      if (eb.length) {  /* DiffusionGemma: the stopping rule's mean entropy against its threshold (drawn over), acceptances per step */
        const thr = run.head.stop_entropy, st = eb.filter(d => d.eb.st);
        data.push({type: "bar", x: eb.map(d => d.i), y: eb.map(d => d.eb.acc), name: "positions accepted", marker: {color: "#d9d9d9"}});
        data.push({type: "scatter", mode: "lines+markers", x: eb.map(d => d.i), y: eb.map(d => d.eb.H), name: "mean entropy (nats)", yaxis: "y2", line: {color: "#9467bd"}, marker: {size: 4}});
        data.push({type: "scatter", mode: "markers", x: st.map(d => d.i), y: st.map(d => d.eb.H), name: "argmax stable", yaxis: "y2", marker: {symbol: "star", size: 11, color: "#ffbf00", line: {width: 1, color: "#333"}}});
        return {data, layout: base("Convergence: the stopping rule (mean entropy, stability) and the positions accepted", {
          yaxis: {title: {text: "accepted"}, rangemode: "tozero"}, yaxis2: {title: {text: "mean entropy"}, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false},
          shapes: thr != null ? [{type: "line", xref: "paper", x0: 0, x1: 1, yref: "y2", y0: thr, y1: thr, line: {color: "#d62728", dash: "dash", width: 1}}] : [],
          annotations: thr != null ? [{xref: "paper", x: 1, xanchor: "right", yref: "y2", y: thr, yanchor: "bottom", text: "stop below " + thr, showarrow: false, font: {size: 10, color: "#d62728"}}] : []})};
      }
      data.push({type: "bar", x: steps(run), y: changed, name: "masked positions whose argmax changed", marker: {color: "#7f7f7f"}});
      return {data, layout: base("Convergence: how many masked positions changed their prediction (" + run.head.sampler + " estimates no horizon)", {yaxis: {title: {text: "positions"}, rangemode: "tozero"}})};
    },
    Cache(run) {
      if (!run.head.cache) {
        const fed = run.steps.map(d => d.fed);
        return {data: [{type: "bar", x: steps(run), y: fed, name: "tokens fed", marker: {color: "#8c564b"}}],
          layout: base("Cache off: every forward computes every row it is fed", {yaxis: {title: {text: "tokens fed"}, rangemode: "tozero"}})};
      }
      const c = run.steps.filter(d => d.cache), L = c.length ? c[0].cache.layers.length : 0;
      const z = []; for (let l = 0; l < L; l++) z.push(c.map(d => d.cache.layers[l]));
      const cs = run.head.cache;
      return {data: [
        {type: "heatmap", x: c.map(d => d.i), y: [...Array(L).keys()], z, zmin: 0, zmax: 1, colorscale: "Blues", colorbar: {title: {text: "hit", side: "right"}, thickness: 10, len: 0.5, y: 0.25}, yaxis: "y2", name: "response hit rate", hovertemplate: "step %{x}, layer %{y}: %{z:.2f}<extra></extra>"},
        {type: "scatter", mode: "lines+markers", x: c.map(d => d.i), y: c.map(d => d.cache.prompt), name: "prompt rows reused", marker: {size: 4}},
        {type: "scatter", mode: "lines+markers", x: c.map(d => d.i), y: c.map(d => d.cache.response), name: "response rows reused", marker: {size: 4}}],
        layout: base("dLLM-Cache hit rates · K_p " + cs.kp + " · K_r " + cs.kr + " · rho " + cs.rho, {height: 400,
          yaxis: {title: {text: "share reused"}, domain: [0.58, 1], range: [0, 1.05]}, yaxis2: {title: {text: "layer"}, domain: [0, 0.45]}})};
    },
    Speed(run) {
      const dec = run.steps.map(d => d.dec.length);
      let t = 0; const ms = run.steps.map(d => (t += d.ms));
      return {data: [{type: "bar", x: steps(run), y: dec, name: "tokens decoded", marker: {color: "#1f77b4"}},
        {type: "scatter", mode: "lines", x: steps(run), y: ms.map(v => v / 1000), name: "seconds so far", yaxis: "y2", line: {color: "#ff7f0e"}}],
        layout: base("Speed: tokens decoded per forward, time", {yaxis: {title: {text: "tokens"}, rangemode: "tozero"},
          yaxis2: {title: {text: "s"}, overlaying: "y", side: "right", rangemode: "tozero"}})};
    },
  };

  /* Stop: pause every player at once; "step/last" of a playback it paused ("" if none played). */
  function stopAll() {
    let paused = "";
    for (const p of players) {
      const playing = p.timer || (p.follow && p.runs.length && p.runs.every(r => r.end) && p.shown < p.lastStep);
      if (playing) paused = p.shown + "/" + p.lastStep;
      p.pause();
    }
    return paused;
  }
  root.SlowFastPlayer = {mount: (host, opts) => new Player(host, opts), players, stopAll};
})(typeof window !== "undefined" ? window : this);
