#!/usr/bin/env node
// Browser test of ICE-TCP: two Chromium pages running the demo in a network
// where UDP is dropped (run-network-tests.sh makes one: a network namespace
// whose loopback drops every UDP packet) must still connect, through the
// server's passive TCP candidate, and decode each other's video and receive
// each other's audio.
//
// With PULSEWAVE_NETWORK=ipv6 it is the dual-stack test instead: the
// browsers have an IPv4 and an IPv6 (ULA) address, the server IPv4 and IPv6
// media sockets, and IPv4 media is dropped (run-network-tests.sh's `ipv6`
// phase); the pages must decode each other over IPv6 UDP, which each
// page's selected ICE candidate pairs must show.
//
//   PULSEWAVE_URL=http://127.0.0.1:3000 node test/ice-tcp.mjs
//
// Environment:
//   PULSEWAVE_URL        server base URL (required)
//   PULSEWAVE_ARTIFACTS  screenshot/log directory (default web/test/artifacts)
//   CHROMIUM_PATH        browser binary (default /usr/bin/chromium)
//   PULSEWAVE_NETWORK    `ipv6`: the dual-stack test (IPv4 UDP must be
//                        blocked, media must flow over IPv6 UDP)
//   PULSEWAVE_EXPECT_UDP_BLOCKED=0  do not insist that UDP is blocked (for a
//                        run on an open network: it then only checks that
//                        the call works)
//
// Exit status: 0 passed, 1 a check failed, 2 setup failed.

