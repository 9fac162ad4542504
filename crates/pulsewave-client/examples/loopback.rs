//! Publishes synthetic VP8 video and opus audio as "alice" and receives
//! them as "bob" through a running PulseWave server, then prints what
//! arrived: packets, loss, latency, integrity.
//!
//! ```bash
//! cargo run --release -p pulsewave-server -- --dev          # in one shell
//! cargo run -p pulsewave-client --example loopback           # in another
//! cargo run -p pulsewave-client --example loopback -- ws://127.0.0.1:3000 devkey secret 10
//! ```

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{Client, ClientEvent, parse_synthetic};

const ROOM: &str = "loopback";

fn token(key: &str, secret: &str, identity: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut t = AccessToken::new(
        key,
        secret,
        AccessTokenOptions {
            identity: identity.into(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(ROOM.into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    });
    Ok(t.to_jwt()?)
}

#[derive(Default)]
struct Stats {
    packets: u64,
    first_seq: Option<u64>,
    last_seq: u64,
    damaged: u64,
    latency_sum: Duration,
    latency_max: Duration,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:3000".into());
    let key = args.next().unwrap_or_else(|| "devkey".into());
    let secret = args.next().unwrap_or_else(|| "secret".into());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);

    let mut alice = Client::connect(&url, &token(&key, &secret, "alice")?).await?;
    alice.join(ROOM).await?;
    let mut bob = Client::connect(&url, &token(&key, &secret, "bob")?).await?;
    bob.join(ROOM).await?;

    let mut video = alice.publish_video("video/VP8").await?;
    let mut audio = alice.publish_audio().await?;
    let video_sub = bob.subscribe(video.producer_id()).await?;
    let audio_sub = bob.subscribe(audio.producer_id()).await?;
    let names = HashMap::from([
        (video_sub.consumer_id.clone(), "video"),
        (audio_sub.consumer_id.clone(), "audio"),
    ]);

    let run_for = Duration::from_secs(seconds);
    let sender = tokio::spawn(async move {
        let mut vs = video.synthetic_source();
        let mut aus = audio.synthetic_source();
        let end = tokio::time::Instant::now() + run_for;
        while tokio::time::Instant::now() < end {
            let sent = tokio::select! {
                p = vs.tick() => send_all(&mut video, p).await,
                p = aus.tick() => send_all(&mut audio, p).await,
            };
            if sent.is_err() {
                break;
            }
        }
        (vs.packets_sent(), aus.packets_sent())
    });

    let mut stats: HashMap<&str, Stats> = HashMap::new();
    let deadline = tokio::time::Instant::now() + run_for + Duration::from_secs(1);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, bob.next_event()).await {
        let ClientEvent::Rtp(packet) = event else {
            continue;
        };
        let Some(name) = names.get(&packet.consumer_id) else {
            continue;
        };
        let s = stats.entry(name).or_default();
        s.packets += 1;
        match parse_synthetic(&packet.payload) {
            Some(info) if info.intact => {
                s.first_seq.get_or_insert(info.sequence);
                s.last_seq = s.last_seq.max(info.sequence);
                let latency = info.latency(SystemTime::now());
                s.latency_sum += latency;
                s.latency_max = s.latency_max.max(latency);
            }
            _ => s.damaged += 1,
        }
    }
    let (video_sent, audio_sent) = sender.await?;
    println!("sent: video {video_sent} packets, audio {audio_sent} packets");
    for (name, s) in &stats {
        let expected = s.first_seq.map_or(0, |f| s.last_seq - f + 1);
        let avg = s.latency_sum / u32::try_from(s.packets.max(1)).unwrap_or(u32::MAX);
        println!(
            "{name}: received {} (expected {expected} from the first one), damaged {}, \
             latency avg {avg:?} max {:?}",
            s.packets, s.damaged, s.latency_max
        );
    }
    println!("events dropped by the client: {}", bob.dropped_events());
    bob.leave().await?;
    alice.leave().await?;
    Ok(())
}

async fn send_all(
    track: &mut pulsewave_client::LocalTrackHandle,
    packets: Vec<pulsewave_client::SyntheticPacket>,
) -> Result<(), pulsewave_client::ClientError> {
    for p in &packets {
        track.send_synthetic(p).await?;
    }
    Ok(())
}
