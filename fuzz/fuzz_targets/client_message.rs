//! Any text a client sends decodes to a message or a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsewave_protocol::{decode_client, encode_client};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client(text) {
        Ok(req) => {
            // What decodes re-encodes and decodes to the same message.
            let again = decode_client(&encode_client(&req.message, req.request_id.as_ref()))
                .expect("a decoded message re-encodes");
            assert_eq!(again.message, req.message);
        }
        Err(e) => assert!(!e.detail.is_empty()),
    }
});
