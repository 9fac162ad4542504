#!/usr/bin/env node
// mediasoup-client compatibility matrix: headless Chromium pages run a raw
// mediasoup-client app (web/test/compat/app.js, bundled here with esbuild)
// against a running PulseWave server, and each case checks that the OTHER
// side decodes what one side publishes: framesDecoded rising and a decoded
// frameWidth on the subscriber's inbound-rtp for video, totalAudioEnergy
// rising for audio (the fake microphone beeps), the messages for data.
//
//   PULSEWAVE_URL=http://127.0.0.1:3000 node test/compat.mjs
//
// run-browser-tests.sh runs it after e2e.mjs against the same --dev server
// (PULSEWAVE_COMPAT_ONLY=1 runs only this matrix). The table of results is
// docs/compat.md.
//
// Environment:
//   PULSEWAVE_URL        server base URL (required); its POST /api/token must be open (--dev)
//   PULSEWAVE_ARTIFACTS  logs and evidence (default web/test/artifacts)
//   CHROMIUM_PATH        browser binary (default /usr/bin/chromium)
//   PULSEWAVE_COMPAT_TIMEOUT_MS  hard limit of the whole run (default 360000)
//   PULSEWAVE_COMPAT_CASES  a regular expression: run only the cases whose
//                        name matches (for iterating; such a run says so and
//                        never exits 0)
//
// Rules: every check waits for the expected state by polling, with a
// timeout that only bounds a failure; nothing is skipped: a case the browser
// cannot run is a failure unless it is in NOT_SUPPORTED below, whose
// entries are themselves asserted. Exit status: 0 all passed, 1 a case
// failed, 2 setup failed, 3 the run hit its time limit, 4 a filtered run.

import { AsyncLocalStorage } from 'node:async_hooks';
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = (process.env.PULSEWAVE_URL ?? '').replace(/\/+$/, '');
const ARTIFACTS = resolve(process.env.PULSEWAVE_ARTIFACTS ?? join(WEB, 'test', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RUN_TIMEOUT_MS = Number(process.env.PULSEWAVE_COMPAT_TIMEOUT_MS ?? 360_000);
const CASE_TIMEOUT_MS = 60_000;
const FILTER = process.env.PULSEWAVE_COMPAT_CASES ? new RegExp(process.env.PULSEWAVE_COMPAT_CASES, 'i') : null;
const RUN = Date.now().toString(36);

// ------------------------------------------------------------------ basics

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
const log = (...a) => console.log(`[compat ${elapsed()}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fatal(message, err) {
  console.error(`\nFATAL: ${message}`);
  if (err) console.error(err.stack ?? err);
  process.exit(2);
}

const results = [];
const evidence = { run: RUN, server: BASE, capabilities: null, publishes: [], cases: {} };

const watchdog = setTimeout(() => {
  console.error(`\nFATAL: the compatibility matrix exceeded ${RUN_TIMEOUT_MS / 1000}s; aborting`);
  if (currentCase && !results.some((r) => r.name === currentCase)) {
    results.push({ name: currentCase, ok: false, ms: 0, error: 'interrupted by the watchdog (PULSEWAVE_COMPAT_TIMEOUT_MS)' });
  }
  printSummary();
  writeFile(join(ARTIFACTS, 'compat-results.json'), JSON.stringify({ ...evidence, results }, null, 2))
    .catch(() => {})
    .finally(() => process.exit(3));
}, RUN_TIMEOUT_MS);

class CheckError extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckError(message);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckError(`${what}: timed out after ${ms / 1000}s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const json = (x) => JSON.stringify(x);

/** Compact "uri=id" list of header extensions. */
const extIds = (exts) =>
  (exts ?? []).map((h) => `${h.uri.replace(/^.*[/:]/, '')}=${h.id ?? h.preferredId}`).join(', ');

// ---------------------------------------------------------------- the pages

// A case that hit CASE_TIMEOUT_MS may still be running; its calls into the
// pages (which by then belong to the next case) are refused.
const caseContext = new AsyncLocalStorage();
let caseGeneration = 0;

/** Calls window.compat[method](...args) in the page; page errors become CheckErrors. */
async function call(p, method, ...args) {
  const ctx = caseContext.getStore();
  if (ctx && ctx.generation !== caseGeneration) throw new CheckError(`abandoned case: ${method} not called`);
  const r = await withTimeout(
    p.page.evaluate(
      async ([m, a]) => {
        try {
          return { ok: await window.compat[m](...a) };
        } catch (e) {
          return { error: e.message, publish: e.publish ?? null };
        }
      },
      [method, args],
    ),
    25_000,
    `${p.name}: compat.${method}`,
  );
  if (r.error !== undefined) {
    let message = `${p.name}: ${method} failed: ${r.error}`;
    if (r.publish) {
      message += `\n  the publish the browser sent: ${json(r.publish)}`;
      evidence.publishes.push({ case: currentCase, page: p.name, failed: r.error, publish: r.publish });
    }
    throw new CheckError(message);
  }
  return r.ok;
}

/**
 * Polls `fn()` (async, in node) until it returns a truthy value that is not
 * `{pending: detail}`; throws a CheckError naming `what` and the last detail.
 */
async function waitFor(what, fn, { timeoutMs = 15_000, interval = 250 } = {}) {
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
      throw new CheckError(`${what} (not true after ${timeoutMs / 1000}s; last: ${typeof last === 'string' ? last : json(last)})`);
    }
    await sleep(interval);
  }
}

async function launchBrowser() {
  if (!existsSync(CHROMIUM)) fatal(`Chromium not found at ${CHROMIUM}; install it (apt-get install -y chromium) or set CHROMIUM_PATH`);
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    // getDisplayMedia picks the (fake) screen without a picker.
    '--auto-select-desktop-capture-source=Entire screen',
    '--allow-loopback-in-peer-connection',
    '--disable-dev-shm-usage',
    '--autoplay-policy=no-user-gesture-required',
  ];
  const onlyLoopback = Object.values(networkInterfaces())
    .flat()
    .every((i) => i.internal);
  if (!onlyLoopback) args.push('--disable-features=WebRtcHideLocalIpsWithMdns');
  log(`network: ${onlyLoopback ? 'loopback only (network namespace)' : 'host network'}`);
  try {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 60_000 });
    log(`Chromium ${browser.version()} started`);
    return browser;
  } catch (err) {
    fatal(`Chromium could not start (${CHROMIUM})`, err);
  }
}

