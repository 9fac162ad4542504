#!/usr/bin/env node
// Protocol tests of the client module (web/src/pulsewave.js, built into
// web/dist) in headless Chromium against the scripted mock server of
// mock-server.mjs: the message sequence of docs/protocol.md, automatic
// subscription, mute, data, errors, reconnect and republish. No media flows
// (the mock has no media plane), so it runs without the Rust server.
//
//   npm run build && node --test test/client.test.mjs     (or: npm run test:client)
//
// Chromium: /usr/bin/chromium or CHROMIUM_PATH. If it cannot start, every
// test fails (never skipped).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { mockToken, startMockServer } from './mock-server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOM = 'mock-room';
const T = { timeout: 30_000 };

let mock;
let browser;
let page;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`${what}: not true after ${timeoutMs / 1000}s (last: ${JSON.stringify(last)})`);
    await sleep(100); // poll interval of this bounded wait
  }
}

/**
 * Asserts that `fn()` stays falsy for `ms` (checked every 50 ms, failing at
 * once when it turns true). Only for what must not happen and has no later
 * event to wait for instead: a reconnect that would start on a timer.
 */
async function never(what, fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn();
    if (v) assert.fail(`${what} (${JSON.stringify(v)})`);
    await sleep(50);
  }
}

/** The clients' reconnect delay (window.T.make): a reconnect would start by then. */
const RECONNECT_MIN_DELAY_MS = 200;

/** Runs `fn(arg)` in the page, bounded. */
function run(fn, arg) {
  let timer;
  return Promise.race([
    page.evaluate(fn, arg),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('page.evaluate timed out')), 15_000);
    }),
  ]).finally(() => clearTimeout(timer));
}

const events = (name, type) => run(([n, t]) => window.T.events[n].filter((e) => !t || e.type === t), [name, type]);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  mock = await startMockServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream', '--allow-loopback-in-peer-connection', '--disable-dev-shm-usage',
    ],
  });
  const context = await browser.newContext();
  await context.grantPermissions(['camera', 'microphone'], { origin: mock.url });
  page = await context.newPage();
  page.on('pageerror', (e) => console.error('[pageerror]', e.message));
  await page.goto(`${mock.url}/mock.html`);
  await page.waitForFunction(() => window.PW, null, { timeout: 10_000 });
  await run(() => {
    window.T = { clients: {}, events: {}, pubs: {} };
    window.T.make = (name, url, token, options = {}) => {
      const c = new window.PW.PulseWaveClient({ url, token, reconnectMinDelayMs: 200 /* RECONNECT_MIN_DELAY_MS */, ...options });
      const log = (window.T.events[name] = []);
      for (const type of [
        'connected', 'reconnecting', 'reconnected', 'disconnected', 'participantJoined', 'participantLeft',
        'trackPublished', 'trackUnpublished', 'trackSubscribed', 'trackUnsubscribed', 'trackMuted', 'trackUnmuted',
        'data', 'error', 'localTrackEnded', 'resumed', 'resumeFailed',
      ]) {
        c.on(type, (e) =>
          log.push({
            type,
            identity: e?.participantIdentity ?? e?.identity,
            source: e?.source,
            kind: e?.kind,
            producerId: e?.producerId,
            muted: e?.muted,
            reason: e?.reason,
            data: e?.data,
            trackState: e?.track?.readyState,
            message: e?.message,
            code: e?.code,
            replayed: e?.replayed,
            sid: e?.participant?.sid,
          }),
        );
      }
      window.T.clients[name] = c;
      return c;
    };
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  mock?.close();
});

test('connect: join with the room from the token, device loaded', T, async () => {
  const info = await run(
    async ([url, token]) => {
      const c = window.T.make('alice', url, token);
      await c.connect();
      return { state: c.state, identity: c.identity, room: c.room.name, loaded: c.device.loaded, handler: c.device.handlerName };
    },
    [mock.wsUrl, mockToken('alice', ROOM, 'Alice')],
  );
  assert.deepEqual(info, { state: 'connected', identity: 'alice', room: ROOM, loaded: true, handler: 'Chrome111' });
  const [join] = mock.sent('alice', 'join');
  assert.equal(join.room, ROOM);
  assert.equal(typeof join.requestId, 'number');
});

