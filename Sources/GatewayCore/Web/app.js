// The /vpn/mesh page: the user's mesh devices, adding one (QR code and .conf), deleting one, plan
// usage, live status, and node diagnostics for admins. docs/web.md describes it.
import { ApiError, MeshAPI } from './api.js';
import { PolicyPanel } from './policies.js';
import {
  DEVICE_TYPES, Modal, formatAgo, formatBytes, formatDateTime, formatDuration, h, message, show, typeIcon,
} from './dom.js';
import {
  claims as readClaims, clearToken, looksLikeJWT, normalizeToken, storeToken, storedToken, takeTokenFromFragment,
} from './session.js';

/** How often the device list is read: the status pill turns green within this of the node's report. */
const DEVICE_POLL_MS = 1000;
/** How often plan usage and node diagnostics are read. */
const LICENSE_POLL_MS = 5000;
const ADMIN_POLL_MS = 3000;
const PLAN_NAMES = { free: 'Free', pro: 'Pro', team: 'Team', enterprise: 'Enterprise' };
const MAX_LABEL = 63;

const $ = (id) => document.getElementById(id);
const el = {
  banner: $('pritunl-banner'), migrate: $('migrate'), migrateLink: $('migrate-link'), migrateAdd: $('migrate-add'),
  migrateClose: $('migrate-close'),
  login: $('login'), loginTitle: $('login-title'), loginReason: $('login-reason'), loginForm: $('login-form'),
  tokenInput: $('token-input'), tokenError: $('token-error'),
  account: $('account'), accountWho: $('account-who'), logout: $('logout'),
  app: $('app'), title: $('devices-title'), usage: $('usage'), capNotice: $('cap-notice'), notice: $('notice'),
  listError: $('list-error'), addButton: $('add-device'), table: $('devices'), rows: $('device-rows'), empty: $('empty'),
  admin: $('admin'), adminError: $('admin-error'), nodeState: $('node-state'), peersNote: $('peers-note'),
  peersHead: $('peers-head'), peerRows: $('peer-rows'),
  addDialog: $('add-dialog'), addTitle: $('add-title'), addForm: $('add-form'), labelInput: $('device-label'),
  labelError: $('label-error'), addError: $('add-error'), generate: $('generate'), dnsExample: $('dns-example'),
  result: $('add-result'), resultSummary: $('result-summary'), keyWarning: $('key-warning'), qrFigure: $('qr-figure'),
  qrImage: $('qr-image'), qrUnavailable: $('qr-unavailable'), download: $('conf-download'), downloadHint: $('download-hint'),
  configText: $('config-text'),
  deleteDialog: $('delete-dialog'), deleteDesc: $('delete-desc'), deleteError: $('delete-error'),
  reissueDialog: $('reissue-dialog'), reissueDesc: $('reissue-desc'), reissueError: $('reissue-error'),
  reissueConfirm: $('reissue-confirm'), reissueCancel: $('reissue-cancel'),
  deleteConfirm: $('delete-confirm'), deleteCancel: $('delete-cancel'),
  providers: $('providers'), providerButtons: $('provider-buttons'),
  tokens: $('tokens'), tokenForm: $('token-form'), tokenName: $('token-name'), tokenDays: $('token-days'), tokensError: $('tokens-error'),
  tokenCreated: $('token-created'), tokenSecret: $('token-secret'), tokenCopy: $('token-copy'), tokenDismiss: $('token-dismiss'),
  tokenRows: $('token-rows'), tokenTable: $('token-table'), tokensEmpty: $('tokens-empty'),
  users: $('users'), inviteForm: $('invite-form'), inviteBy: $('invite-by'), inviteWho: $('invite-who'), inviteWhoLabel: $('invite-who-label'),
  inviteRole: $('invite-role'), usersError: $('users-error'), userRows: $('user-rows'),
  removeDialog: $('remove-dialog'), removeForm: $('remove-form'), removeDesc: $('remove-desc'), removeDevices: $('remove-devices'),
  removeTo: $('remove-to'), removeError: $('remove-error'), removeCancel: $('remove-cancel'), removeConfirm: $('remove-confirm'),
};

/** Runs a task now and then every `interval` ms after it finishes; pauses while the tab is hidden. */
class Poller {
  constructor(task, interval) {
    this.task = task;
    this.interval = interval;
    this.timer = null;
    this.active = false;
    this.generation = 0;
  }

  start() { this.active = true; this.now(); }

  stop() {
    this.active = false;
    this.generation++;
    clearTimeout(this.timer);
  }

  /** Runs the task at once (and restarts the schedule from there). */
  now() {
    if (!this.active) return;
    const generation = ++this.generation;
    clearTimeout(this.timer);
    if (document.hidden) return;   // resumed by the visibilitychange handler
    Promise.resolve().then(() => this.task()).catch(() => {}).finally(() => {
      if (this.active && generation === this.generation) this.timer = setTimeout(() => this.now(), this.interval);
    });
  }
}

