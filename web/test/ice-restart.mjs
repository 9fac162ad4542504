#!/usr/bin/env node
// Browser test of ICE restart: two Chromium pages in a call lose their media
// path, and the call must come back on the same transports, by the
// JavaScript client's ICE restart (`restart-ice`, then mediasoup-client's
// `transport.restartIce`), with the same producer and consumer ids, no
// reconnect and no `participantLeft` seen. Two ways to lose the path
// (PULSEWAVE_NET_CHANGE):
//   cut      (default) iptables drops everything to the server's media
//            ports (signaling stays up) until the transports go
//            `disconnected`, then the link comes back (3 s later); then a
//            second cut of exactly 3 s, after which video must decode
//            again within 5 s (consent recovery or ICE restart);
//   address  the browsers' address is replaced mid-call (10.77.0.2 becomes
//            10.77.0.3 on interface v0; run-network-tests.sh sets it up, the
//            server's media address on loopback, signaling on 127.0.0.1),
//            and video must decode both ways within 5 s of the change;
//            then it changes again (10.77.0.4) while every signaling socket
//            is killed (ss -K) and Bob's way back is held until his media
//            is seen broken: he resumes his session, then restarts ICE on
//            the transports that broke meanwhile, same ids.
//
//   PULSEWAVE_URL=http://127.0.0.1:3000 PULSEWAVE_MEDIA_PORTS=45000:45009 \
//     node test/ice-restart.mjs      (as root, in a network namespace)
//
// run-network-tests.sh runs it. Exit status: 0 passed, 1 a check failed,
// 2 setup failed.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = (process.env.PULSEWAVE_URL ?? '').replace(/\/+$/, '');
const PORTS = process.env.PULSEWAVE_MEDIA_PORTS ?? '';
const ARTIFACTS = resolve(process.env.PULSEWAVE_ARTIFACTS ?? join(WEB, 'test', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const MODE = process.env.PULSEWAVE_NET_CHANGE ?? 'cut';
const ROOM = `ice-restart-${Date.now().toString(36)}`;

const t0 = Date.now();
const log = (...a) => console.log(`[ice-restart ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fatal(message, err) {
  console.error(`\nFATAL: ${message}`);
  if (err) console.error(err.stack ?? err);
  process.exit(2);
}

const watchdog = setTimeout(() => fatal('the ICE restart browser test exceeded 240 s'), 240_000);

/** Replaces the browsers' address `from` by `to` on v0. */
function changeAddress(from = '10.77.0.2', to = '10.77.0.3') {
  execFileSync('ip', ['addr', 'add', `${to}/24`, 'dev', 'v0']);
  execFileSync('ip', ['addr', 'del', `${from}/24`, 'dev', 'v0']);
  // The kernel drops secondary addresses with the primary unless
  // promote_secondaries is set (run-network-tests.sh sets it): check.
  const now = execFileSync('ip', ['-4', '-o', 'addr', 'show', 'dev', 'v0']).toString();
  if (!now.includes(` ${to}/`) || now.includes(` ${from}/`)) {
    fatal(`address change ${from} -> ${to} did not take: ${now.trim()}`);
  }
}

/** Drops (or, with `on` false, lets through) every packet to the media ports. */
function cut(on) {
  for (const proto of ['udp', 'tcp']) {
    execFileSync('iptables', [on ? '-I' : '-D', 'INPUT', '-p', proto, '--dport', PORTS, '-j', 'DROP']);
  }
}

/** After an address change, video decodes both ways again within this long of it. */
const ADDRESS_BACK_MS = 5_000;

async function waitFor(p, what, fn, arg, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await p.page.evaluate(fn, arg);
      if (last && !(typeof last === 'object' && 'pending' in last)) return last;
    } catch (err) {
      last = `error: ${err.message}`;
    }
    if (Date.now() > deadline) throw new Error(`${p.name}: ${what} (last: ${JSON.stringify(last)})`);
    await sleep(250);
  }
}

async function open(browser, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const p = { name, page, console: [] };
  page.on('console', (m) => p.console.push(`[${m.type()}] ${m.text()}`));
  await page.goto(`${BASE}/demo/`, { timeout: 15_000 });
  await page.fill('#room', ROOM);
  await page.fill('#name', name);
  await page.click('#join');
  await waitFor(p, 'joins', () => window.pulsewave?.state === 'connected');
  p.identity = await page.evaluate(() => {
    const log = [];
    window.__net = log;
    const c = window.pulsewave;
    for (const type of ['transportState', 'iceRestarted', 'participantLeft', 'reconnecting', 'reconnected', 'resumed', 'resumeFailed', 'error', 'streamStateChanged', 'transportStalled', 'layersChanged']) {
      c.on(type, (e) => log.push({ type, state: e?.state ?? (type === 'layersChanged' ? `${e?.subscription?.source}:${e?.spatialLayer}/${e?.temporalLayer}` : undefined), direction: e?.direction, reason: e?.reason ?? e?.message, t: Date.now() }));
    }
    return c.identity;
  });
  log(`${name} joined as ${p.identity}`);
  return p;
}

/** Waits until `p` decoded `n` more frames of `q`'s camera. */
async function decodes(p, q, n, timeoutMs) {
  const frames = (id) => window.pwStats().then((s) => s[id]?.camera?.framesDecoded ?? 0);
  const base = await p.page.evaluate(frames, q.identity);
  await waitFor(
    p,
    `decodes ${n} more frames of ${q.name}'s camera`,
    async ([id, base, n]) => {
      const s = await window.pwStats();
      const f = s[id]?.camera?.framesDecoded ?? 0;
      return f >= base + n ? true : { pending: f - base };
    },
    [q.identity, base, n],
    timeoutMs,
  );
}

/**
 * Samples each page's camera subscription (packets, frames received and
 * decoded, keyframes decoded, PLIs sent) every 200 ms; `stop()` returns one
 * line per page with the times (s after `t0`) each counter moved again
 * after standing still for 1 s or more, for the timing figures and the
 * failure report.
 */
async function traceVideo(pages) {
  const KEYS = ['packetsReceived', 'framesReceived', 'framesDecoded', 'keyFramesDecoded', 'pliCount'];
  let running = true;
  const last = pages.map(() => ({}));
  const resumed = pages.map(() => Object.fromEntries(KEYS.map((k) => [k, []])));
  const out = { t0: Date.now() };
  const sample = () =>
    Promise.all(
      pages.map(async (p, i) => {
        const other = pages.find((q) => q !== p);
        const cam = await p.page.evaluate((id) => window.pwStats().then((s) => s[id]?.camera ?? null), other.identity).catch(() => null);
        if (!cam) return;
        const now = Date.now();
        for (const k of KEYS) {
          const l = last[i][k];
          if (l && cam[k] !== l.value && now - l.since >= 1000) resumed[i][k].push(((now - out.t0) / 1000).toFixed(1));
          if (!l || cam[k] !== l.value) last[i][k] = { value: cam[k], since: now };
        }
      }),
    );
  await sample();
  const loop = (async () => {
    while (running) {
      await sleep(200);
      await sample();
    }
  })();
  out.stop = async () => {
    running = false;
    await loop;
    return pages.map((p, i) => `${p.name} receiving, moved again after 1 s or more at: ${KEYS.map((k) => `${k} [${resumed[i][k].join(' ')}]`).join(', ')}`);
  };
  return out;
}

const ids = (p) =>
  p.page.evaluate(() => {
    const s = window.pwState();
    return {
      producers: s.publications.map((x) => x.producerId).sort(),
      consumers: s.subscriptions.map((x) => x.consumerId).sort(),
    };
  });

/**
 * The address changes again while every signaling socket is killed, and
 * Bob's way back (his page's WebSocket) is held until his media is seen
 * broken: no `restart-ice` can reach the server meanwhile. Let through, he
 * must resume (no full rejoin), then restart ICE on the broken transports
 * (the client does so after a resume); same ids, video both ways, nobody
 * seen leaving.
 */
async function resumeThenRestart(a, b, before) {
  const port = new URL(BASE).port;
  if (!port) throw new Error(`no port in PULSEWAVE_URL ${BASE}`);
  for (const p of [a, b]) await p.page.evaluate(() => { window.__net.length = 0; });
  await b.page.evaluate(() => {
    const Orig = window.WebSocket;
    window.__pwHoldSocket = true;
    window.WebSocket = class extends Orig {
      constructor(url, protocols) {
        super(window.__pwHoldSocket ? 'ws://127.0.0.1:9/' : url, protocols);
      }
    };
  });
  changeAddress('10.77.0.3', '10.77.0.4');
  execFileSync('ss', ['-K', 'state', 'established', '(', 'sport', '=', `:${port}`, ')']);
  log('the browsers moved to 10.77.0.4 and every signaling socket was killed; Bob held away');
  await waitFor(b, 'goes reconnecting', () => window.__net.some((e) => e.type === 'reconnecting'));
  await waitFor(
    b,
    'sees a transport go disconnected or failed while away',
    () => window.__net.some((e) => e.type === 'transportState' && (e.state === 'disconnected' || e.state === 'failed')),
    null,
    45_000,
  );
  await b.page.evaluate(() => { window.__pwHoldSocket = false; });
  const released = Date.now();
  log('Bob let through');
  await waitFor(b, 'resumes', () => window.__net.some((e) => e.type === 'resumed') && window.pulsewave.state === 'connected');
  await decodes(a, b, 10, 30_000);
  await decodes(b, a, 10, 30_000);
  log(`after the resume, video both ways within ${((Date.now() - released) / 1000).toFixed(1)} s`);
  const net = await b.page.evaluate(() => window.__net);
  log(`Bob: ${net.map((e) => (e.state ? `${e.type}:${e.direction}:${e.state}` : e.type)).join(', ')}`);
  const resumedAt = net.findIndex((e) => e.type === 'resumed');
  if (!net.slice(resumedAt).some((e) => e.type === 'iceRestarted')) {
    throw new Error('Bob resumed but restarted no ICE afterwards');
  }
  if (net.some((e) => e.type === 'reconnected')) throw new Error('Bob rejoined in full instead of resuming');
  for (const p of [a, b]) {
    if (await p.page.evaluate(() => window.__net.some((e) => e.type === 'participantLeft'))) {
      throw new Error(`${p.name} saw someone leave during the resume`);
    }
  }
  const after = { a: await ids(a), b: await ids(b) };
  if (JSON.stringify(after) !== JSON.stringify(before)) {
    throw new Error(`ids changed by the resume and ICE restart: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
  }
}

async function main() {
  if (!BASE) fatal('PULSEWAVE_URL is not set');
  if (MODE === 'cut' && !/^\d+:\d+$/.test(PORTS)) fatal('PULSEWAVE_MEDIA_PORTS is not set (MIN:MAX of the server)');
  if (MODE !== 'cut' && MODE !== 'address') fatal(`PULSEWAVE_NET_CHANGE=${MODE}: expected cut or address`);
  if (!existsSync(CHROMIUM)) fatal(`Chromium not found at ${CHROMIUM}`);
  await mkdir(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      // With an address to change, media must not use loopback.
      ...(MODE === 'cut' ? ['--allow-loopback-in-peer-connection'] : []),
      '--autoplay-policy=no-user-gesture-required',
      ...(process.env.PULSEWAVE_CHROMIUM_ARGS ?? '').split(' ').filter(Boolean),
    ],
  });
  const pages = [];
  let failed = null;
  let isCut = false;
  let trace = null;
  try {
    const a = await open(browser, 'Alice');
    const b = await open(browser, 'Bob');
    pages.push(a, b);
    await decodes(a, b, 10, 45_000);
    await decodes(b, a, 10, 45_000);
    // Both subscriptions in place before the ids are taken.
    for (const p of pages) {
      await waitFor(p, 'has two subscriptions', () => window.pwState().subscriptions.filter((s) => s.consumerId).length >= 2);
    }
    const before = { a: await ids(a), b: await ids(b) };
    log('call up; ids', JSON.stringify(before));

    if (MODE === 'cut') {
      cut(true);
      isCut = true;
      log(`media ports ${PORTS} cut`);
    } else {
      trace = await traceVideo(pages);
      changeAddress();
      log('the browsers moved from 10.77.0.2 to 10.77.0.3');
    }
    const changed = Date.now();
    trace ??= await traceVideo(pages);
    trace.t0 = changed;
    for (const p of pages) {
      await waitFor(
        p,
        'sees a transport stall, or go disconnected or failed',
        () => window.__net.some((e) => e.type === 'transportStalled' || (e.type === 'transportState' && (e.state === 'disconnected' || e.state === 'failed'))),
        null,
        45_000,
      );
    }
    if (MODE === 'cut') {
      // The scenario itself, not a wait for an event: the link stays down
      // 3 s more (ICE restarts made meanwhile fail), then comes back.
      await sleep(3000);
      cut(false);
      isCut = false;
      log('link restored');
    }
    const restored = Date.now();

    // After an address change, 10 more frames decoded both ways within 5 s
    // of the change: 3.3–3.8 s measured (debug server; the stall is seen
    // 2.0–2.5 s after the change). Before, 4.6–7.6 s: the transports of a
    // page stalled one by one, and the server's worker waited up to 1.8 s
    // for room in its socket's send buffer (see pool::SOCKET_BUFFER), so
    // `restart-ice` was answered late. After the long cut, 30 s.
    const backMs = MODE === 'cut' ? 30_000 : ADDRESS_BACK_MS - (Date.now() - changed);
    if (backMs <= 0) throw new Error(`the dead path was noticed only ${((Date.now() - changed) / 1000).toFixed(1)} s after the change`);
    try {
      await Promise.all([decodes(a, b, 10, backMs), decodes(b, a, 10, backMs)]);
    } finally {
      for (const line of await trace.stop()) log(line);
    }
    log(`media back within ${((Date.now() - restored) / 1000).toFixed(1)} s (${((Date.now() - changed) / 1000).toFixed(1)} s after the ${MODE === 'cut' ? 'cut' : 'change'})`);
    for (const p of pages) {
      const net = await p.page.evaluate(() => window.__net);
      const restarts = net.filter((e) => e.type === 'iceRestarted').length;
      log(`${p.name}: ${restarts} ICE restarts; events (s after the ${MODE === 'cut' ? 'cut' : 'change'}) ${net.map((e) => `${e.type}${e.direction ? `:${e.direction}` : ''}${e.state ? `:${e.state}` : ''}@${((e.t - changed) / 1000).toFixed(1)}`).join(', ')}`);
      if (restarts === 0) throw new Error(`${p.name}: no ICE restart was made`);
      for (const bad of ['participantLeft', 'reconnecting']) {
        if (net.some((e) => e.type === bad)) throw new Error(`${p.name}: saw ${bad}: the session was not kept`);
      }
      // The new path starts from the initial estimate: what the server
      // sent to the dead address until the browser switched pairs must not
      // make it pause the video for congestion (it did in 3 of 8 runs
      // before the estimate restarted when media moved).
      if (MODE !== 'cut' && net.some((e) => e.type === 'streamStateChanged' && e.state === 'paused')) {
        throw new Error(`${p.name}: a video was paused for congestion after the address change`);
      }
    }
    const after = { a: await ids(a), b: await ids(b) };
    if (JSON.stringify(after) !== JSON.stringify(before)) {
      throw new Error(`ids changed: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
    }
    if (MODE === 'cut') {
      // A short cut: the link is down exactly 3 s, then video must decode
      // again within 5 s, by consent recovery or by ICE restart, whichever
      // comes first; the session and its ids stay.
      for (const p of pages) await p.page.evaluate(() => { window.__net.length = 0; });
      cut(true);
      isCut = true;
      log('media ports cut for 3 s');
      await sleep(3000);
      cut(false);
      isCut = false;
      const back = Date.now();
      await decodes(a, b, 10, 5_000);
      await decodes(b, a, 10, 5_000);
      log(`after a 3 s cut, video back within ${((Date.now() - back) / 1000).toFixed(1)} s`);
      for (const p of pages) {
        const net = await p.page.evaluate(() => window.__net);
        const restarts = net.filter((e) => e.type === 'iceRestarted').length;
        log(`${p.name} after the 3 s cut: ${restarts} ICE restarts; events ${net.map((e) => e.state ? `${e.type}:${e.direction}:${e.state}` : e.type).join(', ')}`);
        for (const bad of ['participantLeft', 'reconnecting']) {
          if (net.some((e) => e.type === bad)) throw new Error(`${p.name}: saw ${bad} after the 3 s cut`);
        }
      }
      const later = { a: await ids(a), b: await ids(b) };
      if (JSON.stringify(later) !== JSON.stringify(before)) {
        throw new Error(`ids changed by the 3 s cut: before ${JSON.stringify(before)}, after ${JSON.stringify(later)}`);
      }
    } else {
      await resumeThenRestart(a, b, before);
    }
  } catch (err) {
    failed = err;
    // The transport states, restarts and subscriptions each page saw, for
    // the failure report.
    for (const p of pages) {
      const net = await p.page.evaluate(() => window.__net).catch(() => []);
      log(`${p.name} events: ${net.map((e) => `${e.type}${e.direction ? `:${e.direction}` : ''}${e.state ? `:${e.state}` : ''}${e.reason ? `(${e.reason})` : ''}`).join(', ')}`);
      const now = await p.page.evaluate(async () => ({
        state: window.pulsewave.state,
        transports: [...(window.pulsewave._session?.transports ?? [])].map((t) => `${t.direction}:${t.connectionState}`),
        subscriptions: window.pwState().subscriptions,
        stats: await window.pwStats(),
      })).catch((err) => `unavailable: ${err.message}`);
      log(`${p.name} now: ${JSON.stringify(now)}`);
    }
  }
  if (isCut) {
    try {
      cut(false);
    } catch {}
  }
  for (const p of pages) await writeFile(join(ARTIFACTS, `ice-restart-${p.name}.log`), p.console.join('\n')).catch(() => {});
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
  if (failed) {
    console.log(`FAIL ICE restart after ${MODE === 'cut' ? 'a media cut' : 'an address change (then another one with the signaling lost)'}: ${failed.message}`);
    process.exit(1);
  }
  console.log(`PASS ICE restart after ${MODE === 'cut' ? 'a media cut' : 'an address change, and resume then ICE restart after another one with the signaling lost'}: same ids, video both ways again`);
  process.exit(0);
}

main().catch((err) => fatal('unexpected error', err));