test('publish: send transport, connect, publish with source and the browser\'s own ids', T, async () => {
  const pubs = await run(async () => {
    const c = window.T.clients.alice;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    window.T.pubs.mic = await c.publish(stream.getAudioTracks()[0], { source: 'microphone' });
    window.T.pubs.cam = await c.publish(stream.getVideoTracks()[0], { source: 'camera' });
    return c.publications.map((p) => ({ source: p.source, kind: p.kind, producerId: p.producerId, trackSid: p.trackSid }));
  });
  assert.equal(pubs.length, 2);
  for (const p of pubs) {
    assert.match(p.producerId, /^PR_/);
    assert.match(p.trackSid, /^TR_/);
  }
  const creates = mock.sent('alice', 'create-transport');
  assert.equal(creates.length, 1, 'one send transport for both tracks');
  assert.equal(creates[0].direction, 'send');
  assert.equal(creates[0].rtpCapabilities, undefined, 'the server learns ids from each publish');
  assert.deepEqual(creates[0].sctpCapabilities, { numStreams: { OS: 1024, MIS: 1024 } });
  const connects = mock.sent('alice', 'connect-transport');
  assert.equal(connects.length, 1);
  assert.ok(connects[0].dtlsParameters.fingerprints.length > 0);
  const publishes = mock.sent('alice', 'publish');
  assert.deepEqual(publishes.map((p) => [p.kind, p.source]), [['audio', 'microphone'], ['video', 'camera']]);
  const video = publishes[1].rtpParameters;
  assert.equal(video.codecs[0].mimeType, 'video/VP8');
  assert.ok(video.encodings[0].ssrc > 0);
  // Each publish carries the browser's own payload type and extension ids.
  assert.ok(video.codecs[0].payloadType > 0);
  assert.ok(video.headerExtensions.some((e) => e.uri === 'urn:ietf:params:rtp-hdrext:sdes:mid' && e.id > 0));
  assert.equal(publishes[1].transportId, connects[0].transportId);
});

test('late joiner subscribes to every earlier track automatically', T, async () => {
  await run(
    async ([url, token]) => {
      const c = window.T.make('bob', url, token);
      await c.connect();
    },
    [mock.wsUrl, mockToken('bob', ROOM, 'Bob')],
  );
  const subs = await until('bob has two trackSubscribed', async () => {
    const e = await events('bob', 'trackSubscribed');
    return e.length >= 2 ? e : null;
  });
  assert.deepEqual(subs.map((e) => [e.identity, e.source, e.kind, e.trackState]).sort(), [
    ['alice', 'camera', 'video', 'live'],
    ['alice', 'microphone', 'audio', 'live'],
  ]);
  const creates = mock.sent('bob', 'create-transport');
  assert.deepEqual(creates.map((c) => c.direction), ['recv']);
  assert.equal(creates[0].rtpCapabilities, undefined, 'recv transports carry no rtpCapabilities');
  const subscribes = mock.sent('bob', 'subscribe');
  assert.equal(subscribes.length, 2);
  for (const s of subscribes) {
    assert.ok(s.rtpCapabilities.codecs.length > 0, 'subscribe carries recvRtpCapabilities');
    assert.match(s.transportId, /^TP_/);
  }
  assert.equal(mock.sent('bob', 'resume-consumer').length, 2);
  assert.equal(mock.sent('bob', 'connect-transport').length, 1);
  // Alice saw Bob arrive.
  await until('alice got participantJoined(bob)', async () =>
    (await events('alice', 'participantJoined')).some((e) => e.identity === 'bob'),
  );
});