const state = {
  config: { pritunl_configured: false, mesh_domain: 'quazzar.mesh' },
  api: null,
  claims: {},
  license: null,
  devices: new Map(),      // id → {data, row, parts}
  deviceSeq: 0,
  renderedSeq: 0,
  rateUntil: 0,            // ms; creation is refused until then (429)
  rateTimer: null,
  busy: false,             // a create request is in flight
  created: null,           // the device just created, while its result is shown
  downloadURL: null,
  deleting: null,          // the device the delete dialog is about
  reissuing: null,         // the device the re-issue dialog is about
  expiryTimer: null,
  me: null,                // with a session: who the server says the caller is (GET /api/auth/session)
  users: [],               // admins: the tenant's users, as last listed
  removing: null,          // the user the remove dialog is about
};

/** Whether the signed-in person is an admin: the stored role with a session, the token's claim otherwise. */
function isAdmin() {
  return state.me ? state.me.user?.role === 'admin' : state.claims.role === 'admin';
}

const devicePoller = new Poller(loadDevices, DEVICE_POLL_MS);
const licensePoller = new Poller(loadLicense, LICENSE_POLL_MS);
const adminPoller = new Poller(loadAdmin, ADMIN_POLL_MS);
const policyPanel = new PolicyPanel();
const pollers = [devicePoller, licensePoller, adminPoller];

// MARK: Sign-in

function showLogin(reason, kind = 'warn') {
  stopSession();
  show(el.app, false);
  show(el.account, false);
  show(el.login, true);
  el.loginReason.className = `alert alert-${kind}`;
  el.loginReason.setAttribute('role', kind === 'info' ? 'status' : 'alert');
  message(el.loginReason, reason || '');
  el.tokenInput.value = '';
  el.tokenInput.removeAttribute('aria-invalid');
  message(el.tokenError, '');
}

function stopSession() {
  for (const p of pollers) p.stop();
  policyPanel.stop();
  clearTimeout(state.expiryTimer);
  state.api = null;
  state.claims = {};
  state.license = null;
  state.renderedSeq = ++state.deviceSeq;
  state.rateUntil = 0;   // the rate limit is per user
  for (const { row } of state.devices.values()) row.remove();
  state.devices.clear();
  el.peerRows.replaceChildren();
  el.nodeState.replaceChildren();
  message(el.notice, '');
  el.usage.replaceChildren();
  message(el.capNotice, '');
  state.me = null;
  state.users = [];
  el.tokenRows.replaceChildren();
  el.userRows.replaceChildren();
  hideCreatedToken();
  message(el.tokensError, '');
  message(el.usersError, '');
  show(el.users, false);
  addModal.close();
  deleteModal.close();
  removeModal.close();
}

/** Starts a session with `token` (already taken out of the address bar). */
function signIn(token) {
  stopSession();
  const c = readClaims(token);
  if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
    clearToken();
    showLogin('This token has expired. Open a new login link or paste a new token.');
    return false;
  }
  storeToken(token);
  state.api = new MeshAPI(token);
  state.claims = c;
  show(el.login, false);
  show(el.app, true);
  show(el.account, true);
  const role = c.role === 'admin' ? 'Admin' : 'Owner';
  const until = typeof c.exp === 'number' ? ` · session until ${formatDateTime(new Date(c.exp * 1000).toISOString())}` : '';
  el.accountWho.replaceChildren(`Signed in as ${role}`, h('span', { class: 'account-until' }, until));
  show(el.admin, c.role === 'admin');
  if (typeof c.exp === 'number') {
    const left = c.exp * 1000 - Date.now();
    // setTimeout holds at most ~24.8 days.
    if (left < 2 ** 31 - 1) {
      state.expiryTimer = setTimeout(() => signOut('Your session has expired. Open a new login link or paste a new token.'), left);
    }
  }
  devicePoller.start();
  licensePoller.start();
  if (c.role === 'admin') adminPoller.start();
  loadTokens();
  if (c.role === 'admin') { loadUsers(); policyPanel.start(token); }
  return true;
}

/**
 * Starts the page for a session (the cookie a sign-in through an identity provider set), with what
 * the server says about the caller.
 */
function signInSession(info) {
  stopSession();
  clearToken();
  state.api = new MeshAPI(null);
  state.me = info;
  state.claims = { role: info.user?.role };
  show(el.login, false);
  show(el.app, true);
  show(el.account, true);
  const role = info.user?.role === 'admin' ? 'Admin' : 'Owner';
  const via = info.session?.provider ? ` via ${providerName(info.session.provider)}` : '';
  el.accountWho.replaceChildren(`Signed in as ${info.user?.name || 'user'} (${role})${via}`);
  show(el.admin, isAdmin());
  devicePoller.start();
  licensePoller.start();
  if (isAdmin()) adminPoller.start();
  loadTokens();
  if (isAdmin()) loadUsers();
}

function providerName(id) {
  const p = (state.config.sign_in?.providers || []).find((x) => x.id === id);
  return p ? p.name : id;
}

/** Ends the session: forgets the token (or ends the server session) and shows the sign-in form with `reason`. */
function signOut(reason, kind = 'warn', { endSession = false } = {}) {
  const api = state.api;
  if (endSession && api && api.usesSession) api.logout().catch(() => {});
  clearToken();
  showLogin(reason, kind);
  el.loginTitle.focus();
}

el.logout.addEventListener('click', () => {
  const session = state.api && state.api.usesSession;
  signOut(session ? 'You have logged out.' : 'You have logged out. The token was removed from this browser tab.', 'info', { endSession: true });
});

