//! `packaging`: writes the configuration schemas and the OCI images, and
//! checks configurations. Run through `make schemas`, `make oci`, or
//! `cargo run -p packaging -- <command>`:
//!
//! ```text
//! packaging schemas [--check]                 write schemas/<module>.schema.json (--check: compare only)
//! packaging oci [--out DIR] [--wasm-dir DIR] [--source URL]
//!                                             write an OCI image layout per module (default target/oci)
//! packaging check-config <module> <file.json> the schema's errors and the filter's own refusal
//! ```

use packaging::{check_config, docs, oci, readme, root, MODULES};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("schemas") => schemas(args.iter().any(|a| a == "--check")),
        Some("oci") => images(&args),
        Some("check-config") => check(&args),
        Some("native-sample") => native_sample(&args),
        _ => Err("usage: packaging schemas [--check] | oci [--out DIR] [--wasm-dir DIR] [--source URL] | check-config <module> <file.json> | native-sample <envoy.yaml>".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packaging: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the native build's twin of a sample Envoy config.
fn native_sample(args: &[String]) -> Result<(), String> {
    let file = args.get(1).ok_or("native-sample needs an Envoy config file")?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    print!("{}", packaging::native::to_native(&text).map_err(|e| format!("{file}: {e}"))?);
    Ok(())
}

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn schemas(check_only: bool) -> Result<(), String> {
    let dir = root().join("schemas");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut stale = Vec::new();
    for module in MODULES.iter().map(|m| m.name) {
        let schema = docs::module_schema(module, &readme).map_err(|e| e.join("\n"))?;
        let text = serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())? + "\n";
        let path = dir.join(format!("{module}.schema.json"));
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if check_only {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    Err(format!("out of date (run `make schemas`): {}", stale.join(", ")))
}

fn images(args: &[String]) -> Result<(), String> {
    let out = option(args, "--out").map(PathBuf::from).unwrap_or_else(|| root().join("target/oci"));
    let wasm_dir = option(args, "--wasm-dir").map(PathBuf::from).unwrap_or_else(|| root().join("target/wasm"));
    let source = option(args, "--source").filter(|s| !s.is_empty());
    for (module, file) in MODULES.iter().map(|m| (m.name, m.wasm)) {
        let wasm_path = wasm_dir.join(format!("{file}.wasm"));
        let wasm = std::fs::read(&wasm_path).map_err(|e| format!("{}: {e} (run `make build`)", wasm_path.display()))?;
        let schema_path = root().join("schemas").join(format!("{module}.schema.json"));
        let schema = std::fs::read(&schema_path).map_err(|e| format!("{}: {e}", schema_path.display()))?;
        let image = oci::Module {
            name: module.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            wasm,
            schema,
            source: source.clone(),
        };
        let dir = out.join(module);
        for img in oci::write_layout(&dir, &image).map_err(|e| format!("{}: {e}", dir.display()))? {
            println!("{module}\t{}\t{}\toci:{}:{}", img.variant, img.digest, dir.display(), img.tag);
        }
    }
    // The rate limit service's image: the static build `make build` makes.
    let engine = option(args, "--engine").map(PathBuf::from).unwrap_or_else(|| root().join(ENGINE_STATIC));
    let binary = std::fs::read(&engine).map_err(|e| format!("{}: {e} (run `make build`)", engine.display()))?;
    let dir = out.join("ratelimit-engine");
    // The system's roots, as upstream's image carries them (Debian's
    // ca-certificates on the building machine; absent, none).
    let roots = std::fs::read(format!("/{}", oci::CA_BUNDLE)).ok();
    let img = oci::write_program_layout(&dir, &oci::engine_program(binary, roots, source))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    println!("ratelimit-engine\t{}\t{}\toci:{}:{}", img.variant, img.digest, dir.display(), img.tag);
    Ok(())
}

/// Where `make build` puts the statically linked engine.
const ENGINE_STATIC: &str = "target/x86_64-unknown-linux-musl/release/ratelimit-engine";

fn check(args: &[String]) -> Result<(), String> {
    let (Some(module), Some(file)) = (args.get(1), args.get(2)) else {
        return Err("usage: packaging check-config <module> <file.json>".into());
    };
    let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let problems = check_config(module, &bytes)?;
    if problems.is_empty() {
        println!("{file}: accepted by {module}");
        return Ok(());
    }
    for p in &problems {
        println!("{file}: {p}");
    }
    Err(format!("{file}: {} problem(s)", problems.len()))
}
