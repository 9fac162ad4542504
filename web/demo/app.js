// PulseWave demo: join a room, publish camera and microphone, see and hear
// everyone, chat. Served by `pulsewave-server --dev` at /demo/.
//
// Query parameters: ?room=<room>&name=<name>&autojoin=1 fill (and submit) the
// form; ?server=http://host:port talks to another PulseWave server than the
// page's origin (its /api/token must be open, as in --dev); ?token=<jwt>
// joins with a token minted elsewhere (by your backend, `pulsewave-server
// token`, or POST /api/token with the API key) instead of asking /api/token,
// which is how the demo works against a production server.
//
// Test hooks: window.pulsewave (the PulseWaveClient), window.pwStats(),
// window.pwState(), window.pwEvents; tiles carry data-identity, data-source,
// data-local, data-has-video, data-mic, data-cam and data-muted.

import { PulseWaveClient } from './pulsewave.esm.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const serverBase = new URL(params.get('server') || location.href);
const wsUrl = `${serverBase.protocol === 'https:' ? 'wss:' : 'ws:'}//${serverBase.host}/`;
const tokenUrl = new URL('/api/token', serverBase.origin).toString();
const givenToken = params.get('token');

const ui = {
  form: $('join-form'),
  room: $('room'),
  name: $('name'),
  join: $('join'),
  call: $('call'),
  grid: $('grid'),
  audio: $('audio'),
  status: $('status'),
  roomLabel: $('room-label'),
  messages: $('messages'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  mic: $('toggle-mic'),
  cam: $('toggle-cam'),
  screen: $('toggle-screen'),
  leave: $('leave'),
  bandwidth: $('bandwidth'),
};

let client = null;
let localName = '';
const local = { mic: null, cam: null, screen: null, screenAudio: null, stream: null };
const chatLog = [];
const events = [];
const publishErrors = [];

window.pulsewave = null;
window.pwEvents = events;

// ------------------------------------------------------------------ helpers

function setStatus(text, state = 'info') {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

function logEvent(type, detail = {}) {
  events.push({ t: Date.now(), type, ...detail });
  if (events.length > 1000) events.splice(0, events.length - 1000);
}

function slug(text) {
  const s = text.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return s.slice(0, 32) || 'guest';
}

function randomSuffix() {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function initials(name) {
  return (name || '?')
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join('');
}

function cssEscape(value) {
  return window.CSS?.escape ? CSS.escape(value) : String(value).replace(/["\\]/g, '\\$&');
}

// -------------------------------------------------------------------- tiles

function tileFor(identity, slot) {
  return ui.grid.querySelector(`.tile[data-identity="${cssEscape(identity)}"][data-source="${slot}"]`);
}

function ensureTile(identity, name, slot, isLocal) {
  let tile = tileFor(identity, slot);
  if (tile) return tile;
  tile = document.createElement('div');
  tile.className = 'tile';
  tile.dataset.identity = identity;
  tile.dataset.source = slot;
  tile.dataset.local = String(isLocal);
  tile.dataset.hasVideo = 'false';
  tile.dataset.mic = 'none';
  tile.dataset.cam = 'none';
  tile.dataset.muted = 'false';

  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound goes through the <audio> elements
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  placeholder.textContent = initials(name);
  const label = document.createElement('div');
  label.className = 'label';
  const nameEl = document.createElement('span');
  nameEl.className = 'name';
  nameEl.textContent = `${name || identity}${slot === 'screen' ? ' (screen)' : ''}${isLocal ? ' (you)' : ''}`;
  const micBadge = document.createElement('span');
  micBadge.className = 'badge mic-badge';
  micBadge.textContent = 'mic muted';
  const camBadge = document.createElement('span');
  camBadge.className = 'badge cam-badge';
  camBadge.textContent = 'camera off';
  const layerBadge = document.createElement('span');
  layerBadge.className = 'badge layer-badge';
  layerBadge.title = 'layer received: spatial/temporal (paused: not enough bandwidth)';
  label.append(nameEl, micBadge, camBadge, layerBadge);
  tile.append(video, placeholder, label);
  if (isLocal) ui.grid.prepend(tile);
  else ui.grid.append(tile);
  updateGridCount();
  return tile;
}

function removeTile(identity, slot) {
  const tile = tileFor(identity, slot);
  if (tile) {
    const video = tile.querySelector('video');
    video.srcObject = null;
    tile.remove();
    updateGridCount();
  }
}

function updateGridCount() {
  ui.grid.dataset.count = String(ui.grid.children.length);
}

function setTileVideo(tile, track) {
  if (!tile) return;
  const video = tile.querySelector('video');
  if (track) {
    video.srcObject = new MediaStream([track]);
    video.play().catch(() => {});
  } else {
    video.srcObject = null;
  }
  tile.dataset.hasVideo = String(Boolean(track));
}

function audioFor(identity, source) {
  return ui.audio.querySelector(`audio[data-identity="${cssEscape(identity)}"][data-source="${source}"]`);
}

function attachAudio(identity, source, track) {
  let el = audioFor(identity, source);
  if (!el) {
    el = document.createElement('audio');
    el.autoplay = true;
    el.dataset.identity = identity;
    el.dataset.source = source;
    ui.audio.append(el);
  }
  el.srcObject = new MediaStream([track]);
  el.play().catch((err) => logEvent('audioPlayFailed', { identity, source, message: err.message }));
}

function detachAudio(identity, source) {
  const el = audioFor(identity, source);
  if (el) {
    el.srcObject = null;
    el.remove();
  }
}

function participantName(identity) {
  if (client?.identity === identity) return localName;
  return client?.participants.get(identity)?.name || identity;
}

/** Recomputes the badges of a participant's tiles from the client's state. */
function refreshBadges(identity) {
  let mic;
  let cam;
  if (identity === client?.identity) {
    mic = local.mic ? { muted: local.mic.muted } : null;
    cam = local.cam ? { muted: local.cam.muted } : null;
  } else {
    const tracks = client?.participants.get(identity)?.tracks ?? [];
    mic = tracks.find((t) => t.source === 'microphone') ?? null;
    cam = tracks.find((t) => t.source === 'camera') ?? null;
  }
  const tile = tileFor(identity, 'camera');
  if (!tile) return;
  tile.dataset.mic = mic ? (mic.muted ? 'muted' : 'live') : 'none';
  tile.dataset.cam = cam ? (cam.muted ? 'muted' : 'live') : 'none';
  tile.dataset.muted = String(Boolean(cam?.muted));
}

function renderRemoteParticipant(info) {
  ensureTile(info.identity, info.name, 'camera', false);
  refreshBadges(info.identity);
}

function removeParticipant(identity) {
  removeTile(identity, 'camera');
  removeTile(identity, 'screen');
  for (const el of ui.audio.querySelectorAll(`audio[data-identity="${cssEscape(identity)}"]`)) {
    el.srcObject = null;
    el.remove();
  }
}

// --------------------------------------------------------------------- chat

function addChatMessage(fromIdentity, message, self) {
  const entry = { from: fromIdentity, name: participantName(fromIdentity), message, self, t: Date.now() };
  chatLog.push(entry);
  const li = document.createElement('li');
  li.dataset.from = fromIdentity;
  li.dataset.self = String(self);
  const who = document.createElement('strong');
  who.textContent = self ? 'You' : entry.name;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message;
  li.append(who, text);
  ui.messages.append(li);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// ------------------------------------------------------------------- client

function wireClient(c) {
  // Active speakers (`active-speakers`): the tiles of who speaks get
  // data-speaking="true" (a highlighted border), the loudest data-speaking="loudest".
  // Connection quality (`connection-quality`): data-quality on the tile.
  c.on('connectionQuality', (e) => {
    const tile = tileFor(e.participantIdentity, 'camera');
    if (tile) tile.dataset.quality = e.quality;
  });
  c.on('activeSpeakers', (speakers) => {
    const levels = new Map(speakers.map((s, i) => [s.participantIdentity, i === 0 ? 'loudest' : 'true']));
    for (const tile of ui.grid.querySelectorAll('.tile[data-source="camera"]')) {
      tile.dataset.speaking = levels.get(tile.dataset.identity) ?? 'false';
    }
  });
  c.on('participantJoined', (info) => {
    logEvent('participantJoined', { identity: info.identity });
    renderRemoteParticipant(info);
  });
  c.on('participantLeft', (info) => {
    logEvent('participantLeft', { identity: info.identity });
    removeParticipant(info.identity);
  });
  c.on('trackPublished', (track) => {
    logEvent('trackPublished', { identity: track.participantIdentity, source: track.source, producerId: track.producerId });
    refreshBadges(track.participantIdentity);
  });
  c.on('trackUnpublished', (e) => {
    logEvent('trackUnpublished', { identity: e.participantIdentity, source: e.track?.source, producerId: e.producerId });
    if (e.track?.source === 'screen') removeTile(e.participantIdentity, 'screen');
    refreshBadges(e.participantIdentity);
  });
  // Adaptive media: each tile shows the layer it gets; the header the
  // server's estimate toward this client.
  const layerText = (sub, l) =>
    sub.streamState === 'paused' ? 'paused: low bandwidth' : l?.spatialLayer == null ? '' : `S${l.spatialLayer} T${l.temporalLayer}`;
  const showLayer = (sub) => {
    if (sub.kind !== 'video') return;
    const slot = sub.source === 'screen' ? 'screen' : 'camera';
    const tile = document.querySelector(`.tile[data-identity="${CSS.escape(sub.participantIdentity)}"][data-source="${slot}"]`);
    const badge = tile?.querySelector('.layer-badge');
    if (!badge) return;
    badge.textContent = layerText(sub, sub.layers);
    tile.dataset.layer = badge.textContent;
  };
  c.on('layersChanged', ({ subscription }) => showLayer(subscription));
  c.on('streamStateChanged', ({ subscription, state }) => {
    logEvent('streamStateChanged', { identity: subscription.participantIdentity, source: subscription.source, state });
    showLayer(subscription);
  });
  const estimateTimer = setInterval(async () => {
    if (c.state !== 'connected' || !ui.bandwidth) return;
    try {
      const transports = await c.getStats();
      const t = transports[0];
      ui.bandwidth.textContent = t?.availableOutgoingBitrate
        ? `down ${(t.availableOutgoingBitrate / 1e6).toFixed(2)} Mbit/s, using ${(t.allocatedBitrate / 1e6).toFixed(2)}`
        : '';
    } catch {
      // not connected any more
    }
  }, 2000);
  c.on('disconnected', () => clearInterval(estimateTimer));
  c.on('trackSubscribed', (sub) => {
    logEvent('trackSubscribed', { identity: sub.participantIdentity, source: sub.source, kind: sub.kind, producerId: sub.producerId });
    const name = participantName(sub.participantIdentity);
    if (sub.kind === 'video') {
      const slot = sub.source === 'screen' ? 'screen' : 'camera';
      const tile = ensureTile(sub.participantIdentity, name, slot, false);
      setTileVideo(tile, sub.track);
      // Adaptive stream: the server sends what the tile's size needs (the
      // tile, not its <video>: that one is hidden until video arrives).
      sub.detachView?.();
      // A tile scrolled out of the grid keeps its video (the grid scrolls
      // on small windows); a hidden one gets none.
      sub.detachView = c.attachVideo(sub, tile, { pauseOffscreen: false });
    } else {
      attachAudio(sub.participantIdentity, sub.source, sub.track);
    }
    refreshBadges(sub.participantIdentity);
  });
  c.on('trackUnsubscribed', (sub) => {
    sub.detachView?.();
    logEvent('trackUnsubscribed', { identity: sub.participantIdentity, source: sub.source, kind: sub.kind, producerId: sub.producerId });
    if (sub.kind === 'video') {
      if (sub.source === 'screen') removeTile(sub.participantIdentity, 'screen');
      else {
        const tile = tileFor(sub.participantIdentity, 'camera');
        if (tile) setTileVideo(tile, null);
      }
    } else {
      detachAudio(sub.participantIdentity, sub.source);
    }
  });
  const onMute = (type) => (e) => {
    logEvent(type, { identity: e.participantIdentity, source: e.source, kind: e.kind, producerId: e.producerId, local: e.local });
    refreshBadges(e.participantIdentity);
  };
  c.on('trackMuted', onMute('trackMuted'));
  c.on('trackUnmuted', onMute('trackUnmuted'));
  c.on('data', ({ participantIdentity, data, kind, topic }) => {
    logEvent('data', { identity: participantIdentity, kind, topic, data });
    if (data && data.type === 'chat' && typeof data.message === 'string') {
      addChatMessage(participantIdentity, data.message, false);
    }
  });
  c.on('localTrackEnded', (pub) => {
    logEvent('localTrackEnded', { source: pub.source });
    if (pub === local.screen || pub === local.screenAudio) stopScreenShare().catch(() => {});
    if (pub === local.cam) {
      local.cam = null;
      setTileVideo(tileFor(c.identity, 'camera'), null);
    }
    if (pub === local.mic) local.mic = null;
    updateControls();
  });
  c.on('reconnecting', (e) => {
    logEvent('reconnecting', e);
    setStatus(`Connection lost (${e.reason}); reconnecting, attempt ${e.attempt}…`, 'warning');
  });
  c.on('resumed', (e) => {
    // Same session: tracks, subscriptions and tiles are all still there.
    logEvent('resumed', { replayed: e.replayed });
    setStatus(`Connected to ${c.room.name} as ${c.identity} (resumed)`, 'ok');
  });
  c.on('resumeFailed', (e) => {
    // The server no longer holds the session (gone past its grace time):
    // a full rejoin follows, with a new session.
    logEvent('resumeFailed', { reason: e.reason });
    setStatus(`Could not resume (${e.reason}); rejoining…`, 'warning');
  });
  c.on('reconnected', () => {
    logEvent('reconnected');
    setStatus(`Connected to ${c.room.name} as ${c.identity} (reconnected)`, 'ok');
    for (const info of c.participants.values()) renderRemoteParticipant(info);
    refreshBadges(c.identity);
  });
  c.on('disconnected', (e) => {
    logEvent('disconnected', { reason: e.reason });
    if (e.reason !== 'client-leave') {
      resetCall();
      setStatus(`Disconnected: ${e.reason}${e.error ? ` (${e.error.message})` : ''}`, 'error');
    }
  });
  c.on('error', (err) => {
    logEvent('error', { operation: err.operation, code: err.code, message: err.message });
    console.warn('[demo] PulseWave error', err.operation, err.code, err.message);
    setStatus(`Error (${err.operation ?? 'client'}): ${err.message}${err.code ? ` [${err.code}]` : ''}`, 'warning');
  });
}

async function fetchToken(identity, name, room) {
  const res = await fetch(tokenUrl, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ identity, name, room }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) {
    throw new Error(`token request failed: HTTP ${res.status} ${body.error ?? ''}`.trim());
  }
  return body.token;
}

async function join(room, name) {
  ui.join.disabled = true;
  setStatus('Connecting…', 'info');
  localName = name;
  const identity = `${slug(name)}-${randomSuffix()}`;
  try {
    // A given token carries its own identity and room grant.
    const token = givenToken ?? (await fetchToken(identity, name, room));
    client = new PulseWaveClient({ url: wsUrl, token, room });
    window.pulsewave = client;
    wireClient(client);
    await client.connect();
  } catch (err) {
    setStatus(`Could not join: ${err.message}${err.code ? ` [${err.code}]` : ''}`, 'error');
    logEvent('joinFailed', { message: err.message, code: err.code });
    ui.join.disabled = false;
    return;
  }
  logEvent('joined', { identity: client.identity, room: client.room.name });
  ui.form.hidden = true;
  ui.call.hidden = false;
  ui.roomLabel.textContent = client.room.name;
  setStatus(`Connected to ${client.room.name} as ${client.identity}`, 'ok');
  ensureTile(client.identity, name, 'camera', true);
  for (const info of client.participants.values()) renderRemoteParticipant(info);
  await publishLocalMedia();
  updateControls();
}

async function publishLocalMedia() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } },
    });
  } catch (err) {
    setStatus(`Camera/microphone unavailable: ${err.message}`, 'warning');
    logEvent('getUserMediaFailed', { message: err.message });
    return;
  }
  local.stream = stream;
  const [videoTrack] = stream.getVideoTracks();
  const [audioTrack] = stream.getAudioTracks();
  if (videoTrack) setTileVideo(tileFor(client.identity, 'camera'), videoTrack);
  // Simulcast for the camera, as LiveKit does by default: three layers the
  // server switches between. `?simulcast=0` publishes one encoding.
  const simulcast = new URLSearchParams(location.search).get('simulcast') !== '0';
  const cameraEncodings = [
    { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
    { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
  ];
  const publishOne = async (track, source) => {
    try {
      const options = { source };
      if (source === 'camera' && simulcast) options.encodings = cameraEncodings;
      const pub = await client.publish(track, options);
      logEvent('published', { source, producerId: pub.producerId });
      return pub;
    } catch (err) {
      publishErrors.push({ source, code: err.code, message: err.message });
      logEvent('publishFailed', { source, code: err.code, message: err.message });
      setStatus(`Publishing ${source} failed: ${err.message}${err.code ? ` [${err.code}]` : ''}`, 'warning');
      return null;
    }
  };
  if (audioTrack) local.mic = await publishOne(audioTrack, 'microphone');
  if (videoTrack) local.cam = await publishOne(videoTrack, 'camera');
  refreshBadges(client.identity);
}

async function toggleMute(pub) {
  if (!pub) return;
  try {
    if (pub.muted) await client.unmute(pub);
    else await client.mute(pub);
  } catch (err) {
    setStatus(`${pub.muted ? 'Mute' : 'Unmute'} failed: ${err.message}`, 'warning');
  }
  logEvent(pub.muted ? 'localMuted' : 'localUnmuted', { source: pub.source });
  refreshBadges(client.identity);
  updateControls();
}

async function startScreenShare() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
  } catch (err) {
    setStatus(`Screen sharing unavailable: ${err.message}`, 'warning');
    return;
  }
  const [video] = stream.getVideoTracks();
  const [audio] = stream.getAudioTracks();
  setTileVideo(ensureTile(client.identity, localName, 'screen', true), video);
  try {
    local.screen = await client.publish(video, { source: 'screen' });
    if (audio) local.screenAudio = await client.publish(audio, { source: 'screen-audio' });
  } catch (err) {
    setStatus(`Sharing failed: ${err.message}${err.code ? ` [${err.code}]` : ''}`, 'warning');
    await stopScreenShare(stream);
  }
  updateControls();
}

