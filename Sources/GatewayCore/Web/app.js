// The /vpn/mesh page: the user's mesh devices (filtered, a page at a time), adding one (QR code,
// .conf and its live status), renaming, suspending, resuming and deleting one, plan usage, live
// status, and for admins the mesh switch, the default lifetime, nodes, diagnostics and the audit log.
// docs/web.md describes it.
import { ApiError, MeshAPI } from './api.js';
import { LiveChannel } from './live.js';
import { PolicyPanel } from './policies.js';
import {
  DEVICE_TYPES, Modal, configFileName, formatAgo, formatBytes, formatDateTime, formatDuration, h, message, show, svgDataURL, typeIcon,
} from './dom.js';
import {
  claims as readClaims, clearToken, looksLikeJWT, normalizeToken, storeToken, storedToken, takeTokenFromFragment,
} from './session.js';

/**
 * The device list, plan usage and node diagnostics are pushed over the live channel (live.js) and
 * read again only when it says something changed. When the channel cannot be opened the page polls
 * them instead, at these intervals, until it can.
 */
const DEVICE_POLL_MS = 1000;
const LICENSE_POLL_MS = 5000;
const ADMIN_POLL_MS = 3000;
const NODES_POLL_MS = 5000;
const AUDIT_POLL_MS = 10000;
/** Devices per page of the list, and entries per page of the audit log. */
const PAGE_SIZE = 25;
const AUDIT_PAGE_SIZE = 25;
const PLAN_NAMES = { free: 'Free', pro: 'Pro', team: 'Team', enterprise: 'Enterprise' };
const MAX_LABEL = 63;

const $ = (id) => document.getElementById(id);
const el = {
  banner: $('pritunl-banner'), migrate: $('migrate'), migrateLink: $('migrate-link'), migrateAdd: $('migrate-add'),
  migrateClose: $('migrate-close'), migrateAdmin: $('migrate-admin'), migrateNotAdmin: $('migrate-not-admin'),
  migrateRows: $('migrate-rows'), migrateError: $('migrate-error'), migrateDetected: $('migrate-detected'),
  linkForm: $('link-form'), linkFor: $('link-for'), linkLabel: $('link-label'), linkType: $('link-type'), linkExpiry: $('link-expiry'),
  linkCancel: $('link-cancel'), linkCreated: $('link-created'), linkPerson: $('link-person'), linkExpires: $('link-expires'),
  linkURL: $('link-url'), linkCopy: $('link-copy'), linkDismiss: $('link-dismiss'),
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
  meshOff: $('mesh-off'), emptyFiltered: $('empty-filtered'), filterStatus: $('filter-status'), filterType: $('filter-type'),
  filterOwnerBox: $('filter-owner-box'), filterOwner: $('filter-owner'), pager: $('pager'), pagePrev: $('page-prev'),
  pageNext: $('page-next'), pageInfo: $('page-info'), deviceExpiry: $('device-expiry'), resultPill: $('result-pill'),
  renameDialog: $('rename-dialog'), renameForm: $('rename-form'), renameInput: $('rename-input'), renameError: $('rename-error'),
  renameSave: $('rename-save'),
  expiryDialog: $('expiry-dialog'), expiryForm: $('expiry-form'), expiryDesc: $('expiry-desc'), expiryInput: $('expiry-input'),
  expiryNever: $('expiry-never'), expiryError: $('expiry-error'), expirySave: $('expiry-save'),
  settingsError: $('settings-error'), meshSwitch: $('mesh-switch'), lifetimeSelect: $('lifetime-select'),
  meshDialog: $('mesh-dialog'), meshConfirm: $('mesh-confirm'), meshCancel: $('mesh-cancel'),
  nodesError: $('nodes-error'), nodeRows: $('node-rows'), enroll: $('enroll'),
  nodeDialog: $('node-dialog'), nodeDialogDesc: $('node-dialog-desc'), nodeDialogError: $('node-dialog-error'),
  nodeConfirm: $('node-confirm'), nodeCancel: $('node-cancel'),
  enrollDialog: $('enroll-dialog'), enrollForm: $('enroll-form'), enrollTtl: $('enroll-ttl'), enrollUses: $('enroll-uses'),
  enrollError: $('enroll-error'), enrollCreate: $('enroll-create'), enrollResult: $('enroll-result'), enrollSummary: $('enroll-summary'),
  enrollToken: $('enroll-token'),
  diagNode: $('diag-node'), auditPanel: $('audit-panel'), auditNote: $('audit-note'), auditBody: $('audit-body'),
  auditFilters: $('audit-filters'), auditAction: $('audit-action'), auditActor: $('audit-actor'), auditError: $('audit-error'),
  auditRows: $('audit-rows'), auditNewer: $('audit-newer'), auditOlder: $('audit-older'), exportCsv: $('export-csv'),
  exportJsonl: $('export-jsonl'),
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

/**
 * Runs a read now. While polling, through its poller (which restarts its schedule). While the live
 * channel is open the pushed pollers are stopped, and the channel carries the device list only
 * when it changes: a read a user's action calls for (the usage after a delete, the mesh switch, the
 * node picked) is made here, or it would wait for an unrelated push.
 */
function readNow(poller) {
  if (poller.active) poller.now();
  else if (state.api) Promise.resolve().then(() => poller.task()).catch(() => {});
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
  filters: { status: '', type: '', owner: '' },
  cursors: [''],           // the cursor of each page shown so far; the last is the current page's
  nextCursor: null,
  owners: new Map(),       // owner id → name, for the owner filter
  settings: null,          // {mesh_enabled, device_lifetime_seconds}
  renaming: null,          // the device the rename dialog is about
  expiring: null,          // the device the expiry dialog is about
  removingNode: null,      // the node the remove dialog is about
  nodes: [],
  diagNode: '',            // '' is this gateway's node
  auditBefore: [0],        // the `before` of each audit page shown so far
  auditNext: null,
  auditFilter: { action: '', actor: '' },
  auditSeq: 0,
  me: null,                // with a session: who the server says the caller is (GET /api/auth/session)
  users: [],               // admins: the tenant's users, as last listed
  removing: null,          // the user the remove dialog is about
  live: null,              // the LiveChannel while signed in
  liveMode: '',            // 'connecting', 'push' or 'polling' (also on #app as data-live)
  ageTimer: null,          // re-renders "12 seconds ago" every second
  adminTimer: null,        // a pending node diagnostics read after a mesh change
  linkUser: null,          // the person the config-link form is for
};

/** Whether the signed-in person is an admin: the stored role with a session, the token's claim otherwise. */
function isAdmin() {
  return state.me ? state.me.user?.role === 'admin' : state.claims.role === 'admin';
}

const devicePoller = new Poller(loadDevices, DEVICE_POLL_MS);
const licensePoller = new Poller(loadLicense, LICENSE_POLL_MS);
const adminPoller = new Poller(loadAdmin, ADMIN_POLL_MS);
const nodesPoller = new Poller(loadNodes, NODES_POLL_MS);
const auditPoller = new Poller(loadAudit, AUDIT_POLL_MS);
const policyPanel = new PolicyPanel();
/** Reads the device just created, while its result is shown: its status pill inside the dialog. */
const createdPoller = new Poller(loadCreated, DEVICE_POLL_MS);
const pollers = [devicePoller, licensePoller, adminPoller, nodesPoller, auditPoller, createdPoller];

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
  if (state.live) state.live.stop();
  state.live = null;
  setLiveMode('');
  clearInterval(state.ageTimer);
  clearTimeout(state.adminTimer);
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
  el.nodeRows.replaceChildren();
  el.auditRows.replaceChildren();
  message(el.notice, '');
  el.usage.replaceChildren();
  message(el.capNotice, '');
  message(el.meshOff, '');
  state.settings = null;
  state.filters = { status: '', type: '', owner: '' };
  el.filterStatus.value = '';
  el.filterType.value = '';
  el.filterOwner.value = '';
  state.cursors = [''];
  state.nextCursor = null;
  state.owners.clear();
  for (const o of [...el.filterOwner.options].slice(2)) o.remove();
  state.nodes = [];
  state.diagNode = '';
  state.auditBefore = [0];
  state.auditNext = null;
  state.me = null;
  state.users = [];
  el.tokenRows.replaceChildren();
  el.userRows.replaceChildren();
  hideCreatedToken();
  message(el.tokensError, '');
  message(el.usersError, '');
  show(el.users, false);
  show(el.migrate, false);
  el.migrateRows.replaceChildren();
  hideLinkForm();
  hideCreatedLink();
  for (const m of [addModal, deleteModal, renameModal, expiryModal, meshModal, nodeModal, enrollModal, reissueModal, removeModal]) m.close();
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
  show(el.admin, isAdmin());
  show(el.filterOwnerBox, isAdmin());
  if (typeof c.exp === 'number') {
    const left = c.exp * 1000 - Date.now();
    // setTimeout holds at most ~24.8 days.
    if (left < 2 ** 31 - 1) {
      state.expiryTimer = setTimeout(() => signOut('Your session has expired. Open a new login link or paste a new token.'), left);
    }
  }
  startUpdates();
  startAdmin();
  loadTokens();
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
  show(el.filterOwnerBox, isAdmin());
  startUpdates();
  startAdmin();
  loadTokens();
}