async function bundleApp() {
  const out = await build({
    entryPoints: [join(WEB, 'test', 'compat', 'app.js')],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: ['chrome111'],
    sourcemap: 'inline',
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  return out.outputFiles[0].text;
}

const pages = [];
let appUrl = null;

async function openPage(context, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const p = { name, page, console: [] };
  page.on('console', (m) => {
    p.console.push(`${new Date().toISOString()} [${m.type()}] ${m.text()}`);
    if (p.console.length > 5000) p.console.splice(0, 1000);
  });
  page.on('pageerror', (e) => p.console.push(`${new Date().toISOString()} [pageerror] ${e.message}`));
  pages.push(p);
  return p;
}

/** Loads a fresh app in the page (closing everything the last case left). */
async function fresh(p) {
  const ctx = caseContext.getStore();
  if (ctx && ctx.generation !== caseGeneration) throw new CheckError('abandoned case: no navigation');
  p.console.push(`${new Date().toISOString()} ---- case: ${currentCase}`);
  await p.page.goto(appUrl, { timeout: 15_000 });
  await waitFor(`${p.name}: the compat app loads`, () => p.page.evaluate(() => window.compatReady === true), { timeoutMs: 10_000 });
}

// ---------------------------------------------------------------- cases

let currentCase = '';
let caseNo = 0;
let notes = [];

function note(text) {
  notes.push(text);
  log(`   ${text}`);
}

async function runCase(name, fn) {
  if (FILTER && !FILTER.test(name)) {
    results.push({ name, ok: null, ms: 0, filtered: true });
    return;
  }
  caseNo += 1;
  currentCase = name;
  notes = [];
  const room = `compat-${RUN}-${caseNo}`;
  const start = Date.now();
  log(`--- ${name} (room ${room})`);
  try {
    caseGeneration += 1;
    const generation = caseGeneration;
    await withTimeout(caseContext.run({ generation }, () => fn(room)), CASE_TIMEOUT_MS, `case "${name}"`);
    results.push({ name, ok: true, ms: Date.now() - start, room, notes });
    log(`PASS ${name}`);
  } catch (err) {
    let message = err instanceof CheckError ? err.message : `${err.message}\n${err.stack ?? ''}`;
    // Asynchronous failures in the pages (auto-subscribe, consume) explain many timeouts.
    for (const p of pages) {
      const errors = await withTimeout(p.page.evaluate(() => window.compat?.errors() ?? []), 5000, 'errors').catch(() => []);
      if (errors.length) message += `\n  ${p.name} page errors: ${errors.map((e) => `${e.where}: ${e.message}`).join(' | ')}`;
    }
    results.push({ name, ok: false, ms: Date.now() - start, room, notes, error: message });
    log(`FAIL ${name}\n       ${message.split('\n').join('\n       ')}`);
    // Evidence: every signaling message of both pages in this case.
    const dump = {};
    for (const p of pages) {
      dump[p.name] = await withTimeout(p.page.evaluate(() => window.compat?.messages() ?? []), 5000, 'messages').catch(() => null);
    }
    const file = join(ARTIFACTS, `compat-fail-${caseNo}.json`);
    await writeFile(file, JSON.stringify({ case: name, room, error: message, messages: dump }, null, 2)).catch(() => {});
    log(`       signaling messages of this case: ${file}`);
  }
}

function printSummary() {
  const ran = results.filter((r) => !r.filtered);
  const failed = ran.filter((r) => !r.ok);
  const filtered = results.length - ran.length;
  console.log('\n============== mediasoup-client compatibility matrix ==============');
  for (const r of ran) {
    console.log(`${r.ok ? 'PASS' : 'FAIL'}  ${r.name}  (${(r.ms / 1000).toFixed(1)}s)`);
    if (!r.ok) console.log(`      -> ${r.error.split('\n')[0]}`);
  }
  if (filtered) console.log(`NOT A FULL RUN: ${filtered} cases not selected by PULSEWAVE_COMPAT_CASES`);
  console.log(`${ran.length - failed.length} passed, ${failed.length} failed (${elapsed()}); artifacts in ${ARTIFACTS}`);
  return { failed: failed.length, filtered };
}

// ------------------------------------------------------------ media checks

const CAM = { type: 'camera', width: 320, height: 180, frameRate: 15 };
const CAM_640 = { type: 'camera', width: 640, height: 360, frameRate: 15 };
const CAM_960 = { type: 'camera', width: 960, height: 540, frameRate: 15 };
const MIC = { type: 'mic' };
const SCREEN = { type: 'screen', width: 640, height: 360, frameRate: 10 };

let pub;
let sub;

/** Fresh pages; the subscriber joins first (it auto-subscribes), then the publisher with a send transport. */
async function setupPair(room, { subJoin = {}, pubJoin = {}, sendTransport = {} } = {}) {
  await Promise.all([fresh(pub), fresh(sub)]);
  await call(sub, 'join', { server: BASE, room, identity: `sub-${caseNo}`, ...subJoin });
  await call(pub, 'join', { server: BASE, room, identity: `pub-${caseNo}`, ...pubJoin });
  await call(pub, 'createSendTransport', { name: 'main', ...sendTransport });
}

/** produce() on the publisher; records and returns what it sent. */
async function publish(opts) {
  const r = await call(pub, 'produce', opts);
  evidence.publishes.push({ case: currentCase, page: pub.name, producerId: r.producerId, publish: r.publish });
  return r;
}

async function consumerStats(p, producerId) {
  return call(p, 'consumerStats', producerId);
}

/**
 * Waits until `p` decodes the video of `producerId`: framesDecoded > 0, a
 * frameWidth > 0 (and `cond(inbound)` if given), then framesDecoded rising
 * by 5 more. Returns the inbound stats.
 */
async function expectVideo(p, producerId, what, { cond = null, condText = '', codec = null, timeoutMs = 15_000 } = {}) {
  const first = await waitFor(
    `${p.name} decodes ${what}${condText ? ` (${condText})` : ''}`,
    async () => {
      const st = await consumerStats(p, producerId);
      if (!st) return { pending: 'no consumer yet' };
      const i = st.inbound;
      if (!i || !(i.framesDecoded > 0) || !(i.frameWidth > 0)) return { pending: i ?? `no inbound-rtp (report: ${st.reportTypes})` };
      if (cond && !cond(i)) return { pending: i };
      return i;
    },
    { timeoutMs },
  );
  const rising = await waitFor(
    `${p.name}: framesDecoded of ${what} keeps rising after ${first.framesDecoded}`,
    async () => {
      const i = (await consumerStats(p, producerId))?.inbound;
      return i && i.framesDecoded >= first.framesDecoded + 5 ? i : { pending: i && { framesDecoded: i.framesDecoded } };
    },
  );
  if (codec) check(rising.codec?.toLowerCase() === codec.toLowerCase(), `${p.name} decodes ${what} as ${rising.codec}, expected ${codec}`);
  return rising;
}

/**
 * Waits until `p` receives the audio of `producerId`: packets arriving and
 * totalAudioEnergy rising. With `audioLevel`, also waits until the
 * receiver's getSynchronizationSources() reports an audioLevel > 0 (from the
 * RFC 6464 header extension).
 */
async function expectAudio(p, producerId, what, { audioLevel = false, codec = 'audio/opus' } = {}) {
  const first = await waitFor(`${p.name} receives ${what} (packetsReceived > 0)`, async () => {
    const st = await consumerStats(p, producerId);
    if (!st) return { pending: 'no consumer yet' };
    return st.inbound?.packetsReceived > 0 ? st.inbound : { pending: st.inbound ?? st.reportTypes };
  });
  const energy = await waitFor(`${p.name}: totalAudioEnergy of ${what} rises (the fake microphone beeps)`, async () => {
    const i = (await consumerStats(p, producerId))?.inbound;
    return i && i.totalAudioEnergy > first.totalAudioEnergy && i.packetsReceived > first.packetsReceived
      ? i
      : { pending: i && { totalAudioEnergy: i.totalAudioEnergy, packetsReceived: i.packetsReceived } };
  });
  if (codec) check(energy.codec?.toLowerCase() === codec.toLowerCase(), `${p.name} decodes ${what} as ${energy.codec}, expected ${codec}`);
  let level = null;
  if (audioLevel) {
    level = await waitFor(
      `${p.name}: the audio receiver of ${what} reports an audioLevel > 0.01 in getSynchronizationSources() (RFC 6464 audio-level extension)`,
      async () => {
        const st = await consumerStats(p, producerId);
        const src = st?.synchronizationSources ?? [];
        // During a beep of the fake microphone the level is 0.01 .. 1.
        const hit = src.find((x) => typeof x.audioLevel === 'number' && x.audioLevel > 0.01);
        return hit ?? { pending: src };
      },
    );
  }
  return { inbound: energy, level };
}

/** Waits until `field` of the inbound stats stops changing for `quietMs`. */
async function expectStalled(p, producerId, field, what, { quietMs = 1500, timeoutMs = 12_000 } = {}) {
  let value = null;
  let since = Date.now();
  return waitFor(
    `${p.name}: ${field} of ${what} stops rising (unchanged for ${quietMs / 1000}s)`,
    async () => {
      const v = (await consumerStats(p, producerId))?.inbound?.[field];
      if (v !== value) {
        value = v;
        since = Date.now();
      }
      return Date.now() - since >= quietMs ? { value } : { pending: { [field]: v } };
    },
    { timeoutMs, interval: 200 },
  );
}

/** Waits until a publisher-side stat (sum over outbound-rtp) stops or keeps rising. */
async function producerPacketsSent(producerId) {
  const st = await call(pub, 'producerStats', producerId);
  return st.reduce((a, x) => a + x.packetsSent, 0);
}

async function expectEvent(p, type, producerId, what) {
  return waitFor(`${p.name} gets ${type} for ${what}`, async () => {
    const ev = await call(p, 'events', [type]);
    return ev.find((e) => e.producerId === producerId) ?? { pending: `${ev.length} ${type} events` };
  });
}

/** Waits until the subscriber's consumer of `producerId` is closed. */
async function expectConsumerClosed(p, producerId, what) {
  return waitFor(`${p.name} closes its consumer of ${what}`, async () => {
    const c = (await call(p, 'consumers')).find((x) => x.producerId === producerId);
    return c?.closed ? c : { pending: c ?? 'no consumer' };
  });
}

function describePublish(r) {
  const rp = r.publish.rtpParameters;
  return `mid ${rp.mid}, codecs ${rp.codecs.map((c) => `${c.mimeType}/${c.payloadType}`).join(' ')}, ext {${extIds(rp.headerExtensions)}}, encodings ${json(rp.encodings)}`;
}

// ------------------------------------------------- browser capabilities

/** What this Chromium must be able to send (RTCRtpSender.getCapabilities('video')). */
const EXPECTED_SEND_VIDEO = [
  ['VP8', (c) => c.startsWith('video/VP8')],
  ['VP9 profile-id=0', (c) => c.startsWith('video/VP9') && c.includes('profile-id=0')],
  ['VP9 profile-id=2', (c) => c.startsWith('video/VP9') && c.includes('profile-id=2')],
  ['H264 42e01f packetization-mode=1', (c) => c.startsWith('video/H264') && c.includes('profile-level-id=42e01f') && c.includes('packetization-mode=1')],
  ['H264 4d001f (Main) packetization-mode=1', (c) => c.startsWith('video/H264') && c.includes('profile-level-id=4d001f') && c.includes('packetization-mode=1')],
  ['AV1', (c) => c.startsWith('video/AV1')],
];

/**
 * Things this browser does not do, asserted so that a Chromium that starts
 * doing them fails here (and docs/compat.md gets updated). Each entry:
 * name, reason, and check(caps) that returns true while it is still absent.
 */
const NOT_SUPPORTED = [
  {
    name: 'RTCRtpSender.getCapabilities() lists no scalabilityModes',
    reason:
      'Chromium 156 does not expose scalabilityModes in getCapabilities() (the field is absent); support is found by producing and reading outbound-rtp.scalabilityMode',
    check: (caps) => Object.keys(caps.sendVideoScalabilityModes).length === 0,
  },
  {
    name: 'H264 High (profile-level-id 64xxxx) is not sendable',
    reason: 'Chromium\'s software H264 encoder (OpenH264) offers Constrained Baseline, Baseline and Main only',
    check: (caps) => !caps.sendVideo.some((c) => c.startsWith('video/H264') && /profile-level-id=64/.test(c)),
  },
];

// -------------------------------------------------------------------- main

async function main() {
  if (!BASE) fatal('PULSEWAVE_URL is not set (e.g. PULSEWAVE_URL=http://127.0.0.1:3000)');
  await mkdir(ARTIFACTS, { recursive: true });
  // Evidence of an earlier run must not be mistaken for this one's.
  for (const f of await readdir(ARTIFACTS)) {
    if (/^compat-fail-\d+\.json$/.test(f)) await rm(join(ARTIFACTS, f), { force: true });
  }
  try {
    const health = await withTimeout(fetch(`${BASE}/healthz`), 5000, 'GET /healthz');
    if (!health.ok) fatal(`GET ${BASE}/healthz answered HTTP ${health.status}`);
  } catch (err) {
    fatal(`the server at ${BASE} is unreachable`, err);
  }
  let appJs;
  try {
    appJs = await bundleApp();
  } catch (err) {
    fatal('esbuild could not bundle web/test/compat/app.js (run npm ci in web/)', err);
  }
  log(`server ${BASE}, run ${RUN}, app bundle ${(appJs.length / 1024).toFixed(0)} KiB, artifacts ${ARTIFACTS}`);

  // The app is served from memory by a loopback HTTP server of its own, as
  // an application's web server would; it reaches PulseWave cross-origin
  // (POST /api/token with CORS, the WebSocket).
  const appServer = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/app.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' }).end(appJs);
    } else if (path === '/' || path === '/index.html') {
      res
        .writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' })
        .end('<!doctype html><meta charset="utf-8"><title>mediasoup-client compat</title><body><script src="app.js"></script></body>');
    } else {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((r) => appServer.listen(0, '127.0.0.1', r));
  appUrl = `http://127.0.0.1:${appServer.address().port}/index.html`;

  const browser = await launchBrowser();
  try {
    const context = await browser.newContext({ viewport: { width: 640, height: 400 } });
    await context.grantPermissions(['camera', 'microphone'], { origin: new URL(appUrl).origin });
    pub = await openPage(context, 'publisher');
    sub = await openPage(context, 'subscriber');
    await runCases();
  } finally {
    for (const p of pages) {
      await writeFile(join(ARTIFACTS, `compat-${p.name}-console.log`), p.console.join('\n') + '\n').catch(() => {});
    }
    await withTimeout(browser.close(), 15_000, 'browser.close').catch((err) => log(`browser.close: ${err.message}`));
    appServer.close();
  }
}

const VP9 = { mimeType: 'video/VP9', parameters: { 'profile-id': 0 } };

async function runCases() {
  // ------------------------------------------------------ capabilities
  let caps = null;
  await runCase('browser: codecs this Chromium sends and receives', async (room) => {
    await fresh(pub);
    const joined = await call(pub, 'join', { server: BASE, room, identity: `caps-${caseNo}` });
    caps = await call(pub, 'capabilities');
    evidence.capabilities = { ...caps, router: joined.routerCodecs, routerHeaderExtensions: joined.routerHeaderExtensions };
    note(`${caps.userAgent}`);
    note(`mediasoup-client ${joined.mediasoupClientVersion}, handler ${joined.handlerName}`);
    note(`send video: ${caps.sendVideo.join(' | ')}`);
    note(`recv video: ${caps.recvVideo.join(' | ')}`);
    note(`send audio: ${caps.sendAudio.join(' | ')}`);
    note(`router codecs: ${joined.routerCodecs.map((c) => `${c.mimeType}/${c.preferredPayloadType} ${json(c.parameters ?? {})}`).join(' | ')}`);
    note(`router header extensions: ${joined.routerHeaderExtensions.map((h) => `${h.kind}:${h.uri.replace(/^.*[/:]/, '')}=${h.preferredId}`).join(', ')}`);
    note(`device.rtpCapabilities codecs: ${caps.device.rtpCapabilities.join(' | ')}`);
    const missingSend = EXPECTED_SEND_VIDEO.filter(([, f]) => !caps.sendVideo.some(f)).map(([n]) => n);
    const missingRecv = EXPECTED_SEND_VIDEO.filter(([, f]) => !caps.recvVideo.some(f)).map(([n]) => n);
    check(missingSend.length === 0, `this Chromium no longer sends ${missingSend.join(', ')}: update docs/compat.md and the codec cases`);
    check(missingRecv.length === 0, `this Chromium no longer receives ${missingRecv.join(', ')}`);
    check(caps.sendAudio.some((c) => c.startsWith('audio/opus')), 'no Opus in RTCRtpSender.getCapabilities("audio")');
    check(caps.device.canProduceVideo && caps.device.canProduceAudio, `device.canProduce: video ${caps.device.canProduceVideo}, audio ${caps.device.canProduceAudio}`);
  });

  for (const ns of NOT_SUPPORTED) {
    await runCase(`not supported by this browser: ${ns.name}`, async () => {
      if (!caps) {
        await fresh(pub);
        caps = await call(pub, 'capabilities');
      }
      check(ns.check(caps), `no longer true (${ns.reason}); this Chromium changed: update docs/compat.md and NOT_SUPPORTED`);
      note(ns.reason);
    });
  }

  // ------------------------------------------------- orders and combinations
  await runCase('order: video then audio on one send transport (acceptance: audio-level reaches the subscriber)', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    note(`first publish (video) rtpParameters: ${json(v.publish.rtpParameters)}`);
    const a = await publish({ track: MIC, source: 'microphone' });
    note(`second publish (audio) rtpParameters: ${json(a.publish.rtpParameters)}`);
    evidence.cases.videoFirst = { video: v.publish.rtpParameters, audio: a.publish.rtpParameters };
    const vi = await expectVideo(sub, v.producerId, 'the camera', { codec: 'video/VP8' });
    const { inbound, level } = await expectAudio(sub, a.producerId, 'the microphone', { audioLevel: true });
    const consumers = await call(sub, 'consumers');
    const ac = consumers.find((c) => c.producerId === a.producerId);
    note(`subscriber: video ${vi.frameWidth}x${vi.frameHeight} ${vi.framesDecoded} frames; audio energy ${inbound.totalAudioEnergy.toFixed(4)}; ssrc audioLevel ${level.audioLevel}`);
    note(`audio consumer header extensions: {${extIds(ac?.rtpParameters.headerExtensions)}}`);
  });

  await runCase('order: audio then video on one send transport', async (room) => {
    await setupPair(room);
    const a = await publish({ track: MIC, source: 'microphone' });
    note(`first publish (audio) rtpParameters: ${json(a.publish.rtpParameters)}`);
    const v = await publish({ track: CAM, source: 'camera' });
    note(`second publish (video) rtpParameters: ${json(v.publish.rtpParameters)}`);
    evidence.cases.audioFirst = { audio: a.publish.rtpParameters, video: v.publish.rtpParameters };
    await expectAudio(sub, a.producerId, 'the microphone', { audioLevel: true });
    await expectVideo(sub, v.producerId, 'the camera', { codec: 'video/VP8' });
  });

  await runCase('order: video only', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    note(`publish: ${describePublish(v)}`);
    await expectVideo(sub, v.producerId, 'the camera');
  });

  await runCase('order: audio only', async (room) => {
    await setupPair(room);
    const a = await publish({ track: MIC, source: 'microphone' });
    note(`publish: ${describePublish(a)}`);
    await expectAudio(sub, a.producerId, 'the microphone', { audioLevel: true });
  });

  await runCase('order: screen share alone (getDisplayMedia)', async (room) => {
    await setupPair(room);
    const sc = await publish({ track: SCREEN, source: 'screen' });
    note(`publish: ${describePublish(sc)}`);
    check(sc.track?.source === 'screen', `published.track.source is ${sc.track?.source}`);
    const i = await expectVideo(sub, sc.producerId, 'the screen share');
    note(`screen decoded at ${i.frameWidth}x${i.frameHeight}`);
  });

  await runCase('order: camera + screen share + microphone on one send transport', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    const sc = await publish({ track: SCREEN, source: 'screen' });
    const a = await publish({ track: MIC, source: 'microphone' });
    note(`mids: camera ${v.mid}, screen ${sc.mid}, microphone ${a.mid}`);
    await expectVideo(sub, v.producerId, 'the camera');
    await expectVideo(sub, sc.producerId, 'the screen share');
    await expectAudio(sub, a.producerId, 'the microphone');
  });

  await runCase('order: unpublish then publish again (camera; the new producer decodes)', async (room) => {
    await setupPair(room);
    const v1 = await publish({ track: CAM, source: 'camera' });
    await expectVideo(sub, v1.producerId, 'the first camera producer');
    const reply = await call(pub, 'unpublish', v1.producerId);
    check(reply.type === 'track-unpublished', `unpublish answered ${reply.type}`);
    await expectEvent(sub, 'track-unpublished', v1.producerId, 'the first camera producer');
    await expectConsumerClosed(sub, v1.producerId, 'the first camera producer');
    const oldTrack = await call(pub, 'trackInfo', v1.trackId);
    check(oldTrack.readyState === 'ended', `stopTracks defaults to true, but the unpublished track is ${oldTrack.readyState}`);
    const v2 = await publish({ track: CAM, source: 'camera' });
    note(`mid of the first producer ${v1.mid}, of the second ${v2.mid} (${v1.mid === v2.mid ? 'Chromium REUSED the mid' : 'a new mid: Chromium does not reuse it'})`);
    note(`second publish: ${describePublish(v2)}`);
    evidence.cases.republishVideo = { first: v1.publish.rtpParameters, second: v2.publish.rtpParameters };
    await expectVideo(sub, v2.producerId, 'the second camera producer');
    const subConsumers = await call(sub, 'consumers');
    const mids = [v1, v2].map((v) => subConsumers.find((c) => c.producerId === v.producerId)?.rtpParameters.mid);
    note(`the subscriber's consumer mids (chosen by the server): ${mids.join(' -> ')}`);
    // docs/compat.md says Chromium never reuses a closed sender's mid (the
    // m-section is recycled with a new mid). If that changes, the reused-mid
    // path is exercised here and the doc must say so.
    check(v2.mid !== v1.mid, `Chromium reused mid ${v1.mid} for the new producer (and it decodes): update docs/compat.md`);
  });

  await runCase('order: unpublish then publish again (microphone; the new producer decodes)', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    const a1 = await publish({ track: MIC, source: 'microphone' });
    await expectAudio(sub, a1.producerId, 'the first microphone producer');
    await call(pub, 'unpublish', a1.producerId);
    await expectConsumerClosed(sub, a1.producerId, 'the first microphone producer');
    const a2 = await publish({ track: MIC, source: 'microphone' });
    note(`mid of the first microphone ${a1.mid}, of the second ${a2.mid} (${a1.mid === a2.mid ? 'REUSED' : 'new'}); camera mid ${v.mid}`);
    note(`second publish: ${describePublish(a2)}`);
    await expectAudio(sub, a2.producerId, 'the second microphone producer', { audioLevel: true });
    await expectVideo(sub, v.producerId, 'the camera (still)');
  });

  await runCase('order: a second send transport in the same participant', async (room) => {
    await setupPair(room);
    await call(pub, 'createSendTransport', { name: 'second' });
    const v = await publish({ track: CAM, source: 'camera' });
    const a = await publish({ track: MIC, source: 'microphone', transport: 'second' });
    const sc = await publish({ track: SCREEN, source: 'screen', transport: 'second' });
    note(`main: camera mid ${v.mid} ext {${extIds(v.publish.rtpParameters.headerExtensions)}}`);
    note(`second: microphone mid ${a.mid} ext {${extIds(a.publish.rtpParameters.headerExtensions)}}, screen mid ${sc.mid}`);
    check(v.publish.transportId !== a.publish.transportId, 'both publishes name the same transport');
    await expectVideo(sub, v.producerId, 'the camera (transport 1)');
    await expectAudio(sub, a.producerId, 'the microphone (transport 2)');
    await expectVideo(sub, sc.producerId, 'the screen share (transport 2)');
  });

  await runCase('order: concurrent produce() of camera and microphone (Promise.all)', async (room) => {
    await setupPair(room);
    const both = await withTimeout(
      pub.page.evaluate(
        async ([cam, mic]) => {
          try {
            const [v, a] = await Promise.all([
              window.compat.produce({ track: cam, source: 'camera' }),
              window.compat.produce({ track: mic, source: 'microphone' }),
            ]);
            return { v, a };
          } catch (e) {
            return { error: e.message, publish: e.publish ?? null };
          }
        },
        [CAM, MIC],
      ),
      25_000,
      'concurrent produce',
    );
    check(!both.error, `concurrent produce failed: ${both.error}${both.publish ? `\n  the publish the browser sent: ${json(both.publish)}` : ''}`);
    note(`camera mid ${both.v.mid} ext {${extIds(both.v.publish.rtpParameters.headerExtensions)}}; microphone mid ${both.a.mid} ext {${extIds(both.a.publish.rtpParameters.headerExtensions)}}`);
    await expectVideo(sub, both.v.producerId, 'the camera');
    await expectAudio(sub, both.a.producerId, 'the microphone', { audioLevel: true });
  });

  await runCase('order: three video codecs on one send transport (VP8 camera, VP9 screen, H264 camera)', async (room) => {
    await setupPair(room);
    const v8 = await publish({ track: CAM, source: 'camera', codec: { mimeType: 'video/VP8' } });
    const v9 = await publish({ track: SCREEN, source: 'screen', codec: VP9 });
    const h264 = await publish({ track: CAM, source: 'camera', codec: { mimeType: 'video/H264', parameters: { 'profile-level-id': '42e01f' } } });
    note(`payload types: VP8 ${v8.publish.rtpParameters.codecs[0].payloadType}, VP9 ${v9.publish.rtpParameters.codecs[0].payloadType}, H264 ${h264.publish.rtpParameters.codecs[0].payloadType}`);
    await expectVideo(sub, v8.producerId, 'the VP8 camera', { codec: 'video/VP8' });
    await expectVideo(sub, v9.producerId, 'the VP9 screen', { codec: 'video/VP9' });
    await expectVideo(sub, h264.producerId, 'the H264 camera', { codec: 'video/H264' });
  });

  await runCase('order: unpublish the microphone, then publish a camera (recycled m-section of another kind)', async (room) => {
    await setupPair(room);
    const a = await publish({ track: MIC, source: 'microphone' });
    await expectAudio(sub, a.producerId, 'the microphone');
    await call(pub, 'unpublish', a.producerId);
    await expectConsumerClosed(sub, a.producerId, 'the microphone');
    const v = await publish({ track: CAM, source: 'camera' });
    note(`microphone mid ${a.mid} ext {${extIds(a.publish.rtpParameters.headerExtensions)}}; camera mid ${v.mid} ext {${extIds(v.publish.rtpParameters.headerExtensions)}}`);
    await expectVideo(sub, v.producerId, 'the camera');
    const a2 = await publish({ track: MIC, source: 'microphone' });
    await expectAudio(sub, a2.producerId, 'a new microphone', { audioLevel: true });
  });

  await runCase('late subscriber: joins after camera and microphone were published (joined.room.participants)', async (room) => {
    await Promise.all([fresh(pub), fresh(sub)]);
    await call(pub, 'join', { server: BASE, room, identity: `pub-${caseNo}` });
    await call(pub, 'createSendTransport', { name: 'main' });
    const v = await publish({ track: CAM, source: 'camera' });
    const a = await publish({ track: MIC, source: 'microphone' });
    await call(sub, 'join', { server: BASE, room, identity: `sub-${caseNo}` });
    await expectVideo(sub, v.producerId, 'the camera published before it joined');
    await expectAudio(sub, a.producerId, 'the microphone published before it joined', { audioLevel: true });
  });

  await runCase('two-way: both participants publish camera and microphone and decode each other', async (room) => {
    await setupPair(room);
    await call(sub, 'createSendTransport', { name: 'main' });
    const pv = await publish({ track: CAM, source: 'camera' });
    const pa = await publish({ track: MIC, source: 'microphone' });
    // The other side publishes in the other order.
    const sa = await call(sub, 'produce', { track: MIC, source: 'microphone' });
    const sv = await call(sub, 'produce', { track: CAM, source: 'camera' });
    await expectVideo(sub, pv.producerId, "the publisher's camera");
    await expectAudio(sub, pa.producerId, "the publisher's microphone");
    await expectVideo(pub, sv.producerId, "the subscriber's camera");
    await expectAudio(pub, sa.producerId, "the subscriber's microphone", { audioLevel: true });
  });

  await runCase('order: create-transport with rtpCapabilities (device.sendRtpCapabilities, as older clients sent it), video then audio', async (room) => {
    await setupPair(room, { sendTransport: { withRtpCapabilities: true } });
    const v = await publish({ track: CAM, source: 'camera' });
    const a = await publish({ track: MIC, source: 'microphone' });
    note(`video: ${describePublish(v)}`);
    note(`audio: ${describePublish(a)}`);
    await expectVideo(sub, v.producerId, 'the camera');
    await expectAudio(sub, a.producerId, 'the microphone', { audioLevel: true });
  });

  // ------------------------------------------------------------ codecs
  const videoCodecCases = [
    ['VP8', { mimeType: 'video/VP8' }],
    ['VP9 profile 0', { mimeType: 'video/VP9', parameters: { 'profile-id': 0 } }],
    ['VP9 profile 2', { mimeType: 'video/VP9', parameters: { 'profile-id': 2 } }],
    ['H264 42e01f (constrained baseline)', { mimeType: 'video/H264', parameters: { 'profile-level-id': '42e01f' } }],
    // The router offers Main as 4d0032; with level-asymmetry-allowed,
    // mediasoup-client lists it in device.rtpCapabilities with the browser's
    // own level, 4d001f.
    ['H264 Main (router 4d0032, device 4d001f)', { mimeType: 'video/H264', parameters: { 'profile-level-id': '4d001f' } }],
    ['AV1', { mimeType: 'video/AV1' }],
  ];
  for (const [label, codec] of videoCodecCases) {
    await runCase(`codec: ${label} (produce codec from device.rtpCapabilities.codecs)`, async (room) => {
      await setupPair(room);
      const v = await publish({ track: CAM, source: 'camera', codec });
      const sent = v.publish.rtpParameters.codecs[0];
      note(`publish codec ${sent.mimeType}/${sent.payloadType} ${json(sent.parameters)}; track mimeType ${v.track?.mimeType}`);
      const i = await expectVideo(sub, v.producerId, `the ${label} camera`, { codec: codec.mimeType });
      const out = await call(pub, 'producerStats', v.producerId);
      note(`encoder ${out[0]?.encoderImplementation} (${out[0]?.codec} ${out[0]?.sdpFmtpLine ?? ''}); subscriber decodes ${i.codec} ${i.sdpFmtpLine ?? ''} at ${i.frameWidth}x${i.frameHeight}`);
    });
  }

  await runCase('codec: Opus (produce codec from device.rtpCapabilities.codecs)', async (room) => {
    await setupPair(room);
    const a = await publish({ track: MIC, source: 'microphone', codec: { mimeType: 'audio/opus' } });
    note(`publish codec ${json(a.publish.rtpParameters.codecs[0])}`);
    await expectAudio(sub, a.producerId, 'the Opus microphone', { codec: 'audio/opus' });
  });

  // --------------------------------------------------- simulcast and SVC
  const SIMULCAST = [{ scaleResolutionDownBy: 4 }, { scaleResolutionDownBy: 2 }, { scaleResolutionDownBy: 1 }];
  const layerText = (st) => st.map((x) => `${x.rid}:${x.frameWidth ?? '-'}x${x.frameHeight ?? '-'} f${x.framesEncoded ?? 0}`).join(', ');

  await runCase('simulcast: 3 rid encodings (scaleResolutionDownBy 4/2/1) on a 640x360 camera', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM_640, source: 'camera', encodings: SIMULCAST });
    note(`publish: ${describePublish(v)}`);
    check(v.track?.simulcast === true, `published.track.simulcast is ${v.track?.simulcast}`);
    const rids = v.publish.rtpParameters.encodings.map((e) => e.rid).join(',');
    check(rids === 'r0,r1,r2', `the publish has encodings with rids ${rids}`);
    const layers = await waitFor('the publisher sends r0 (160x90) and r1 (320x180)', async () => {
      const st = await call(pub, 'producerStats', v.producerId);
      const sending = st.filter((x) => x.framesEncoded > 0).map((x) => x.rid).join(',');
      return sending.startsWith('r0,r1') ? st : { pending: layerText(st) };
    }, { timeoutMs: 20_000 });
    const i = await expectVideo(sub, v.producerId, 'the simulcast camera at the best layer sent (320x180)', {
      cond: (x) => x.frameWidth >= 320,
      condText: 'frameWidth >= 320',
      timeoutMs: 20_000,
    });
    // Chromium's simulcast layer limit (see NOT_SUPPORTED in docs/compat.md):
    // at 640x360 it sends two layers, so r2 (640x360) never carries frames.
    const after = await call(pub, 'producerStats', v.producerId);
    const bw = await call(pub, 'senderBandwidth', v.producerId);
    note(`publisher layers: ${layerText(after)}; availableOutgoingBitrate ${bw?.availableOutgoingBitrate}`);
    note(`subscriber decodes ${i.frameWidth}x${i.frameHeight}`);
    const r2 = after.find((x) => x.rid === 'r2');
    check(
      !(r2?.framesEncoded > 0),
      `Chromium now encodes the third layer at 640x360 (${layerText(after)}): update NOT_SUPPORTED/docs/compat.md and expect 640 px here`,
    );
    check(layers.length === 3, `outbound-rtp has ${layers.length} entries, expected one per rid`);
  });

  await runCase('simulcast: 3 rid encodings (scaleResolutionDownBy 4/2/1) on a 960x540 camera; the subscriber gets the top layer', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM_960, source: 'camera', encodings: SIMULCAST });
    const layers = await waitFor('the publisher sends three layers (r0, r1, r2 with frames)', async () => {
      const st = await call(pub, 'producerStats', v.producerId);
      return st.filter((x) => x.framesEncoded > 0).length === 3 ? st : { pending: layerText(st) };
    }, { timeoutMs: 20_000 });
    note(`publisher layers: ${layerText(layers)}`);
    const i = await expectVideo(sub, v.producerId, 'the simulcast camera at the top layer', {
      cond: (x) => x.frameWidth > 480,
      condText: 'frameWidth > 480',
      timeoutMs: 25_000,
    });
    note(`subscriber decodes ${i.frameWidth}x${i.frameHeight}`);
  });

  await runCase('simulcast: set-preferred-layers (mediasoup\'s consumer.setPreferredLayers) caps the layer one subscriber gets', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM_960, source: 'camera', encodings: SIMULCAST });
    const top = await expectVideo(sub, v.producerId, 'the simulcast camera at the top layer', {
      cond: (x) => x.frameWidth > 480,
      condText: 'frameWidth > 480',
      timeoutMs: 25_000,
    });
    const consumerId = (await call(sub, 'consumers')).find((c) => c.producerId === v.producerId).consumerId;
    const r1 = await call(sub, 'request', { type: 'set-preferred-layers', consumerId, spatialLayer: 0 });
    check(r1.type === 'preferred-layers-set', `set-preferred-layers answered ${r1.type}`);
    const low = await expectVideo(sub, v.producerId, 'the lowest layer', { cond: (x) => x.frameWidth <= 240, condText: 'frameWidth <= 240' });
    await call(sub, 'request', { type: 'set-preferred-layers', consumerId, spatialLayer: null });
    const back = await expectVideo(sub, v.producerId, 'the top layer again', { cond: (x) => x.frameWidth > 480, condText: 'frameWidth > 480' });
    note(`subscriber width ${top.frameWidth} -> ${low.frameWidth} (layer 0) -> ${back.frameWidth}`);
  });

  await runCase('simulcast: producer.setMaxSpatialLayer(0) lowers what the subscriber decodes, (2) restores it', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM_640, source: 'camera', encodings: SIMULCAST });
    const top = await expectVideo(sub, v.producerId, 'the simulcast camera above the lowest layer', {
      cond: (x) => x.frameWidth > 160,
      condText: 'frameWidth > 160',
      timeoutMs: 25_000,
    });
    const msl = await call(pub, 'setMaxSpatialLayer', v.producerId, 0);
    check(msl === 0, `producer.maxSpatialLayer is ${msl} after setMaxSpatialLayer(0)`);
    const info = await call(pub, 'producerInfo', v.producerId);
    note(`after setMaxSpatialLayer(0): sender encodings ${json(info.senderEncodings.map((e) => `${e.rid}:${e.active}`))}`);
    const low = await expectVideo(sub, v.producerId, 'the camera at the lowest layer', {
      cond: (x) => x.frameWidth <= 160,
      condText: 'frameWidth <= 160',
    });
    await call(pub, 'setMaxSpatialLayer', v.producerId, 2);
    const back = await expectVideo(sub, v.producerId, 'the camera above the lowest layer again', {
      cond: (x) => x.frameWidth > 160,
      condText: 'frameWidth > 160',
      timeoutMs: 20_000,
    });
    note(`subscriber width ${top.frameWidth} -> ${low.frameWidth} (max layer 0) -> ${back.frameWidth} (max layer 2)`);
  });

  await runCase('producer.setRtpEncodingParameters({scaleResolutionDownBy: 2}) halves what the subscriber decodes', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM_640, source: 'camera' });
    const before = await expectVideo(sub, v.producerId, 'the 640x360 camera', { cond: (x) => x.frameWidth > 160, condText: 'frameWidth > 160' });
    const enc = await call(pub, 'setRtpEncodingParameters', v.producerId, { scaleResolutionDownBy: 2 });
    note(`sender encodings after the call: ${json(enc)}`);
    const half = await expectVideo(sub, v.producerId, 'the camera at half its width', {
      cond: (x) => x.frameWidth <= before.frameWidth / 2,
      condText: `frameWidth <= ${before.frameWidth / 2}`,
    });
    await call(pub, 'setRtpEncodingParameters', v.producerId, { scaleResolutionDownBy: 1 });
    const full = await expectVideo(sub, v.producerId, 'the camera back above half width', {
      cond: (x) => x.frameWidth > half.frameWidth,
      condText: `frameWidth > ${half.frameWidth}`,
    });
    note(`subscriber width ${before.frameWidth} -> ${half.frameWidth} -> ${full.frameWidth}`);
  });

  // [label, codec, requested mode, camera, mode Chromium is expected to encode]
  const svcCases = [
    ['VP9 L1T3', VP9, 'L1T3', CAM, 'L1T3'],
    ['VP9 L3T3_KEY on 960x540', VP9, 'L3T3_KEY', CAM_960, 'L3T3_KEY'],
    ['VP9 L3T3 on 960x540', VP9, 'L3T3', CAM_960, 'L3T3'],
    // Chromium lowers the spatial layer count to what the resolution
    // allows (lowest layer at least 240x135): at 640x360 L3T3_KEY is encoded
    // as L2T3_KEY. Asserted so a change shows up (docs/compat.md).
    ['VP9 L3T3_KEY on 640x360 (Chromium encodes L2T3_KEY)', VP9, 'L3T3_KEY', CAM_640, 'L2T3_KEY'],
    ['AV1 L1T3', { mimeType: 'video/AV1' }, 'L1T3', CAM, 'L1T3'],
  ];
  for (const [label, codec, mode, track, expected] of svcCases) {
    await runCase(`scalabilityMode: ${label}`, async (room) => {
      await setupPair(room);
      const v = await publish({ track, source: 'camera', codec, encodings: [{ scalabilityMode: mode }] });
      note(`publish: ${describePublish(v)}`);
      const out = await waitFor(`the publisher encodes ${expected} (outbound-rtp.scalabilityMode)`, async () => {
        const st = await call(pub, 'producerStats', v.producerId);
        return st[0]?.scalabilityMode === expected && st[0]?.framesEncoded > 0 ? st : { pending: st };
      });
      note(`publisher: ${out.map((x) => `${x.codec} ${x.scalabilityMode} ${x.frameWidth}x${x.frameHeight} ${x.encoderImplementation} (${x.qualityLimitationReason})`).join(', ')}`);
      // Every spatial layer is forwarded: the subscriber decodes the top one,
      // the camera's size.
      const i = await expectVideo(sub, v.producerId, `the ${label} camera at the camera's size`, {
        codec: codec.mimeType,
        cond: (x) => x.frameWidth >= track.width,
        condText: `frameWidth >= ${track.width}`,
      });
      note(`subscriber decodes ${i.frameWidth}x${i.frameHeight}`);
    });
  }

  // ------------------------------------------------------- codecOptions
  await runCase('codecOptions: opusStereo, opusDtx, opusFec', async (room) => {
    await setupPair(room);
    const a = await publish({ track: MIC, source: 'microphone', codecOptions: { opusStereo: true, opusDtx: true, opusFec: true } });
    const params = a.publish.rtpParameters.codecs[0].parameters;
    note(`publish opus parameters ${json(params)}`);
    check(Number(params['sprop-stereo']) === 1 && Number(params.usedtx) === 1, `the publish lacks sprop-stereo=1/usedtx=1: ${json(params)}`);
    await expectAudio(sub, a.producerId, 'the stereo/DTX/FEC microphone');
    const c = (await call(sub, 'consumers')).find((x) => x.producerId === a.producerId);
    note(`consumer opus parameters ${json(c.rtpParameters.codecs[0].parameters)}`);
  });

  await runCase('codecOptions: videoGoogleStartBitrate', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM_640, source: 'camera', codecOptions: { videoGoogleStartBitrate: 1000 } });
    const i = await expectVideo(sub, v.producerId, 'the camera (start bitrate 1000 kbps)');
    note(`subscriber decodes ${i.frameWidth}x${i.frameHeight}`);
  });

  // ------------------------------------------------ track and pause options
  await runCase('stopTracks: false keeps the track after unpublish; publishing it again decodes', async (room) => {
    await setupPair(room);
    const v1 = await publish({ track: CAM, source: 'camera', stopTracks: false });
    await expectVideo(sub, v1.producerId, 'the camera');
    await call(pub, 'unpublish', v1.producerId);
    await expectConsumerClosed(sub, v1.producerId, 'the camera');
    const t = await call(pub, 'trackInfo', v1.trackId);
    check(t.readyState === 'live', `with stopTracks: false the track is ${t.readyState} after unpublish`);
    const v2 = await publish({ trackId: v1.trackId, source: 'camera', stopTracks: false });
    note(`same track republished: mid ${v1.mid} -> ${v2.mid}`);
    await expectVideo(sub, v2.producerId, 'the same track published again');
  });

  await runCase('producer.pause()/resume() with mute/unmute (disableTrackOnPause default true)', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    await expectVideo(sub, v.producerId, 'the camera');
    const paused = await call(pub, 'pauseProducer', v.producerId);
    check(paused.paused && paused.trackEnabled === false, `after pause(): paused ${paused.paused}, track.enabled ${paused.trackEnabled}`);
    check(paused.reply?.type === 'track-muted', `mute answered ${paused.reply?.type}`);
    await expectEvent(sub, 'track-muted', v.producerId, 'the camera');
    const stalled = await expectStalled(sub, v.producerId, 'framesDecoded', 'the muted camera');
    const resumed = await call(pub, 'resumeProducer', v.producerId);
    check(!resumed.paused && resumed.trackEnabled === true, `after resume(): paused ${resumed.paused}, track.enabled ${resumed.trackEnabled}`);
    await expectEvent(sub, 'track-unmuted', v.producerId, 'the camera');
    await expectVideo(sub, v.producerId, 'the camera after unmute', { cond: (x) => x.framesDecoded > stalled.value, condText: `framesDecoded > ${stalled.value}` });
  });

  await runCase('disableTrackOnPause: false keeps the track enabled; mute still stops the subscriber', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera', disableTrackOnPause: false });
    await expectVideo(sub, v.producerId, 'the camera');
    const paused = await call(pub, 'pauseProducer', v.producerId);
    check(paused.paused && paused.trackEnabled === true, `after pause(): paused ${paused.paused}, track.enabled ${paused.trackEnabled} (want true)`);
    const sent0 = await producerPacketsSent(v.producerId);
    const stalled = await expectStalled(sub, v.producerId, 'framesDecoded', 'the muted camera');
    const sent1 = await producerPacketsSent(v.producerId);
    check(sent1 > sent0, `the browser should keep sending RTP while paused without disableTrackOnPause/zeroRtpOnPause (packetsSent ${sent0} -> ${sent1})`);
    note(`while muted the publisher sent ${sent1 - sent0} packets the server did not forward`);
    await call(pub, 'resumeProducer', v.producerId);
    await expectVideo(sub, v.producerId, 'the camera after unmute', { cond: (x) => x.framesDecoded > stalled.value, condText: `framesDecoded > ${stalled.value}` });
  });

  await runCase('zeroRtpOnPause: true sends no RTP while paused; resume decodes again', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera', zeroRtpOnPause: true });
    await expectVideo(sub, v.producerId, 'the camera');
    await call(pub, 'pauseProducer', v.producerId);
    const stalled = await expectStalled(sub, v.producerId, 'framesDecoded', 'the paused camera');
    let sentBefore = null;
    let since = Date.now();
    await waitFor('the publisher sends no RTP while paused (packetsSent unchanged for 1.5 s)', async () => {
      const n = await producerPacketsSent(v.producerId);
      if (n !== sentBefore) {
        sentBefore = n;
        since = Date.now();
      }
      return Date.now() - since >= 1500 ? true : { pending: n };
    });
    await call(pub, 'resumeProducer', v.producerId);
    await expectVideo(sub, v.producerId, 'the camera after resume', { cond: (x) => x.framesDecoded > stalled.value, condText: `framesDecoded > ${stalled.value}` });
  });

  await runCase('producer.replaceTrack(): a 320x180 camera replaced by a 180x180 one', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    const wide = await expectVideo(sub, v.producerId, 'the 16:9 camera', { cond: (x) => x.frameWidth > x.frameHeight, condText: 'wider than high' });
    await call(pub, 'replaceTrack', v.producerId, { track: { type: 'camera', width: 180, height: 180, frameRate: 15 } });
    const square = await expectVideo(sub, v.producerId, 'the replacing square camera', {
      cond: (x) => x.frameWidth === x.frameHeight,
      condText: 'frameWidth == frameHeight',
    });
    note(`subscriber ${wide.frameWidth}x${wide.frameHeight} -> ${square.frameWidth}x${square.frameHeight}`);
  });

  await runCase('producer.replaceTrack(null) stops the video; a new track resumes it', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    await expectVideo(sub, v.producerId, 'the camera');
    await call(pub, 'replaceTrackNull', v.producerId);
    const stalled = await expectStalled(sub, v.producerId, 'framesDecoded', 'the camera without a track');
    await call(pub, 'replaceTrack', v.producerId, { track: CAM });
    await expectVideo(sub, v.producerId, 'the camera with a new track', { cond: (x) => x.framesDecoded > stalled.value, condText: `framesDecoded > ${stalled.value}` });
  });

  await runCase('data and media on one send transport', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    const dp = await call(pub, 'produceData', { label: 'events' });
    const a = await publish({ track: MIC, source: 'microphone' });
    await waitFor(`${sub.name} consumes the data channel and it opens`, async () => {
      const d = (await call(sub, 'dataConsumers')).find((x) => x.dataProducerId === dp.dataProducerId);
      return d?.open ? d : { pending: d ?? 'no data consumer' };
    });
    await call(pub, 'sendData', dp.dataProducerId, ['hello', { binary: [1, 2, 3] }]);
    await waitFor(`${sub.name} receives both messages`, async () => {
      const d = (await call(sub, 'dataConsumers')).find((x) => x.dataProducerId === dp.dataProducerId);
      return d?.messages.length >= 2 ? d.messages : { pending: d?.messages };
    });
    await expectVideo(sub, v.producerId, 'the camera');
    await expectAudio(sub, a.producerId, 'the microphone');
  });

  await runCase('consumer.pause()/resume() with pause-consumer/resume-consumer; consumer.getStats()', async (room) => {
    await setupPair(room);
    const v = await publish({ track: CAM, source: 'camera' });
    await expectVideo(sub, v.producerId, 'the camera');
    const st = await consumerStats(sub, v.producerId);
    check(st.reportTypes.includes('inbound-rtp') && st.reportTypes.includes('codec'), `consumer.getStats() has ${st.reportTypes}`);
    const r1 = await call(sub, 'pauseConsumer', v.producerId);
    check(r1.type === 'consumer-paused', `pause-consumer answered ${r1.type}`);
    const stalled = await expectStalled(sub, v.producerId, 'packetsReceived', 'the paused consumer');
    const r2 = await call(sub, 'resumeConsumer', v.producerId);
    check(r2.type === 'consumer-resumed', `resume-consumer answered ${r2.type}`);
    const i = await expectVideo(sub, v.producerId, 'the camera after resume', {
      cond: (x) => x.packetsReceived > stalled.value,
      condText: `packetsReceived > ${stalled.value}`,
    });
    note(`after resume: ${i.framesDecoded} frames, keyframes ${i.keyFramesDecoded}`);
  });

  // -------------------------------------------------------------- data
  const dataCases = [
    ['ordered, reliable (default)', {}, true],
    ['unordered, reliable (ordered: false)', { ordered: false }, false],
    ['partially reliable (maxPacketLifeTime: 2000)', { maxPacketLifeTime: 2000 }, false],
    ['partially reliable (maxRetransmits: 3)', { maxRetransmits: 3 }, false],
    ['lossy (ordered: false, maxRetransmits: 0)', { ordered: false, maxRetransmits: 0 }, false],
  ];
  for (const [label, opts, ordered] of dataCases) {
    await runCase(`data: produceData/consumeData ${label}, string and binary`, async (room) => {
      await setupPair(room);
      const dp = await call(pub, 'produceData', { label: 'chat', ...opts });
      note(`publish-data-channel sctpStreamParameters ${json(dp.publish.sctpStreamParameters)}; server kind ${dp.reply.dataChannel?.kind}`);
      const dc = await waitFor(`${sub.name} consumes the data channel and it opens`, async () => {
        const list = await call(sub, 'dataConsumers');
        const d = list.find((x) => x.dataProducerId === dp.dataProducerId);
        return d?.open ? d : { pending: d ?? 'no data consumer' };
      });
      note(`subscriber sctpStreamParameters ${json(dc.sctpStreamParameters)}`);
      check(Boolean(dc.sctpStreamParameters.ordered) === ordered, `the data consumer is ordered=${dc.sctpStreamParameters.ordered}, expected ${ordered}`);
      for (const k of ['maxPacketLifeTime', 'maxRetransmits']) {
        if (opts[k] !== undefined) {
          check(dc.sctpStreamParameters[k] === opts[k], `the data consumer's ${k} is ${dc.sctpStreamParameters[k]}, expected ${opts[k]}`);
        }
      }
      const messages = [];
      for (let n = 0; n < 20; n++) messages.push(`msg ${n} ${'x'.repeat(n * 50)}`);
      messages.push({ binary: [0, 1, 2, 253, 254, 255] });
      messages.push({ binary: Array.from({ length: 3000 }, (_, n) => n % 256) });
      await call(pub, 'sendData', dp.dataProducerId, messages);
      const got = await waitFor(`${sub.name} receives the ${messages.length} messages`, async () => {
        const d = (await call(sub, 'dataConsumers')).find((x) => x.dataProducerId === dp.dataProducerId);
        return d && d.messages.length >= messages.length && d.messages.every((m) => m !== null) ? d.messages : { pending: `${d?.messages.length ?? 0} messages` };
      });
      const key = (m) => (typeof m === 'string' ? m : `bin:${m.binary.join(',')}`);
      const want = messages.map(key);
      const have = got.map(key);
      if (ordered) check(json(have) === json(want), `messages differ or arrive out of order (first difference at ${have.findIndex((x, n) => x !== want[n])})`);
      else check(json([...have].sort()) === json([...want].sort()), 'the set of messages received differs from the set sent');
      check(got.some((m) => m.binary && !m.blob), 'binary messages arrived as Blob, not ArrayBuffer');
      note(`${got.length} messages received (${got.filter((m) => typeof m === 'string').length} strings, ${got.filter((m) => m.binary).length} binary)`);
    });
  }

  // -------------------------------------------------- audio-level control
  await runCase('audio-level control: without the extension in the subscriber\'s rtpCapabilities, no audioLevel', async (room) => {
    await setupPair(room, { subJoin: { dropRecvHeaderExtensions: ['urn:ietf:params:rtp-hdrext:ssrc-audio-level'] } });
    const v = await publish({ track: CAM, source: 'camera' });
    const a = await publish({ track: MIC, source: 'microphone' });
    await expectVideo(sub, v.producerId, 'the camera');
    const { inbound } = await expectAudio(sub, a.producerId, 'the microphone');
    const c = (await call(sub, 'consumers')).find((x) => x.producerId === a.producerId);
    check(!c.rtpParameters.headerExtensions.some((h) => h.uri.includes('audio-level')), `the consumer still has the audio-level extension: {${extIds(c.rtpParameters.headerExtensions)}}`);
    const src = (await consumerStats(sub, a.producerId)).synchronizationSources;
    check(src.length > 0, 'getSynchronizationSources() is empty although audio arrives');
    check(src.every((x) => x.audioLevel === null), `audioLevel is reported without the extension: ${json(src)}`);
    note(`consumer extensions {${extIds(c.rtpParameters.headerExtensions)}}, energy ${inbound.totalAudioEnergy.toFixed(4)}, synchronization sources ${json(src)}`);
  });
}

main()
  .catch((err) => {
    results.push({ name: 'test harness', ok: false, ms: 0, error: `${err.message}\n${err.stack ?? ''}` });
  })
  .finally(async () => {
    clearTimeout(watchdog);
    const { failed, filtered } = printSummary();
    await writeFile(join(ARTIFACTS, 'compat-results.json'), JSON.stringify({ ...evidence, results }, null, 2)).catch(() => {});
    process.exit(failed ? 1 : filtered ? 4 : 0);
  });
