//! Any JSON a client sends as rtpParameters maps to router parameters or a
//! clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsewave_core::ortc;
use pulsewave_protocol::rtp::{MediaKind, RtpParameters};

fuzz_target!(|data: &[u8]| {
    let Ok(mut params) = serde_json::from_slice::<RtpParameters>(data) else {
        return;
    };
    let caps = ortc::default_router_capabilities();
    let mut n = 1000u32;
    let mut next = || {
        n += 1;
        n
    };
    if let Ok(mapping) = ortc::get_producer_rtp_parameters_mapping(&mut params, &caps, &mut next)
    {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            if let Ok(consumable) =
                ortc::get_consumable_rtp_parameters(kind, &params, &caps, &mapping)
            {
                if ortc::can_consume(&consumable, &caps).unwrap_or(false) {
                    let _ = ortc::get_consumer_rtp_parameters(&consumable, &caps, false, true, &mut next);
                }
            }
        }
    }
});
