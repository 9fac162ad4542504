//! Data channels: a publisher's channel relayed to a subscriber.

use std::collections::HashSet;

use pulsewave_test::{LinkConfig, Sim};

use crate::{SECOND, alice_and_bob, recv_tid, send_tid};

/// Opens Alice's channel on stream 1 and Bob's consumer of it; waits until
/// both are open. Returns Bob's stream id.
fn open_channel(sim: &mut Sim, ordered: bool, max_retransmits: Option<u16>) -> u16 {
    let alice = pulsewave_protocol::ParticipantSid::new("PA_alice");
    let bob = pulsewave_protocol::ParticipantSid::new("PA_bob");
    let dp = sim
        .publish_data(&alice, 1, "chat", ordered, max_retransmits)
        .unwrap();
    assert_eq!(
        sim.room().data_producer_reliable(&dp),
        Some(ordered && max_retransmits.is_none())
    );
    let consumed = sim.subscribe_data(&bob, &dp).unwrap();
    assert_eq!(consumed.label, "chat");
    assert_eq!(consumed.sctp_stream_parameters.ordered, Some(ordered));
    assert_eq!(
        consumed.sctp_stream_parameters.max_retransmits,
        max_retransmits
    );
    let stream = consumed.sctp_stream_parameters.stream_id;
    let (atid, btid) = (send_tid(sim, &alice), recv_tid(sim, &bob));
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
    let stream = open_channel(&mut sim, true, None);
    sim.set_link(LinkConfig {
        loss: 0.2,
        ..LinkConfig::default()
    });
    for i in 0..100 {
        assert!(sim.send_data(&alice, 1, &message(i)), "message {i} queued");
        sim.advance(SECOND / 100);
    }
    let all = sim.run_until(20 * SECOND, |s| s.data_received(&bob).len() >= 100);
    assert!(all, "only {} of 100 arrived", sim.data_received(&bob).len());
    let got = sim.data_received(&bob);
    let expected: Vec<(u16, Vec<u8>)> = (0..100).map(|i| (stream, message(i))).collect();
    assert_eq!(got, expected);
    assert!(sim.stats().data_relayed >= 100);
}

#[test]
fn a_lossy_channel_delivers_what_survives_once_and_without_retransmission() {
    let (mut sim, alice, bob) = alice_and_bob(41);
    let stream = open_channel(&mut sim, false, Some(0));

    // On a clean link every message arrives.
    for i in 0..50 {
        assert!(sim.send_data(&alice, 1, &message(i)));
        sim.advance(SECOND / 100);
    }
    sim.advance(SECOND);
    let got: HashSet<Vec<u8>> = sim
        .data_received(&bob)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(got.len(), 50);

    // With 30 % loss some are lost for good, none is duplicated, and
    // nothing arrives that was not sent.
    sim.set_link(LinkConfig {
        loss: 0.3,
        ..LinkConfig::default()
    });
    for i in 50..250 {
        assert!(sim.send_data(&alice, 1, &message(i)));
        sim.advance(SECOND / 100);
    }
    sim.set_link(LinkConfig::default());
    sim.advance(5 * SECOND);
    let got = sim.data_received(&bob);
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
    let chat = sim.publish_data(&alice, 1, "chat", true, None).unwrap();
    let news = sim.publish_data(&alice, 2, "news", true, None).unwrap();
    let first = sim
        .subscribe_data(&bob, &chat)
        .unwrap()
        .sctp_stream_parameters
        .stream_id;
    let (atid, btid) = (send_tid(&sim, &alice), recv_tid(&sim, &bob));
    assert!(
        sim.run_until(5 * SECOND, |s| s.peer(&btid).channel_open(first)
            && s.peer(&atid).channel_open(2))
    );
    // Alice closes `chat`, and Bob's consumer of it with it; before the
    // stream reset reaches Bob, he subscribes to `news`.
    let now = sim.now();
    sim.room_mut()
        .close_data_producer(now, &alice, &chat)
        .unwrap();
    let second = sim
        .subscribe_data(&bob, &news)
        .unwrap()
        .sctp_stream_parameters
        .stream_id;
    assert_ne!(second, first);
    assert!(sim.run_until(5 * SECOND, |s| s.peer(&btid).channel_open(second)));
    assert!(sim.send_data(&alice, 2, b"hello"));
    let arrived = sim.run_until(5 * SECOND, |s| {
        s.data_received(&bob)
            .iter()
            .any(|(st, m)| *st == second && m == b"hello")
    });
    assert!(arrived, "{:?}", sim.data_received(&bob));
}
