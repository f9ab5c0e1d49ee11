// crane-server's web UI: no framework, no build step, nothing loaded from elsewhere.
// Every call carries the user's Kubernetes token (kept in sessionStorage, so it goes with the
// tab) as a bearer token; the server acts as that user, so the UI shows what RBAC allows.
// All user data reaches the page through textContent / attributes, never as HTML.
'use strict';

const PHASES = ['Pending', 'Planning', 'AwaitingApproval', 'Running', 'Succeeded', 'Failed', 'Cancelled'];
const TERMINAL = new Set(['Succeeded', 'Failed', 'Cancelled']);
const STEP_TERMINAL = new Set(['Succeeded', 'Failed', 'Skipped']);
const store = window.sessionStorage;
const main = document.getElementById('main');
let pageAbort = null; // aborts the current page's timers and streams on navigation

// ---- helpers ------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const svg = ['svg', 'g', 'rect', 'text', 'path', 'title'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const token = () => store.getItem('crane.token') || '';
const ns = () => store.getItem('crane.ns') || 'default';
const fmtTime = (s) => (s ? new Date(s).toISOString().replace('T', ' ').slice(0, 19) : '');
function fmtDur(a, b) {
  if (!a) return '';
  const ms = (b ? new Date(b) : new Date()) - new Date(a);
  if (ms < 1000) return ms + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
  return Math.floor(ms / 60000) + ' m ' + Math.round((ms % 60000) / 1000) + ' s';
}
const badge = (phase) => h('span', { class: 'badge phase-' + (phase || 'Pending') }, phase || 'Pending');
const json = (v) => (v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v, null, 2));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = { Authorization: 'Bearer ' + token() };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method: opts.method || 'GET', headers, signal: opts.signal,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  let body = null;
  try { body = await resp.json(); } catch (_) { /* empty body */ }
  if (!resp.ok) {
    if (resp.status === 401) { store.removeItem('crane.token'); location.hash = '#/login'; }
    throw new ApiError(resp.status, (body && body.error && body.error.message) || resp.statusText);
  }
  return body;
}

function banner(kind, text) { return h('div', { class: 'banner ' + kind }, text); }
function showError(e) { main.replaceChildren(banner('err', e.message || String(e))); }

// ---- Server-Sent Events over fetch (EventSource cannot send a bearer token) ---------------

async function followEvents(path, onEvent, signal) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: 'Bearer ' + token(), Accept: 'text/event-stream' };
      if (lastId) headers['Last-Event-ID'] = lastId;
      const resp = await fetch(path, { headers, signal });
      if (resp.status === 404 || resp.status === 401 || resp.status === 403) return;
      if (!resp.ok || !resp.body) { await sleep(2000); continue; }
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { event: 'message', data: '' };
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const c = line.indexOf(':');
            const field = c < 0 ? line : line.slice(0, c);
            const val = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
            if (field === 'id') ev.id = val;
            else if (field === 'event') ev.event = val;
            else if (field === 'data') ev.data += (ev.data ? '\n' : '') + val;
          }
          if (ev.id) lastId = ev.id;
          let data = {};
          try { data = ev.data ? JSON.parse(ev.data) : {}; } catch (_) { /* keep {} */ }
          if (onEvent(ev.event, data) === 'stop') return;
          if (ev.event === 'resync') lastId = null;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await sleep(1000);
  }
}

// ---- login --------------------------------------------------------------------------------