el.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = normalizeToken(el.tokenInput.value);
  let problem = '';
  if (!token) problem = 'Paste your access token first.';
  else if (!looksLikeJWT(token)) problem = 'This does not look like an access token (three parts separated by dots).';
  if (problem) {
    el.tokenInput.setAttribute('aria-invalid', 'true');
    message(el.tokenError, problem);
    el.tokenInput.focus();
    return;
  }
  if (signIn(token)) el.title.focus();
});

/** What every failed call does with a refused token: back to the sign-in form. True when handled. */
function handleAuthError(error) {
  if (error instanceof ApiError && error.status === 401) {
    if (state.api && state.api.usesSession) signOut(`Your session has ended (${error.message}). Sign in again.`);
    else signOut('The server did not accept your token (it may have expired). Open a new login link or paste a new token.');
    return true;
  }
  return false;
}

// MARK: Device list

function pillState(d) {
  if (d.online) return ['online', 'Online'];
  if (d.last_handshake_at) return ['offline', 'Offline'];
  return ['pending', 'Not yet connected'];
}

function createRow(d) {
  const parts = {
    icon: h('span', { class: 'device-icon' }),
    label: h('span', { class: 'device-label' }),
    typeName: h('span', { class: 'visually-hidden' }),
    dns: h('span', { class: 'device-dns mono' }),
    ips: h('ul', { class: 'ips mono' }),
    created: h('time', { class: 'when' }),
    seen: h('span', { class: 'when' }),
    pill: h('span', { class: 'pill' }),
    outdated: h('span', { class: 'badge-outdated', hidden: true }, 'Config outdated'),
    outdatedReason: h('span', { class: 'device-outdated-reason', hidden: true }),
    reissue: h('button', { type: 'button', class: 'btn btn-reissue', onclick: () => openReissue(d.id) }, 'Re-issue config'),
    remove: h('button', { type: 'button', class: 'btn btn-delete', onclick: () => openDelete(d.id) }, 'Delete'),
  };
  const row = h('tr', { dataset: { id: d.id } },
    h('td', { class: 'c-device' },
      h('div', { class: 'device-cell' }, parts.icon,
        h('div', { class: 'device-names' }, parts.label, parts.typeName, parts.dns, parts.outdated, parts.outdatedReason))),
    h('td', { class: 'c-ips', dataset: { label: 'Mesh IPs' } }, parts.ips),
    h('td', { class: 'c-created', dataset: { label: 'Created' } }, parts.created),
    h('td', { class: 'c-seen', dataset: { label: 'Last handshake' } }, parts.seen),
    h('td', { class: 'c-status', dataset: { label: 'Status' } }, parts.pill),
    h('td', { class: 'c-actions' }, parts.reissue, parts.remove));
  return { row, parts, data: null };
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function updateRow(entry, d, now) {
  const { parts, row } = entry;
  const old = entry.data;
  entry.data = d;
  if (!old || old.type !== d.type) {
    parts.icon.replaceChildren(typeIcon(d.type));
    setText(parts.typeName, `, ${DEVICE_TYPES[d.type] || 'Other'}`);
  }
  setText(parts.label, d.label);
  setText(parts.dns, d.dns_name);
  row.dataset.slug = d.slug;
  const ips = Array.isArray(d.mesh_ips) ? d.mesh_ips : [];
  if (!old || (old.mesh_ips || []).join() !== ips.join()) {
    parts.ips.replaceChildren(...ips.map((ip) => h('li', {}, ip)));
  }
  parts.created.dateTime = d.created_at;
  setText(parts.created, formatDateTime(d.created_at));
  if (d.last_handshake_at) {
    const t = parts.seen.firstChild instanceof HTMLTimeElement ? parts.seen.firstChild : h('time');
    if (t !== parts.seen.firstChild) parts.seen.replaceChildren(t);
    t.dateTime = d.last_handshake_at;
    t.title = formatDateTime(d.last_handshake_at);
    setText(t, formatAgo(d.last_handshake_at, now));
  } else {
    setText(parts.seen, 'Never');
  }
  const [pill, text] = pillState(d);
  if (parts.pill.dataset.state !== pill) {
    parts.pill.dataset.state = pill;
    setText(parts.pill, text);
    if (pill === 'online' && old && !old.online) announce(`${d.label} is online.`);
  }
  const outdated = Boolean(d.config_outdated);
  show(parts.outdated, outdated);
  show(parts.outdatedReason, outdated);
  setText(parts.outdatedReason, outdated ? `${d.config_outdated_reason || 'The mesh changed'}. Re-issue the config.` : '');
  row.dataset.outdated = outdated ? 'true' : 'false';
  parts.reissue.setAttribute('aria-label', `Re-issue the config of ${d.label}`);
  parts.remove.setAttribute('aria-label', `Delete ${d.label}`);
}

function renderDevices(list) {
  const now = Date.now();
  const seen = new Set();
  let index = 0;
  for (const d of list) {
    seen.add(d.id);
    let entry = state.devices.get(d.id);
    if (!entry) {
      entry = createRow(d);
      state.devices.set(d.id, entry);
    }
    updateRow(entry, d, now);
    // Keep the server's order (oldest first) without moving rows that are already in place, so
    // keyboard focus on a row's button survives every refresh.
    const at = el.rows.children[index];
    if (at !== entry.row) el.rows.insertBefore(entry.row, at || null);
    index++;
  }
  for (const [id, entry] of state.devices) {
    if (seen.has(id)) continue;
    const hadFocus = entry.row.contains(document.activeElement);
    entry.row.remove();
    state.devices.delete(id);
    if (hadFocus) el.addButton.focus();
  }
  const none = list.length === 0;
  show(el.empty, none);
  show(el.table, !none);
}

async function loadDevices() {
  const api = state.api;
  if (!api) return;
  const seq = ++state.deviceSeq;
  try {
    const answer = await api.devices();
    // An older answer that arrives after a newer one (or after sign-out) is dropped.
    if (api !== state.api || seq < state.renderedSeq) return;
    state.renderedSeq = seq;
    renderDevices(Array.isArray(answer?.devices) ? answer.devices : []);
    message(el.listError, '');
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.listError, `The device list could not be refreshed: ${error.message}`);
  }
}