async function stopScreenShare(stream) {
  for (const key of ['screen', 'screenAudio']) {
    const pub = local[key];
    local[key] = null;
    if (pub) await client.unpublish(pub, { stopTrack: true }).catch(() => {});
  }
  for (const track of stream?.getTracks() ?? []) track.stop();
  if (client) removeTile(client.identity, 'screen');
  updateControls();
}

function updateControls() {
  ui.mic.disabled = !local.mic;
  ui.mic.dataset.muted = String(Boolean(local.mic?.muted));
  ui.mic.textContent = local.mic?.muted ? 'Unmute mic' : 'Mute mic';
  ui.cam.disabled = !local.cam;
  ui.cam.dataset.muted = String(Boolean(local.cam?.muted));
  ui.cam.textContent = local.cam?.muted ? 'Start camera' : 'Stop camera';
  const sharing = Boolean(local.screen);
  ui.screen.dataset.sharing = String(sharing);
  ui.screen.textContent = sharing ? 'Stop sharing' : 'Share screen';
}

function resetCall() {
  for (const track of local.stream?.getTracks() ?? []) track.stop();
  for (const pub of [local.screen, local.screenAudio]) pub?.track.stop();
  Object.assign(local, { mic: null, cam: null, screen: null, screenAudio: null, stream: null });
  ui.grid.replaceChildren();
  ui.audio.replaceChildren();
  updateGridCount();
  ui.call.hidden = true;
  ui.form.hidden = false;
  ui.join.disabled = false;
  ui.roomLabel.textContent = '';
}