function loginPage() {
  const ta = h('textarea', { id: 'token', placeholder: 'eyJhbGciOi…', spellcheck: 'false' });
  const nsIn = h('input', { id: 'login-ns', value: ns(), size: 20 });
  const msg = h('div');
  const go = async () => {
    store.setItem('crane.token', ta.value.trim());
    store.setItem('crane.ns', nsIn.value.trim() || 'default');
    try {
      await whoami();
      location.hash = '#/runs';
    } catch (e) {
      msg.replaceChildren(banner('err', 'Not accepted: ' + e.message));
    }
  };
  main.replaceChildren(h('div', { class: 'login card' },
    h('h1', {}, 'Log in to Crane'),
    h('p', {}, 'Paste a Kubernetes bearer token. Crane acts as you: you see and change what RBAC lets you do with kubectl. ',
      'The token stays in this tab (sessionStorage) and is sent only to this server.'),
    h('p', { class: 'muted' }, 'A token for a ServiceAccount: ', h('code', {}, 'kubectl create token NAME -n NAMESPACE'),
      '. Or open the UI with ', h('code', {}, 'kubectl crane ui'), '.'),
    ta,
    h('p', {}, h('label', {}, 'Namespace ', nsIn)),
    h('div', { class: 'actions' }, h('button', { class: 'primary', id: 'login-btn', onclick: go }, 'Log in')),
    msg));
}

async function whoami() {
  const me = await api('/api/v1/whoami');
  document.getElementById('who').textContent = me.username;
  return me;
}

// ---- runs list ----------------------------------------------------------------------------

