//! One WebRTC transport: a str0m `Rtc` in RTP mode, ICE-lite, DTLS server.

use crate::owners::Owner;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use std::time::Instant;

use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate, IceParameters, SctpParameters,
    TransportDirection, TransportOptions,
};
use pulsewave_protocol::{TransportId, random_string_from};
use rand::rngs::StdRng;
use str0m::bwe::Bitrate;
use str0m::channel::ChannelId;
use str0m::config::Fingerprint;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Pt};
use str0m::net::TcpType;
use str0m::rtp::Extension;
use str0m::{Candidate, Event as RtcEvent, IceCreds, Output, Rtc, RtcConfig};

use crate::bucket::TokenBucket;
use crate::endpoint::Protocol;
use crate::error::Error;
use crate::event::{CloseReason, Transmit};
use crate::glue;
use crate::ortc::is_rtx_mime_type;
use crate::timers::Timers;

/// Key of a transport in the room's slab.
pub(crate) type TransportKey = usize;

/// Most remote addresses a transport is reachable from at once. ICE-lite
/// answers whatever pair the client nominates; a network change adds one;
/// the oldest is forgotten past this.
pub(crate) const MAX_REMOTE_ADDRS: usize = 4;

/// What a room owes its endpoint's demultiplexer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DemuxChange {
    /// STUN requests to `ufrag` go to the transport.
    Ufrag(String, TransportKey),
    /// Datagrams from this address (over this protocol) go to the transport.
    Bind(Protocol, SocketAddr, TransportKey),
    /// Forget this address.
    Unbind(Protocol, SocketAddr),
    /// Forget the ufrag.
    ForgetUfrag(String),
}

/// What draining transports produces, kept by the room until its driver
/// polls it: datagrams, str0m events to process, transports that failed,
/// timers, transports due at the next timeout input, demux changes.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) rtc_events: VecDeque<(TransportKey, RtcEvent)>,
    pub(crate) failed: Vec<TransportKey>,
    pub(crate) timers: Timers<Timer>,
    pub(crate) due: Vec<TransportKey>,
    pub(crate) demux: VecDeque<DemuxChange>,
    /// Receive transports whose allocation must run before the input ends.
    pub(crate) allocate: Vec<TransportKey>,
}

/// What a room timer wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A transport: its `Rtc` timeout or its ICE deadline.
    Transport(TransportKey),
    /// A producer whose keyframe request waits for the throttle.
    Keyframe(usize),
    /// A receive transport's periodic allocation.
    Allocate(TransportKey),
    /// A producer whose dynacast downgrade waits out its delay.
    Dynacast(usize),
    /// The room's active speaker evaluation.
    Speakers,
    /// The room's connection quality evaluation.
    Quality,
}

impl Outputs {
    /// Marks a transport failed (once).
    pub(crate) fn fail(&mut self, key: TransportKey, t: &mut Transport, reason: CloseReason) {
        if t.failed.is_none() {
            t.failed = Some(reason);
            self.failed.push(key);
        }
    }

    /// Asks for an allocation of a receive transport before the input
    /// ends.
    pub(crate) fn want_allocation(&mut self, key: TransportKey, t: &mut Transport) {
        if !t.bwe.pending {
            t.bwe.pending = true;
            self.allocate.push(key);
        }
    }

    /// Marks a transport due at the next timeout input.
    pub(crate) fn mark_due(&mut self, key: TransportKey, t: &mut Transport) {
        if !t.due {
            t.due = true;
            self.due.push(key);
        }
    }

    /// Makes sure the timers wake the transport at its next deadline.
    pub(crate) fn arm(&mut self, key: TransportKey, t: &mut Transport, ice_timeout: Duration) {
        let wakeup = match t.ice_deadline(ice_timeout) {
            Some(d) => d.min(t.next_timeout),
            None => t.next_timeout,
        };
        if t.armed.is_none_or(|a| wakeup < a) {
            t.armed = Some(wakeup);
            self.timers.push(wakeup, Timer::Transport(key));
        }
    }
}

