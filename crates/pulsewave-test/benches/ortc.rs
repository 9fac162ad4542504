//! The consumer parameter computation of `consume`: `ortc::can_consume` and
//! `ortc::get_consumer_rtp_parameters` for a VP8 producer with RTX, as
//! mediasoup-client's `produce` describes it, against the router's
//! capabilities (what a browser subscribes with); and the producer side
//! (`get_producer_rtp_parameters_mapping` + `get_consumable_rtp_parameters`).
//!
//! ```bash
//! cargo bench -p pulsewave-test --bench ortc
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pulsewave_core::ortc;
use pulsewave_protocol::MediaKind;
use pulsewave_protocol::rtp::RtpParameters;
use pulsewave_test::Sim;

/// The producer parameters the Rust client sends for VP8 with RTX (the
/// shape mediasoup-client gives: codecs, header extensions, one encoding
/// with ssrc and rtx, rtcp cname).
fn vp8_producer() -> RtpParameters {
    let mut sim = Sim::new(1);
    let alice = sim.join("alice");
    sim.send_transport(alice);
    let (_, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    sim.track(alice, &mid).local().rtp_parameters.clone()
}

fn bench(c: &mut Criterion) {
    let caps = ortc::default_router_capabilities();
    let producer = vp8_producer();
    let mut params = producer.clone();
    let mapping =
        ortc::get_producer_rtp_parameters_mapping(&mut params, &caps, &mut ortc::random_ssrc)
            .unwrap();
    let consumable =
        ortc::get_consumable_rtp_parameters(MediaKind::Video, &params, &caps, &mapping).unwrap();

    let mut g = c.benchmark_group("ortc");
    g.bench_function("can_consume", |b| {
        b.iter(|| ortc::can_consume(black_box(&consumable), black_box(&caps)).unwrap())
    });
    g.bench_function("get_consumer_rtp_parameters", |b| {
        let mut ssrc = 1000u32;
        let mut next = move || {
            ssrc = ssrc.wrapping_add(2);
            ssrc
        };
        b.iter(|| {
            ortc::get_consumer_rtp_parameters(
                black_box(&consumable),
                black_box(&caps),
                false,
                true,
                &mut next,
            )
            .unwrap()
        })
    });
    g.bench_function("producer_mapping_and_consumable", |b| {
        b.iter(|| {
            let mut p = producer.clone();
            let m =
                ortc::get_producer_rtp_parameters_mapping(&mut p, &caps, &mut ortc::random_ssrc)
                    .unwrap();
            ortc::get_consumable_rtp_parameters(MediaKind::Video, &p, &caps, &m).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