function runsPage(signal) {
  const f = JSON.parse(store.getItem('crane.filters') || '{}');
  const phase = h('select', { id: 'f-phase' }, h('option', { value: '' }, 'all phases'),
    PHASES.map((p) => h('option', { value: p, selected: f.phase === p }, p)));
  const text = h('input', { id: 'f-text', placeholder: 'name or prompt', value: f.q || '' });
  const since = h('input', { id: 'f-since', type: 'datetime-local', value: f.since || '' });
  const until = h('input', { id: 'f-until', type: 'datetime-local', value: f.until || '' });
  const source = h('select', { id: 'f-source' }, ['all', 'live', 'archived'].map((s) => h('option', { value: s, selected: f.source === s }, s)));
  const auto = h('input', { type: 'checkbox', id: 'f-auto', checked: true });
  const body = h('tbody', { id: 'runs-body' });
  const more = h('button', { id: 'more', onclick: () => load(true) }, 'Load more');
  const note = h('div');
  let cursor = null;
  let pages = 1;

  const params = () => {
    const p = new URLSearchParams();
    if (phase.value) p.set('phase', phase.value);
    if (text.value.trim()) p.set('q', text.value.trim());
    if (since.value) p.set('since', new Date(since.value).toISOString());
    if (until.value) p.set('until', new Date(until.value).toISOString());
    if (source.value !== 'all') p.set('source', source.value);
    return p;
  };
  async function load(append) {
    const p = params();
    p.set('limit', '50');
    if (append && cursor) p.set('cursor', cursor);
    try {
      const page = await api('/api/v1/namespaces/' + encodeURIComponent(ns()) + '/runs?' + p, { signal });
      if (!append) { body.replaceChildren(); pages = 1; } else pages++;
      for (const r of page.items) body.append(runRow(r));
      if (!page.items.length && !append) body.append(h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No runs.')));
      cursor = page.nextCursor;
      more.disabled = !cursor;
      note.replaceChildren(...(page.archive === 'unavailable' ? [banner('warn', 'The archive is unavailable; showing live runs only. ' + (page.archiveError || ''))] :
        page.archive === 'disabled' ? [banner('info', 'This server has no archive: live runs only.')] : []));
    } catch (e) {
      if (!signal.aborted) note.replaceChildren(banner('err', e.message));
    }
  }
  const apply = () => {
    store.setItem('crane.filters', JSON.stringify({ phase: phase.value, q: text.value, since: since.value, until: until.value, source: source.value }));
    load(false);
  };
  main.replaceChildren(
    h('h1', {}, 'Runs in ', ns()),
    h('div', { class: 'card filters' },
      h('label', {}, 'phase', phase), h('label', {}, 'text', text), h('label', {}, 'created since', since),
      h('label', {}, 'created before', until), h('label', {}, 'source', source),
      h('button', { class: 'primary', id: 'apply', onclick: apply }, 'Apply'),
      h('label', {}, 'auto-refresh', auto)),
    note,
    h('table', { id: 'runs' }, h('thead', {}, h('tr', {}, ['Name', 'Phase', 'Steps', 'Tokens', 'LLM / tool calls', 'Source', 'Created', 'Duration', 'Prompt / error'].map((c) => h('th', {}, c)))), body),
    h('div', { class: 'actions' }, more));
  text.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
  load(false);
  const timer = setInterval(() => { if (auto.checked && pages === 1) load(false); }, 5000);
  signal.addEventListener('abort', () => clearInterval(timer));
}

function runRow(r) {
  const href = '#/run/' + encodeURIComponent(r.namespace) + '/' + encodeURIComponent(r.name) + (r.source === 'archived' ? '?uid=' + encodeURIComponent(r.uid) : '');
  return h('tr', { class: 'clickable', 'data-name': r.name, onclick: () => { location.hash = href; } },
    h('td', {}, h('a', { href }, r.name)),
    h('td', {}, badge(r.phase)),
    h('td', { class: 'num' }, r.stepsSucceeded + '/' + r.stepsTotal),
    h('td', { class: 'num' }, r.usage.totalTokens || ''),
    h('td', { class: 'num' }, (r.usage.llmCalls || r.usage.toolCalls) ? r.usage.llmCalls + ' / ' + r.usage.toolCalls : ''),
    h('td', {}, h('span', { class: 'badge src' }, r.source)),
    h('td', {}, fmtTime(r.createdAt)),
    h('td', {}, fmtDur(r.startedAt, r.finishedAt)),
    h('td', {}, r.error ? h('span', { class: 'error-text' }, r.error) : (r.prompt || '')));
}

// ---- one run ------------------------------------------------------------------------------

// Layered layout, computed here (no per-node calls): a step's layer is its longest path from
// a source; within a layer steps are ordered by their parents' positions; a layer taller
// than MAX_ROWS wraps into several columns, so 500 independent steps stay on screen.
const NODE_W = 150, NODE_H = 30, GAP_X = 50, GAP_Y = 10, MAX_ROWS = 40;
function layout(steps) {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const layer = new Map();
  const indeg = new Map(steps.map((s) => [s.id, (s.dependsOn || []).filter((d) => byId.has(d)).length]));
  const children = new Map(steps.map((s) => [s.id, []]));
  for (const s of steps) for (const d of s.dependsOn || []) if (children.has(d)) children.get(d).push(s.id);
  const queue = steps.filter((s) => indeg.get(s.id) === 0).map((s) => s.id);
  for (const id of queue) layer.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const c of children.get(id)) {
      layer.set(c, Math.max(layer.get(c) || 0, layer.get(id) + 1));
      indeg.set(c, indeg.get(c) - 1);
      if (indeg.get(c) === 0) queue.push(c);
    }
  }
  for (const s of steps) if (!layer.has(s.id)) layer.set(s.id, 0); // a cycle cannot be admitted; be safe
  const layers = [];
  for (const s of steps) (layers[layer.get(s.id)] ||= []).push(s.id);
  const pos = new Map();
  let col = 0;
  for (const ids of layers) {
    if (!ids) continue;
    const bary = (id) => {
      const ps = (byId.get(id).dependsOn || []).filter((d) => pos.has(d));
      return ps.length ? ps.reduce((a, d) => a + pos.get(d).y, 0) / ps.length : id;
    };
    ids.sort((a, b) => bary(a) - bary(b) || a - b);
    ids.forEach((id, i) => {
      pos.set(id, { x: (col + Math.floor(i / MAX_ROWS)) * (NODE_W + GAP_X) + 10, y: (i % MAX_ROWS) * (NODE_H + GAP_Y) + 10 });
    });
    col += Math.ceil(ids.length / MAX_ROWS);
  }
  const rows = Math.min(MAX_ROWS, Math.max(1, ...layers.filter(Boolean).map((l) => l.length)));
  return { pos, width: col * (NODE_W + GAP_X) + 20, height: rows * (NODE_H + GAP_Y) + 20 };
}

