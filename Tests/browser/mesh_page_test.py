#!/usr/bin/env python3
"""The /vpn/mesh page in a real browser, against the real gateway, services and a real node.

Run by scripts/test-browser.sh (make test runs it through scripts/test-extra.sh). It starts
`.build/debug/meshlab` (control plane, one node with NodeApplier and wireguard-go in a network
namespace, two Gateway processes; see Sources/meshlab) and drives headless Chromium with selenium:

  1. login link: the token leaves the address bar, lands in sessionStorage; banner, usage, headers
  2. add a laptop through the dialog (keyboard only): focus trap, Esc, the QR code decoded with
     rsvg-convert + zbarimg equals the downloaded .conf byte for byte; the label is shown as text
  3. that .conf brought up with wireguard-go in a namespace: traffic to the node, and the status
     pill turns green after the node's handshake report (how fast is a measurement, reported in
     the summary and by scripts/bench-latency.sh; no step asserts on time)
  4. the rate limit (5 creations per user and window): the message with the time to wait
  5. log out, sign in by pasting an admin token: node state and per-peer stats
  6. delete with the confirmation step; the node drops the peer
     then the Pritunl walk-through (admin): every user with devices, the "Pritunl access revoked"
     item saved and still ticked after a reload, a one-time config link made, opened in another tab
     without a session (config and QR code once), and the same link refused the second time
  7. a tenant with 16 nodes: no QR code, the reason, and the .conf download with every node
  8. a Free tenant: 3 devices, then the cap-reached message (plain gateway at /vpn/mesh, no banner;
     signed in by a login link opened in the same tab, without a reload)
  9. phone width: no horizontal scrolling, cards instead of a table, the dialog fits
 10. sign-in through the OpenID Connect provider (a real provider process): its login page, back on
     the device list with an HttpOnly, Secure, SameSite=Strict session cookie and no token in the
     page; a device added with the session; an API token made, shown once, used, revoked; the users
     list for an admin; a broken ID token refused with its reason; log out ends the session
 11. colour contrast (WCAG AA) measured in the page in each state, labels, visible focus, no
     console errors, no token in a URL or in the gateway logs

Every wait has a generous deadline (the machine may be busy with other tests); a deadline bounds a
regression, it does not measure speed. Screenshots of every step, the decoded QR, the download and
a summary go to the output folder (default .test-output/browser). Exits non-zero on any failure;
it never skips.
"""
import argparse
import base64
import json
import os
import pathlib
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as exc:  # pragma: no cover - reported loudly
    print(f"browser test: selenium is missing ({exc}); run scripts/deps.sh", file=sys.stderr)
    sys.exit(2)


class Failed(Exception):
    """A step could not go on."""


class Results:
    """Counts checks; every failure is printed at once and again in the summary."""

    def __init__(self):
        self.passed = 0
        self.failures = []
        self.measurements = {}
        self.step = ""

    def check(self, condition, what):
        if condition:
            self.passed += 1
        else:
            self.failures.append(f"[{self.step}] {what}")
            print(f"  FAIL {what}", flush=True)
        return condition

    def require(self, condition, what):
        if not self.check(condition, what):
            raise Failed(what)


class Lab:
    """The meshlab process: a JSON line when ready, then one JSON answer per command."""

    def __init__(self, binary, out, env):
        self.log = open(out / "meshlab.log", "w")
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"meshlab did not answer within {timeout} s (log: {self.log.name})")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise Failed(f"meshlab exited (status {self.proc.poll()}); log: {self.log.name}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def ready(self, timeout=240):
        event = self._next(timeout)
        if event.get("event") != "ready":
            raise Failed(f"meshlab could not start: {event.get('error', event)} (log: {self.log.name})")
        return event

    def call(self, command, timeout=60):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self._next(timeout)
        if not answer.get("ok"):
            raise Failed(f"meshlab {command}: {answer.get('error')}")
        return answer

    def close(self):
        """Stops the lab; returns its exit status (non-zero when a service, node or gateway
        crashed during the test, or did not stop cleanly)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# The contrast audit, run in the page: every visible element with its own text, its colour against
# the background it is drawn on (walking up through transparent ancestors, blending translucent
# ones), against WCAG AA: 4.5:1, or 3:1 for large text (24px, or 18.66px bold). Disabled controls
# are exempt, as WCAG says.
CONTRAST_AUDIT = r"""
function parse(c) {
  const m = c.match(/rgba?\(([^)]+)\)/);
  if (!m) return [0, 0, 0, 0];
  const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}
