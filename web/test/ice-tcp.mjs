#!/usr/bin/env node
// Browser test of ICE-TCP: two Chromium pages running the demo in a network
// where UDP is dropped (run-network-tests.sh makes one: a network namespace
// whose loopback drops every UDP packet) must still connect, through the
// server's passive TCP candidate, and decode each other's video and receive
// each other's audio.
//
// With PULSEWAVE_NETWORK=turn-tls it is the TURN-over-TLS test: the test
// and Chromium run in a namespace whose only way to the server (10.78.0.1)
// is TCP to the signaling port and to the TURN TLS port
// (run-network-tests.sh's `turn-tls` phase), and Chromium trusts the test
// CA that issued the TURN certificate (PULSEWAVE_TEST_CA, put in an NSS
// database of a throwaway HOME): the pages, on the unmodified demo, must
// decode each other through the embedded TURN server over TLS.
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
//                        blocked, media must flow over IPv6 UDP);
//                        `turn-tls`: media must flow through TURN over TLS
//   PULSEWAVE_TEST_CA    PEM of a CA for Chromium to trust (turn-tls)
//   PULSEWAVE_EXPECT_UDP_BLOCKED=0  do not insist that UDP is blocked (for a
//                        run on an open network: it then only checks that
//                        the call works)
//
// Exit status: 0 passed, 1 a check failed, 2 setup failed.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = (process.env.PULSEWAVE_URL ?? '').replace(/\/+$/, '');
const ARTIFACTS = resolve(process.env.PULSEWAVE_ARTIFACTS ?? join(WEB, 'test', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const EXPECT_BLOCKED = process.env.PULSEWAVE_EXPECT_UDP_BLOCKED !== '0';
const IPV6 = process.env.PULSEWAVE_NETWORK === 'ipv6';
const TURN_TLS = process.env.PULSEWAVE_NETWORK === 'turn-tls';
const NAME = IPV6 ? 'ipv6' : TURN_TLS ? 'turn-tls' : 'ice-tcp';
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
        localType: local?.candidateType,
        relayProtocol: local?.relayProtocol,
        local: local?.address ?? local?.ip,
        remote: remote?.address ?? remote?.ip,
        remotePort: remote?.port,
      });
    }
    return out;
  });
}

/** Whether a UDP datagram to ourselves (on loopback by default) arrives. */
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

/** Whether a STUN Binding request to host:port over UDP is answered within 1 s. */
async function stunAnswered(host, port) {
  const sock = createSocket('udp4');
  const request = Buffer.alloc(20);
  request.writeUInt16BE(0x0001, 0); // Binding request
  request.writeUInt32BE(0x2112a442, 4); // magic cookie
  for (let i = 8; i < 20; i++) request[i] = Math.floor(Math.random() * 256);
  const answered = new Promise((r) => {
    sock.once('message', () => r(true));
    setTimeout(() => r(false), 1000);
  });
  sock.send(request, port, host);
  const got = await answered;
  sock.close();
  return got;
}