/// The SCTP port mediasoup announces.
const SCTP_PORT: u16 = 5000;
/// SCTP streams offered in each direction.
const SCTP_STREAMS: u16 = 1024;

/// A payload type this transport knows, with its codec.
#[derive(Debug, Clone)]
pub(crate) struct KnownPt {
    pub(crate) pt: u8,
    pub(crate) rtx: Option<u8>,
    pub(crate) mime_type: String,
}

pub(crate) struct Transport {
    pub(crate) id: TransportId,
    pub(crate) owner: Owner,
    pub(crate) direction: TransportDirection,
    pub(crate) rtc: Rtc,
    pub(crate) local_ufrag: String,
    /// Payload types in the `Rtc`'s table: the router's (receive
    /// transports), or those the sender's producers declared (send).
    pub(crate) pts: Vec<KnownPt>,
    /// Header extensions `(id, uri)` in the `Rtc`'s map, likewise.
    pub(crate) extensions: Vec<(u8, String)>,
    pub(crate) remote_ufrag: Option<String>,
    /// An ICE restart happened and the new path has not shown itself yet:
    /// the bandwidth estimate starts again when it does.
    pub(crate) estimate_restart_pending: bool,
    /// An ICE restart happened and media still goes where it went before:
    /// the estimate starts again (from this many bits per second) when
    /// RTP or RTCP first leaves for another address (see [`drain`]).
    pub(crate) estimate_restart_on_move: Option<u64>,
    /// Where this transport's RTP and RTCP went last.
    pub(crate) media_destination: Option<SocketAddr>,
    /// `connect-transport` done (DTLS started).
    pub(crate) dtls_started: bool,
    pub(crate) dtls_started_at: Option<Instant>,
    /// ICE and DTLS up.
    pub(crate) connected: bool,
    pub(crate) last_received: Option<Instant>,
    /// When the `Rtc` wants its next timeout input.
    pub(crate) next_timeout: Instant,
    /// The earliest deadline of this transport in the room's timers.
    pub(crate) armed: Option<Instant>,
    /// In the room's list of transports to poll at the next timeout input
    /// (forwarded packets wait there).
    pub(crate) due: bool,
    /// The remote addresses authenticated STUN requests came from, oldest
    /// first (at most [`MAX_REMOTE_ADDRS`]): where the endpoint routes
    /// datagrams from.
    pub(crate) remote_addrs: Vec<(Protocol, SocketAddr)>,
    /// Media section ids in use (producers' mids, or consumers' mids).
    pub(crate) mids: Vec<(String, usize)>,
    pub(crate) next_mid: u32,
    /// Receive ssrcs (media and RTX) of this send transport's producers,
    /// declared or learned from packets: the forwarding path's index.
    pub(crate) rx_ssrcs: HashMap<u32, RxSsrc>,
    /// SCTP streams in use: the data producers (send transport) or data
    /// consumers (receive transport) on this transport.
    pub(crate) sctp_streams: Vec<SctpStream>,
    /// Where the search for a data consumer's SCTP stream id starts: ids
    /// rotate (mediasoup's `getNextSctpStreamId`), so a freed id is not
    /// given again while its stream reset may still be on the way.
    pub(crate) next_sctp_stream: u16,
    /// Incoming media budget (send transports), in bytes.
    pub(crate) ingress: TokenBucket,
    /// Outgoing media budget (receive transports), in bytes.
    pub(crate) egress: TokenBucket,
    /// Set when the transport failed or must close.
    pub(crate) failed: Option<crate::event::CloseReason>,
    /// Bandwidth estimation and allocation (receive transports).
    pub(crate) bwe: BweState,
    /// The worst loss (0 to 1) the peer reported in RTCP receiver reports
    /// on what this transport sent it, since the last quality evaluation.
    pub(crate) remote_loss: Option<f32>,
    /// The last round-trip time measured on this transport (from the RTCP
    /// receiver reports on what it sends).
    pub(crate) rtt: Option<Duration>,
}