async function leave() {
  ui.leave.disabled = true;
  try {
    await client?.leave();
  } finally {
    logEvent('left');
    resetCall();
    ui.leave.disabled = false;
    setStatus('Left the room', 'idle');
  }
}

// --------------------------------------------------------------- test hooks

/** Inbound RTP stats of every remote track: {identity: {source: {...}}}. */
window.pwStats = async function pwStats() {
  const out = {};
  if (!client) return out;
  for (const sub of client.subscriptions.values()) {
    if (!sub.consumer || sub.closed) continue;
    const entry = {
      kind: sub.kind,
      source: sub.source,
      producerId: sub.producerId,
      consumerId: sub.consumerId,
      muted: sub.muted,
      trackMuted: sub.track?.muted ?? null,
      trackReadyState: sub.track?.readyState ?? null,
      framesDecoded: 0,
      framesReceived: 0,
      packetsReceived: 0,
      bytesReceived: 0,
      totalAudioEnergy: 0,
      frameWidth: 0,
      frameHeight: 0,
      keyFramesDecoded: 0,
      pliCount: 0,
    };
    try {
      const report = await sub.consumer.getStats();
      for (const s of report.values()) {
        if (s.type !== 'inbound-rtp') continue;
        entry.framesDecoded = s.framesDecoded ?? 0;
        entry.framesReceived = s.framesReceived ?? 0;
        entry.packetsReceived = s.packetsReceived ?? 0;
        entry.bytesReceived = s.bytesReceived ?? 0;
        entry.totalAudioEnergy = s.totalAudioEnergy ?? 0;
        entry.frameWidth = s.frameWidth ?? 0;
        entry.frameHeight = s.frameHeight ?? 0;
        entry.keyFramesDecoded = s.keyFramesDecoded ?? 0;
        entry.pliCount = s.pliCount ?? 0;
      }
    } catch (err) {
      entry.error = err.message;
    }
    (out[sub.participantIdentity] ??= {})[sub.source] = entry;
  }
  return out;
};

