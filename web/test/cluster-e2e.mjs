// Browser end-to-end test of a PulseWave cluster: two server nodes sharing
// one Redis (started by run-browser-tests.sh), two headless Chromium pages
// running the unmodified demo app (mediasoup-client), each joining the same
// room through a different node. The room lives on the node that took the
// first join; the other page's signaling is relayed to it over Redis, and its
// media goes to the owner's ICE candidates. Nothing in the page knows.
//
// Checks: both pages see each other, the room is listed on the first
// node (GET /api/rooms) although the second page joined through the other
// node, each decodes the other's camera (framesDecoded rising) and receives
// its microphone (packetsReceived rising), a chat message crosses the nodes
// both ways; then node 0 is killed (SIGKILL) and two pages relayed through
// node 1 reconnect by themselves, the room moves to node 1 and they decode
// each other again.
//
// Environment: PULSEWAVE_URLS (two comma-separated http:// base URLs, node 0
// first), PULSEWAVE_API_KEY / PULSEWAVE_API_SECRET (tokens come from each
// node's POST /api/token with HTTP Basic credentials, as outside --dev),
// PULSEWAVE_NODE0_PID (node 0's PID, killed by the test), PULSEWAVE_ARTIFACTS,
// CHROMIUM_PATH.
// Exit status: 0 passed, 1 a check failed, 2 setup failed, 3 time limit.

import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URLS = (process.env.PULSEWAVE_URLS ?? '').split(',').map((u) => u.trim().replace(/\/+$/, '')).filter(Boolean);
const KEY = process.env.PULSEWAVE_API_KEY ?? '';
const SECRET = process.env.PULSEWAVE_API_SECRET ?? '';
const ARTIFACTS = process.env.PULSEWAVE_ARTIFACTS ?? 'artifacts';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOM = `cluster-e2e-${Date.now().toString(36)}`;
const NODE0_PID = Number(process.env.PULSEWAVE_NODE0_PID ?? 0);