/// A receive transport's bandwidth estimate and allocator state.
#[derive(Debug, Clone, Default)]
pub(crate) struct BweState {
    /// The transport-wide-cc estimate, bits per second.
    pub(crate) estimate: Option<u64>,
    /// The last REMB from the subscriber, bits per second.
    pub(crate) remb: Option<u64>,
    /// Whether an estimate came from feedback (a REMB, or transport-wide-cc
    /// moving the estimate off its configured start): before that the
    /// estimate is a guess, which pauses nobody.
    pub(crate) measured: bool,
    /// An allocation is queued for this input.
    pub(crate) pending: bool,
    /// When the periodic allocation is armed.
    pub(crate) timer: Option<Instant>,
    /// No layer goes up before this (after a downgrade for congestion).
    pub(crate) hold_until: Option<Instant>,
    /// How long the next downgrade holds layers down: doubles when a
    /// downgrade follows an upgrade closely (the upgrade did not fit),
    /// back to the base after a stable while.
    pub(crate) hold_for: Option<std::time::Duration>,
    /// When a layer last went up, and when one last went down.
    pub(crate) last_up: Option<Instant>,
    pub(crate) last_down: Option<Instant>,
    /// Probing toward `desired` is asked of str0m by raising it: this
    /// flips on every allocation run while the transport wants more than
    /// the estimate, and a probe fires on each raise.
    pub(crate) nudge: bool,
    /// The next probe is not asked before this; the wait doubles after
    /// each probe that did not let a layer go up.
    pub(crate) next_probe: Option<Instant>,
    pub(crate) probe_every: Option<std::time::Duration>,
    /// Padding fills the link up to the estimate until then: the
    /// estimator only raises its estimate a little above what it sees
    /// acknowledged.
    pub(crate) probe_until: Option<Instant>,
    /// The estimate when the last probe started.
    pub(crate) probe_from: Option<u64>,
    /// What the last allocation gave (video and audio), bits per second.
    pub(crate) allocated: u64,
    /// The estimate the last allocation divided.
    pub(crate) previous: Option<u64>,
    /// The `(minimum, desired)` last given to str0m's estimator.
    pub(crate) configured: Option<(u64, u64)>,
}

impl BweState {
    /// The estimate the allocator divides: transport-wide-cc, or REMB from
    /// a subscriber that sends it, the lower of both when there are both;
    /// `None` when there is neither yet.
    pub(crate) fn available(&self) -> Option<u64> {
        match (self.estimate, self.remb) {
            (Some(e), Some(r)) => Some(e.min(r)),
            (e, r) => e.or(r),
        }
    }
}

/// What a receive ssrc of a send transport is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RxSsrc {
    pub(crate) producer: usize,
    /// The producer's layer (encoding) index; `None` for an RTX ssrc.
    pub(crate) layer: Option<usize>,
}

/// One SCTP stream of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SctpStream {
    pub(crate) stream_id: u16,
    pub(crate) channel: ChannelId,
    /// The data producer (send transport) or data consumer (receive).
    pub(crate) key: usize,
}

/// A byte budget for a bitrate in bits per second, with one second of
/// burst.
fn bitrate_bucket(bits_per_second: u64) -> TokenBucket {
    let bytes = bits_per_second as f64 / 8.0;
    TokenBucket::new(bytes, bytes)
}

/// What the room needs to build a transport.
pub(crate) struct TransportSpec<'a> {
    pub(crate) owner: Owner,
    pub(crate) direction: TransportDirection,
    /// The router's capabilities: the payload types and extension ids of a
    /// receive transport.
    pub(crate) router_caps: &'a RtpCapabilities,
    pub(crate) local_addr: SocketAddr,
    /// The passive TCP candidate's address, if any.
    pub(crate) tcp_addr: Option<SocketAddr>,
    /// The second family's UDP candidate (dual stack), if any.
    pub(crate) local_addr6: Option<SocketAddr>,
    /// The second family's passive TCP candidate, if any.
    pub(crate) tcp_addr6: Option<SocketAddr>,
    pub(crate) sctp_max_message_size: u32,
    /// The room's seeded generator (ufrag, password, id).
    pub(crate) rng: &'a mut StdRng,
    pub(crate) max_incoming_bitrate: u64,
    pub(crate) max_outgoing_bitrate: u64,
    /// The bandwidth estimate a receive transport starts from.
    pub(crate) initial_bitrate: u64,
    /// Whether receive transports estimate their bandwidth.
    pub(crate) bandwidth_estimation: bool,
}