import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createSocket } from 'node:dgram';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = (process.env.PULSEWAVE_URL ?? '').replace(/\/+$/, '');
const ARTIFACTS = resolve(process.env.PULSEWAVE_ARTIFACTS ?? join(WEB, 'test', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const EXPECT_BLOCKED = process.env.PULSEWAVE_EXPECT_UDP_BLOCKED !== '0';
const IPV6 = process.env.PULSEWAVE_NETWORK === 'ipv6';
const NAME = IPV6 ? 'ipv6' : 'ice-tcp';
const ROOM = `${NAME}-${Date.now().toString(36)}`;

const t0 = Date.now();
const log = (...a) => console.log(`[${NAME} ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fatal(message, err) {
  console.error(`\nFATAL: ${message}`);
  if (err) console.error(err.stack ?? err);
  process.exit(2);
}

const watchdog = setTimeout(() => fatal(`the ${NAME} browser test exceeded 180 s`), 180_000);

/**
 * The selected ICE candidate pair of each of the page's transports, as
 * Chrome reports them: {protocol, local, remote} (addresses as seen by the
 * browser; the server's are its host candidates).
 */
async function selectedPairs(p) {
  return p.page.evaluate(async () => {
    const out = [];
    for (const t of window.pulsewave?._session?.transports ?? []) {
      if (t.closed) continue;
      const report = await t.getStats();
      const stats = [...report.values()];
      const byId = new Map(stats.map((s) => [s.id, s]));
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport ? byId.get(transport.selectedCandidatePairId) : stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      if (!pair) {
        out.push({ direction: t.direction, pending: true });
        continue;
      }
      const local = byId.get(pair.localCandidateId);
      const remote = byId.get(pair.remoteCandidateId);
      out.push({
        direction: t.direction,
        protocol: remote?.protocol,
        local: local?.address ?? local?.ip,
        remote: remote?.address ?? remote?.ip,
        remotePort: remote?.port,
      });
    }
    return out;
  });
}

/** Whether a UDP datagram to ourselves on loopback arrives (it must not). */
async function udpArrives(family = 'udp4', address = '127.0.0.1') {
  const rx = createSocket(family);
  const tx = createSocket(family);
  await new Promise((r) => rx.bind(0, address, r));
  const got = new Promise((r) => {
    rx.once('message', () => r(true));
    setTimeout(() => r(false), 1000);
  });
  tx.send(Buffer.from('ping'), rx.address().port, address);
  const arrived = await got;
  rx.close();
  tx.close();
  return arrived;
}

/** Polls `fn(arg)` in the page until truthy; throws naming `what`. */
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

async function metric(name) {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
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
  p.identity = await page.evaluate(() => window.pulsewave.identity);
  log(`${name} joined as ${p.identity}`);
  return p;
}

async function main() {
  if (!BASE) fatal('PULSEWAVE_URL is not set');
  if (!existsSync(CHROMIUM)) fatal(`Chromium not found at ${CHROMIUM}`);
  await mkdir(ARTIFACTS, { recursive: true });
  const blocked = !(await udpArrives());
  log(`${IPV6 ? 'IPv4 ' : ''}UDP on this network: ${blocked ? 'blocked' : 'open'}`);
  if (EXPECT_BLOCKED && !blocked) fatal('UDP is not blocked here: run this test through run-network-tests.sh');
  const v6Address = process.env.PULSEWAVE_IPV6_ADDRESS ?? '::1';
  if (IPV6 && !(await udpArrives('udp6', v6Address))) fatal(`IPv6 UDP on ${v6Address} does not work here: IPv6 is off in this namespace?`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const pages = [];
  let failed = null;
  try {
    const a = await open(browser, 'Alice');
    const b = await open(browser, 'Bob');
    pages.push(a, b);
    for (const [p, q] of [
      [a, b],
      [b, a],
    ]) {
      const s = await waitFor(
        p,
        `decodes ${q.name}'s camera and receives ${q.name}'s microphone`,
        async (id) => {
          const s = await window.pwStats();
          return s[id]?.camera?.framesDecoded > 10 && s[id]?.microphone?.packetsReceived > 50 ? s[id] : { pending: s[id] ?? null };
        },
        q.identity,
        45_000,
      );
      log(`${p.name} decoded ${s.camera.framesDecoded} frames and ${s.microphone.packetsReceived} audio packets of ${q.name}`);
    }
    if (IPV6) {
      // Every transport of both pages runs over IPv6 UDP, to the server's IPv6 candidate.
      for (const p of [a, b]) {
        const pairs = await waitFor(
          p,
          'reports its selected candidate pairs',
          async () => {
            const pairs = [];
            for (const t of window.pulsewave?._session?.transports ?? []) {
              if (t.closed) continue;
              const stats = [...(await t.getStats()).values()];
              const tr = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
              pairs.push(Boolean(tr));
            }
            return pairs.length === 2 && pairs.every(Boolean) ? pairs : { pending: pairs };
          },
          null,
          15_000,
        ).then(() => selectedPairs(p));
        log(`${p.name} selected pairs: ${JSON.stringify(pairs)}`);
        for (const pair of pairs) {
          if (pair.protocol !== 'udp' || !String(pair.remote).includes(':')) {
            throw new Error(`${p.name}'s ${pair.direction} transport is not on IPv6 UDP: ${JSON.stringify(pair)}`);
          }
        }
      }
    } else {
      const conns = await metric('pulsewave_media_tcp_connections');
      log(`server: ${conns} ICE-TCP connections`);
      if (blocked && !(conns >= 4)) throw new Error(`expected 4 ICE-TCP connections (2 transports each), the server has ${conns}`);
    }
    await a.page.screenshot({ path: join(ARTIFACTS, `${NAME}-alice.png`) });
  } catch (err) {
    failed = err;
  }
  for (const p of pages) await writeFile(join(ARTIFACTS, `${NAME}-${p.name}.log`), p.console.join('\n')).catch(() => {});
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
  const what = IPV6 ? `IPv6 media with IPv4 UDP ${blocked ? 'blocked' : 'open'}` : `ICE-TCP with UDP ${blocked ? 'blocked' : 'open'}`;
  if (failed) {
    console.log(`FAIL ${what}: ${failed.message}`);
    process.exit(1);
  }
  console.log(`PASS ${what}: video and audio both ways`);
  process.exit(0);
}

main().catch((err) => fatal('unexpected error', err));
