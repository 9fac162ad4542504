// PulseWave browser client: the signaling protocol of docs/protocol.md over
// an unmodified mediasoup-client.
//
//   import { PulseWaveClient } from 'pulsewave';
//   const client = new PulseWaveClient({ url: 'wss://sfu.example.com', token });
//   client.on('trackSubscribed', (t) => { video.srcObject = new MediaStream([t.track]); });
//   await client.connect();
//   const cam = await client.publish(videoTrack, { source: 'camera' });
//
// See web/README.md for the whole API, the events and the reconnect rules.

import { Device } from 'mediasoup-client';

/** Version of this module (not of the server). */
export const VERSION = '0.1.0';

/** Stable error codes of the protocol (docs/protocol.md, "Error codes"). */
export const ErrorCode = Object.freeze({
  RoomNotFound: 100,
  RoomFull: 101,
  RoomClosed: 102,
  ParticipantNotFound: 103,
  ResumeFailed: 104,
  MalformedMessage: 200,
  UnknownMessageType: 201,
  InvalidParameters: 202,
  MessageTooLarge: 203,
  RateLimited: 204,
  NotJoined: 205,
  AlreadyJoined: 206,
  UnsupportedFrame: 207,
  Unauthorized: 300,
  PermissionDenied: 301,
  RoomMismatch: 302,
  NotOwner: 303,
  TransportNotFound: 400,
  TransportNotConnected: 401,
  WrongTransportDirection: 402,
  ProducerNotFound: 403,
  ConsumerNotFound: 404,
  UnsupportedCodec: 405,
  DuplicateSsrc: 406,
  CannotConsume: 407,
  InvalidRtpParameters: 408,
  LimitReached: 409,
  TransportAlreadyConnected: 410,
  InternalError: 500,
  ServiceUnavailable: 501,
});

/** Client-side error codes (not sent by the server). */
export const ClientErrorCode = Object.freeze({
  Timeout: 'timeout',
  NotConnected: 'not-connected',
  ConnectionClosed: 'connection-closed',
  SocketFailed: 'socket-failed',
});

// Disconnect reasons after which the client does not reconnect.
const FINAL_REASONS = new Set(['client-leave', 'duplicate-identity', 'room-closed', 'participant-removed', 'room-deleted']);
// Error codes of a join that another attempt cannot fix.
const FATAL_JOIN_CODES = new Set([
  ErrorCode.RoomNotFound,
  ErrorCode.Unauthorized,
  ErrorCode.PermissionDenied,
  ErrorCode.RoomMismatch,
]);
// mediasoup-client 3.24 has no `device.sctpCapabilities`; this is what older
// versions returned and what browsers support.
const DEFAULT_SCTP_CAPABILITIES = Object.freeze({ numStreams: { OS: 1024, MIS: 1024 } });
/** ICE restarts tried on a transport before a failed one rebuilds the session. */
const MAX_ICE_RESTARTS = 3;

/**
 * The local address of a mediasoup-client transport's selected candidate
 * pair (`null` when none is selected or the stats do not say).
 */