test('mute / unmute: producer paused, everyone told, subscriber state updated', T, async () => {
  const paused = await run(async () => {
    const { alice } = window.T.clients;
    await alice.mute(window.T.pubs.cam);
    return window.T.pubs.cam.producer.paused;
  });
  assert.equal(paused, true);
  const mute = mock.sent('alice', 'mute');
  assert.equal(mute.length, 1);
  const muted = await until('bob got trackMuted', async () => (await events('bob', 'trackMuted'))[0]);
  assert.equal(muted.identity, 'alice');
  assert.equal(muted.source, 'camera');
  const subMuted = await run(() => {
    const { bob } = window.T.clients;
    const sub = [...bob.subscriptions.values()].find((s) => s.source === 'camera');
    const info = bob.participants.get('alice').tracks.find((t) => t.source === 'camera');
    return [sub.muted, info.muted];
  });
  assert.deepEqual(subMuted, [true, true]);
  await run(() => window.T.clients.alice.unmute(window.T.pubs.cam));
  await until('bob got trackUnmuted', async () => (await events('bob', 'trackUnmuted')).length === 1);
  assert.equal(await run(() => window.T.pubs.cam.producer.paused), false);
});

test('a track published later is subscribed; unpublish closes the consumer', T, async () => {
  await run(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    window.T.pubs.screen = await window.T.clients.alice.publish(stream.getVideoTracks()[0], { source: 'screen' });
  });
  await until('bob got trackPublished(screen)', async () => (await events('bob', 'trackPublished')).some((e) => e.source === 'screen'));
  await until('bob subscribed to the screen', async () => (await events('bob', 'trackSubscribed')).some((e) => e.source === 'screen'));
  await run(() => {
    const sub = [...window.T.clients.bob.subscriptions.values()].find((s) => s.source === 'screen');
    window.T.screenConsumer = sub.consumer;
  });
  await run(() => window.T.clients.alice.unpublish(window.T.pubs.screen, { stopTrack: true }));
  assert.equal(mock.sent('alice', 'unpublish').length, 1);
  await until('bob got trackUnsubscribed(screen)', async () => (await events('bob', 'trackUnsubscribed')).some((e) => e.source === 'screen'));
  await until('bob got trackUnpublished', async () => (await events('bob', 'trackUnpublished')).length === 1);
  assert.equal(await run(() => window.T.screenConsumer.closed), true);
  assert.equal(await run(() => window.T.clients.alice.publications.length), 2);
});

test('data: broadcast and directed, acknowledged', T, async () => {
  await run(() => window.T.clients.alice.sendData({ type: 'chat', message: 'hi all' }));
  await run(() => window.T.clients.alice.sendData({ type: 'chat', message: 'hi bob' }, { to: ['bob'], kind: 'lossy', topic: 't' }));
  const data = await until('bob got 2 data', async () => {
    const e = await events('bob', 'data');
    return e.length >= 2 ? e : null;
  });
  assert.deepEqual(data.map((d) => d.data.message), ['hi all', 'hi bob']);
  const sent = mock.sent('alice', 'publish-data');
  assert.deepEqual(sent[1].destinationIdentities, ['bob']);
  assert.equal(sent[1].kind, 'lossy');
  assert.equal(sent[1].topic, 't');
});

test('request errors carry the code; requests time out', T, async () => {
  const [err, timeout] = await run(async () => {
    const c = window.T.clients.alice;
    const e1 = await c.request({ type: 'bogus' }).catch((e) => ({ code: e.code, message: e.message, name: e.name }));
    const e2 = await c.request({ type: 'mock-silent' }, { timeoutMs: 300 }).catch((e) => ({ code: e.code }));
    return [e1, e2];
  });
  assert.equal(err.code, 201);
  assert.equal(err.name, 'PulseWaveError');
  assert.equal(timeout.code, 'timeout');
  const err2 = await run(() =>
    window.T.clients.bob.sendData({ x: 1 }, { to: ['nobody'] }).catch((e) => e.code),
  );
  assert.equal(err2, 103);
});