/** The admin parts of the page: diagnostics, nodes, the audit log, the users and the access policies. */
function startAdmin() {
  if (!isAdmin()) return;
  policyPanel.start(state.api?.token ?? null);
  adminPoller.start();
  nodesPoller.start();
  auditPoller.start();
  loadUsers();
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
  if (d.status === 'suspended') return ['suspended', 'Suspended'];
  if (d.status === 'expired') return ['expired', 'Expired'];
  if (d.online) return ['online', 'Online'];
  if (d.last_handshake_at) return ['offline', 'Offline'];
  return ['pending', 'Not yet connected'];
}


/** "Expires in 3 days" (the exact time on hover), "Expired …", or nothing. */
function expiryText(d, now) {
  if (!d.expires_at) return '';
  const t = new Date(d.expires_at).getTime();
  return t <= now ? `Expired ${formatAgo(d.expires_at, now)}` : `Expires ${formatAgo(d.expires_at, now)}`;
}

function createRow(d) {
  const parts = {
    icon: h('span', { class: 'device-icon' }),
    label: h('span', { class: 'device-label' }),
    typeName: h('span', { class: 'visually-hidden' }),
    dns: h('span', { class: 'device-dns mono' }),
    owner: h('span', { class: 'device-owner' }),
    // Status badges beside the name (suspended, expired; also where a stale config is flagged).
    badges: h('span', { class: 'badges' }),
    ips: h('ul', { class: 'ips mono' }),
    created: h('time', { class: 'when' }),
    expiry: h('span', { class: 'when expiry' }),
    seen: h('span', { class: 'when' }),
    pill: h('span', { class: 'pill' }),
    rename: h('button', { type: 'button', class: 'btn btn-small', onclick: () => openRename(d.id) }, 'Rename'),
    toggle: h('button', { type: 'button', class: 'btn btn-small', onclick: () => toggleSuspension(d.id) }, 'Suspend'),
    expire: h('button', { type: 'button', class: 'btn btn-small', onclick: () => openExpiry(d.id), hidden: !isAdmin() }, 'Expiry'),
    outdated: h('span', { class: 'badge-outdated', hidden: true }, 'Config outdated'),
    outdatedReason: h('span', { class: 'device-outdated-reason', hidden: true }),
    reissue: h('button', { type: 'button', class: 'btn btn-reissue', onclick: () => openReissue(d.id) }, 'Re-issue config'),
    remove: h('button', { type: 'button', class: 'btn btn-delete', onclick: () => openDelete(d.id) }, 'Delete'),
  };
  const row = h('tr', { dataset: { id: d.id } },
    h('td', { class: 'c-device' },
      h('div', { class: 'device-cell' }, parts.icon,
        h('div', { class: 'device-names' }, parts.label, parts.typeName, parts.dns, parts.owner, parts.badges, parts.outdatedReason))),
    h('td', { class: 'c-ips', dataset: { label: 'Mesh IPs' } }, parts.ips),
    h('td', { class: 'c-created', dataset: { label: 'Created' } }, h('div', { class: 'stack' }, parts.created, parts.expiry)),
    h('td', { class: 'c-seen', dataset: { label: 'Last handshake' } }, parts.seen),
    h('td', { class: 'c-status', dataset: { label: 'Status' } }, parts.pill),
    h('td', { class: 'c-actions' },
      h('div', { class: 'row-actions' }, parts.rename, parts.toggle, parts.reissue, parts.expire, parts.remove)));
  // The "Config outdated" badge sits with the status badges.
  parts.badges.append(parts.outdated);
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
  setText(parts.owner, isAdmin() && d.owner_name ? `Owner: ${d.owner_name}` : '');
  show(parts.owner, isAdmin() && Boolean(d.owner_name));
  row.dataset.slug = d.slug;
  row.dataset.status = d.status || 'active';
  const ips = Array.isArray(d.mesh_ips) ? d.mesh_ips : [];
  if (!old || (old.mesh_ips || []).join() !== ips.join()) {
    parts.ips.replaceChildren(...ips.map((ip) => h('li', {}, ip)));
  }
  parts.created.dateTime = d.created_at;
  setText(parts.created, formatDateTime(d.created_at));
  setText(parts.expiry, expiryText(d, now));
  parts.expiry.title = d.expires_at ? formatDateTime(d.expires_at) : '';
  show(parts.expiry, Boolean(d.expires_at));
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
  const badge = d.status === 'suspended' ? `Suspended${d.suspend_reason === 'admin' ? ' by an admin' : ''}` : (d.status === 'expired' ? 'Expired' : '');
  const shown = parts.badges.querySelector('.badge-status');
  if (badge && (!shown || shown.textContent !== badge)) {
    if (shown) shown.remove();
    parts.badges.prepend(h('span', { class: 'badge badge-status', dataset: { state: d.status } }, badge));
  } else if (!badge && shown) {
    shown.remove();
  }
  const active = (d.status || 'active') === 'active';
  setText(parts.toggle, active ? 'Suspend' : 'Resume');
  parts.toggle.setAttribute('aria-label', `${active ? 'Suspend' : 'Resume'} ${d.label}`);
  parts.rename.setAttribute('aria-label', `Rename ${d.label}`);
  parts.expire.setAttribute('aria-label', `Expiry of ${d.label}`);
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
    if (d.owner_user_id && d.owner_name && !state.owners.has(d.owner_user_id)) addOwnerOption(d.owner_user_id, d.owner_name);
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
  const filtered = Boolean(state.filters.status || state.filters.type || state.filters.owner) || state.cursors.length > 1;
  show(el.empty, none && !filtered);
  show(el.emptyFiltered, none && filtered);
  show(el.table, !none);
  const page = state.cursors.length;
  show(el.pager, page > 1 || Boolean(state.nextCursor));
  el.pagePrev.disabled = page <= 1;
  el.pageNext.disabled = !state.nextCursor;
  el.pageInfo.textContent = `Page ${page}`;
}

