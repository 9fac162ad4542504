#!/usr/bin/env node
// Adaptive media on a real, shaped network, in headless Chromium with an
// unmodified mediasoup-client app (web/test/compat/app.js).
//
// run-bandwidth-tests.sh runs this as root inside a private network
// namespace (unshare -n) that holds the server and a veth pair to a second
// namespace the test creates for the constrained subscriber; a tbf qdisc on
// the server side of the veth limits that subscriber's downlink. Another
// browser, on the server's side, publishes and subscribes unlimited.
//
// What it checks (issue 12):
//   1. a 1280x720 three-layer simulcast publisher; an unlimited subscriber
//      decodes the top layer (frameWidth > 640);
//   2. a subscriber behind 300 kbit/s keeps decoding (frames rise, no
//      freeze over 3 s) on a low layer (frameWidth <= 640), and is told
//      which layers it gets (consumer-layers-changed);
//   3. the limit lifted, it climbs back to the top layer;
//   4. dynacast: when every subscriber prefers the lowest layer, the
//      publisher is told (subscribed-layers) that the top layer is not
//      wanted.
//
// Environment (set by run-bandwidth-tests.sh):
//   PULSEWAVE_URL        server base URL on the veth address
//   PULSEWAVE_NETNS      the constrained subscriber's namespace
//   PULSEWAVE_VETH       the server-side veth (the tbf goes there)
//   PULSEWAVE_ARTIFACTS  logs (default web/test/artifacts)
//   CHROMIUM_PATH        browser (default /usr/bin/chromium)
//
// Exit status: 0 passed, 1 a check failed, 2 setup failed.

