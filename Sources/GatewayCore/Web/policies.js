// Access policies on the /vpn/mesh page, for admins (docs/policies.md, docs/web.md): the tenant's
// rules, adding and deleting one, the DNS filter, and a dry run. The server validates everything;
// a refusal is shown with the field it names.
import { ApiError, request } from './api.js';
import { h, message, show } from './dom.js';

const $ = (id) => document.getElementById(id);

/** Splits "a, b  c" into ["a", "b", "c"]. */
function words(text) { return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean); }

/** The policy section: loads when an admin signs in, and follows every edit made here. */
export class PolicyPanel {
  constructor() {
    this.el = {
      section: $('policies'), summary: $('policy-summary'), error: $('policy-error'), rows: $('policy-rows'),
      empty: $('policy-empty'), form: $('policy-form'), formError: $('policy-form-error'), dns: $('policy-dns'),
      checkForm: $('policy-check-form'), checkResult: $('policy-check-result'),
    };
    this.token = null;
    this.el.form.addEventListener('submit', (e) => { e.preventDefault(); this.add(); });
    this.el.checkForm.addEventListener('submit', (e) => { e.preventDefault(); this.check(); });
    this.el.dns.addEventListener('change', () => this.setDNSFilter(this.el.dns.checked));
  }

  call(method, path, body) { return request(method, path, { token: this.token, body }); }

  /** Shows the section for an admin's token and loads the rules. */
  start(token) {
    this.token = token;
    show(this.el.section, true);
    this.load();
  }

  stop() {
    this.token = null;
    show(this.el.section, false);
    this.el.rows.replaceChildren();
  }

  async load() {
    try {
      this.render(await this.call('GET', '/api/mesh/policies'));
      message(this.el.error, '');
    } catch (error) {
      if (error instanceof ApiError && error.status === 403) { this.stop(); return; }
      message(this.el.error, error.message);
    }
  }

  render(p) {
    const cap = p.rule_cap === null ? 'no cap' : `at most ${p.rule_cap}`;
    this.el.summary.textContent = p.rules.length === 0
      ? `No rules: every device and node may reach every other (${cap} on this plan).`
      : `${p.rules.length} rule${p.rules.length === 1 ? '' : 's'} (${cap} on this plan), version ${p.version}. What no rule allows is refused.`;
    this.el.dns.checked = p.dns_filtered;
    this.el.rows.replaceChildren(...p.rules.map((r) => h('tr', { dataset: { ruleId: r.id } },
      h('td', { text: r.name }),
      h('td', { class: 'mono', text: r.sources.join(', ') }),
      h('td', { class: 'mono', text: r.destinations.join(', ') }),
      h('td', { class: 'mono', text: r.ports.length ? r.ports.join(', ') : 'all traffic' }),
      h('td', {}, h('button', { type: 'button', class: 'btn btn-quiet', 'aria-label': `Delete rule ${r.name}`, onclick: () => this.remove(r.id) }, 'Delete')))));
    show(this.el.empty, p.rules.length === 0);
  }

  /** A refusal with the field it names, e.g. "sources[1]: … ". */
  static describe(error) {
    const field = error instanceof ApiError && error.detail && error.detail.field;
    return field && !error.message.startsWith(field) ? `${field}: ${error.message}` : error.message;
  }

  async add() {
    const f = this.el.form.elements;
    const body = {
      name: f.namedItem('name').value,
      sources: words(f.namedItem('sources').value),
      destinations: words(f.namedItem('destinations').value),
      ports: words(f.namedItem('ports').value),
    };
    try {
      await this.call('POST', '/api/mesh/policies/rules', body);
      message(this.el.formError, '');
      this.el.form.reset();
      await this.load();
    } catch (error) {
      message(this.el.formError, PolicyPanel.describe(error));
    }
  }

  async remove(id) {
    try {
      await this.call('DELETE', `/api/mesh/policies/rules/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) message(this.el.error, error.message);
    }
    await this.load();
  }

  async setDNSFilter(on) {
    try {
      this.render(await this.call('PATCH', '/api/mesh/policies', { dns_filtered: on }));
    } catch (error) {
      message(this.el.error, error.message);
      await this.load();
    }
  }

  async check() {
    const f = this.el.checkForm.elements;
    const proto = f.namedItem('protocol').value;
    const body = { from: f.namedItem('from').value, to: f.namedItem('to').value, protocol: proto };
    if (proto !== 'icmp') body.port = Number(f.namedItem('port').value);
    try {
      const r = await this.call('POST', '/api/mesh/policies/check', body);
      this.el.checkResult.className = `alert ${r.allowed ? 'alert-info' : 'alert-warn'}`;
      message(this.el.checkResult, `${r.allowed ? 'Allowed' : 'Refused'}: ${r.reason}.`);
    } catch (error) {
      this.el.checkResult.className = 'alert alert-error';
      message(this.el.checkResult, PolicyPanel.describe(error));
    }
  }
}