function drawDag(steps, onSelect) {
  const { pos, width, height } = layout(steps);
  const svg = h('svg', { class: 'dag', id: 'dag', width, height, viewBox: `0 0 ${width} ${height}` });
  const edges = h('g', {});
  const nodes = h('g', {});
  const els = new Map();
  for (const s of steps) {
    const p = pos.get(s.id);
    for (const d of s.dependsOn || []) {
      const q = pos.get(d);
      if (!q) continue;
      const x1 = q.x + NODE_W, y1 = q.y + NODE_H / 2, x2 = p.x, y2 = p.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      edges.append(h('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
    const label = ('#' + s.id + ' ' + s.tool).slice(0, 22);
    const g = h('g', { class: 'node phase-' + (s.phase || 'Pending'), 'data-step': s.id, transform: `translate(${p.x},${p.y})`, onclick: () => onSelect(s.id) },
      h('title', {}, '#' + s.id + ' ' + s.tool + ' — ' + (s.phase || 'Pending')),
      h('rect', { width: NODE_W, height: NODE_H, rx: 5 }),
      h('text', { x: 8, y: 19 }, label));
    els.set(s.id, g);
    nodes.append(g);
  }
  svg.append(edges, nodes);
  return { svg, els };
}

async function runPage(nsName, name, uid, signal) {
  const base = '/api/v1/namespaces/' + encodeURIComponent(nsName) + '/runs/' + encodeURIComponent(name);
  const q = uid ? '?uid=' + encodeURIComponent(uid) : '';
  let run, outputs;
  try {
    [run, outputs] = await Promise.all([api(base + q, { signal }), api(base + '/outputs' + q, { signal })]);
  } catch (e) { return showError(e); }
  const spec = run.spec || {};
  const status = run.status || {};
  const plan = spec.plan || status.plan || { steps: [] };
  const live = run.source === 'live';
  // One record per step: the plan's input and dependencies, the latest phase and output.
  const steps = plan.steps.map((p) => ({ id: p.id, tool: p.tool, input: p.input, dependsOn: p.dependsOn || [], reasoning: p.reasoning, phase: 'Pending' }));
  const byId = new Map(steps.map((s) => [s.id, s]));
  const merge = (outs) => {
    for (const o of (outs && outs.steps) || []) {
      const s = byId.get(o.id);
      if (s) Object.assign(s, { phase: o.phase, attempts: o.attempts, output: o.output, error: o.error, startedAt: o.startedAt, finishedAt: o.finishedAt, message: o.message, usage: o.usage });
    }
  };
  merge(outputs);
  let selected = null;
  const detail = h('div', { class: 'card step-detail', id: 'step-detail' }, h('p', { class: 'muted' }, 'Click a step to see its input, output, error, attempts and timings.'));
  const counts = h('span', { id: 'counts' });
  const phaseEl = h('span', { id: 'run-phase' }, badge(run.summary.phase));
  const dag = drawDag(steps, (id) => select(id));
  const table = h('tbody', { id: 'steps-body' });
  const rows = new Map();
  for (const s of steps) {
    const tr = h('tr', { class: 'clickable', 'data-step': s.id, onclick: () => select(s.id) });
    rows.set(s.id, tr);
    table.append(tr);
  }
  function renderRow(s) {
    rows.get(s.id).replaceChildren(h('td', { class: 'num' }, s.id), h('td', {}, s.tool), h('td', {}, badge(s.phase)),
      h('td', { class: 'num' }, s.attempts || ''), h('td', {}, fmtDur(s.startedAt, s.finishedAt)),
      h('td', {}, s.error ? h('span', { class: 'error-text' }, s.error.slice(0, 160)) : ''));
  }
  function setPhase(s, phase) {
    s.phase = phase;
    const g = dag.els.get(s.id);
    if (g) g.setAttribute('class', 'node phase-' + phase + (selected === s.id ? ' selected' : ''));
    renderRow(s);
    if (selected === s.id) select(s.id);
  }
  function renderCounts() {
    const c = {};
    for (const s of steps) c[s.phase] = (c[s.phase] || 0) + 1;
    counts.textContent = Object.entries(c).map(([k, v]) => v + ' ' + k).join(' · ');
  }
  function select(id) {
    if (selected !== null && dag.els.get(selected)) dag.els.get(selected).classList.remove('selected');
    selected = id;
    const s = byId.get(id);
    dag.els.get(id).classList.add('selected');
    detail.replaceChildren(h('div', {}, h('h3', {}, 'Step ' + s.id + ' · ' + s.tool + ' ', badge(s.phase)),
      h('dl', { class: 'kv' },
        h('dt', {}, 'attempts'), h('dd', {}, s.attempts || 0),
        h('dt', {}, 'started'), h('dd', {}, fmtTime(s.startedAt)),
        h('dt', {}, 'finished'), h('dd', {}, fmtTime(s.finishedAt)),
        h('dt', {}, 'duration'), h('dd', {}, fmtDur(s.startedAt, s.finishedAt)),
        h('dt', {}, 'depends on'), h('dd', {}, s.dependsOn.join(', ') || '—'),
        s.message ? [h('dt', {}, 'waiting'), h('dd', {}, s.message)] : null,
        s.reasoning ? [h('dt', {}, 'reasoning'), h('dd', {}, s.reasoning)] : null),
      h('h2', {}, 'Input'), h('pre', { id: 'step-input' }, json(s.input)),
      h('h2', {}, 'Output'), h('pre', { id: 'step-output' }, s.output === undefined || s.output === null ? '—' : json(s.output)),
      s.error ? [h('h2', {}, 'Error'), h('pre', { class: 'error-text', id: 'step-error' }, s.error)] : null));
  }
  for (const s of steps) renderRow(s);
  renderCounts();

  const actions = h('div', { class: 'actions' });
  const msg = h('div');
  const act = (label, cls, fn) => h('button', { class: cls, id: 'btn-' + label.toLowerCase(), onclick: async () => {
    try { await fn(); msg.replaceChildren(banner('info', label + ': done')); setTimeout(() => route(), 400); } catch (e) { msg.replaceChildren(banner('err', e.message)); }
  } }, label);
  const phase = run.summary.phase;
  if (live && !TERMINAL.has(phase)) actions.append(act('Cancel', 'danger', () => api(base + '/cancel', { method: 'POST' })));
  if (live && (phase === 'Failed' || phase === 'Cancelled')) actions.append(act('Retry', '', () => api(base + '/retry', { method: 'POST' })));
  actions.append(act('Delete', 'danger', () => {
    if (!confirm('Delete ' + name + (live ? ' (it is archived on its way out)?' : ' from the archive?'))) throw new Error('not deleted');
    return api(base + q, { method: 'DELETE' });
  }));

  const approvals = h('div', { id: 'approvals' });
  async function loadApprovals() {
    if (!live) return;
    try {
      const list = await api('/api/v1/namespaces/' + encodeURIComponent(nsName) + '/approvals?run=' + encodeURIComponent(name), { signal });
      approvals.replaceChildren(...list.items.map((a) => approvalBox(nsName, a, loadApprovals)));
    } catch (e) { if (!signal.aborted) approvals.replaceChildren(banner('warn', 'Approvals: ' + e.message)); }
  }

  const s = run.summary;
  main.replaceChildren(
    h('h1', {}, name, ' ', phaseEl, ' ', h('span', { class: 'badge src' }, run.source)),
    h('div', { class: 'card' },
      h('dl', { class: 'kv' },
        h('dt', {}, 'namespace'), h('dd', {}, nsName),
        h('dt', {}, 'uid'), h('dd', { class: 'muted' }, s.uid),
        h('dt', {}, 'created'), h('dd', {}, fmtTime(s.createdAt)),
        h('dt', {}, 'started / finished'), h('dd', {}, fmtTime(s.startedAt) + ' → ' + (fmtTime(s.finishedAt) || '…') + '  (' + fmtDur(s.startedAt, s.finishedAt) + ')'),
        h('dt', {}, 'plan'), h('dd', {}, (status.planSource || '') + ' · ' + steps.length + ' steps · pool ' + (spec.workerPool || '')),
        h('dt', {}, 'usage'), h('dd', {}, s.usage.totalTokens + ' tokens · ' + s.usage.llmCalls + ' llm calls · ' + s.usage.toolCalls + ' tool calls'),
        spec.prompt ? [h('dt', {}, 'prompt'), h('dd', {}, spec.prompt)] : null,
        h('dt', {}, 'steps'), h('dd', {}, counts),
        (outputs.result !== undefined && outputs.result !== null) || run.result ? [h('dt', {}, 'result'), h('dd', {}, h('pre', { id: 'run-result' }, json(run.result !== undefined && run.result !== null ? run.result : outputs.result)))] : null,
        status.error ? [h('dt', {}, 'error'), h('dd', { class: 'error-text', id: 'run-error' }, status.error)] : null),
      actions, msg, approvals),
    h('div', { class: 'legend' }, ['Pending', 'Ready', 'Running', 'WaitingForApproval', 'Succeeded', 'Failed', 'Skipped'].map((p) => badge(p))),
    h('div', { class: 'run-layout' },
      h('div', {}, h('div', { class: 'dag-wrap' }, dag.svg),
        h('h2', {}, 'Steps'),
        h('table', {}, h('thead', {}, h('tr', {}, ['#', 'Tool', 'Phase', 'Attempts', 'Duration', 'Error'].map((c) => h('th', {}, c)))), table)),
      detail));
  loadApprovals();

  if (!live || TERMINAL.has(phase)) return;
  // Live: colour steps as their events arrive; fetch outputs (one call for all steps) at
  // most every 2 s while steps finish, and the run once more at the end.
  let refreshing = null;
  const refreshOutputs = () => {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      try {
        const o = await api(base + '/outputs', { signal });
        merge(o);
        for (const st of steps) setPhase(st, st.phase);
        renderCounts();
      } catch (_) { /* next event retries */ }
    }, 2000);
  };
  const approvalTimer = setInterval(loadApprovals, 5000);
  signal.addEventListener('abort', () => { clearInterval(approvalTimer); clearTimeout(refreshing); });
  followEvents(base + '/events', (event, d) => {
    if (event === 'step' && d.step != null && byId.has(d.step)) {
      setPhase(byId.get(d.step), d.phase);
      renderCounts();
      if (STEP_TERMINAL.has(d.phase)) refreshOutputs();
    } else if (event === 'run') {
      phaseEl.replaceChildren(badge(d.phase));
    } else if (event === 'resync') {
      refreshOutputs();
    } else if (event === 'end') {
      setTimeout(() => { if (!signal.aborted) route(); }, 300);
      return 'stop';
    }
    return undefined;
  }, signal);
}

function approvalBox(nsName, a, reload) {
  const spec = a.spec || {};
  const comment = h('input', { placeholder: 'comment (optional)', class: 'comment' });
  const path = '/api/v1/namespaces/' + encodeURIComponent(nsName) + '/approvals/' + encodeURIComponent(a.metadata.name);
  const msg = h('span');
  const decide = (verb) => async () => {
    try {
      await api(path + '/' + verb, { method: 'POST', body: comment.value ? { comment: comment.value } : {} });
      reload();
    } catch (e) { msg.replaceChildren(banner('err', e.message)); }
  };
  return h('div', { class: 'approval', 'data-approval': a.metadata.name },
    h('strong', {}, spec.stepId ? 'Step ' + spec.stepId + ' needs approval' : 'The plan needs approval'), ': ', spec.message || '',
    spec.details ? h('pre', {}, json(spec.details)) : null,
    spec.decision
      ? h('div', {}, badge(spec.decision === 'Approved' ? 'Succeeded' : 'Failed'), ' ', spec.decision + ' by ' + (spec.decidedBy || '?') + (spec.comment ? ': ' + spec.comment : ''))
      : h('div', { class: 'actions' }, comment,
        h('button', { class: 'ok', 'data-decide': 'approve', onclick: decide('approve') }, 'Approve'),
        h('button', { class: 'danger', 'data-decide': 'reject', onclick: decide('reject') }, 'Reject'), msg));
}

// ---- WorkerPools, Tools, MCPServers, Models -----------------------------------------------

const cond = (o, type) => ((o.status && o.status.conditions) || []).find((c) => c.type === type);
const readyCell = (o) => {
  const c = cond(o, 'Ready');
  if (!c) return h('span', { class: 'muted' }, '—');
  return h('span', {}, badge(c.status === 'True' ? 'Succeeded' : 'Failed'), ' ', c.reason || '', c.message ? h('div', { class: 'muted' }, c.message) : null);
};
const KINDS = {
  workerpools: { title: 'WorkerPools', cols: [
    ['Workers', (o) => (o.status || {}).activeWorkers ?? ''], ['Desired', (o) => (o.status || {}).desiredWorkers ?? ''],
    ['Queue', (o) => (o.status || {}).queueDepth ?? ''], ['Running', (o) => (o.status || {}).running ?? ''],
    ['Min / max', (o) => (o.spec.minWorkers ?? 0) + ' / ' + (o.spec.maxWorkers ?? '')],
    ['Breakers', (o) => ((o.status || {}).breakers || []).map((b) => b.tool + ': ' + b.state).join(', ')], ['Ready', readyCell]] },
  tools: { title: 'Tools', cols: [
    ['Endpoint', (o) => ((o.spec.http || {}).method || 'POST') + ' ' + ((o.spec.http || {}).url || '')],
    ['Description', (o) => o.spec.description || ''], ['Approval', (o) => (o.spec.requiresApproval ? 'required' : '')], ['Ready', readyCell]] },
  mcpservers: { title: 'MCPServers', cols: [
    ['URL', (o) => o.spec.url || ''], ['Tools', (o) => ((o.status || {}).tools || []).map((t) => t.name).join(', ')], ['Ready', readyCell]] },
  models: { title: 'Models', cols: [
    ['Model', (o) => o.spec.model || ''], ['Base URL', (o) => o.spec.baseUrl || ''],
    ['Limits', (o) => json(o.spec.limits || '')], ['Ready', readyCell]] },
};

async function resourcePage(kind, signal) {
  const k = KINDS[kind];
  if (!k) return showError(new Error('unknown page ' + kind));
  let list;
  try { list = await api('/api/v1/namespaces/' + encodeURIComponent(ns()) + '/' + kind, { signal }); } catch (e) { return showError(e); }
  main.replaceChildren(h('h1', {}, k.title + ' in ' + ns()),
    h('table', { id: 'res' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), k.cols.map(([c]) => h('th', {}, c)), h('th', {}, 'Age'))),
      h('tbody', {}, list.items.length ? list.items.map((o) => h('tr', {}, h('td', {}, o.metadata.name),
        k.cols.map(([, f]) => h('td', {}, f(o))), h('td', {}, fmtDur(o.metadata.creationTimestamp))))
        : h('tr', {}, h('td', { colspan: k.cols.length + 2, class: 'muted' }, 'None.')))));
}