test('reconnect after a network drop: rejoin, new transports, republish (muted state kept)', T, async () => {
  await run(() => window.T.clients.alice.mute(window.T.pubs.mic));
  const joinsBefore = mock.sent('alice', 'join').length;
  const publishesBefore = mock.sent('alice', 'publish').length;
  mock.drop('alice');
  await until('alice reconnected', async () => (await events('alice', 'reconnected')).length === 1, 15_000);
  assert.ok((await events('alice', 'reconnecting')).length >= 1);
  assert.equal(mock.sent('alice', 'join').length, joinsBefore + 1);
  await until('alice republished both tracks', async () => mock.sent('alice', 'publish').length === publishesBefore + 2);
  const republished = mock.sent('alice', 'publish').slice(publishesBefore);
  assert.deepEqual(republished.map((p) => [p.source, Boolean(p.muted)]).sort(), [['camera', false], ['microphone', true]]);
  const pubs = await run(() => window.T.clients.alice.publications.map((p) => ({ source: p.source, muted: p.muted, paused: p.producer.paused, id: p.producerId })));
  assert.equal(pubs.find((p) => p.source === 'microphone').paused, true);
  // Bob: old consumers closed, Alice left and came back, new tracks consumed.
  await until('bob subscribed to the republished tracks', async () => {
    const subs = await run(() => [...window.T.clients.bob.subscriptions.values()].filter((s) => s.subscribed).map((s) => s.producerId));
    return pubs.every((p) => subs.includes(p.id));
  });
  const left = await events('bob', 'participantLeft');
  assert.ok(left.some((e) => e.identity === 'alice'));
  const muted = await run(() => [...window.T.clients.bob.subscriptions.values()].find((s) => s.source === 'microphone').muted);
  assert.equal(muted, true, 'the republished microphone is muted for bob');
  await run(() => window.T.clients.alice.unmute(window.T.pubs.mic));
});

test('migration: reconnect at once', T, async () => {
  const t0 = Date.now();
  mock.disconnect('alice', 'migration');
  await until('alice reconnected again', async () => (await events('alice', 'reconnected')).length === 2, 10_000);
  assert.ok(Date.now() - t0 < 3000, 'reconnected within 3 s');
  const reconnecting = await events('alice', 'reconnecting');
  assert.equal(reconnecting.at(-1).reason, 'migration');
});

test('token-refresh: the client keeps the fresh token and reconnects with it', T, async () => {
  const fresh = mockToken('alice', ROOM, 'Alice refreshed');
  const reconnects = (await events('alice', 'reconnected')).length;
  mock.push('alice', { type: 'token-refresh', token: fresh });
  await until('alice stored the token', async () => (await run(() => window.T.clients.alice.token)) === fresh);
  mock.drop('alice');
  await until('alice reconnected', async () => (await events('alice', 'reconnected')).length === reconnects + 1, 15_000);
  assert.equal(mock.tokensOf('alice').at(-1), fresh, 'the reconnect used the refreshed token');
  // Requests carry their requestId first (echoed even on an oversized message).
  const raw = mock.messages.filter((m) => m.identity === 'alice').at(-1).msg;
  assert.equal(Object.keys(raw)[0], 'requestId');
});

test('connection-quality: one message carries every change of an evaluation', T, async () => {
  mock.push('alice', {
    type: 'connection-quality',
    updates: [
      { participantIdentity: 'alice', participantSid: 'PA_a', quality: 'good' },
      { participantIdentity: 'bob', participantSid: 'PA_b', quality: 'poor' },
    ],
  });
  await until('alice knows both qualities', async () =>
    (await run(() => ['alice', 'bob'].map((i) => window.T.clients.alice.connectionQuality.get(i)).join())) ===
    'good,poor');
  // A malformed entry is skipped, the rest applied.
  mock.push('alice', { type: 'connection-quality', updates: [null, { participantIdentity: 'bob', quality: 'excellent' }] });
  await until('bob is excellent', async () =>
    (await run(() => window.T.clients.alice.connectionQuality.get('bob'))) === 'excellent');
});

test('duplicate identity: no reconnect, disconnected event', T, async () => {
  const joins = mock.sent('bob', 'join').length;
  const reconnecting = (await events('bob', 'reconnecting')).length;
  mock.disconnect('bob', 'duplicate-identity');
  await until('bob disconnected', async () => (await events('bob', 'disconnected')).length === 1);
  const [d] = await events('bob', 'disconnected');
  assert.equal(d.reason, 'duplicate-identity');
  assert.equal(await run(() => window.T.clients.bob.state), 'disconnected');
  // No rejoin: a reconnect would start within the reconnect delay; watch
  // for five times that.
  await never(
    'bob rejoined after duplicate-identity',
    async () => mock.sent('bob', 'join').length !== joins || (await events('bob', 'reconnecting')).length !== reconnecting,
    5 * RECONNECT_MIN_DELAY_MS,
  );
  assert.equal(await run(() => window.T.clients.bob.state), 'disconnected');
});