/** An owner in the owner filter (admins), labelled with the name the list gave. */
function addOwnerOption(id, name) {
  state.owners.set(id, name);
  if (id === (state.me?.user?.id || state.claims.sub)) return;   // "Me" already
  el.filterOwner.append(h('option', { value: id }, name));
}

async function loadDevices() {
  const api = state.api;
  if (!api) return;
  const seq = ++state.deviceSeq;
  const cursor = state.cursors[state.cursors.length - 1];
  try {
    const answer = await api.devices({ cursor, limit: PAGE_SIZE, ...state.filters });
    // An older answer that arrives after a newer one (or after sign-out) is dropped.
    if (api !== state.api || seq < state.renderedSeq) return;
    state.renderedSeq = seq;
    state.nextCursor = answer?.next_cursor || null;
    renderDevices(Array.isArray(answer?.devices) ? answer.devices : []);
    message(el.listError, '');
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.listError, `The device list could not be refreshed: ${error.message}`);
  }
}

/**
 * New filters or another page: the list starts over from what the server says. The live channel
 * carries the page it was opened for, so it is opened again for the new one.
 */
function reloadDevices() {
  state.renderedSeq = ++state.deviceSeq;
  if (state.live) state.live.setQuery(listQuery());
  if (state.liveMode !== 'push') devicePoller.now();
}

/** The query of the page of devices shown: its cursor, size and filters (the list's and the live channel's). */
function listQuery() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const cursor = state.cursors[state.cursors.length - 1];
  if (cursor) q.set('cursor', cursor);
  for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
  return `?${q}`;
}

function onFilterChange() {
  state.filters = { status: el.filterStatus.value, type: el.filterType.value, owner: el.filterOwner.value };
  state.cursors = [''];
  state.nextCursor = null;
  reloadDevices();
}
for (const select of [el.filterStatus, el.filterType, el.filterOwner]) select.addEventListener('change', onFilterChange);
el.pageNext.addEventListener('click', () => {
  if (!state.nextCursor) return;
  state.cursors.push(state.nextCursor);
  state.nextCursor = null;
  reloadDevices();
});
el.pagePrev.addEventListener('click', () => {
  if (state.cursors.length <= 1) return;
  state.cursors.pop();
  reloadDevices();
});

/** Suspends an active device, resumes a suspended one. */
async function toggleSuspension(id) {
  const entry = state.devices.get(id);
  const api = state.api;
  if (!entry || !api) return;
  const d = entry.data;
  const suspend = (d.status || 'active') === 'active';
  entry.parts.toggle.disabled = true;
  try {
    const after = suspend ? await api.suspend(id) : await api.resume(id);
    if (api !== state.api) return;
    updateRow(entry, after, Date.now());
    announce(suspend ? `Suspended ${d.label}: it has no mesh access until it is resumed.` : `Resumed ${d.label}.`);
    message(el.listError, '');
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.listError, `${d.label} could not be ${suspend ? 'suspended' : 'resumed'}: ${error.message}`);
  } finally {
    entry.parts.toggle.disabled = false;
    reloadDevices();
  }
}

// MARK: Live updates

function setLiveMode(mode) {
  state.liveMode = mode;
  if (mode) el.app.dataset.live = mode;
  else delete el.app.dataset.live;
}

/** What the live channel replaces; the nodes, the audit log and a new device's dialog keep their own reads. */
const pushedPollers = [devicePoller, licensePoller, adminPoller];

