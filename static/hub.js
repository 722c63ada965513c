/* MLX Hub status page: polls GET /hub/status and drives the control API.
 *
 * - One delegated click listener per container (the controls block and the
 *   models table), attached once: every click sends exactly one request.
 * - Rows are built with DOM calls and textContent only (no HTML strings), and
 *   a row is rebuilt only when its data changed.
 * - While a model action is in flight the row stays busy across polls; its
 *   labels come back from the next snapshot once the action has answered.
 * - Requests carry the HttpOnly session cookie (same origin); no token here.
 */
'use strict';

(() => {
  const REFRESH_INTERVAL_MS = 5000;
  const TOAST_DURATION_MS = 4000;
  const ERROR_TOAST_DURATION_MS = 8000; // errors are longer and matter more
  const STATUS_URL = '/hub/status';
  const CONTROLLER_WARNING_MESSAGE =
    'Hub controller is not running on this server. Memory buttons stay disabled until the hub server is up.';
  const SERVICE_ENDPOINTS = {
    start: '/hub/service/start',
    stop: '/hub/service/stop',
    reload: '/hub/service/reload',
  };
  const SERVICE_LABELS = { start: 'Start', stop: 'Stop', reload: 'Reload' };
  const MODEL_ACTIONS = {
    'start-model': { endpoint: 'start', scope: 'process', label: 'Start', busy: 'Starting…' },
    'stop-model': { endpoint: 'stop', scope: 'process', label: 'Stop', busy: 'Stopping…' },
    load: { endpoint: 'load', scope: 'memory', label: 'Load', busy: 'Loading…' },
    unload: { endpoint: 'unload', scope: 'memory', label: 'Unload', busy: 'Unloading…' },
  };
  // Process states that own a live worker (pid and port are worth showing).
  const LIVE_PROCESS = new Set(['starting', 'running', 'stopping']);
  // Process states for which the Memory column and button group apply.
  const MEMORY_PROCESS = new Set(['starting', 'running']);
  const BUSY_PROCESS = new Set(['starting', 'stopping']);
  const BUSY_MEMORY = new Set(['loading', 'unloading']);
  const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);
  // Download states that are still going (the memory cell shows their progress).
  const DOWNLOAD_ACTIVE = new Set(['queued', 'downloading']);
  // Binary units, as the hub's sizes.format_size: GB = 2^30 bytes.
  const SIZE_UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

  const byId = (id) => document.getElementById(id);
  const els = {
    pill: byId('status-pill'),
    started: byId('started-counts'),
    loaded: byId('counts'),
    memory: byId('memory-summary'),
    memoryBar: byId('memory-bar'),
    memoryText: byId('memory-text'),
    updated: byId('updated-at'),
    url: byId('openai-url'),
    controls: byId('controls'),
    warnings: byId('warnings'),
    warningList: byId('warning-list'),
    body: byId('models-body'),
    error: byId('error-banner'),
    flash: byId('flash-banner'),
    toast: byId('toast'),
  };

  const state = {
    data: null, // last /hub/status payload
    controllerAvailable: true,
    pending: new Map(), // model id → action in flight
    rows: new Map(), // model id → { key, tr }
    requested: 0, // sequence number of the last snapshot request
    applied: 0, // sequence number of the last snapshot shown
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  let timeFormat = null;
  try {
    timeFormat = new Intl.DateTimeFormat(undefined, {
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
  } catch (_err) {
    timeFormat = null;
  }

  function formatTime(epochSeconds) {
    if (!epochSeconds) return '—';
    const date = new Date(Number(epochSeconds) * 1000);
    if (Number.isNaN(date.getTime())) return '—';
    return timeFormat ? timeFormat.format(date) : date.toLocaleTimeString();
  }

  function isCount(value) {
    return value !== null && value !== undefined && value !== '' && Number.isFinite(Number(value));
  }

  // The unit a byte count is shown in: "B" and "KB" whole, the others with one decimal.
  function sizeUnit(count) {
    let index = 0;
    while (index < SIZE_UNITS.length - 1 && Math.abs(count) >= 1024 ** (index + 1)) index += 1;
    return index;
  }

  function sizeIn(count, index) {
    return (count / 1024 ** index).toFixed(index < 2 ? 0 : 1);
  }

  /** "4.2 GB", "800.0 MB", "512 B"; null for a missing count. */
  function formatSize(count) {
    if (!isCount(count)) return null;
    const index = sizeUnit(Number(count));
    return `${sizeIn(Number(count), index)} ${SIZE_UNITS[index]}`;
  }

  /** "6.1/14.2 GB": the done part in the unit of the total. */
  function formatSizePair(done, total) {
    const index = sizeUnit(Number(total));
    return `${sizeIn(Number(done), index)}/${sizeIn(Number(total), index)} ${SIZE_UNITS[index]}`;
  }

  /** A share 0–1 as a whole percent, held in 0–100; null when unknown. */
  function percentOf(share) {
    if (!isCount(share)) return null;
    // The epsilon keeps 0.29 at 29 % (0.29 * 100 is 28.999… in binary).
    return Math.max(0, Math.min(100, Math.floor(Number(share) * 100 + 1e-9)));
  }

  function isLoopbackName(name) {
    return name === 'localhost' || name === '[::1]' || name === '::1' || /^127\./.test(name);
  }

  function openaiUrl(host, port) {
    let name = host === null || host === undefined ? '' : String(host).trim();
    if (!name) return '—';
    if (WILDCARD_HOSTS.has(name)) {
      // Bound to every interface: name the host this page was reached by.
      const here = window.location.hostname;
      name = !here || isLoopbackName(here) ? 'localhost' : here;
    }
    if (name.includes(':') && !name.startsWith('[')) name = `[${name}]`;
    const number = Number(port);
    const portPart = Number.isFinite(number) && number > 0 ? number : 8000;
    return `http://${name}:${portPart}/v1`;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (_err) {
      return null;
    }
  }

  function errorMessage(payload) {
    if (!payload || typeof payload !== 'object') return null;
    if (payload.error && payload.error.message) return String(payload.error.message);
    if (payload.message) return String(payload.message);
    if (typeof payload.detail === 'string') return payload.detail;
    return null;
  }

  // --------------------------------------------------------------- overlays

  let toastTimer = 0;

  function showToast(message, tone) {
    els.toast.replaceChildren(el('span', 'toast__text', message));
    els.toast.title = message;
    els.toast.className = `toast toast--${tone || 'info'}`;
    els.toast.hidden = false;
    window.clearTimeout(toastTimer);
    toastTimer = window.setTimeout(
      () => {
        els.toast.hidden = true;
      },
      tone === 'error' ? ERROR_TOAST_DURATION_MS : TOAST_DURATION_MS,
    );
  }

  function showFlash(message, tone) {
    els.flash.textContent = message;
    els.flash.className = `flash flash--${tone || 'info'}`;
    els.flash.hidden = false;
  }

  function clearFlash() {
    els.flash.hidden = true;
    els.flash.textContent = '';
    els.flash.className = 'flash flash--info';
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = '';
  }

  // ----------------------------------------------------------------- stats

  function setPill(status) {
    const text = status ? String(status) : 'error';
    const tone = { ok: 'ok', degraded: 'warn', error: 'error' }[text] || 'warn';
    els.pill.textContent = text;
    els.pill.className = `pill pill--${tone}`;
  }

  function renderStats(data) {
    const counts = data.counts || {};
    const models = Array.isArray(data.models) ? data.models : [];
    const registered = counts.registered ?? models.length;
    setPill(data.status);
    els.started.textContent = `${counts.started ?? 0} / ${registered} started`;
    els.loaded.textContent = `${counts.loaded ?? 0} / ${registered} loaded`;
    els.updated.textContent = formatTime(data.timestamp);
    els.url.textContent = openaiUrl(data.host, data.port);
    renderMemorySummary(data.memory);
  }

  // "used / budget" (or used / the machine's total without a budget) as a bar.
  function renderMemorySummary(memory) {
    const { used_bytes: used, budget_bytes: budget, system_total_bytes: total } = memory || {};
    const limit = isCount(budget) ? Number(budget) : Number(total);
    if (!isCount(used) || !(limit > 0)) {
      els.memory.hidden = true;
      return;
    }
    const percent = percentOf(Number(used) / limit);
    const text = `${formatSize(used)} / ${formatSize(limit)} ${isCount(budget) ? 'budget' : 'system'}`;
    setProgress(els.memoryBar, percent, `Memory used: ${text}`);
    els.memoryBar.classList.toggle('progress--full', Number(used) >= limit);
    els.memoryText.textContent = text;
    els.memory.hidden = false;
  }

  function renderWarnings(data) {
    const items = Array.isArray(data.warnings) ? data.warnings.map(String) : [];
    if (!state.controllerAvailable && !items.includes(CONTROLLER_WARNING_MESSAGE)) {
      items.push(CONTROLLER_WARNING_MESSAGE);
    }
    els.warningList.replaceChildren(...items.map((text) => el('li', '', text)));
    els.warnings.hidden = items.length === 0;
  }

  // ------------------------------------------------------------ model rows

  function processStateOf(meta) {
    return String(meta.process_state || meta.status || 'inactive').toLowerCase();
  }

  function memoryStateOf(meta) {
    return String(meta.memory_state || 'unloaded').toLowerCase();
  }

  function describeProcess(meta, pstate) {
    const parts = [pstate.toUpperCase()];
    if (LIVE_PROCESS.has(pstate)) {
      if (meta.pid) parts.push(`PID ${meta.pid}`);
      if (meta.port) parts.push(`PORT ${meta.port}`);
    } else if (pstate === 'failed' && meta.exit_code !== null && meta.exit_code !== undefined) {
      parts.push(`exit ${meta.exit_code}`);
    }
    return parts.join(' • ');
  }

  function describeAutoUnload(meta) {
    if (!meta.auto_unload_minutes) return '—';
    let text = `${meta.auto_unload_minutes} min`;
    if (meta.unload_at) text += ` · unloads ${formatTime(meta.unload_at)}`;
    return text;
  }

  // A bar's fill and its ARIA value; `percent` null: an indeterminate bar.
  function setProgress(bar, percent, label) {
    bar.classList.toggle('progress--indeterminate', percent === null);
    if (percent === null) bar.removeAttribute('aria-valuenow');
    else bar.setAttribute('aria-valuenow', String(percent));
    bar.setAttribute('aria-label', label);
    bar.firstElementChild.style.width = percent === null ? '' : `${percent}%`;
  }

  function progressBar(percent, label) {
    const bar = el('div', 'progress');
    bar.setAttribute('role', 'progressbar');
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', '100');
    bar.append(el('div', 'progress__fill'));
    setProgress(bar, percent, label);
    return bar;
  }

  // "DOWNLOADING 43 % • 6.1/14.2 GB" while the model's snapshot is fetched, else null.
  function downloadProgress(download) {
    if (!download || !DOWNLOAD_ACTIVE.has(String(download.state))) return null;
    if (download.state === 'queued') return { text: 'DOWNLOAD QUEUED', percent: null };
    const total = isCount(download.bytes_total) ? Number(download.bytes_total) : 0;
    const done = isCount(download.bytes_done) ? Number(download.bytes_done) : 0;
    if (!total) return { text: `DOWNLOADING • ${formatSize(done)}`, percent: null };
    const percent = percentOf(done / total);
    return { text: `DOWNLOADING ${percent} % • ${formatSizePair(done, total)}`, percent };
  }

  // "LOADING 70 %", or "LOADING 12 s" while the model's size is not known.
  function loadProgress(meta) {
    const percent = percentOf(meta.load_progress);
    if (percent !== null) return { text: `LOADING ${percent} %`, percent };
    if (isCount(meta.load_elapsed_s)) {
      return { text: `LOADING ${Math.floor(Number(meta.load_elapsed_s))} s`, percent: null };
    }
    return null;
  }

  function memoryCell(meta, pstate, mstate) {
    const td = el('td', 'cell-memory');
    const queued = Number(meta.queued_requests) > 0 ? [`${meta.queued_requests} queued`] : [];
    const progress =
      downloadProgress(meta.download) ||
      (MEMORY_PROCESS.has(pstate) && mstate === 'loading' ? loadProgress(meta) : null);
    if (progress) {
      td.append(
        el('div', 'memory-state', [progress.text, ...queued].join(' • ')),
        progressBar(progress.percent, progress.text),
      );
    } else if (MEMORY_PROCESS.has(pstate)) {
      const parts = [mstate.toUpperCase()];
      // A warm standby: a worker with its imports done, ready to load in a second.
      if (mstate === 'unloaded' && meta.standby) parts.push('standby');
      const size = mstate === 'loaded' ? formatSize(meta.memory_bytes) : null;
      if (size) parts.push(size);
      if (meta.memory_last_transition_at) parts.push(formatTime(meta.memory_last_transition_at));
      td.append(el('div', 'memory-state', [...parts, ...queued].join(' • ')));
    } else {
      td.append(el('div', '', '—'));
    }
    const download = meta.download || {};
    const failure =
      meta.memory_last_error ||
      (download.state === 'failed' && download.error ? `download failed: ${download.error}` : null);
    if (failure && pstate !== 'stopped') {
      const error = el('div', 'cell-error', `Error: ${failure}`);
      error.title = error.textContent;
      td.append(error);
    }
    return td;
  }

  function actionButton(modelId, action, options) {
    const spec = MODEL_ACTIONS[action];
    const button = el(
      'button',
      options.secondary ? 'action-btn action-btn--secondary' : 'action-btn',
      options.busy ? spec.busy : spec.label,
    );
    button.type = 'button';
    button.dataset.scope = spec.scope;
    button.dataset.action = action;
    button.dataset.model = modelId;
    button.disabled = Boolean(options.disabled || options.busy);
    if (options.busy) button.setAttribute('aria-busy', 'true');
    return button;
  }

  function actionGroup(label, button) {
    const group = el('div', 'action-group');
    group.append(el('span', 'action-group__label', label), button);
    return group;
  }

  function actionsCell(model, pstate, mstate) {
    const td = el('td', 'cell-actions');
    const pending = state.pending.get(model.id) || null;
    const memoryShown = state.controllerAvailable && MEMORY_PROCESS.has(pstate);
    const busy = Boolean(
      pending || BUSY_PROCESS.has(pstate) || (memoryShown && BUSY_MEMORY.has(mstate)),
    );

    const processAction = pstate === 'running' || pstate === 'stopping' ? 'stop-model' : 'start-model';
    td.append(
      actionGroup(
        'Process',
        actionButton(model.id, processAction, {
          secondary: processAction === 'stop-model',
          busy: pending === processAction || BUSY_PROCESS.has(pstate),
          disabled: busy,
        }),
      ),
    );

    if (memoryShown) {
      const memoryAction = mstate === 'loaded' || mstate === 'unloading' ? 'unload' : 'load';
      td.append(
        actionGroup(
          'Memory',
          actionButton(model.id, memoryAction, {
            secondary: memoryAction === 'unload',
            busy: pending === memoryAction || BUSY_MEMORY.has(mstate),
            disabled: busy || pstate !== 'running',
          }),
        ),
      );
    }
    return td;
  }

  function buildRow(model) {
    const meta = model.metadata || {};
    const pstate = processStateOf(meta);
    const mstate = memoryStateOf(meta);
    const tr = el('tr');
    tr.dataset.model = model.id;
    tr.dataset.processState = pstate;
    tr.dataset.memoryState = mstate;

    const name = el('td', 'cell-name', model.id);
    if (meta.log_path) {
      name.title = `Log: ${meta.log_path}`;
      const logs = el('a', 'log-link', 'Logs');
      logs.href = `/hub/logs/view?model=${encodeURIComponent(model.id)}`;
      name.append(logs);
    }
    tr.append(
      name,
      el('td', 'cell-process', describeProcess(meta, pstate)),
      memoryCell(meta, pstate, mstate),
      el('td', 'cell-auto-unload', describeAutoUnload(meta)),
      el('td', 'cell-type', meta.model_type || 'n/a'),
      el('td', 'cell-group', meta.group || '—'),
      el('td', 'cell-default', meta.default ? '✅' : '—'),
      el('td', 'cell-path', meta.model_path || '—'),
      actionsCell(model, pstate, mstate),
    );
    return tr;
  }

  function placeholderRow(text) {
    const tr = el('tr', 'placeholder-row');
    const td = el('td', '', text);
    td.colSpan = 9;
    tr.append(td);
    return tr;
  }

  function renderModels() {
    if (!state.data) return;
    const models = Array.isArray(state.data.models) ? state.data.models : [];
    if (models.length === 0) {
      state.rows.clear();
      els.body.replaceChildren(placeholderRow('No models registered.'));
      return;
    }
    const next = new Map();
    const rows = [];
    for (const model of models) {
      const key = JSON.stringify([
        model,
        state.pending.get(model.id) || null,
        state.controllerAvailable,
      ]);
      const cached = state.rows.get(model.id);
      const tr = cached && cached.key === key ? cached.tr : buildRow(model);
      next.set(model.id, { key, tr });
      rows.push(tr);
    }
    state.rows = next;
    // Touch only rows that changed, so a click on an unchanged row is never lost.
    const keep = new Set(rows);
    for (const child of Array.from(els.body.children)) {
      if (!keep.has(child)) child.remove();
    }
    rows.forEach((tr, index) => {
      const current = els.body.children[index] || null;
      if (current !== tr) els.body.insertBefore(tr, current);
    });
  }

  // ---------------------------------------------------------------- polling

  async function fetchSnapshot() {
    const seq = ++state.requested;
    try {
      const response = await fetch(STATUS_URL, {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'application/json' },
      });
      if (response.status === 401) {
        throw new Error('Not signed in to the hub (it may have restarted). Reload the page to sign in.');
      }
      if (!response.ok) throw new Error(`Request failed with status ${response.status}`);
      const data = await response.json();
      if (seq < state.applied) return; // a newer snapshot is already shown
      state.applied = seq;
      state.data = data;
      state.controllerAvailable = Boolean(data.controller_available);
      clearError();
      renderStats(data);
      renderWarnings(data);
      renderModels();
    } catch (err) {
      if (seq < state.applied) return;
      state.applied = seq;
      const reason = (err && err.message) || 'Failed to fetch hub status';
      // fetch() rejects with a TypeError when the hub cannot be reached at all.
      showError(err instanceof TypeError ? `Cannot reach the hub: ${reason}` : reason);
      setPill('error');
      renderModels(); // finished actions get their labels back
    }
  }

  // ---------------------------------------------------------------- actions

  async function runModelAction(modelId, action) {
    const spec = MODEL_ACTIONS[action];
    if (!spec || !modelId || state.pending.has(modelId)) return;
    state.pending.set(modelId, action);
    renderModels();
    showToast(`${action.replace('-model', '')}…`, 'info');
    const fallback = `Failed to ${action.replace('-', ' ')} ${modelId}`;
    try {
      const response = await fetch(`/hub/models/${encodeURIComponent(modelId)}/${spec.endpoint}`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ reason: 'dashboard' }),
      });
      const payload = await readJson(response);
      if (response.ok) {
        showToast(`${spec.label} ${spec.scope} request sent for ${modelId}`, 'success');
      } else {
        showToast(errorMessage(payload) || fallback, 'error');
      }
    } catch (_err) {
      showToast(fallback, 'error');
    } finally {
      state.pending.delete(modelId);
      await fetchSnapshot();
    }
  }

  function hideToast(message) {
    if (els.toast.textContent === message) els.toast.hidden = true;
  }

  async function runServiceAction(button, action) {
    const label = SERVICE_LABELS[action];
    const notice = `${label} request…`;
    button.disabled = true;
    button.textContent = `${label}…`;
    showToast(notice, 'info');
    clearFlash();
    try {
      const response = await fetch(SERVICE_ENDPOINTS[action], {
        method: 'POST',
        credentials: 'same-origin',
      });
      const payload = await readJson(response);
      if (response.ok) {
        const message = (payload && payload.message) || `Hub ${action} request accepted`;
        showFlash(message, action === 'stop' ? 'warn' : 'success');
      } else {
        showFlash(errorMessage(payload) || `Failed to ${action} hub manager`, 'error');
      }
    } catch (_err) {
      showFlash(`Failed to ${action} hub manager`, 'error');
    } finally {
      hideToast(notice); // the flash tells the outcome
      button.disabled = false;
      button.textContent = label;
      fetchSnapshot();
    }
  }

  // ------------------------------------------------------------- listeners

  els.controls.addEventListener('click', (event) => {
    const button = event.target.closest('button');
    if (!button || button.disabled) return;
    if (button.classList.contains('refresh-btn')) {
      fetchSnapshot();
      return;
    }
    const action = button.dataset.serviceAction;
    if (Object.hasOwn(SERVICE_ENDPOINTS, action)) runServiceAction(button, action);
  });

  els.body.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button || button.disabled) return;
    runModelAction(button.dataset.model, button.dataset.action);
  });

  els.flash.addEventListener('click', clearFlash);

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') fetchSnapshot();
  });

  fetchSnapshot();
  window.setInterval(fetchSnapshot, REFRESH_INTERVAL_MS);
})();