/// The router's payload-type table and extension map (receive
/// transports), as str0m wants them.
fn configure_router(
    config: RtcConfig,
    caps: &RtpCapabilities,
) -> (RtcConfig, Vec<KnownPt>, Vec<(u8, String)>) {
    let pts = glue::payload_types(caps);
    let extensions = glue::header_extensions(caps);
    let config = glue::configure(config, &pts, &extensions);
    let known = pts
        .into_iter()
        .map(|p| KnownPt {
            pt: p.pt,
            rtx: p.rtx,
            mime_type: p.mime_type,
        })
        .collect();
    let mut ids: Vec<(u8, String)> = Vec::new();
    for e in extensions {
        if !ids.iter().any(|(id, _)| *id == e.id) {
            ids.push((e.id, e.uri));
        }
    }
    (config, known, ids)
}

/// A payload type a producer's parameters add to a send transport.
struct NewPt {
    known: KnownPt,
    codec: Codec,
    clock: Frequency,
    channels: Option<u8>,
    format: FormatParams,
}

impl Transport {
    pub(crate) fn new(
        now: Instant,
        spec: TransportSpec<'_>,
    ) -> Result<(Self, TransportOptions), Error> {
        // Unique across the endpoint: its demux routes STUN requests by it.
        let local_ufrag = random_string_from(spec.rng, 24);
        let password = random_string_from(spec.rng, 32);
        let config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: local_ufrag.clone(),
                pass: password.clone(),
            })
            .set_sctp_max_message_size(spec.sctp_max_message_size);
        // A receive transport sends with the router's payload types and
        // extension ids. A send transport starts with none: each `produce`
        // brings the sender's own (see `learn_sender_parameters`), and a
        // browser picks them per connection in the order tracks are added.
        let (config, pts, extensions) = match spec.direction {
            // Subscribers' transports estimate their bandwidth from
            // transport-wide-cc feedback (publishers' do not: probing
            // would go toward the browser, which has its own estimator).
            // Receive transports also report their receiver-report loss and
            // round-trip time for the connection quality score
            // (`crate::quality`); send transports send no media, so str0m's
            // stats would have nothing to say there.
            TransportDirection::Recv => configure_router(
                if spec.bandwidth_estimation {
                    config
                        .enable_bwe(Some(Bitrate::bps(spec.initial_bitrate)))
                        .set_bwe_ssrc0_probes(false)
                } else {
                    config
                }
                .set_stats_interval(Some(crate::quality::STATS_INTERVAL)),
                spec.router_caps,
            ),
            TransportDirection::Send => (
                config.clear_codecs().clear_extension_map(),
                Vec::new(),
                Vec::new(),
            ),
        };
        let mut rtc = config.build(now);
        {
            let mut api = rtc.direct_api();
            api.set_ice_controlling(false);
            api.enable_twcc_feedback();
        }
        // One UDP host candidate per address family the driver has a
        // socket of (dual stack: IPv6 beside IPv4), and a passive TCP one
        // beside each when ICE-TCP is on. ICE-lite never connects out: a
        // passive TCP candidate is enough. Its type preference (90,
        // libwebrtc's for non-UDP hosts) is below UDP's 126, so a client
        // that reaches both uses UDP.
        let first = Some((spec.local_addr, spec.tcp_addr, ""));
        let second = spec.local_addr6.map(|udp| (udp, spec.tcp_addr6, "6"));
        let mut ice_candidates = Vec::with_capacity(4);
        for (udp_addr, tcp_addr, suffix) in first.into_iter().chain(second) {
            let udp = Candidate::host(udp_addr, "udp")
                .map_err(|e| Error::InvalidRtpParameters(format!("bad local address: {e}")))?;
            let udp = rtc
                .add_local_candidate(udp)
                .cloned()
                .ok_or_else(|| Error::InvalidRtpParameters("local candidate refused".into()))?;
            let ip = udp_addr.ip().to_string();
            ice_candidates.push(IceCandidate {
                foundation: format!("udpcandidate{suffix}"),
                priority: udp.prio(),
                address: ip.clone(),
                ip,
                port: udp_addr.port(),
                kind: "host".into(),
                protocol: "udp".into(),
                tcp_type: None,
            });
            let Some(tcp_addr) = tcp_addr else { continue };
            let tcp = Candidate::builder()
                .tcp()
                .host(tcp_addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| Error::InvalidRtpParameters(format!("bad TCP address: {e}")))?;
            let tcp = rtc
                .add_local_candidate(tcp)
                .cloned()
                .ok_or_else(|| Error::InvalidRtpParameters("TCP candidate refused".into()))?;
            let ip = tcp_addr.ip().to_string();
            ice_candidates.push(IceCandidate {
                foundation: format!("tcpcandidate{suffix}"),
                priority: tcp.prio(),
                address: ip.clone(),
                ip,
                port: tcp_addr.port(),
                kind: "host".into(),
                protocol: "tcp".into(),
                tcp_type: Some("passive".into()),
            });
        }
        let fingerprint = rtc.direct_api().local_dtls_fingerprint().clone();
        let id = TransportId::generate_from(spec.rng);
        let options = TransportOptions {
            id: id.clone(),
            ice_parameters: IceParameters {
                username_fragment: local_ufrag.clone(),
                password,
                ice_lite: true,
            },
            ice_candidates,
            dtls_parameters: DtlsParameters {
                role: Some(DtlsRole::Auto),
                fingerprints: vec![DtlsFingerprint {
                    algorithm: fingerprint.hash_func.clone(),
                    value: hex_colon(&fingerprint.bytes),
                }],
            },
            sctp_parameters: Some(SctpParameters {
                port: SCTP_PORT,
                os: SCTP_STREAMS,
                mis: SCTP_STREAMS,
                max_message_size: spec.sctp_max_message_size,
            }),
            ice_servers: Vec::new(),
        };
        let transport = Transport {
            id,
            owner: spec.owner,
            direction: spec.direction,
            rtc,
            local_ufrag,
            pts,
            extensions,
            remote_ufrag: None,
            estimate_restart_pending: false,
            estimate_restart_on_move: None,
            media_destination: None,
            dtls_started: false,
            dtls_started_at: None,
            connected: false,
            last_received: None,
            next_timeout: now,
            armed: None,
            due: false,
            remote_addrs: Vec::new(),
            mids: Vec::new(),
            next_mid: 0,
            rx_ssrcs: HashMap::new(),
            sctp_streams: Vec::new(),
            next_sctp_stream: 0,
            ingress: bitrate_bucket(spec.max_incoming_bitrate),
            egress: bitrate_bucket(spec.max_outgoing_bitrate),
            failed: None,
            bwe: BweState::default(),
            remote_loss: None,
            rtt: None,
        };
        Ok((transport, options))
    }

    /// Registers the client's DTLS fingerprint and starts DTLS and SCTP as
    /// server.
    pub(crate) fn connect(&mut self, now: Instant, dtls: &DtlsParameters) -> Result<(), Error> {
        if self.dtls_started {
            return Err(Error::TransportAlreadyConnected(self.id.to_string()));
        }
        if dtls.role == Some(DtlsRole::Server) {
            return Err(Error::InvalidDtlsParameters(
                "the server is always the DTLS server: the client role must be `client` or `auto`"
                    .into(),
            ));
        }
        // mediasoup-client uses the last fingerprint; so do we.
        let fp = dtls
            .fingerprints
            .iter()
            .rev()
            .find(|f| f.algorithm.eq_ignore_ascii_case("sha-256"))
            .ok_or_else(|| Error::InvalidDtlsParameters("no sha-256 fingerprint".into()))?;
        let fingerprint = Fingerprint::from_str(&format!("sha-256 {}", fp.value))
            .map_err(|e| Error::InvalidDtlsParameters(format!("fingerprint: {e}")))?;
        if fingerprint.bytes.len() != 32 {
            return Err(Error::InvalidDtlsParameters(
                "a sha-256 fingerprint has 32 bytes".into(),
            ));
        }
        let mut api = self.rtc.direct_api();
        api.set_remote_fingerprint(fingerprint);
        api.start_dtls(false)
            .map_err(|e| Error::InvalidDtlsParameters(e.to_string()))?;
        api.start_sctp(false);
        self.dtls_started = true;
        self.dtls_started_at = Some(now);
        Ok(())
    }

    /// Adds the payload types and header extension ids of a producer's
    /// parameters to this send transport's tables. They are the sender's
    /// own, as mediasoup-client reports them with each `produce`; mediasoup
    /// takes them as the truth, and so do we. Packets that arrived before
    /// were dropped as unknown; from now on they are parsed with these.
    ///
    /// A payload type the transport already has for another codec is
    /// refused (str0m's table is per transport, as a browser's is per
    /// connection), and then nothing changes. An extension id or URI seen
    /// before with another partner takes the new one, as mediasoup does
    /// with the latest producer's ids. URIs str0m does not parse are left
    /// out.
    pub(crate) fn learn_sender_parameters(&mut self, params: &RtpParameters) -> Result<(), Error> {
        let mut new_pts: Vec<NewPt> = Vec::new();
        for c in &params.codecs {
            if is_rtx_mime_type(&c.mime_type) {
                continue;
            }
            let codec = glue::codec(&c.mime_type).ok_or_else(|| {
                Error::UnsupportedCodec(format!("{} is not supported", c.mime_type))
            })?;
            let clock = Frequency::new(c.clock_rate).ok_or_else(|| {
                Error::InvalidRtpParameters(format!(
                    "clock rate {} of {}",
                    c.clock_rate, c.mime_type
                ))
            })?;
            let rtx = params
                .codecs
                .iter()
                .find(|r| {
                    is_rtx_mime_type(&r.mime_type)
                        && r.parameters.get("apt").and_then(|v| v.as_int())
                            == Some(i64::from(c.payload_type))
                })
                .map(|r| r.payload_type);
            let known = self.pts.iter().chain(new_pts.iter().map(|n| &n.known));
            let mut seen = false;
            for k in known {
                let clash = if k.pt == c.payload_type {
                    let same = k.mime_type.eq_ignore_ascii_case(&c.mime_type)
                        && (rtx.is_none() || k.rtx == rtx);
                    seen |= same;
                    !same
                } else {
                    k.rtx == Some(c.payload_type)
                        || rtx.is_some_and(|r| r == k.pt || k.rtx == Some(r))
                };
                if clash {
                    return Err(Error::InvalidRtpParameters(format!(
                        "payload type {} ({}, rtx {:?}) clashes with payload type {} ({}, rtx {:?}) \
                         of an earlier track on this transport",
                        c.payload_type, c.mime_type, rtx, k.pt, k.mime_type, k.rtx
                    )));
                }
            }
            if seen {
                continue;
            }
            new_pts.push(NewPt {
                known: KnownPt {
                    pt: c.payload_type,
                    rtx,
                    mime_type: c.mime_type.clone(),
                },
                codec,
                clock,
                channels: c.channels,
                format: glue::format_params(&c.parameters),
            });
        }
        let new_extensions: Vec<(u8, Extension, &str)> = params
            .header_extensions
            .iter()
            // str0m parses one-byte header extensions (ids 1 to 14).
            .filter(|e| (1..=14).contains(&e.id) && self.extension_id(&e.uri) != Some(e.id))
            .filter_map(|e| Some((e.id, glue::extension(&e.uri)?, e.uri.as_str())))
            .collect();
        let mut api = self.rtc.direct_api();
        for n in new_pts {
            api.codec_config().add_config(
                Pt::from(n.known.pt),
                n.known.rtx.map(Pt::from),
                n.codec,
                n.clock,
                n.channels,
                n.format,
            );
            self.pts.push(n.known);
        }
        for (id, ext, uri) in new_extensions {
            api.set_extension(id, ext);
            self.extensions.retain(|(i, u)| *i != id && u != uri);
            self.extensions.push((id, uri.to_owned()));
        }
        Ok(())
    }

    /// Restarts ICE with new local credentials (see `Room::restart_ice`):
    /// the demux forgets the old ufrag and learns the new one, str0m's agent
    /// flushes its remote credentials and pairs, and the remote ufrag is
    /// learned again from the next authenticated binding request.
    pub(crate) fn restart_ice(
        &mut self,
        key: TransportKey,
        rng: &mut StdRng,
        out: &mut Outputs,
    ) -> IceParameters {
        let ufrag = random_string_from(rng, 24);
        let password = random_string_from(rng, 32);
        out.demux
            .push_back(DemuxChange::ForgetUfrag(std::mem::replace(
                &mut self.local_ufrag,
                ufrag.clone(),
            )));
        out.demux.push_back(DemuxChange::Ufrag(ufrag.clone(), key));
        self.rtc.direct_api().ice_restart(
            IceCreds {
                ufrag: ufrag.clone(),
                pass: password.clone(),
            },
            true,
        );
        self.remote_ufrag = None;
        IceParameters {
            username_fragment: ufrag,
            password,
            ice_lite: true,
        }
    }

    /// Starts a receive transport's bandwidth estimate again from
    /// `initial` bits per second, with the allocator's state but the
    /// current allocation cleared, and queues an allocation. str0m's
    /// estimator then ignores feedback about packets sent before this call
    /// (vendor/str0m PATCH.md).
    pub(crate) fn restart_estimate(&mut self, key: TransportKey, initial: u64, out: &mut Outputs) {
        self.rtc.bwe().reset(str0m::bwe::Bitrate::bps(initial));
        self.bwe = BweState {
            allocated: self.bwe.allocated,
            pending: self.bwe.pending,
            ..Default::default()
        };
        out.want_allocation(key, self);
    }

    /// The next unused mid on this transport.
    pub(crate) fn allocate_mid(&mut self) -> String {
        loop {
            let mid = self.next_mid.to_string();
            self.next_mid += 1;
            if !self.mids.iter().any(|(m, _)| *m == mid) {
                return mid;
            }
        }
    }

    /// When the transport is closed for lack of ICE: `ice_timeout` after its
    /// last accepted datagram once connected, or after `connect-transport`
    /// before.
    pub(crate) fn ice_deadline(&self, ice_timeout: Duration) -> Option<Instant> {
        if self.connected {
            self.last_received.map(|r| r + ice_timeout)
        } else {
            self.dtls_started_at.map(|s| s + ice_timeout)
        }
    }

    /// Remembers an authenticated remote address; the oldest is forgotten
    /// past [`MAX_REMOTE_ADDRS`]. Tells the demux what changed.
    pub(crate) fn add_remote_addr(
        &mut self,
        key: TransportKey,
        proto: Protocol,
        addr: SocketAddr,
        out: &mut Outputs,
    ) {
        let addr = (proto, addr);
        if let Some(i) = self.remote_addrs.iter().position(|a| *a == addr) {
            // Most recent last.
            let a = self.remote_addrs.remove(i);
            self.remote_addrs.push(a);
            return;
        }
        if self.remote_addrs.len() >= MAX_REMOTE_ADDRS {
            let (old_proto, old) = self.remote_addrs.remove(0);
            out.demux.push_back(DemuxChange::Unbind(old_proto, old));
        }
        self.remote_addrs.push(addr);
        out.demux.push_back(DemuxChange::Bind(proto, addr.1, key));
    }

    /// The id this transport's stack uses for a header extension URI.
    pub(crate) fn extension_id(&self, uri: &str) -> Option<u8> {
        self.extensions
            .iter()
            .find(|(_, u)| u == uri)
            .map(|(id, _)| *id)
    }

    pub(crate) fn direction_name(&self) -> &'static str {
        match self.direction {
            TransportDirection::Send => "send",
            TransportDirection::Recv => "recv",
        }
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Drains one `Rtc` until it asks for a timeout: transmits and events go
/// to `out`, and the transport's timer is armed. This is str0m's run-loop
/// rule: after every mutation, poll until `Output::Timeout`.
pub(crate) fn drain(
    key: TransportKey,
    t: &mut Transport,
    out: &mut Outputs,
    ice_timeout: Duration,
) {
    loop {
        match t.rtc.poll_output() {
            Ok(Output::Timeout(at)) => {
                t.next_timeout = at;
                out.arm(key, t, ice_timeout);
                return;
            }
            Ok(Output::Transmit(tx)) => {
                // RTP and RTCP (first byte 128..=191, RFC 7983) go to the
                // selected path; STUN answers go wherever the check came
                // from. After an ICE restart the browser may keep its old
                // pair selected for a while (it had not noticed it was
                // dead), so what str0m sends until it switches is lost:
                // the new path's estimate starts when media moves, and
                // the feedback on what went to the dead address does not
                // weigh on it (str0m ignores feedback on packets sent
                // before a reset).
                if matches!(tx.contents.first(), Some(128..=191))
                    && t.media_destination != Some(tx.destination)
                {
                    let moved = t.media_destination.is_some();
                    t.media_destination = Some(tx.destination);
                    if moved {
                        tracing::debug!(transport = %t.id, to = %tx.destination, "media path moved");
                        if let Some(initial) = t.estimate_restart_on_move.take() {
                            t.restart_estimate(key, initial, out);
                        }
                    }
                }
                out.transmits.push_back(Transmit {
                    proto: Protocol::from_str0m(tx.proto),
                    destination: tx.destination,
                    source: tx.source,
                    contents: tx.contents.into(),
                })
            }
            Ok(Output::Event(e)) => out.rtc_events.push_back((key, e)),
            Err(e) => {
                tracing::debug!(transport = %t.id, error = %e, "transport failed");
                out.fail(key, t, CloseReason::Failed);
                return;
            }
        }
    }
}