function startPolling() {
  devicePoller.start();
  licensePoller.start();
  if (isAdmin()) adminPoller.start();
}

/** Opens the live channel; polls while it cannot be opened. */
function startUpdates() {
  const api = state.api;
  clearInterval(state.ageTimer);
  state.ageTimer = setInterval(refreshAges, 1000);
  state.live = new LiveChannel(api.token, listQuery(), {
    onOpen: () => {
      if (api !== state.api) return;
      // A stream reopened after its lifetime changes nothing; the first one (or the first after
      // polling) reads what the channel does not carry.
      if (state.liveMode === 'push') return;
      for (const p of pushedPollers) p.stop();
      setLiveMode('push');
      loadLicense();
      if (isAdmin()) loadAdmin();
    },
    onEvent: (name, data) => {
      if (api === state.api) liveEvent(name, data);
    },
    onFallback: () => {
      if (api !== state.api || state.liveMode === 'polling') return;
      setLiveMode('polling');
      startPolling();
    },
    onRefused: (error) => {
      if (api !== state.api || handleAuthError(error)) return;
      setLiveMode('polling');
      startPolling();
    },
  });
  setLiveMode('connecting');
  state.live.start();
}

function liveEvent(name, data) {
  if (name === 'devices') {
    const before = [...state.devices.keys()].sort().join();
    // Any list read still in flight is older than this: it is dropped when it arrives.
    state.renderedSeq = ++state.deviceSeq;
    state.nextCursor = data?.next_cursor || null;
    renderDevices(Array.isArray(data?.devices) ? data.devices : []);
    message(el.listError, '');
    if ([...state.devices.keys()].sort().join() !== before) loadLicense();
  } else if (name === 'device') {
    const entry = data && state.devices.get(data.id);
    if (entry) updateRow(entry, data, Date.now());
  } else if (name === 'mesh') {
    // Node state follows the mesh: read it once after a burst of changes.
    if (isAdmin() && !state.adminTimer) {
      state.adminTimer = setTimeout(() => { state.adminTimer = null; loadAdmin(); }, 500);
    }
  }
}

/** "12 seconds ago" moves on without asking the server. */
function refreshAges() {
  if (document.hidden) return;
  const now = Date.now();
  for (const entry of state.devices.values()) if (entry.data) updateRow(entry, entry.data, now);
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
    : '');
  renderMeshSwitch(f.enabled !== false);
}

/** The mesh switch's state on the page: the message, the Add button, the admins' switch. */
function renderMeshSwitch(on) {
  message(el.meshOff, on ? '' : `The mesh is turned off for this tenant: no device can connect and no device can be added. ${
    isAdmin() ? 'Turn it on again under Mesh settings below.' : 'An admin can turn it on again.'}`);
  el.addButton.disabled = !on;
  el.addButton.title = on ? '' : 'The mesh is turned off for this tenant';
  if (!state.switching) el.meshSwitch.checked = on;
  el.admin.dataset.mesh = on ? 'on' : 'off';
}

async function loadLicense() {
  const api = state.api;
  if (!api) return;
  try {
    const [answer, settings] = await Promise.all([api.license(), api.settings()]);
    if (api !== state.api) return;
    if (answer && answer.mesh_vpn) renderLicense(answer.mesh_vpn);
    if (settings) renderSettings(settings);
  } catch (error) {
    if (api !== state.api) return;
    handleAuthError(error);
  }
}

// MARK: Mesh settings (admins)

function renderSettings(s) {
  state.settings = s;
  renderMeshSwitch(s.mesh_enabled !== false);
  const lifetime = String(s.device_lifetime_seconds || 0);
  if (![...el.lifetimeSelect.options].some((o) => o.value === lifetime)) {
    el.lifetimeSelect.append(h('option', { value: lifetime }, formatDuration(Number(lifetime))));
  }
  if (!state.savingLifetime) el.lifetimeSelect.value = lifetime;
  const def = el.deviceExpiry.options[0];
  def.textContent = s.device_lifetime_seconds ? `Tenant default (in ${formatDuration(s.device_lifetime_seconds)})` : 'Tenant default (never)';
}

async function saveSettings(patch) {
  const api = state.api;
  if (!api) return null;
  try {
    const after = await api.updateSettings(patch);
    if (api !== state.api) return null;
    renderSettings(after);
    message(el.settingsError, '');
    return after;
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return null;
    message(el.settingsError, `The settings could not be saved: ${error.message}`);
    return null;
  }
}

const meshModal = new Modal(el.meshDialog, {
  onClose: () => {
    // Cancelled: the switch shows the state the server has.
    if (state.settings) el.meshSwitch.checked = state.settings.mesh_enabled !== false;
  },
});

el.meshSwitch.addEventListener('change', async () => {
  if (!el.meshSwitch.checked) {
    // Turning the mesh off cuts every device: confirm first.
    el.meshSwitch.checked = true;
    meshModal.open(el.meshCancel);
    return;
  }
  state.switching = true;
  el.meshSwitch.disabled = true;
  const after = await saveSettings({ mesh_enabled: true });
  state.switching = false;
  el.meshSwitch.disabled = false;
  if (after) announce('The mesh is on: every device that is not suspended is back on every node.');
  readNow(licensePoller);
});

el.meshConfirm.addEventListener('click', async () => {
  el.meshConfirm.disabled = true;
  state.switching = true;
  const after = await saveSettings({ mesh_enabled: false });
  state.switching = false;
  el.meshConfirm.disabled = false;
  meshModal.close();
  if (after) announce('The mesh is off: no device has mesh access until it is turned on again.');
  el.meshSwitch.focus();
  readNow(licensePoller);
});

