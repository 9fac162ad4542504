//! Data channels: a publisher's channel relayed to a subscriber.

use std::collections::HashSet;

use pulsewave_client::PeerEvent;
use pulsewave_core::Owner;
use pulsewave_protocol::transport::SctpStreamParameters;
use pulsewave_test::{LinkConfig, Sim};

use crate::{SECOND, alice_and_bob, recv_tid, send_tid};

/// Opens Alice's channel on stream 1 and Bob's consumer of it; waits until
/// both are open. Returns Bob's stream id.
fn open_channel(
    sim: &mut Sim,
    (alice, bob): (Owner, Owner),
    ordered: bool,
    max_retransmits: Option<u16>,
) -> u16 {
    let dp = sim
        .publish_data(alice, 1, "chat", ordered, max_retransmits)
        .unwrap();
    assert_eq!(
        sim.room().data_producer_reliable(&dp),
        Some(max_retransmits.is_none()),
        "reliable: every message retransmitted until it arrives, ordered or not"
    );
    let consumed = sim.subscribe_data(bob, &dp).unwrap();
    assert_eq!(consumed.label, "chat");
    assert_eq!(consumed.sctp_stream_parameters.ordered, Some(ordered));
    assert_eq!(
        consumed.sctp_stream_parameters.max_retransmits,
        max_retransmits
    );
    let stream = consumed.sctp_stream_parameters.stream_id;
    let (atid, btid) = (send_tid(sim, alice), recv_tid(sim, bob));
    let open = sim.run_until(5 * SECOND, |s| {
        s.peer(&atid).channel_open(1) && s.peer(&btid).channel_open(stream)
    });
    assert!(open, "the channels open");
    stream
}

fn message(i: usize) -> Vec<u8> {
    format!("message {i:03}").into_bytes()
}

#[test]
fn a_reliable_channel_delivers_every_message_in_order_despite_loss() {
    let (mut sim, alice, bob) = alice_and_bob(40);
    let stream = open_channel(&mut sim, (alice, bob), true, None);
    sim.set_link(LinkConfig {
        loss: 0.2,
        ..LinkConfig::default()
    });
    for i in 0..100 {
        assert!(sim.send_data(alice, 1, &message(i)), "message {i} queued");
        sim.advance(SECOND / 100);
    }
    let all = sim.run_until(20 * SECOND, |s| s.data_received(bob).len() >= 100);
    assert!(all, "only {} of 100 arrived", sim.data_received(bob).len());
    let got = sim.data_received(bob);
    let expected: Vec<(u16, Vec<u8>)> = (0..100).map(|i| (stream, message(i))).collect();
    assert_eq!(got, expected);
    assert!(sim.stats().data_relayed >= 100);
}

/// An association left idle for a long time (str0m then skips polling it
/// on every timeout: vendor/str0m/PATCH.md) still sends, retransmits and
/// delivers as soon as there is something to send again.
#[test]
fn a_channel_idle_for_a_long_time_delivers_at_once_and_repairs_loss() {
    let (mut sim, alice, bob) = alice_and_bob(43);
    let stream = open_channel(&mut sim, (alice, bob), true, None);
    sim.advance(30 * SECOND);
    assert!(sim.send_data(alice, 1, &message(0)));
    let first = sim.run_until(SECOND / 2, |s| !s.data_received(bob).is_empty());
    assert!(
        first,
        "the first message after the idle time arrives within 500 ms"
    );
    sim.set_link(LinkConfig {
        loss: 0.2,
        ..LinkConfig::default()
    });
    sim.advance(10 * SECOND);
    for i in 1..30 {
        assert!(sim.send_data(alice, 1, &message(i)), "message {i} queued");
        sim.advance(SECOND / 50);
    }
    let all = sim.run_until(20 * SECOND, |s| s.data_received(bob).len() >= 30);
    assert!(all, "only {} of 30 arrived", sim.data_received(bob).len());
    let expected: Vec<(u16, Vec<u8>)> = (0..30).map(|i| (stream, message(i))).collect();
    assert_eq!(sim.data_received(bob), expected);
}

