#!/usr/bin/env node
// Browser test of the embedded TURN server: two Chromium pages whose
// PulseWaveClient uses iceTransportPolicy 'relay' (so no direct path can
// be used) publish and receive video through the server's own TURN
// server, once per TURN transport: UDP, TCP and TLS. Each run starts the
// server binary with only that TURN listener (TURN_ENABLED=true), and
// checks that video decodes and that the selected ICE candidate pair is a
// relay candidate over that protocol.
//
//   PULSEWAVE_SERVER_BIN=target/debug/pulsewave-server node web/test/turn-e2e.mjs
//
// TLS: the test makes a throwaway CA and a certificate for 127.0.0.1 with
// openssl; Chromium is started with --ignore-certificate-errors, which its
// TURN-over-TLS socket honours like HTTPS does.
//
// Environment:
//   PULSEWAVE_SERVER_BIN  server binary (default target/release, else target/debug)
//   CHROMIUM_PATH         browser binary (default /usr/bin/chromium)
//   TURN_E2E_MODES        comma-separated subset of udp,tcp,tls (default all)
//
// Exit status: 0 all passed, 1 a mode failed, 2 setup failed.

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(WEB, '..');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const BIN =
  process.env.PULSEWAVE_SERVER_BIN ??
  [join(REPO, 'target/release/pulsewave-server'), join(REPO, 'target/debug/pulsewave-server')].find(existsSync);
const MODES = (process.env.TURN_E2E_MODES ?? 'udp,tcp,tls').split(',').map((m) => m.trim());

const t0 = Date.now();
const log = (...a) => console.log(`[turn-e2e ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function fatal(message) {
  console.error(`FATAL: ${message}`);
  process.exit(2);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value; throws naming `what` after `ms`. */
async function until(what, fn, ms = 20_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && !(typeof last === 'object' && 'pending' in last)) return last;
    } catch (err) {
      last = `error: ${err.message}`;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not true after ${ms / 1000}s (last: ${JSON.stringify(last)})`);
    // Poll interval of a bounded wait (a page or child process announces nothing).
    await sleep(250);
  }
}

function certificates() {
  const dir = mkdtempSync(join(tmpdir(), 'pw-turn-e2e-'));
  const ossl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=PulseWave test CA', '-keyout', 'ca.key', '-out', 'ca.pem');
  ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1',
    '-keyout', 'turn.key', '-out', 'turn.csr');
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ossl('x509', '-req', '-in', 'turn.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1',
    '-extfile', 'ext.cnf', '-out', 'turn.pem');
  return { cert: join(dir, 'turn.pem'), key: join(dir, 'turn.key') };
}

async function startServer(mode) {
  const port = await freePort();
  const turnPort = await freePort();
  const env = {
    PATH: process.env.PATH,
    HOST: '127.0.0.1',
    PORT: String(port),
    MEDIASOUP_NUM_WORKERS: '1',
    DEMO_ENABLED: 'true',
    PULSEWAVE_WEB_DIR: WEB,
    RUST_LOG: process.env.RUST_LOG ?? 'warn,pulsewave_turn=debug',
    TURN_ENABLED: 'true',
    TURN_UDP_PORT: mode === 'udp' ? String(turnPort) : '0',
    TURN_TCP_PORT: mode === 'tcp' ? String(turnPort) : '0',
    TURN_TLS_PORT: mode === 'tls' ? String(turnPort) : '0',
    TURN_RELAY_MIN_PORT: String(52000 + Math.floor(Math.random() * 100) * 50),
  };
  env.TURN_RELAY_MAX_PORT = String(Number(env.TURN_RELAY_MIN_PORT) + 49);
  if (mode === 'tls') {
    const { cert, key } = certificates();
    env.TURN_CERT_FILE = cert;
    env.TURN_KEY_FILE = key;
  }
  const child = spawn(BIN, ['--dev'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const base = `http://127.0.0.1:${port}`;
  await until(`server (${mode}) answers /healthz`, async () => {
    if (child.exitCode !== null) throw new Error(`server exited: ${stderr}`);
    const r = await fetch(`${base}/healthz`);
    return r.ok;
  });
  return { child, base, logs: () => stderr };
}

async function token(base, identity, room) {
  const r = await fetch(`${base}/api/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ identity, room }),
  });
  return (await r.json()).token;
}

/** A page with a relay-only PulseWaveClient connected to `room`. */
async function joinPage(browser, base, identity, room) {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') log(`${identity} console: ${m.text()}`);
  });
  await page.goto(`${base}/demo/`);
  const tok = await token(base, identity, room);
  await page.evaluate(
    async ({ url, tok }) => {
      const { PulseWaveClient } = await import('/demo/pulsewave.esm.js');
      const client = new PulseWaveClient({ url, token: tok, iceTransportPolicy: 'relay' });
      window.pw = client;
      window.subs = [];
      client.on('trackSubscribed', (sub) => window.subs.push(sub));
      await client.connect();
    },
    { url: base.replace('http', 'ws'), tok },
  );
  return page;
}

/** framesDecoded of the first video subscription, and its local candidate. */
function receiveStats() {
  const sub = window.subs.find((s) => s.consumer?.kind === 'video');
  if (!sub) return { pending: 'no video subscription yet' };
  return sub.consumer.getStats().then((report) => {
    let frames = 0;
    let pair;
    const byId = new Map();
    report.forEach((s) => {
      byId.set(s.id, s);
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded ?? 0;
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.nominated || !pair)) pair = s;
    });
    const local = pair && byId.get(pair.localCandidateId);
    if (!local || frames < 10) return { pending: { frames, local: local?.candidateType } };
    return { frames, candidateType: local.candidateType, relayProtocol: local.relayProtocol };
  });
}

async function runMode(browser, mode) {
  const server = await startServer(mode);
  const room = `turn-${mode}-${Date.now().toString(36)}`;
  try {
    const alice = await joinPage(browser, server.base, 'alice', room);
    const bob = await joinPage(browser, server.base, 'bob', room);
    await alice.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
      await window.pw.publish(stream.getVideoTracks()[0], { source: 'camera' });
    });
    const got = await until(`${mode}: bob decodes alice's video through TURN`, () => bob.evaluate(receiveStats), 30_000);
    log(`${mode}: ${got.frames} frames decoded, local candidate ${got.candidateType}/${got.relayProtocol}`);
    if (got.candidateType !== 'relay') throw new Error(`${mode}: the selected candidate is ${got.candidateType}, not relay`);
    if (got.relayProtocol !== mode) throw new Error(`${mode}: relayProtocol is ${got.relayProtocol}`);
    await alice.close();
    await bob.close();
  } catch (err) {
    log(`server log (${mode}):\n${server.logs().split('\n').slice(-30).join('\n')}`);
    throw err;
  } finally {
    server.child.kill('SIGTERM');
  }
}

if (!BIN || !existsSync(BIN)) fatal('no server binary: cargo build -p pulsewave-server, or set PULSEWAVE_SERVER_BIN');
if (!existsSync(join(WEB, 'dist', 'pulsewave.esm.js'))) fatal('web/dist is missing: npm ci && npm run build in web/');
if (!existsSync(CHROMIUM)) fatal(`Chromium not found at ${CHROMIUM}`);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--ignore-certificate-errors',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
  ],
});
let failed = 0;
for (const mode of MODES) {
  try {
    await runMode(browser, mode);
    log(`PASS ${mode}`);
  } catch (err) {
    failed += 1;
    log(`FAIL ${mode}: ${err.message}`);
  }
}
await browser.close();
process.exit(failed ? 1 : 0);