let noticeTimer = null;
/** A short status message (announced by screen readers); it fades after a while. */
function announce(text) {
  // Re-setting the same text would not be announced again.
  el.notice.textContent = '';
  clearTimeout(noticeTimer);
  requestAnimationFrame(() => { el.notice.textContent = text; });
  noticeTimer = setTimeout(() => { el.notice.textContent = ''; }, 10000);
}

// MARK: Plan usage

function planName(plan) { return PLAN_NAMES[plan] || String(plan || 'Unknown'); }

function renderLicense(f) {
  state.license = f;
  const plan = planName(f.plan);
  el.usage.replaceChildren();
  if (f.cap === null || f.cap === undefined) {
    el.usage.append(h('strong', {}, `${f.used} ${f.used === 1 ? 'device' : 'devices'}`), ` — ${plan} (no device cap)`);
  } else {
    el.usage.append(h('strong', { class: f.used >= f.cap ? 'usage-full' : null }, `${f.used} of ${f.cap} devices`), ` — ${plan}`);
  }
  el.usage.dataset.used = String(f.used);
  const full = f.cap !== null && f.cap !== undefined && f.used >= f.cap;
  message(el.capNotice, full
    ? `Device cap reached: the ${plan} plan allows ${f.cap} ${f.cap === 1 ? 'device' : 'devices'}. Delete a device to add another, or move to a larger plan.`
    : (f.enabled === false ? 'Mesh VPN is not enabled for this tenant.' : ''));
}

async function loadLicense() {
  const api = state.api;
  if (!api) return;
  try {
    const answer = await api.license();
    if (api !== state.api) return;
    if (answer && answer.mesh_vpn) renderLicense(answer.mesh_vpn);
  } catch (error) {
    if (api !== state.api) return;
    handleAuthError(error);
  }
}

// MARK: Admin diagnostics

function stateItem(term, value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, value));
}

function renderNodeState(s) {
  const dns = s.dns_status || {};
  el.nodeState.replaceChildren(
    stateItem('Interface', `${s.interface_name || '—'} (${s.backend || 'unknown'})`),
    stateItem('Status', s.active ? 'Active' : 'Inactive'),
    stateItem('Mesh IPs', [s.mesh_ip, s.mesh_ipv6].filter(Boolean).join(', ') || '—'),
    stateItem('Listen port', String(s.listen_port ?? '—')),
    stateItem('Peers', String(s.peer_count ?? 0)),
    stateItem('Mesh DNS', dns.serving ? `Serving ${dns.record_count ?? 0} names in ${dns.zone || ''}` : 'Not serving'),
    stateItem('Revision', String(s.revision ?? '—')),
    stateItem('Last sync', s.last_sync_at ? formatAgo(s.last_sync_at) : 'Never'));
}

function renderPeers(dump) {
  const stats = dump.diagnostics !== 'basic_state';
  const columns = ['Name', 'Public key', 'Allowed IPs'].concat(stats ? ['Endpoint', 'Last handshake', 'Received', 'Sent'] : []);
  if (el.peersHead.children.length !== columns.length) {
    el.peersHead.replaceChildren(...columns.map((c) => h('th', { scope: 'col' }, c)));
  }
  const plan = state.license ? planName(state.license.plan) : 'your';
  message(el.peersNote, stats ? '' : `Per-peer stats (endpoint, last handshake, traffic) come with the Pro plan and above; the ${plan} plan shows the basic state.`);
  const now = Date.now();
  const rows = (dump.peers || []).map((p) => {
    const cells = [
      h('td', {}, p.dns_name || '—'),
      h('td', { class: 'key', title: p.public_key }, `${String(p.public_key).slice(0, 10)}…`),
      h('td', { class: 'mono' }, (p.allowed_ips || []).join(', ')),
    ];
    if (stats) {
      cells.push(
        h('td', { class: 'mono' }, p.endpoint || '—'),
        h('td', {}, p.last_handshake_at ? formatAgo(p.last_handshake_at, now) : 'Never'),
        h('td', {}, formatBytes(p.rx_bytes)),
        h('td', {}, formatBytes(p.tx_bytes)));
    }
    return h('tr', { dataset: { key: p.public_key } }, cells);
  });
  if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: String(columns.length), class: 'muted' }, 'No peers on this node yet.')));
  el.peerRows.replaceChildren(...rows);
}