#[test]
fn a_lossy_channel_delivers_what_survives_once_and_without_retransmission() {
    let (mut sim, alice, bob) = alice_and_bob(41);
    let stream = open_channel(&mut sim, (alice, bob), false, Some(0));

    // On a clean link every message arrives.
    for i in 0..50 {
        assert!(sim.send_data(alice, 1, &message(i)));
        sim.advance(SECOND / 100);
    }
    sim.advance(SECOND);
    let got: HashSet<Vec<u8>> = sim.data_received(bob).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got.len(), 50);

    // With 30 % loss some are lost for good, none is duplicated, and
    // nothing arrives that was not sent.
    sim.set_link(LinkConfig {
        loss: 0.3,
        ..LinkConfig::default()
    });
    for i in 50..250 {
        assert!(sim.send_data(alice, 1, &message(i)));
        sim.advance(SECOND / 100);
    }
    sim.set_link(LinkConfig::default());
    sim.advance(5 * SECOND);
    let got = sim.data_received(bob);
    assert!(got.iter().all(|(s, _)| *s == stream));
    let unique: HashSet<&Vec<u8>> = got.iter().map(|(_, m)| m).collect();
    assert_eq!(unique.len(), got.len(), "no duplicates");
    let sent: HashSet<Vec<u8>> = (0..250).map(message).collect();
    assert!(unique.iter().all(|m| sent.contains(*m)));
    let late = got.len() - 50;
    assert!(
        late < 200 && late > 60,
        "{late} of 200 arrived through 30 % loss each way"
    );
}

/// A data consumer closed by its producer frees its SCTP stream id, but the
/// stream reset reaches the subscriber over UDP while the next
/// `subscribe-data` reply reaches it over the WebSocket: were the id given
/// again at once, the subscriber (a browser as well as the Rust client)
/// would still hold it and refuse the channel ("stream already in use").
/// Ids rotate instead, as mediasoup's `getNextSctpStreamId` does. (Found by
/// the churn soak.)
#[test]
fn a_freed_data_stream_id_is_not_given_again_at_once() {
    let (mut sim, alice, bob) = alice_and_bob(44);
    let chat = sim.publish_data(alice, 1, "chat", true, None).unwrap();
    let news = sim.publish_data(alice, 2, "news", true, None).unwrap();
    let first = sim
        .subscribe_data(bob, &chat)
        .unwrap()
        .sctp_stream_parameters
        .stream_id;
    let (atid, btid) = (send_tid(&sim, alice), recv_tid(&sim, bob));
    assert!(
        sim.run_until(5 * SECOND, |s| s.peer(&btid).channel_open(first)
            && s.peer(&atid).channel_open(2))
    );
    // Alice closes `chat`, and Bob's consumer of it with it; before the
    // stream reset reaches Bob, he subscribes to `news`.
    let now = sim.now();
    sim.room_mut()
        .close_data_producer(now, alice, &chat)
        .unwrap();
    let second = sim
        .subscribe_data(bob, &news)
        .unwrap()
        .sctp_stream_parameters
        .stream_id;
    assert_ne!(second, first);
    assert!(sim.run_until(5 * SECOND, |s| s.peer(&btid).channel_open(second)));
    assert!(sim.send_data(alice, 2, b"hello"));
    let arrived = sim.run_until(5 * SECOND, |s| {
        s.data_received(bob)
            .iter()
            .any(|(st, m)| *st == second && m == b"hello")
    });
    assert!(arrived, "{:?}", sim.data_received(bob));
}