el.lifetimeSelect.addEventListener('change', async () => {
  state.savingLifetime = true;
  const seconds = Number(el.lifetimeSelect.value);
  const after = await saveSettings({ device_lifetime_seconds: seconds > 0 ? seconds : null });
  state.savingLifetime = false;
  if (after) announce(seconds > 0 ? `New devices now expire after ${formatDuration(seconds)}.` : 'New devices no longer expire by default.');
});

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
  const node = state.diagNode;
  // Nothing to show until the node list named one (a tenant without nodes has none).
  if (!node) {
    message(el.adminError, state.nodes.length === 0 && el.nodeRows.children.length > 0 ? 'This tenant has no node yet.' : '');
    return;
  }
  const [st, peers] = await Promise.allSettled([api.state(node), api.peers(node)]);
  if (api !== state.api || node !== state.diagNode) return;
  for (const r of [st, peers]) {
    if (r.status === 'rejected' && handleAuthError(r.reason)) return;
  }
  const refused = [st, peers].find((r) => r.status === 'rejected' && r.reason instanceof ApiError && r.reason.status === 403);
  if (refused) {
    // The stored role is not admin after all: this view is not for this user.
    for (const p of [adminPoller, nodesPoller, auditPoller]) p.stop();
    show(el.admin, false);
    return;
  }
  if (st.status === 'fulfilled') renderNodeState(st.value);
  else el.nodeState.replaceChildren();
  if (peers.status === 'fulfilled') renderPeers(peers.value);
  else el.peerRows.replaceChildren();
  const failed = [st, peers].find((r) => r.status === 'rejected');
  message(el.adminError, failed ? `The node could not be read: ${failed.reason.message}` : '');
}

/** Reads the node diagnostics now: the node list can name the node after the live channel opened. */
function refreshAdmin() {
  if (isAdmin()) readNow(adminPoller);
}

el.diagNode.addEventListener('change', () => {
  state.diagNode = el.diagNode.value;
  el.nodeState.replaceChildren();
  el.peerRows.replaceChildren();
  message(el.adminError, '');
  refreshAdmin();
});

// MARK: Nodes (admins)

function nodeRow(n, now) {
  const [pill, text] = n.online ? ['online', 'Online'] : ['offline', 'Offline'];
  const name = h('div', { class: 'device-names' },
    h('span', { class: 'device-label' }, n.name),
    h('span', { class: 'device-dns mono' }, n.dns_name),
    h('span', { class: 'badges' }, n.hub ? h('span', { class: 'badge badge-hub' }, 'Hub') : null));
  const remove = h('button', { type: 'button', class: 'btn btn-delete', 'aria-label': `Remove ${n.name}`, onclick: () => openRemoveNode(n.id) },
    'Remove');
  return h('tr', { dataset: { id: n.id, hub: n.hub ? 'true' : 'false', online: n.online ? 'true' : 'false' } },
    h('td', {}, name),
    h('td', { class: 'mono' }, (n.mesh_ips || []).join(', ')),
    h('td', { class: 'mono' }, n.endpoint || '—'),
    h('td', {}, n.backend || '—'),
    h('td', {}, n.last_sync_at ? formatAgo(n.last_sync_at, now) : '—'),
    h('td', {}, n.last_seen_at ? formatAgo(n.last_seen_at, now) : 'Never'),
    h('td', {}, h('span', { class: 'pill', dataset: { state: pill }, title: n.state_error || '' }, text),
      n.state_error ? h('span', { class: 'visually-hidden' }, `: ${n.state_error}`) : null),
    h('td', {}, remove));
}

/**
 * Brings a node's row up to date in place: the row, its cells and its Remove button stay the same
 * elements across polls, so a click or the keyboard focus is never lost to a re-render. Only a cell
 * whose content changed gets new children.
 */
function patchNodeRow(row, fresh) {
  for (const key of Object.keys(fresh.dataset)) {
    if (row.dataset[key] !== fresh.dataset[key]) row.dataset[key] = fresh.dataset[key];
  }
  const cells = row.cells;
  Array.from(fresh.cells).forEach((cell, i) => {
    if (!cells[i].isEqualNode(cell)) cells[i].replaceChildren(...cell.childNodes);
  });
}

function renderNodes(list) {
  state.nodes = list;
  const now = Date.now();
  const existing = new Map(Array.from(el.nodeRows.rows).filter((r) => r.dataset.id).map((r) => [r.dataset.id, r]));
  const rows = list.map((n) => {
    const fresh = nodeRow(n, now);
    const row = existing.get(n.id);
    if (!row) return fresh;
    patchNodeRow(row, fresh);
    return row;
  });
  if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: '8', class: 'muted' }, 'No nodes yet: create an enrollment token and start NodeApplier with it.')));
  const current = Array.from(el.nodeRows.rows);
  if (rows.length !== current.length || rows.some((r, i) => r !== current[i])) {
    // Moving a row that holds the focus would drop it: put it back afterwards.
    const focused = el.nodeRows.contains(document.activeElement) ? document.activeElement : null;
    el.nodeRows.replaceChildren(...rows);
    if (focused && el.nodeRows.contains(focused)) focused.focus();
  }
  // The diagnostics picker: every node of the tenant, the hub first (and chosen until someone picks).
  const keep = el.diagNode.value;
  const options = list.map((n) => h('option', { value: n.id }, `${n.name}${n.hub ? ' (hub)' : ''}`));
  const same = el.diagNode.options.length === options.length && options.every((o, i) => el.diagNode.options[i].value === o.value
    && el.diagNode.options[i].textContent === o.textContent);
  if (!same) {
    el.diagNode.replaceChildren(...options);
    el.diagNode.value = list.some((n) => n.id === keep) ? keep : (list[0]?.id || '');
  }
  el.diagNode.disabled = list.length === 0;
  if (el.diagNode.value !== state.diagNode) {
    state.diagNode = el.diagNode.value;
    el.nodeState.replaceChildren();
    el.peerRows.replaceChildren();
    refreshAdmin();
  }
}

async function loadNodes() {
  const api = state.api;
  if (!api) return;
  try {
    const answer = await api.nodes();
    if (api !== state.api) return;
    renderNodes(Array.isArray(answer?.nodes) ? answer.nodes : []);
    message(el.nodesError, '');
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.nodesError, `The nodes could not be read: ${error.message}`);
  }
}

const nodeModal = new Modal(el.nodeDialog, { onClose: () => { state.removingNode = null; } });

function openRemoveNode(id) {
  const n = state.nodes.find((x) => x.id === id);
  if (!n) return;
  state.removingNode = n;
  el.nodeDialogDesc.replaceChildren(h('strong', {}, n.name), ` (${n.dns_name}) leaves the mesh at once: every peer drops it, its bus access is revoked, and device configs that list it are marked outdated.${n.hub ? ' The next oldest node becomes the hub.' : ''}`);
  message(el.nodeDialogError, '');
  el.nodeConfirm.disabled = false;
  nodeModal.open(el.nodeCancel);
}

