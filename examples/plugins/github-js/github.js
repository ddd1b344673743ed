// hookgate source plugin for GitHub webhooks, in JavaScript: checks X-Hub-Signature-256
// (HMAC-SHA256 of the raw body, checked by the host: the secret never enters the sandbox)
// and maps each delivery to one domain event named after the event and its action
// (`pull_request.opened`, `push`); `ping` is answered as a handshake. It behaves like the
// bundled Rust plugin (plugins/github) and passes the same fixtures.
//
// Built with componentize-js (see build.sh). The WIT world `source-plugin` becomes four
// top-level exports; the host's functions are imported from `hookgate:plugin/host@0.2.0`.
// A `result` export returns its ok value and throws its error value.

import { hmacVerify, log } from 'hookgate:plugin/host@0.2.0';

const SIGNATURE_PREFIX = 'sha256=';
const MAC_HEX_LEN = 64;

export function metadata() {
  return {
    name: 'github-js',
    version: '0.1.0',
    description: 'GitHub webhooks in JavaScript (X-Hub-Signature-256, HMAC-SHA256 of the raw body)',
    // A delivery can be redelivered by hand for three days, with the same X-GitHub-Delivery.
    retryWindowHours: 72,
  };
}

// One instance serves one webhook (tenant-hint, verify, map) and is then thrown away, so
// the parsed body can be kept between the calls: it is read and parsed once, not twice.
let parsed;

function payload(request) {
  if (parsed === undefined) {
    parsed = parse(request);
  }
  if (parsed.error) {
    throw { tag: 'malformed-payload', val: parsed.error };
  }
  return parsed;
}

function parse(request) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(request.body());
  } catch (e) {
    return { error: 'body is not UTF-8' };
  }
  let json = text;
  let fromForm = false;
  const contentType = (request.header('content-type') || '').split(';')[0].trim().toLowerCase();
  if (contentType === 'application/x-www-form-urlencoded') {
    // GitHub sends the JSON payload as the form field `payload`.
    const fields = new URLSearchParams(text).getAll('payload');
    if (fields.length === 0) return { error: 'no payload form field' };
    if (fields.length > 1) return { error: 'the form has more than one payload field' };
    json = fields[0];
    fromForm = true;
  }
  let value;
  try {
    value = JSON.parse(json);
  } catch (e) {
    return { error: `body is not JSON: ${e.message}` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { error: 'body is not a JSON object' };
  }
  return { value, json: fromForm ? json : undefined };
}

function text(object, name) {
  const v = object && typeof object === 'object' ? object[name] : undefined;
  return typeof v === 'string' && v !== '' ? v : undefined;
}

// Ids as text. JSON.parse turns numbers into doubles: GitHub's ids fit in 2^53 today.
function id(object, name) {
  const v = object && typeof object === 'object' ? object[name] : undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function tenant(value) {
  return text(value.repository, 'full_name') ?? text(value.organization, 'login');
}

function subject(event, value) {
  let found;
  switch (event) {
    case 'pull_request':
    case 'pull_request_review':
    case 'pull_request_review_comment':
    case 'pull_request_review_thread':
      found = id(value.pull_request, 'number') ?? id(value, 'number');
      break;
    case 'issues':
    case 'issue_comment':
      found = id(value.issue, 'number');
      break;
    case 'discussion':
    case 'discussion_comment':
      found = id(value.discussion, 'number');
      break;
    case 'push':
    case 'create':
    case 'delete':
      found = text(value, 'ref');
      break;
    case 'repository':
      break;
    default:
      found = id(value[event], 'number') ?? id(value[event], 'id');
  }
  return found ?? text(value.repository, 'full_name');
}

// GitHub's event names and actions: lower-case words joined by `_`, usable in a subject.
const TOKEN = /^[a-z0-9_-]+$/;

export function tenantHint(request, _settings) {
  if (parsed === undefined) parsed = parse(request);
  return parsed.error ? undefined : tenant(parsed.value);
}

export function verify(request, secrets, _keys, _settings) {
  const header = (request.header('x-hub-signature-256') || '').trim();
  if (header === '') {
    // The SHA-1 X-Hub-Signature is never trusted, not even as a fallback.
    throw {
      tag: 'missing-signature',
      val: request.header('x-hub-signature') !== undefined
        ? 'only the SHA-1 X-Hub-Signature is present; X-Hub-Signature-256 is required'
        : 'no X-Hub-Signature-256 header (has the webhook a secret?)',
    };
  }
  if (!header.startsWith(SIGNATURE_PREFIX)) {
    throw { tag: 'malformed-signature', val: `X-Hub-Signature-256 does not start with ${SIGNATURE_PREFIX}` };
  }
  const hex = header.slice(SIGNATURE_PREFIX.length);
  if (hex.length !== MAC_HEX_LEN || !/^[0-9a-fA-F]+$/.test(hex)) {
    throw { tag: 'malformed-signature', val: 'X-Hub-Signature-256 is not sha256= and 64 hex digits' };
  }
  const mac = new Uint8Array(MAC_HEX_LEN / 2);
  for (let i = 0; i < mac.length; i++) mac[i] = parseInt(hex.substr(i * 2, 2), 16);
  // The host computes the HMAC over the body it holds: the body is not copied in for it.
  const matched = hmacVerify(secrets, { tag: 'raw' }, 'sha256', [{ tag: 'body' }], [mac]);
  if (matched === undefined || matched === null) {
    throw { tag: 'mismatch', val: 'no configured secret signs this body' };
  }
  return { secret: matched, key: undefined };
}

export function map(request, _settings) {
  const event = (request.header('x-github-event') || '').trim();
  if (event === '') throw { tag: 'missing-field', val: 'X-GitHub-Event header' };
  if (!TOKEN.test(event)) throw { tag: 'unsupported-topic', val: `${JSON.stringify(event)} is not a GitHub event name` };
  // Sent once when a webhook is created, to check the endpoint: nothing to store.
  if (event === 'ping') {
    return {
      tag: 'respond',
      val: {
        status: 200,
        contentType: 'application/json',
        headers: [],
        body: new TextEncoder().encode('{"ok":true}'),
      },
    };
  }
  const { value, json } = payload(request);
  const action = value.action;
  let eventType = event;
  if (action !== undefined && action !== null) {
    if (typeof action !== 'string') throw { tag: 'malformed-payload', val: 'action is not a string' };
    if (!TOKEN.test(action)) throw { tag: 'unsupported-topic', val: `${JSON.stringify(action)} is not a GitHub action` };
    eventType = `${event}.${action}`;
  }
  const delivery = (request.header('x-github-delivery') || '').trim();
  if (delivery === '') log('warn', 'no X-GitHub-Delivery header: deduplicating on the body');
  return {
    tag: 'events',
    val: {
      idempotencyKey: delivery === '' ? undefined : delivery,
      tenant: tenant(value),
      topic: event,
      // GitHub sends no delivery timestamp: the time received stands in.
      occurredAt: undefined,
      events: [{
        eventType,
        subject: subject(event, value),
        // A form-encoded delivery's event data is its `payload` field; a JSON body is
        // published as it is (none).
        data: json,
      }],
    },
  };
}