test('leave: left, closed, no reconnect; the others see participant-left', T, async () => {
  await run(
    async ([url, token]) => {
      const c = window.T.make('carol', url, token);
      await c.connect();
    },
    [mock.wsUrl, mockToken('carol', ROOM, 'Carol')],
  );
  await until('carol subscribed to alice', async () => (await events('carol', 'trackSubscribed')).length >= 2);
  await run(() => {
    window.T.carolConsumers = [...window.T.clients.carol.subscriptions.values()].map((s) => s.consumer);
  });
  await run(() => window.T.clients.carol.leave());
  assert.equal(mock.sent('carol', 'leave').length, 1);
  assert.equal(await run(() => window.T.clients.carol.state), 'disconnected');
  assert.deepEqual((await events('carol', 'disconnected')).map((e) => e.reason), ['client-leave']);
  assert.equal(await run(() => window.T.carolConsumers.every((c) => c.closed)), true);
  await until('alice got participantLeft(carol)', async () => (await events('alice', 'participantLeft')).some((e) => e.identity === 'carol'));
  const reconnects = (await events('alice', 'reconnecting')).length;
  await run(() => window.T.clients.alice.leave());
  // No reconnect: one would start within the reconnect delay; watch for
  // five times that.
  await never(
    'alice reconnected after leave',
    async () => (await events('alice', 'reconnecting')).length !== reconnects,
    5 * RECONNECT_MIN_DELAY_MS,
  );
  assert.equal(await run(() => window.T.clients.alice.state), 'disconnected');
});

test('resume after a dropped socket: same session and transports, missed events replayed, no republish', T, async () => {
  mock.setResumeMode('accept');
  const before = await run(
    async ([url, ritaToken, samToken]) => {
      const rita = window.T.make('rita', url, ritaToken);
      await rita.connect();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      window.T.pubs.ritaMic = await rita.publish(stream.getAudioTracks()[0], { source: 'microphone' });
      await window.T.make('sam', url, samToken).connect();
      return { sid: rita.participant.sid, producerId: window.T.pubs.ritaMic.producerId };
    },
    [mock.wsUrl, mockToken('rita', ROOM, 'Rita'), mockToken('sam', ROOM, 'Sam')],
  );
  await until('sam subscribed to rita', async () => (await events('sam', 'trackSubscribed')).some((e) => e.identity === 'rita'));
  await until('rita heard of sam', async () => (await events('rita', 'participantJoined')).some((e) => e.identity === 'sam'));
  const joins = mock.sent('rita', 'join').length;
  const publishes = mock.sent('rita', 'publish').length;
  const transports = mock.sent('rita', 'create-transport').length;
  const missed = { type: 'data', participantIdentity: 'sam', kind: 'reliable', data: 'while-away' };
  mock.drop('rita', [missed]);
  const [resumed] = await until('rita resumed', async () => {
    const r = await events('rita', 'resumed');
    return r.length ? r : null;
  });
  assert.equal(resumed.sid, before.sid, 'same participant sid');
  assert.equal(resumed.replayed, 1);
  const resumeJoins = mock.sent('rita', 'join').slice(joins);
  assert.equal(resumeJoins.length, 1);
  assert.equal(resumeJoins[0].resume.participantSid, before.sid);
  assert.ok(resumeJoins[0].resume.lastSeq >= 1, 'lastSeq counts what rita received');
  await until('rita got the missed data', async () => (await events('rita', 'data')).some((e) => e.data === 'while-away'));
  // Nothing rebuilt: no new transport, no republish, same producer; nobody saw rita leave.
  assert.equal(mock.sent('rita', 'publish').length, publishes);
  assert.equal(mock.sent('rita', 'create-transport').length, transports);
  assert.equal(await run(() => window.T.pubs.ritaMic.producerId), before.producerId);
  assert.equal(await run(() => window.T.clients.rita.state), 'connected');
  assert.equal((await events('rita', 'reconnected')).length, 0);
  assert.ok(!(await events('sam', 'participantLeft')).some((e) => e.identity === 'rita'));
  // Requests work on the resumed session.
  await run(() => window.T.clients.rita.mute(window.T.pubs.ritaMic));
  await until('sam saw rita muted', async () => (await events('sam', 'trackMuted')).some((e) => e.identity === 'rita'));
  // A drop seen first by the client (simulateConnectionDrop: its socket closes while it
  // already resumes on a new one) resumes too; the old socket's late close is ignored.
  assert.equal(await run(() => window.T.clients.rita.simulateConnectionDrop()), true);
  await until('rita resumed again', async () => (await events('rita', 'resumed')).length === 2);
  assert.equal(await run(() => window.T.clients.rita.state), 'connected');
  await run(() => window.T.clients.rita.unmute(window.T.pubs.ritaMic));
  await until('sam saw rita unmuted', async () => (await events('sam', 'trackUnmuted')).some((e) => e.identity === 'rita'));
  assert.equal((await events('rita', 'reconnected')).length, 0);
  assert.equal(await run(() => window.T.clients.rita.participant.sid), before.sid);
});

