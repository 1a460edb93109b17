//! The `inkan` binary: parses the command line, starts logging, dispatches.
#![forbid(unsafe_code)]

use clap::Parser;
use inkan::cli::{run, Cli};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("INKAN_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        // Colour on a terminal only: no escape codes in log files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(out) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&out.json).unwrap_or_default());
            } else if !out.text.is_empty() {
                println!("{}", out.text);
            }
            if out.code != 0 {
                std::process::exit(out.code);
            }
        }
        Err(e) => {
            if json {
                if e.message.starts_with('{') {
                    eprintln!("{}", e.message);
                } else {
                    eprintln!("{}", serde_json::json!({ "error": e.message }));
                }
            } else {
                eprintln!("error: {}", e.message);
            }
            std::process::exit(e.code);
        }
    }
}
