//! Logging through tracing-subscriber: `RUST_LOG` filters, `LOG_FORMAT=json`
//! switches to one JSON object per line, and `MEDIASOUP_LOG_LEVEL` sets the
//! level of the media modules when `RUST_LOG` does not.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

pub(crate) fn init(format: LogFormat, media_level: &str) -> Result<(), String> {
    let media = match media_level {
        "none" => "off",
        other => other,
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v).map_err(|e| e.to_string())?,
        _ => EnvFilter::try_new(format!("info,pulsewave_core={media},str0m={media}"))
            .map_err(|e| e.to_string())?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| e.to_string())
}