async function loadAdmin() {
  const api = state.api;
  if (!api) return;
  const [st, peers] = await Promise.allSettled([api.state(), api.peers()]);
  if (api !== state.api) return;
  for (const r of [st, peers]) {
    if (r.status === 'rejected' && handleAuthError(r.reason)) return;
  }
  const refused = [st, peers].find((r) => r.status === 'rejected' && r.reason instanceof ApiError && r.reason.status === 403);
  if (refused) {
    // The stored role is not admin after all: this view is not for this user.
    adminPoller.stop();
    show(el.admin, false);
    return;
  }
  if (st.status === 'fulfilled') renderNodeState(st.value);
  if (peers.status === 'fulfilled') renderPeers(peers.value);
  const failed = [st, peers].find((r) => r.status === 'rejected');
  message(el.adminError, failed ? `The node could not be read: ${failed.reason.message}` : '');
}

// MARK: Add device

const addModal = new Modal(el.addDialog, { onClose: resetAddDialog });

function selectedType() {
  const checked = el.addForm.querySelector('input[name="type"]:checked');
  return checked ? checked.value : 'other';
}

function graphemeCount(text) {
  if (typeof Intl.Segmenter === 'function') return [...new Intl.Segmenter().segment(text)].length;
  return [...text].length;
}

function resetAddDialog() {
  state.created = null;
  if (state.downloadURL) URL.revokeObjectURL(state.downloadURL);
  state.downloadURL = null;
  // The private key leaves the page with the dialog.
  el.qrImage.removeAttribute('src');
  el.configText.textContent = '';
  el.download.setAttribute('href', '#');
  el.addTitle.textContent = 'Add device';
  show(el.result, false);
  show(el.addForm, true);
}

function openAdd() {
  resetAddDialog();
  el.addForm.reset();
  el.labelInput.removeAttribute('aria-invalid');
  message(el.labelError, '');
  message(el.addError, '');
  updateRateLimit();
  const first = el.addForm.querySelector('input[name="type"]:checked');
  addModal.open(first);
}

el.addDialog.addEventListener('cancel', (event) => {
  // Esc closes the dialog, except during the moment the key is being made: its only copy is on the way.
  if (state.busy) event.preventDefault();
});

function setGenerateEnabled(enabled) {
  el.generate.disabled = !enabled;
}

/** Shows the rate-limit message with a live countdown while creation is refused. */
function updateRateLimit() {
  clearTimeout(state.rateTimer);
  const left = (state.rateUntil - Date.now()) / 1000;
  if (left > 0) {
    message(el.addError, `You have added several devices in a short time. For your security there is a limit; you can add another in ${formatDuration(left)}.`);
    el.addError.dataset.kind = 'rate_limited';
    setGenerateEnabled(false);
    state.rateTimer = setTimeout(updateRateLimit, 1000);
  } else {
    if (el.addError.dataset.kind === 'rate_limited') {
      message(el.addError, '');
      delete el.addError.dataset.kind;
    }
    setGenerateEnabled(!state.busy);
  }
}

function showCreateError(error) {
  delete el.addError.dataset.kind;
  if (error.code === 'rate_limited') {
    state.rateUntil = Date.now() + (error.retryAfterSeconds || 60) * 1000;
    updateRateLimit();
    return;
  }
  if (error.code === 'quota_exceeded') {
    const plan = planName(error.detail.plan || state.license?.plan);
    const cap = error.detail.cap ?? state.license?.cap;
    el.addError.dataset.kind = 'quota_exceeded';
    message(el.addError, `Device cap reached: your ${plan} plan allows ${cap} ${cap === 1 ? 'device' : 'devices'}. Delete a device to add another, or move to a larger plan.`);
    licensePoller.now();
    return;
  }
  if (error.code === 'invalid_argument' && error.detail.field === 'label') {
    el.labelInput.setAttribute('aria-invalid', 'true');
    message(el.labelError, error.message);
    el.labelInput.focus();
    return;
  }
  el.addError.dataset.kind = error.code;
  message(el.addError, error.message);
}

function configFileName(slug) {
  // wg-quick names the interface after the file, and Linux interface names hold at most 15 characters.
  const safe = String(slug || 'mesh').toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 15).replace(/-+$/, '');
  return `${safe || 'mesh'}.conf`;
}