/** A JSON snapshot of the client and the demo, for tests and debugging. */
window.pwState = function pwState() {
  const c = client;
  return {
    state: c?.state ?? 'none',
    identity: c?.identity ?? null,
    room: c?.room?.name ?? null,
    status: ui.status.textContent,
    participants: c
      ? [...c.participants.values()].map((p) => ({
          identity: p.identity,
          name: p.name,
          sid: p.sid,
          tracks: (p.tracks ?? []).map((t) => ({ source: t.source, kind: t.kind, muted: t.muted, producerId: t.producerId })),
        }))
      : [],
    publications: c
      ? c.publications.map((p) => ({ source: p.source, kind: p.kind, muted: p.muted, producerId: p.producerId }))
      : [],
    subscriptions: c
      ? [...c.subscriptions.values()].map((s) => ({
          identity: s.participantIdentity,
          source: s.source,
          kind: s.kind,
          producerId: s.producerId,
          consumerId: s.consumerId,
          subscribed: s.subscribed,
          muted: s.muted,
        }))
      : [],
    publishErrors: [...publishErrors],
    chat: chatLog.map((m) => ({ ...m })),
    tiles: [...ui.grid.querySelectorAll('.tile')].map((t) => ({ ...t.dataset })),
  };
};

// ------------------------------------------------------------------- wiring

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const room = ui.room.value.trim();
  const name = ui.name.value.trim();
  if (room && name) join(room, name);
});
ui.chatForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const message = ui.chatInput.value.trim();
  if (!message || !client) return;
  ui.chatInput.value = '';
  try {
    await client.sendData({ type: 'chat', message }, { kind: 'reliable' });
    addChatMessage(client.identity, message, true);
  } catch (err) {
    setStatus(`Message not sent: ${err.message}`, 'warning');
    ui.chatInput.value = message;
  }
});
ui.mic.addEventListener('click', () => toggleMute(local.mic));
ui.cam.addEventListener('click', () => toggleMute(local.cam));
ui.screen.addEventListener('click', () => (local.screen ? stopScreenShare() : startScreenShare()));
ui.leave.addEventListener('click', () => leave());
window.addEventListener('pagehide', () => {
  client?.leave().catch(() => {});
});

if (params.get('room')) ui.room.value = params.get('room');
if (params.get('name')) ui.name.value = params.get('name');
updateControls();
if (params.get('autojoin') === '1' && ui.room.value && ui.name.value) ui.form.requestSubmit();