// ---- routing ------------------------------------------------------------------------------

async function route() {
  if (pageAbort) pageAbort.abort();
  pageAbort = new AbortController();
  const signal = pageAbort.signal;
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  document.getElementById('ns').value = ns();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === (parts[0] === 'res' ? parts[1] : parts[0]));
  const loggedIn = !!token();
  document.getElementById('top').classList.toggle('anon', !loggedIn);
  if (!loggedIn || parts[0] === 'login') return loginPage();
  if (parts[0] === 'run' && parts.length === 3) return runPage(parts[1], parts[2], params.get('uid'), signal);
  if (parts[0] === 'res' && parts[1]) return resourcePage(parts[1], signal);
  return runsPage(signal);
}

document.getElementById('ns').addEventListener('change', (e) => {
  store.setItem('crane.ns', e.target.value.trim() || 'default');
  location.hash = '#/runs';
  route();
});
document.getElementById('logout').addEventListener('click', () => {
  store.removeItem('crane.token');
  document.getElementById('who').textContent = '';
  location.hash = '#/login';
});
window.addEventListener('hashchange', route);
if (token()) {
  whoami().catch(() => {});
  api('/api/v1/namespaces').then((l) => {
    document.getElementById('ns-list').replaceChildren(...l.items.map((n) => h('option', { value: n })));
  }).catch(() => { /* may not list namespaces: type one */ });
}
route();