test('resume: a track published while the client was away is replayed and subscribed', T, async () => {
  const subsBefore = (await events('rita', 'trackSubscribed')).length;
  mock.setOffline('rita', true);
  mock.drop('rita');
  await until('rita tries to come back', async () => (await events('rita', 'reconnecting')).length > 0 && (await run(() => window.T.clients.rita.state)) === 'reconnecting');
  const samPublishes = mock.sent('sam', 'publish').length;
  await run(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    window.T.pubs.samCam = await window.T.clients.sam.publish(stream.getVideoTracks()[0], { source: 'camera' });
  });
  assert.equal(mock.sent('sam', 'publish').length, samPublishes + 1);
  const samCam = await run(() => window.T.pubs.samCam.producerId);
  mock.setOffline('rita', false);
  await until('rita resumed once more', async () => (await events('rita', 'resumed')).length === 3, 15_000);
  await until('rita subscribed to the camera sam published while she was away', async () =>
    (await events('rita', 'trackSubscribed')).slice(subsBefore).some((e) => e.identity === 'sam' && e.producerId === samCam),
  );
  assert.equal((await events('rita', 'reconnected')).length, 0);
  assert.ok(!(await events('sam', 'participantLeft')).some((e) => e.identity === 'rita'));
});

test('resume: a network back late in the resume window still resumes', { timeout: 40_000 }, async () => {
  // With the doubling reconnect backoff (1 s up to 10 s here) the attempts would be at
  // 0, 1, 3 and 7 s and the next past the 15 s window: an 8.5 s outage would end in a
  // full rejoin. Resume attempts are at most 2 s apart, the last just before the window closes.
  await run(
    async ([url, token]) => {
      const rosa = window.T.make('rosa', url, token, { reconnectMinDelayMs: 1000, reconnectMaxDelayMs: 10_000 });
      await rosa.connect();
    },
    [mock.wsUrl, mockToken('rosa', ROOM, 'Rosa')],
  );
  const sid = await run(() => window.T.clients.rosa.participant.sid);
  mock.setOffline('rosa', true);
  mock.drop('rosa');
  await until('rosa tries to resume', async () => (await events('rosa', 'reconnecting')).length > 0);
  // The outage itself: 8.5 s without a network.
  await sleep(8500);
  mock.setOffline('rosa', false);
  await until('rosa resumed', async () => (await events('rosa', 'resumed')).length === 1, 10_000);
  assert.equal((await events('rosa', 'resumeFailed')).length, 0);
  assert.equal((await events('rosa', 'reconnected')).length, 0);
  assert.equal(await run(() => window.T.clients.rosa.participant.sid), sid);
  await run(() => window.T.clients.rosa.leave());
});