el.nodeConfirm.addEventListener('click', async () => {
  const n = state.removingNode;
  const api = state.api;
  if (!n || !api) return;
  el.nodeConfirm.disabled = true;
  try {
    await api.removeNode(n.id);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    if (!(error instanceof ApiError && error.status === 404)) {
      message(el.nodeDialogError, `The node could not be removed: ${error.message}`);
      el.nodeConfirm.disabled = false;
      return;
    }
  }
  nodeModal.close();
  announce(`Removed node ${n.name}.`);
  el.enroll.focus();
  nodesPoller.now();
});

const enrollModal = new Modal(el.enrollDialog, {
  onClose: () => {
    // The token leaves the page with the dialog.
    el.enrollToken.value = '';
    show(el.enrollResult, false);
    show(el.enrollForm, true);
  },
});

el.enroll.addEventListener('click', () => {
  el.enrollForm.reset();
  message(el.enrollError, '');
  el.enrollCreate.disabled = false;
  enrollModal.open(el.enrollTtl);
});

el.enrollForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const api = state.api;
  if (!api) return;
  const uses = Number(el.enrollUses.value);
  if (!Number.isInteger(uses) || uses < 1 || uses > 10000) {
    el.enrollUses.setAttribute('aria-invalid', 'true');
    message(el.enrollError, 'Give a whole number of nodes from 1 to 10000.');
    el.enrollUses.focus();
    return;
  }
  el.enrollUses.removeAttribute('aria-invalid');
  el.enrollCreate.disabled = true;
  try {
    const t = await api.enrollmentToken(Number(el.enrollTtl.value), uses);
    if (api !== state.api) return;
    el.enrollToken.value = t.token;
    el.enrollSummary.textContent = `Valid until ${formatDateTime(t.expires_at)} for ${t.uses} ${t.uses === 1 ? 'node' : 'nodes'}.`;
    show(el.enrollForm, false);
    show(el.enrollResult, true);
    el.enrollSummary.focus();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.enrollError, error.message);
    el.enrollCreate.disabled = false;
  }
});

// MARK: Audit log (admins, Team and Enterprise)

function auditRow(e, now) {
  return h('tr', { dataset: { id: String(e.id), action: e.action } },
    h('td', {}, h('time', { dateTime: e.at, title: formatDateTime(e.at) }, formatAgo(e.at, now))),
    h('td', { class: 'mono' }, e.actor),
    h('td', { class: 'mono' }, e.action),
    h('td', { class: 'audit-detail' }, e.detail));
}

async function loadAudit() {
  const api = state.api;
  if (!api) return;
  const seq = ++state.auditSeq;
  const before = state.auditBefore[state.auditBefore.length - 1];
  try {
    const page = await api.audit({ before: before || undefined, limit: AUDIT_PAGE_SIZE, ...state.auditFilter });
    if (api !== state.api || seq !== state.auditSeq) return;
    show(el.auditBody, true);
    message(el.auditNote, '');
    state.auditNext = page.next_before ?? null;
    const now = Date.now();
    const rows = (page.entries || []).map((e) => auditRow(e, now));
    if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: '4', class: 'muted' }, 'No entries.')));
    el.auditRows.replaceChildren(...rows);
    el.auditNewer.disabled = state.auditBefore.length <= 1;
    el.auditOlder.disabled = state.auditNext === null;
    message(el.auditError, '');
    // Only the newest page changes by itself.
    if (state.auditBefore.length > 1) auditPoller.stop();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    if (error instanceof ApiError && error.status === 403) {
      // The plan has no audit log (Team and above), or the stored role is not admin.
      auditPoller.stop();
      show(el.auditBody, false);
      const plan = state.license ? planName(state.license.plan) : 'this';
      message(el.auditNote, `The audit log comes with the Team and Enterprise plans; the ${plan} plan does not include it.`);
      return;
    }
    message(el.auditError, `The audit log could not be read: ${error.message}`);
  }
}

function restartAudit() {
  state.auditSeq++;
  auditPoller.stop();
  auditPoller.start();
}

el.auditFilters.addEventListener('submit', (event) => {
  event.preventDefault();
  state.auditFilter = { action: el.auditAction.value, actor: el.auditActor.value.trim() };
  state.auditBefore = [0];
  restartAudit();
});
el.auditOlder.addEventListener('click', () => {
  if (state.auditNext === null) return;
  state.auditBefore.push(state.auditNext);
  restartAudit();
});
el.auditNewer.addEventListener('click', () => {
  if (state.auditBefore.length <= 1) return;
  state.auditBefore.pop();
  restartAudit();
});

