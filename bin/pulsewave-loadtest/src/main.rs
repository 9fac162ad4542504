//! `pulsewave-loadtest`: see the crate documentation and `--help`.

use std::process::ExitCode;

use clap::Parser;
use pulsewave_loadtest::{Config, churn, run};

fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One worker per CPU this process may run on (taskset is respected).
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pulsewave-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = config.json;
    let json_file = config.json_file.clone();
    if config.churn {
        let report = match runtime.block_on(churn(config)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pulsewave-loadtest: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(code) = output(&report, json, json_file.as_deref(), || report.to_text()) {
            return code;
        }
        return if report.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let report = match runtime.block_on(run(config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pulsewave-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(code) = output(&report, json, json_file.as_deref(), || report.to_text()) {
        return code;
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints the report (JSON or text) and writes it as JSON to `file`.
fn output<R: serde::Serialize>(
    report: &R,
    json: bool,
    file: Option<&std::path::Path>,
    text: impl FnOnce() -> String,
) -> Result<(), ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("pulsewave-loadtest: {e}");
        ExitCode::from(2)
    };
    if json || file.is_some() {
        let s = serde_json::to_string_pretty(report).map_err(|e| fail(&e))?;
        if let Some(path) = file {
            std::fs::write(path, format!("{s}\n"))
                .map_err(|e| fail(&format!("{}: {e}", path.display())))?;
        }
        if json {
            println!("{s}");
            return Ok(());
        }
    }
    print!("{}", text());
    Ok(())
}
