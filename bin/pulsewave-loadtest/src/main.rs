//! `pulsewave-loadtest`: see the crate documentation and `--help`.

use std::process::ExitCode;

use clap::Parser;
use pulsewave_loadtest::{Config, run};

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
    let report = match runtime.block_on(run(config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pulsewave-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("pulsewave-loadtest: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