function svgDataURL(svg) {
  // The SVG is shown as an image (no scripts, no access to the page), from a data: URL.
  const bytes = new TextEncoder().encode(svg);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:image/svg+xml;base64,${btoa(binary)}`;
}

function showResult(d) {
  state.created = d;
  el.addTitle.textContent = 'Device added';
  el.resultSummary.replaceChildren(
    h('strong', {}, d.label), ` is ready as `, h('span', { class: 'mono' }, d.dns_name),
    ` (${(d.mesh_ips || []).join(', ')}).`);
  el.keyWarning.textContent = d.private_key_notice
    || 'This config holds the device\'s only copy of its private key. It is not stored and will not be shown again.';
  el.keyWarning.prepend(h('strong', {}, 'Shown only once. '));
  if (d.qr_svg) {
    el.qrImage.src = svgDataURL(d.qr_svg);
    el.qrImage.alt = `QR code with the WireGuard configuration for ${d.label}`;
    show(el.qrFigure, true);
    message(el.qrUnavailable, '');
  } else {
    el.qrImage.removeAttribute('src');
    show(el.qrFigure, false);
    message(el.qrUnavailable, `${d.qr_unavailable_reason || 'This configuration is too large for a QR code.'} Download the .conf file and import it into the WireGuard app instead.`);
  }
  const name = configFileName(d.slug);
  state.downloadURL = URL.createObjectURL(new Blob([d.config], { type: 'application/octet-stream' }));
  el.download.href = state.downloadURL;
  el.download.download = name;
  el.download.textContent = `Download ${name}`;
  el.download.className = d.type === 'laptop' || !d.qr_svg ? 'btn btn-primary' : 'btn';
  el.downloadHint.textContent = d.type === 'laptop'
    ? 'Import it in the WireGuard app (Import tunnel from file), or run wg-quick up with it.'
    : 'Or send the file to the device and open it with the WireGuard app.';
  el.configText.textContent = d.config;
  show(el.addForm, false);
  show(el.result, true);
  el.resultSummary.focus();
}

el.addForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (state.busy || !state.api) return;
  if (state.rateUntil > Date.now()) { updateRateLimit(); return; }
  const label = el.labelInput.value.trim();
  let problem = '';
  if (!label) problem = 'Give the device a label.';
  else if (graphemeCount(label) > MAX_LABEL) problem = `The label is too long: at most ${MAX_LABEL} characters.`;
  if (problem) {
    el.labelInput.setAttribute('aria-invalid', 'true');
    message(el.labelError, problem);
    el.labelInput.focus();
    return;
  }
  el.labelInput.removeAttribute('aria-invalid');
  message(el.labelError, '');
  message(el.addError, '');
  state.busy = true;
  setGenerateEnabled(false);
  el.generate.textContent = 'Generating…';
  const api = state.api;
  try {
    const created = await api.createDevice(label, selectedType());
    if (api !== state.api) return;
    showResult(created);
    announce(`Added ${created.label}.`);
    devicePoller.now();
    licensePoller.now();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    showCreateError(error instanceof ApiError ? error : new ApiError(0, null, null));
  } finally {
    state.busy = false;
    el.generate.textContent = 'Generate';
    updateRateLimit();
  }
});

el.labelInput.addEventListener('input', () => {
  if (el.labelInput.getAttribute('aria-invalid')) {
    el.labelInput.removeAttribute('aria-invalid');
    message(el.labelError, '');
  }
});

el.addButton.addEventListener('click', openAdd);

// MARK: Delete device

const deleteModal = new Modal(el.deleteDialog, {
  onClose: () => { state.deleting = null; },
});

function openDelete(id) {
  const entry = state.devices.get(id);
  if (!entry) return;
  state.deleting = entry.data;
  el.deleteDesc.replaceChildren(
    h('strong', {}, entry.data.label), ` (${entry.data.dns_name}) loses its mesh access at once, and its configuration stops working. This cannot be undone.`);
  message(el.deleteError, '');
  el.deleteConfirm.disabled = false;
  deleteModal.open(el.deleteCancel);
}

el.deleteConfirm.addEventListener('click', async () => {
  const d = state.deleting;
  const api = state.api;
  if (!d || !api) return;
  el.deleteConfirm.disabled = true;
  try {
    await api.deleteDevice(d.id);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    // Already gone (another tab, another admin): the outcome the user wanted.
    if (!(error instanceof ApiError && error.status === 404)) {
      message(el.deleteError, `The device could not be deleted: ${error.message}`);
      el.deleteConfirm.disabled = false;
      return;
    }
  }
  const entry = state.devices.get(d.id);
  deleteModal.close();
  if (entry) {
    entry.row.remove();
    state.devices.delete(d.id);
  }
  // Answers already on their way may still list the device: drop them.
  state.renderedSeq = ++state.deviceSeq;
  show(el.empty, state.devices.size === 0);
  show(el.table, state.devices.size > 0);
  announce(`Deleted ${d.label}.`);
  el.addButton.focus();
  devicePoller.now();
  licensePoller.now();
});

// MARK: API tokens

function hideCreatedToken() {
  el.tokenSecret.textContent = '';
  show(el.tokenCreated, false);
}

function renderTokens(list) {
  const now = Date.now();
  el.tokenRows.replaceChildren(...list.map((t) => h('tr', { dataset: { id: t.id } },
    h('td', {}, t.name),
    h('td', { class: 'mono' }, `${t.prefix}…`),
    h('td', {}, formatDateTime(t.created_at)),
    h('td', {}, formatDateTime(t.expires_at)),
    h('td', { class: 'last-used' }, t.last_used_at ? formatAgo(t.last_used_at, now) : 'Never'),
    h('td', {}, h('button', { type: 'button', class: 'btn btn-delete', 'aria-label': `Revoke ${t.name}`, onclick: () => revokeToken(t) }, 'Revoke')))));
  show(el.tokensEmpty, list.length === 0);
  show(el.tokenTable, list.length > 0);
}

async function loadTokens() {
  const api = state.api;
  if (!api) return;
  try {
    const answer = await api.tokens();
    if (api !== state.api) return;
    renderTokens(Array.isArray(answer?.tokens) ? answer.tokens : []);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.tokensError, `The API tokens could not be read: ${error.message}`);
  }
}

async function revokeToken(t) {
  const api = state.api;
  if (!api) return;
  try {
    await api.revokeToken(t.id);
    announce(`Revoked ${t.name}.`);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    if (!(error instanceof ApiError && error.status === 404)) message(el.tokensError, `The token could not be revoked: ${error.message}`);
  }
  loadTokens();
}

el.tokenForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const api = state.api;
  if (!api) return;
  const name = el.tokenName.value.trim();
  const days = Number(el.tokenDays.value || 90);
  if (!name) {
    message(el.tokensError, 'Give the token a name, e.g. the script that uses it.');
    el.tokenName.focus();
    return;
  }
  message(el.tokensError, '');
  try {
    const made = await api.createToken(name, Number.isInteger(days) ? days : 90);
    if (api !== state.api) return;
    el.tokenSecret.textContent = made.token;
    show(el.tokenCreated, true);
    el.tokenForm.reset();
    el.tokenCopy.focus();
    loadTokens();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.tokensError, error.message);
  }
});

el.tokenCopy.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(el.tokenSecret.textContent);
    announce('Token copied.');
  } catch {
    // Without clipboard access the token stays selectable on the page.
    window.getSelection()?.selectAllChildren(el.tokenSecret);
  }
});
el.tokenDismiss.addEventListener('click', () => { hideCreatedToken(); el.tokenName.focus(); });

// MARK: Users (admins)

function userWho(u) {
  return u.email || u.identity?.subject || u.invited_subject || '—';
}

function renderUsers(list) {
  state.users = list;
  const me = state.me?.user?.id || null;
  el.userRows.replaceChildren(...list.map((u) => {
    const role = h('select', { 'aria-label': `Role of ${u.name}`, onchange: (e) => changeRole(u, e.target.value, e.target) },
      h('option', { value: 'owner', selected: u.role === 'owner' }, 'Owner'),
      h('option', { value: 'admin', selected: u.role === 'admin' }, 'Admin'));
    const remove = u.id === me ? h('span', { class: 'muted' }, 'You')
      : h('button', { type: 'button', class: 'btn btn-delete', 'aria-label': `Remove ${u.name}`, onclick: () => openRemove(u) },
        u.status === 'invited' ? 'Cancel invitation' : 'Remove');
    return h('tr', { dataset: { id: u.id, status: u.status } },
      h('td', {}, u.name),
      h('td', { class: 'mono' }, userWho(u)),
      h('td', {}, role),
      h('td', { class: `status-${u.status}` }, u.status === 'invited' ? 'Invited' : 'Active'),
      h('td', {}, u.last_sign_in_at ? formatAgo(u.last_sign_in_at) : 'Never'),
      h('td', {}, remove));
  }));
}

async function loadUsers() {
  const api = state.api;
  if (!api || !isAdmin()) return;
  try {
    const answer = await api.users();
    if (api !== state.api) return;
    show(el.users, true);
    renderUsers(Array.isArray(answer?.users) ? answer.users : []);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    if (error instanceof ApiError && error.status === 403) { show(el.users, false); return; }
    message(el.usersError, `The users could not be read: ${error.message}`);
  }
}

async function changeRole(u, role, select) {
  const api = state.api;
  if (!api) return;
  message(el.usersError, '');
  try {
    await api.setRole(u.id, role);
    announce(`${u.name} is now ${role === 'admin' ? 'an admin' : 'an owner'}.`);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.usersError, error.message);
    select.value = u.role;
  }
  loadUsers();
}

el.inviteBy.addEventListener('change', () => {
  el.inviteWhoLabel.textContent = el.inviteBy.value === 'email' ? 'Email' : 'Provider subject';
});

el.inviteForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const api = state.api;
  if (!api) return;
  const who = el.inviteWho.value.trim();
  if (!who) {
    message(el.usersError, el.inviteBy.value === 'email' ? 'Type the email address to invite.' : 'Type the subject to invite.');
    el.inviteWho.focus();
    return;
  }
  message(el.usersError, '');
  try {
    const body = { role: el.inviteRole.value };
    body[el.inviteBy.value === 'email' ? 'email' : 'subject'] = who;
    const u = await api.invite(body);
    if (api !== state.api) return;
    announce(`Invited ${u.name}.`);
    el.inviteForm.reset();
    el.inviteWhoLabel.textContent = 'Email';
    loadUsers();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.usersError, error.message);
  }
});

const removeModal = new Modal(el.removeDialog, { onClose: () => { state.removing = null; } });

function openRemove(u) {
  state.removing = u;
  el.removeDesc.replaceChildren(h('strong', {}, u.name), u.status === 'invited'
    ? ' has not signed in yet; the invitation is cancelled.'
    : ' is signed out at once, and their API tokens stop working.');
  const others = state.users.filter((x) => x.id !== u.id && x.status === 'active');
  el.removeTo.replaceChildren(...others.map((x) => h('option', { value: x.id }, `${x.name} (${userWho(x)})`)));
  const reassign = el.removeForm.querySelector('input[value="reassign"]');
  reassign.disabled = others.length === 0;
  el.removeForm.querySelector('input[value="delete"]').checked = true;
  show(el.removeDevices, u.status !== 'invited');
  message(el.removeError, '');
  el.removeConfirm.disabled = false;
  removeModal.open(el.removeCancel);
}

el.removeForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const u = state.removing;
  const api = state.api;
  if (!u || !api) return;
  const devices = u.status === 'invited' ? '' : el.removeForm.querySelector('input[name="devices"]:checked').value;
  el.removeConfirm.disabled = true;
  try {
    await api.removeUser(u.id, devices, devices === 'reassign' ? el.removeTo.value : '');
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    if (!(error instanceof ApiError && error.status === 404)) {
      message(el.removeError, error.message);
      el.removeConfirm.disabled = false;
      return;
    }
  }
  removeModal.close();
  announce(`Removed ${u.name}.`);
  loadUsers();
  devicePoller.now();
  licensePoller.now();
});

// MARK: Re-issue a config

const reissueModal = new Modal(el.reissueDialog, {
  onClose: () => { state.reissuing = null; },
});

function openReissue(id) {
  const entry = state.devices.get(id);
  if (!entry) return;
  state.reissuing = entry.data;
  el.reissueDesc.replaceChildren(
    h('strong', {}, entry.data.label), ` (${entry.data.dns_name}) gets a new key and a new configuration with the mesh's current nodes. `,
    'Its current configuration stops working at once; it keeps its addresses and name.');
  message(el.reissueError, '');
  el.reissueConfirm.disabled = false;
  reissueModal.open(el.reissueCancel);
}

