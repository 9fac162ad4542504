#!/usr/bin/env node
// Browser end-to-end tests of PulseWave: real Chromium pages running the demo
// app (web/demo) with fake camera and microphone against a running server.
//
//   PULSEWAVE_URL=http://127.0.0.1:3000 node test/e2e.mjs
//
// Environment:
//   PULSEWAVE_URL        server base URL (required), e.g. http://127.0.0.1:3000
//   PULSEWAVE_ARTIFACTS  screenshot/log directory (default web/test/artifacts)
//   CHROMIUM_PATH        browser binary (default /usr/bin/chromium)
//   PULSEWAVE_E2E_TIMEOUT_MS  hard limit of the whole run (default 420000)
//   PULSEWAVE_HEADFUL=1  show the browser (needs a display)
//
// Every scenario reports PASS or FAIL on its own, with the check that failed.
// Exit status: 0 all passed, 1 a scenario failed, 2 setup failed (Chromium
// did not start, server unreachable, web/dist not built), 3 the run hit its
// time limit. Nothing is ever skipped.

import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = (process.env.PULSEWAVE_URL ?? '').replace(/\/+$/, '');
const ARTIFACTS = resolve(process.env.PULSEWAVE_ARTIFACTS ?? join(WEB, 'test', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RUN_TIMEOUT_MS = Number(process.env.PULSEWAVE_E2E_TIMEOUT_MS ?? 420_000);
const SCENARIO_TIMEOUT_MS = 90_000;
const ROOM = `e2e-${Date.now().toString(36)}`;

// ------------------------------------------------------------------ basics

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
const log = (...a) => console.log(`[e2e ${elapsed()}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fatal(message, err) {
  console.error(`\nFATAL: ${message}`);
  if (err) console.error(err.stack ?? err);
  process.exit(2);
}

// The whole run stops by itself, whatever hangs.
const watchdog = setTimeout(() => {
  console.error(`\nFATAL: the browser test run exceeded ${RUN_TIMEOUT_MS / 1000}s; aborting`);
  printSummary();
  process.exit(3);
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

/** Evaluates in the page with a bound (a hung page must not hang the run). */
function evaluate(p, fn, arg, ms = 10_000) {
  return withTimeout(p.page.evaluate(fn, arg), ms, `${p.name}: page.evaluate`);
}

/**
 * Polls `fn(arg)` in the page until it returns a truthy value that is not
 * `{pending: detail}`; throws a CheckError naming `what` and the last value
 * (or pending detail) seen after `timeoutMs`.
 */
async function waitFor(p, what, fn, arg, { timeoutMs = 15_000, interval = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await evaluate(p, fn, arg);
      if (last && !(typeof last === 'object' && 'pending' in last)) return last;
      if (last) last = last.pending;
    } catch (err) {
      last = `error: ${err.message}`;
    }
    if (Date.now() > deadline) {
      const detail = typeof last === 'string' ? last : JSON.stringify(last);
      throw new CheckError(`${p.name}: ${what} (not true after ${timeoutMs / 1000}s; last: ${detail})`);
    }
    await sleep(interval);
  }
}

// ---------------------------------------------------------------- scenarios

const results = [];

async function scenario(name, fn) {
  const start = Date.now();
  log(`--- ${name}`);
  try {
    await withTimeout(fn(), SCENARIO_TIMEOUT_MS, `scenario "${name}"`);
    results.push({ name, ok: true, ms: Date.now() - start });
    log(`PASS ${name}`);
  } catch (err) {
    const message = err instanceof CheckError ? err.message : `${err.message}\n${err.stack ?? ''}`;
    results.push({ name, ok: false, ms: Date.now() - start, error: message });
    log(`FAIL ${name}\n       ${message.split('\n').join('\n       ')}`);
  }
}

function printSummary() {
  const failed = results.filter((r) => !r.ok);
  console.log('\n==================== browser e2e summary ====================');
  for (const r of results) {
    console.log(`${r.ok ? 'PASS' : 'FAIL'}  ${r.name}  (${(r.ms / 1000).toFixed(1)}s)`);
    if (!r.ok) console.log(`      -> ${r.error.split('\n')[0]}`);
  }
  console.log(`${results.length - failed.length} passed, ${failed.length} failed; artifacts in ${ARTIFACTS}`);
  return failed.length;
}

// ------------------------------------------------------ static demo fallback

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Serves /demo/ the way the server is meant to (web/demo first, then
 * web/dist), for when the server under test does not serve it yet.
 */
async function startStaticDemoServer() {
  const roots = [join(WEB, 'demo'), join(WEB, 'dist')];
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (path === '/demo') {
      res.writeHead(301, { Location: '/demo/' }).end();
      return;
    }
    if (!path.startsWith('/demo/')) {
      res.writeHead(404).end('not found');
      return;
    }
    const rel = normalize(path.slice('/demo/'.length) || 'index.html');
    if (rel.startsWith('..') || rel.includes(`${sep}..`)) {
      res.writeHead(400).end('bad path');
      return;
    }
    for (const root of roots) {
      const file = join(root, rel);
      try {
        if ((await stat(file)).isFile()) {
          res.writeHead(200, { 'Content-Type': MIME[extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' });
          res.end(await readFile(file));
          return;
        }
      } catch {
        // try the next root
      }
    }
    res.writeHead(404).end('not found');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

// --------------------------------------------------------------- the pages

async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    fatal(`Chromium not found at ${CHROMIUM}; install it (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
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
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: process.env.PULSEWAVE_HEADFUL !== '1',
      args,
      timeout: 60_000,
    });
    log(`Chromium ${browser.version()} started`);
    return browser;
  } catch (err) {
    fatal(`Chromium could not start (${CHROMIUM}); the browser tests cannot run`, err);
  }
}

const participants = [];