/** Downloads the (filtered) audit log; the server streams it, the page saves what arrives. */
async function exportAudit(format, button) {
  const api = state.api;
  if (!api) return;
  button.disabled = true;
  try {
    const response = await api.auditExport(format, state.auditFilter);
    const blob = await response.blob();
    if (api !== state.api) return;
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: `audit.${format}`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    announce(`The audit log was exported as ${format === 'csv' ? 'CSV' : 'JSON lines'}.`);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.auditError, `The export failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}
el.exportCsv.addEventListener('click', () => exportAudit('csv', el.exportCsv));
el.exportJsonl.addEventListener('click', () => exportAudit('jsonl', el.exportJsonl));

// MARK: Add device

const addModal = new Modal(el.addDialog, { onClose: resetAddDialog });

function selectedType() {
  const checked = el.addForm.querySelector('input[name="type"]:checked');
  return checked ? checked.value : 'other';
}

// Labels are counted as the server counts them: Unicode code points of the label as sent
// (docs/api.md), so "é" typed as e + a combining accent counts two.
function codePointCount(text) {
  return [...text].length;
}

function resetAddDialog() {
  state.created = null;
  createdPoller.stop();
  el.resultPill.dataset.state = 'pending';
  el.resultPill.textContent = 'Waiting for the first handshake';
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
    readNow(licensePoller);
    return;
  }
  if (error.code === 'invalid_argument' && error.detail.field === 'label') {
    el.labelInput.setAttribute('aria-invalid', 'true');
    message(el.labelError, error.message);
    el.labelInput.focus();
    return;
  }
  if (error.code === 'failed_precondition') readNow(licensePoller);   // the mesh may have been turned off
  el.addError.dataset.kind = error.code;
  message(el.addError, error.message);
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
  // The person holding the phone sees the pill turn green here, without closing the dialog.
  renderCreatedStatus({ status: d.status, online: false, last_handshake_at: null });
  createdPoller.start();
}

/** The status pill inside the add dialog. */
function renderCreatedStatus(d) {
  const [pill, text] = pillState(d);
  const label = pill === 'pending' ? 'Waiting for the first handshake' : (pill === 'online' ? 'Online: the device is connected' : text);
  if (el.resultPill.dataset.state !== pill) {
    el.resultPill.dataset.state = pill;
    if (pill === 'online' && state.created) announce(`${state.created.label} is online.`);
  }
  setText(el.resultPill, label);
}

async function loadCreated() {
  const api = state.api, created = state.created;
  if (!api || !created) return;
  try {
    const d = await api.device(created.id);
    if (api !== state.api || created !== state.created) return;
    renderCreatedStatus(d);
    if (d.online) createdPoller.stop();   // it stays green; the list keeps following it
  } catch (error) {
    if (api !== state.api) return;
    handleAuthError(error);
  }
}

el.addForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (state.busy || !state.api) return;
  if (state.rateUntil > Date.now()) { updateRateLimit(); return; }
  const label = el.labelInput.value.trim();
  let problem = '';
  if (!label) problem = 'Give the device a label.';
  else if (codePointCount(label) > MAX_LABEL) problem = `The label is too long: at most ${MAX_LABEL} characters.`;
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
  const lifetime = Number(el.deviceExpiry.value);
  const expiresAt = lifetime > 0 ? new Date(Date.now() + lifetime * 1000).toISOString() : undefined;
  try {
    const created = await api.createDevice(label, selectedType(), expiresAt);
    if (api !== state.api) return;
    showResult(created);
    announce(`Added ${created.label}.`);
    readNow(devicePoller);
    readNow(licensePoller);
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
  readNow(devicePoller);
  readNow(licensePoller);
});

// MARK: Rename

const renameModal = new Modal(el.renameDialog, { onClose: () => { state.renaming = null; } });

function openRename(id) {
  const entry = state.devices.get(id);
  if (!entry) return;
  state.renaming = entry.data;
  el.renameInput.value = entry.data.label;
  el.renameInput.removeAttribute('aria-invalid');
  message(el.renameError, '');
  el.renameSave.disabled = false;
  renameModal.open(el.renameInput);
  el.renameInput.select();
}

el.renameForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const d = state.renaming, api = state.api;
  if (!d || !api) return;
  const label = el.renameInput.value.trim();
  let problem = '';
  if (!label) problem = 'Give the device a label.';
  else if (codePointCount(label) > MAX_LABEL) problem = `The label is too long: at most ${MAX_LABEL} characters.`;
  if (problem) {
    el.renameInput.setAttribute('aria-invalid', 'true');
    message(el.renameError, problem);
    el.renameInput.focus();
    return;
  }
  el.renameSave.disabled = true;
  try {
    const after = await api.renameDevice(d.id, label);
    if (api !== state.api) return;
    const entry = state.devices.get(d.id);
    if (entry) updateRow(entry, after, Date.now());
    renameModal.close();
    announce(`Renamed to ${after.label}: now ${after.dns_name}.`);
    reloadDevices();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    el.renameInput.setAttribute('aria-invalid', 'true');
    message(el.renameError, error.message);
    el.renameSave.disabled = false;
    el.renameInput.focus();
  }
});

// MARK: Expiry (admins)

const expiryModal = new Modal(el.expiryDialog, { onClose: () => { state.expiring = null; } });

/** A Date as the value of a datetime-local input (local time, minutes). */
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function openExpiry(id) {
  const entry = state.devices.get(id);
  if (!entry) return;
  const d = entry.data;
  state.expiring = d;
  el.expiryDesc.replaceChildren(h('strong', {}, d.label), d.status === 'expired'
    ? ' has expired. A new expiry in the future brings it back at once.'
    : (d.expires_at ? ` expires ${formatDateTime(d.expires_at)}.` : ' never expires.'));
  el.expiryNever.checked = !d.expires_at;
  const base = d.expires_at && new Date(d.expires_at).getTime() > Date.now() ? new Date(d.expires_at) : new Date(Date.now() + 30 * 86400000);
  el.expiryInput.value = localInputValue(base);
  el.expiryInput.disabled = el.expiryNever.checked;
  el.expiryInput.removeAttribute('aria-invalid');
  message(el.expiryError, '');
  el.expirySave.disabled = false;
  expiryModal.open(el.expiryNever.checked ? el.expiryNever : el.expiryInput);
}

el.expiryNever.addEventListener('change', () => { el.expiryInput.disabled = el.expiryNever.checked; });

el.expiryForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const d = state.expiring, api = state.api;
  if (!d || !api) return;
  let at = null;
  if (!el.expiryNever.checked) {
    const t = new Date(el.expiryInput.value);
    if (!el.expiryInput.value || Number.isNaN(t.getTime())) {
      el.expiryInput.setAttribute('aria-invalid', 'true');
      message(el.expiryError, 'Give a date and time, or choose Never expires.');
      el.expiryInput.focus();
      return;
    }
    at = t.toISOString();
  }
  el.expirySave.disabled = true;
  try {
    const after = await api.setExpiry(d.id, at);
    if (api !== state.api) return;
    const entry = state.devices.get(d.id);
    if (entry) updateRow(entry, after, Date.now());
    expiryModal.close();
    announce(at ? `${after.label} now expires ${formatDateTime(at)}.` : `${after.label} no longer expires.`);
    reloadDevices();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    el.expiryInput.setAttribute('aria-invalid', 'true');
    message(el.expiryError, error.message);
    el.expirySave.disabled = false;
  }
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
  // Every active user is a choice of the owner filter, not only the owners the list has shown.
  for (const u of list) if (u.status === 'active' && !state.owners.has(u.id)) addOwnerOption(u.id, u.name);
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
  readNow(devicePoller);
  readNow(licensePoller);
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
  readNow(devicePoller);
});

// MARK: Pritunl migration

function openMigrate(event) {
  if (event) event.preventDefault();
  show(el.migrate, true);
  el.migrate.focus();
  loadMigration();
}
el.migrateLink.addEventListener('click', openMigrate);
el.migrateClose.addEventListener('click', () => { show(el.migrate, false); el.migrateLink.focus(); });
el.migrateAdd.addEventListener('click', () => {
  if (state.api) openAdd();
  else el.tokenInput.focus();
});

function migrationPerson(u) {
  return u.user.name || u.user.email || u.user.id;
}

function renderMigration(answer) {
  const p = answer?.pritunl;
  if (p && p.probe && p.probe.detected === true) {
    message(el.migrateDetected, `Pritunl answers at ${p.probe.url}.`);
  } else {
    message(el.migrateDetected, '');
  }
  const users = Array.isArray(answer?.users) ? answer.users : [];
  el.migrateRows.replaceChildren(...users.map((u) => {
    const person = migrationPerson(u);
    const devices = u.devices.length
      ? h('ul', { class: 'plain' }, ...u.devices.map((d) => h('li', { dataset: { id: d.id } },
        `${d.label} — ${d.online ? 'Online' : (d.last_handshake_at ? 'Offline' : 'Not yet connected')}`)))
      : h('span', { class: 'muted' }, 'None yet');
    const pending = u.pending_links.length
      ? h('p', { class: 'muted' }, `${u.pending_links.length} unused link${u.pending_links.length > 1 ? 's' : ''}, until ${formatDateTime(u.pending_links[u.pending_links.length - 1].expires_at)}`)
      : null;
    const linkButton = u.user.status === 'active'
      ? h('button', { type: 'button', class: 'btn btn-link-make', 'aria-label': `Make a config link for ${person}`, onclick: () => openLinkForm(u) }, 'Make link')
      : h('span', { class: 'muted' }, 'Invited: not signed in yet');
    const box = h('input', {
      type: 'checkbox', class: 'revoked-box', checked: u.pritunl_revoked, 'aria-label': `Pritunl access revoked for ${person}`,
      onchange: (e) => setRevoked(u, e.target.checked, e.target),
    });
    const when = u.pritunl_revoked && u.checked_at ? h('span', { class: 'muted' }, ` ${formatDateTime(u.checked_at)}`) : null;
    return h('tr', { dataset: { id: u.user.id, revoked: String(u.pritunl_revoked) } },
      h('td', {}, person, h('br'), h('span', { class: 'mono muted' }, u.user.email || '')),
      h('td', {}, devices),
      h('td', {}, linkButton, pending),
      h('td', {}, h('label', { class: 'check' }, box, ' Revoked'), when));
  }));
}

async function loadMigration() {
  const api = state.api;
  if (!api) { show(el.migrateAdmin, false); show(el.migrateNotAdmin, false); return; }
  if (!isAdmin()) { show(el.migrateAdmin, false); show(el.migrateNotAdmin, true); return; }
  show(el.migrateNotAdmin, false);
  try {
    const answer = await api.migration();
    if (api !== state.api) return;
    show(el.migrateAdmin, true);
    renderMigration(answer);
    el.migrate.dataset.loaded = 'true';
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    if (error instanceof ApiError && error.status === 403) { show(el.migrateAdmin, false); show(el.migrateNotAdmin, true); return; }
    show(el.migrateAdmin, true);
    message(el.migrateError, `The walk-through could not be read: ${error.message}`);
  }
}

async function setRevoked(u, revoked, box) {
  const api = state.api;
  if (!api) return;
  message(el.migrateError, '');
  box.disabled = true;
  try {
    const saved = await api.setPritunlRevoked(u.user.id, revoked);
    u.pritunl_revoked = saved.pritunl_revoked;
    box.checked = saved.pritunl_revoked;
    box.closest('tr').dataset.revoked = String(saved.pritunl_revoked);
    announce(`${migrationPerson(u)}: Pritunl access ${saved.pritunl_revoked ? 'marked revoked' : 'no longer marked revoked'}.`);
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    box.checked = u.pritunl_revoked;
    message(el.migrateError, error.message);
  } finally {
    box.disabled = false;
  }
}

function openLinkForm(u) {
  state.linkUser = u;
  hideCreatedLink();
  el.linkFor.textContent = `A one-time config link for ${migrationPerson(u)}.`;
  el.linkLabel.value = `${migrationPerson(u)}'s phone`.slice(0, 63);
  show(el.linkForm, true);
  el.linkLabel.focus();
}

function hideLinkForm() {
  state.linkUser = null;
  show(el.linkForm, false);
}

function hideCreatedLink() {
  el.linkURL.textContent = '';
  show(el.linkCreated, false);
}

el.linkCancel.addEventListener('click', () => { hideLinkForm(); el.migrate.focus(); });
el.linkForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const api = state.api, u = state.linkUser;
  if (!api || !u) return;
  message(el.migrateError, '');
  const label = el.linkLabel.value.trim();
  if (!label) { message(el.migrateError, 'Enter a name for the device.'); el.linkLabel.focus(); return; }
  try {
    const link = await api.createLink({ label, type: el.linkType.value, user_id: u.user.id, expires_in: Number(el.linkExpiry.value) });
    if (api !== state.api) return;
    hideLinkForm();
    el.linkPerson.textContent = migrationPerson(u);
    el.linkExpires.textContent = formatDateTime(link.expires_at);
    el.linkURL.textContent = link.url.startsWith('/') ? `${window.location.origin}${link.url}` : link.url;
    show(el.linkCreated, true);
    el.linkCopy.focus();
    loadMigration();
  } catch (error) {
    if (api !== state.api || handleAuthError(error)) return;
    message(el.migrateError, error.message);
  }
});
el.linkCopy.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(el.linkURL.textContent);
    announce('Link copied.');
  } catch {
    // Without clipboard access the link stays selectable on the page.
    window.getSelection()?.selectAllChildren(el.linkURL);
  }
});
el.linkDismiss.addEventListener('click', () => { hideCreatedLink(); el.migrate.focus(); });

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