const t0 = Date.now();
const log = (...a) => console.log(`[cluster-e2e ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function setupFailure(message, err) {
  console.error(`[cluster-e2e] SETUP FAILED: ${message}${err ? `: ${err.stack ?? err}` : ''}`);
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error('[cluster-e2e] FAILED: the run took longer than 180 s');
  process.exit(3);
}, 180_000);

/** Polls `fn` in the page until it returns a truthy value, up to `ms`. */
async function waitFor(p, what, fn, arg, ms = 20_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await p.page.evaluate(fn, arg);
      if (last && !last.pending) return last;
    } catch (err) {
      last = { error: err.message };
    }
    await sleep(250); // poll interval of this bounded wait
  }
  throw new Error(`${p.name} (via ${p.node}): ${what} did not happen within ${ms} ms; last: ${JSON.stringify(last?.pending ?? last)}`);
}

const basic = () => `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;

async function token(base, identity, name) {
  const res = await fetch(`${base}/api/token`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      Authorization: basic(),
    },
    body: JSON.stringify({ identity, name, room: ROOM }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) throw new Error(`POST ${base}/api/token: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.token;
}

async function open(browser, base, name) {
  const identity = `${name.toLowerCase()}-${Math.random().toString(36).slice(2, 8)}`;
  const jwt = await token(base, identity, name);
  const context = await browser.newContext({ viewport: { width: 960, height: 600 } });
  await context.grantPermissions(['camera', 'microphone'], { origin: base });
  const page = await context.newPage();
  const p = { name, identity, node: base, page, console: [] };
  page.on('console', (m) => p.console.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => p.console.push(`[pageerror] ${e.message}`));
  const q = new URLSearchParams({ room: ROOM, name, token: jwt, autojoin: '1' });
  await page.goto(`${base}/demo/?${q}`, { timeout: 15_000 });
  await waitFor(p, 'joins the room', () =>
    window.pulsewave?.state === 'connected' ? true : { pending: document.getElementById('status')?.textContent },
  );
  log(`${name} joined as ${identity} through ${base}`);
  return p;
}

const framesOf = (id) => window.pwStats().then((s) => s[id]?.camera?.framesDecoded ?? 0);

const decoding = (id) =>
  window.pwStats().then((s) => {
    const cam = s[id]?.camera;
    const mic = s[id]?.microphone;
    return cam?.framesDecoded > 0 && mic?.packetsReceived > 0
      ? { frames: cam.framesDecoded, packets: mic.packetsReceived }
      : { pending: s };
  });

async function main() {
  if (URLS.length !== 2) setupFailure('PULSEWAVE_URLS must hold two node URLs');
  if (!KEY || !SECRET) setupFailure('PULSEWAVE_API_KEY and PULSEWAVE_API_SECRET are required');
  if (!NODE0_PID) setupFailure('PULSEWAVE_NODE0_PID (the first node, killed for the failover check) is required');
  if (!existsSync(CHROMIUM)) setupFailure(`Chromium not found at ${CHROMIUM}`);
  await mkdir(ARTIFACTS, { recursive: true });
  for (const u of URLS) {
    const res = await fetch(`${u}/healthz`).catch((e) => setupFailure(`${u} is unreachable`, e));
    const body = await res.json().catch(() => ({}));
    if (!res.ok || body.clusterStore === 'none') setupFailure(`${u}/healthz: HTTP ${res.status} ${JSON.stringify(body)} (not a cluster node?)`);
    log(`${u}: node ${body.node}, cluster store ${body.clusterStore}`);
  }
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
        '--allow-loopback-in-peer-connection', '--disable-dev-shm-usage',
        '--autoplay-policy=no-user-gesture-required',
        '--disable-features=WebRtcHideLocalIpsWithMdns',
      ],
    });
  } catch (err) {
    setupFailure('Chromium could not start', err);
  }

  const pages = [];
  let failed = null;
  try {
    const ann = await open(browser, URLS[0], 'Ann');
    pages.push(ann);
    const ben = await open(browser, URLS[1], 'Ben');
    pages.push(ben);
    for (const [p, q] of [[ann, ben], [ben, ann]]) {
      await waitFor(p, `sees ${q.identity}`, (id) => window.pulsewave.participants.has(id), q.identity);
    }
    log('each page sees the other');
    // The room lives on the node of the first join; Ben's session is relayed.
    const nodes = [];
    for (const u of URLS) nodes.push((await (await fetch(`${u}/healthz`)).json()).node);
    const listing = await (await fetch(`${URLS[1]}/api/rooms`, { headers: { Authorization: basic() } })).json();
    const room = (listing.rooms ?? []).find((r) => r.name === ROOM);
    if (!room) throw new Error(`GET /api/rooms on node 1 does not list ${ROOM}: ${JSON.stringify(listing)}`);
    if (room.node !== nodes[0]) throw new Error(`${ROOM} lives on ${room.node}, expected ${nodes[0]} (the node of the first join)`);
    log(`${ROOM} lives on ${room.node}; Ben's signaling goes through ${nodes[1]}, relayed over Redis`);
    for (const [p, q] of [[ann, ben], [ben, ann]]) {
      const first = await waitFor(p, `decodes ${q.name}'s camera and receives its microphone`, decoding, q.identity, 30_000);
      // Media keeps flowing: 15 more frames and 50 more audio packets,
      // bounded by 10 s.
      const later = await waitFor(
        p,
        `keeps decoding ${q.name}'s camera (+15 frames) and receiving its microphone (+50 packets)`,
        ([id, f, a]) =>
          window.pwStats().then((s) => {
            const frames = s[id]?.camera?.framesDecoded ?? 0;
            const packets = s[id]?.microphone?.packetsReceived ?? 0;
            return frames >= f + 15 && packets >= a + 50 ? { frames, packets } : { pending: { frames, packets } };
          }),
        [q.identity, first.frames, first.packets],
        10_000,
      );
      log(`${p.name} (via ${p.node}) decodes ${q.name}: frames ${first.frames} -> ${later.frames}, audio packets ${first.packets} -> ${later.packets}`);
    }
    for (const [p, q] of [[ann, ben], [ben, ann]]) {
      const message = `hello from ${p.name} ${Math.random().toString(36).slice(2, 8)}`;
      await p.page.fill('#chat-input', message);
      await p.page.press('#chat-input', 'Enter');
      await waitFor(q, `receives "${message}"`, (m) => window.pwState().chat.some((c) => !c.self && c.message === m), message, 10_000);
    }
    log('chat crosses the nodes both ways');
    await ann.page.screenshot({ path: join(ARTIFACTS, 'cluster-ann.png') });

    // Failover: Cara joins through node 1 too; node 0, which owns the
    // room, is killed. Ben and Cara, relayed through node 1, lose their
    // tunnels, reconnect by themselves, the room is placed on node 1, and
    // they decode each other again.
    const cara = await open(browser, URLS[1], 'Cara');
    pages.push(cara);
    for (const [p, q] of [[ben, cara], [cara, ben]]) {
      await waitFor(p, `decodes ${q.name}'s camera before the failover`, decoding, q.identity, 30_000);
    }
    process.kill(NODE0_PID, 'SIGKILL');
    const killedAt = Date.now();
    log(`node 0 (pid ${NODE0_PID}) killed`);
    for (const p of [ben, cara]) {
      await waitFor(p, 'reconnects after its node lost the room', () => {
        const types = window.pwEvents.map((e) => e.type);
        const i = types.lastIndexOf('reconnecting');
        return i >= 0 && types.indexOf('reconnected', i) > i && window.pulsewave.state === 'connected';
      }, null, 45_000);
    }
    log(`Ben and Cara reconnected ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
    for (const [p, q] of [[ben, cara], [cara, ben]]) {
      // 5 more frames than now (a restarted counter counts from zero).
      const before = await p.page.evaluate(framesOf, q.identity);
      await waitFor(
        p,
        `decodes ${q.name}'s camera after the failover (+5 frames)`,
        ([id, b]) =>
          window.pwStats().then((s) => {
            const f = s[id]?.camera?.framesDecoded ?? 0;
            return f - (f < b ? 0 : b) >= 5 ? true : { pending: `framesDecoded ${f}, was ${b}` };
          }),
        [q.identity, before],
        30_000,
      );
    }
    log(`media flows again between Ben and Cara ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
    const after = await (await fetch(`${URLS[1]}/api/rooms`, { headers: { Authorization: basic() } })).json();
    const moved = (after.rooms ?? []).find((r) => r.name === ROOM);
    if (moved?.node !== nodes[1]) throw new Error(`after the failover ${ROOM} is on ${moved?.node ?? 'no node'}, expected ${nodes[1]}`);
    log(`${ROOM} now lives on ${moved.node}`);
  } catch (err) {
    failed = err;
  }
  for (const p of pages) {
    await writeFile(join(ARTIFACTS, `cluster-${p.name}-console.log`), p.console.join('\n')).catch(() => {});
  }
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
  if (failed) {
    console.error(`[cluster-e2e] FAILED: ${failed.message}`);
    process.exit(1);
  }
  log('PASS: browsers in one room through two nodes: media, chat, failover');
}

main().catch((err) => setupFailure('unexpected error', err));
