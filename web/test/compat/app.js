// A minimal raw mediasoup-client app for the compatibility matrix
// (web/test/compat.mjs). It uses mediasoup-client's Device, Transport,
// Producer, Consumer, DataProducer and DataConsumer directly and speaks the
// signaling protocol of docs/protocol.md over one WebSocket, the way any
// mediasoup-client application would. It deliberately does NOT use
// web/src/pulsewave.js: the matrix must show what an unmodified
// mediasoup-client app gets from the server, not what our own client works
// around.
//
// The test drives it with page.evaluate through `window.compat`. Tracks,
// producers and consumers stay in the page; the test refers to them by id
// (track ids of this module, server producer ids).
//
// Nothing here is tailored to the server: every reply is passed to
// mediasoup-client as the protocol document says, and every error is
// surfaced to the test unchanged.

import { Device, version as mediasoupClientVersion } from 'mediasoup-client';

const SCTP_CAPABILITIES = { numStreams: { OS: 1024, MIS: 1024 } };
const REQUEST_TIMEOUT_MS = 10_000;

const s = {
  ws: null,
  device: null,
  identity: null,
  room: null,
  joined: null,
  nextRequestId: 1,
  pending: new Map(), // requestId -> {resolve, reject, timer, type}
  messages: [], // every message sent and received, for evidence: {dir, at, msg}
  events: [], // server messages without requestId
  errors: [], // asynchronous failures (auto-subscribe, consume, ...)
  sendTransports: new Map(), // name -> Transport
  recvTransport: null, // Promise<Transport>
  tracks: new Map(), // trackId -> MediaStreamTrack
  nextTrackId: 1,
  producers: new Map(), // producerId -> {producer, source, publish, reply, transportName}
  remoteTracks: new Map(), // producerId -> TrackInfo
  consumers: new Map(), // producerId -> {consumer, consumerId, kind, el, reply, closed}
  dataProducers: new Map(), // dataProducerId -> {dataProducer, publish, reply}
  dataConsumers: new Map(), // dataProducerId -> {dataConsumer, reply, messages, open}
  options: { autoSubscribe: true, dropRecvHeaderExtensions: [] },
};

const now = () => Date.now();

function record(dir, msg) {
  s.messages.push({ dir, at: now(), msg });
  if (s.messages.length > 2000) s.messages.splice(0, s.messages.length - 2000);
}

function fail(where, err) {
  s.errors.push({ at: now(), where, message: String(err?.message ?? err) });
  console.error(`[compat] ${where}: ${err?.message ?? err}`);
}

// ---------------------------------------------------------------- signaling

function send(msg) {
  record('out', msg);
  s.ws.send(JSON.stringify(msg));
}

/** Sends a request with a requestId; resolves with the reply, rejects on `error`. */
function request(msg) {
  if (!s.ws || s.ws.readyState !== WebSocket.OPEN) {
    return Promise.reject(new Error(`not connected (request ${msg.type})`));
  }
  const requestId = s.nextRequestId++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      s.pending.delete(requestId);
      reject(new Error(`request ${msg.type} #${requestId}: no reply in ${REQUEST_TIMEOUT_MS} ms`));
    }, REQUEST_TIMEOUT_MS);
    s.pending.set(requestId, { resolve, reject, timer, type: msg.type });
    send({ ...msg, requestId });
  });
}

function onMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    fail('server message is not JSON', err);
    return;
  }
  record('in', msg);
  if (msg.requestId !== undefined && s.pending.has(msg.requestId)) {
    const p = s.pending.get(msg.requestId);
    s.pending.delete(msg.requestId);
    clearTimeout(p.timer);
    if (msg.type === 'error') {
      const err = new Error(`server error ${msg.code} on ${p.type}: ${msg.message}`);
      err.code = msg.code;
      p.reject(err);
    } else {
      p.resolve(msg);
    }
    return;
  }
  s.events.push({ at: now(), ...msg });
  handleEvent(msg);
}