/// A data channel closed and announced again at once on the same stream:
/// str0m holds the stream until the peer answered its reset, and opens the
/// new channel then (asking it for a stream it still holds would panic, and
/// the room with it). The room takes the new data producer at once, and
/// its messages reach a subscriber.
#[test]
fn a_data_stream_can_be_announced_again_at_once() {
    let (mut sim, alice, bob) = alice_and_bob(45);
    let atid = send_tid(&sim, alice);
    let chat = sim.publish_data(alice, 1, "chat", true, None).unwrap();
    assert!(sim.run_until(5 * SECOND, |s| s.peer(&atid).channel_open(1)));
    let params = SctpStreamParameters {
        stream_id: 1,
        ordered: Some(true),
        max_packet_life_time: None,
        max_retransmits: None,
    };
    let now = sim.now();
    let room = sim.endpoint().rooms().next().unwrap().0;
    let again = sim
        .endpoint_mut()
        .with_room(now, room, |r, now| {
            r.close_data_producer(now, alice, &chat).unwrap();
            r.produce_data(
                now,
                alice,
                Some(&atid),
                params,
                "chat",
                "",
                pulsewave_core::AppData::default(),
            )
        })
        .expect("the room survives")
        .expect("the stream is announced again");
    // Alice's side of the old channel closes with the reset; she opens the
    // new one, Bob subscribes, and a message goes through.
    let events = |s: &Sim, open: bool| {
        s.peer(&atid)
            .events()
            .iter()
            .filter(|(_, e)| match e {
                PeerEvent::ChannelOpen { stream_id, .. } => open && *stream_id == 1,
                PeerEvent::ChannelClose { stream_id } => !open && *stream_id == 1,
                _ => false,
            })
            .count()
    };
    assert!(sim.run_until(5 * SECOND, |s| events(s, false) == 1));
    sim.peer_mut(&atid)
        .transport_mut()
        .open_data_channel(1, "chat", true, None)
        .unwrap();
    let stream = sim
        .subscribe_data(bob, &again)
        .unwrap()
        .sctp_stream_parameters
        .stream_id;
    let btid = recv_tid(&sim, bob);
    assert!(sim.run_until(5 * SECOND, |s| events(s, true) == 2
        && s.peer(&btid).channel_open(stream)));
    assert!(sim.send_data(alice, 1, b"again"));
    let arrived = sim.run_until(5 * SECOND, |s| {
        s.data_received(bob)
            .iter()
            .any(|(st, m)| *st == stream && m == b"again")
    });
    assert!(arrived, "{:?}", sim.data_received(bob));
}

/// A channel the peer opened in-band (DCEP, without signaling) holds its
/// stream in str0m. A `publish-data-channel` naming that stream, or a
/// `subscribe-data` for which the room picked it, made str0m assert
/// ("sctp_stream_id (0) exists already") and the room panic: one
/// participant could end its room. The stream is refused, or skipped.
/// (Found by the room_connected fuzz target.)
#[test]
fn a_stream_the_peer_opened_in_band_is_not_taken() {
    let (mut sim, alice, bob) = alice_and_bob(46);
    let (atid, btid) = (send_tid(&sim, alice), recv_tid(&sim, bob));
    // Alice and Bob each open a channel in-band; as DTLS clients, their
    // stacks pick stream 0.
    for tid in [&atid, &btid] {
        let now = sim.now();
        let peer = sim.peer_mut(tid).transport_mut();
        peer.rtc_mut()
            .direct_api()
            .create_data_channel(str0m::channel::ChannelConfig {
                label: "in-band".into(),
                ..Default::default()
            });
        peer.handle_timeout(now);
    }
    sim.advance(SECOND);
    let params = SctpStreamParameters {
        stream_id: 0,
        ordered: Some(true),
        max_packet_life_time: None,
        max_retransmits: None,
    };
    let now = sim.now();
    let room = sim.endpoint().rooms().next().unwrap().0;
    let taken = sim
        .endpoint_mut()
        .with_room(now, room, |r, now| {
            r.produce_data(
                now,
                alice,
                Some(&atid),
                params,
                "chat",
                "",
                pulsewave_core::AppData::default(),
            )
        })
        .expect("the room survives");
    assert!(
        matches!(taken, Err(pulsewave_core::Error::InvalidSctpParameters(_))),
        "{taken:?}"
    );
    // On another stream it works, and Bob's consumer skips his stream 0.
    let dp = sim.publish_data(alice, 1, "chat", true, None).unwrap();
    let stream = sim
        .subscribe_data(bob, &dp)
        .unwrap()
        .sctp_stream_parameters
        .stream_id;
    assert_ne!(stream, 0);
    assert!(sim.run_until(5 * SECOND, |s| s.peer(&atid).channel_open(1)
        && s.peer(&btid).channel_open(stream)));
    assert!(sim.send_data(alice, 1, b"hi"));
    assert!(sim.run_until(5 * SECOND, |s| !s.data_received(bob).is_empty()));
    assert_eq!(sim.endpoint().stats().rooms_failed, 0);
}
