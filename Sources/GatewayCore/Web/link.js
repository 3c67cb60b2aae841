// The one-time config link page (/vpn/mesh/link.html#qml_…): docs/pritunl.md. The token rides in the
// fragment, which browsers never send to a server or in a Referer; the page takes it out of the
// address bar at once and sends it only in the body of one POST, after a click (so that a link
// preview that fetches the page does not use the link up). The device and its key are made by
// that request; the answer is shown once.
import { ApiError, request } from './api.js';
import { configFileName, message, show, svgDataURL } from './dom.js';

const $ = (id) => document.getElementById(id);
const token = decodeURIComponent(window.location.hash.replace(/^#/, ''));
history.replaceState(null, '', window.location.pathname);

function refuse(text) {
  show($('link-start'), false);
  message($('link-error'), text);
  $('link-title').focus();
}

function render(d) {
  show($('link-start'), false);
  $('link-summary').textContent = `${d.label} is ready as ${d.dns_name} (${(d.mesh_ips || []).join(', ')}).`;
  $('link-key-warning').textContent = d.private_key_notice || '';
  if (d.qr_svg) {
    $('link-qr-image').src = svgDataURL(d.qr_svg);
    $('link-qr-image').alt = `QR code with the WireGuard configuration for ${d.label}`;
  } else {
    show($('link-qr-figure'), false);
    message($('link-qr-unavailable'), 'This configuration is too large for a QR code. Download the .conf file and import it into the WireGuard app instead.');
  }
  const a = $('link-download');
  a.href = URL.createObjectURL(new Blob([d.config], { type: 'application/octet-stream' }));
  a.download = configFileName(d.slug);
  a.textContent = `Download ${a.download}`;
  $('link-config').textContent = d.config;
  show($('link-result'), true);
  $('link-summary').focus();
}

async function open() {
  const button = $('link-open');
  button.disabled = true;
  try {
    render(await request('POST', '/api/mesh/links/open', { body: { token } }));
  } catch (error) {
    if (error instanceof ApiError && error.status === 410) refuse(`${error.message}`);
    else if (error instanceof ApiError && error.status === 404) refuse('This link is not valid. Check that you copied all of it, or ask for a new one.');
    else { message($('link-error'), error.message); button.disabled = false; }
  }
}

if (!token) {
  refuse('This link holds no token. Open the whole link you were sent.');
} else {
  show($('link-start'), true);
  $('link-open').addEventListener('click', open);
}
// A link pasted into this tab again (or another one) only changes the fragment of this same
// address, which does not load the page again: load it, so the new token is read and hidden.
window.addEventListener('hashchange', () => {
  if (window.location.hash.length > 1) window.location.reload();
});
document.documentElement.dataset.ready = 'true';
