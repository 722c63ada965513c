/* MLX Hub live log view: follows GET /hub/logs?follow=1 as server-sent events.
 *
 * The model comes from this page's own query string. Each event is one log
 * line, added with textContent only. On every (re)connection the hub sends
 * the last lines again, so the view starts over instead of showing them twice.
 */
'use strict';

(() => {
  const FIRST_LINES = 200;
  const MAX_LINES = 5000; // older lines are dropped so a long follow stays light
  const lines = document.getElementById('log-lines');
  const pill = document.getElementById('log-state');

  const setState = (text, kind) => {
    pill.textContent = text;
    pill.className = `pill pill--${kind}`;
  };

  const params = new URLSearchParams({ follow: '1', lines: String(FIRST_LINES) });
  const model = new URLSearchParams(window.location.search).get('model');
  if (model !== null) params.set('model', model);
  const source = new EventSource(`/hub/logs?${params}`);

  source.addEventListener('open', () => {
    lines.replaceChildren();
    setState('live', 'ok');
  });
  source.addEventListener('error', () => {
    // EventSource retries by itself unless the hub refused the stream.
    const closed = source.readyState === EventSource.CLOSED;
    setState(closed ? 'disconnected (reload to retry)' : 'reconnecting…', closed ? 'error' : 'warn');
  });
  source.addEventListener('message', (event) => {
    const atBottom = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 8;
    const line = document.createElement('div');
    line.className = 'log-line';
    line.textContent = event.data;
    lines.append(line);
    while (lines.childElementCount > MAX_LINES) lines.firstElementChild.remove();
    // Keep following the end unless the reader scrolled up to look at something.
    if (atBottom) lines.scrollTop = lines.scrollHeight;
  });
})();
