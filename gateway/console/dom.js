// Builds the DOM from data. Every string goes in as a text node or an attribute value,
// never parsed as HTML: values from webhooks (headers, bodies, topics) are untrusted.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'on') {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === 'value') {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

// A table from rows; `columns` is [{ label, cell: row => Node | string }].
export function table(columns, rows, props) {
  return h('table', props,
    h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
    h('tbody', null, rows.map((row) => h('tr', null, columns.map((c) => h('td', null, c.cell(row)))))),
  );
}

// A definition list from [label, value] pairs.
export function dl(pairs, props) {
  return h('dl', props, pairs.map(([label, value]) => [h('dt', null, label), h('dd', null, value ?? '—')]));
}

export function time(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return h('time', { datetime: iso, title: iso }, date.toLocaleString());
}

export function code(text) {
  return h('code', null, text ?? '—');
}

export function badge(text) {
  const kind = String(text ?? 'unknown').toLowerCase().replace(/[^a-z_]/g, '');
  return h('span', { class: `badge badge-${kind}` }, text ?? 'unknown');
}

// An error as the admin API words it (its `message`), announced to screen readers.
export function errorBox(error) {
  const text = error && error.message ? error.message : String(error);
  return h('p', { class: 'error', role: 'alert' }, text);
}

export function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}
