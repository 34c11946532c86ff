//! `traefik-convert [--format yaml|toml|labels] [--servers SERVICE=ip:port,...]
//! [--secret S] [FILE|-]`: prints the filter configurations for the Traefik
//! middlewares in FILE (standard input by default) as JSON on standard
//! output, and on standard error one line for everything not translated or
//! behaving differently. Exits 2 when the input cannot be read.

use std::io::Read;
use std::process::ExitCode;
use traefik_convert::{convert_text, Format, Options};

const USAGE: &str =
    "usage: traefik-convert [--format yaml|toml|labels] [--servers SERVICE=ip:port,...] [--secret S] [FILE|-]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traefik-convert: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut opts = Options::default();
    let mut format = None;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--format" => {
                format = Some(match value()?.as_str() {
                    "yaml" => Format::Yaml,
                    "toml" => Format::Toml,
                    "labels" => Format::Labels,
                    other => return Err(format!("unknown format {other:?}; use yaml, toml or labels")),
                })
            }
            "--servers" => {
                let v = value()?;
                let (svc, addrs) =
                    v.split_once('=').ok_or_else(|| format!("--servers {v:?}: write SERVICE=ip:port,..."))?;
                opts.servers.push((svc.to_string(), addrs.split(',').map(|s| s.trim().to_string()).collect()));
            }
            "--secret" => opts.secret = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if file.is_none() => file = Some(a),
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        }
    }
    let text = match file.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| format!("standard input: {e}"))?;
            s
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
    };
    let format = format.or_else(|| file.as_deref().and_then(Format::from_name)).unwrap_or_else(|| Format::sniff(&text));
    let mut c = convert_text(&text, format, &opts)?;
    let out = c.to_json();
    let pretty = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    println!("{pretty}");
    for line in &c.report.lines {
        eprintln!("{line}");
    }
    Ok(())
}