import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = (process.env.PULSEWAVE_URL ?? '').replace(/\/+$/, '');
const NETNS = process.env.PULSEWAVE_NETNS ?? '';
const VETH = process.env.PULSEWAVE_VETH ?? '';
const ARTIFACTS = resolve(process.env.PULSEWAVE_ARTIFACTS ?? join(WEB, 'test', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RUN = Date.now().toString(36);

const t0 = Date.now();
const log = (...a) => console.log(`[bandwidth ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fatal(message, err) {
  console.error(`\nFATAL: ${message}`);
  if (err) console.error(err.stack ?? err);
  process.exit(2);
}

class CheckError extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckError(message);
}

/** Polls `fn()` until it returns a truthy value that is not `{pending}`. */
async function waitFor(what, fn, { timeoutMs = 20_000, interval = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && !(typeof last === 'object' && 'pending' in last)) return last;
      if (last) last = last.pending;
    } catch (err) {
      last = `error: ${err.message}`;
    }
    if (Date.now() > deadline) {
      throw new CheckError(`${what} (not true after ${timeoutMs / 1000}s; last: ${JSON.stringify(last)})`);
    }
    await sleep(interval);
  }
}

async function call(p, method, ...args) {
  const r = await p.page.evaluate(
    async ([m, a]) => {
      try {
        return { ok: await window.compat[m](...a) };
      } catch (e) {
        return { error: e.message };
      }
    },
    [method, args],
  );
  if (r.error !== undefined) throw new CheckError(`${p.name}: ${method} failed: ${r.error}`);
  return r.ok;
}

/** Limits the constrained subscriber's downlink (`null`: no limit). */
function limitDownlink(rateKbit) {
  try {
    execFileSync('tc', ['qdisc', 'del', 'dev', VETH, 'root'], { stdio: 'ignore' });
  } catch {
    // no qdisc yet
  }
  if (rateKbit) {
    // A 100 ms queue at the rate, as a real access link.
    const burst = Math.max(1600, Math.round((rateKbit * 1000) / 8 / 100));
    execFileSync('tc', ['qdisc', 'add', 'dev', VETH, 'root', 'tbf', 'rate', `${rateKbit}kbit`, 'burst', String(burst), 'latency', '100ms']);
  }
  log(`downlink of the constrained subscriber: ${rateKbit ? `${rateKbit} kbit/s` : 'unlimited'}`);
}

async function launch(name, executablePath, secureOrigin) {
  const args = [
    // The app is served from the veth address: treat it as secure, so the
    // publisher may capture (getUserMedia needs a secure context).
    `--unsafely-treat-insecure-origin-as-secure=${secureOrigin}`,
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--disable-dev-shm-usage',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
  ];
  try {
    const browser = await chromium.launch({ executablePath, headless: true, args, timeout: 60_000 });
    log(`${name}: Chromium ${browser.version()}`);
    return browser;
  } catch (err) {
    fatal(`Chromium could not start for ${name} (${executablePath})`, err);
  }
}

async function openPage(browser, name, appUrl, { camera = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 640, height: 400 } });
  if (camera) await context.grantPermissions(['camera', 'microphone'], { origin: new URL(appUrl).origin });
  const page = await context.newPage();
  const p = { name, page, console: [] };
  page.on('console', (m) => {
    p.console.push(`${new Date().toISOString()} [${m.type()}] ${m.text()}`);
    if (p.console.length > 5000) p.console.splice(0, 1000);
  });
  await page.goto(appUrl, { timeout: 15_000 });
  await waitFor(`${name}: the app loads`, () => page.evaluate(() => window.compatReady === true), { timeoutMs: 10_000 });
  return p;
}

const inbound = async (p, producerId) => (await call(p, 'consumerStats', producerId))?.inbound ?? null;

/** Messages of `type` the page received. */
const received = async (p, type) =>
  (await call(p, 'messages')).filter((m) => m.dir === 'in' && m.msg.type === type).map((m) => m.msg);

/**
 * Samples framesDecoded every 500 ms for `ms`: returns the frames decoded,
 * the longest time without a new frame, and the widths seen.
 */
async function watchDecoding(p, producerId, ms) {
  const start = Date.now();
  let last = await inbound(p, producerId);
  let lastChange = Date.now();
  let worstFreeze = 0;
  const widths = new Set();
  const first = last?.framesDecoded ?? 0;
  while (Date.now() - start < ms) {
    await sleep(500);
    const i = await inbound(p, producerId);
    if (i?.frameWidth) widths.add(i.frameWidth);
    if ((i?.framesDecoded ?? 0) > (last?.framesDecoded ?? 0)) {
      worstFreeze = Math.max(worstFreeze, Date.now() - lastChange);
      lastChange = Date.now();
    }
    last = i;
  }
  worstFreeze = Math.max(worstFreeze, Date.now() - lastChange);
  return { frames: (last?.framesDecoded ?? 0) - first, worstFreeze, widths: [...widths], last };
}

async function main() {
  if (!BASE || !NETNS || !VETH) fatal('PULSEWAVE_URL, PULSEWAVE_NETNS and PULSEWAVE_VETH must be set (run web/test/run-bandwidth-tests.sh)');
  if (!existsSync(CHROMIUM)) fatal(`Chromium not found at ${CHROMIUM}`);
  await mkdir(ARTIFACTS, { recursive: true });
  const appJs = await build({
    entryPoints: [join(WEB, 'test', 'compat', 'app.js')],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: ['chrome111'],
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"' },
  }).then((o) => o.outputFiles[0].text);
  const host = new URL(BASE).hostname;
  const appServer = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/app.js') res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(appJs);
    else res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!doctype html><meta charset="utf-8"><body><script src="app.js"></script></body>');
  });
  await new Promise((r) => appServer.listen(0, '0.0.0.0', r));
  const port = appServer.address().port;
  const appUrl = `http://${host}:${port}/index.html`;

  // The constrained subscriber's browser runs in its namespace.
  const wrapper = join(tmpdir(), `pw-chromium-${process.pid}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NETNS} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);

  const origin = new URL(appUrl).origin;
  const near = await launch('publisher and unlimited subscriber', CHROMIUM, origin);
  const far = await launch(`constrained subscriber (namespace ${NETNS})`, wrapper, origin);
  const pages = [];
  let failed = null;
  try {
    const room = `bandwidth-${RUN}`;
    const free = await openPage(near, 'unlimited', appUrl);
    const slow = await openPage(far, 'constrained', appUrl);
    const pub = await openPage(near, 'publisher', appUrl, { camera: true });
    pages.push(free, slow, pub);
    // Tokens come from here, as from an app's backend: the open token
    // endpoint of a dev server on a non-loopback address offers no CORS.
    const token = async (identity) => {
      const r = await fetch(`${BASE}/api/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ identity, room }),
      });
      check(r.ok, `POST /api/token answered ${r.status}`);
      return (await r.json()).token;
    };
    await call(free, 'join', { server: BASE, room, identity: 'free', token: await token('free') });
    await call(slow, 'join', { server: BASE, room, identity: 'slow', token: await token('slow') });
    await call(pub, 'join', { server: BASE, room, identity: 'pub', token: await token('pub') });
    await call(pub, 'createSendTransport', { name: 'main' });
    limitDownlink(300);
    const { producerId } = await call(pub, 'produce', {
      track: { type: 'camera', width: 1280, height: 720, frameRate: 30 },
      source: 'camera',
      encodings: [
        { rid: 'r0', scaleResolutionDownBy: 4, maxBitrate: 150_000, scalabilityMode: 'L1T3' },
        { rid: 'r1', scaleResolutionDownBy: 2, maxBitrate: 500_000, scalabilityMode: 'L1T3' },
        { rid: 'r2', scaleResolutionDownBy: 1, maxBitrate: 1_200_000, scalabilityMode: 'L1T3' },
      ],
    });
    log(`published ${producerId} (1280x720, three layers, three temporal layers each)`);

    // 1. The unlimited subscriber gets the top layer.
    const top = await waitFor(
      'the unlimited subscriber decodes the top layer (frameWidth > 640)',
      async () => {
        const i = await inbound(free, producerId);
        return i?.frameWidth > 640 && i.framesDecoded > 0 ? i : { pending: i && { w: i.frameWidth, f: i.framesDecoded } };
      },
      { timeoutMs: 40_000 },
    );
    log(`PASS unlimited subscriber decodes ${top.frameWidth}x${top.frameHeight}`);

    // 2. The constrained one keeps decoding, on a low layer.
    await waitFor('the constrained subscriber decodes video', async () => {
      const i = await inbound(slow, producerId);
      return i?.framesDecoded > 0 ? i : { pending: i && { f: i.framesDecoded, lost: i.packetsLost } };
    }, { timeoutMs: 30_000 });
    // Let it settle, then watch 15 s.
    await sleep(8000);
    const settled = await watchDecoding(slow, producerId, 15_000);
    log(`constrained subscriber over 15 s: ${settled.frames} frames, longest freeze ${settled.worstFreeze} ms, widths ${settled.widths.join(',')}, lost ${settled.last?.packetsLost}`);
    check(settled.frames >= 60, `behind 300 kbit/s the subscriber decoded only ${settled.frames} frames in 15 s`);
    check(settled.worstFreeze <= 3000, `behind 300 kbit/s the video froze for ${settled.worstFreeze} ms`);
    check(settled.widths.every((w) => w <= 640), `behind 300 kbit/s the subscriber got ${settled.widths.join(',')} wide frames (a layer above 640)`);
    const layers = await received(slow, 'consumer-layers-changed');
    check(layers.length > 0, 'the constrained subscriber was never told its layers (consumer-layers-changed)');
    log(`PASS constrained subscriber keeps decoding on a low layer (last layers message: ${JSON.stringify(layers.at(-1))})`);

    // 3. The limit lifts: back on the top layer.
    limitDownlink(null);
    const back = await waitFor(
      'the subscriber climbs back to the top layer once its link is unlimited (frameWidth > 640)',
      async () => {
        const i = await inbound(slow, producerId);
        return i?.frameWidth > 640 ? i : { pending: i && { w: i.frameWidth } };
      },
      { timeoutMs: 45_000, interval: 500 },
    );
    log(`PASS back on ${back.frameWidth}x${back.frameHeight} after the limit lifted`);

    // 4. Dynacast: nobody wants the top layer.
    for (const p of [free, slow]) {
      const c = (await call(p, 'consumers')).find((x) => x.producerId === producerId);
      check(c?.consumerId, `${p.name}: no consumer of ${producerId}`);
      await call(p, 'request', { type: 'set-preferred-layers', consumerId: c.consumerId, spatialLayer: 0 });
    }
    const dyn = await waitFor(
      'the publisher is told that nobody wants its upper layers (subscribed-layers)',
      async () => {
        const m = (await received(pub, 'subscribed-layers')).filter((x) => x.producerId === producerId).at(-1);
        const upper = m?.layers?.filter((l) => l.spatialLayer > 0) ?? [];
        return m && upper.length > 0 && upper.every((l) => !l.active) ? m : { pending: m ?? 'none yet' };
      },
      { timeoutMs: 20_000 },
    );
    log(`PASS dynacast: ${JSON.stringify(dyn.layers)}`);
  } catch (err) {
    failed = err;
  } finally {
    for (const p of pages) {
      await writeFile(join(ARTIFACTS, `bandwidth-${p.name}-console.log`), p.console.join('\n') + '\n').catch(() => {});
    }
    await Promise.all([near.close(), far.close()]).catch(() => {});
    appServer.close();
    try {
      limitDownlink(null);
    } catch {
      // the namespace may be gone
    }
  }
  if (failed) {
    console.error(`\nFAIL: ${failed instanceof CheckError ? failed.message : failed.stack}`);
    process.exit(1);
  }
  log('all network checks passed');
}

main().catch((err) => fatal('unexpected error', err));
