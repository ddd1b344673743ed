// The console's shell: the sign-in wall, the navigation and a hash router. Nothing but
// the sign-in form is built, and no admin call made, until a token is given.

import { api, token, whenUnauthorized } from './api.js';
import { h, clear, errorBox, field } from './dom.js';
import * as pages from './pages.js';

const main = document.getElementById('main');
const top = document.getElementById('top');
let cleanup = null;
let signInError = null;

function signIn() {
  const input = h('input', {
    id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true,
    spellcheck: 'false',
  });
  const message = h('div', { id: 'signin-message' }, signInError ? errorBox(signInError) : null);
  const form = h('form', { id: 'signin', class: 'card narrow' },
    h('h1', null, 'Sign in'),
    h('p', null, 'Give the gateway\'s admin token. It is kept for this browser tab only.'),
    field('Admin token', input),
    h('button', { type: 'submit' }, 'Sign in'),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    token.set(input.value.trim());
    try {
      // A cheap admin call proves the token before any page shows.
      await api('GET', '/api/v1/admin/stats');
      signInError = null;
      if (!location.hash || location.hash === '#/' || location.hash === '#/signin') {
        location.hash = '#/overview';
      } else {
        render();
      }
    } catch (error) {
      token.clear();
      signInError = error;
      render();
    }
  });
  setTimeout(() => input.focus(), 0);
  return form;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || '') };
}

function render() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  clear(main);
  if (!token.get()) {
    top.hidden = true;
    main.append(signIn());
    return;
  }
  top.hidden = false;
  const { parts, params } = parseHash();
  const page = parts[0] || 'overview';
  for (const link of top.querySelectorAll('nav a')) {
    if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const context = { main, params, parts };
  let show;
  if (page === 'overview') show = pages.overview;
  else if (page === 'webhooks' && parts[1]) show = pages.webhook;
  else if (page === 'webhooks') show = pages.webhooks;
  else if (page === 'failures') show = pages.failures;
  else if (page === 'plugins') show = pages.plugins;
  else if (page === 'secrets') show = pages.secrets;
  else show = (ctx) => ctx.main.append(h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/overview' }, 'Back to the overview')));
  document.title = `hookgate · ${page}`;
  cleanup = show(context) || null;
  // Keyboard and screen-reader users land on the new page, not on the old link.
  main.focus({ preventScroll: true });
}

whenUnauthorized(() => {
  signInError = new Error('The admin token was refused; sign in again.');
  render();
});

document.getElementById('sign-out').addEventListener('click', () => {
  token.clear();
  signInError = null;
  location.hash = '#/';
  render();
});

window.addEventListener('hashchange', render);
render();