function handleEvent(msg) {
  switch (msg.type) {
    case 'track-published':
      s.remoteTracks.set(msg.track.producerId, msg.track);
      if (s.options.autoSubscribe) subscribe(msg.track.producerId).catch((err) => fail(`subscribe ${msg.track.producerId}`, err));
      break;
    case 'track-unpublished':
      s.remoteTracks.delete(msg.producerId);
      break;
    case 'track-unsubscribed':
      closeConsumer(msg.producerId);
      break;
    case 'data-track-published':
      if (s.options.autoSubscribe) {
        subscribeData(msg.dataChannel.dataProducerId).catch((err) => fail(`subscribe-data ${msg.dataChannel.dataProducerId}`, err));
      }
      break;
    case 'data-track-unpublished': {
      const dc = s.dataConsumers.get(msg.dataProducerId);
      if (dc && !dc.dataConsumer.closed) dc.dataConsumer.close();
      break;
    }
    default:
      break;
  }
}

// -------------------------------------------------------------- connecting

async function fetchToken(server, identity, room) {
  // --dev: POST /api/token is open (docs/auth.md); a production app gets the
  // token from its own backend instead.
  const res = await fetch(new URL('/api/token', server), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ identity, name: identity, room }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) throw new Error(`POST /api/token: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.token;
}

/**
 * Joins `room` on `server` (http base URL) as `identity`: token, WebSocket
 * `?token=`, `join`, `device.load()`.
 * Options: autoSubscribe (default true) subscribes to every track and data
 * channel published in the room, as a conference app does;
 * dropRecvHeaderExtensions lists header extension URIs removed from the
 * rtpCapabilities sent with `subscribe` (a control for the audio-level case).
 */
async function join({ server, room, identity, token = null, autoSubscribe = true, dropRecvHeaderExtensions = [] }) {
  s.options = { autoSubscribe, dropRecvHeaderExtensions };
  s.identity = identity;
  s.room = room;
  // A token from the test (as an app's backend would mint it), else from
  // the dev server's open token endpoint.
  token ??= await fetchToken(server, identity, room);
  const url = new URL('/', server);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('token', token);
  s.ws = await new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error('WebSocket failed to open'));
    ws.onmessage = (e) => onMessage(e.data);
    ws.onclose = (e) => {
      s.events.push({ at: now(), type: 'socket-closed', code: e.code, reason: e.reason });
      for (const p of s.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`socket closed (${e.code}) before the reply to ${p.type}`));
      }
      s.pending.clear();
    };
  });
  const joined = await request({ type: 'join', room });
  s.joined = joined;
  s.device = new Device();
  await s.device.load({ routerRtpCapabilities: joined.rtpCapabilities });
  for (const p of joined.room?.participants ?? []) {
    for (const t of p.tracks ?? []) {
      s.remoteTracks.set(t.producerId, t);
      if (autoSubscribe) subscribe(t.producerId).catch((err) => fail(`subscribe ${t.producerId}`, err));
    }
    for (const d of p.dataChannels ?? []) {
      if (autoSubscribe) subscribeData(d.dataProducerId).catch((err) => fail(`subscribe-data ${d.dataProducerId}`, err));
    }
  }
  return {
    identity,
    participantSid: joined.participant?.sid,
    handlerName: s.device.handlerName,
    mediasoupClientVersion,
    routerCodecs: joined.rtpCapabilities.codecs.map((c) => ({
      mimeType: c.mimeType,
      preferredPayloadType: c.preferredPayloadType,
      parameters: c.parameters,
    })),
    routerHeaderExtensions: joined.rtpCapabilities.headerExtensions,
  };
}

function transportOptions(t) {
  return {
    id: t.id,
    iceParameters: t.iceParameters,
    iceCandidates: t.iceCandidates,
    dtlsParameters: t.dtlsParameters,
    sctpParameters: t.sctpParameters,
    iceServers: t.iceServers ?? s.joined?.iceServers ?? [],
  };
}

function onConnect(transport) {
  transport.on('connect', ({ dtlsParameters }, callback, errback) => {
    request({ type: 'connect-transport', transportId: transport.id, dtlsParameters }).then(() => callback(), errback);
  });
}

/**
 * Creates a send transport named `name`. `withRtpCapabilities` sends
 * `device.sendRtpCapabilities` in create-transport (protocol.md's optional
 * field); a plain mediasoup-client app sends nothing of the kind.
 */
async function createSendTransport({ name = 'main', withRtpCapabilities = false } = {}) {
  if (s.sendTransports.has(name)) throw new Error(`send transport ${name} exists`);
  const msg = { type: 'create-transport', direction: 'send', sctpCapabilities: SCTP_CAPABILITIES };
  if (withRtpCapabilities) msg.rtpCapabilities = s.device.sendRtpCapabilities;
  const reply = await request(msg);
  const transport = s.device.createSendTransport(transportOptions(reply.transport));
  onConnect(transport);
  transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
    const publish = { type: 'publish', transportId: transport.id, kind, source: appData.source, rtpParameters };
    if (appData.name) publish.name = appData.name;
    request(publish).then(
      (r) => {
        s.producers.set(r.producerId, { producer: null, source: appData.source, publish, reply: r, transportName: name });
        callback({ id: r.producerId });
      },
      (err) => {
        err.publish = publish;
        errback(err);
      },
    );
  });
  transport.on('producedata', ({ sctpStreamParameters, label, protocol }, callback, errback) => {
    const publish = { type: 'publish-data-channel', transportId: transport.id, sctpStreamParameters, label, protocol };
    request(publish).then(
      (r) => {
        s.dataProducers.set(r.dataProducerId, { dataProducer: null, publish, reply: r });
        callback({ id: r.dataProducerId });
      },
      errback,
    );
  });
  s.sendTransports.set(name, transport);
  return { id: transport.id, name };
}

function getRecvTransport() {
  if (!s.recvTransport) {
    s.recvTransport = (async () => {
      const reply = await request({ type: 'create-transport', direction: 'recv', sctpCapabilities: SCTP_CAPABILITIES });
      const transport = s.device.createRecvTransport(transportOptions(reply.transport));
      onConnect(transport);
      return transport;
    })();
    s.recvTransport.catch(() => {
      s.recvTransport = null;
    });
  }
  return s.recvTransport;
}

// ------------------------------------------------------------------ tracks

function mediaElementsBox() {
  let box = document.getElementById('media');
  if (!box) {
    box = document.createElement('div');
    box.id = 'media';
    document.body.append(box);
  }
  return box;
}

/**
 * Gets a track and returns its id. spec: {type: 'camera', width, height,
 * frameRate} (getUserMedia fake camera), {type: 'mic'} (fake microphone, it
 * beeps), {type: 'screen', width, height, frameRate} (getDisplayMedia; the
 * browser auto-selects the screen).
 */
async function getTrack(spec) {
  let track;
  if (spec.type === 'camera') {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { exact: spec.width ?? 320 }, height: { exact: spec.height ?? 180 }, frameRate: spec.frameRate ?? 15 },
    });
    track = stream.getVideoTracks()[0];
  } else if (spec.type === 'mic') {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    track = stream.getAudioTracks()[0];
  } else if (spec.type === 'screen') {
    const stream = await navigator.mediaDevices.getDisplayMedia({
      video: { width: spec.width ?? 640, height: spec.height ?? 360, frameRate: spec.frameRate ?? 10 },
      audio: false,
    });
    track = stream.getVideoTracks()[0];
  } else {
    throw new Error(`unknown track type ${spec.type}`);
  }
  const id = `T${s.nextTrackId++}`;
  s.tracks.set(id, track);
  return { trackId: id, kind: track.kind, label: track.label, settings: track.getSettings() };
}

function trackInfo(trackId) {
  const t = s.tracks.get(trackId);
  if (!t) throw new Error(`no track ${trackId}`);
  return { readyState: t.readyState, enabled: t.enabled, muted: t.muted, kind: t.kind };
}

// ---------------------------------------------------------------- producing

/** Finds a codec of device.rtpCapabilities by mimeType (and parameters, if given). */
function findCodec(want) {
  const matches = s.device.rtpCapabilities.codecs.filter(
    (c) =>
      c.mimeType.toLowerCase() === want.mimeType.toLowerCase() &&
      Object.entries(want.parameters ?? {}).every(([k, v]) => String(c.parameters?.[k]) === String(v)),
  );
  if (!matches.length) {
    throw new Error(
      `no codec ${JSON.stringify(want)} in device.rtpCapabilities.codecs (${s.device.rtpCapabilities.codecs
        .map((c) => `${c.mimeType} ${JSON.stringify(c.parameters ?? {})}`)
        .join('; ')})`,
    );
  }
  return matches[0];
}

/**
 * transport.produce(). opts: transport (name, default 'main'), trackId or
 * track (a spec for getTrack), source ('camera', 'microphone', 'screen'),
 * encodings, codec ({mimeType, parameters?}, looked up in
 * device.rtpCapabilities.codecs), codecOptions, stopTracks,
 * disableTrackOnPause, zeroRtpOnPause.
 */
async function produce(opts) {
  const transport = s.sendTransports.get(opts.transport ?? 'main');
  if (!transport) throw new Error(`no send transport ${opts.transport ?? 'main'}`);
  let trackId = opts.trackId;
  if (!trackId) trackId = (await getTrack(opts.track)).trackId;
  const track = s.tracks.get(trackId);
  const options = { track, appData: { source: opts.source } };
  if (opts.encodings) options.encodings = opts.encodings.map((e) => ({ ...e }));
  if (opts.codec) options.codec = findCodec(opts.codec);
  if (opts.codecOptions) options.codecOptions = opts.codecOptions;
  for (const k of ['stopTracks', 'disableTrackOnPause', 'zeroRtpOnPause']) {
    if (opts[k] !== undefined) options[k] = opts[k];
  }
  let producer;
  try {
    producer = await transport.produce(options);
  } catch (err) {
    const e = new Error(`produce failed: ${err.message}`);
    // The test prints what the browser sent.
    e.publish = err.publish ?? [...s.messages].reverse().find((m) => m.dir === 'out' && m.msg.type === 'publish')?.msg;
    throw e;
  }
  const entry = s.producers.get(producer.id);
  entry.producer = producer;
  entry.trackId = trackId;
  return {
    producerId: producer.id,
    localId: producer.localId,
    kind: producer.kind,
    trackId,
    mid: entry.publish.rtpParameters.mid,
    publish: entry.publish,
    track: entry.reply.track,
  };
}

function producerOf(producerId) {
  const p = s.producers.get(producerId);
  if (!p?.producer) throw new Error(`no producer ${producerId}`);
  return p.producer;
}

/** producer.close() and `unpublish`; resolves with the reply (track-unpublished). */
async function unpublish(producerId) {
  producerOf(producerId).close();
  const reply = await request({ type: 'unpublish', producerId });
  s.producers.delete(producerId);
  return reply;
}

/** producer.pause() and, unless mute is false, the protocol's `mute`. */
async function pauseProducer(producerId, { mute = true } = {}) {
  const producer = producerOf(producerId);
  producer.pause();
  const reply = mute ? await request({ type: 'mute', producerId }) : null;
  return { paused: producer.paused, trackEnabled: producer.track?.enabled ?? null, reply };
}

async function resumeProducer(producerId, { unmute = true } = {}) {
  const producer = producerOf(producerId);
  producer.resume();
  const reply = unmute ? await request({ type: 'unmute', producerId }) : null;
  return { paused: producer.paused, trackEnabled: producer.track?.enabled ?? null, reply };
}

/** producer.replaceTrack() with a new track (spec for getTrack) or an existing trackId. */
async function replaceTrack(producerId, { track, trackId }) {
  const id = trackId ?? (await getTrack(track)).trackId;
  await producerOf(producerId).replaceTrack({ track: s.tracks.get(id) });
  s.producers.get(producerId).trackId = id;
  return { trackId: id };
}

/** producer.replaceTrack({track: null}): the sender keeps its ssrc but sends nothing. */
async function replaceTrackNull(producerId) {
  await producerOf(producerId).replaceTrack({ track: null });
  return true;
}

async function setMaxSpatialLayer(producerId, layer) {
  const producer = producerOf(producerId);
  await producer.setMaxSpatialLayer(layer);
  return producer.maxSpatialLayer;
}

async function setRtpEncodingParameters(producerId, params) {
  const producer = producerOf(producerId);
  await producer.setRtpEncodingParameters(params);
  return producer.rtpSender.getParameters().encodings.map((e) => ({
    rid: e.rid,
    active: e.active,
    scaleResolutionDownBy: e.scaleResolutionDownBy,
    maxBitrate: e.maxBitrate,
  }));
}

function producerInfo(producerId) {
  const p = s.producers.get(producerId);
  if (!p?.producer) return null;
  const pr = p.producer;
  return {
    closed: pr.closed,
    paused: pr.paused,
    maxSpatialLayer: pr.maxSpatialLayer,
    trackReadyState: pr.track?.readyState ?? null,
    trackEnabled: pr.track?.enabled ?? null,
    senderEncodings: pr.rtpSender?.getParameters().encodings.map((e) => ({
      rid: e.rid,
      active: e.active,
      scaleResolutionDownBy: e.scaleResolutionDownBy,
      scalabilityMode: e.scalabilityMode,
    })),
  };
}

/** The send transport's estimate for a producer (candidate-pair availableOutgoingBitrate), bits/s. */
async function senderBandwidth(producerId) {
  const report = await producerOf(producerId).getStats();
  let pair = null;
  report.forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
  });
  return pair ? { availableOutgoingBitrate: pair.availableOutgoingBitrate ?? null, currentRoundTripTime: pair.currentRoundTripTime ?? null } : null;
}

/** producer.getStats(): one entry per outbound-rtp (per simulcast layer). */
async function producerStats(producerId) {
  const report = await producerOf(producerId).getStats();
  const codecs = new Map();
  const out = [];
  report.forEach((r) => {
    if (r.type === 'codec') codecs.set(r.id, r);
  });
  report.forEach((r) => {
    if (r.type !== 'outbound-rtp') return;
    out.push({
      ssrc: r.ssrc,
      rid: r.rid ?? null,
      kind: r.kind,
      active: r.active,
      packetsSent: r.packetsSent ?? 0,
      bytesSent: r.bytesSent ?? 0,
      framesEncoded: r.framesEncoded,
      frameWidth: r.frameWidth,
      frameHeight: r.frameHeight,
      scalabilityMode: r.scalabilityMode,
      encoderImplementation: r.encoderImplementation,
      qualityLimitationReason: r.qualityLimitationReason,
      codec: codecs.get(r.codecId)?.mimeType ?? null,
      sdpFmtpLine: codecs.get(r.codecId)?.sdpFmtpLine ?? null,
    });
  });
  out.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
  return out;
}

// --------------------------------------------------------------- consuming

function recvRtpCapabilities() {
  const caps = s.device.recvRtpCapabilities;
  const drop = s.options.dropRecvHeaderExtensions;
  if (!drop.length) return caps;
  return { ...caps, headerExtensions: caps.headerExtensions.filter((h) => !drop.includes(h.uri)) };
}

/** subscribe -> track-subscribed -> recvTransport.consume() -> resume-consumer. */
async function subscribe(producerId) {
  if (s.consumers.has(producerId)) return s.consumers.get(producerId).consumerId;
  s.consumers.set(producerId, { pending: true, consumerId: null });
  try {
    const transport = await getRecvTransport();
    const reply = await request({
      type: 'subscribe',
      producerId,
      rtpCapabilities: recvRtpCapabilities(),
      transportId: transport.id,
    });
    const consumer = await transport.consume({
      id: reply.consumerId,
      producerId: reply.producerId,
      kind: reply.kind,
      rtpParameters: reply.rtpParameters,
    });
    const el = document.createElement(consumer.kind === 'video' ? 'video' : 'audio');
    el.autoplay = true;
    el.playsInline = true;
    if (consumer.kind === 'video') {
      el.muted = true;
      el.width = 160;
      el.height = 90;
    }
    el.srcObject = new MediaStream([consumer.track]);
    el.dataset.producerId = producerId;
    mediaElementsBox().append(el);
    el.play().catch(() => {});
    const entry = { consumer, consumerId: reply.consumerId, kind: consumer.kind, el, reply, closed: false, resumed: false };
    s.consumers.set(producerId, entry);
    if (reply.paused !== false) {
      await request({ type: 'resume-consumer', consumerId: reply.consumerId });
    }
    entry.resumed = true;
    return reply.consumerId;
  } catch (err) {
    s.consumers.delete(producerId);
    throw err;
  }
}

function closeConsumer(producerId) {
  const c = s.consumers.get(producerId);
  if (!c || c.pending) return;
  c.closed = true;
  if (!c.consumer.closed) c.consumer.close();
  c.el?.remove();
}

function consumerOf(producerId) {
  const c = s.consumers.get(producerId);
  if (!c?.consumer) throw new Error(`no consumer of ${producerId}`);
  return c;
}

function consumers() {
  return [...s.consumers.entries()]
    .filter(([, c]) => c.consumer)
    .map(([producerId, c]) => ({
      producerId,
      consumerId: c.consumerId,
      kind: c.kind,
      closed: c.closed || c.consumer.closed,
      paused: c.consumer.paused,
      resumed: c.resumed,
      rtpParameters: c.consumer.rtpParameters,
    }));
}

/** consumer.pause() and pause-consumer. */
async function pauseConsumer(producerId) {
  const c = consumerOf(producerId);
  c.consumer.pause();
  return request({ type: 'pause-consumer', consumerId: c.consumerId });
}

/** resume-consumer and consumer.resume(). */
async function resumeConsumer(producerId) {
  const c = consumerOf(producerId);
  const reply = await request({ type: 'resume-consumer', consumerId: c.consumerId });
  c.consumer.resume();
  return reply;
}

/** consumer.getStats() (inbound-rtp) plus the receiver's synchronization sources. */
async function consumerStats(producerId) {
  const c = s.consumers.get(producerId);
  if (!c?.consumer) return null;
  const report = await c.consumer.getStats();
  const codecs = new Map();
  let inbound = null;
  report.forEach((r) => {
    if (r.type === 'codec') codecs.set(r.id, r);
    if (r.type === 'inbound-rtp') inbound = r;
  });
  const sources = c.consumer.rtpReceiver?.getSynchronizationSources?.() ?? [];
  return {
    consumerId: c.consumerId,
    kind: c.kind,
    closed: c.closed || c.consumer.closed,
    paused: c.consumer.paused,
    reportTypes: [...new Set([...report.values()].map((r) => r.type))],
    inbound: inbound && {
      ssrc: inbound.ssrc,
      packetsReceived: inbound.packetsReceived ?? 0,
      bytesReceived: inbound.bytesReceived ?? 0,
      packetsLost: inbound.packetsLost ?? 0,
      framesDecoded: inbound.framesDecoded ?? 0,
      keyFramesDecoded: inbound.keyFramesDecoded ?? 0,
      frameWidth: inbound.frameWidth ?? 0,
      frameHeight: inbound.frameHeight ?? 0,
      totalAudioEnergy: inbound.totalAudioEnergy ?? 0,
      audioLevel: inbound.audioLevel ?? null,
      totalSamplesReceived: inbound.totalSamplesReceived ?? 0,
      decoderImplementation: inbound.decoderImplementation,
      codec: codecs.get(inbound.codecId)?.mimeType ?? null,
      sdpFmtpLine: codecs.get(inbound.codecId)?.sdpFmtpLine ?? null,
    },
    synchronizationSources: sources.map((x) => ({ source: x.source, audioLevel: x.audioLevel ?? null, timestamp: x.timestamp })),
  };
}

// -------------------------------------------------------------------- data

/** transport.produceData(); resolves when the channel is open. */
async function produceData(opts = {}) {
  const transport = s.sendTransports.get(opts.transport ?? 'main');
  if (!transport) throw new Error(`no send transport ${opts.transport ?? 'main'}`);
  const options = { label: opts.label ?? 'chat' };
  for (const k of ['ordered', 'maxPacketLifeTime', 'maxRetransmits', 'protocol']) {
    if (opts[k] !== undefined) options[k] = opts[k];
  }
  const dataProducer = await transport.produceData(options);
  const entry = s.dataProducers.get(dataProducer.id);
  entry.dataProducer = dataProducer;
  if (dataProducer.readyState !== 'open') {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`data producer not open after 10 s (${dataProducer.readyState})`)), 10_000);
      dataProducer.on('open', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return {
    dataProducerId: dataProducer.id,
    sctpStreamParameters: dataProducer.sctpStreamParameters,
    publish: entry.publish,
    reply: entry.reply,
  };
}

/** Sends messages: a string, or {binary: [byte, ...]} sent as an ArrayBuffer. */
function sendData(dataProducerId, messages) {
  const dp = s.dataProducers.get(dataProducerId)?.dataProducer;
  if (!dp) throw new Error(`no data producer ${dataProducerId}`);
  for (const m of messages) {
    if (typeof m === 'string') dp.send(m);
    else dp.send(new Uint8Array(m.binary).buffer);
  }
  return { bufferedAmount: dp.bufferedAmount, readyState: dp.readyState };
}

/** subscribe-data -> data-subscribed -> recvTransport.consumeData(). */
async function subscribeData(dataProducerId) {
  if (s.dataConsumers.has(dataProducerId)) return;
  s.dataConsumers.set(dataProducerId, { pending: true });
  try {
    const transport = await getRecvTransport();
    const reply = await request({ type: 'subscribe-data', dataProducerId });
    const dataConsumer = await transport.consumeData({
      id: reply.dataConsumerId,
      dataProducerId: reply.dataProducerId,
      sctpStreamParameters: reply.sctpStreamParameters,
      label: reply.label,
      protocol: reply.protocol,
    });
    const entry = { dataConsumer, reply, messages: [], open: dataConsumer.readyState === 'open' };
    dataConsumer.on('open', () => {
      entry.open = true;
    });
    dataConsumer.on('message', (data) => {
      if (typeof data === 'string') entry.messages.push(data);
      else if (data instanceof ArrayBuffer) entry.messages.push({ binary: [...new Uint8Array(data)] });
      else if (data instanceof Blob) {
        const slot = entry.messages.length;
        entry.messages.push(null);
        data.arrayBuffer().then((b) => {
          entry.messages[slot] = { binary: [...new Uint8Array(b)], blob: true };
        });
      } else entry.messages.push({ unknown: String(data) });
    });
    s.dataConsumers.set(dataProducerId, entry);
  } catch (err) {
    s.dataConsumers.delete(dataProducerId);
    throw err;
  }
}

function dataConsumers() {
  return [...s.dataConsumers.entries()]
    .filter(([, d]) => d.dataConsumer)
    .map(([dataProducerId, d]) => ({
      dataProducerId,
      dataConsumerId: d.reply.dataConsumerId,
      label: d.dataConsumer.label,
      readyState: d.dataConsumer.readyState,
      open: d.open || d.dataConsumer.readyState === 'open',
      binaryType: d.dataConsumer.binaryType,
      sctpStreamParameters: d.dataConsumer.sctpStreamParameters,
      messages: d.messages,
    }));
}

// ------------------------------------------------------------------ status

async function transportStates() {
  const out = {};
  for (const [name, t] of s.sendTransports) out[`send:${name}`] = t.connectionState;
  if (s.recvTransport) {
    try {
      out.recv = (await s.recvTransport).connectionState;
    } catch {
      out.recv = 'failed-to-create';
    }
  }
  return out;
}

function capabilities() {
  const send = RTCRtpSender.getCapabilities('video');
  const recv = RTCRtpReceiver.getCapabilities('video');
  const fmt = (c) => `${c.mimeType}${c.sdpFmtpLine ? ` ${c.sdpFmtpLine}` : ''}`;
  return {
    userAgent: navigator.userAgent,
    sendVideo: send.codecs.map(fmt),
    recvVideo: recv.codecs.map(fmt),
    sendAudio: RTCRtpSender.getCapabilities('audio').codecs.map(fmt),
    recvAudio: RTCRtpReceiver.getCapabilities('audio').codecs.map(fmt),
    sendVideoScalabilityModes: Object.fromEntries(send.codecs.filter((c) => c.scalabilityModes).map((c) => [fmt(c), c.scalabilityModes])),
    device: s.device && {
      handlerName: s.device.handlerName,
      rtpCapabilities: s.device.rtpCapabilities.codecs.map((c) => `${c.mimeType} ${JSON.stringify(c.parameters ?? {})}`),
      sendRtpCapabilities: s.device.sendRtpCapabilities.codecs.map((c) => `${c.mimeType} ${JSON.stringify(c.parameters ?? {})}`),
      canProduceVideo: s.device.canProduce('video'),
      canProduceAudio: s.device.canProduce('audio'),
    },
  };
}

function events(types) {
  return types ? s.events.filter((e) => types.includes(e.type)) : s.events;
}

window.compat = {
  join,
  createSendTransport,
  getTrack,
  trackInfo,
  produce,
  unpublish,
  pauseProducer,
  resumeProducer,
  replaceTrack,
  replaceTrackNull,
  setMaxSpatialLayer,
  setRtpEncodingParameters,
  producerInfo,
  producerStats,
  senderBandwidth,
  subscribe,
  consumers,
  pauseConsumer,
  resumeConsumer,
  consumerStats,
  produceData,
  sendData,
  subscribeData,
  dataConsumers,
  transportStates,
  capabilities,
  events,
  errors: () => s.errors,
  messages: () => s.messages,
  request,
};
window.compatReady = true;
