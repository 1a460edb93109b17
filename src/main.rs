//! The `inkan` binary: parses the command line, dispatches (logging starts
//! once the configuration is read: `[log] format`).
#![forbid(unsafe_code)]

use clap::Parser;
use inkan::cli::{run, Cli};

fn main() {
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