async function openParticipant(browser, demoUrl, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(['camera', 'microphone'], { origin: new URL(demoUrl).origin });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const p = { name, context, page, identity: null, console: [] };
  page.on('console', (m) => p.console.push(`${new Date().toISOString()} [${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => p.console.push(`${new Date().toISOString()} [pageerror] ${e.message}`));
  participants.push(p);
  await page.goto(demoUrl, { timeout: 15_000 });
  await page.fill('#room', ROOM);
  await page.fill('#name', name);
  await page.click('#join');
  await waitFor(
    p,
    'joins the room (window.pulsewave.state === "connected")',
    () =>
      window.pulsewave?.state === 'connected'
        ? true
        : { pending: { state: window.pulsewave?.state ?? 'none', status: document.getElementById('status').textContent } },
    null,
    { timeoutMs: 20_000 },
  );
  p.identity = await evaluate(p, () => window.pulsewave.identity);
  log(`${name} joined as ${p.identity}`);
  return p;
}

/**
 * Holds `p`'s way back to the server (`hold` true): every WebSocket its page
 * opens goes to a dead port until released (`hold` false).
 */
function holdSignaling(p, hold) {
  return evaluate(p, (on) => {
    const Orig = window.__pwOrigWebSocket ?? window.WebSocket;
    window.__pwOrigWebSocket = Orig;
    window.__pwHoldSocket = on;
    if (window.WebSocket === Orig) {
      window.WebSocket = class extends Orig {
        constructor(url, protocols) {
          super(window.__pwHoldSocket ? 'ws://127.0.0.1:9/' : url, protocols);
        }
      };
    }
  }, hold);
}

/** Clicks a demo control button; fails clearly when it is disabled. */
async function clickControl(p, selector, what) {
  const enabled = await evaluate(p, (sel) => {
    const b = document.querySelector(sel);
    return Boolean(b) && !b.disabled && !b.closest('[hidden]');
  }, selector);
  if (!enabled) {
    const s = await state(p).catch(() => null);
    throw new CheckError(`${p.name}: cannot ${what}: ${selector} is disabled or hidden (publications: ${JSON.stringify(s?.publications ?? [])}; status: "${s?.status ?? '?'}")`);
  }
  await p.page.click(selector, { timeout: 5000 });
}

const state = (p) => evaluate(p, () => window.pwState());
const stats = (p) => evaluate(p, () => window.pwStats());

/** What p's camera sender sends, per simulcast layer (for failure messages). */
const sentLayers = (p) =>
  evaluate(p, async () => {
    const pub = window.pulsewave?.publications.find((x) => x.source === 'camera');
    if (!pub?.producer) return 'no camera producer';
    const report = await pub.producer.getStats();
    return [...report.values()]
      .filter((s) => s.type === 'outbound-rtp')
      .map((s) => ({
        rid: s.rid, active: s.active, frameWidth: s.frameWidth, framesPerSecond: s.framesPerSecond,
        framesEncoded: s.framesEncoded, qualityLimitationReason: s.qualityLimitationReason,
        targetBitrate: s.targetBitrate,
      }));
  });

/** Waits until `p` has a consumed subscription of every (identity, source) pair. */
async function waitSubscriptions(p, pairs, timeoutMs = 20_000) {
  await waitFor(
    p,
    `is subscribed to ${pairs.map(([id, src]) => `${id}/${src}`).join(', ')}`,
    async (pairs) => {
      const s = await window.pwStats();
      const missing = pairs.filter(([id, src]) => !s[id]?.[src]);
      return missing.length === 0 ? true : null;
    },
    pairs,
    { timeoutMs },
  ).catch(async (err) => {
    const st = await state(p).catch(() => null);
    throw new CheckError(
      `${err.message}; subscriptions: ${JSON.stringify(st?.subscriptions ?? [])}; status: "${st?.status ?? '?'}"`,
    );
  });
}

/**
 * Samples stats twice, `ms` apart; returns [before, after]. Only for
 * waitForQuiet: that nothing more arrives can only be seen over a window.
 */
async function sampleTwice(p, ms) {
  const a = await stats(p);
  await sleep(ms);
  const b = await stats(p);
  return [a, b];
}

/**
 * Waits until every counter in `rises` ({identity, source, field, n}: frames
 * decoded, packets received, audio energy) rose by at least `n` from now in
 * p's stats; throws a CheckError naming `what` and the rises so far. A
 * counter that goes down was restarted (a new consumer after a reconnect):
 * it counts from zero.
 */
async function waitForRise(p, what, rises, { timeoutMs = 15_000 } = {}) {
  const value = (s, r) => s[r.identity]?.[r.source]?.[r.field];
  const first = await stats(p);
  const base = rises.map((r) => (typeof value(first, r) === 'number' ? value(first, r) : 0));
  const describe = (got) => rises.map((r, i) => `${r.identity}/${r.source} ${r.field} +${got[i]} (want +${r.n})`).join(', ');
  const deadline = Date.now() + timeoutMs;
  let got = rises.map(() => 0);
  for (;;) {
    const s = await stats(p).catch(() => ({}));
    got = rises.map((r, i) => {
      const v = value(s, r);
      if (typeof v !== 'number') return 0;
      if (v < base[i]) base[i] = 0;
      return v - base[i];
    });
    if (rises.every((r, i) => got[i] >= r.n)) return got;
    if (Date.now() > deadline) throw new CheckError(`${p.name}: ${what} (not within ${timeoutMs / 1000}s: ${describe(got)})`);
    await sleep(250);
  }
}

/**
 * Waits until `field` of `identity`'s `source` rises by at most `max` over
 * a whole window of `windowMs` (frames in flight when a track was muted
 * drain first); throws a CheckError naming `what` after `timeoutMs`. A check
 * about time: that nothing more arrives can only be seen over a window.
 */
async function waitForQuiet(p, what, identity, source, field, max, windowMs, { timeoutMs = 15_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let d = null;
  for (;;) {
    const [a, b] = await sampleTwice(p, windowMs);
    d = delta(a, b, identity, source, field);
    check(d !== null, `${p.name}: no stats for ${identity}'s ${source}`);
    if (d <= max) return d;
    if (Date.now() > deadline) throw new CheckError(`${p.name}: ${what} (${field} still +${d} in ${windowMs / 1000} s after ${timeoutMs / 1000}s)`);
  }
}

function delta(a, b, identity, source, field) {
  const x = a[identity]?.[source]?.[field];
  const y = b[identity]?.[source]?.[field];
  if (typeof x !== 'number' || typeof y !== 'number') return null;
  return y - x;
}

// -------------------------------------------------------------------- main

async function main() {
  if (!BASE) fatal('PULSEWAVE_URL is not set (e.g. PULSEWAVE_URL=http://127.0.0.1:3000)');
  if (!existsSync(join(WEB, 'dist', 'pulsewave.esm.js'))) {
    fatal('web/dist/pulsewave.esm.js is missing: run `npm ci && npm run build` in web/ first');
  }
  await mkdir(ARTIFACTS, { recursive: true });
  log(`server ${BASE}, room ${ROOM}, artifacts ${ARTIFACTS}`);

  try {
    const health = await withTimeout(fetch(`${BASE}/healthz`), 5000, 'GET /healthz');
    if (!health.ok) fatal(`GET ${BASE}/healthz answered HTTP ${health.status}`);
  } catch (err) {
    fatal(`the server at ${BASE} is unreachable`, err);
  }

  // Does the server serve the demo? If not, serve it here (and fail that scenario).
  let demoUrl = `${BASE}/demo/`;
  let staticServer = null;
  await scenario('server serves the demo at /demo/', async () => {
    const problems = [];
    for (const [path, type] of [
      ['/demo/', 'text/html'],
      ['/demo/app.js', 'javascript'],
      ['/demo/style.css', 'text/css'],
      ['/demo/pulsewave.esm.js', 'javascript'],
    ]) {
      try {
        const res = await withTimeout(fetch(`${BASE}${path}`), 5000, `GET ${path}`);
        const ct = res.headers.get('content-type') ?? '';
        if (res.status !== 200) problems.push(`GET ${path} -> HTTP ${res.status}`);
        else if (!ct.includes(type)) problems.push(`GET ${path} -> Content-Type "${ct}", expected ${type}`);
      } catch (err) {
        problems.push(`GET ${path} -> ${err.message}`);
      }
    }
    if (problems.length) {
      staticServer = await startStaticDemoServer();
      demoUrl = `http://127.0.0.1:${staticServer.address().port}/demo/?server=${encodeURIComponent(BASE)}`;
      log(`WARNING: the server does not serve the demo; the rest of the run uses ${demoUrl}`);
    }
    check(problems.length === 0, `the server does not serve the demo: ${problems.join('; ')}`);
  });

  const browser = await launchBrowser();
  const [alice, bob, carol] = ['Alice', 'Bob', 'Carol'];
  let A;
  let B;
  let C;
  let D;
  const trio = () => [A, B, C].filter(Boolean);
  const others = (p, list) => list.filter((q) => q !== p);

  try {
    await scenario('join: three participants see each other', async () => {
      A = await openParticipant(browser, demoUrl, alice);
      B = await openParticipant(browser, demoUrl, bob);
      C = await openParticipant(browser, demoUrl, carol);
      for (const p of trio()) {
        for (const q of others(p, trio())) {
          await waitFor(p, `lists ${q.identity} in client.participants`, (id) => window.pulsewave.participants.has(id), q.identity);
          await waitFor(
            p,
            `shows a tile for ${q.identity}`,
            (id) => Boolean(document.querySelector(`.tile[data-identity="${CSS.escape(id)}"][data-source="camera"]`)),
            q.identity,
          );
        }
      }
    });
    check(A && B && C, 'the three participants could not join; nothing else can run');

    await scenario('media: each participant publishes camera and microphone', async () => {
      for (const p of trio()) {
        const s = await waitFor(
          p,
          'publishes camera and microphone',
          () => {
            const s = window.pwState();
            if (s.publishErrors.length) return s;
            return s.publications.filter((x) => x.producerId).length >= 2 ? s : null;
          },
          null,
          { timeoutMs: 20_000 },
        );
        check(
          s.publishErrors.length === 0,
          `${p.name}: publishing failed: ${s.publishErrors.map((e) => `${e.source}: ${e.message} [${e.code}]`).join('; ')}`,
        );
        const sources = s.publications.map((x) => x.source).sort().join(',');
        check(sources === 'camera,microphone', `${p.name}: publications are ${sources}`);
      }
    });

    await scenario('media: each decodes the other two videos and receives their audio', async () => {
      for (const p of trio()) {
        const pairs = others(p, trio()).flatMap((q) => [
          [q.identity, 'camera'],
          [q.identity, 'microphone'],
        ]);
        await waitSubscriptions(p, pairs);
      }
      for (const p of trio()) {
        await waitFor(
          p,
          'decodes a first frame of every remote camera and receives audio packets',
          (ids) =>
            window.pwStats().then((s) =>
              ids.every((id) => s[id]?.camera?.framesDecoded > 0 && s[id]?.microphone?.packetsReceived > 0) ? true : { pending: s },
            ),
          others(p, trio()).map((q) => q.identity),
          { timeoutMs: 20_000 },
        );
      }
      // Media keeps flowing: every counter rises (15 frames, 50 audio
      // packets, some audio energy), bounded by 10 s.
      await Promise.all(trio().map((p) =>
        waitForRise(
          p,
          'keeps decoding every remote camera and receiving every microphone with energy',
          others(p, trio()).flatMap((q) => [
            { identity: q.identity, source: 'camera', field: 'framesDecoded', n: 15 },
            { identity: q.identity, source: 'microphone', field: 'packetsReceived', n: 50 },
            { identity: q.identity, source: 'microphone', field: 'totalAudioEnergy', n: Number.MIN_VALUE },
          ]),
          { timeoutMs: 10_000 },
        )));
    });

    await scenario('simulcast: a preferred layer lowers one subscriber\'s resolution, lifting it restores it', async () => {
      const width = (p, id) => evaluate(p, (i) => window.pwStats().then((s) => s[i]?.camera?.frameWidth ?? 0), id);
      // Wait until Alice receives Bob's camera above the lowest layer (the
      // publisher's bandwidth estimate ramps up over a few seconds).
      const top = await waitFor(A, `receives ${B.name}'s camera above 160 px wide`, (i) =>
        window.pwStats().then((s) => ((s[i]?.camera?.frameWidth ?? 0) > 160 ? s[i].camera.frameWidth : { pending: s[i]?.camera?.frameWidth })),
      B.identity, { timeoutMs: 30_000 }).catch(async (err) => {
        const sent = await sentLayers(B).catch((e) => `error: ${e.message}`);
        throw new CheckError(`${err.message}; ${B.name} sends: ${JSON.stringify(sent)}`);
      });
      const setLayer = (layer) =>
        evaluate(A, ([i, l]) => {
          const sub = [...window.pulsewave.subscriptions.values()].find((x) => x.participantIdentity === i && x.source === 'camera');
          return window.pulsewave.setPreferredLayers(sub, l).then(() => true);
        }, [B.identity, layer]);
      await setLayer(0);
      const low = await waitFor(A, `receives ${B.name}'s camera below ${top} px after set-preferred-layers 0`, ([i, t]) =>
        window.pwStats().then((s) => { const w = s[i]?.camera?.frameWidth ?? 0; return w > 0 && w < t ? w : { pending: w }; }),
      [B.identity, top], { timeoutMs: 15_000 });
      const carol = await width(C, B.identity);
      check(carol > low, `${C.name} should keep ${B.name}'s higher layer (${carol} px) while ${A.name} gets ${low} px`);
      await setLayer(null);
      const back = await waitFor(A, `receives ${B.name}'s camera at ${top} px again after lifting the preference`, ([i, t]) =>
        window.pwStats().then((s) => { const w = s[i]?.camera?.frameWidth ?? 0; return w >= t ? w : { pending: w }; }),
      [B.identity, top], { timeoutMs: 15_000 });
      log(`${A.name} sees ${B.name}'s camera at ${top} px, ${low} px with layer 0 (${C.name}: ${carol} px), ${back} px after lifting it`);
    });

    await scenario('dynacast: nobody wants the top layer, the publisher stops encoding it; wanted again, it resumes', async () => {
      // B's top encoding (rid with the largest frameWidth) and its frames.
      // B's highest encoding that is being encoded now (frames rising).
      const first = await waitFor(B, 'encodes at least two simulcast layers of its camera', async () => {
        const pub = window.pulsewave?.publications.find((x) => x.source === 'camera');
        const sample = async () =>
          [...(await pub.producer.getStats()).values()].filter((r) => r.type === 'outbound-rtp' && r.rid);
        const a = await sample();
        await new Promise((r) => setTimeout(r, 1000));
        const b = await sample();
        const live = b.filter((r) => (r.framesEncoded ?? 0) > (a.find((x) => x.rid === r.rid)?.framesEncoded ?? 0));
        live.sort((x, y) => (y.frameWidth ?? 0) - (x.frameWidth ?? 0));
        return live.length >= 2 ? { rid: live[0].rid, framesEncoded: live[0].framesEncoded } : { pending: b.map((r) => [r.rid, r.framesEncoded]) };
      }, undefined, { timeoutMs: 20_000 });
      const prefer = (p, layer) =>
        evaluate(p, ([i, l]) => {
          const sub = [...window.pulsewave.subscriptions.values()].find((x) => x.participantIdentity === i && x.source === 'camera');
          return window.pulsewave.setPreferredLayers(sub, l).then(() => true);
        }, [B.identity, layer]);
      await prefer(A, 0);
      await prefer(C, 0);
      // Fewer layers are asked for 5 s after the last change.
      const stopped = await waitFor(B, `stops encoding its top camera layer (${first.rid}) once nobody wants it`, async (rid) => {
        const pub = window.pulsewave.publications.find((x) => x.source === 'camera');
        const sample = async () => {
          const r = [...(await pub.producer.getStats()).values()].find((x) => x.type === 'outbound-rtp' && x.rid === rid);
          return r?.framesEncoded ?? 0;
        };
        const a = await sample();
        await new Promise((r) => setTimeout(r, 1500));
        const b = await sample();
        return b - a <= 1 ? { frames: b } : { pending: { rid, grew: b - a } };
      }, first.rid, { timeoutMs: 25_000 });
      await prefer(A, null);
      await prefer(C, null);
      const resumed = await waitFor(B, `encodes its top camera layer (${first.rid}) again once it is wanted`, async ([rid, from]) => {
        const pub = window.pulsewave.publications.find((x) => x.source === 'camera');
        const r = [...(await pub.producer.getStats()).values()].find((x) => x.type === 'outbound-rtp' && x.rid === rid);
        return (r?.framesEncoded ?? 0) > from + 10 ? r.framesEncoded : { pending: r?.framesEncoded };
      }, [first.rid, stopped.frames], { timeoutMs: 15_000 });
      log(`${B.name}'s ${first.rid}: stopped at ${stopped.frames} frames when unwanted, ${resumed} once wanted again`);
    });

    await scenario('dynacast: a burst of subscribed-layers (all off, then all on, as replayed on resume) ends with the layers on', async () => {
      // The layers B encodes now (Chromium may leave the top one off by its own choice).
      await evaluate(B, () => {
        window.pwEncoding = async () => {
          const pub = window.pulsewave.publications.find((x) => x.source === 'camera');
          const sample = async () => new Map(
            [...(await pub.producer.getStats()).values()].filter((r) => r.type === 'outbound-rtp' && r.rid).map((r) => [r.rid, r.framesEncoded ?? 0]),
          );
          const a = await sample();
          await new Promise((r) => setTimeout(r, 1000));
          const b = await sample();
          return {
            active: pub.producer.rtpSender.getParameters().encodings.map((e) => e.active),
            grew: [...b.keys()].filter((rid) => b.get(rid) > (a.get(rid) ?? 0) + 2).sort(),
          };
        };
        return true;
      });
      const before = await waitFor(B, 'encodes at least two camera layers', async () => {
        const now = await window.pwEncoding();
        return now.grew.length >= 2 ? now.grew : { pending: now };
      }, undefined, { timeoutMs: 15_000 });
      // Both messages go through the client's real message path in one
      // task, as a resume replays them; the last one must win.
      await evaluate(B, () => {
        const c = window.pulsewave;
        const pub = c.publications.find((x) => x.source === 'camera');
        const encodings = pub.producer.rtpSender.getParameters().encodings;
        const layers = (active) => encodings.map((e, i) => ({ spatialLayer: i, rid: e.rid, active }));
        const send = (active) =>
          c._onMessage(c._session, JSON.stringify({ type: 'subscribed-layers', producerId: pub.producerId, layers: layers(active) }));
        send(false);
        send(true);
        return true;
      });
      const after = await waitFor(B, `encodes ${before.join(', ')} again after the burst, every encoding active`, async (want) => {
        const now = await window.pwEncoding();
        return now.active.every(Boolean) && want.every((rid) => now.grew.includes(rid)) ? now.grew : { pending: now };
      }, before, { timeoutMs: 15_000 });
      log(`${B.name} encoded ${before.join(', ')} before an off/on burst of subscribed-layers, ${after.join(', ')} after it`);
    });

    await scenario('adaptive stream: a hidden tile gets no video, shown again it resumes', async () => {
      const setHidden = (hidden) =>
        evaluate(A, ([i, h]) => {
          const tile = document.querySelector(`.tile[data-identity="${CSS.escape(i)}"][data-source="camera"]`);
          if (!tile) return false;
          tile.style.display = h ? 'none' : '';
          return true;
        }, [B.identity, hidden]);
      check(await setHidden(true), `${A.name} has no tile for ${B.name}'s camera`);
      await waitForQuiet(A, `receives no video for ${B.name}'s hidden tile (at most +3 packets in 2 s)`, B.identity, 'camera', 'packetsReceived', 3, 2000);
      check(await setHidden(false), `${A.name} lost the tile for ${B.name}'s camera`);
      await waitForRise(A, `decodes ${B.name}'s camera again once its tile is shown`, [
        { identity: B.identity, source: 'camera', field: 'framesDecoded', n: 5 },
      ]);
    });

    await scenario('mute: camera mute stops the video everywhere, unmute resumes it', async () => {
      const watchers = [B, C];
      for (const w of watchers) await waitSubscriptions(w, [[A.identity, 'camera']], 5000);
      await clickControl(A, '#toggle-cam', 'mute the camera');
      await waitFor(A, 'its camera publication is muted', () => window.pwState().publications.some((x) => x.source === 'camera' && x.muted));
      for (const w of watchers) {
        await waitFor(
          w,
          `gets track-muted for ${A.identity}'s camera (tile data-cam="muted")`,
          (id) => {
            const tile = document.querySelector(`.tile[data-identity="${CSS.escape(id)}"][data-source="camera"]`);
            return tile?.dataset.cam === 'muted' && window.pwEvents.some((e) => e.type === 'trackMuted' && e.identity === id && e.source === 'camera');
          },
          A.identity,
        );
      }
      await Promise.all(watchers.map((w) =>
        waitForQuiet(w, `stops decoding ${A.name}'s muted camera (at most +2 frames in 2.5 s)`, A.identity, 'camera', 'framesDecoded', 2, 2500)));
      await clickControl(A, '#toggle-cam', 'unmute the camera');
      for (const w of watchers) {
        await waitFor(
          w,
          `gets track-unmuted for ${A.identity}'s camera`,
          (id) => document.querySelector(`.tile[data-identity="${CSS.escape(id)}"][data-source="camera"]`)?.dataset.cam === 'live',
          A.identity,
        );
      }
      await Promise.all(watchers.map((w) =>
        waitForRise(w, `decodes ${A.name}'s camera again after unmute`, [
          { identity: A.identity, source: 'camera', field: 'framesDecoded', n: 5 },
        ])));
    });

    await scenario('mute: microphone mute reaches the others and stops the audio', async () => {
      const watchers = [A, C];
      await clickControl(B, '#toggle-mic', 'mute the microphone');
      for (const w of watchers) {
        await waitFor(
          w,
          `gets track-muted for ${B.identity}'s microphone (tile data-mic="muted")`,
          (id) => document.querySelector(`.tile[data-identity="${CSS.escape(id)}"][data-source="camera"]`)?.dataset.mic === 'muted',
          B.identity,
        );
      }
      await Promise.all(watchers.map((w) =>
        waitForQuiet(w, `stops receiving ${B.name}'s muted microphone (at most +5 packets in 2 s)`, B.identity, 'microphone', 'packetsReceived', 5, 2000)));
      await clickControl(B, '#toggle-mic', 'unmute the microphone');
      for (const w of watchers) {
        await waitFor(
          w,
          `gets track-unmuted for ${B.identity}'s microphone`,
          (id) => document.querySelector(`.tile[data-identity="${CSS.escape(id)}"][data-source="camera"]`)?.dataset.mic === 'live',
          B.identity,
        );
        await waitForRise(w, `receives ${B.name}'s audio again after unmute`, [
          { identity: B.identity, source: 'microphone', field: 'packetsReceived', n: 20 },
        ]);
      }
    });

    await scenario('chat: a message reaches the other two', async () => {
      const message = `hello from Alice ${Math.random().toString(36).slice(2, 8)}`;
      await A.page.fill('#chat-input', message);
      await A.page.press('#chat-input', 'Enter');
      await waitFor(A, 'shows its own message', (m) => window.pwState().chat.some((c) => c.self && c.message === m), message);
      for (const w of [B, C]) {
        await waitFor(
          w,
          `receives "${message}" from ${A.identity}`,
          ([m, id]) =>
            [...document.querySelectorAll(`#messages li[data-from="${CSS.escape(id)}"]`)].some(
              (li) => li.querySelector('.text')?.textContent === m,
            ),
          [message, A.identity],
          { timeoutMs: 10_000 },
        );
      }
    });

    await scenario('chat: a direct message reaches only its destination', async () => {
      const message = `psst Carol ${Math.random().toString(36).slice(2, 8)}`;
      await evaluate(B, ([m, to]) => window.pulsewave.sendData({ type: 'chat', message: m }, { kind: 'reliable', to: [to] }), [message, C.identity]);
      await waitFor(C, `receives the direct message from ${B.identity}`, (m) => window.pwState().chat.some((c) => c.message === m), message);
      // Then a message to everyone from the same sender: it reaches Alice
      // after anything Bob sent before, so the direct message, had it
      // leaked, would be there by then.
      const after = `to everyone ${Math.random().toString(36).slice(2, 8)}`;
      await evaluate(B, (m) => window.pulsewave.sendData({ type: 'chat', message: m }, { kind: 'reliable' }), after);
      await waitFor(A, `receives the later message to everyone from ${B.identity}`, (m) => window.pwState().chat.some((c) => c.message === m), after);
      const leaked = await evaluate(A, (m) => window.pwState().chat.some((c) => c.message === m), message);
      check(!leaked, `${A.name} received a message addressed to ${C.name} only`);
    });

    await scenario('late joiner: joins and everyone sees it', async () => {
      D = await openParticipant(browser, demoUrl, 'Dave');
      for (const p of trio()) {
        await waitFor(p, `gets participant-joined for ${D.identity}`, (id) => window.pulsewave.participants.has(id), D.identity);
      }
      const s = await state(D);
      const listed = s.participants.map((x) => x.identity).sort();
      const want = trio().map((p) => p.identity).sort();
      check(JSON.stringify(listed) === JSON.stringify(want), `Dave's joined.room.participants is ${JSON.stringify(listed)}, want ${JSON.stringify(want)}`);
    });

    await scenario('late joiner: sees and decodes tracks published before it joined', async () => {
      check(D, 'Dave did not join');
      const s = await state(D);
      for (const p of trio()) {
        const info = s.participants.find((x) => x.identity === p.identity);
        const sources = (info?.tracks ?? []).map((t) => t.source).sort().join(',');
        check(sources === 'camera,microphone', `Dave's joined message lists tracks [${sources}] for ${p.identity}, want camera and microphone`);
      }
      await waitSubscriptions(D, trio().flatMap((p) => [[p.identity, 'camera'], [p.identity, 'microphone']]));
      await waitFor(
        D,
        'decodes every earlier camera and receives every earlier microphone',
        (ids) =>
          window.pwStats().then((s) =>
            ids.every((id) => s[id]?.camera?.framesDecoded > 0 && s[id]?.microphone?.packetsReceived > 0) ? true : { pending: s },
          ),
        trio().map((p) => p.identity),
        { timeoutMs: 20_000 },
      );
      await waitForRise(D, 'keeps decoding every earlier camera', trio().map((p) => (
        { identity: p.identity, source: 'camera', field: 'framesDecoded', n: 10 }
      )), { timeoutMs: 10_000 });
    });

    await scenario('screenshot of the demo grid', async () => {
      // Every video tile shows frames before the picture is taken.
      await waitFor(A, 'plays every video tile of the grid', () => {
        const videos = [...document.querySelectorAll('.tile[data-has-video="true"] video')];
        return videos.length >= 4 && videos.every((v) => v.readyState >= 2 && v.videoWidth > 0) ? true : { pending: videos.map((v) => v.readyState) };
      });
      const file = join(ARTIFACTS, 'grid.png');
      await withTimeout(A.page.screenshot({ path: file }), 15_000, 'screenshot');
      const size = (await stat(file)).size;
      check(size > 1000, `grid.png is only ${size} bytes`);
      const tiles = (await state(A)).tiles.length;
      check(tiles >= 4, `Alice's grid shows ${tiles} tiles, want 4`);
      log(`screenshot: ${file} (${size} bytes, ${tiles} tiles)`);
    });

    let bobOldSid = null;
    let bobBefore = null;
    await scenario('resume: after a dropped socket the client resumes its session, ids kept', async () => {
      bobOldSid = await evaluate(A, (id) => window.pulsewave.participants.get(id)?.sid ?? null, B.identity);
      bobBefore = await evaluate(B, () => {
        const s = window.pwState();
        return {
          sid: window.pulsewave.participant.sid,
          producers: s.publications.map((p) => p.producerId).sort(),
          consumers: s.subscriptions.map((x) => x.consumerId).sort(),
        };
      });
      const leftBefore = {};
      for (const p of [A, C, D].filter(Boolean)) {
        leftBefore[p.identity] = await evaluate(p, () => window.pwEvents.length);
      }
      const dropped = await evaluate(B, () => window.pulsewave.simulateConnectionDrop());
      check(dropped, 'simulateConnectionDrop() found no open session on Bob');
      await waitFor(B, 'emits reconnecting then resumed', () => {
        const types = window.pwEvents.map((e) => e.type);
        const i = types.lastIndexOf('reconnecting');
        return i >= 0 && types.indexOf('resumed', i) > i && window.pulsewave.state === 'connected';
      }, null, { timeoutMs: 20_000 });
      const after = await evaluate(B, () => {
        const s = window.pwState();
        return {
          sid: window.pulsewave.participant.sid,
          producers: s.publications.map((p) => p.producerId).sort(),
          consumers: s.subscriptions.map((x) => x.consumerId).sort(),
          rejoined: window.pwEvents.some((e) => e.type === 'reconnected'),
        };
      });
      check(!after.rejoined, 'Bob rejoined in full instead of resuming');
      check(after.sid === bobBefore.sid, `Bob's sid changed: ${bobBefore.sid} -> ${after.sid}`);
      check(JSON.stringify(after.producers) === JSON.stringify(bobBefore.producers), `Bob's producer ids changed: ${JSON.stringify(bobBefore.producers)} -> ${JSON.stringify(after.producers)}`);
      check(JSON.stringify(after.consumers) === JSON.stringify(bobBefore.consumers), `Bob's consumer ids changed: ${JSON.stringify(bobBefore.consumers)} -> ${JSON.stringify(after.consumers)}`);
      for (const p of [A, C, D].filter(Boolean)) {
        const seen = await evaluate(
          p,
          ([id, from]) => ({
            sid: window.pulsewave.participants.get(id)?.sid ?? null,
            left: window.pwEvents.slice(from).some((e) => e.type === 'participantLeft' && e.identity === id),
          }),
          [B.identity, leftBefore[p.identity]],
        );
        check(!seen.left, `${p.name} saw ${B.identity} leave during the resume`);
        check(seen.sid === bobOldSid, `${p.name} sees ${B.identity} with another sid`);
      }
    });

    await scenario('resume: media flows after the resume', async () => {
      await waitFor(B, 'keeps camera and microphone published', () => {
        const s = window.pwState();
        return s.publications.filter((p) => p.producerId).length >= 2 ? true : null;
      }, null, { timeoutMs: 20_000 });
      await waitSubscriptions(A, [[B.identity, 'camera'], [B.identity, 'microphone']]);
      await waitSubscriptions(B, [[A.identity, 'camera'], [A.identity, 'microphone']]);
      for (const [p, q] of [[A, B], [B, A]]) {
        await waitForRise(p, `decodes ${q.name}'s camera after the reconnect`, [
          { identity: q.identity, source: 'camera', field: 'framesDecoded', n: 5 },
        ]);
      }
    });

    await scenario('resume: every signaling socket killed (TCP reset), a track published meanwhile reaches the one still away', async () => {
      // `ss -K` destroys the server's end of every signaling connection:
      // the browsers see a reset, not a close. Bob's way back is held (his
      // page's WebSocket goes to a dead port) until Carol has published a
      // new track; then he must resume (same sid and ids, no rejoin) and
      // learn of it from the replayed `track-published`.
      const port = new URL(BASE).port;
      check(port, `no port in PULSEWAVE_URL ${BASE}`);
      await holdSignaling(B, true);
      try {
      const before = await evaluate(B, () => ({
        sid: window.pulsewave.participant.sid,
        consumers: window.pwState().subscriptions.map((x) => x.consumerId).filter(Boolean).sort(),
        events: window.pwEvents.length,
      }));
      const leftFrom = {};
      for (const p of [A, C, D].filter(Boolean)) leftFrom[p.identity] = await evaluate(p, () => window.pwEvents.length);
      try {
        execFileSync('ss', ['-K', 'state', 'established', '(', 'sport', '=', `:${port}`, ')']);
      } catch (err) {
        throw new CheckError(`ss -K failed (root and CONFIG_INET_DIAG_DESTROY needed): ${err.message}`);
      }
      log(`killed every signaling connection of port ${port}`);
      await waitFor(B, 'goes reconnecting', ([from]) => window.pwEvents.slice(from).some((e) => e.type === 'reconnecting'), [before.events], { timeoutMs: 10_000 });
      // Carol is back first, and publishes a screen share (a canvas).
      await waitFor(C, 'is connected again', () => window.pulsewave.state === 'connected', null, { timeoutMs: 20_000 });
      const screen = await evaluate(C, async () => {
        const canvas = document.createElement('canvas');
        canvas.width = 320;
        canvas.height = 180;
        const g = canvas.getContext('2d');
        let n = 0;
        setInterval(() => { g.fillStyle = `hsl(${(n += 7) % 360} 80% 50%)`; g.fillRect(0, 0, 320, 180); }, 50);
        const track = canvas.captureStream(15).getVideoTracks()[0];
        const pub = await window.pulsewave.publish(track, { source: 'screen' });
        return pub.producerId ?? null;
      }, null, 20_000);
      check(screen, 'Carol\'s screen share has no producer id');
      await waitFor(A, `sees ${C.name}'s screen share`, ([id, pid]) => window.pwState().participants.some((p) => p.identity === id && p.tracks.some((t) => t.producerId === pid)), [C.identity, screen], { timeoutMs: 20_000 });
      check(await evaluate(B, () => window.pulsewave.state !== 'connected'), 'Bob came back while held');
      await holdSignaling(B, false);
      await waitFor(B, 'resumes', ([from]) => window.pulsewave.state === 'connected' && window.pwEvents.slice(from).some((e) => e.type === 'resumed'), [before.events], { timeoutMs: 20_000 });
      const after = await evaluate(B, ([id, pid, from]) => ({
        sid: window.pulsewave.participant.sid,
        consumers: window.pwState().subscriptions.map((x) => x.consumerId).filter(Boolean).sort(),
        rejoined: window.pwEvents.slice(from).some((e) => e.type === 'reconnected'),
        sawScreen: window.pwState().participants.some((p) => p.identity === id && p.tracks.some((t) => t.producerId === pid)),
      }), [C.identity, screen, before.events]);
      check(!after.rejoined, 'Bob rejoined in full instead of resuming');
      check(after.sid === before.sid, `Bob's sid changed: ${before.sid} -> ${after.sid}`);
      check(after.sawScreen, `Bob did not learn of ${C.name}'s screen share published while he was away`);
      for (const id of before.consumers) check(after.consumers.includes(id), `Bob lost consumer ${id}`);
      for (const p of [A, C, D].filter(Boolean)) {
        const left = await evaluate(p, ([from]) => window.pwEvents.slice(from).filter((e) => e.type === 'participantLeft').map((e) => e.identity), [leftFrom[p.identity]]);
        check(left.length === 0, `${p.name} saw ${left.join(', ')} leave`);
      }
      // Carol's screen share reaches Bob as media too.
      await waitForRise(B, `decodes ${C.name}'s screen share after the resume`, [
        { identity: C.identity, source: 'screen', field: 'framesDecoded', n: 5 },
      ], { timeoutMs: 20_000 });
      await evaluate(C, async (pid) => {
        const pub = window.pulsewave.publications.find((p) => p.producerId === pid);
        await window.pulsewave.unpublish(pub, { stopTrack: true });
      }, screen);
      } finally {
        await holdSignaling(B, false).catch(() => {});
      }
    });

    await scenario('resume: away past the grace time, removed, then a full rejoin works', async () => {
      // Bob's socket drops and his way back is held (his page's WebSocket
      // goes to a dead port) longer than the server's grace time (--dev:
      // RESUME_GRACE 15 s): the server removes him (the others see him
      // leave); let through, his client rejoins in full (new sid, tracks
      // published again) and media flows both ways.
      await holdSignaling(B, true);
      try {
        const before = await evaluate(B, () => ({ sid: window.pulsewave.participant.sid, events: window.pwEvents.length }));
        const from = {};
        for (const p of [A, C].filter(Boolean)) from[p.identity] = await evaluate(p, () => window.pwEvents.length);
        const droppedAt = Date.now();
        check(await evaluate(B, () => window.pulsewave.simulateConnectionDrop()), 'simulateConnectionDrop() found no open session on Bob');
        for (const p of [A, C].filter(Boolean)) {
          await waitFor(p, `sees ${B.identity} removed after the grace time`, ([id, n]) =>
            !window.pulsewave.participants.has(id) &&
            window.pwEvents.slice(n).some((e) => e.type === 'participantLeft' && e.identity === id),
          [B.identity, from[p.identity]], { timeoutMs: 40_000 });
        }
        const removedAfter = Date.now() - droppedAt;
        // Not before the grace time: a resume would still have been possible.
        check(removedAfter >= 14_000, `${B.identity} was removed ${removedAfter} ms after the drop, before the 15 s grace time`);
        check(await evaluate(B, () => window.pulsewave.state !== 'connected'), 'Bob came back while held');
        await holdSignaling(B, false);
        await waitFor(B, 'rejoins in full (reconnected)', ([n]) =>
          window.pulsewave.state === 'connected' && window.pwEvents.slice(n).some((e) => e.type === 'reconnected'),
        [before.events], { timeoutMs: 40_000 });
        const after = await evaluate(B, ([n]) => ({
          sid: window.pulsewave.participant.sid,
          resumed: window.pwEvents.slice(n).some((e) => e.type === 'resumed'),
          resumeFailed: window.pwEvents.slice(n).some((e) => e.type === 'resumeFailed'),
        }), [before.events]);
        check(!after.resumed, 'Bob resumed a session the server had removed');
        check(after.resumeFailed, 'Bob never reported resumeFailed before the full rejoin');
        check(after.sid && after.sid !== before.sid, `Bob's sid after the rejoin is ${after.sid} (before: ${before.sid}); want a new one`);
        for (const p of [A, C].filter(Boolean)) {
          await waitFor(p, `sees ${B.identity} join again with the new sid`, ([id, sid, n]) =>
            window.pulsewave.participants.get(id)?.sid === sid &&
            window.pwEvents.slice(n).some((e) => e.type === 'participantJoined' && e.identity === id),
          [B.identity, after.sid, from[p.identity]], { timeoutMs: 20_000 });
        }
        log(`${B.identity}: removed ${removedAfter} ms after the drop, rejoined as ${after.sid}`);
        await waitSubscriptions(A, [[B.identity, 'camera'], [B.identity, 'microphone']]);
        await waitSubscriptions(B, [[A.identity, 'camera'], [A.identity, 'microphone']]);
        for (const [p, q] of [[A, B], [B, A]]) {
          await waitForRise(p, `decodes ${q.name}'s camera after the full rejoin`, [
            { identity: q.identity, source: 'camera', field: 'framesDecoded', n: 5 },
          ], { timeoutMs: 20_000 });
        }
      } finally {
        await holdSignaling(B, false).catch(() => {});
      }
    });

    let consumersBefore = null;
    await scenario('leave: participant-left everywhere', async () => {
      check(D, 'Dave did not join');
      const remaining = trio();
      consumersBefore = {};
      for (const p of remaining) {
        consumersBefore[p.name] = await evaluate(
          p,
          (id) => {
            window.__pwLeaving = [...window.pulsewave.subscriptions.values()]
              .filter((s) => s.participantIdentity === id && s.consumer)
              .map((s) => s.consumer);
            return window.__pwLeaving.length;
          },
          D.identity,
        );
      }
      await clickControl(D, '#leave', 'leave');
      await waitFor(D, 'is disconnected and shows the join form', () =>
        window.pulsewave.state === 'disconnected' && !document.getElementById('join-form').hidden,
      );
      for (const p of remaining) {
        await waitFor(
          p,
          `gets participant-left for ${D.identity} and removes its tile`,
          (id) =>
            !window.pulsewave.participants.has(id) &&
            !document.querySelector(`.tile[data-identity="${CSS.escape(id)}"]`) &&
            window.pwEvents.some((e) => e.type === 'participantLeft' && e.identity === id),
          D.identity,
        );
      }
    });

    await scenario("leave: the departed participant's consumers are closed", async () => {
      check(consumersBefore, 'the leave scenario did not run');
      for (const p of trio()) {
        const n = consumersBefore[p.name] ?? 0;
        check(n >= 2, `${p.name} had ${n} consumers of Dave before he left (want 2: camera and microphone)`);
        await waitFor(
          p,
          `closed every consumer of ${D.identity}`,
          (id) =>
            window.__pwLeaving.every((c) => c.closed) &&
            ![...window.pulsewave.subscriptions.values()].some((s) => s.participantIdentity === id) &&
            !document.querySelector(`audio[data-identity="${CSS.escape(id)}"]`),
          D.identity,
          { timeoutMs: 5000 },
        );
      }
    });
  } finally {
    for (const p of participants) {
      await writeFile(join(ARTIFACTS, `${p.name.toLowerCase()}-console.log`), p.console.join('\n') + '\n').catch(() => {});
      const s = await state(p).catch(() => null);
      if (s) await writeFile(join(ARTIFACTS, `${p.name.toLowerCase()}-state.json`), JSON.stringify(s, null, 2)).catch(() => {});
    }
    await withTimeout(browser.close(), 15_000, 'browser.close').catch((err) => log(`browser.close: ${err.message}`));
    staticServer?.close();
  }
}

main()
  .catch((err) => {
    results.push({ name: 'test harness', ok: false, ms: 0, error: `${err.message}\n${err.stack ?? ''}` });
  })
  .finally(async () => {
    clearTimeout(watchdog);
    const failed = printSummary();
    await writeFile(join(ARTIFACTS, 'results.json'), JSON.stringify({ room: ROOM, server: BASE, results }, null, 2)).catch(() => {});
    process.exit(failed ? 1 : 0);
  });