el.reissueConfirm.addEventListener('click', async () => {
  const d = state.reissuing;
  const api = state.api;
  if (!d || !api) return;
  el.reissueConfirm.disabled = true;
  let issued;
  try {
    issued = await api.reissueDevice(d.id);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    const e = error instanceof ApiError ? error : new ApiError(0, null, null);
    message(el.reissueError, e.status === 429
      ? `Too many configs made in the last minute: try again in ${e.retryAfterSeconds || "a few"} seconds.`
      : `The config could not be re-issued: ${e.message}`);
    el.reissueConfirm.disabled = false;
    return;
  }
  reissueModal.close();
  // The new config, shown once, in the same place a new device's config is.
  openAdd();
  showResult(issued);
  el.addTitle.textContent = 'Config re-issued';
  announce(`Re-issued the config of ${issued.label}.`);
  devicePoller.now();
});

// MARK: Pritunl migration

function openMigrate(event) {
  if (event) event.preventDefault();
  show(el.migrate, true);
  el.migrate.focus();
}
el.migrateLink.addEventListener('click', openMigrate);
el.migrateClose.addEventListener('click', () => { show(el.migrate, false); el.migrateLink.focus(); });
el.migrateAdd.addEventListener('click', () => {
  if (state.api) openAdd();
  else el.tokenInput.focus();
});

