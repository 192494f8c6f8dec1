// blindspot report: the pair gallery. Data comes from script tags (works from file://):
// data/meta.js and data/index.js before this file, pair chunks (data/pairs/NNNNN.js) on demand.
// Review decisions live in localStorage, one entry per report, until exported.
(function () {
  "use strict";
  const B = window.BLINDSPOT || (window.BLINDSPOT = {});
  const $ = (id) => document.getElementById(id);
  const meta = B.meta;
  const index = B.index;
  const n = index ? index.clip.length : 0;
  const chunks = {};
  const waiting = {};
  const storeKey = "blindspot:" + (meta ? meta.report_id : "none");
  let decisions = {};
  try {
    decisions = JSON.parse(localStorage.getItem(storeKey) || "{}") || {};
  } catch (e) {
    decisions = {};
  }
  let view = [];
  let page = 0;
  let focus = 0;

  function fail(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = false;
  }

  B.addChunk = function (c) {
    chunks[c.index] = c;
    (waiting[c.index] || []).forEach((w) => w.resolve());
    delete waiting[c.index];
  };

  function loadChunk(i) {
    if (chunks[i]) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const first = !waiting[i];
      (waiting[i] = waiting[i] || []).push({ resolve, reject });
      if (!first) return;
      const s = document.createElement("script");
      s.src = "data/pairs/" + String(i).padStart(5, "0") + ".js";
      s.onerror = () => {
        (waiting[i] || []).forEach((w) => w.reject(new Error("cannot load " + s.src)));
        delete waiting[i];
      };
      document.head.appendChild(s);
    });
  }

  function row(i) {
    const c = chunks[Math.floor(i / meta.chunk)];
    const r = c.rows[i - c.first];
    return {
      a: r[0], b: r[1], aUri: r[2], bUri: r[3], aCap: r[4], bCap: r[5],
      aThumb: r[6], bThumb: r[7], aWhy: r[8], bWhy: r[9], aDups: r[10], bDups: r[11],
      clip: r[12], dino: r[13], aGroup: r[14], bGroup: r[15], aSize: r[16] || 1, bSize: r[17] || 1,
      members: r[18] || 1, draft: r[19] || null,
    };
  }

  function save() {
    try {
      localStorage.setItem(storeKey, JSON.stringify(decisions));
    } catch (e) {
      fail("could not keep decisions in this browser: " + e.message + " (export them now)");
    }
    $("decided").textContent = summary();
  }

  function summary() {
    let a = 0, r = 0, d = 0;
    for (const k in decisions) {
      if (decisions[k].decision === "accept") a++;
      if (decisions[k].decision === "reject") r++;
      if (decisions[k].draft) d++;
    }
    return a + " accepted, " + r + " rejected" + (meta && meta.drafts ? ", " + d + " drafts reviewed" : "");
  }

  function num(id) {
    const v = $(id).value.trim();
    return v === "" ? null : Number(v);
  }

  function compute() {
    const cmin = num("clip-min"), cmax = num("clip-max");
    const dmin = num("dino-min"), dmax = num("dino-max");
    const pat = $("pattern").value, dec = $("decision").value;
    const comp = num("comp");
    const df = $("draft-filter") ? $("draft-filter").value : "";
    const out = [];
    for (let i = 0; i < n; i++) {
      const c = index.clip[i], d = index.dino[i];
      if (cmin !== null && !(c >= cmin)) continue;
      if (cmax !== null && !(c <= cmax)) continue;
      if (dmin !== null && !(d >= dmin)) continue;
      if (dmax !== null && !(d <= dmax)) continue;
      if (comp !== null && index.ga[i] !== comp && index.gb[i] !== comp) continue;
      const x = decisions[i];
      if (pat === "-" && x && x.pattern) continue;
      if (pat && pat !== "-" && !(x && x.pattern === pat)) continue;
      const state = x && x.decision ? x.decision : "undecided";
      if (dec && state !== dec) continue;
      if (df && !draftMatches(df, index.draft[i] || "", x)) continue;
      out.push(i);
    }
    const key = {
      "dino-asc": (i) => index.dino[i],
      "dino-desc": (i) => -index.dino[i],
      "clip-desc": (i) => -index.clip[i],
      "clip-asc": (i) => index.clip[i],
      "gap-desc": (i) => index.dino[i] - index.clip[i],
      "comp-desc": (i) => -(index.members[i] || 1),
    }[$("sort").value];
    // Stable: ties keep the gallery order (most CLIP-blind first, then by key).
    out.sort((x, y) => key(x) - key(y) || x - y);
    return out;
  }

  // The gallery's Draft filter over a row's draft code (report/drafts.rs: code).
  function draftMatches(want, code, x) {
    const status = code.split("+")[0];
    if (want === "reviewed") return !!(x && x.draft);
    if (want === "none") return code === "";
    if (want === "blind") return code.endsWith("+blind");
    if (want === "drafted") return ["verified", "disputed", "unverified"].includes(status);
    if (want === "disputed") return status === "disputed" || status === "unverified";
    return status === want;
  }

  function pageSize() {
    return Number($("page-size").value);
  }

  function pages() {
    return Math.max(1, Math.ceil(view.length / pageSize()));
  }

  function refilter() {
    view = compute();
    page = 0;
    focus = 0;
    render();
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function figure(key, thumb, why, dups, cap) {
    const f = el("figure");
    if (thumb) {
      f.appendChild(el("img", { src: thumb, alt: key, loading: "lazy" }));
    } else {
      f.appendChild(el("div", { class: "noimg" }, why || "no thumbnail"));
    }
    // Keys and captions come from the corpus: each in its own bidi isolate, so right-to-left
    // overrides in them cannot reorder what is around them.
    const fc = el("figcaption", { title: key });
    fc.appendChild(el("bdi", {}, key));
    if (dups) fc.appendChild(document.createTextNode(" · " + dups + " duplicate" + (dups > 1 ? "s" : "")));
    f.appendChild(fc);
    if (cap) {
      const c = el("figcaption", { class: "caption" });
      c.appendChild(el("bdi", {}, cap));
      f.appendChild(c);
    }
    return f;
  }

  function card(i) {
    const p = row(i);
    const x = decisions[i] || {};
    const c = el("article", { class: "card" + (x.decision ? " " + x.decision : ""), "data-i": String(i), tabindex: "-1" });
    const imgs = el("div", { class: "imgs" });
    imgs.appendChild(figure(p.a, p.aThumb, p.aWhy, p.aDups, p.aCap));
    imgs.appendChild(figure(p.b, p.bThumb, p.bWhy, p.bDups, p.bCap));
    c.appendChild(imgs);
    const sims = el("div", { class: "sims" });
    sims.appendChild(el("span", {}, "CLIP " + p.clip.toFixed(4)));
    sims.appendChild(el("span", {}, "DINOv2 " + p.dino.toFixed(4)));
    sims.appendChild(el("b", {}, "gap " + (p.clip - p.dino).toFixed(4)));
    c.appendChild(sims);
    const m = el("div", { class: "meta" });
    // Each side's near-duplicate group (a link that filters the gallery to it), and the
    // number of pairs between the two groups that this card stands for.
    [[p.aGroup, p.aSize], [p.bGroup, p.bSize]].forEach(([g, size], k) => {
      if (k) m.appendChild(el("span", {}, " × "));
      if (g === null || g === undefined) {
        m.appendChild(el("span", { class: "comp" }, "no group"));
        return;
      }
      const link = el("a", { href: "#comp=" + g, class: "comp" }, "group #" + g + " (" + size + " images)");
      link.addEventListener("click", (e) => {
        e.preventDefault();
        $("comp").value = g;
        refilter();
      });
      m.appendChild(link);
    });
    m.appendChild(el("span", { class: "members" }, p.members > 1 ? " · " + p.members + " pairs" : ""));
    m.appendChild(el("span", { class: "decision" }, x.decision ? " · " + (x.decision === "accept" ? "accepted" : "rejected") : ""));
    m.appendChild(el("span", { class: "pattern-label" }, x.pattern ? " · " + x.pattern : ""));
    c.appendChild(m);
    if (p.draft) c.appendChild(draftBlock(i, p));
    const d = el("details");
    d.appendChild(el("summary", {}, "source URIs"));
    d.appendChild(el("div", {}, p.aUri));
    d.appendChild(el("div", {}, p.bUri));
    c.appendChild(d);
    const r = el("div", { class: "review" });
    const acc = el("button", { type: "button", class: "accept" }, "Accept (a)");
    const rej = el("button", { type: "button", class: "reject" }, "Reject (r)");
    acc.addEventListener("click", () => decide(i, "accept"));
    rej.addEventListener("click", () => decide(i, "reject"));
    const sel = el("select", { class: "pattern" });
    sel.appendChild(el("option", { value: "" }, "pattern…"));
    meta.patterns.forEach((name, k) => sel.appendChild(el("option", { value: name }, (k + 1) + " " + name)));
    sel.value = x.pattern || "";
    sel.addEventListener("change", () => setPattern(i, sel.value));
    const note = el("input", { class: "note", placeholder: "note (n)", value: x.note || "" });
    note.addEventListener("change", () => setNote(i, note.value));
    keepOnEnter(note, i, () => setNote(i, note.value));
    r.appendChild(acc);
    r.appendChild(rej);
    r.appendChild(sel);
    r.appendChild(note);
    c.appendChild(r);
    c.addEventListener("click", (e) => {
      if (e.target.closest("button, select, input, a, summary")) return;
      setFocus(Array.prototype.indexOf.call($("grid").children, c));
    });
    return c;
  }

  // Enter or Escape in a card's text field keeps what was typed and gives the keys back to
  // the card.
  function keepOnEnter(input, i, keep) {
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === "Escape") {
        e.preventDefault();
        input.blur();
        keep();
        const now = document.querySelector('.card[data-i="' + i + '"]');
        if (now) now.focus({ preventScroll: true });
      }
    });
  }

  const DRAFT_FIELDS = ["question", "option_a", "option_b", "answer_a", "answer_b"];

  // The pair's drafted question as drafted (report --drafts), empty where drafting failed.
  function drafted(p) {
    const d = p.draft && p.draft.draft;
    const out = {};
    DRAFT_FIELDS.forEach((f) => (out[f] = d ? d[f] : ""));
    if (!d) { out.answer_a = "a"; out.answer_b = "b"; }
    return out;
  }

  // As the reviewer left it, else as drafted.
  function shownDraft(i, p) {
    const x = decisions[i];
    return x && x.draft ? x.draft : drafted(p);
  }

  function draftEdited(i, p) {
    const x = decisions[i];
    if (!x || !x.draft) return false;
    const d = drafted(p);
    return DRAFT_FIELDS.some((f) => x.draft[f] !== d[f]);
  }

  // The head of a card's draft: its status, verification and review, as tags.
  function draftHead(i, p) {
    const g = p.draft;
    const x = decisions[i] || {};
    const head = el("div", { class: "draft-head" });
    head.appendChild(el("b", {}, "Draft"));
    const v = g.verification;
    const tags = [];
    if (g.status === "failed") tags.push(["failed", "failed: " + g.reason]);
    if (g.status === "kept") tags.push(["kept", "question written in the sheet"]);
    if (v) tags.push([v.status, v.status]);
    if (v && v.blind_answerable) tags.push(["blind", "answerable without the image"]);
    if (x.draft) tags.push(["reviewed", draftEdited(i, p) ? "edited" : "approved"]);
    tags.forEach(([cls, text]) => {
      const t = el("span", { class: "tag " + cls });
      t.appendChild(el("bdi", {}, text));
      head.appendChild(t);
    });
    return head;
  }

  // A card's drafted question: what the drafter and verifier said, and fields to review it.
  function draftBlock(i, p) {
    const g = p.draft;
    const x = decisions[i] || {};
    const cur = shownDraft(i, p);
    const v = g.verification;
    const box = el("div", { class: "draft" + (x.draft ? " reviewed" : "") });
    box.appendChild(draftHead(i, p));
    if (g.draft) {
      const d = el("p", { class: "difference" });
      d.appendChild(el("bdi", {}, g.draft.difference));
      d.appendChild(document.createTextNode(" · drafted pattern: "));
      d.appendChild(el("bdi", { class: "drafted-pattern" }, g.draft.pattern));
      box.appendChild(d);
    }
    if (g.status === "kept") return box;
    const text = (name, label) => {
      const l = el("label", { class: "field " + name });
      l.appendChild(el("span", {}, label));
      const input = el("input", { class: "d-" + name, value: cur[name], dir: "auto" });
      input.addEventListener("change", () => setDraft(i, name, input.value, true));
      keepOnEnter(input, i, () => setDraft(i, name, input.value, true));
      l.appendChild(input);
      return l;
    };
    box.appendChild(text("question", "Q"));
    box.appendChild(text("option_a", "(a)"));
    box.appendChild(text("option_b", "(b)"));
    const answers = el("div", { class: "answers" });
    [["answer_a", "left image"], ["answer_b", "right image"]].forEach(([name, label]) => {
      const l = el("label", {});
      l.appendChild(el("span", {}, label + " "));
      const sel = el("select", { class: "d-" + name });
      ["a", "b"].forEach((o) => sel.appendChild(el("option", { value: o }, "(" + o + ")")));
      sel.value = cur[name] || "a";
      sel.addEventListener("change", () => setDraft(i, name, sel.value, true));
      l.appendChild(sel);
      answers.appendChild(l);
    });
    if (v) {
      const said = (c) => (c ? "(" + c + ")" : "no answer");
      answers.appendChild(el("span", { class: "verifier" },
        "verifier: left " + said(v.answer_a) + ", right " + said(v.answer_b) + ", no image " + (v.text_only ? "(" + v.text_only + ")" : "cannot tell")));
    }
    box.appendChild(answers);
    const q2 = g.second;
    if (q2) {
      const line = el("p", { class: "second" });
      line.appendChild(el("span", {}, "2nd question" + (q2.in_benchmark ? "" : " (left out)") + ": "));
      line.appendChild(el("bdi", {}, q2.question + " (a) " + q2.option_a + " (b) " + q2.option_b));
      line.appendChild(document.createTextNode(" · left (" + q2.answer_a + "), right (" + q2.answer_b + ")" + (q2.status ? " · " + q2.status : "")));
      box.appendChild(line);
    }
    return box;
  }

  // A field of the draft changed. From the card's own fields (inPlace) the card is updated
  // where it stands, so that Tab goes on to the next field; from a key it is redrawn.
  function setDraft(i, name, value, inPlace) {
    const x = entry(i);
    const base = x.draft || drafted(row(i));
    if (x.draft && x.draft[name] === value) return;
    const d = Object.assign({}, base);
    d[name] = value;
    const other = (c) => (c === "a" ? "b" : "a");
    if (name === "answer_a") d.answer_b = other(value);
    if (name === "answer_b") d.answer_a = other(value);
    x.draft = d;
    if (!inPlace) return touch(i);
    x.reviewed = new Date().toISOString();
    save();
    const box = document.querySelector('.card[data-i="' + i + '"] .draft');
    if (!box) return;
    box.classList.add("reviewed");
    box.querySelector(".draft-head").replaceWith(draftHead(i, row(i)));
    ["answer_a", "answer_b"].forEach((f) => {
      const sel = box.querySelector(".d-" + f);
      if (sel) sel.value = d[f];
    });
  }

  function approveDraft(i) {
    const x = entry(i);
    if (!x.draft) x.draft = drafted(row(i));
    touch(i);
  }

  function revertDraft(i) {
    if (!decisions[i] || !decisions[i].draft) return;
    delete decisions[i].draft;
    touch(i);
  }

  function swapAnswers(i) {
    const cur = shownDraft(i, row(i));
    setDraft(i, "answer_a", cur.answer_a === "a" ? "b" : "a");
  }

  function entry(i) {
    const p = row(i);
    return decisions[i] || (decisions[i] = { a: p.a, b: p.b, clip_sim: p.clip, dino_sim: p.dino, decision: "", pattern: "", note: "" });
  }

  function touch(i) {
    entry(i).reviewed = new Date().toISOString();
    save();
    redraw(i);
  }

  function decide(i, d) {
    entry(i).decision = d;
    touch(i);
  }

  function setPattern(i, pattern) {
    entry(i).pattern = pattern;
    touch(i);
  }

  function setNote(i, text) {
    if ((decisions[i] ? decisions[i].note : "") === text) return;
    entry(i).note = text;
    touch(i);
  }

  function redraw(i) {
    const old = document.querySelector('.card[data-i="' + i + '"]');
    if (!old || !old.isConnected) return;
    const fresh = card(i);
    if (old.classList.contains("focused")) fresh.classList.add("focused");
    const had = document.activeElement === old;
    old.replaceWith(fresh);
    if (had) fresh.focus({ preventScroll: true });
  }

  let rendering = 0;
  async function render() {
    const token = ++rendering;
    const size = pageSize();
    page = Math.min(page, pages() - 1);
    const shown = view.slice(page * size, (page + 1) * size);
    // Rows are pairs of near-duplicate groups unless the report was built with --every-pair.
    const rows = meta.every_pair || meta.group_pairs === undefined ? meta.pairs : meta.group_pairs;
    const unit = meta.every_pair || meta.group_pairs === undefined ? " pairs" : " pairs of groups";
    $("count").textContent = view.length + " of " + n + unit + (rows > n ? " (" + rows + " in the table)" : "");
    $("count").dataset.count = String(view.length);
    $("page-info").textContent = "page " + (page + 1) + " of " + pages();
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages() - 1;
    const need = Array.from(new Set(shown.map((i) => Math.floor(i / meta.chunk))));
    try {
      await Promise.all(need.map(loadChunk));
    } catch (e) {
      fail(e.message);
      return;
    }
    if (token !== rendering) return;
    const grid = $("grid");
    const frag = document.createDocumentFragment();
    shown.forEach((i) => frag.appendChild(card(i)));
    grid.replaceChildren(frag);
    grid.dataset.page = String(page);
    setFocus(Math.min(focus, shown.length - 1), false);
    document.body.dataset.ready = "1";
  }

  function setFocus(k, scroll) {
    const cards = $("grid").children;
    if (!cards.length) return;
    focus = Math.max(0, Math.min(k, cards.length - 1));
    for (const c of cards) c.classList.remove("focused");
    const c = cards[focus];
    c.classList.add("focused");
    if (scroll !== false) {
      c.focus({ preventScroll: true });
      c.scrollIntoView({ block: "nearest" });
    }
  }

  function go(delta) {
    const p = Math.max(0, Math.min(pages() - 1, page + delta));
    if (p !== page) {
      page = p;
      focus = 0;
      render();
    }
  }

  function focusedIndex() {
    const c = $("grid").children[focus];
    return c ? Number(c.dataset.i) : null;
  }

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const i = focusedIndex();
    const k = e.key;
    if (k === "j" || k === "ArrowRight") setFocus(focus + 1);
    else if (k === "k" || k === "ArrowLeft") setFocus(focus - 1);
    else if (k === "]") go(1);
    else if (k === "[") go(-1);
    else if (k === "?") $("help").hidden = !$("help").hidden;
    else if (i === null) return;
    else if (k === "a") decide(i, "accept");
    else if (k === "r") decide(i, "reject");
    else if (k === "u") decide(i, "");
    else if (k >= "1" && k <= "9" && meta.patterns[Number(k) - 1]) setPattern(i, meta.patterns[Number(k) - 1]);
    else if (k === "0") setPattern(i, "");
    else if (k === "n") {
      const note = document.querySelector('.card[data-i="' + i + '"] .note');
      if (note) note.focus();
    } else if (row(i).draft && k === "e") {
      const q = document.querySelector('.card[data-i="' + i + '"] .d-question');
      if (q) { q.focus(); q.select(); }
    } else if (row(i).draft && k === "s") swapAnswers(i);
    else if (row(i).draft && k === "v") approveDraft(i);
    else if (row(i).draft && k === "z") revertDraft(i);
    else return;
    e.preventDefault();
  });

  function rows() {
    return Object.keys(decisions)
      .map(Number)
      .sort((x, y) => x - y)
      .map((i) => decisions[i])
      .filter((d) => d.decision || d.pattern || d.note || d.draft);
  }

  function download(name, type, text) {
    const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
    document.body.appendChild(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  }

  // OWASP's rule against CSV injection: a text cell that a spreadsheet would run as a formula
  // (it begins with =, +, -, @, a tab or a carriage return) gets a leading apostrophe; so does
  // one that begins with an apostrophe, so that reading strips exactly one (csvText). Numbers
  // stay numbers.
  function csvField(v) {
    let s = v === null || v === undefined ? "" : String(v);
    if (typeof v === "string" && /^[=+\-@\t\r']/.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function csvText(s) {
    return s.startsWith("'") ? s.slice(1) : s;
  }

  $("export-csv").addEventListener("click", () => {
    // The reviewed draft's fields are columns of their own (empty when not reviewed).
    const cols = ["a", "b", "decision", "pattern", "note", "clip_sim", "dino_sim", "reviewed"].concat(meta.drafts ? DRAFT_FIELDS : []);
    const value = (d, c) => (DRAFT_FIELDS.includes(c) ? (d.draft ? d.draft[c] : "") : d[c]);
    const lines = [cols.join(",")].concat(rows().map((d) => cols.map((c) => csvField(value(d, c))).join(",")));
    download("decisions.csv", "text/csv", lines.join("\n") + "\n");
  });

  $("export-json").addEventListener("click", () => {
    const doc = { report_id: meta.report_id, root: meta.root, exported: new Date().toISOString(), decisions: rows() };
    download("decisions.json", "application/json", JSON.stringify(doc, null, 2) + "\n");
  });

  // Reads CSV as the export writes it: a header, commas, fields quoted with "" escapes.
  function parseCsv(text) {
    const rows = [];
    let row = [], field = "", quoted = false;
    for (let k = 0; k < text.length; k++) {
      const ch = text[k];
      if (quoted) {
        if (ch === '"' && text[k + 1] === '"') { field += '"'; k++; }
        else if (ch === '"') quoted = false;
        else field += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") { row.push(field); field = ""; }
      else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && text[k + 1] === "\n") k++;
        row.push(field); field = "";
        if (row.length > 1 || row[0] !== "") rows.push(row);
        row = [];
      } else field += ch;
    }
    if (field !== "" || row.length) { row.push(field); rows.push(row); }
    const head = rows.shift() || [];
    return rows.map((r) => Object.fromEntries(head.map((h, k) => [h.trim(), csvText(r[k] || "")])));
  }

  // Import: decisions matched to this report's pairs by their keys, so a file exported from
  // an earlier build of the report (or another browser) comes back.
  $("import").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const text = await file.text();
      const t = text.trim();
      const list = t.startsWith("{") || t.startsWith("[") ? (JSON.parse(t).decisions || JSON.parse(t)) : parseCsv(text);
      const all = [];
      for (let c = 0; c * meta.chunk < n; c++) all.push(loadChunk(c));
      await Promise.all(all);
      const at = new Map();
      for (let i = 0; i < n; i++) {
        const p = row(i);
        at.set(p.a + "\t" + p.b, i);
      }
      let matched = 0, missing = 0;
      for (const d of list) {
        const i = at.get(d.a + "\t" + d.b);
        if (i === undefined) { missing++; continue; }
        const x = entry(i);
        x.decision = d.decision || "";
        x.pattern = d.pattern || "";
        x.note = d.note || "";
        x.reviewed = d.reviewed || new Date().toISOString();
        // A reviewed draft: JSON's draft object, or the CSV's question..answer_b columns.
        const dr = d.draft || (DRAFT_FIELDS.some((f) => d[f]) ? Object.fromEntries(DRAFT_FIELDS.map((f) => [f, d[f] || ""])) : null);
        if (dr) x.draft = Object.fromEntries(DRAFT_FIELDS.map((f) => [f, String(dr[f] || "")]));
        else delete x.draft;
        matched++;
      }
      save();
      refilter();
      $("decided").textContent = summary() + " (imported " + matched + (missing ? ", " + missing + " not in this report" : "") + ")";
    } catch (err) {
      fail("could not import " + file.name + ": " + err.message);
    }
    e.target.value = "";
  });

  $("help-toggle").addEventListener("click", () => ($("help").hidden = !$("help").hidden));
  $("prev").addEventListener("click", () => go(-1));
  $("next").addEventListener("click", () => go(1));
  $("reset").addEventListener("click", () => {
    ["clip-min", "clip-max", "dino-min", "dino-max", "comp"].forEach((id) => ($(id).value = ""));
    $("pattern").value = "";
    $("decision").value = "";
    if ($("draft-filter")) $("draft-filter").value = "";
    $("sort").value = "dino-asc";
    refilter();
  });
  ["clip-min", "clip-max", "dino-min", "dino-max", "comp"].forEach((id) => $(id).addEventListener("input", refilter));
  ["sort", "pattern", "decision", "draft-filter"].forEach((id) => $(id) && $(id).addEventListener("change", refilter));
  $("page-size").addEventListener("change", () => {
    page = 0;
    render();
  });

  if (!meta || !index) {
    fail("the report's data files (data/meta.js, data/index.js) did not load");
    return;
  }
  const m = /comp=(\d+)/.exec(location.hash);
  if (m) $("comp").value = m[1];
  $("decided").textContent = summary();
  if (n === 0) {
    $("count").textContent = "no pairs in this run root yet";
    $("count").dataset.count = "0";
    document.body.dataset.ready = "1";
    return;
  }
  refilter();
})();
