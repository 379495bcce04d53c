/* <mark-notify-inbox>: the in-app inbox of mark-notify as a custom element. Plain
   JavaScript, no build step, no dependencies; docs/inbox.md says how to embed it. */
(() => {
  'use strict';
  const TAG = 'mark-notify-inbox';
  if (customElements.get(TAG)) return;
  // A classic script's own address: the API that serves it is the default one to call.
  const SRC = document.currentScript && document.currentScript.src;
  const BATCH = 100; // POST /v1/seen's default api.max_batch
  let sheet = null;

  const T = {
    en: {
      title: 'Notifications', bell: 'Notifications', unseen: n => `Notifications, ${n} unseen`,
      all: 'Mark all as seen', one: 'Mark as seen', more: 'Load more', empty: 'No notifications yet',
      error: 'Could not load notifications.', retry: 'Retry', prefs: 'Preferences', back: 'Back',
      close: 'Close', mute: 'Pause all notifications (required ones still arrive)',
      quiet: 'Quiet hours', from: 'From', to: 'To', tz: 'In your time zone.', saved: 'Saved',
      saveErr: 'Not saved:', always: 'always on', newOne: t => `New notification: ${t}`,
      newMany: n => `${n} new notifications`, unseenMark: 'Unseen',
      ch: { email: 'Email', sms: 'SMS', push: 'Push', inbox: 'Inbox', webpush: 'Browser' },
    },
    ru: {
      title: 'Уведомления', bell: 'Уведомления', unseen: n => `Уведомления, непросмотренных: ${n}`,
      all: 'Отметить все как просмотренные', one: 'Отметить как просмотренное',
      more: 'Показать ещё', empty: 'Уведомлений пока нет',
      error: 'Не удалось загрузить уведомления.', retry: 'Повторить', prefs: 'Настройки',
      back: 'Назад', close: 'Закрыть',
      mute: 'Приостановить все уведомления (обязательные всё равно придут)',
      quiet: 'Тихие часы', from: 'С', to: 'До', tz: 'По вашему часовому поясу.',
      saved: 'Сохранено', saveErr: 'Не сохранено:', always: 'всегда включено',
      newOne: t => `Новое уведомление: ${t}`, newMany: n => `Новых уведомлений: ${n}`,
      unseenMark: 'Не просмотрено',
      ch: { email: 'Эл. почта', sms: 'SMS', push: 'Push', inbox: 'Центр уведомлений', webpush: 'Браузер' },
    },
  };

  const CSS = `
:host{position:relative;display:inline-block;font:var(--mn-font,14px/1.4 system-ui,sans-serif);color:var(--mn-color,#1d1d1f)}
[hidden]{display:none!important}button,input{font:inherit;color:inherit}
:focus-visible{outline:2px solid var(--mn-accent,#2563eb);outline-offset:2px}
.bell{position:relative;display:grid;place-items:center;width:40px;height:40px;border:0;border-radius:50%;background:transparent;cursor:pointer;color:var(--mn-bell-color,currentColor)}
.bell:hover{background:var(--mn-hover,rgba(0,0,0,.06))}
.badge{position:absolute;top:2px;right:0;min-width:18px;height:18px;padding:0 5px;box-sizing:border-box;border-radius:9px;background:var(--mn-badge-bg,#dc2626);color:var(--mn-badge-color,#fff);font-size:11px;font-weight:600;line-height:18px;text-align:center}
.panel{position:absolute;top:calc(100% + 6px);right:0;z-index:var(--mn-z,1000);width:min(var(--mn-width,380px),calc(100vw - 16px));max-height:var(--mn-max-height,480px);display:flex;flex-direction:column;background:var(--mn-bg,#fff);border:1px solid var(--mn-border,#e5e7eb);border-radius:var(--mn-radius,12px);box-shadow:var(--mn-shadow,0 10px 30px rgba(0,0,0,.15));overflow:hidden}
.panel.start{right:auto;left:0}.head{display:flex;align-items:center;gap:4px;padding:8px 8px 8px 14px;border-bottom:1px solid var(--mn-border,#e5e7eb)}
h2{flex:1;margin:0;font-size:1.05em}.tb{border:0;background:transparent;border-radius:6px;padding:4px 8px;cursor:pointer;color:var(--mn-accent,#2563eb)}
.tb:hover{background:var(--mn-hover,rgba(0,0,0,.06))}.tb:disabled{opacity:.4;cursor:default}
.ic{color:var(--mn-muted,#6b7280);font-size:1.1em;line-height:1}
.body{overflow:auto;flex:1}ul{list-style:none;margin:0;padding:0}
.item{display:flex;align-items:flex-start;border-bottom:1px solid var(--mn-border,#e5e7eb)}
.item.new{background:var(--mn-unseen-bg,#f5f8ff)}.main{flex:1;display:grid;grid-template-columns:10px 1fr;gap:2px 8px;padding:10px 4px 10px 12px;text-align:left;text-decoration:none;color:inherit;background:transparent;border:0;cursor:pointer;min-width:0}
.dot{grid-row:1/4;width:8px;height:8px;margin-top:6px;border-radius:50%}.new .dot{background:var(--mn-accent,#2563eb)}
.t{font-weight:600;overflow-wrap:anywhere}.b{overflow-wrap:anywhere}
.w{color:var(--mn-muted,#6b7280);font-size:.85em}.seen{margin:8px 6px 0 0}
.msg{padding:24px 16px;text-align:center;color:var(--mn-muted,#6b7280)}.foot{padding:8px;text-align:center}
form{padding:8px 14px 14px}fieldset{border:0;border-top:1px solid var(--mn-border,#e5e7eb);margin:0;padding:8px 0}
legend{font-weight:600;padding:8px 0 4px}label{display:inline-flex;align-items:center;gap:6px;margin:2px 14px 2px 0}.row{display:block;margin:6px 0}
.note,.st{color:var(--mn-muted,#6b7280);font-size:.85em}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
`;
  const BELL = '<svg width="22" height="22" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9"/><path d="M13.7 21a2 2 0 0 1-3.4 0"/></svg>';

  // An element with attributes (on* become listeners, false/null are left out) and children.
  const h = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else if (v != null && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    e.append(...kids.flat().filter(x => x != null));
    return e;
  };
  // Notification ids are integers as strings: longer is larger.
  const newer = (a, b) => b.id.length - a.id.length || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  const safeLink = link => {
    try { return /^https?:$/.test(new URL(link, location.href).protocol) ? new URL(link, location.href).href : null; } catch (_) { return null; }
  };

  class MarkNotifyInbox extends HTMLElement {
    static get observedAttributes() { return ['locale', 'api-base', 'token']; }

    constructor() {
      super();
      // Set before the element was defined: through the setters below.
      for (const k of ['getToken', 'labels']) {
        if (Object.prototype.hasOwnProperty.call(this, k)) {
          const v = this[k];
          delete this[k];
          this[k] = v;
        }
      }
      this._items = new Map();
      this._unseen = 0;
      this._cursor = null;
      this._tag = null;
      this._state = 'loading';
      this._view = 'list';
      this._root = this.attachShadow({ mode: 'open' });
      // A constructed sheet, shared by every instance, passes a CSP without 'unsafe-inline'.
      try {
        sheet = sheet || new CSSStyleSheet();
        if (!sheet.cssRules.length) sheet.replaceSync(CSS);
        this._root.adoptedStyleSheets = [sheet];
      } catch (_) {
        this._root.innerHTML = `<style>${CSS}</style>`;
      }
      this._bell = h('button', { part: 'bell', class: 'bell', type: 'button', 'aria-haspopup': 'dialog', 'aria-expanded': 'false', 'aria-controls': 'panel', onclick: () => this.toggle() });
      this._bell.innerHTML = BELL;
      this._badge = h('span', { part: 'badge', class: 'badge', 'aria-hidden': 'true', hidden: true });
      this._bell.append(this._badge);
      this._panel = h('div', { part: 'panel', class: 'panel', id: 'panel', role: 'dialog', 'aria-labelledby': 'heading', hidden: true });
      this._root.addEventListener('keydown', e => this._key(e));
      this._live = h('div', { class: 'sr', role: 'status', 'aria-live': 'polite' });
      this._root.append(this._bell, this._panel, this._live);
      this._outside = e => { if (this.open && !e.composedPath().includes(this)) this.close(false); };
    }

    // async () => the signed-in user's client JWT: the host app's own way to get one.
    get getToken() { return this._getToken || null; }
    set getToken(fn) {
      this._getToken = fn;
      if (this._alive) this._restart();
    }
    // {categories: {name: label}, channels: {name: label}}: the host app's words for them.
    get labels() { return this._labels || {}; }
    set labels(v) {
      this._labels = v;
      if (this.open) this._render();
    }

    get open() { return !this._panel.hidden; }
    // Whether the stream is open and has said where it starts: new items show as they come.
    get live() { return !!this._es && this._es.readyState === EventSource.OPEN && this._started; }
    get unseen() { return this._unseen; }
    get items() { return [...this._items.values()].sort(newer); }
    get _t() {
      const lang = this.getAttribute('locale') || (this.closest('[lang]') || {}).lang || navigator.language || 'en';
      return lang.toLowerCase().startsWith('ru') ? T.ru : T.en;
    }
    get _locale() { return this._t === T.ru ? 'ru' : 'en'; }
    get _base() {
      return (this.getAttribute('api-base') || (SRC ? new URL(SRC).origin : location.origin)).replace(/\/$/, '');
    }
    get _pageSize() { return Math.min(100, Math.max(1, parseInt(this.getAttribute('page-size'), 10) || 20)); }

    connectedCallback() {
      this._alive = true;
      document.addEventListener('pointerdown', this._outside);
      this._clock = setInterval(() => this.open && this._view === 'list' && this._render(), 60000);
      this._paint();
      this._connect();
    }

    disconnectedCallback() {
      this._alive = false;
      document.removeEventListener('pointerdown', this._outside);
      clearInterval(this._clock);
      clearTimeout(this._again);
      if (this._es) this._es.close();
      this._es = null;
    }

    attributeChangedCallback(name, old, value) {
      if (old === value || !this._alive) return;
      if (name === 'locale') {
        this._paint();
        return this._render();
      }
      this._restart();
    }

    _restart() {
      // Another API or user: start over, and drop what is still on its way for the last.
      this._gen = (this._gen || 0) + 1;
      this._tok = null;
      this._tries = 0;
      clearTimeout(this._again);
      if (this._es) this._es.close();
      this._es = null;
      this._lastId = null;
      this._items.clear();
      this._connect();
    }

    toggle() { return this.open ? this.close() : this.show(); }

    show() {
      this._panel.hidden = false;
      this._bell.setAttribute('aria-expanded', 'true');
      this._render();
      // Under the bell's right edge, unless it would leave the window on the left.
      const align = this.getAttribute('align');
      const room = this.getBoundingClientRect().right - this._panel.offsetWidth;
      this._panel.classList.toggle('start', align === 'start' || (align !== 'end' && room < 8));
      const first = this._panel.querySelector('.main');
      // Still loading: a button for now, the newest item once it is there.
      this._focusFirst = !first;
      (first || this._panel.querySelector('.tb:not(:disabled)') || this._bell).focus();
    }

    close(focusBell = true) {
      this._panel.hidden = true;
      this._focusFirst = false;
      this._bell.setAttribute('aria-expanded', 'false');
      this._view = 'list';
      if (focusBell) this._bell.focus();
    }

    // -- the API ---------------------------------------------------------------------------

    async _token(fresh) {
      if (this.getToken) {
        if (fresh || !this._tok) this._tok = await this.getToken();
        return this._tok;
      }
      return this.getAttribute('token');
    }

    async _api(method, path, body, again = true) {
      const token = await this._token(false);
      const headers = { Accept: 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const r = await fetch(this._base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      if (r.status === 401 && again && this.getToken) {
        await this._token(true);
        return this._api(method, path, body, false);
      }
      const data = await r.json().catch(() => ({}));
      if (!r.ok) {
        const err = Object.assign(new Error(data.message || `HTTP ${r.status}`), { status: r.status, code: data.code });
        this._emit('error', { status: r.status, code: data.code || null, message: err.message });
        throw err;
      }
      return data;
    }

    _emit(name, detail, cancelable = false) {
      return this.dispatchEvent(new CustomEvent(`mark-notify:${name}`, { detail, bubbles: true, composed: true, cancelable }));
    }

    // -- live: the stream, or the list alone where there is none ---------------------------

    async _connect() {
      if (!this._alive || this._es) return;
      clearTimeout(this._again);
      // No token yet: the host app sets getToken or the token attribute, which restarts.
      if (!this.getToken && !this.getAttribute('token')) return;
      let opened;
      const gen = this._gen;
      try {
        opened = await this._api('POST', '/v1/inbox/stream-token');
      } catch (err) {
        if (gen !== this._gen) return;
        // No stream: the list as it is now. Another try later, unless the API said no
        // (no stream endpoint, a bad token): then the error's Retry button tries again.
        if (!this._items.size) await this.reload();
        const s = err.status;
        return s && s < 500 && s !== 429 ? undefined : this._retry();
      }
      if (!this._alive || this._es || gen !== this._gen) return;
      const url = new URL(opened.stream_url, `${this._base}/`);
      if (this._lastId) url.searchParams.set('last_event_id', this._lastId);
      const es = new EventSource(url.href);
      this._es = es;
      this._started = false;
      es.addEventListener('ready', e => {
        this._lastId = e.lastEventId;
        this._started = true;
        this._tries = 0;
        const d = JSON.parse(e.data);
        this._tag = d.seen_tag || this._tag;
        this._setUnseen(d.unseen);
        // A fresh stream (or one too old to resume): the list as of now; the stream
        // carries everything after it.
        this.reload();
      });
      es.addEventListener('changes', e => {
        this._lastId = e.lastEventId;
        this._started = true;
        this._tries = 0;
        this._changes(JSON.parse(e.data));
      });
      es.onerror = () => {
        // CONNECTING: the browser reconnects with Last-Event-ID itself. CLOSED: refused
        // (an expired stream token, too many streams): a new token, resuming where it was.
        if (es.readyState !== EventSource.CLOSED || this._es !== es) return;
        es.close();
        this._es = null;
        this._tok = null;
        this._retry();
      };
    }

    _retryNow() {
      if (this._es) return this.reload();
      this._tries = 0;
      clearTimeout(this._again);
      return this._connect();
    }

    _retry() {
      this._tries = (this._tries || 0) + 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(this._tries, 6));
      this._again = setTimeout(() => this._connect(), delay);
    }

    _changes(d) {
      const fresh = (d.items || []).filter(i => !this._items.has(i.id));
      for (const item of d.items || []) this._items.set(item.id, item);
      for (const id of d.seen || []) {
        const item = this._items.get(id);
        if (item) item.seen = true;
      }
      if (typeof d.unseen === 'number') this._setUnseen(d.unseen);
      if (fresh.length) {
        const t = this._t;
        this._announce(fresh.length === 1 ? t.newOne(fresh[0].title) : t.newMany(fresh.length));
        this._emit('new-items', { items: fresh });
      }
      this._relist();
    }

    _announce(text) {
      // Cleared first, so the same words twice are announced twice.
      this._live.textContent = '';
      setTimeout(() => { this._live.textContent = text; }, 50);
    }

    _setUnseen(n) {
      if (n === this._unseen) return;
      this._unseen = n;
      this._paint();
      this._emit('unseen-change', { unseen: n });
    }

    // -- the list --------------------------------------------------------------------------

    async reload() {
      this._state = 'loading';
      this._relist();
      const before = new Set(this._items.keys());
      const gen = this._gen;
      try {
        const page = await this._api('GET', `/v1/inbox?limit=${this._pageSize}`);
        if (gen !== this._gen) return;
        // The page replaces the list, but for items the stream brought while it was on its way.
        this._items = new Map([...this._items].filter(([id]) => !before.has(id)));
        this._take(page);
        this._cursor = page.next_cursor;
        this._state = 'ok';
      } catch (err) {
        if (gen !== this._gen) return;
        this._state = 'error';
      }
      this._relist();
    }

    async more() {
      if (!this._cursor || this._busy) return;
      this._busy = true;
      const had = this._items.size;
      const gen = this._gen;
      try {
        const page = await this._api('GET', `/v1/inbox?limit=${this._pageSize}&cursor=${encodeURIComponent(this._cursor)}`);
        if (gen !== this._gen) return;
        this._take(page);
        this._cursor = page.next_cursor;
        this._relist();
        const next = this._panel.querySelectorAll('.main')[had];
        if (next) next.focus();
      } catch (err) {
        this._state = 'error';
        this._relist();
      } finally {
        this._busy = false;
      }
    }

    _take(page) {
      for (const item of page.items) if (!this._items.has(item.id)) this._items.set(item.id, item);
      this._tag = page.seen_tag || this._tag;
      if (!this._es) this._setUnseen(page.unseen);
    }

    async markSeen(ids) {
      const items = ids.map(id => this._items.get(id)).filter(i => i && !i.seen);
      if (!items.length) return;
      const tag = this._tag;
      for (let at = 0; at < items.length; at += BATCH) {
        const chunk = items.slice(at, at + BATCH).map(i => ({ tag, id: i.id }));
        await this._api('POST', '/v1/seen', chunk.length === 1 ? chunk[0] : { items: chunk });
      }
      // The stream confirms with the server's count; until then (or without one), ours.
      // Items the stream already reported seen are in its count: not taken off twice.
      const unconfirmed = items.filter(i => !i.seen);
      for (const item of items) item.seen = true;
      this._setUnseen(Math.max(0, this._unseen - unconfirmed.length));
      this._relist();
    }

    async markAllSeen() {
      // Every unseen item, also those past the pages loaded so far.
      let cursor = this._cursor;
      let known = this.items.filter(i => !i.seen).length;
      while (cursor && known < this._unseen) {
        const page = await this._api('GET', `/v1/inbox?limit=100&cursor=${encodeURIComponent(cursor)}`);
        this._take(page);
        cursor = this._cursor = page.next_cursor;
        known = this.items.filter(i => !i.seen).length;
      }
      await this.markSeen(this.items.filter(i => !i.seen).map(i => i.id));
    }

    _open(item, e) {
      const go = this._emit('item-click', { item }, true);
      if (!go && e) e.preventDefault();
      if (!item.seen) this.markSeen([item.id]).catch(() => {});
    }

    // -- painting ----------------------------------------------------------------------------

    _paint() {
      const t = this._t;
      const n = this._unseen;
      this._badge.textContent = n > 99 ? '99+' : String(n);
      this._badge.hidden = !n;
      this._bell.setAttribute('aria-label', n ? t.unseen(n) : t.bell);
      this._relist();
    }

    // The list again, unless the preferences are open: what is typed there stays.
    _relist() {
      if (this._view === 'list') this._render();
    }

    _render() {
      if (!this.open) return;
      const t = this._t;
      const active = this._root.activeElement;
      const focusKey = active && (active.dataset.key || active.className);
      const head = h('div', { class: 'head' },
        h('h2', { id: 'heading', text: this._view === 'list' ? t.title : t.prefs }),
        this._view === 'list'
          ? [
              h('button', { class: 'tb all', type: 'button', disabled: !this._unseen, text: t.all, onclick: () => this.markAllSeen().catch(() => {}) }),
              h('button', { class: 'tb ic gear', type: 'button', 'aria-label': t.prefs, title: t.prefs, text: '⚙', onclick: () => this._prefsView() }),
            ]
          : h('button', { class: 'tb backb', type: 'button', text: t.back, onclick: () => { this._view = 'list'; this._render(); this._panel.querySelector('.gear').focus(); } }),
        h('button', { class: 'tb ic x', type: 'button', 'aria-label': t.close, title: t.close, text: '×', onclick: () => this.close() }));
      const body = h('div', { class: 'body' }, this._view === 'list' ? this._list(t) : this._prefsForm(t));
      this._panel.replaceChildren(head, body);
      this._panel.lang = this._locale;
      const first = this._focusFirst && this._panel.querySelector('.main');
      if (first) {
        this._focusFirst = false;
        first.focus();
      } else if (focusKey) {
        const again = [...this._panel.querySelectorAll('[data-key], button')].find(e => (e.dataset.key || e.className) === focusKey);
        if (again) again.focus();
      }
    }

    _list(t) {
      const items = this.items;
      if (this._state === 'error' && !items.length) {
        return h('div', { class: 'msg', role: 'alert' }, h('p', { text: t.error }), h('button', { class: 'tb retry', type: 'button', text: t.retry, onclick: () => this._retryNow() }));
      }
      if (!items.length) return h('p', { class: 'msg', text: this._state === 'loading' ? '…' : t.empty });
      const rtf = new Intl.RelativeTimeFormat(this._locale, { numeric: 'auto' });
      const ul = h('ul', { part: 'list', 'aria-labelledby': 'heading' }, items.map(item => {
        const link = item.link && safeLink(item.link);
        const when = new Date(item.created_at);
        const main = h(link ? 'a' : 'button', {
          class: 'main', 'data-key': `i${item.id}`, href: link, type: link ? null : 'button',
          onclick: e => this._open(item, e),
        },
        h('span', { class: 'dot', 'aria-hidden': 'true' }),
        item.seen ? null : h('span', { class: 'sr', text: `${t.unseenMark}: ` }),
        h('span', { class: 't', text: item.title }),
        item.body ? h('span', { class: 'b', text: item.body }) : null,
        h('time', { class: 'w', datetime: item.created_at, title: when.toLocaleString(this._locale), text: ago(rtf, when) }));
        return h('li', { part: item.seen ? 'item' : 'item unseen', class: item.seen ? 'item' : 'item new', 'data-id': item.id }, main,
          item.seen ? null : h('button', { class: 'tb ic seen', type: 'button', 'data-key': `s${item.id}`, 'aria-label': t.one, title: t.one, text: '✓', onclick: () => this.markSeen([item.id]).catch(() => {}) }));
      }));
      const foot = this._cursor ? h('div', { class: 'foot' }, h('button', { class: 'tb more', type: 'button', text: t.more, onclick: () => this.more() })) : null;
      const err = this._state === 'error' ? h('p', { class: 'msg', role: 'alert', text: t.error }) : null;
      return [ul, err, foot];
    }

    _key(e) {
      if (e.key === 'Escape' && this.open) {
        e.stopPropagation();
        return this.close();
      }
      if (!/^(ArrowDown|ArrowUp|Home|End)$/.test(e.key) || this._view !== 'list') return;
      const all = [...this._panel.querySelectorAll('.main')];
      if (!all.length) return;
      const at = all.indexOf(this._root.activeElement);
      const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 }[e.key];
      e.preventDefault();
      all[Math.max(0, Math.min(all.length - 1, to))].focus();
    }

    // -- preferences -------------------------------------------------------------------------

    async _prefsView() {
      this._view = 'prefs';
      this._prefs = null;
      this._prefsErr = null;
      this._render();
      try {
        this._prefs = await this._api('GET', '/v1/preferences');
      } catch (err) {
        this._prefsErr = err;
      }
      if (this._view === 'prefs') {
        this._render();
        const first = this._panel.querySelector('input, .retry');
        if (first) first.focus();
      }
    }

    _prefsForm(t) {
      const p = this._prefs;
      if (this._prefsErr) return h('div', { class: 'msg', role: 'alert' }, h('p', { text: t.error }), h('button', { class: 'tb retry', type: 'button', text: t.retry, onclick: () => this._prefsView() }));
      if (!p) return h('p', { class: 'msg', text: '…' });
      const labels = this.labels || {};
      const catLabel = c => (labels.categories || {})[c] || c.charAt(0).toUpperCase() + c.slice(1).replace(/[_-]/g, ' ');
      const chLabel = c => (labels.channels || {})[c] || t.ch[c] || c;
      const channels = [...new Set(Object.values(p.categories).flatMap(Object.keys))];
      const save = () => this._save();
      const box = (key, label, checked, disabled, onchange) =>
        h('label', {}, h('input', { type: 'checkbox', 'data-key': key, checked, disabled, onchange }), label);
      const form = h('form', { part: 'preferences', onsubmit: e => e.preventDefault() },
        h('div', { class: 'row' }, box('mute', t.mute, p.muted, false, e => { p.muted = e.target.checked; this._render(); save(); })),
        Object.keys(p.categories).map(cat => {
          const locked = p.transactional.includes(cat);
          return h('fieldset', {}, h('legend', { text: locked ? `${catLabel(cat)} (${t.always})` : catLabel(cat) }),
            Object.keys(p.categories[cat]).map(ch => box(`c:${cat}:${ch}`, chLabel(ch), locked || p.categories[cat][ch], locked || p.muted,
              e => { p.categories[cat][ch] = e.target.checked; save(); })));
        }),
        h('fieldset', {}, h('legend', { text: t.quiet }), h('p', { class: 'note', text: t.tz }),
          channels.map(ch => {
            const q = p.quiet_hours[ch];
            const time = (end, label) => h('label', {}, label, h('input', {
              type: 'time', 'data-key': `q:${ch}:${end}`, value: q ? q[end] : end === 'start' ? '22:00' : '08:00', disabled: !q,
              'aria-label': `${t.quiet}, ${chLabel(ch)}: ${label}`,
              onchange: e => { if (e.target.value) { p.quiet_hours[ch][end] = e.target.value; save(); } },
            }));
            return h('div', { class: 'row' },
              box(`q:${ch}`, chLabel(ch), !!q, false, e => {
                const [start, end] = [...e.target.closest('.row').querySelectorAll('input[type=time]')].map(i => i.value);
                if (e.target.checked) p.quiet_hours[ch] = { start, end };
                else delete p.quiet_hours[ch];
                this._render();
                save();
              }),
              time('start', t.from), time('end', t.to));
          })),
        h('p', { class: 'st', role: 'status', text: this._saveNote || '' }));
      return form;
    }

    async _save() {
      // One PUT at a time, each the whole form as it is when it goes (PUT replaces).
      if (this._saving) {
        this._dirty = true;
        return;
      }
      this._saving = true;
      const t = this._t;
      try {
        do {
          this._dirty = false;
          const p = this._prefs;
          const categories = {};
          for (const [cat, sw] of Object.entries(p.categories)) if (!p.transactional.includes(cat)) categories[cat] = { ...sw };
          const answer = await this._api('PUT', '/v1/preferences', { muted: p.muted, categories, quiet_hours: p.quiet_hours });
          if (!this._dirty) this._prefs = answer;
          this._saveNote = t.saved;
        } while (this._dirty);
      } catch (err) {
        this._saveNote = `${t.saveErr} ${err.message}`;
      } finally {
        this._saving = false;
      }
      if (this._view === 'prefs') this._render();
    }
  }

  const ago = (rtf, when) => {
    const s = (when.getTime() - Date.now()) / 1000;
    for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]]) if (Math.abs(s) >= size) return rtf.format(Math.round(s / size), unit);
    return rtf.format(0, 'second');
  };

  customElements.define(TAG, MarkNotifyInbox);
})();