// MARK: Start

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) for (const p of pollers) p.now();
});

async function loadConfig() {
  try {
    const c = await MeshAPI.uiConfig();
    if (c && typeof c === 'object') state.config = { ...state.config, ...c };
  } catch {
    // Without it the page works; only the banner and the domain hint depend on it.
  }
  show(el.banner, state.config.pritunl_configured === true);
  el.dnsExample.textContent = `zoes-iphone.${state.config.mesh_domain || 'quazzar.mesh'}`;
  const providers = Array.isArray(state.config.sign_in?.providers) ? state.config.sign_in.providers : [];
  el.providerButtons.replaceChildren(...providers.map((p) => {
    const href = `/api/auth/login?provider=${encodeURIComponent(p.id)}&return_to=${encodeURIComponent('/vpn/mesh/')}`;
    return h('a', { class: 'btn btn-primary', href, dataset: { provider: p.id } }, `Sign in with ${p.name}`);
  }));
  show(el.providers, providers.length > 0);
  if (state.config.pritunl_configured === true && window.location.hash === '#migrate') openMigrate();
}

/** A login link opened in a tab that already shows the page only changes the fragment. */
window.addEventListener('hashchange', () => {
  const token = takeTokenFromFragment();
  if (token === null) {
    if (window.location.hash === '#migrate' && state.config.pritunl_configured === true) openMigrate();
    return;
  }
  if (token && looksLikeJWT(token)) {
    if (signIn(token)) el.title.focus();
  } else {
    signOut('The login link holds no usable token.');
  }
});

/**
 * Takes a refused sign-in's reason out of the fragment (`#signin_error=…&message=…`, where the
 * gateway sends the browser back) and returns its message, or null.
 */
function takeSignInError() {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  if (!params.has('signin_error')) return null;
  const text = params.get('message') || 'The sign-in was refused.';
  window.history.replaceState(window.history.state, '', window.location.pathname + window.location.search);
  return `Sign-in refused: ${text}`;
}

async function start() {
  const fromLink = takeTokenFromFragment();
  const refused = takeSignInError();
  const config = loadConfig();
  const token = fromLink || storedToken();
  if (token && looksLikeJWT(token)) {
    signIn(token);
  } else {
    if (token) clearToken();
    // Without a token: a session cookie from a sign-in, if there is one.
    let info = null;
    if (!refused) {
      try { info = await new MeshAPI(null).session(); } catch { info = null; }
    }
    await config;
    if (info && info.user) {
      signInSession(info);
    } else {
      showLogin(refused || (fromLink === '' ? 'The login link holds no token.' : ''), refused ? 'warn' : 'info');
    }
  }
  document.documentElement.dataset.ready = 'true';
}

start();