async function selectedLocalAddress(transport) {
  const stats = await transport.getStats();
  const pair = selectedPair(stats);
  const local = pair ? stats.get(pair.localCandidateId) : null;
  return local ? (local.address ?? local.ip ?? null) : null;
}
/** The selected candidate pair's stats in a transport's stats report, if any. */
function selectedPair(stats) {
  let pairId = null;
  for (const s of stats.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  }
  return pairId ? stats.get(pairId) : [...stats.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
}
/** How often the connected transports' paths are looked at for a silent path (see `_checkStalls`). */
const STALL_CHECK_MS = 500;
/**
 * A consent check the server has not answered for this long, with nothing
 * else received meanwhile, means the path is dead (the server, ICE-lite,
 * answers at once).
 */
const STALL_UNANSWERED_MS = 1000;
/**
 * A path that has received nothing for this long while the browser
 * discards what it sends on it (`packetsDiscardedOnSend` grows: its local
 * address is gone) is dead, without waiting for a consent check.
 */
const STALL_DISCARDING_MS = 1000;
/**
 * When one transport's path is found dead, its siblings on the same local
 * address that have received nothing for this long are restarted with it.
 */
const STALL_SIBLING_SILENT_MS = 1000;
/**
 * How long the selected pair of `stats` has received nothing, in ms:
 * Chromium's `lastPacketReceivedTimestamp` (same clock as the report's
 * `timestamp`) when given, else `fallback`.
 */
function pairSilentMs(pair, fallback) {
  if (typeof pair.lastPacketReceivedTimestamp === 'number' && pair.lastPacketReceivedTimestamp > 0 && typeof pair.timestamp === 'number') {
    return Math.max(0, pair.timestamp - pair.lastPacketReceivedTimestamp);
  }
  return fallback;
}
/** Delay before acting on a `failed` that arrived during an ICE restart. */
const ICE_RESTART_RETRY_MS = 1000;
/** Longest wait between two resume attempts (see `_resumeSession`). */
const RESUME_MAX_DELAY_MS = 2000;
/** The last resume attempt is made this long before the resume window closes. */
const RESUME_LAST_TRY_MARGIN_MS = 500;
const SOURCES = new Set(['camera', 'microphone', 'screen', 'screen-audio']);

/** An error of a request or of the connection; `code` is a protocol code or a ClientErrorCode. */
export class PulseWaveError extends Error {
  constructor(message, code, details = {}) {
    super(message);
    this.name = 'PulseWaveError';
    this.code = code;
    Object.assign(this, details);
  }
}

/** Minimal event emitter: a throwing handler is logged and never breaks the client. */
class Emitter {
  #handlers = new Map();

  /** Adds a handler; returns a function that removes it. */
  on(event, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (!this.#handlers.has(event)) this.#handlers.set(event, new Set());
    this.#handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  once(event, handler) {
    const off = this.on(event, (...args) => {
      off();
      handler(...args);
    });
    return off;
  }

  off(event, handler) {
    this.#handlers.get(event)?.delete(handler);
  }

  emit(event, ...args) {
    const set = this.#handlers.get(event);
    if (!set) return false;
    for (const handler of [...set]) {
      try {
        handler(...args);
      } catch (err) {
        console.error(`[pulsewave] "${event}" handler threw`, err);
      }
    }
    return set.size > 0;
  }
}

/** Decodes the payload of a JWT without verifying it (the server verifies). */
export function decodeToken(token) {
  const part = String(token).split('.')[1];
  if (!part) throw new TypeError('token is not a JWT');
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** A local track published with `client.publish()`. It survives reconnects: its producer is replaced. */
export class LocalTrackPublication {
  constructor({ track, source, name, muted, produceOptions }) {
    /** The MediaStreamTrack. The client never stops it unless asked (`unpublish(pub, {stopTrack: true})`). */
    this.track = track;
    this.kind = track.kind;
    this.source = source;
    this.name = name;
    this.muted = Boolean(muted);
    /** The current mediasoup-client Producer (replaced after a reconnect). */
    this.producer = null;
    /** The current server producer id, `PR_...`. */
    this.producerId = null;
    /** The server's TrackInfo from `published`. */
    this.info = null;
    this.closed = false;
    this._produceOptions = produceOptions;
  }

  get trackSid() {
    return this.info?.sid ?? null;
  }
}

/** A remote track this client subscribes to. */
export class RemoteTrack {
  constructor(info) {
    this.participantIdentity = info.participantIdentity;
    this.participantSid = info.participantSid;
    this.producerId = info.producerId;
    this.trackSid = info.sid;
    this.kind = info.kind;
    this.source = info.source;
    this.mimeType = info.mimeType;
    /** Whether the publisher muted it (track-muted / track-unmuted). */
    this.muted = Boolean(info.muted);
    this.consumerId = null;
    /** The mediasoup-client Consumer, once consumed. */
    this.consumer = null;
    this.subscribed = false;
    this.closed = false;
  }

  /** The MediaStreamTrack to play. */
  get track() {
    return this.consumer?.track ?? null;
  }

  /** Alias of participantIdentity. */
  get participant() {
    return this.participantIdentity;
  }
}

/**
 * A PulseWave room connection.
 *
 * Events (handler argument):
 * - `tokenRefreshed` ({token}): the server sent a fresh token; reconnects use it (`client.token`)
 * - `connected` ({room, participant}), `reconnecting` ({reason, attempt, delayMs}),
 *   `reconnected` ({room, participant}), `disconnected` ({reason, error?})
 * - `resumed` ({room, participant, replayed}): a dropped socket was replaced and the session resumed
 *   (same ids, nothing rebuilt); `resumeFailed` ({reason}): refused, a full reconnect follows
 * - `participantJoined` / `participantLeft` (ParticipantInfo)
 * - `trackPublished` (TrackInfo) / `trackUnpublished` ({participantIdentity, producerId, trackSid, track})
 * - `trackSubscribed` / `trackUnsubscribed` (RemoteTrack)
 * - `streamStateChanged` ({subscription, state: 'active'|'paused', reason}): the server paused a video for congestion, or restarted it
 * - `layersChanged` ({subscription, spatialLayer, temporalLayer}): the layers a subscription receives changed
 * - `subscribedLayers` ({publication, layers}): dynacast turned encodings of a published track on or off
 * - `trackMuted` / `trackUnmuted` ({participantIdentity, producerId, trackSid, source, kind, local, subscription})
 * - `localTrackEnded` (LocalTrackPublication; it has been unpublished)
 * - `data` ({participantIdentity, data, kind, topic})
 * - `participantUpdated` ({participant, local}), `roomUpdated` ({name, sid, metadata})
 * - `activeSpeakers` ([{participantIdentity, participantSid, level}], loudest first)
 * - `connectionQuality` ({participantIdentity, quality, local})
 * - `subscriptionsUpdated` ({trackSids, producerIds, subscribe}) after the server API asked
 * - `transportState` ({direction, state})
 * - `transportStalled` ({direction, transportId, silentMs}): a connected transport's path went
 *   silent with a consent check unanswered; an ICE restart follows at once
 * - `error` (PulseWaveError or Error, with `operation`)
 * - `message` (every raw server message, for debugging)
 */
export class PulseWaveClient extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url  ws://, wss://, http:// or https:// URL of the server
   * @param {string} options.token  access token
   * @param {string} [options.room]  room to join (default: the token's `video.room`)
   * @param {boolean} [options.autoSubscribe=true]  subscribe to every published track
   * @param {boolean} [options.reconnect=true]  reconnect after an unexpected drop
   * @param {boolean} [options.resume=true]  after a dropped socket, first try to resume the
   *   session (same ids, transports kept, missed events replayed; docs/protocol.md "Session resume")
   * @param {number} [options.resumeWindowMs=15000]  how long to try resuming before a full rejoin
   *   (the server's default RESUME_GRACE)
   * @param {number} [options.requestTimeoutMs=10000]
   * @param {number} [options.reconnectGiveUpMs=120000]
   * @param {number} [options.pingIntervalMs=15000]  0 disables the application-level ping
   * @param {number} [options.stallRestartMs=2000]  a connected transport that has received
   *   nothing for this long while a consent check of its path went unanswered (or for 1 s while
   *   the browser discards what it sends: its address is gone) restarts ICE at once, with its
   *   silent siblings on the same address, without waiting for the browser's `disconnected`
   *   (seconds later); 0 disables
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy]
   */
  constructor(options = {}) {
    super();
    const { url, token } = options;
    if (!url) throw new TypeError('options.url is required');
    if (!token) throw new TypeError('options.token is required');
    this._options = {
      autoSubscribe: true,
      reconnect: true,
      resume: true,
      resumeWindowMs: 15_000,
      requestTimeoutMs: 10_000,
      reconnectGiveUpMs: 120_000,
      reconnectMinDelayMs: 500,
      reconnectMaxDelayMs: 10_000,
      pingIntervalMs: 15_000,
      stallRestartMs: 2000,
      ...options,
    };
    this._token = token;
    this._roomName = options.room ?? roomFromToken(token);
    this._baseUrl = url;
    this._url = socketUrl(url, token);

    /** 'new' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected' */
    this.state = 'new';
    /** RoomInfo from `joined` (its `participants` is the list at join time; use `participants`). */
    this.room = null;
    /** This client's ParticipantInfo. */
    this.participant = null;
    /** identity -> ParticipantInfo of the others, with `tracks` (TrackInfo with `muted`) kept up to date. */
    this.participants = new Map();
    /** Router RTP capabilities and ICE servers from `joined`. */
    this.rtpCapabilities = null;
    this.iceServers = [];
    /** The last `active-speakers`: [{participantIdentity, participantSid, level}], loudest first. */
    this.activeSpeakers = [];
    /** identity -> connection quality (`excellent`, `good`, `poor`, `lost`) from `connection-quality`. */
    this.connectionQuality = new Map();

    this._publications = [];
    this._session = null; // state of the current WebSocket session, see _newSession
    this._requestSeq = 0;
    this._sessionSeq = 0;
    this._leaving = false;
    this._reconnectLoop = null;
    this._cancelSleep = null;
    this._transportFailures = 0;
    /** Resume credentials of the current session: {participantSid, token, lastSeq}, or null. */
    this._resume = null;
  }

  /** The access token the next (re)connection uses: the latest `token-refresh`, or the one given. */
  get token() {
    return this._token;
  }

  /** Local publications (LocalTrackPublication). */
  get publications() {
    return [...this._publications];
  }

  /** producerId -> RemoteTrack of the current session's subscriptions. */
  get subscriptions() {
    return this._session ? this._session.subs : new Map();
  }

  /** The mediasoup-client Device of the current session. */
  get device() {
    return this._session?.device ?? null;
  }

  get identity() {
    return this.participant?.identity ?? null;
  }

  /** Opens the socket, joins the room and loads the mediasoup Device. */
  async connect() {
    if (this.state === 'connecting' || this.state === 'connected' || this.state === 'reconnecting') {
      throw new PulseWaveError(`connect() while ${this.state}`, 'invalid-state');
    }
    this._leaving = false;
    this.state = 'connecting';
    try {
      await this._establish(false);
    } catch (err) {
      this.state = 'disconnected';
      throw err;
    }
    this.state = 'connected';
    this.emit('connected', { room: this.room, participant: this.participant });
    this._afterEstablished(this._session);
  }

  /**
   * Publishes a local track. Resolves with a LocalTrackPublication once the
   * server answered `published`.
   * @param {MediaStreamTrack} track
   * @param {object} [options] `source` (camera | microphone | screen | screen-audio),
   *   `name`, `muted`, and mediasoup-client produce options `encodings`, `codecOptions`, `codec`.
   */
  async publish(track, options = {}) {
    if (!track || typeof track.kind !== 'string') throw new TypeError('publish() needs a MediaStreamTrack');
    const source = options.source ?? (track.kind === 'audio' ? 'microphone' : 'camera');
    if (!SOURCES.has(source)) throw new TypeError(`unknown source "${source}"`);
    const session = this._requireSession();
    const pub = new LocalTrackPublication({
      track,
      source,
      name: options.name,
      muted: options.muted,
      produceOptions: {
        encodings: options.encodings,
        codecOptions: options.codecOptions,
        codec: options.codec,
      },
    });
    await this._produce(session, pub);
    this._publications.push(pub);
    return pub;
  }

  /** Stops sending the track and tells everyone (`track-muted`). */
  async mute(pub) {
    return this._setMuted(pub, true);
  }

  /** Resumes sending and tells everyone (`track-unmuted`). */
  async unmute(pub) {
    return this._setMuted(pub, false);
  }

  /** Unpublishes a track. `{stopTrack: true}` also stops the MediaStreamTrack. */
  async unpublish(pub, { stopTrack = false } = {}) {
    if (!pub || pub.closed) return;
    pub.closed = true;
    this._publications = this._publications.filter((p) => p !== pub);
    const producerId = pub.producerId;
    pub.producer?.close();
    if (stopTrack) pub.track.stop();
    this._removeLocalTrack(producerId);
    const session = this._session;
    if (producerId && session?.established && !session.closed) {
      try {
        await this._request(session, { type: 'unpublish', producerId });
      } catch (err) {
        if (err.code !== ErrorCode.ProducerNotFound) throw err;
      }
    }
  }

  /**
   * Changes this participant's own metadata and/or name (`update-metadata`;
   * the token must grant `canUpdateOwnMetadata`). Everyone gets
   * `participant-updated` (event `participantUpdated`).
   * @param {object} update `metadata` (string), `name` (string)
   */
  async updateMetadata({ metadata, name } = {}) {
    const session = this._requireSession();
    const msg = { type: 'update-metadata' };
    if (metadata !== undefined) msg.metadata = metadata;
    if (name !== undefined) msg.name = name;
    const reply = await this._request(session, msg);
    return reply.participant;
  }

  /**
   * Sends a JSON value to the room (`publish-data`), resolved on `data-sent`.
   * @param {*} data  any JSON value
   * @param {object} [options] `kind` (reliable | lossy), `to` (identities), `topic`
   */
  async sendData(data, { kind = 'reliable', to, topic } = {}) {
    const session = this._requireSession();
    const msg = { type: 'publish-data', kind, data };
    if (to && to.length) msg.destinationIdentities = [...to];
    if (topic !== undefined) msg.topic = topic;
    await this._request(session, msg);
  }

  /**
   * Caps the simulcast layer a subscription receives (`set-preferred-layers`,
   * as mediasoup's `consumer.setPreferredLayers`): the best layer the
   * publisher sends up to `spatialLayer` (0 = the lowest); `null`: the best
   * (the default). For the current session: set it again after `reconnected`.
   * @param {RemoteTrack} sub
   * @param {number|null} spatialLayer
   */
  async setPreferredLayers(sub, spatialLayer, temporalLayer = null) {
    const session = this._requireSession();
    if (!sub?.consumerId || sub.closed) throw new PulseWaveError('not subscribed', ErrorCode.ConsumerNotFound);
    await this._request(session, {
      type: 'set-preferred-layers',
      consumerId: sub.consumerId,
      spatialLayer: spatialLayer ?? null,
      temporalLayer: temporalLayer ?? null,
    });
    sub.preferredSpatialLayer = spatialLayer ?? null;
    sub.preferredTemporalLayer = temporalLayer ?? null;
  }

  /**
   * mediasoup's `consumer.setPriority()`: when this client's bandwidth is
   * short, higher priorities are served first (1-255; `null`: the track's
   * own, 255 for screen shares, 1 for cameras). A pinned tile wants more.
   * @param {RemoteTrack} sub
   * @param {number|null} priority
   */
  async setSubscriptionPriority(sub, priority) {
    const session = this._requireSession();
    if (!sub?.consumerId || sub.closed) throw new PulseWaveError('not subscribed', ErrorCode.ConsumerNotFound);
    const reply = await this._request(session, { type: 'set-consumer-priority', consumerId: sub.consumerId, priority: priority ?? null });
    sub.priority = reply.priority;
  }

  /**
   * Adaptive stream: tells the server how a video is shown, so it sends no
   * more than the size needs and nothing while hidden.
   * @param {RemoteTrack} sub
   * @param {{disabled?: boolean, width?: number, height?: number}} settings
   */
  async setTrackSettings(sub, { disabled = false, width = 0, height = 0 } = {}) {
    const session = this._requireSession();
    if (!sub?.consumerId || sub.closed) throw new PulseWaveError('not subscribed', ErrorCode.ConsumerNotFound);
    await this._request(session, {
      type: 'update-track-settings',
      consumerId: sub.consumerId,
      disabled: Boolean(disabled),
      width: Math.max(0, Math.round(width)),
      height: Math.max(0, Math.round(height)),
    });
  }

  /**
   * Adaptive stream for an element (the tile a video is shown in: an
   * element that stays laid out while the video waits or is muted, or the
   * server, seeing it hidden, sends no video to show): follows its rendered size
   * (ResizeObserver, device pixels) and visibility (IntersectionObserver,
   * `display: none`, a hidden page) and sends `update-track-settings` 100 ms
   * after the last change. Returns a function that stops following.
   * With `pauseOffscreen` (the default, as LiveKit's adaptiveStream), an
   * element scrolled out of view gets no video either.
   * @param {RemoteTrack} sub
   * @param {HTMLElement} element
   * @param {{pauseOffscreen?: boolean}} [options]
   */
  attachVideo(sub, element, { pauseOffscreen = true } = {}) {
    let timer = null;
    let visible = true;
    let last = '';
    const send = () => {
      timer = null;
      if (sub.closed || !sub.consumerId || this.state !== 'connected') return;
      const ratio = globalThis.devicePixelRatio || 1;
      const rect = element.getBoundingClientRect();
      const hidden = !visible || rect.width === 0 || rect.height === 0 || globalThis.document?.visibilityState === 'hidden';
      const settings = { disabled: hidden, width: rect.width * ratio, height: rect.height * ratio };
      const key = `${settings.disabled}:${Math.round(settings.width)}x${Math.round(settings.height)}`;
      if (key === last) return;
      last = key;
      this.setTrackSettings(sub, settings).catch((err) => {
        last = '';
        if (!sub.closed) this._emitError(err, 'setTrackSettings', { producerId: sub.producerId });
      });
    };
    const schedule = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(send, 100);
    };
    const resize = typeof ResizeObserver === 'function' ? new ResizeObserver(schedule) : null;
    resize?.observe(element);
    const intersect =
      pauseOffscreen && typeof IntersectionObserver === 'function'
        ? new IntersectionObserver((entries) => {
            visible = entries.some((e) => e.isIntersecting);
            schedule();
          })
        : null;
    intersect?.observe(element);
    const onVisibility = () => schedule();
    globalThis.document?.addEventListener?.('visibilitychange', onVisibility);
    schedule();
    return () => {
      if (timer) clearTimeout(timer);
      resize?.disconnect();
      intersect?.disconnect();
      globalThis.document?.removeEventListener?.('visibilitychange', onVisibility);
    };
  }

  /** The server's view of this client's receive transports (`get-stats`). */
  async getStats() {
    const reply = await this._request(this._requireSession(), { type: 'get-stats' });
    return reply.transports ?? [];
  }

  /** Sends a raw protocol request on the current session; resolves with its reply. */
  async request(msg, options) {
    return this._request(this._requireSession(), msg, options);
  }

  /** Leaves the room and closes everything. Local tracks are not stopped. */
  async leave() {
    if (this.state === 'disconnected' || this.state === 'new') return;
    this._leaving = true;
    this._cancelSleep?.();
    const session = this._session;
    if (session && !session.closed && session.established) {
      try {
        await this._request(session, { type: 'leave' }, { timeoutMs: 3000 });
      } catch {
        // The socket may already be gone; leaving locally is enough.
      }
    }
    if (session) this._teardown(session, 'client-leave');
    for (const pub of this._publications) {
      pub.producer?.close();
      pub.closed = true;
    }
    this._publications = [];
    this._finish('client-leave');
  }

  /**
   * Test helper: drops the WebSocket as a network failure would, so the
   * client goes through its reconnect path.
   */
  simulateConnectionDrop() {
    const session = this._session;
    if (!session || session.closed) return false;
    try {
      session.ws.close(4000, 'simulated drop');
    } catch {
      // ignore
    }
    this._onSessionLost(session, { code: 4000, reason: 'simulated drop' });
    return true;
  }

  // ---------------------------------------------------------------- sessions

  _newSession() {
    return {
      id: ++this._sessionSeq,
      ws: null,
      pending: new Map(),
      device: null,
      established: false,
      closed: false,
      sendTransport: null, // Promise<Transport>
      recvTransport: null, // Promise<Transport>
      transports: [],
      published: new Map(), // producerId -> TrackInfo from `published`
      subs: new Map(), // producerId -> RemoteTrack
      queued: [], // events that arrived between `joined` and the end of _establish
      pingTimer: null,
      stallTimer: null,
      disconnectReason: null,
    };
  }

  _requireSession() {
    const session = this._session;
    if (!session || session.closed || !session.established || this.state !== 'connected') {
      throw new PulseWaveError(`not connected (state: ${this.state})`, ClientErrorCode.NotConnected);
    }
    return session;
  }

  /** Opens a socket, joins, loads the device. Throws on failure (and tears the session down). */
  async _establish(isReconnect) {
    const session = this._newSession();
    this._session = session;
    try {
      session.ws = await this._openSocket(session);
      const joined = await this._request(session, { type: 'join', room: this._roomName });
      const device = new Device();
      await device.load({ routerRtpCapabilities: joined.rtpCapabilities });
      if (session.closed) throw new PulseWaveError('connection closed while joining', ClientErrorCode.ConnectionClosed);
      session.device = device;
      this.room = joined.room;
      this.participant = { ...joined.participant, tracks: [...(joined.participant.tracks ?? [])] };
      this.rtpCapabilities = joined.rtpCapabilities;
      this.iceServers = joined.iceServers ?? [];
      this._resume = joined.resumeToken ? { participantSid: joined.participant.sid, token: joined.resumeToken, lastSeq: 0 } : null;
      this._applyParticipants(joined.room?.participants ?? [], isReconnect);
      session.established = true;
      if (this._options.pingIntervalMs > 0) {
        session.pingTimer = setInterval(() => this._ping(session), this._options.pingIntervalMs);
      }
      if (this._options.stallRestartMs > 0) {
        session.stallTimer = setInterval(() => this._checkStalls(session).catch(() => {}), STALL_CHECK_MS);
      }
    } catch (err) {
      this._teardown(session, 'join-failed');
      throw err;
    }
  }

  /** Work after connect/reconnect that must not delay it: subscriptions and republishing. */
  _afterEstablished(session) {
    const queued = session.queued;
    session.queued = [];
    for (const msg of queued) {
      if (session.closed) return;
      this._handleEvent(session, msg);
    }
    for (const info of this.participants.values()) {
      for (const track of info.tracks ?? []) this._subscribe(session, track);
    }
  }

  _openSocket(session) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this._url);
      } catch (err) {
        reject(new PulseWaveError(`cannot open WebSocket: ${err.message}`, ClientErrorCode.SocketFailed));
        return;
      }
      session.ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (opened) return;
        try {
          ws.close();
        } catch {
          // ignore
        }
        reject(new PulseWaveError('WebSocket open timed out', ClientErrorCode.Timeout));
      }, this._options.requestTimeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve(ws);
      };
      ws.onmessage = (event) => this._onMessage(session, event.data);
      ws.onerror = () => {
        // A close event always follows; nothing to do here.
      };
      ws.onclose = (event) => {
        clearTimeout(timer);
        if (!opened) {
          // The token is checked before the upgrade: a 401 looks like this too.
          reject(
            new PulseWaveError(
              `WebSocket closed before opening (code ${event.code}); the server may be down or the token invalid`,
              ClientErrorCode.SocketFailed,
              { closeCode: event.code },
            ),
          );
          return;
        }
        // A socket this session has since replaced (a resume) no longer speaks for it.
        if (session.ws !== ws) return;
        this._onSessionLost(session, { code: event.code, reason: event.reason });
      };
    });
  }

  _request(session, msg, { timeoutMs = this._options.requestTimeoutMs } = {}) {
    if (!session || session.closed || !session.ws || session.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new PulseWaveError(`not connected: cannot send ${msg.type}`, ClientErrorCode.NotConnected));
    }
    const requestId = ++this._requestSeq;
    // requestId first: the server echoes it even on a message too large to parse.
    const payload = { requestId, ...msg };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        session.pending.delete(requestId);
        reject(new PulseWaveError(`${msg.type} timed out after ${timeoutMs} ms`, ClientErrorCode.Timeout, { request: msg.type, requestId }));
      }, timeoutMs);
      session.pending.set(requestId, { resolve, reject, timer, type: msg.type });
      try {
        session.ws.send(JSON.stringify(payload));
      } catch (err) {
        clearTimeout(timer);
        session.pending.delete(requestId);
        reject(new PulseWaveError(`cannot send ${msg.type}: ${err.message}`, ClientErrorCode.NotConnected));
      }
    });
  }

  async _ping(session) {
    if (session.closed || session !== this._session) return;
    try {
      await this._request(session, { type: 'ping' });
    } catch (err) {
      if (err.code === ClientErrorCode.Timeout && !session.closed) {
        // A half-open connection: treat it as lost.
        try {
          session.ws.close(4001, 'ping timeout');
        } catch {
          // ignore
        }
        this._onSessionLost(session, { code: 4001, reason: 'ping timeout' });
      }
    }
  }

  /** Closes everything of a session (no messages sent). Idempotent. */
  _teardown(session, reason) {
    if (session.closed) return;
    session.closed = true;
    clearInterval(session.pingTimer);
    clearInterval(session.stallTimer);
    for (const { reject, timer, type } of session.pending.values()) {
      clearTimeout(timer);
      reject(new PulseWaveError(`connection closed before the reply to ${type} (${reason})`, ClientErrorCode.ConnectionClosed));
    }
    session.pending.clear();
    for (const sub of [...session.subs.values()]) this._closeSubscription(session, sub);
    for (const transport of session.transports) {
      try {
        transport.close();
      } catch {
        // ignore
      }
    }
    session.transports = [];
    for (const pub of this._publications) {
      if (pub.producer && pub.producer.closed) pub.producer = null;
    }
    if (session.ws && session.ws.readyState <= WebSocket.OPEN) {
      try {
        session.ws.close(1000, reason);
      } catch {
        // ignore
      }
    }
  }

  /** The socket of an established session is gone: reconnect or finish. */
  _onSessionLost(session, { code, reason }) {
    if (session.closed || session !== this._session) return;
    if (session.resuming) {
      // The socket of a resume attempt closed: the attempt fails, the loop goes on.
      this._suspend(session, `socket closed (${code})`);
      return;
    }
    const serverReason = session.disconnectReason;
    if (
      session.established &&
      !serverReason &&
      !session.noResume &&
      !this._leaving &&
      this._options.reconnect &&
      this._options.resume &&
      this._resume
    ) {
      // A plain socket loss: keep the transports, producers and consumers and
      // try to take the session back (docs/protocol.md, "Session resume").
      this._suspend(session, `socket closed (${code})`);
      session.resuming = true;
      this._startReconnect('connection-lost');
      return;
    }
    this._teardown(session, serverReason ?? `socket closed (${code})`);
    if (!session.established) return; // _establish is still running and will throw
    if (this._leaving) {
      this._finish('client-leave');
      return;
    }
    if (!this._options.reconnect || (serverReason && FINAL_REASONS.has(serverReason))) {
      this._finish(serverReason ?? 'connection-lost', { closeCode: code, closeReason: reason });
      return;
    }
    this._startReconnect(serverReason ?? 'connection-lost');
  }

  /** Ends a session's socket but keeps its transports, producers and consumers. */
  _suspend(session, reason) {
    clearInterval(session.pingTimer);
    session.pingTimer = null;
    for (const { reject, timer, type } of session.pending.values()) {
      clearTimeout(timer);
      reject(new PulseWaveError(`connection closed before the reply to ${type} (${reason})`, ClientErrorCode.ConnectionClosed));
    }
    session.pending.clear();
    const ws = session.ws;
    session.ws = null;
    if (!ws) return;
    // Whatever this socket still delivers (a late close event, too) is no longer ours.
    ws.onclose = null;
    ws.onmessage = null;
    if (ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(4002, reason);
      } catch {
        // ignore
      }
    }
  }

  /**
   * Tries to take back the suspended session for up to `resumeWindowMs`: a new socket,
   * `join` with `resume`. True when resumed; false when the server refused or the window
   * passed (the session is then torn down and the caller rejoins in full).
   */
  async _resumeSession(session, reason) {
    const deadline = Date.now() + this._options.resumeWindowMs;
    // Attempts at most RESUME_MAX_DELAY_MS apart, so a network that comes
    // back late in the window still finds the session (with the doubling
    // delays of a full reconnect, 0.5 s then up to 8 s, a network back 8 s
    // into a 15 s window would wait past it and lose the session).
    const maxDelay = Math.min(this._options.reconnectMaxDelayMs, RESUME_MAX_DELAY_MS);
    let delay = 0;
    for (let attempt = 1; ; attempt++) {
      if (this._leaving || session.closed || session !== this._session) return false;
      if (!this._resume || Date.now() + delay > deadline) break;
      this.emit('reconnecting', { reason, attempt, delayMs: delay, resume: true });
      await this._sleep(delay);
      if (this._leaving || session.closed || session !== this._session) return false;
      try {
        await this._openSocket(session);
        const resumed = await this._request(session, { type: 'join', room: this._roomName, resume: { ...this._resume } });
        session.resuming = false;
        this._resume = { ...this._resume, token: resumed.resumeToken };
        this.participant = { ...resumed.participant, tracks: [...(resumed.participant.tracks ?? [])] };
        if (this._options.pingIntervalMs > 0) {
          session.pingTimer = setInterval(() => this._ping(session), this._options.pingIntervalMs);
        }
        this.state = 'connected';
        this.emit('resumed', { room: this.room, participant: this.participant, replayed: resumed.replayed ?? 0 });
        // Media that broke too while the socket was down (no `restart-ice` could be sent then):
        // restart ICE on those transports now, same transports and ids.
        for (const transport of session.transports) {
          const state = transport.connectionState;
          if (!transport.closed && (state === 'disconnected' || state === 'failed')) {
            this._restartIce(session, transport, transport.direction, state);
          }
        }
        return true;
      } catch (err) {
        this._suspend(session, 'resume attempt failed');
        if (err.code === ErrorCode.ResumeFailed || FATAL_JOIN_CODES.has(err.code)) break;
        delay = Math.min(Math.max(delay * 2, this._options.reconnectMinDelayMs), maxDelay);
        // The last attempt just before the window closes rather than none.
        const left = deadline - Date.now() - RESUME_LAST_TRY_MARGIN_MS;
        if (left <= 0) break;
        delay = Math.min(delay, left);
      }
    }
    this._resume = null;
    session.resuming = false;
    this._teardown(session, 'resume-failed');
    return false;
  }

  _finish(reason, extra = {}) {
    if (this.state === 'disconnected') return;
    this.state = 'disconnected';
    this._session = null;
    for (const pub of this._publications) {
      pub.producer?.close();
      pub.producer = null;
    }
    this.participants = new Map();
    this.emit('disconnected', { reason, ...extra });
  }

  _startReconnect(reason) {
    this.state = 'reconnecting';
    if (this._reconnectLoop) return; // the running loop notices the lost session and goes on
    this._reconnectLoop = this._reconnect(reason).finally(() => {
      this._reconnectLoop = null;
    });
  }

  async _reconnect(reason) {
    const suspended = this._session;
    if (suspended?.resuming) {
      if (await this._resumeSession(suspended, reason)) return;
      if (this._leaving) return;
      // Refused or too late: tell the app, then rejoin in full below.
      this.emit('resumeFailed', { reason });
    }
    const deadline = Date.now() + this._options.reconnectGiveUpMs;
    let delay = reason === 'migration' ? 0 : this._options.reconnectMinDelayMs;
    let lastError = null;
    for (let attempt = 1; ; attempt++) {
      if (this._leaving) return;
      if (Date.now() + delay > deadline) {
        this._finish('reconnect-failed', { error: lastError });
        return;
      }
      this.emit('reconnecting', { reason, attempt, delayMs: delay });
      await this._sleep(delay);
      if (this._leaving) return;
      try {
        await this._establish(true);
      } catch (err) {
        lastError = err;
        if (this._leaving) return;
        if (FATAL_JOIN_CODES.has(err.code)) {
          this._finish('reconnect-failed', { error: err });
          return;
        }
        delay = Math.min(Math.max(delay * 2, this._options.reconnectMinDelayMs), this._options.reconnectMaxDelayMs);
        continue;
      }
      const session = this._session;
      if (this._leaving) {
        this._teardown(session, 'client-leave');
        return;
      }
      this.state = 'connected';
      this._afterEstablished(session);
      await this._republish(session);
      if (session.closed || session !== this._session) continue; // lost again: a new loop takes over
      this.emit('reconnected', { room: this.room, participant: this.participant });
      return;
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this._cancelSleep = done;
    }).finally(() => {
      this._cancelSleep = null;
    });
  }

  async _republish(session) {
    for (const pub of [...this._publications]) {
      if (session.closed) return;
      if (pub.closed) continue;
      if (pub.track.readyState === 'ended') {
        this._publications = this._publications.filter((p) => p !== pub);
        pub.closed = true;
        this.emit('localTrackEnded', pub);
        continue;
      }
      try {
        await this._produce(session, pub);
      } catch (err) {
        if (!session.closed) this._emitError(err, 'republish', { source: pub.source });
      }
    }
  }

  // ------------------------------------------------------------ participants

  _applyParticipants(list, isReconnect) {
    const next = new Map();
    for (const info of list) next.set(info.identity, { ...info, tracks: [...(info.tracks ?? [])] });
    const prev = this.participants;
    this.participants = next;
    if (!isReconnect) return;
    for (const [identity, old] of prev) {
      const now = next.get(identity);
      if (!now) {
        this.emit('participantLeft', old);
        continue;
      }
      const ids = new Set(now.tracks.map((t) => t.producerId));
      for (const t of old.tracks ?? []) {
        if (!ids.has(t.producerId)) {
          this.emit('trackUnpublished', { participantIdentity: identity, producerId: t.producerId, trackSid: t.sid, track: t });
        }
      }
    }
    for (const [identity, now] of next) {
      const old = prev.get(identity);
      if (!old) {
        this.emit('participantJoined', now);
        continue;
      }
      const ids = new Set((old.tracks ?? []).map((t) => t.producerId));
      for (const t of now.tracks) if (!ids.has(t.producerId)) this.emit('trackPublished', t);
    }
  }

  _findTrack(producerId) {
    for (const info of this.participants.values()) {
      const track = info.tracks?.find((t) => t.producerId === producerId);
      if (track) return track;
    }
    return null;
  }

  _removeLocalTrack(producerId) {
    if (this.participant && producerId) {
      this.participant.tracks = this.participant.tracks.filter((t) => t.producerId !== producerId);
    }
  }

  // ---------------------------------------------------------------- messages

  _onMessage(session, raw) {
    if (session.closed || session !== this._session) return;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    if (this._resume && Number.isSafeInteger(msg.seq) && msg.seq > this._resume.lastSeq) this._resume.lastSeq = msg.seq;
    this.emit('message', msg);

    if (msg.requestId !== undefined && msg.requestId !== null) {
      const pending = session.pending.get(msg.requestId);
      if (pending) {
        session.pending.delete(msg.requestId);
        clearTimeout(pending.timer);
        if (msg.type === 'error') {
          pending.reject(
            new PulseWaveError(msg.message ?? `error ${msg.code}`, msg.code, { request: pending.type, requestId: msg.requestId }),
          );
          return;
        }
        pending.resolve(msg);
      }
    }
    if (msg.type === 'disconnected') session.disconnectReason = msg.reason;
    if (!session.established || session.queued.length) {
      // Not ready to act on events yet (the device is loading): keep their order.
      if (msg.type !== 'joined') session.queued.push(msg);
      return;
    }
    this._handleEvent(session, msg);
  }

  _handleEvent(session, msg) {
    switch (msg.type) {
      case 'participant-joined': {
        const info = { ...msg.participant, tracks: [...(msg.participant.tracks ?? [])] };
        if (info.identity === this.identity) return;
        this.participants.set(info.identity, info);
        this.emit('participantJoined', info);
        for (const t of info.tracks) this._subscribe(session, t);
        return;
      }
      case 'participant-left': {
        const identity = msg.participant?.identity;
        const known = this.participants.get(identity);
        // After a duplicate-identity takeover the old session's participant-left
        // may follow the new one's participant-joined: compare sids.
        if (!known || (known.sid && msg.participant.sid && known.sid !== msg.participant.sid)) return;
        for (const sub of [...session.subs.values()]) {
          if (sub.participantIdentity === identity) this._closeSubscription(session, sub);
        }
        this.participants.delete(identity);
        this.emit('participantLeft', known);
        return;
      }
      case 'track-published': {
        const track = msg.track;
        if (!track || track.participantIdentity === this.identity) return;
        let info = this.participants.get(track.participantIdentity);
        if (!info) {
          // A hidden participant, or the event overtook participant-joined.
          info = { identity: track.participantIdentity, sid: track.participantSid, tracks: [] };
          this.participants.set(info.identity, info);
        }
        info.tracks = info.tracks.filter((t) => t.producerId !== track.producerId).concat([{ ...track }]);
        this.emit('trackPublished', track);
        this._subscribe(session, track);
        return;
      }
      case 'track-unpublished': {
        if (msg.participantIdentity === this.identity) {
          this._removeLocalTrack(msg.producerId);
          return;
        }
        const info = this.participants.get(msg.participantIdentity);
        const track = info?.tracks.find((t) => t.producerId === msg.producerId) ?? null;
        if (info) info.tracks = info.tracks.filter((t) => t.producerId !== msg.producerId);
        const sub = session.subs.get(msg.producerId);
        if (sub) this._closeSubscription(session, sub);
        this.emit('trackUnpublished', {
          participantIdentity: msg.participantIdentity,
          producerId: msg.producerId,
          trackSid: msg.trackSid,
          track,
        });
        return;
      }
      case 'track-unsubscribed': {
        // By consumer: a late reply about an old consumer of this producer
        // must not close a newer subscription to it.
        const sub = msg.consumerId
          ? [...session.subs.values()].find((s) => s.consumerId === msg.consumerId)
          : session.subs.get(msg.producerId);
        if (sub) this._closeSubscription(session, sub);
        return;
      }
      case 'track-muted':
      case 'track-unmuted': {
        const muted = msg.type === 'track-muted';
        const local = msg.participantIdentity === this.identity;
        let track;
        if (local) {
          track = this.participant.tracks.find((t) => t.producerId === msg.producerId);
        } else {
          track = this._findTrack(msg.producerId);
        }
        if (track) track.muted = muted;
        if (local) {
          // A server-side mute (the server API's MutePublishedTrack): stop
          // or resume sending, as the publisher's own mute() would.
          const pub = this._publications.find((p) => p.producerId === msg.producerId);
          if (pub && pub.muted !== muted) {
            pub.muted = muted;
            const producer = pub.producer;
            if (producer && !producer.closed) {
              if (muted) producer.pause();
              else producer.resume();
            }
          }
        }
        const sub = session.subs.get(msg.producerId) ?? null;
        if (sub) sub.muted = muted;
        this.emit(muted ? 'trackMuted' : 'trackUnmuted', {
          participantIdentity: msg.participantIdentity,
          producerId: msg.producerId,
          trackSid: msg.trackSid,
          source: track?.source ?? sub?.source,
          kind: track?.kind ?? sub?.kind,
          local,
          subscription: sub,
        });
        return;
      }
      case 'subscribed-layers': {
        // Dynacast: encode only the layers someone watches.
        const pub = this._publications.find((p) => p.producerId === msg.producerId);
        if (pub && this._options.dynacast !== false) this._applySubscribedLayers(pub, msg.layers ?? []);
        return;
      }
      case 'stream-state-changed': {
        const sub = [...session.subs.values()].find((s) => s.consumerId === msg.consumerId);
        if (sub) {
          sub.streamState = msg.state;
          this.emit('streamStateChanged', { subscription: sub, state: msg.state, reason: msg.reason });
        }
        return;
      }
      case 'consumer-layers-changed': {
        const sub = [...session.subs.values()].find((s) => s.consumerId === msg.consumerId);
        if (sub) {
          sub.layers = { spatialLayer: msg.spatialLayer, temporalLayer: msg.temporalLayer };
          this.emit('layersChanged', { subscription: sub, ...sub.layers });
        }
        return;
      }
      case 'data':
        // `encoding: "base64"`: bytes (the server API's SendData with a
        // binary payload), handed over as a Uint8Array.
        this.emit('data', {
          participantIdentity: msg.participantIdentity,
          data: msg.encoding === 'base64' ? base64ToBytes(msg.data) : msg.data,
          kind: msg.kind,
          topic: msg.topic,
        });
        return;
      case 'participant-updated': {
        const info = msg.participant;
        if (!info) return;
        if (info.identity === this.identity) {
          const before = this.participant?.permission;
          this.participant = { ...this.participant, ...info, tracks: this.participant?.tracks ?? info.tracks ?? [] };
          this.emit('participantUpdated', { participant: this.participant, local: true });
          if (before && before.canSubscribe === false && info.permission?.canSubscribe) {
            for (const p of this.participants.values()) for (const t of p.tracks ?? []) this._subscribe(session, t);
          }
          return;
        }
        const known = this.participants.get(info.identity);
        const merged = { ...known, ...info, tracks: known?.tracks ?? info.tracks ?? [] };
        this.participants.set(info.identity, merged);
        this.emit('participantUpdated', { participant: merged, local: false });
        return;
      }
      case 'connection-quality': {
        // excellent | good | poor | lost, per participant (this one
        // included): one evaluation's changes in one message.
        const updates = Array.isArray(msg.updates) ? msg.updates : [];
        for (const u of updates) {
          if (typeof u?.participantIdentity !== 'string') continue;
          this.connectionQuality.set(u.participantIdentity, u.quality);
          this.emit('connectionQuality', {
            participantIdentity: u.participantIdentity,
            quality: u.quality,
            local: u.participantIdentity === this.identity,
          });
        }
        return;
      }
      case 'active-speakers': {
        // Who speaks now, loudest first; [] when nobody does.
        const speakers = Array.isArray(msg.speakers) ? msg.speakers : [];
        this.activeSpeakers = speakers;
        this.emit('activeSpeakers', speakers);
        return;
      }
      case 'room-updated':
        if (this.room) this.room.metadata = msg.metadata;
        this.emit('roomUpdated', { name: msg.name, sid: msg.sid, metadata: msg.metadata });
        return;
      case 'update-subscriptions': {
        // The server API (UpdateSubscriptions) asks this client to receive
        // or drop these tracks.
        const ids = Array.isArray(msg.producerIds) ? msg.producerIds : [];
        for (const producerId of ids) {
          if (msg.subscribe) {
            const info = this._findTrack(producerId);
            if (info) this._subscribe(session, info, { force: true });
          } else {
            const sub = session.subs.get(producerId);
            if (!sub) continue;
            const consumerId = sub.consumerId;
            this._closeSubscription(session, sub);
            if (consumerId) this._request(session, { type: 'unsubscribe', consumerId }).catch(() => {});
          }
        }
        this.emit('subscriptionsUpdated', { trackSids: msg.trackSids ?? [], producerIds: ids, subscribe: Boolean(msg.subscribe) });
        return;
      }
      case 'token-refresh':
        // The server's fresh token (same grants, later expiry): the next
        // reconnect uses it, so a call outlives the token it started with.
        if (typeof msg.token === 'string' && msg.token) {
          this._token = msg.token;
          this._url = socketUrl(this._baseUrl, msg.token);
          this.emit('tokenRefreshed', { token: msg.token });
        }
        return;
      case 'disconnected':
        session.disconnectReason = msg.reason;
        return;
      case 'transport-closed': {
        const ours = session.transports.find((t) => t.id === msg.transportId);
        if (ours && !this._leaving) {
          this._emitError(new PulseWaveError(`server closed transport ${msg.transportId}: ${msg.reason}`, 'transport-closed'), 'transport');
          this._restartSession(session, 'transport-closed');
        }
        return;
      }
      case 'error':
        if (msg.requestId === undefined || msg.requestId === null) {
          this._emitError(new PulseWaveError(msg.message ?? `error ${msg.code}`, msg.code), 'server');
        }
        return;
      default:
        // Replies (already resolved) and messages this client does not use.
        return;
    }
  }

  /**
   * Dynacast: applies the layers the server last asked for. Requests are
   * applied one at a time per publication, each against the encodings the
   * one before set, and a burst (as a resume replays: all off, then all on)
   * collapses to its latest request, so the outcome never depends on how
   * the browser orders `setParameters` calls still in flight. (Chromium
   * 156 already applied an unserialized off/on burst in order; this does
   * not rely on it.)
   */
  _applySubscribedLayers(pub, layers) {
    pub.wantedLayers = layers;
    if (!pub.applyingLayers) {
      pub.applyingLayers = (async () => {
        try {
          while (pub.wantedLayers) {
            const next = pub.wantedLayers;
            pub.wantedLayers = null;
            await this._setSubscribedLayers(pub, next);
          }
        } finally {
          pub.applyingLayers = null;
        }
      })();
    }
    return pub.applyingLayers;
  }

  async _setSubscribedLayers(pub, layers) {
    const producer = pub.producer;
    const sender = producer?.rtpSender;
    if (!sender || producer.closed) return;
    const params = sender.getParameters();
    // One encoding: nothing to switch (stopping a whole track is a mute).
    if (!params.encodings || params.encodings.length < 2) return;
    let changed = false;
    params.encodings.forEach((enc, i) => {
      const wanted = layers.find((l) => (l.rid && enc.rid ? l.rid === enc.rid : l.spatialLayer === i));
      if (wanted && enc.active !== wanted.active) {
        enc.active = wanted.active;
        changed = true;
      }
    });
    if (!changed) return;
    try {
      await sender.setParameters(params);
      pub.activeLayers = params.encodings.map((e) => e.active);
      this.emit('subscribedLayers', { publication: pub, layers });
    } catch (err) {
      this._emitError(err, 'dynacast', { producerId: pub.producerId });
    }
  }


  _emitError(err, operation, details = {}) {
    if (err && typeof err === 'object') {
      err.operation ??= operation;
      Object.assign(err, details);
    }
    this.emit('error', err);
  }

  /** Drops the session on purpose (a transport failed) and reconnects. */
  _restartSession(session, reason) {
    if (session.closed) return;
    this._transportFailures += 1;
    if (this._transportFailures > 3) {
      this._teardown(session, reason);
      this._finish('transport-failed');
      return;
    }
    try {
      session.ws.close(4002, reason);
    } catch {
      // ignore
    }
    // Media broke, not just the socket: a resume would keep the broken transports.
    session.noResume = true;
    this._onSessionLost(session, { code: 4002, reason });
  }

  // -------------------------------------------------------------- transports

  _getSendTransport(session) {
    if (!session.sendTransport) {
      session.sendTransport = this._createTransport(session, 'send');
      session.sendTransport.catch(() => {
        session.sendTransport = null; // allow a retry
      });
    }
    return session.sendTransport;
  }

  _getRecvTransport(session) {
    if (!session.recvTransport) {
      session.recvTransport = this._createTransport(session, 'recv');
      session.recvTransport.catch(() => {
        session.recvTransport = null;
      });
    }
    return session.recvTransport;
  }

  async _createTransport(session, direction) {
    const device = session.device;
    const msg = {
      type: 'create-transport',
      direction,
      sctpCapabilities: device.sctpCapabilities ?? DEFAULT_SCTP_CAPABILITIES,
    };
    const reply = await this._request(session, msg);
    if (session.closed) throw new PulseWaveError('connection closed', ClientErrorCode.ConnectionClosed);
    const t = reply.transport;
    const options = {
      id: t.id,
      iceParameters: t.iceParameters,
      iceCandidates: t.iceCandidates,
      dtlsParameters: t.dtlsParameters,
      sctpParameters: t.sctpParameters,
      iceServers: t.iceServers ?? this.iceServers,
      appData: { direction },
    };
    if (this._options.iceTransportPolicy) options.iceTransportPolicy = this._options.iceTransportPolicy;
    const transport = direction === 'send' ? device.createSendTransport(options) : device.createRecvTransport(options);
    session.transports.push(transport);

    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this._request(session, { type: 'connect-transport', transportId: transport.id, dtlsParameters }).then(
        () => callback(),
        (err) => errback(err),
      );
    });
    if (direction === 'send') {
      transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
        const publish = { type: 'publish', transportId: transport.id, kind, rtpParameters, source: appData.source };
        if (appData.name) publish.name = appData.name;
        if (appData.muted) publish.muted = true;
        this._request(session, publish).then(
          (reply) => {
            session.published.set(reply.producerId, reply.track ?? null);
            callback({ id: reply.producerId });
          },
          (err) => errback(err),
        );
      });
    }
    transport.on('connectionstatechange', (state) => {
      if (session.closed) return;
      this.emit('transportState', { direction, state, transportId: transport.id });
      if (state === 'connected') {
        this._transportFailures = 0;
        const restarted = (transport.appData.iceRestarts ?? 0) > 0;
        transport.appData.iceRestarts = 0;
        // Back after an ICE restart: a sibling transport still on another
        // local address is on a path the network change took away, and
        // would only notice when its own consent checks fail, seconds later.
        if (restarted) this._restartStaleSiblings(session, transport).catch(() => {});
      }
      // A network change or a cut: restart ICE on the same transport
      // (tracks, consumers and ids stay); only when that keeps failing,
      // rebuild the whole session.
      if (state === 'disconnected' || state === 'failed') this._restartIce(session, transport, direction, state);
    });
    return transport;
  }

  /**
   * Looks at the selected path of every connected transport (every
   * STALL_CHECK_MS): one that has received nothing for `stallRestartMs`
   * while a consent check the browser sent on it went unanswered for
   * STALL_UNANSWERED_MS, or for STALL_DISCARDING_MS while the browser
   * discards what it sends on it (its local address is gone), is dead (a
   * network change took its local address, or the link is cut), and
   * restarts ICE at once, with every sibling transport on the same local
   * address that has been silent for STALL_SIBLING_SILENT_MS (they share
   * its fate; each would otherwise wait for a consent check of its own).
   * The browser only says `disconnected` seconds later (about 5 s after an
   * address change in Chromium). A quiet but live path (every consumer
   * paused, a muted publisher) answers its consent checks and is left
   * alone. Once per path: a selected pair that stalled must receive again
   * before it can stall again (the ICE restart it started, or the
   * browser's own `disconnected`/`failed`, takes it from there).
   */
  async _checkStalls(session) {
    if (session.closed || session.resuming || session.checkingStalls) return;
    session.checkingStalls = true;
    try {
      const looked = [];
      for (const transport of [...session.transports]) {
        if (session.closed || session.resuming) return;
        const app = transport.appData;
        if (transport.closed || transport.connectionState !== 'connected' || app.restartingIce) {
          app.stall = null;
          continue;
        }
        const stats = await transport.getStats();
        const pair = selectedPair(stats);
        if (!pair) {
          app.stall = null;
          continue;
        }
        const now = Date.now();
        const local = stats.get(pair.localCandidateId);
        const bytes = pair.bytesReceived ?? 0;
        const requests = pair.requestsSent ?? 0;
        const responses = pair.responsesReceived ?? 0;
        const discarded = pair.packetsDiscardedOnSend ?? 0;
        const st = app.stall;
        if (!st || st.pairId !== pair.id || bytes !== st.bytes || responses !== st.responses) {
          // Something arrived (or a new path): alive. A path that received
          // since its stall may stall again.
          if (st && st.pairId === pair.id) app.stalledPair = null;
          app.stall = { pairId: pair.id, bytes, responses, requests, discarded, since: now, unansweredSince: null, discardingSince: null };
          continue;
        }
        if (requests > st.requests && st.unansweredSince === null) st.unansweredSince = now;
        if (discarded > st.discarded && st.discardingSince === null) st.discardingSince = now;
        st.requests = requests;
        st.discarded = discarded;
        const silentMs = pairSilentMs(pair, now - st.since);
        looked.push({ transport, pairId: pair.id, local: local ? (local.address ?? local.ip ?? null) : null, silentMs });
        const unanswered = st.unansweredSince !== null && now - st.unansweredSince >= STALL_UNANSWERED_MS && silentMs >= this._options.stallRestartMs;
        const discarding = st.discardingSince !== null && silentMs >= Math.min(STALL_DISCARDING_MS, this._options.stallRestartMs);
        if (app.stalledPair !== pair.id && (unanswered || discarding)) {
          looked.at(-1).dead = true;
        }
      }
      const dead = looked.filter((l) => l.dead);
      for (const l of looked) {
        const siblingOfDead = dead.some((d) => d.local !== null && d.local === l.local) && l.silentMs >= STALL_SIBLING_SILENT_MS;
        if (!l.dead && !(siblingOfDead && l.transport.appData.stalledPair !== l.pairId)) continue;
        if (session.closed || session.resuming || l.transport.closed) return;
        // One restart per dead path: while that restart runs the browser
        // may keep the old pair selected (and the transport `connected`);
        // restarting again would cut the restart short every time.
        l.transport.appData.stalledPair = l.pairId;
        this.emit('transportStalled', { direction: l.transport.direction, transportId: l.transport.id, silentMs: l.silentMs });
        this._restartIce(session, l.transport, l.transport.direction, 'disconnected');
      }
    } finally {
      session.checkingStalls = false;
    }
  }

  /**
   * After `transport` came back by an ICE restart, restarts ICE at once on
   * every other connected transport of the session whose selected
   * candidate pair uses another local address (the network changed under
   * both; only one noticed yet).
   */
  async _restartStaleSiblings(session, transport) {
    const local = await selectedLocalAddress(transport);
    if (!local) return;
    for (const other of session.transports) {
      if (other === transport || other.closed || session.closed) continue;
      if (other.connectionState !== 'connected' || other.appData.restartingIce) continue;
      const theirs = await selectedLocalAddress(other);
      if (theirs && theirs !== local && !session.closed && !other.closed) {
        this._restartIce(session, other, other.direction, 'disconnected');
      }
    }
  }

  /**
   * Asks the server for new ICE parameters (`restart-ice`) and hands them
   * to mediasoup-client's `transport.restartIce({iceParameters})`, after
   * the fresh `iceServers` of the reply (the embedded TURN server's
   * credentials are short-lived: those of `transport-created` may have
   * expired) to `transport.updateIceServers({iceServers})`. At most
   * MAX_ICE_RESTARTS attempts until the transport connects again; past
   * them, a `failed` transport rebuilds the session.
   */
  async _restartIce(session, transport, direction, state) {
    const app = transport.appData;
    if (app.restartingIce) return;
    // No socket to ask on while resuming: a successful resume restarts ICE on the transports
    // still down (_resumeSession); a failed one rebuilds everything.
    if (session.resuming) return;
    const giveUp = () => {
      if (state !== 'failed' || session.closed) return;
      this._emitError(new PulseWaveError(`${direction} transport failed (ICE/DTLS)`, 'transport-failed'), 'transport');
      this._restartSession(session, 'transport-failed');
    };
    if ((app.iceRestarts ?? 0) >= MAX_ICE_RESTARTS) {
      giveUp();
      return;
    }
    app.restartingIce = true;
    app.iceRestarts = (app.iceRestarts ?? 0) + 1;
    try {
      const reply = await this._request(session, { type: 'restart-ice', transportId: transport.id });

      if (session.closed || transport.closed) return;
      // Fresh TURN credentials first, so the restart gathers relay candidates with them
      // (older servers send none: the transport keeps its servers).
      if (Array.isArray(reply.iceServers) && reply.iceServers.length > 0) {
        await transport.updateIceServers({ iceServers: reply.iceServers });
        if (session.closed || transport.closed) return;
      }
      await transport.restartIce({ iceParameters: reply.iceParameters });
      this.emit('iceRestarted', { direction, transportId: transport.id });
    } catch (err) {
      if (!session.closed && !transport.closed) {
        this._emitError(err, 'restart-ice');
        giveUp();
      }
    } finally {
      app.restartingIce = false;
    }
    // A `failed` that came while the restart ran is acted on now.
    if (!session.closed && !transport.closed && transport.connectionState === 'failed') {
      setTimeout(() => {
        if (!session.closed && !transport.closed && transport.connectionState === 'failed') {
          this._restartIce(session, transport, direction, 'failed');
        }
      }, ICE_RESTART_RETRY_MS);
    }
  }

  // ------------------------------------------------------------- publishing

  async _produce(session, pub) {
    const transport = await this._getSendTransport(session);
    if (session.closed) throw new PulseWaveError('connection closed', ClientErrorCode.ConnectionClosed);
    const { encodings, codecOptions, codec } = pub._produceOptions;
    const producer = await transport.produce({
      track: pub.track,
      ...(encodings ? { encodings } : {}),
      ...(codecOptions ? { codecOptions } : {}),
      ...(codec ? { codec } : {}),
      stopTracks: false, // the track must survive a reconnect; the app owns it
      disableTrackOnPause: true,
      zeroRtpOnPause: true, // nothing at all is sent while muted
      appData: { source: pub.source, name: pub.name, muted: pub.muted },
    });
    pub.producer = producer;
    pub.producerId = producer.id;
    pub.info = session.published.get(producer.id) ?? null;
    if (pub.muted) producer.pause();
    if (pub.info && this.participant) {
      this.participant.tracks = this.participant.tracks
        .filter((t) => t.producerId !== producer.id)
        .concat([{ ...pub.info, muted: pub.muted }]);
    }
    producer.on('trackended', () => {
      if (pub.producer !== producer || pub.closed) return;
      this.unpublish(pub)
        .catch((err) => this._emitError(err, 'unpublish', { source: pub.source }))
        .finally(() => this.emit('localTrackEnded', pub));
    });
    return producer;
  }

  async _setMuted(pub, muted) {
    if (!pub || pub.closed) throw new PulseWaveError('publication is closed', 'invalid-state');
    pub.muted = muted;
    const producer = pub.producer;
    if (producer && !producer.closed) {
      if (muted) producer.pause();
      else producer.resume();
    } else {
      pub.track.enabled = !muted; // applied to the producer on republish
    }
    const session = this._session;
    if (!producer || producer.closed || !session?.established || session.closed) return; // sent on republish
    await this._request(session, { type: muted ? 'mute' : 'unmute', producerId: pub.producerId });
  }

  // ------------------------------------------------------------ subscribing

  async _subscribe(session, info, { force = false } = {}) {
    if ((!this._options.autoSubscribe && !force) || session.closed || !info?.producerId) return;
    if (session.subs.has(info.producerId)) return;
    if (this.participant?.permission && this.participant.permission.canSubscribe === false) return;
    const sub = new RemoteTrack(info);
    session.subs.set(info.producerId, sub);
    try {
      const transport = await this._getRecvTransport(session);
      if (sub.closed) return;
      const reply = await this._request(session, {
        type: 'subscribe',
        producerId: info.producerId,
        rtpCapabilities: session.device.recvRtpCapabilities,
        transportId: transport.id,
      });
      sub.consumerId = reply.consumerId;
      if (sub.closed) {
        this._request(session, { type: 'unsubscribe', consumerId: reply.consumerId }).catch(() => {});
        return;
      }
      const consumer = await transport.consume({
        id: reply.consumerId,
        producerId: reply.producerId ?? info.producerId,
        kind: reply.kind ?? info.kind,
        rtpParameters: reply.rtpParameters,
        appData: { participantIdentity: sub.participantIdentity, source: sub.source },
      });
      if (sub.closed) {
        consumer.close();
        return;
      }
      sub.consumer = consumer;
      await this._request(session, { type: 'resume-consumer', consumerId: reply.consumerId });
      if (sub.closed) return;
      sub.subscribed = true;
      this.emit('trackSubscribed', sub);
    } catch (err) {
      const wasClosed = sub.closed;
      if (session.subs.get(info.producerId) === sub) session.subs.delete(info.producerId);
      sub.closed = true;
      sub.consumer?.close();
      // The track may have gone away meanwhile; that is no error.
      if (!session.closed && !wasClosed && err.code !== ErrorCode.ProducerNotFound) {
        this._emitError(err, 'subscribe', { producerId: info.producerId, participantIdentity: info.participantIdentity });
      }
    }
  }

  _closeSubscription(session, sub) {
    if (session.subs.get(sub.producerId) === sub) session.subs.delete(sub.producerId);
    if (sub.closed) return;
    sub.closed = true;
    sub.consumer?.close();
    if (sub.subscribed) {
      sub.subscribed = false;
      this.emit('trackUnsubscribed', sub);
    }
  }
}

function roomFromToken(token) {
  try {
    const room = decodeToken(token)?.video?.room;
    if (room) return room;
  } catch {
    // fall through
  }
  throw new TypeError('options.room is required when the token names no video.room');
}

/** Bytes of a base64 string (an empty array for anything else). */
function base64ToBytes(text) {
  if (typeof text !== 'string') return new Uint8Array(0);
  let binary;
  try {
    binary = atob(text);
  } catch {
    return new Uint8Array(0);
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function socketUrl(url, token) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError(`unsupported URL scheme in ${url}`);
  u.searchParams.set('token', token);
  return u.toString();
}
