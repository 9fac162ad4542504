// A scripted PulseWave signaling server for testing the client module without
// media: it speaks docs/protocol.md (join, transports, publish, subscribe,
// mute, data, leave, disconnect) with plausible parameters, records every
// client message, and lets a test drop or disconnect sessions. ICE never
// connects (there is no media server behind it), which mediasoup-client does
// not need for produce()/consume() to complete.
//
// It also serves /dist/* (the built client) and /mock.html, a page that
// exposes the module as window.PW.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';

const WEB = join(dirname(fileURLToPath(import.meta.url)), '..');

const id = (prefix) => `${prefix}_${randomBytes(9).toString('base64url').slice(0, 12)}`;
const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

/** The router capabilities of pulsewave-core's defaults (opus, VP8 subset). */
export const ROUTER_CAPS = {
  codecs: [
    {
      kind: 'audio', mimeType: 'audio/opus', preferredPayloadType: 100, clockRate: 48000, channels: 2,
      parameters: { minptime: 10, useinbandfec: 1 },
      rtcpFeedback: [{ type: 'nack' }, { type: 'transport-cc' }],
    },
    {
      kind: 'video', mimeType: 'video/VP8', preferredPayloadType: 101, clockRate: 90000, parameters: {},
      rtcpFeedback: [
        { type: 'nack' }, { type: 'nack', parameter: 'pli' }, { type: 'ccm', parameter: 'fir' },
        { type: 'goog-remb' }, { type: 'transport-cc' },
      ],
    },
    { kind: 'video', mimeType: 'video/rtx', preferredPayloadType: 102, clockRate: 90000, parameters: { apt: 101 }, rtcpFeedback: [] },
  ],
  headerExtensions: [
    { kind: 'audio', uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', preferredId: 1, preferredEncrypt: false, direction: 'sendrecv' },
    { kind: 'video', uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', preferredId: 1, preferredEncrypt: false, direction: 'sendrecv' },
    { kind: 'audio', uri: 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time', preferredId: 4, preferredEncrypt: false, direction: 'sendrecv' },
    { kind: 'video', uri: 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time', preferredId: 4, preferredEncrypt: false, direction: 'sendrecv' },
    { kind: 'video', uri: 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', preferredId: 5, preferredEncrypt: false, direction: 'sendrecv' },
    { kind: 'audio', uri: 'urn:ietf:params:rtp-hdrext:ssrc-audio-level', preferredId: 6, preferredEncrypt: false, direction: 'sendrecv' },
  ],
};

function consumerRtpParameters(kind, mid) {
  const ssrc = 100_000_000 + Math.floor(Math.random() * 800_000_000);
  const cname = randomBytes(6).toString('hex');
  if (kind === 'audio') {
    return {
      mid,
      codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2, parameters: { minptime: 10, useinbandfec: 1 }, rtcpFeedback: [{ type: 'nack' }] }],
      headerExtensions: [
        { uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', id: 1, encrypt: false, parameters: {} },
        { uri: 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time', id: 4, encrypt: false, parameters: {} },
        { uri: 'urn:ietf:params:rtp-hdrext:ssrc-audio-level', id: 6, encrypt: false, parameters: {} },
      ],
      encodings: [{ ssrc }],
      rtcp: { cname, reducedSize: true },
    };
  }
  return {
    mid,
    codecs: [
      {
        mimeType: 'video/VP8', payloadType: 101, clockRate: 90000, parameters: {},
        rtcpFeedback: [{ type: 'nack' }, { type: 'nack', parameter: 'pli' }, { type: 'ccm', parameter: 'fir' }, { type: 'transport-cc' }],
      },
      { mimeType: 'video/rtx', payloadType: 102, clockRate: 90000, parameters: { apt: 101 }, rtcpFeedback: [] },
    ],
    headerExtensions: [
      { uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', id: 1, encrypt: false, parameters: {} },
      { uri: 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', id: 5, encrypt: false, parameters: {} },
    ],
    encodings: [{ ssrc, rtx: { ssrc: ssrc + 1 } }],
    rtcp: { cname, reducedSize: true },
  };
}

function transportOptions() {
  const fingerprint = [...randomBytes(32)].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':');
  return {
    id: id('TP'),
    iceParameters: { usernameFragment: randomBytes(8).toString('hex'), password: randomBytes(16).toString('hex'), iceLite: true },
    iceCandidates: [
      { foundation: 'udpcandidate', priority: 1076302079, address: '127.0.0.1', ip: '127.0.0.1', port: 40000 + Math.floor(Math.random() * 9000), type: 'host', protocol: 'udp' },
    ],
    dtlsParameters: { role: 'auto', fingerprints: [{ algorithm: 'sha-256', value: fingerprint }] },
    sctpParameters: { port: 5000, OS: 1024, MIS: 1024, maxMessageSize: 262144 },
    iceServers: [],
  };
}

/** Makes an unsigned token the mock accepts (the client only reads video.room). */
export function mockToken(identity, room, name = identity) {
  return `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub: identity, name, video: { room, roomJoin: true } })}.mock`;
}

export async function startMockServer() {
  const rooms = new Map(); // name -> {sid, sessions: Map identity -> session}
  const messages = []; // {identity, msg}
  const sessions = new Set();

  const http = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/mock.html') {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end('<!doctype html><title>mock</title><script type="module">import * as PW from "/dist/pulsewave.esm.js"; window.PW = PW;</script>');
      return;
    }
    if (path.startsWith('/dist/')) {
      const rel = normalize(path.slice(6));
      if (!rel.startsWith('..')) {
        try {
          const body = await readFile(join(WEB, 'dist', rel));
          res.writeHead(200, { 'Content-Type': rel.endsWith('.js') ? 'text/javascript' : 'application/json' });
          res.end(body);
          return;
        } catch {
          // 404 below
        }
      }
    }
    res.writeHead(404).end();
  });
  // Identities whose network is "down": their WebSocket upgrades are refused.
  const offline = new Set();
  const identityOf = (url) => {
    try {
      const token = new URL(url, 'http://x').searchParams.get('token') ?? '';
      return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub;
    } catch {
      return undefined;
    }
  };
  const wss = new WebSocketServer({ server: http, verifyClient: ({ req }) => !offline.has(identityOf(req.url)) });

  const participantInfo = (s) => ({
    sid: s.sid, identity: s.identity, name: s.name, metadata: '', joinedAt: s.joinedAt,
    permission: { canPublish: true, canSubscribe: true, canPublishData: true, hidden: false },
    tracks: [...s.producers.values()].map((p) => p.info),
    dataChannels: [],
  });
  const others = (s) => [...(s.room?.sessions.values() ?? [])].filter((o) => o !== s);
  // Session resume (docs/protocol.md): 'off' (no resumeToken, a dropped socket is removed),
  // 'accept' (a dropped session waits; `join` with `resume` takes it back and gets the
  // missed messages replayed) or 'refuse' (tokens handed out, every resume refused).
  let resumeMode = 'off';
  const send = (s, msg) => {
    if (s.resumeToken) {
      // Numbered and kept (bounded) for a replay, as the server does.
      msg = { ...msg, seq: ++s.seq };
      s.buffer.push(msg);
      if (s.buffer.length > 256) s.buffer.shift();
    }
    if (s.ws.readyState === 1) s.ws.send(JSON.stringify(msg));
  };
  const sendRaw = (s, msg) => {
    if (s.ws.readyState === 1) s.ws.send(JSON.stringify(msg));
  };

  function unpublish(s, producer, requestId) {
    s.producers.delete(producer.id);
    const msg = { type: 'track-unpublished', producerId: producer.id, trackSid: producer.info.sid, participantIdentity: s.identity };
    for (const o of others(s)) {
      for (const [cid, c] of o.consumers) {
        if (c.producerId === producer.id) {
          o.consumers.delete(cid);
          send(o, { type: 'track-unsubscribed', consumerId: cid, producerId: producer.id });
        }
      }
      send(o, msg);
    }
    send(s, requestId === undefined ? msg : { ...msg, requestId });
  }

  function removeSession(s) {
    if (!s.room || s.removed) return;
    s.removed = true;
    for (const p of [...s.producers.values()]) unpublish(s, p);
    if (s.room.sessions.get(s.identity) === s) s.room.sessions.delete(s.identity);
    for (const o of s.room.sessions.values()) send(o, { type: 'participant-left', participant: participantInfo(s) });
  }

  function handle(s, msg, conn) {
    const { requestId } = msg;
    const reply = (m) => send(s, requestId === undefined ? m : { ...m, requestId });
    const error = (code, message) => reply({ type: 'error', code, message });
    if (msg.type !== 'join' && !s.room && msg.type !== 'mock-silent') return error(205, 'not joined');
    switch (msg.type) {
      case 'join': {
        if (msg.room !== s.tokenRoom) return error(302, 'room mismatch');
        if (msg.resume) {
          const target = rooms.get(msg.room)?.sessions.get(s.identity);
          if (
            resumeMode !== 'accept' || !target || target.sid !== msg.resume.participantSid ||
            target.resumeToken !== msg.resume.token
          ) {
            return error(104, 'cannot resume; join again without `resume`');
          }
          // The connection now drives the old session (taking it over from a socket the
          // mock still believes open, as the server does).
          sessions.delete(s);
          const oldWs = target.ws;
          target.ws = s.ws;
          if (oldWs !== s.ws && oldWs.readyState === 1) oldWs.close(1000);
          target.detached = false;
          target.resumeToken = id('RT');
          conn.s = target;
          sessions.add(target);
          const missed = target.buffer.filter((m) => m.seq > (msg.resume.lastSeq ?? 0));
          sendRaw(target, {
            type: 'resumed', requestId,
            room: { sid: target.room.sid, name: target.room.name, createdAt: Date.now(), maxParticipants: 0, participants: others(target).map(participantInfo) },
            participant: participantInfo(target), resumeToken: target.resumeToken, replayed: missed.length,
          });
          for (const m of missed) sendRaw(target, m);
          return;
        }
        let room = rooms.get(msg.room);
        if (!room) rooms.set(msg.room, (room = { sid: id('RM'), name: msg.room, sessions: new Map() }));
        const old = room.sessions.get(s.identity);
        if (old) {
          send(old, { type: 'disconnected', reason: 'duplicate-identity' });
          removeSession(old);
          old.ws.close(1000);
        }
        s.room = room;
        const list = [...room.sessions.values()].map(participantInfo);
        room.sessions.set(s.identity, s);
        const resumeToken = resumeMode === 'off' ? undefined : id('RT');
        sendRaw(s, {
          type: 'joined', requestId,
          room: { sid: room.sid, name: room.name, createdAt: Date.now(), maxParticipants: 0, participants: list },
          participant: participantInfo(s),
          rtpCapabilities: ROUTER_CAPS,
          iceServers: [],
          resumeToken,
        });
        s.resumeToken = resumeToken;
        for (const o of others(s)) send(o, { type: 'participant-joined', participant: participantInfo(s) });
        return;
      }
      case 'create-transport': {
        if (msg.direction !== 'send' && msg.direction !== 'recv') return error(202, 'direction');
        if (msg.direction === 'send' && msg.rtpCapabilities !== undefined && !(msg.rtpCapabilities?.codecs?.length > 0)) return error(202, 'malformed rtpCapabilities');
        const t = transportOptions();
        s.transports.set(t.id, { direction: msg.direction, connected: false, mids: 0 });
        return reply({ type: 'transport-created', direction: msg.direction, transport: t });
      }
      case 'restart-ice': {
        const t = s.transports.get(msg.transportId);
        if (!t) return error(400, 'transport not found');
        t.restarts = (t.restarts ?? 0) + 1;
        // Fresh short-lived TURN credentials, as the real server hands out.
        const expiry = Math.floor(Date.now() / 1000) + 600;
        return reply({
          type: 'ice-restarted',
          transportId: msg.transportId,
          iceParameters: { usernameFragment: randomBytes(8).toString('hex'), password: randomBytes(16).toString('hex'), iceLite: true },
          iceServers: [{ urls: ['turn:127.0.0.1:3478?transport=udp'], username: `${expiry}:${s.identity}#${t.restarts}`, credential: randomBytes(12).toString('base64') }],
        });
      }
      case 'connect-transport': {
        const t = s.transports.get(msg.transportId);
        if (!t) return error(400, 'transport not found');
        if (!msg.dtlsParameters?.fingerprints?.length) return error(202, 'dtlsParameters');
        if (t.connected) return error(410, 'already connected');
        t.connected = true;
        return reply({ type: 'transport-connected', transportId: msg.transportId });
      }
      case 'publish': {
        const t = s.transports.get(msg.transportId);
        if (!t) return error(400, 'transport not found');
        if (t.direction !== 'send') return error(402, 'wrong direction');
        if (!msg.rtpParameters?.codecs?.length || !msg.rtpParameters?.encodings?.length) return error(408, 'rtpParameters');
        const producerId = id('PR');
        const info = {
          sid: id('TR'), producerId, participantIdentity: s.identity, participantSid: s.sid, kind: msg.kind,
          source: msg.source ?? (msg.kind === 'audio' ? 'microphone' : 'camera'), muted: Boolean(msg.muted),
          mimeType: msg.rtpParameters.codecs[0].mimeType, simulcast: false,
        };
        s.producers.set(producerId, { id: producerId, info });
        reply({ type: 'published', producerId, track: info });
        for (const o of others(s)) send(o, { type: 'track-published', track: info });
        return;
      }
      case 'unpublish': {
        const p = s.producers.get(msg.producerId);
        if (!p) return error(403, 'producer not found');
        return unpublish(s, p, requestId);
      }
      case 'subscribe': {
        const t = s.transports.get(msg.transportId);
        if (!t) return error(400, 'transport not found');
        if (t.direction !== 'recv') return error(402, 'wrong direction');
        if (!msg.rtpCapabilities?.codecs?.length) return error(202, 'rtpCapabilities');
        const owner = others(s).find((o) => o.producers.has(msg.producerId));
        if (!owner) return error(403, 'producer not found');
        const p = owner.producers.get(msg.producerId);
        const consumerId = id('CN');
        s.consumers.set(consumerId, { producerId: p.id, paused: true });
        return reply({
          type: 'track-subscribed', trackSid: p.info.sid, consumerId, producerId: p.id, kind: p.info.kind,
          participantIdentity: owner.identity, paused: true, rtpParameters: consumerRtpParameters(p.info.kind, String(t.mids++)),
        });
      }
      case 'unsubscribe': {
        const c = s.consumers.get(msg.consumerId);
        if (!c) return error(404, 'consumer not found');
        s.consumers.delete(msg.consumerId);
        return reply({ type: 'track-unsubscribed', consumerId: msg.consumerId, producerId: c.producerId });
      }
      case 'resume-consumer':
      case 'pause-consumer': {
        const c = s.consumers.get(msg.consumerId);
        if (!c) return error(404, 'consumer not found');
        c.paused = msg.type === 'pause-consumer';
        return reply({ type: c.paused ? 'consumer-paused' : 'consumer-resumed', consumerId: msg.consumerId });
      }
      case 'mute':
      case 'unmute': {
        const p = s.producers.get(msg.producerId);
        if (!p) return error(403, 'producer not found');
        p.info.muted = msg.type === 'mute';
        const event = { type: p.info.muted ? 'track-muted' : 'track-unmuted', producerId: p.id, trackSid: p.info.sid, participantIdentity: s.identity };
        for (const o of others(s)) send(o, event);
        return reply(event);
      }
      case 'publish-data': {
        const dest = msg.destinationIdentities;
        const targets = others(s).filter((o) => !dest || dest.includes(o.identity));
        if (dest && targets.length !== dest.length) return error(103, 'participant not found');
        for (const o of targets) send(o, { type: 'data', participantIdentity: s.identity, kind: msg.kind, data: msg.data, topic: msg.topic });
        if (requestId !== undefined) reply({ type: 'data-sent' });
        return;
      }
      case 'ping':
        return reply({ type: 'pong', timestamp: Date.now() });
      case 'leave':
        s.left = true;
        reply({ type: 'left' });
        removeSession(s);
        s.ws.close(1000);
        return;
      case 'mock-silent':
        return; // never answered: lets a test see the request timeout
      default:
        return error(201, `unknown message type ${msg.type}`);
    }
  }

  const tokens = []; // {identity, token} of every connection, in order
  wss.on('connection', (ws, req) => {
    const token = new URL(req.url, 'http://x').searchParams.get('token') ?? '';
    let claims;
    try {
      claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    } catch {
      ws.close(1008, 'bad token');
      return;
    }
    const s = {
      ws, identity: claims.sub, name: claims.name ?? '', tokenRoom: claims.video?.room, sid: id('PA'), joinedAt: Date.now(),
      room: null, transports: new Map(), producers: new Map(), consumers: new Map(), removed: false,
      resumeToken: undefined, seq: 0, buffer: [], detached: false,
    };
    const conn = { s };
    sessions.add(s);
    tokens.push({ identity: s.identity, token });
    ws.on('message', (data) => {
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        send(s, { type: 'error', code: 200, message: 'malformed' });
        return;
      }
      messages.push({ identity: s.identity, msg, at: Date.now() });
      handle(conn.s, msg, conn);
    });
    ws.on('close', () => {
      const cur = conn.s;
      if (cur.ws !== ws) return; // resumed on another connection since
      if (resumeMode === 'accept' && cur.resumeToken && cur.room && !cur.removed && !cur.left) {
        cur.detached = true; // waits for a resume; nobody is told
        return;
      }
      sessions.delete(cur);
      removeSession(cur);
    });
  });

  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const port = http.address().port;

  const live = (identity) => [...sessions].filter((s) => s.identity === identity && s.room && !s.removed);
  return {
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/`,
    messages,
    /** Client messages of one identity (optionally of one type). */
    sent(identity, type) {
      return messages.filter((m) => m.identity === identity && (!type || m.msg.type === type)).map((m) => m.msg);
    },
    /** The tokens the identity connected with, in order. */
    tokensOf(identity) {
      return tokens.filter((t) => t.identity === identity).map((t) => t.token);
    },
    /** Sends `msg` to the identity's live sessions. */
    push(identity, msg) {
      for (const s of live(identity)) send(s, msg);
    },
    /** Kills the identity's socket without a word (a network failure); `missed` are then
     * sent to it while it is away (numbered and buffered for a resume). */
    drop(identity, missed = []) {
      for (const s of live(identity)) {
        s.ws.terminate();
        for (const m of missed) send(s, m);
      }
    },
    /** While true, the identity cannot connect (its upgrades fail), as with no network. */
    setOffline(identity, down) {
      if (down) offline.add(identity);
      else offline.delete(identity);
    },
    /** 'off' | 'accept' | 'refuse': see `resumeMode` above. */
    setResumeMode(mode) {
      resumeMode = mode;
    },
    /** Sends `disconnected {reason}` and closes, as the server does. */
    disconnect(identity, reason) {
      for (const s of live(identity)) {
        send(s, { type: 'disconnected', reason });
        removeSession(s);
        s.ws.close(1000);
      }
    },
    close() {
      for (const s of sessions) s.ws.terminate();
      wss.close();
      http.close();
    },
  };
}