crate::registry::entry!(Transport, TransportId);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn remote_addresses_are_capped_oldest_first() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let caps = crate::ortc::default_router_capabilities();
        let spec = TransportSpec {
            owner: Owner::new(1),
            direction: TransportDirection::Send,
            router_caps: &caps,
            local_addr: "127.0.0.1:4000".parse().unwrap(),
            tcp_addr: None,
            local_addr6: None,
            tcp_addr6: None,
            sctp_max_message_size: 65536,
            rng: &mut rng,
            max_incoming_bitrate: 1_000_000,
            max_outgoing_bitrate: 1_000_000,
            initial_bitrate: 1_000_000,
            bandwidth_estimation: true,
        };
        let (mut t, _) = Transport::new(now, spec).unwrap();
        let mut out = Outputs::default();
        let addr = |i: u16| SocketAddr::from(([10, 0, 0, 1], 5000 + i));
        for i in 0..6 {
            t.add_remote_addr(7, Protocol::Udp, addr(i), &mut out);
        }
        // The same address again only refreshes it.
        t.add_remote_addr(7, Protocol::Udp, addr(5), &mut out);
        assert_eq!(
            t.remote_addrs,
            (2..6).map(|i| (Protocol::Udp, addr(i))).collect::<Vec<_>>()
        );
        let changes: Vec<DemuxChange> = out.demux.drain(..).collect();
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, DemuxChange::Bind(..)))
                .count(),
            6
        );
        assert_eq!(
            changes
                .iter()
                .filter_map(|c| match c {
                    DemuxChange::Unbind(_, a) => Some(*a),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            vec![addr(0), addr(1)]
        );
    }
}