test('resume refused: falls back to a full rejoin and republish', T, async () => {
  mock.setResumeMode('refuse');
  const joins = mock.sent('rita', 'join').length;
  const publishes = mock.sent('rita', 'publish').length;
  mock.drop('rita');
  await until('rita rejoined in full', async () => (await events('rita', 'reconnected')).length === 1, 15_000);
  assert.equal((await events('rita', 'resumeFailed')).length, 1);
  const attempts = mock.sent('rita', 'join').slice(joins);
  assert.deepEqual(attempts.map((j) => Boolean(j.resume)), [true, false], 'one refused resume, then a plain join');
  await until('rita republished', async () => mock.sent('rita', 'publish').length === publishes + 1);
  mock.setResumeMode('off');
  await run(async () => {
    await window.T.clients.rita.leave();
    await window.T.clients.sam.leave();
  });
});

test('ICE restart: fresh iceServers go to updateIceServers before restartIce', T, async () => {
  const calls = await run(
    async ([url, token]) => {
      const ivy = window.T.make('ivy', url, token);
      await ivy.connect();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      await ivy.publish(stream.getAudioTracks()[0], { source: 'microphone' });
      const transport = await ivy._session.sendTransport;
      // Record the order of the calls into mediasoup-client (and still make them).
      const calls = [];
      const update = transport.updateIceServers.bind(transport);
      const restart = transport.restartIce.bind(transport);
      transport.updateIceServers = (o) => {
        calls.push({ call: 'updateIceServers', iceServers: o.iceServers });
        return update(o);
      };
      transport.restartIce = (o) => {
        calls.push({ call: 'restartIce', usernameFragment: o.iceParameters.usernameFragment });
        return restart(o);
      };
      const restarted = new Promise((resolve) => ivy.once('iceRestarted', resolve));
      // What mediasoup-client reports when the network changes.
      transport.emit('connectionstatechange', 'disconnected');
      const e = await restarted;
      return { calls, transportId: transport.id, event: e.transportId };
    },
    [mock.wsUrl, mockToken('ivy', ROOM, 'Ivy')],
  );
  const [req] = mock.sent('ivy', 'restart-ice');
  assert.equal(req.transportId, calls.transportId);
  assert.equal(calls.event, calls.transportId);
  assert.deepEqual(calls.calls.map((c) => c.call), ['updateIceServers', 'restartIce']);
  const [server] = calls.calls[0].iceServers;
  assert.deepEqual(server.urls, ['turn:127.0.0.1:3478?transport=udp']);
  assert.match(server.username, /^\d+:ivy#1$/, 'the credentials of the ice-restarted reply');
  assert.ok(server.credential);
});

test('stall: a silent path with an unanswered consent check restarts ICE; a quiet live one does not', { timeout: 40_000 }, async () => {
  const result = await run(
    async ([url, token]) => {
      const kim = window.T.make('kim', url, token);
      await kim.connect();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      await kim.publish(stream.getAudioTracks()[0], { source: 'microphone' });
      const transport = await kim._session.sendTransport;
      // The mock has no media plane: the transport's state and its selected
      // candidate pair's counters are what the browser would report.
      const pair = { bytesReceived: 1000, requestsSent: 5, responsesReceived: 5 };
      Object.defineProperty(transport, 'connectionState', { get: () => 'connected', configurable: true });
      transport.getStats = async () =>
        new Map([
          ['T1', { type: 'transport', id: 'T1', selectedCandidatePairId: 'CP1' }],
          ['CP1', { type: 'candidate-pair', id: 'CP1', ...pair }],
        ]);
      const stalls = [];
      kim.on('transportStalled', (e) => stalls.push({ ...e, at: Date.now() }));
      const wait = (ms) => new Promise((r) => setTimeout(r, ms));
      // Quiet but live for 4 s: nothing but consent checks, each answered.
      for (let i = 0; i < 8; i++) {
        await wait(500);
        pair.requestsSent += 1;
        pair.responsesReceived += 1;
        pair.bytesReceived += 100;
      }
      const quiet = stalls.length;
      // Then dead: the browser keeps sending checks (every 500 ms here),
      // none is answered, nothing is received.
      const silentFrom = Date.now();
      const deadline = Date.now() + 10_000;
      while (stalls.length === quiet && Date.now() < deadline) {
        pair.requestsSent += 1;
        await wait(500); // the browser's check interval; the loop ends at the event or the bound
      }
      return { quiet, stalls, silentFrom, transportId: transport.id };
    },
    [mock.wsUrl, mockToken('kim', ROOM, 'Kim')],
  );
  assert.equal(result.quiet, 0, 'a live path (its checks answered) never stalls');
  assert.equal(result.stalls.length, 1, 'the dead path stalls once');
  const [stall] = result.stalls;
  assert.equal(stall.transportId, result.transportId);
  assert.equal(stall.direction, 'send');
  assert.ok(stall.silentMs >= 2000, `silent ${stall.silentMs} ms before the restart`);
  assert.ok(stall.at - result.silentFrom < 5000, 'noticed within 5 s');
  await until('a restart-ice request for that transport', () =>
    mock.sent('kim', 'restart-ice').some((r) => r.transportId === result.transportId),
  );
});

test('stall: a path whose sends are discarded restarts ICE after 1 s of silence, with its silent sibling on the same address', { timeout: 40_000 }, async () => {
  const result = await run(
    async ([url, token]) => {
      const lee = window.T.make('lee', url, token);
      await lee.connect();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      await lee.publish(stream.getAudioTracks()[0], { source: 'microphone' });
      const send = await lee._session.sendTransport;
      const recv = await lee._getRecvTransport(lee._session);
      // Both transports on one local address (as a browser has them); the
      // send transport's selected pair is where the browser sends most.
      const pairs = new Map();
      for (const transport of [send, recv]) {
        const pair = { bytesReceived: 1000, requestsSent: 5, responsesReceived: 5, packetsDiscardedOnSend: 0, lastPacketReceivedTimestamp: Date.now() };
        pairs.set(transport, pair);
        Object.defineProperty(transport, 'connectionState', { get: () => 'connected', configurable: true });
        transport.getStats = async () =>
          new Map([
            ['T1', { type: 'transport', id: 'T1', selectedCandidatePairId: 'CP1' }],
            ['CP1', { type: 'candidate-pair', id: 'CP1', localCandidateId: 'L1', timestamp: Date.now(), ...pair }],
            ['L1', { type: 'local-candidate', id: 'L1', address: '10.77.0.2' }],
          ]);
      }
      const stalls = [];
      lee.on('transportStalled', (e) => stalls.push({ ...e, at: Date.now() }));
      const wait = (ms) => new Promise((r) => setTimeout(r, ms));
      // Live for 2 s: media arrives on both.
      for (let i = 0; i < 8; i++) {
        await wait(250);
        for (const pair of pairs.values()) {
          pair.bytesReceived += 1200;
          pair.lastPacketReceivedTimestamp = Date.now();
        }
      }
      const live = stalls.length;
      // Then the address is gone: nothing arrives, and the browser discards
      // what it sends on the send transport (no consent check is sent yet).
      const silentFrom = Date.now();
      const deadline = Date.now() + 10_000;
      while (stalls.length < 2 && Date.now() < deadline) {
        pairs.get(send).packetsDiscardedOnSend += 3;
        await wait(100); // the browser's send rate, roughly; the loop ends at the events or the bound
      }
      return { live, stalls, silentFrom, send: send.id, recv: recv.id };
    },
    [mock.wsUrl, mockToken('lee', ROOM, 'Lee')],
  );
  assert.equal(result.live, 0, 'a path that receives never stalls');
  assert.deepEqual(
    result.stalls.map((s) => s.transportId).sort(),
    [result.send, result.recv].sort(),
    'the dead path and its silent sibling both stall',
  );
  for (const stall of result.stalls) {
    assert.ok(stall.silentMs >= 1000, `silent ${stall.silentMs} ms before the restart`);
    assert.ok(stall.at - result.silentFrom < 2500, `noticed ${stall.at - result.silentFrom} ms after the address went away`);
  }
  for (const id of [result.send, result.recv]) {
    await until(`a restart-ice request for ${id}`, () => mock.sent('lee', 'restart-ice').some((r) => r.transportId === id));
  }
});