/** Whether a TCP connection to host:port opens within 1 s. */
function tcpConnects(host, port) {
  return new Promise((r) => {
    const s = connect({ host, port });
    const done = (ok) => {
      s.destroy();
      r(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    setTimeout(() => done(false), 1000);
  });
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
  let blocked;
  if (TURN_TLS) {
    // The TURN server answers a Binding over UDP and takes TCP on 3478: both
    // must be cut, and TLS on its port must pass.
    const host = new URL(BASE).hostname;
    const udp = await stunAnswered(host, 3478);
    const tcp = await tcpConnects(host, 3478);
    const tls = await tcpConnects(host, Number(process.env.TURN_TLS_PORT ?? 5349));
    log(`to the server: TURN UDP ${udp ? 'open' : 'blocked'}, TURN TCP ${tcp ? 'open' : 'blocked'}, TURN TLS ${tls ? 'open' : 'blocked'}`);
    if (!tls) fatal('the TURN TLS port cannot be reached: nothing could connect');
    blocked = !udp && !tcp;
  } else {
    blocked = !(await udpArrives());
    log(`${IPV6 ? 'IPv4 ' : ''}UDP on this network: ${blocked ? 'blocked' : 'open'}`);
  }
  if (EXPECT_BLOCKED && !blocked) fatal('the network is not restricted here: run this test through run-network-tests.sh');
  const v6Address = process.env.PULSEWAVE_IPV6_ADDRESS ?? '::1';
  if (IPV6 && !(await udpArrives('udp6', v6Address))) fatal(`IPv6 UDP on ${v6Address} does not work here: IPv6 is off in this namespace?`);

  // A throwaway HOME whose NSS database trusts the test CA (Chromium on
  // Linux reads ~/.pki/nssdb): the TURN server's certificate is checked,
  // not ignored.
  let env;
  if (process.env.PULSEWAVE_TEST_CA) {
    const home = mkdtempSync(join(tmpdir(), 'pw-chromium-home-'));
    const db = `sql:${join(home, '.pki', 'nssdb')}`;
    await mkdir(join(home, '.pki', 'nssdb'), { recursive: true });
    try {
      execFileSync('certutil', ['-d', db, '-N', '--empty-password'], { stdio: 'pipe' });
      execFileSync('certutil', ['-d', db, '-A', '-n', 'PulseWave test CA', '-t', 'C,,', '-i', process.env.PULSEWAVE_TEST_CA], { stdio: 'pipe' });
    } catch (err) {
      fatal('cannot make the NSS database that trusts the test CA (certutil: apt-get install -y libnss3-tools)', err);
    }
    env = { ...process.env, HOME: home };
    log(`Chromium trusts ${process.env.PULSEWAVE_TEST_CA} (HOME=${home})`);
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    env,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--autoplay-policy=no-user-gesture-required',
      // A server on a veth address (turn-tls) is not localhost: treat it as
      // secure, as getUserMedia needs.
      `--unsafely-treat-insecure-origin-as-secure=${BASE}`,
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
    if (TURN_TLS) {
      // Every transport of both pages is relayed by the embedded TURN server over TLS.
      for (const p of [a, b]) {
        const pairs = await selectedPairs(p);
        log(`${p.name} selected pairs: ${JSON.stringify(pairs)}`);
        if (pairs.length !== 2) throw new Error(`${p.name} has ${pairs.length} transports`);
        for (const pair of pairs) {
          if (pair.localType !== 'relay' || pair.relayProtocol !== 'tls') {
            throw new Error(`${p.name}'s ${pair.direction} transport is not relayed over TLS: ${JSON.stringify(pair)}`);
          }
        }
      }
      const relays = await metric('pulsewave_turn_allocations');
      log(`server: ${relays} TURN allocations`);
      if (!(relays >= 4)) throw new Error(`expected at least 4 TURN allocations (one per transport), the server has ${relays}`);
    } else if (IPV6) {
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
    // What each page gathered and tried, for the failure report.
    for (const p of pages) {
      const seen = await p.page
        .evaluate(async () => {
          const out = [];
          for (const t of window.pulsewave?._session?.transports ?? []) {
            for (const s of (await t.getStats()).values()) {
              if (s.type === 'local-candidate' || s.type === 'remote-candidate') {
                out.push(`${s.type} ${s.candidateType} ${s.protocol} ${s.address ?? s.ip}:${s.port} ${s.relayProtocol ?? ''} ${s.url ?? ''}`);
              } else if (s.type === 'candidate-pair') {
                out.push(`pair ${s.state} nominated=${s.nominated} requests=${s.requestsSent} responses=${s.responsesReceived}`);
              }
            }
          }
          return out;
        })
        .catch((e) => [`(no stats: ${e.message})`]);
      log(`${p.name} ICE: ${seen.length ? `\n  ${seen.join('\n  ')}` : 'nothing'}`);
    }
  }
  for (const p of pages) await writeFile(join(ARTIFACTS, `${NAME}-${p.name}.log`), p.console.join('\n')).catch(() => {});
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
  const what = IPV6
    ? `IPv6 media with IPv4 UDP ${blocked ? 'blocked' : 'open'}`
    : TURN_TLS
      ? `TURN over TLS with everything but TLS ${blocked ? 'blocked' : 'open'}`
      : `ICE-TCP with UDP ${blocked ? 'blocked' : 'open'}`;
  if (failed) {
    console.log(`FAIL ${what}: ${failed.message}`);
    process.exit(1);
  }
  console.log(`PASS ${what}: video and audio both ways`);
  process.exit(0);
}

main().catch((err) => fatal('unexpected error', err));