function blend(top, bottom) {
  const a = top[3];
  return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
}
function background(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const bg = parse(getComputedStyle(e).backgroundColor);
    if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
    if (e.tagName === 'DIALOG' && e.open) break;
  }
  let color = [255, 255, 255, 1];
  for (let i = layers.length - 1; i >= 0; i--) color = blend(layers[i], color);
  return color;
}
function luminance(c) {
  const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
const failures = [];
let checked = 0;
const root = arguments[0] ? document.querySelector(arguments[0]) : document.body;
for (const el of root.querySelectorAll('*')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const rect = el.getBoundingClientRect();
  if (rect.width === 0 || rect.height === 0) continue;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || style.display === 'none') continue;
  if (el.closest(':disabled, [aria-disabled="true"], .visually-hidden, .sprite')) continue;
  if (el.closest('dialog') && !el.closest('dialog').open) continue;
  const fg = blend(parse(style.color), background(el));
  const bg = background(el);
  const l1 = luminance(fg), l2 = luminance(bg);
  const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
  const need = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
  checked++;
  if (ratio < need) failures.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${el.className} "${el.textContent.trim().slice(0, 40)}" ${ratio.toFixed(2)} < ${need}`);
}
return {checked, failures};
"""

# Every form control has an accessible name.
LABEL_AUDIT = r"""
const missing = [];
for (const el of document.querySelectorAll('input, textarea, select, button')) {
  const named = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
    || (el.tagName === 'BUTTON' && el.textContent.trim());
  if (!named) missing.push(el.outerHTML.slice(0, 80));
}
return missing;
"""


class MeshPageTest:
    def __init__(self, args):
        self.args = args
        self.out = pathlib.Path(args.out).resolve()
        self.shots = self.out / "screenshots"
        self.downloads = self.out / "downloads"
        for d in (self.shots, self.downloads):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)
        self.r = Results()
        self.shot_number = 0
        self.driver = None
        self.lab = None
        self.info = None

    # MARK: plumbing

    def screenshot(self, name):
        self.shot_number += 1
        path = self.shots / f"{self.shot_number:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition, what, timeout=60):
        try:
            # Rows are replaced as the lists refresh: an element gone between two reads is just read again.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition())
        except TimeoutException:
            raise Failed(f"timed out after {timeout} s waiting for {what}")

    def by_id(self, element_id):
        return self.driver.find_element(By.ID, element_id)

    def visible(self, element_id):
        return self.by_id(element_id).is_displayed()

    def text(self, element_id):
        return self.js("return document.getElementById(arguments[0]).textContent.replace(/\\s+/g, ' ').trim()", element_id)

    def keys(self, *keys):
        ActionChains(self.driver).send_keys(*keys).perform()

    def active(self):
        return self.js("const a = document.activeElement; return a ? (a.id || a.value || a.tagName) : null")

    def dialog_holds_focus(self, dialog_id):
        return self.js("return document.getElementById(arguments[0]).contains(document.activeElement)", dialog_id)

    def start_browser(self):
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                    "--force-device-scale-factor=1", "--lang=en-US", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
                    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
                    # Nothing but this machine's loopback: no name resolves to anything else.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]:
            options.add_argument(arg)
        options.add_experimental_option("prefs", {
            "download.default_directory": str(self.downloads), "download.prompt_for_download": False,
            "safebrowsing.enabled": False})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=chromedriver, log_output=str(self.out / "chromedriver.log"))
        try:
            self.driver = webdriver.Chrome(options=options, service=service)
        except WebDriverException as exc:
            raise Failed(f"Chromium could not start ({chromium}, {chromedriver}): {exc.msg or exc}")
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(self.downloads)})
        version = self.driver.capabilities.get("browserVersion", "?")
        print(f"browser test: Chromium {version}", flush=True)

    def open_page(self, url):
        self.driver.get(url)
        self.wait(lambda: self.js("return document.documentElement.dataset.ready === 'true'"), "the page to start")

    def audit(self, name, scope=None):
        result = self.js(CONTRAST_AUDIT, scope)
        self.r.check(result["checked"] > 0, f"contrast audit '{name}' found text to check")
        self.r.check(not result["failures"], f"contrast (WCAG AA) in '{name}': {result['failures']}")
        self.r.measurements.setdefault("contrast_elements_checked", 0)
        self.r.measurements["contrast_elements_checked"] += result["checked"]

    def usage(self):
        return self.text("usage")

    def rows(self):
        return self.driver.find_elements(By.CSS_SELECTOR, "#device-rows tr")

    def add_device(self, label, type_value, expect_success=True):
        """Adds a device through the dialog, by keyboard. Returns the result of the dialog."""
        self.by_id("add-device").click()
        self.wait(lambda: self.js("return document.getElementById('add-dialog').open"), "the add dialog")
        self.wait(lambda: self.active() in ("iphone",), "focus on the first device type")
        # Arrow keys move through the radio group.
        order = ["iphone", "android", "laptop", "other"]
        for _ in range(order.index(type_value)):
            self.keys(Keys.ARROW_RIGHT)
        self.r.check(self.active() == type_value, f"arrow keys select {type_value}")
        self.keys(Keys.TAB)
        self.r.check(self.active() == "device-label", "Tab moves from the types to the label")
        self.keys(label)
        started = time.monotonic()
        self.keys(Keys.ENTER)
        if expect_success:
            self.wait(lambda: self.visible("add-result"), f"the result for {label!r}")
            return time.monotonic() - started
        self.wait(lambda: self.visible("add-error"), f"the refusal for {label!r}")
        return None

    def close_dialog_with_done(self):
        self.by_id("result-done").click()
        self.wait(lambda: not self.js("return document.getElementById('add-dialog').open"), "the dialog to close")

    # MARK: steps

    def step(self, name, fn):
        self.r.step = name
        started = time.monotonic()
        print(f"browser test: {name}", flush=True)
        try:
            fn()
        except Failed as exc:
            self.r.failures.append(f"[{name}] {exc}")
            print(f"  FAIL {exc}", flush=True)
            self.failure_screenshot(name)
            raise
        except Exception as exc:  # an unexpected error is a failure too, with its evidence
            self.r.failures.append(f"[{name}] {type(exc).__name__}: {exc}")
            print(f"  FAIL {type(exc).__name__}: {exc}", flush=True)
            print("".join(traceback.format_tb(exc.__traceback__)), flush=True)
            self.failure_screenshot(name)
            raise Failed(str(exc))
        finally:
            self.r.measurements.setdefault("step_seconds", {})[name] = round(time.monotonic() - started, 2)

    def failure_screenshot(self, name):
        if self.driver:
            try:
                path = self.screenshot(f"FAILED-{name}")
                print(f"  screenshot: {path}", flush=True)
            except WebDriverException:
                pass

    def sign_in_with_link(self):
        gw, token = self.info["gateway"], self.info["tokens"]["owner"]
        self.open_page(f"{gw}/vpn/mesh/#token={token}")
        self.wait(lambda: self.visible("app"), "the signed-in page")
        self.wait(lambda: self.live_mode() == "push", "the live channel to open", 20)
        url = self.driver.current_url
        self.r.check("token" not in url and "#" not in url, f"the token is stripped from the address bar ({url})")
        self.r.check(token not in self.js("return JSON.stringify(history.state) + location.href"), "no token in history state")
        self.r.check(self.js("return sessionStorage.getItem('quazzar.mesh.token')") == token, "the token is in sessionStorage")
        self.r.check(self.js("return localStorage.length") == 0 and self.js("return document.cookie") == "",
                     "nothing in localStorage or cookies")
        banner = self.text("pritunl-banner")
        self.r.check(banner == "Mesh VPN is the recommended replacement. Migrate when you're ready →", f"Pritunl banner text: {banner!r}")
        self.wait(lambda: self.usage() != "", "plan usage")
        self.r.check(self.usage() == "0 of 20 devices — Pro", f"usage: {self.usage()!r}")
        self.r.check(self.visible("empty"), "the empty state is shown")
        self.r.check(not self.visible("admin"), "owners see no admin diagnostics")
        self.r.check(self.text("account-who").startswith("Signed in as Owner"), f"account: {self.text('account-who')!r}")
        # The page's headers (a plain request, as any client would see them).
        with urllib.request.urlopen(f"{gw}/vpn/mesh/") as response:
            csp = response.headers.get("Content-Security-Policy", "")
            self.r.check("script-src 'self'" in csp and "default-src 'none'" in csp, f"CSP header: {csp!r}")
            self.r.check(response.headers.get("Referrer-Policy") == "no-referrer", "Referrer-Policy: no-referrer")
            self.r.check(response.headers.get("X-Content-Type-Options") == "nosniff", "nosniff")
        with urllib.request.urlopen(f"{gw}/vpn/mesh/app.js") as response:
            self.r.check(response.headers.get("Content-Type", "").startswith("text/javascript"), "app.js is served as JavaScript")
        # The migration banner's link opens the migration steps.
        self.by_id("migrate-link").click()
        self.r.check(self.visible("migrate") and self.active() == "migrate", "the banner link opens the migration steps")
        self.screenshot("signed-in-with-banner-and-migration-steps")
        self.by_id("migrate-close").click()
        self.r.check(not self.visible("migrate"), "the migration steps close")
        # Keyboard focus is visible: Tab from the top reaches the skip link, then the Add button.
        self.js("document.activeElement.blur(); window.scrollTo(0, 0)")
        self.js("document.body.focus()")
        focus_styles = []
        for _ in range(12):
            self.keys(Keys.TAB)
            style = self.js("const s = getComputedStyle(document.activeElement); "
                            "return [document.activeElement.id || document.activeElement.textContent.trim(), s.outlineStyle, s.outlineWidth]")
            focus_styles.append(style)
            if style[0] == "add-device":
                break
        self.r.check(any(s[0] == "add-device" for s in focus_styles), f"Tab reaches Add device: {focus_styles}")
        self.r.check(all(s[1] != "none" and float(s[2].rstrip("px") or 0) >= 2 for s in focus_styles),
                     f"every focused control has a visible outline: {focus_styles}")
        self.r.check(not self.js(LABEL_AUDIT), f"every control has a label: {self.js(LABEL_AUDIT)}")
        self.audit("signed in, empty list")

    def add_laptop_and_check_qr(self):
        label = "Zoë's <img src=x onerror=window.__xss=1> laptop"
        self.label = label
        # Esc closes the dialog and gives focus back to the button that opened it.
        self.by_id("add-device").click()
        self.wait(lambda: self.js("return document.getElementById('add-dialog').open"), "the add dialog")
        self.r.check(self.active() == "iphone", f"the dialog focuses the device type first ({self.active()})")
        # The focus trap: Tab and Shift+Tab never leave the dialog.
        trapped = True
        for _ in range(8):
            self.keys(Keys.TAB)
            trapped &= self.dialog_holds_focus("add-dialog")
        for _ in range(8):
            self.keys(Keys.SHIFT, Keys.TAB)
            trapped &= self.dialog_holds_focus("add-dialog")
        self.r.check(trapped, "Tab and Shift+Tab stay inside the dialog")
        self.r.check(not self.js(LABEL_AUDIT), "every dialog control has a label")
        self.screenshot("add-dialog")
        self.audit("add dialog", "#add-dialog")
        self.keys(Keys.ESCAPE)
        self.wait(lambda: not self.js("return document.getElementById('add-dialog').open"), "Esc to close the dialog")
        self.r.check(self.active() == "add-device", "focus returns to Add device after Esc")

        self.first_created_at = time.time()   # the user's first creation opens the rate-limit window
        took = self.add_device(label, "laptop")
        self.r.measurements["generate_to_qr_seconds"] = round(took, 3)
        self.screenshot("qr-code-and-download")
        self.audit("result with QR", "#add-dialog")
        warning = self.text("key-warning")
        self.r.check(warning.startswith("Shown only once.") and "will not be shown again" in warning, f"private key warning: {warning!r}")

        # The QR code: an <img> from a data: URL, decoded the way a phone would read it.
        src = self.by_id("qr-image").get_attribute("src") or ""
        self.r.require(src.startswith("data:image/svg+xml;base64,"), f"the QR code is an image from a data: URL ({src[:40]})")
        svg = base64.b64decode(src.split(",", 1)[1])
        (self.out / "qr.svg").write_bytes(svg)
        subprocess.run(["rsvg-convert", "--format=png", "--output", str(self.out / "qr.png"), str(self.out / "qr.svg")], check=True)
        decoded = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(self.out / "qr.png")], capture_output=True)
        self.r.require(decoded.returncode == 0, f"zbarimg decodes the QR code (exit {decoded.returncode}: {decoded.stderr!r})")
        qr_text = decoded.stdout

        # The .conf download, as the browser saves it.
        link = self.by_id("conf-download")
        filename = link.get_attribute("download")
        link.click()
        target = self.downloads / filename
        self.wait(lambda: target.exists() and not (self.downloads / (filename + ".crdownload")).exists(), f"the download {filename}")
        conf = target.read_bytes()
        self.conf_path = target
        # Line for line the same config; only the comment naming the device is ASCII in the QR code, so
        # that scanners which guess a character set (there is no ECI marker) show it right.
        qr_lines, conf_lines = qr_text.split(b"\n"), conf.split(b"\n")
        self.r.check(qr_lines[1:] == conf_lines[1:], f"the QR code holds the downloaded .conf line for line ({len(qr_text)} vs {len(conf)} bytes)")
        self.r.check(all(b < 0x80 for b in qr_text), "the QR code is ASCII")
        self.r.check(qr_lines[0].startswith(b"# Quazzar Mesh: ") and qr_lines[0] != conf_lines[0] if any(b >= 0x80 for b in label.encode()) else qr_lines[0] == conf_lines[0],
                     f"the QR code's comment is the ASCII form of the label ({qr_lines[0]!r})")
        self.r.check(conf.startswith(b"# Quazzar Mesh: ") and b"[Interface]" in conf and b"PrivateKey = " in conf, "the .conf is a WireGuard config")
        self.r.check(label.encode() in conf, "the config names the device with its label, byte for byte")
        shown = self.js("return document.getElementById('config-text').textContent")
        self.r.check(shown.encode() == conf, "the config text shown equals the download")
        self.r.measurements["config_bytes"] = len(conf)
        # The device's live status, next to the QR code, for whoever holds the phone.
        pill = self.by_id("result-pill")
        self.r.check(pill.get_attribute("data-state") == "pending" and pill.text == "Waiting for the first handshake",
                     f"the dialog's status pill waits for the first handshake: {pill.text!r}")

        # The new row (behind the open dialog): every field, and the label shown as text.
        self.wait(lambda: len(self.rows()) == 1, "the new device in the list")
        row = self.rows()[0]
        self.device_id = row.get_attribute("data-id")
        slug = row.get_attribute("data-slug")
        self.slug = slug
        self.r.check(row.find_element(By.CSS_SELECTOR, ".device-label").text == label, "the label is shown exactly as typed")
        self.r.check(not row.find_elements(By.TAG_NAME, "img") and self.js("return window.__xss") is None,
                     "markup in a label stays text")
        self.r.check(row.find_element(By.CSS_SELECTOR, ".device-dns").text == f"{slug}.quazzar.mesh", "DNS name <slug>.quazzar.mesh")
        self.r.check(slug.startswith("zoes-img-src-x"), f"slug from the label: {slug}")
        expected_name = slug[:15].rstrip("-") + ".conf"
        self.r.check(filename == expected_name, f"download file name from the slug: {filename} (expected {expected_name})")
        icon = row.find_element(By.CSS_SELECTOR, ".device-icon use").get_attribute("href")
        self.r.check(icon == "#icon-laptop", f"laptop icon ({icon})")
        ips = [li.text for li in row.find_elements(By.CSS_SELECTOR, ".ips li")]
        self.r.check(len(ips) == 2 and "." in ips[0] and ":" in ips[1], f"mesh IPs shown: {ips}")
        self.r.check(row.find_element(By.CSS_SELECTOR, ".c-created time").get_attribute("datetime"), "created time")
        self.r.check(row.find_element(By.CSS_SELECTOR, ".c-seen").text == "Never", "last handshake: Never")
        pill = row.find_element(By.CSS_SELECTOR, ".pill")
        self.r.check(pill.get_attribute("data-state") == "pending" and pill.text == "Not yet connected", f"pill: {pill.text}")
        self.wait(lambda: self.usage() == "1 of 20 devices — Pro", "usage 1 of 20")

    def bring_up_and_turn_green(self):
        # The config is brought up while the dialog is still open (the seed's step 4: the person
        # holding the phone watches the pill). Record when each pill turns green, in the page.
        self.r.require(self.js("return document.getElementById('add-dialog').open"), "the dialog is still open")
        self.js("""
            window.__greenAt = null;
            window.__dialogGreenAt = null;
            const pill = document.querySelector(`tr[data-id="${arguments[0]}"] .pill`);
            new MutationObserver(() => {
              if (pill.dataset.state === 'online' && window.__greenAt === null) window.__greenAt = Date.now();
            }).observe(pill, {attributes: true, attributeFilter: ['data-state']});
            const inDialog = document.getElementById('result-pill');
            new MutationObserver(() => {
              if (inDialog.dataset.state === 'online' && window.__dialogGreenAt === null) window.__dialogGreenAt = Date.now();
            }).observe(inDialog, {attributes: true, attributeFilter: ['data-state']});
        """, self.device_id)
        up = self.lab.call(f"device-up {self.conf_path}", timeout=120)
        self.device_key = up["public_key"]
        self.r.check(up["ping_ok"], "the device reaches the node's mesh address through the tunnel")
        report = self.lab.call(f"handshake-report {up['public_key']} 90", timeout=120)
        self.wait(lambda: self.js("return window.__dialogGreenAt") is not None, "the dialog's status pill to turn green")
        self.r.check(self.js("return document.getElementById('add-dialog').open"), "the dialog stayed open")
        dialog_at = self.js("return window.__dialogGreenAt")
        # How fast is a measurement (docs/web.md, docs/benchmarks.md), not a check.
        self.r.measurements["dialog_pill_green_after_report_seconds"] = round((dialog_at - report["report_at_ms"]) / 1000, 3)
        self.r.check(self.text("result-pill") == "Online: the device is connected", f"dialog pill text: {self.text('result-pill')!r}")
        self.screenshot("device-online-in-dialog")
        self.audit("dialog with the device online", "#add-dialog")
        self.wait(lambda: self.js("return window.__greenAt") is not None, "the status pill to turn green")
        green_at = self.js("return window.__greenAt")
        # How fast is a measurement (scripts/bench-latency.sh, docs/benchmarks.md), not a check.
        self.r.measurements["pill_green_after_report_seconds"] = round((green_at - report["report_at_ms"]) / 1000, 3)
        self.r.measurements["pill_green_after_handshake_seconds"] = round((green_at - report["handshake_at_ms"]) / 1000, 3)
        self.r.measurements["pill_green_after_device_up_seconds"] = round((green_at - up["up_at_ms"]) / 1000, 3)

        self.close_dialog_with_done()
        self.r.check(self.js("return document.getElementById('qr-image').getAttribute('src')") is None
                     and self.text("config-text") == "" and self.by_id("conf-download").get_attribute("href").endswith("#"),
                     "closing the dialog removes the QR code, the config and its download (the private key) from the page")
        self.r.check(self.active() == "add-device", "focus returns to Add device")
        pill = self.driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{self.device_id}"] .pill')
        self.r.check(pill.text == "Online", f"pill text: {pill.text}")
        seen = self.driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{self.device_id}"] .c-seen').text
        self.r.check(seen != "Never" and seen != "", f"last handshake shown: {seen!r}")
        self.r.check("is online" in self.text("notice"), f"the change is announced: {self.text('notice')!r}")
        self.screenshot("device-online")
        self.audit("device online")

    def rate_limit(self):
        limit = self.info["rate_limit"]
        window = self.info["rate_window_seconds"]
        # The laptop of the step before was the user's first creation of the window.
        first_created = self.first_created_at
        for i in range(limit - 1):
            self.add_device(f"Rate test {i + 1}", ["iphone", "android", "other", "laptop"][i % 4])
            self.close_dialog_with_done()
        self.wait(lambda: self.usage() == f"{limit} of 20 devices — Pro", f"usage {limit} of 20")
        self.add_device("One too many", "android", expect_success=False)
        error = self.by_id("add-error")
        kind = error.get_attribute("data-kind")
        message = self.text("add-error")
        self.r.check(kind == "rate_limited", f"the refusal is the rate limit ({kind}: {message})")
        match = re.search(r"you can add another in (?:(\d+) min)?\s*(?:(\d+) s)?", message)
        self.r.require(match is not None, f"the message says how long to wait: {message!r}")
        wait_s = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
        self.r.measurements["rate_limit_wait_shown_seconds"] = wait_s
        # The wait shown is what is left of the window opened by the first creation (both clocks
        # run at the same pace, so this holds however long the steps took; the slack covers the
        # rounding to whole seconds and the moments between the server's answer and this reading).
        left = window - (time.time() - first_created)
        self.r.check(0 < wait_s <= window and abs(wait_s - left) <= 15,
                     f"the wait shown ({wait_s} s) is what is left of the {window} s window ({left:.0f} s)")
        self.r.check(not self.by_id("generate").is_enabled(), "Generate is disabled while the limit applies")
        self.screenshot("rate-limited")
        self.audit("rate limit message", "#add-dialog")
        self.wait(lambda: self.text("add-error") != message, "the wait to count down")
        self.keys(Keys.ESCAPE)
        self.wait(lambda: not self.js("return document.getElementById('add-dialog').open"), "Esc to close the dialog")
        self.r.check(len(self.rows()) == limit, f"{limit} devices listed")

    def admin_view(self):
        self.by_id("logout").click()
        self.wait(lambda: self.visible("login"), "the sign-in form")
        self.r.check(self.js("return sessionStorage.getItem('quazzar.mesh.token')") is None, "log out removes the token")
        self.r.check("logged out" in self.text("login-reason"), f"log-out message: {self.text('login-reason')!r}")
        self.r.check(not self.rows(), "log out clears the device list")
        self.screenshot("logged-out")
        self.audit("sign-in form")
        field = self.by_id("token-input")
        field.send_keys("not a token")
        self.by_id("login-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.r.check(self.visible("token-error") and field.get_attribute("aria-invalid") == "true", "a malformed token is refused with a message")
        # A well-formed token the server refuses (its signature is not ours): back to the form, with why.
        admin = self.info["tokens"]["admin"]
        forged = admin[:admin.rindex(".") + 1] + ("A" if admin[-1] != "A" else "B") * 43
        field.clear()
        field.send_keys(forged)
        self.by_id("login-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda: self.visible("login") and "did not accept" in self.text("login-reason"), "a refused token to end the session")
        self.r.check(self.js("return sessionStorage.getItem('quazzar.mesh.token')") is None, "a refused token is not kept")
        field = self.by_id("token-input")
        field.clear()
        field.send_keys("Bearer " + admin)
        self.by_id("login-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda: self.visible("app") and self.visible("admin"), "the admin view")
        self.r.check(self.js("return sessionStorage.getItem('quazzar.mesh.token')") == self.info["tokens"]["admin"], "a pasted token is stored for the tab")
        self.r.check(self.text("account-who").startswith("Signed in as Admin"), "signed in as admin")
        self.wait(lambda: self.visible("usage") and self.usage() == f"{self.info['rate_limit']} of 20 devices — Pro",
                  f"the usage after signing in again ({self.usage()!r})")
        self.wait(lambda: "Active" in self.text("node-state"), "the node state")
        state = self.text("node-state")
        self.r.check(self.info["node"]["ipv4"] in state, f"node state shows the node's mesh IP: {state}")
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, f'#peer-rows tr[data-key="{self.device_key}"]'), "the device among the node's peers")
        head = self.text("peers-head")
        self.r.check("Endpoint" in head and "Received" in head, f"the Pro plan shows per-peer stats: {head}")
        peer = self.driver.find_element(By.CSS_SELECTOR, f'#peer-rows tr[data-key="{self.device_key}"]')
        cells = [td.text for td in peer.find_elements(By.TAG_NAME, "td")]
        self.r.check(cells[0] == f"{self.slug}.quazzar.mesh", f"peer named by DNS: {cells}")
        self.r.check(cells[3] != "—" and cells[5] != "0 B", f"peer endpoint and traffic: {cells}")
        self.wait(lambda: len(self.rows()) == self.info["rate_limit"], "the admin sees the tenant's devices")
        fits = self.js("const t = document.getElementById('devices').getBoundingClientRect(), "
                       "m = document.getElementById('app').getBoundingClientRect(); return [t.right, m.right]")
        self.r.check(fits[0] <= fits[1] + 1, f"the device table fits the page at 1280 px: {fits}")
        self.screenshot("admin-diagnostics")
        self.audit("admin view")

    def delete_device(self):
        row = self.driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{self.device_id}"]')
        button = row.find_element(By.CSS_SELECTOR, ".btn-delete")
        self.r.check(button.get_attribute("aria-label") == f"Delete {self.label}", "the delete button names the device")
        button.click()
        self.wait(lambda: self.js("return document.getElementById('delete-dialog').open"), "the confirmation")
        self.r.check(self.active() == "delete-cancel", "the confirmation focuses Cancel")
        self.r.check(self.label in self.text("delete-desc"), f"the confirmation names the device: {self.text('delete-desc')!r}")
        self.screenshot("delete-confirmation")
        self.audit("delete confirmation", "#delete-dialog")
        self.keys(Keys.ESCAPE)
        self.wait(lambda: not self.js("return document.getElementById('delete-dialog').open"), "Esc to cancel")
        # The server still has the device (asked after the cancel, so a delete the cancel had sent
        # would have come first), and so does the page (pushed or polled, the list would drop it).
        answer = self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/mesh/devices/' + arguments[0], {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('quazzar.mesh.token')}})
              .then((r) => done(r.status), (e) => done(String(e)));
        """, self.device_id)
        self.r.check(answer == 200, f"the server still has the device after the cancel: {answer}")
        self.r.check(self.driver.find_elements(By.CSS_SELECTOR, f'tr[data-id="{self.device_id}"]'), "cancelling keeps the device")
        self.driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{self.device_id}"] .btn-delete').click()
        self.wait(lambda: self.js("return document.getElementById('delete-dialog').open"), "the confirmation again")
        self.by_id("delete-confirm").click()
        self.wait(lambda: not self.driver.find_elements(By.CSS_SELECTOR, f'tr[data-id="{self.device_id}"]'), "the device to leave the list")
        self.r.check(self.text("notice").startswith("Deleted "), f"deletion announced: {self.text('notice')!r}")
        count = self.info["rate_limit"] - 1
        self.wait(lambda: self.usage() == f"{count} of 20 devices — Pro", f"usage {count} of 20")
        deadline = time.monotonic() + 60
        while self.device_key in self.lab.call("node-peers")["peers"]:
            if time.monotonic() > deadline:
                raise Failed("the node still holds the deleted device's key after 60 s")
            time.sleep(0.2)
        self.r.check(True, "the node drops the deleted device")
        self.screenshot("deleted")

    def jwt_subject(self, token):
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))["sub"]

    def pritunl_walk_through(self):
        gw = self.info["gateway"]
        owner = self.jwt_subject(self.info["tokens"]["owner"])
        self.by_id("migrate-link").click()
        self.wait(lambda: self.visible("migrate") and self.js("return document.getElementById('migrate').dataset.loaded === 'true'"),
                  "the walk-through to load")
        self.r.check(self.visible("migrate-admin") and not self.visible("migrate-not-admin"), "admins see the walk-through's table")
        steps = self.js("return [...document.querySelectorAll('#pritunl-steps li')].map(li => li.textContent.replace(/\\s+/g, ' ').trim())")
        self.r.check(len(steps) >= 4 and any("Users" in t for t in steps) and any("Save" in t for t in steps),
                     f"the Pritunl console steps are written out: {steps}")
        row = f'#migrate-rows tr[data-id="{owner}"]'
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, row), "the owner's row")
        devices = self.driver.find_element(By.CSS_SELECTOR, f"{row} td:nth-child(2)").text
        self.r.check(bool(devices) and "None yet" not in devices and any(w in devices for w in ("Online", "Offline", "Not yet connected")),
                     f"the owner's devices are listed with their status: {devices!r}")
        box = self.driver.find_element(By.CSS_SELECTOR, f"{row} .revoked-box")
        self.r.check(not box.is_selected(), "the item starts unticked")
        self.r.check(box.accessible_name.startswith("Pritunl access revoked for"), f"the checkbox names the person: {box.accessible_name!r}")
        box.click()
        self.wait(lambda: self.js(f"return document.querySelector('{row}').dataset.revoked") == "true", "the item to be saved")
        self.screenshot("pritunl-walk-through")
        self.audit("Pritunl walk-through", "#migrate")
        # Stop and come back: the state is the server's.
        self.open_page(f"{gw}/vpn/mesh/")
        self.wait(lambda: self.visible("app") and self.visible("pritunl-banner"), "the signed-in page after a reload")
        self.by_id("migrate-link").click()
        self.wait(lambda: self.js("return document.getElementById('migrate').dataset.loaded === 'true'"), "the walk-through after a reload")
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, row), "the owner's row after a reload")
        self.r.check(self.driver.find_element(By.CSS_SELECTOR, f"{row} .revoked-box").is_selected(), "the item is still ticked after a reload")
        # A one-time config link, for the admin: opening it creates a device for the person it was
        # made for, which counts towards their creation limit, and the owner used theirs up in the
        # rate limit step (MESH_LAB_RATE_LIMIT per MESH_RATE_WINDOW_SECONDS).
        admin_row = f'#migrate-rows tr[data-id="{self.jwt_subject(self.info["tokens"]["admin"])}"]'
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, admin_row), "the admin's row")
        self.driver.find_element(By.CSS_SELECTOR, f"{admin_row} .btn-link-make").click()
        self.wait(lambda: self.visible("link-form"), "the link form")
        label = self.by_id("link-label")
        label.clear()
        label.send_keys("Linked phone")
        self.by_id("link-create").click()
        self.wait(lambda: self.visible("link-created"), "the new link")
        url = self.text("link-url")
        self.r.check(url.startswith(f"{gw}/vpn/mesh/link.html#qml_"), f"the link's address: {url!r}")
        self.screenshot("config-link-made")
        self.audit("config link made", "#migrate")
        main = self.driver.current_window_handle
        self.driver.switch_to.new_window("tab")
        try:
            self.driver.get(url)
            self.wait(lambda: self.js("return document.documentElement.dataset.ready === 'true'"), "the link page")
            self.r.check("#" not in self.driver.current_url, f"the token leaves the address bar ({self.driver.current_url})")
            self.r.check(self.js("return sessionStorage.length") == 0 and self.js("return document.cookie") == "", "no session in the new tab")
            self.r.check(self.visible("link-start") and not self.visible("link-result"), "nothing is fetched before the click")
            self.by_id("link-open").click()
            self.wait(lambda: self.visible("link-result"), "the config from the link")
            conf = self.js("return document.getElementById('link-config').textContent")
            self.r.check("PrivateKey = " in conf and "[Peer]" in conf, "the link gives a config")
            src = self.by_id("link-qr-image").get_attribute("src") or ""
            self.r.check(src.startswith("data:image/svg+xml;base64,"), "the link gives a QR code")
            self.r.check("Linked phone" in self.text("link-summary"), f"the summary names the device: {self.text('link-summary')!r}")
            self.screenshot("config-link-opened")
            self.audit("config link opened")
            # Used once: opened again, it says so.
            self.driver.get(url)
            self.wait(lambda: self.js("return document.documentElement.dataset.ready === 'true'") and self.visible("link-start"), "the link page again")
            self.by_id("link-open").click()
            self.wait(lambda: self.visible("link-error"), "the refusal of a used link")
            self.r.check("already used" in self.text("link-error"), f"a used link is refused: {self.text('link-error')!r}")
            self.r.check(not self.visible("link-result"), "no config the second time")
            self.screenshot("config-link-used")
            self.audit("config link used")
        finally:
            self.driver.close()
            self.driver.switch_to.window(main)
        self.by_id("link-dismiss").click()
        self.by_id("migrate-close").click()

    def api_post(self, path, body, token):
        request = urllib.request.Request(self.info["gateway"] + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def reissue_outdated(self):
        # A device whose config lists a node that is then removed: the page says its config is
        # outdated, and re-issuing it gives a config that works again.
        spare = self.lab.call("extra-node spare", timeout=30)
        created = self.api_post("/api/mesh/devices", {"label": "Spare phone", "type": "iphone"}, self.info["tokens"]["admin"])
        self.r.check(created["config"].count("[Peer]") == 2, "the config lists the hub and the spare node")
        self.lab.call(f"remove-node {spare['node_id']}", timeout=30)
        selector = f'tr[data-id="{created["id"]}"]'
        self.wait(lambda: self.js(f"const r = document.querySelector('{selector}'); return r && r.dataset.outdated === 'true'"),
                  "the outdated badge", 20)
        reason = self.driver.find_element(By.CSS_SELECTOR, f"{selector} .device-outdated-reason").text
        self.r.check("node spare was removed" in reason, f"the badge says why: {reason!r}")
        self.r.check(self.driver.find_element(By.CSS_SELECTOR, f"{selector} .badge-outdated").is_displayed(), "the badge is shown")
        self.screenshot("config-outdated")
        self.driver.find_element(By.CSS_SELECTOR, f"{selector} .btn-reissue").click()
        self.wait(lambda: self.js("return document.getElementById('reissue-dialog').open"), "the re-issue confirmation")
        self.r.check("Spare phone" in self.text("reissue-desc"), f"the confirmation names the device: {self.text('reissue-desc')!r}")
        self.audit("re-issue confirmation", "#reissue-dialog")
        self.by_id("reissue-confirm").click()
        self.wait(lambda: self.js("return document.getElementById('add-dialog').open") and self.visible("add-result"), "the new config")
        self.r.check(self.text("add-title") == "Config re-issued", f"the dialog says what happened: {self.text('add-title')!r}")
        conf = self.js("return document.getElementById('config-text').textContent")
        old_key = [l for l in created["config"].splitlines() if l.startswith("PrivateKey")][0]
        self.r.check(old_key not in conf and "PrivateKey = " in conf, "the re-issued config has a new key")
        self.r.check(conf.count("[Peer]") == 1, "the removed node is not in the new config")
        for ip in created["mesh_ips"]:
            self.r.check(ip in conf, f"the device keeps its address {ip}")
        src = self.by_id("qr-image").get_attribute("src") or ""
        self.r.check(src.startswith("data:image/svg+xml;base64,"), "the new config comes with a QR code")
        self.screenshot("config-reissued")
        path = self.out / "reissued.conf"
        path.write_text(conf)
        up = self.lab.call(f"device-up {path}", timeout=60)
        self.r.check(up.get("ping_ok") is True, f"the re-issued config works: {up}")
        self.close_dialog_with_done()
        self.wait(lambda: self.js(f"const r = document.querySelector('{selector}'); return r && r.dataset.outdated === 'false'"),
                  "the badge to go", 20)

    def row_of(self, label):
        for row in self.rows():
            if row.find_element(By.CSS_SELECTOR, ".device-label").text == label:
                return row
        return None

    def lifecycle_on_page(self):
        # The re-issued "Spare phone" is up in its namespace: rename it, suspend it (the node drops
        # its key), filter by status, resume it (the key is back), and give it an expiry.
        self.wait(lambda: self.row_of("Spare phone") is not None, "the spare phone in the list")
        row = self.row_of("Spare phone")
        device_id = row.get_attribute("data-id")
        sel = f'tr[data-id="{device_id}"]'
        peers_before = set(self.lab.call("node-peers")["peers"])
        # Rename through the dialog: the label and the DNS name change together.
        self.driver.find_element(By.CSS_SELECTOR, f"{sel} button[aria-label='Rename Spare phone']").click()
        self.wait(lambda: self.js("return document.getElementById('rename-dialog').open"), "the rename dialog")
        self.r.check(self.active() == "rename-input", "the rename dialog focuses the label")
        self.audit("rename dialog", "#rename-dialog")
        # Every announcement, in order (another, such as a device coming online, may follow at once).
        self.js("window.__notices = []; new MutationObserver(() => window.__notices.push(document.getElementById('notice').textContent))"
                ".observe(document.getElementById('notice'), {childList: true, characterData: true, subtree: true})")
        field = self.by_id("rename-input")
        # Counted as the server counts: 40 decomposed "é" look like 40 characters but are 80 code
        # points, so the page refuses them itself, without a request.
        self.js("window.__posts = 0; const f = window.fetch; window.fetch = (u, o) => { "
                "if (o && o.method && o.method !== 'GET') window.__posts++; return f(u, o); }")
        self.js("document.getElementById('rename-input').value = arguments[0]", "e\u0301" * 40)
        self.keys(Keys.ENTER)
        self.wait(lambda: "too long" in self.text("rename-error"), "the page's own refusal of an 80-code-point label")
        self.r.check(self.js("return document.getElementById('rename-dialog').open") and self.js("return window.__posts") == 0,
                     "the too-long label is refused in the dialog, with no request")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys("Spare phone renamed")
        self.keys(Keys.ENTER)
        self.wait(lambda: not self.js("return document.getElementById('rename-dialog').open"), "the rename to finish")
        self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, f"{sel} .device-dns").text == "spare-phone-renamed.quazzar.mesh",
                  "the new DNS name")
        self.r.check(self.driver.find_element(By.CSS_SELECTOR, f"{sel} .device-label").text == "Spare phone renamed", "the new label")
        notices = self.js("return window.__notices")
        self.r.check(any(n.startswith("Renamed to Spare phone renamed") for n in notices), f"the rename is announced: {notices!r}")
        # Suspend from the row: the pill and the badge say so, and the node drops the key.
        self.driver.find_element(By.CSS_SELECTOR, f"{sel} button[aria-label='Suspend Spare phone renamed']").click()
        self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, f"{sel} .pill").get_attribute("data-state") == "suspended",
                  "the Suspended pill")
        self.r.check(self.driver.find_element(By.CSS_SELECTOR, f"{sel} .pill").text == "Suspended", "pill text Suspended")
        badge = self.driver.find_element(By.CSS_SELECTOR, f"{sel} .badge-status").text
        self.r.check(badge == "Suspended by an admin", f"the badge says who: {badge!r}")
        toggle = self.driver.find_element(By.CSS_SELECTOR, f"{sel} button[aria-label='Resume Spare phone renamed']")
        self.r.check(toggle.text == "Resume", "the row offers Resume")
        deadline = time.monotonic() + 15
        while True:
            peers = set(self.lab.call("node-peers")["peers"])
            if len(peers_before - peers) == 1:
                break
            if time.monotonic() > deadline:
                raise Failed(f"the node did not drop the suspended device's key ({len(peers_before)} -> {len(peers)} peers)")
            time.sleep(0.2)
        suspended_key = (peers_before - peers).pop()
        self.r.check(True, "the node drops the suspended device's key")
        self.screenshot("suspended")
        self.audit("a suspended device")
        # The status filter shows just it.
        Select(self.by_id("filter-status")).select_by_value("suspended")
        self.wait(lambda: [r.get_attribute("data-id") for r in self.rows()] == [device_id], "only the suspended device")
        Select(self.by_id("filter-status")).select_by_value("expired")
        self.wait(lambda: self.visible("empty-filtered") and not self.rows(), "no expired device")
        Select(self.by_id("filter-status")).select_by_value("")
        self.wait(lambda: len(self.rows()) > 1, "every device again")
        # Resume: the key is back on the node.
        self.driver.find_element(By.CSS_SELECTOR, f"{sel} button[aria-label='Resume Spare phone renamed']").click()
        self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, f"{sel} .pill").get_attribute("data-state") != "suspended", "the pill")
        deadline = time.monotonic() + 15
        while suspended_key not in self.lab.call("node-peers")["peers"]:
            if time.monotonic() > deadline:
                raise Failed("the node did not take the resumed device back")
            time.sleep(0.2)
        self.r.check(not self.driver.find_elements(By.CSS_SELECTOR, f"{sel} .badge-status"), "no badge once resumed")
        # An expiry, set by the admin: the row says when.
        self.driver.find_element(By.CSS_SELECTOR, f"{sel} button[aria-label='Expiry of Spare phone renamed']").click()
        self.wait(lambda: self.js("return document.getElementById('expiry-dialog').open"), "the expiry dialog")
        self.audit("expiry dialog", "#expiry-dialog")
        self.r.check(self.by_id("expiry-never").is_selected(), "it never expires yet")
        self.by_id("expiry-never").click()
        self.js("const i = document.getElementById('expiry-input'); const d = new Date(Date.now() + 3 * 86400000);"
                "const p = (n) => String(n).padStart(2, '0');"
                "i.value = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;")
        self.by_id("expiry-save").click()
        self.wait(lambda: not self.js("return document.getElementById('expiry-dialog').open"), "the expiry to be saved")
        self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, f"{sel} .expiry").text.startswith("Expires in"),
                  "the expiry in the row")
        self.r.check("3 days" in self.driver.find_element(By.CSS_SELECTOR, f"{sel} .expiry").text,
                     f"expiry shown: {self.driver.find_element(By.CSS_SELECTOR, f'{sel} .expiry').text!r}")
        self.screenshot("expiry-set")

    def mesh_switch_on_page(self):
        # Turning the mesh off (with a confirmation) takes every device off the node and refuses
        # new ones; on again, they are back.
        peers_on = set(self.lab.call("node-peers")["peers"])
        self.r.require(peers_on, "the node holds devices before the switch")
        switch = self.by_id("mesh-switch")
        self.r.check(switch.is_selected(), "the switch shows the mesh on")
        switch.click()
        self.wait(lambda: self.js("return document.getElementById('mesh-dialog').open"), "the confirmation")
        self.r.check(self.active() == "mesh-cancel", "the confirmation focuses Cancel")
        self.audit("mesh switch confirmation", "#mesh-dialog")
        self.by_id("mesh-confirm").click()
        self.wait(lambda: self.visible("mesh-off"), "the mesh-off message")
        self.r.check(self.text("mesh-off").startswith("The mesh is turned off for this tenant"), f"message: {self.text('mesh-off')!r}")
        self.r.check(not self.by_id("add-device").is_enabled(), "Add device is disabled while the mesh is off")
        self.r.check(not self.by_id("mesh-switch").is_selected(), "the switch shows the mesh off")
        deadline = time.monotonic() + 15
        while self.lab.call("node-peers")["peers"]:
            if time.monotonic() > deadline:
                raise Failed("the node still holds devices with the mesh off")
            time.sleep(0.2)
        self.r.check(True, "the node holds no device with the mesh off")
        self.screenshot("mesh-off")
        self.audit("mesh off")
        self.by_id("mesh-switch").click()
        self.wait(lambda: not self.visible("mesh-off") and self.by_id("add-device").is_enabled(), "the mesh back on")
        deadline = time.monotonic() + 15
        while set(self.lab.call("node-peers")["peers"]) != peers_on:
            if time.monotonic() > deadline:
                raise Failed("the node did not take every device back")
            time.sleep(0.2)
        self.r.check(True, "every device is back on the node")

    def nodes_on_page(self):
        # The node list: the lab's node is the hub and online; an enrollment token; the diagnostics
        # picker; a registered node without a NodeApplier is offline and can be removed.
        node = self.info["node"]
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, f'#node-rows tr[data-id="{node["id"]}"][data-online="true"]'),
                  "the node online in the list")
        row = self.driver.find_element(By.CSS_SELECTOR, f'#node-rows tr[data-id="{node["id"]}"]')
        remove = row.find_element(By.CSS_SELECTOR, ".btn-delete")
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        # The list is read again every few seconds; its rows and buttons stay the same elements, so a
        # click that lands during a poll is not lost.
        # The page's own fetch is counted (the resource timing buffer stops at 250 entries).
        self.js("const f = window.fetch; window.nodeReads = 0;"
                "window.fetch = (p, o) => { if (String(p).startsWith('/api/mesh/nodes')) window.nodeReads++; return f.call(window, p, o); };")
        self.wait(lambda: self.js("return window.nodeReads") >= 2, "two more reads of the node list", timeout=30)
        self.r.check(self.js("return arguments[0].isConnected && arguments[1].isConnected", row, remove),
                     "the node's row and its Remove button survive the list's polls")
        self.r.check("Hub" in cells[0] and node["name"] in cells[0], f"the hub's name and badge: {cells[0]!r}")
        self.r.check(node["ipv4"] in cells[1] and cells[3] == "userspace", f"addresses and backend: {cells}")
        self.r.check(cells[4] != "—" and cells[6] == "Online", f"last sync and status: {cells}")
        extra = self.lab.call("extra-node picker", timeout=30)
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, f'#node-rows tr[data-id="{extra["node_id"]}"][data-online="false"]'),
                  "the registered node, offline")
        # Enrollment token, shown once.
        self.by_id("enroll").click()
        self.wait(lambda: self.js("return document.getElementById('enroll-dialog').open"), "the enrollment dialog")
        self.audit("enrollment dialog", "#enroll-dialog")
        self.by_id("enroll-create").click()
        self.wait(lambda: self.visible("enroll-result"), "the token")
        token = self.js("return document.getElementById('enroll-token').value")
        self.r.check(token.startswith("qme_") and len(token) > 40, "an enrollment token is shown")
        self.r.check("1 node" in self.text("enroll-summary"), f"its uses and expiry: {self.text('enroll-summary')!r}")
        self.screenshot("enrollment-token")
        self.by_id("enroll-done").click()
        self.r.check(self.js("return document.getElementById('enroll-token').value") == "", "closing forgets the token")
        # The diagnostics picker: the registered node does not answer; the lab's node does.
        Select(self.by_id("diag-node")).select_by_value(extra["node_id"])
        self.wait(lambda: self.visible("admin-error") and "could not be read" in self.text("admin-error"), "the picked node's error")
        Select(self.by_id("diag-node")).select_by_value(node["id"])
        self.wait(lambda: not self.visible("admin-error") and node["ipv4"] in self.text("node-state"), "the picked node's state")
        resources = self.js("return performance.getEntriesByType('resource').map(e => e.name)")
        self.r.check(any(f"node_id={extra['node_id']}" in r for r in resources), "the picker asks for that node")
        self.screenshot("nodes-and-diagnostics")
        self.audit("nodes and diagnostics")
        # Remove the registered node with the confirmation.
        self.driver.find_element(By.CSS_SELECTOR, f'#node-rows tr[data-id="{extra["node_id"]}"] .btn-delete').click()
        self.wait(lambda: self.js("return document.getElementById('node-dialog').open"), "the removal confirmation")
        self.r.check("picker" in self.text("node-dialog-desc"), f"the confirmation names the node: {self.text('node-dialog-desc')!r}")
        self.audit("node removal confirmation", "#node-dialog")
        self.by_id("node-confirm").click()
        self.wait(lambda: not self.driver.find_elements(By.CSS_SELECTOR, f'#node-rows tr[data-id="{extra["node_id"]}"]'), "the node to go")
        self.r.check("Removed node picker" in self.text("notice"), f"announced: {self.text('notice')!r}")
        # A Pro tenant has no audit log: the page says which plans have it.
        self.r.check("Team and Enterprise" in self.text("audit-note") and not self.visible("audit-body"), f"audit note: {self.text('audit-note')!r}")

    def team_pages_and_audit(self):
        # A Team tenant with 30 devices: pages of 25, filters, the audit log with its filters and export.
        self.open_page(f"{self.info['gateway']}/vpn/mesh/#token={self.info['tokens']['team_admin']}")
        self.wait(lambda: self.visible("app") and len(self.rows()) == 25, "the first page of 25")
        first = [r.get_attribute("data-id") for r in self.rows()]
        self.r.check(self.visible("pager") and self.text("page-info") == "Page 1" and not self.by_id("page-prev").is_enabled(), "page 1")
        self.by_id("page-next").click()
        self.wait(lambda: len(self.rows()) == 5, "the second page of 5")
        second = [r.get_attribute("data-id") for r in self.rows()]
        self.r.check(not set(first) & set(second) and self.text("page-info") == "Page 2" and not self.by_id("page-next").is_enabled(),
                     "page 2 holds the other five")
        self.by_id("page-prev").click()
        self.wait(lambda: [r.get_attribute("data-id") for r in self.rows()] == first, "back to page 1")
        Select(self.by_id("filter-type")).select_by_value("laptop")
        self.wait(lambda: self.rows() and all(r.find_element(By.CSS_SELECTOR, ".device-icon use").get_attribute("href") == "#icon-laptop"
                                              for r in self.rows()) and len(self.rows()) < 25, "only laptops")
        laptops = len(self.rows())
        self.r.check(laptops == 7, f"7 of the 30 devices are laptops ({laptops})")
        owners = [o.get_attribute("value") for o in Select(self.by_id("filter-owner")).options]
        self.r.check(len(owners) >= 3, f"the owner filter offers the owners seen: {len(owners)} options")
        # An owner of one of the laptops shown (the filter also offers owners without laptops).
        shown = self.rows()[-1].find_element(By.CSS_SELECTOR, ".device-owner").text.removeprefix("Owner: ")
        Select(self.by_id("filter-owner")).select_by_visible_text(shown)
        self.wait(lambda: 0 < len(self.rows()) < laptops and all(r.find_element(By.CSS_SELECTOR, ".device-owner").text == f"Owner: {shown}"
                                                                  for r in self.rows()), "one owner's laptops")
        self.screenshot("filters")
        Select(self.by_id("filter-type")).select_by_value("")
        Select(self.by_id("filter-owner")).select_by_value("")
        self.wait(lambda: len(self.rows()) == 25, "every device again")
        # The audit log: newest first, in pages, filtered, exported.
        self.wait(lambda: len(self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]")) == 25, "a page of the audit log")
        ids = [int(r.get_attribute("data-id")) for r in self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]")]
        self.r.check(ids == sorted(ids, reverse=True), "newest first")
        self.by_id("audit-older").click()
        self.wait(lambda: (self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]") or [None])[0] is not None
                  and int(self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]")[0].get_attribute("data-id")) < ids[-1],
                  "the older page")
        self.by_id("audit-newer").click()
        self.wait(lambda: int(self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]")[0].get_attribute("data-id")) == ids[0],
                  "the newest page again")
        Select(self.by_id("audit-action")).select_by_value("device.create")
        self.by_id("audit-filters").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda: all(r.get_attribute("data-action") == "device.create" for r in self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]"))
                  and self.driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-id]"), "device.create entries only")
        self.screenshot("audit-log")
        self.audit("audit log")
        for button, name in [("export-csv", "audit.csv"), ("export-jsonl", "audit.jsonl")]:
            target = self.downloads / name
            if target.exists():
                target.unlink()
            self.by_id(button).click()
            self.wait(lambda: target.exists() and not (self.downloads / (name + ".crdownload")).exists(), f"the export {name}")
            text = target.read_bytes().decode()   # as written: CSV lines end in CRLF
            if name.endswith(".csv"):
                lines = [l for l in text.split("\r\n") if l]
                self.r.check(lines[0] == "id,at,actor,action,target_id,request_id,detail" and len(lines) == 31
                             and all(",device.create," in l for l in lines[1:]), f"the CSV export: {len(lines)} lines")
            else:
                rows = [json.loads(l) for l in text.splitlines() if l]
                self.r.check(len(rows) == 30 and all(r["action"] == "device.create" for r in rows), f"the JSON-lines export: {len(rows)} lines")
        self.r.measurements["audit_export_files"] = sorted(p.name for p in self.downloads.glob("audit.*"))

    def cap_reached(self):
        plain = self.info["plain_gateway"]
        # The other gateway has no Pritunl configured, and /vpn/mesh (no slash) serves the page too.
        self.open_page(f"{plain}/vpn/mesh")
        self.r.check(self.visible("login") and not self.visible("app"), "without a token the page asks for one")
        # A login link opened in a tab that shows the page changes only the fragment: no reload.
        self.js("window.__sameDocument = true; location.hash = '#token=' + arguments[0]", self.info["tokens"]["free_owner"])
        self.wait(lambda: self.visible("app"), "the signed-in page")
        self.r.check(self.js("return window.__sameDocument") is True, "signed in without a reload")
        self.r.check("token" not in self.driver.current_url, f"the token is stripped again ({self.driver.current_url})")
        self.r.check(not self.visible("pritunl-banner"), "no banner without a Pritunl VPN")
        self.wait(lambda: self.usage() == "0 of 3 devices — Free", f"usage 0 of 3 — Free ({self.usage()!r})")
        for i, kind in enumerate(["iphone", "android", "other"]):
            self.add_device(f"Free device {i + 1}", kind)
            self.close_dialog_with_done()
        self.wait(lambda: self.usage() == "3 of 3 devices — Free", "usage 3 of 3 — Free")
        # Free is basic state: the list the page reads has no per-peer stats (endpoint, traffic).
        listing = self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/mesh/devices', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('quazzar.mesh.token')}})
              .then((r) => r.json()).then(done, (e) => done({error: String(e)}));
        """)
        devices = listing.get("devices") or []
        self.r.check(listing.get("per_peer_stats") is False and len(devices) == 3
                     and all("rx_bytes" not in d and "tx_bytes" not in d and "endpoint" not in d and "online" in d for d in devices),
                     f"the Free device list carries the basic state only: {listing}")
        self.r.check(self.text("cap-notice").startswith("Device cap reached: the Free plan allows 3 devices."), f"cap notice: {self.text('cap-notice')!r}")
        self.add_device("Fourth device", "laptop", expect_success=False)
        kind = self.by_id("add-error").get_attribute("data-kind")
        message = self.text("add-error")
        self.r.check(kind == "quota_exceeded" and message.startswith("Device cap reached: your Free plan allows 3 devices."),
                     f"cap message: {kind}: {message!r}")
        self.screenshot("cap-reached")
        self.audit("cap reached", "#add-dialog")
        self.keys(Keys.ESCAPE)
        self.wait(lambda: not self.js("return document.getElementById('add-dialog').open"), "Esc to close the dialog")
        self.audit("cap notice on the page")

    def config_too_large_for_qr(self):
        # A tenant with 16 nodes: the config does not fit a QR code; the reason and the download remain.
        self.open_page(f"{self.info['gateway']}/vpn/mesh/#token={self.info['tokens']['big_owner']}")
        self.wait(lambda: self.visible("app") and self.usage() == "0 of 20 devices — Pro", "the signed-in page")
        self.add_device("Big laptop", "laptop")
        self.r.check(not self.visible("qr-figure") and self.js("return document.getElementById('qr-image').getAttribute('src')") is None,
                     "no QR code is shown")
        message = self.text("qr-unavailable")
        self.r.check("too large for a QR code" in message and message.endswith("Download the .conf file and import it into the WireGuard app instead."),
                     f"the reason and what to do instead: {message!r}")
        link = self.by_id("conf-download")
        self.r.check("btn-primary" in link.get_attribute("class"), "the download is the main action")
        filename = link.get_attribute("download")
        link.click()
        target = self.downloads / filename
        self.wait(lambda: target.exists() and not (self.downloads / (filename + ".crdownload")).exists(), f"the download {filename}")
        conf = target.read_bytes()
        self.r.check(conf.count(b"[Peer]") == 16 and len(conf) > 2953, f"the download holds all 16 nodes ({len(conf)} bytes)")
        self.r.measurements["large_config_bytes"] = len(conf)
        self.screenshot("config-too-large-for-qr")
        self.audit("no QR code", "#add-dialog")
        self.close_dialog_with_done()

    def phone_width(self):
        self.driver.set_window_size(390, 844)
        self.wait(lambda: self.js("return window.innerWidth") <= 400, "the narrow window")
        self.wait(lambda: self.js("const r = document.querySelector('#device-rows tr'); return r && getComputedStyle(r).display") == "block",
                  "the phone layout (device rows as cards)")
        overflow = self.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.r.check(overflow <= 0, f"no horizontal scrolling at phone width (overflow {overflow}px)")
        display = self.js("return getComputedStyle(document.querySelector('#device-rows tr')).display")
        self.r.check(display == "block", f"devices are cards at phone width (tr display {display})")
        spill = self.js("""
            const out = [];
            for (const row of document.querySelectorAll('#device-rows tr')) {
              const box = row.getBoundingClientRect();
              for (const e of row.querySelectorAll('*')) {
                const r = e.getBoundingClientRect();
                if (r.width && (r.right > box.right + 1 || r.left < box.left - 1)) out.push(e.className || e.tagName);
              }
            }
            return out;""")
        self.r.check(not spill, f"nothing sticks out of the device cards: {spill}")
        self.screenshot("phone-list")
        self.audit("phone width list")
        self.by_id("add-device").click()
        self.wait(lambda: self.js("return document.getElementById('add-dialog').open"), "the add dialog")
        width = self.js("const r = document.getElementById('add-dialog').getBoundingClientRect(); return [r.left, r.right, window.innerWidth]")
        self.r.check(width[0] >= 0 and width[1] <= width[2], f"the dialog fits the screen: {width}")
        self.screenshot("phone-add-dialog")
        self.keys(Keys.ESCAPE)
        self.driver.set_window_size(1280, 900)

    def provider_sign_in(self, expect_app=True):
        """Clicks the provider's button on the sign-in form and logs in on the provider's page."""
        idp = self.info["idp"]
        self.wait(lambda: self.visible("login") and self.visible("providers"), "the sign-in form with the provider")
        button = self.driver.find_element(By.CSS_SELECTOR, f'#provider-buttons a[data-provider="{idp["id"]}"]')
        self.r.check(button.text == f"Sign in with {idp['name']}", f"the provider button: {button.text!r}")
        button.click()
        self.wait(lambda: self.driver.current_url.startswith(idp["issuer"] + "/authorize"), "the provider's login page")
        url = self.driver.current_url
        self.r.check("code_challenge_method=S256" in url and "nonce=" in url and "state=" in url, f"PKCE, nonce and state in {url}")
        self.wait(lambda: self.driver.find_elements(By.ID, "username"), "the provider's login form")
        self.by_id("username").send_keys(idp["user"])
        self.by_id("password").send_keys(idp["password"])
        self.by_id("sign-in").click()
        self.wait(lambda: self.driver.current_url.startswith(self.info["plain_gateway"] + "/vpn/mesh/")
                  and self.js("return document.documentElement.dataset.ready === 'true'"), "the way back to the page", 20)
        if expect_app:
            self.wait(lambda: self.visible("app"), "the device list after signing in")

    def sign_in_with_provider(self):
        plain, idp = self.info["plain_gateway"], self.info["idp"]
        self.open_page(f"{plain}/vpn/mesh/")
        if self.visible("app"):
            self.by_id("logout").click()
        self.wait(lambda: self.visible("login"), "the sign-in form")
        self.screenshot("sign-in-choices")
        self.audit("sign-in with a provider or a token", "#login")
        self.provider_sign_in()
        self.r.check(self.driver.current_url == f"{plain}/vpn/mesh/", f"lands on the page ({self.driver.current_url})")
        self.wait(lambda: self.usage() != "", "plan usage")
        self.r.check(self.visible("empty") or self.visible("devices"), "lands on the device list")
        who = self.text("account-who")
        self.r.check(who.startswith(f"Signed in as {idp['display_name']} (Admin) via {idp['name']}"), f"account: {who!r}")
        cookies = {c["name"]: c for c in self.driver.get_cookies()}
        session = cookies.get("__Host-qm_session", {})
        self.r.check(session.get("httpOnly") is True and session.get("secure") is True and session.get("sameSite") == "Strict",
                     f"the session cookie is HttpOnly, Secure, SameSite=Strict: {session}")
        self.r.check(not any(n.startswith("__Host-qm_signin_") for n in cookies), f"the sign-in attempt cookie is gone: {list(cookies)}")
        self.r.check(self.js("return sessionStorage.getItem('quazzar.mesh.token')") is None and self.js("return document.cookie") == "",
                     "no token in the page: the session cookie is HttpOnly")
        self.screenshot("signed-in-through-the-provider")
        # The session writes from the page (its requests carry this site's Origin).
        self.add_device("SSO laptop", "laptop")
        self.close_dialog_with_done()
        self.wait(lambda: any("SSO laptop" in r.text for r in self.rows()), "the new device in the list")
        # An admin sees the tenant's users, herself among them.
        self.wait(lambda: self.visible("users") and self.driver.find_elements(By.CSS_SELECTOR, "#user-rows tr"), "the users list")
        mine = [r.text for r in self.driver.find_elements(By.CSS_SELECTOR, "#user-rows tr") if "ada@example.com" in r.text]
        self.r.check(len(mine) == 1 and "You" in mine[0], f"the users list holds Ada as 'You': {mine}")
        # A personal API token: made on the page, shown once, works for a script, listed, revoked.
        self.by_id("token-name").send_keys("backup script")
        self.by_id("token-create").click()
        self.wait(lambda: self.visible("token-created"), "the new token")
        secret = self.text("token-secret")
        self.api_token = secret
        self.r.check(re.fullmatch(r"qmp_[0-9A-Za-z]{36}", secret) is not None, f"the token's shape: {secret[:8]}…")
        request = urllib.request.Request(f"{plain}/api/mesh/devices", headers={"Authorization": f"Bearer {secret}"})
        with urllib.request.urlopen(request) as response:
            labels = [d["label"] for d in json.load(response)["devices"]]
        self.r.check("SSO laptop" in labels, f"the token reads the devices: {labels}")
        self.screenshot("api-token-shown-once")
        self.audit("an API token shown once", "#tokens")
        self.by_id("token-dismiss").click()
        self.r.check(secret not in self.js("return document.body.textContent"), "the token leaves the page once dismissed")
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#token-rows tr"), "the token in the list")
        row = self.driver.find_element(By.CSS_SELECTOR, "#token-rows tr")
        self.r.check(secret[:8] in row.text and "backup script" in row.text, f"the listed token: {row.text!r}")
        row.find_element(By.CSS_SELECTOR, ".btn-delete").click()
        self.wait(lambda: not self.driver.find_elements(By.CSS_SELECTOR, "#token-rows tr"), "the token to leave the list")
        try:
            urllib.request.urlopen(request)
            refused = None
        except urllib.error.HTTPError as e:
            refused = (e.code, json.load(e)["error"]["message"])
        self.r.check(refused == (401, "this API token was revoked"), f"the revoked token fails on its next request: {refused}")
        # Log out: the session ends; the page asks to sign in again, also after a reload.
        self.by_id("logout").click()
        self.wait(lambda: self.visible("login"), "the sign-in form after logging out")
        self.open_page(f"{plain}/vpn/mesh/")
        self.r.check(self.visible("login") and not self.visible("app"), "after logging out a reload asks to sign in")
        self.r.check("__Host-qm_session" not in {c["name"] for c in self.driver.get_cookies()}, "the session cookie is gone")

    def refused_provider_sign_in(self):
        # The provider's next ID token carries another nonce: the gateway refuses it, the page says why.
        idp = self.info["idp"]
        request = urllib.request.Request(idp["issuer"] + "/_control/next-token", data=json.dumps({"fault": "wrong_nonce"}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request).read()
        self.provider_sign_in(expect_app=False)
        self.wait(lambda: self.visible("login-reason"), "the reason on the sign-in form")
        reason = self.text("login-reason")
        self.r.check(reason == "Sign-in refused: the ID token's nonce does not match this sign-in", f"the reason shown: {reason!r}")
        self.r.check(not self.visible("app"), "no session after a refused sign-in")
        self.r.check("__Host-qm_session" not in {c["name"] for c in self.driver.get_cookies()}, "no session cookie")
        self.r.check("#" not in self.driver.current_url, f"the reason leaves the address bar ({self.driver.current_url})")
        self.screenshot("sign-in-refused")
        self.audit("a refused sign-in", "#login")

    def hygiene(self):
        tokens = list(self.info["tokens"].values()) + ([self.api_token] if getattr(self, "api_token", None) else [])
        for log in self.info["gateway_logs"]:
            text = pathlib.Path(log).read_text(errors="replace")
            self.r.check(not any(t in text for t in tokens), f"no token in the gateway log {log}")
            self.r.check("token=" not in text, f"no token parameter in the gateway log {log}")
        resources = self.js("return performance.getEntriesByType('resource').map(e => e.name)")
        self.r.check(not any("token" in r for r in resources), "no request URL holds a token")
        # Browser console: nothing but the refusals the test provoked (401 forged token, 403 cap, 429 rate limit, 410 used link).
        entries = self.driver.get_log("browser")
        (self.out / "console.json").write_text(json.dumps(entries, indent=1))
        # (503: the diagnostics of a registered node whose NodeApplier does not run; 410: the one-time
        # config link opened a second time.)
        expected = re.compile(r"status of (401|403|429|503)|/api/mesh/links/open .*status of 410")
        severe = [e["message"] for e in entries if e.get("level") == "SEVERE" and not expected.search(e["message"])]
        self.r.check(not severe, f"no errors in the browser console: {severe}")

    def api_delete(self, path, token):
        request = urllib.request.Request(self.info["gateway"] + path, method="DELETE", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as response:
            return response.status

    def live_mode(self):
        return self.js("return document.getElementById('app').dataset.live || ''")

    def list_reads(self):
        return self.js("return performance.getEntriesByType('resource').filter(e => new URL(e.name).pathname === '/api/mesh/devices').length")

    def live_channel_and_fallback(self):
        gw, admin = self.info["gateway"], self.info["tokens"]["admin"]
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        self.open_page(f"{gw}/vpn/mesh/#token={admin}")
        self.wait(lambda: self.live_mode() == "push", "the live channel to open", 20)
        self.wait(lambda: len(self.rows()) >= 2, "the tenant's devices")
        # Pushed, not polled: an idle page reads nothing (it read the list every second before).
        reads = self.list_reads()
        time.sleep(3)
        self.r.check(self.list_reads() == reads, f"an idle page with the live channel reads no list ({self.list_reads() - reads} reads)")
        ids = [r.get_attribute("data-id") for r in self.rows()]
        # A deletion elsewhere reaches the page through the channel.
        self.r.check(self.api_delete(f"/api/mesh/devices/{ids[0]}", admin) == 204, "a device deleted through the API")
        self.wait(lambda: not self.driver.find_elements(By.CSS_SELECTOR, f'tr[data-id="{ids[0]}"]'), "the pushed deletion", 15)
        self.r.check(self.list_reads() == reads, "the pushed change needed no list read")
        # The channel blocked (as a proxy that refuses streams would): the page polls instead.
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/mesh/events*"]})
        self.open_page(f"{gw}/vpn/mesh/")
        self.wait(lambda: self.live_mode() == "polling", "the page to fall back to polling", 20)
        self.r.check(self.visible("app"), "the page works without the live channel")
        self.r.check(self.api_delete(f"/api/mesh/devices/{ids[1]}", admin) == 204, "another device deleted through the API")
        self.wait(lambda: not self.driver.find_elements(By.CSS_SELECTOR, f'tr[data-id="{ids[1]}"]'), "the polled deletion", 15)
        self.r.check(self.list_reads() > 0, "the fallback reads the list")
        self.screenshot("polling-fallback")
        # Unblocked: the page goes back to the channel by itself.
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        self.wait(lambda: self.live_mode() == "push", "the page to return to the live channel", 45)
        reads = self.list_reads()
        time.sleep(3)
        self.r.check(self.list_reads() == reads, "polling stops once the channel is back")

    # MARK: run

    def run(self):
        started = time.monotonic()
        env = dict(os.environ)
        env.setdefault("MESH_TEST_OUTPUT", str(self.out.parent))
        env["MESH_LAB_RATE_WINDOW_SECONDS"] = str(self.args.rate_window)
        binary = ROOT / ".build" / "debug" / "meshlab"
        if not binary.exists():
            raise Failed(f"{binary} is missing: build first (swift build)")
        self.lab = Lab(binary, self.out, env)
        try:
            self.start_browser()
            self.info = self.lab.ready()
            self.r.measurements["lab_start_seconds"] = round(time.monotonic() - started, 2)
            print(f"browser test: lab ready in {self.r.measurements['lab_start_seconds']} s at {self.info['gateway']}", flush=True)
            self.step("sign in with a login link", self.sign_in_with_link)
            self.step("add a laptop; QR code equals the .conf", self.add_laptop_and_check_qr)
            self.step("bring the config up; pill turns green", self.bring_up_and_turn_green)
            self.step("rate limit message", self.rate_limit)
            self.step("admin: pasted token, node state and peer stats", self.admin_view)
            self.step("delete with confirmation", self.delete_device)
            self.step("Pritunl walk-through", self.pritunl_walk_through)
            self.step("re-issue an outdated config", self.reissue_outdated)
            self.step("rename, suspend, resume and expiry on the page", self.lifecycle_on_page)
            self.step("mesh off and on from the page", self.mesh_switch_on_page)
            self.step("nodes, enrollment, diagnostics picker", self.nodes_on_page)
            self.step("config too large for a QR code", self.config_too_large_for_qr)
            self.step("Team: pages, filters, audit log and export", self.team_pages_and_audit)
            self.step("Free plan: cap reached", self.cap_reached)
            self.step("phone width", self.phone_width)
            self.step("sign in through the identity provider", self.sign_in_with_provider)
            self.step("a refused sign-in", self.refused_provider_sign_in)
            self.step("tokens and console", self.hygiene)
            # After the console check: the blocked channel logs a failed request on purpose.
            self.step("live channel; polling while it is blocked", self.live_channel_and_fallback)
        finally:
            if self.driver:
                try:
                    self.driver.quit()
                except WebDriverException:
                    pass
            status = self.lab.close()
            # meshlab exits non-zero when a service, the node or a gateway crashed during the test.
            self.r.check(status == 0, f"meshlab stopped cleanly (exit {status}; a process crashed or did not stop? see {self.out / 'meshlab.log'})")
            self.r.measurements["total_seconds"] = round(time.monotonic() - started, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".test-output" / "browser"), help="output folder")
    parser.add_argument("--rate-window", type=int, default=300, help="rate-limit window of the lab, seconds")
    args = parser.parse_args()
    test = MeshPageTest(args)
    test.out.mkdir(parents=True, exist_ok=True)
    crashed = None
    try:
        test.run()
    except Failed as exc:
        crashed = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as a failure
        crashed = f"{type(exc).__name__}: {exc}"
        test.r.failures.append(crashed)
    r = test.r
    summary = {"passed": r.passed, "failed": len(r.failures), "failures": r.failures, "measurements": r.measurements}
    (test.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print("browser test: measurements " + json.dumps(r.measurements, ensure_ascii=False), flush=True)
    if crashed and not any(crashed in f for f in r.failures):
        r.failures.append(crashed)
    for f in r.failures:
        print(f"browser test: FAILED {f}", flush=True)
    print(f"browser test: screenshots and logs in {test.out}")
    print(f"browser: {r.passed} passed, {len(r.failures)} failed", flush=True)
    sys.exit(1 if r.failures else 0)


if __name__ == "__main__":
    main()
