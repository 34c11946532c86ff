//! OCI images of a module, in the two formats Istio's and Envoy Gateway's
//! Wasm fetchers read, written as an OCI image layout (a directory that
//! `skopeo copy oci:<dir>:<tag> docker://...` pushes as is).
//!
//! * **compat** (tag `<version>`): an OCI image whose last (only) layer is a
//!   gzipped tar holding `plugin.wasm`, then `schema.json` (the fetchers take
//!   the first entry named `plugin.wasm`); config
//!   `application/vnd.oci.image.config.v1+json`.
//! * **oci** (tag `<version>-oci`): the Wasm artifact format, exactly two
//!   layers: the raw module (`application/vnd.module.wasm.content.layer.v1+wasm`)
//!   and the configuration's JSON Schema (`application/schema+json`); config
//!   `application/vnd.module.wasm.config.v1+json`.
//!
//! Deterministic: no timestamps (tar entries dated 0, gzip header without
//! time or name, no `created` annotation), JSON with sorted keys, so the same
//! module and schema give the same manifest digest on any machine.

use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// Media types.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The compat variant's layer.
pub const TAR_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The compat variant's config.
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The oci variant's module layer.
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The oci variant's config.
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// The configuration schema's layer.
pub const SCHEMA_LAYER: &str = "application/schema+json";

/// What goes into a module's images.
#[derive(Debug, Clone)]
pub struct Module {
    /// The module's name (`rate-limit`), the image's repository name.
    pub name: String,
    /// Its version (the crate's), the tag.
    pub version: String,
    /// The `.wasm` bytes.
    pub wasm: Vec<u8>,
    /// The configuration's JSON Schema.
    pub schema: Vec<u8>,
    /// `org.opencontainers.image.source`, when known.
    pub source: Option<String>,
}

/// One image written into a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Its tag in the layout.
    pub tag: String,
    /// `sha256:<hex>` of its manifest: what a `WasmPlugin`'s `sha256` pins.
    pub digest: String,
    /// Which format.
    pub variant: &'static str,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Layout<'a> {
    dir: &'a Path,
}

impl Layout<'_> {
    /// Stores `bytes` as a blob; its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8], annotations: Option<Value>) -> io::Result<Value> {
        let d = digest(bytes);
        let hex = d.trim_start_matches("sha256:");
        fs::write(self.dir.join("blobs/sha256").join(hex), bytes)?;
        let mut desc = json!({ "mediaType": media_type, "digest": d, "size": bytes.len() });
        if let (Some(a), Some(map)) = (annotations, desc.as_object_mut()) {
            map.insert("annotations".into(), a);
        }
        Ok(desc)
    }

    /// Stores `value` as JSON (sorted keys: deterministic); its descriptor.
    fn json_blob(&self, media_type: &str, value: &Value) -> io::Result<Value> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        self.blob(media_type, &bytes, None)
    }
}

fn titled(title: &str) -> Option<Value> {
    Some(json!({ "org.opencontainers.image.title": title }))
}

fn annotations(module: &Module) -> Value {
    let mut a = json!({
        "org.opencontainers.image.title": module.name,
        "org.opencontainers.image.description": format!(
            "{} Proxy-Wasm filter (wasm32-wasip1); its configuration's JSON Schema is in the image", module.name),
        "org.opencontainers.image.version": module.version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });
    if let (Some(source), Some(map)) = (&module.source, a.as_object_mut()) {
        map.insert("org.opencontainers.image.source".into(), json!(source));
    }
    a
}

/// A tar of `files` with fixed metadata (mode 0644, owner 0, dated 0).
fn tar(files: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let with_modes: Vec<(&str, &[u8], u32)> = files.iter().map(|(n, b)| (*n, *b, 0o644)).collect();
    tar_with_modes(&with_modes)
}

/// A tar of `files` (name, bytes, mode), owner 0, dated 0.
fn tar_with_modes(files: &[(&str, &[u8], u32)]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *bytes)?;
    }
    builder.into_inner()
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn manifest(layout: &Layout, config: Value, layers: Vec<Value>, module: &Module) -> io::Result<Value> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": annotations(module),
    });
    layout.json_blob(MANIFEST, &manifest)
}

fn compat(layout: &Layout, module: &Module) -> io::Result<Value> {
    let tar = tar(&[("plugin.wasm", &module.wasm), ("schema.json", &module.schema)])?;
    let layer = layout.blob(TAR_GZIP_LAYER, &gzip(&tar)?, None)?;
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [digest(&tar)] },
    });
    let config = layout.json_blob(IMAGE_CONFIG, &config)?;
    manifest(layout, config, vec![layer], module)
}

fn artifact(layout: &Layout, module: &Module) -> io::Result<Value> {
    let wasm = layout.blob(WASM_LAYER, &module.wasm, titled("plugin.wasm"))?;
    let schema = layout.blob(SCHEMA_LAYER, &module.schema, titled("schema.json"))?;
    let config = json!({ "type": "envoy_proxy", "abiVersions": ["v0.2.1"] });
    let config = layout.json_blob(WASM_CONFIG, &config)?;
    manifest(layout, config, vec![wasm, schema], module)
}

/// A program's container image: one static executable as `/bin/<name>`.
#[derive(Debug, Clone)]
pub struct Program {
    /// The image's repository name (`ratelimit-engine`).
    pub name: String,
    /// The path of the executable in the image (`bin/ratelimit`).
    pub path: String,
    /// Its version, the tag.
    pub version: String,
    /// The statically linked executable.
    pub binary: Vec<u8>,
    /// `org.opencontainers.image.description`.
    pub description: String,
    /// `org.opencontainers.image.source`, when known.
    pub source: Option<String>,
    /// Ports the program listens on (`ExposedPorts`).
    pub ports: Vec<u16>,
    /// More files (path in the image, bytes), mode 0644.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The user a program's image runs as: `nonroot` (65532), as distroless
/// images name it.
pub const NONROOT: &str = "65532:65532";

/// Writes `program`'s image into the OCI image layout `dir` (replacing what
/// was there): one layer holding the executable (mode 0755) and the
/// `/etc/passwd` and `/etc/group` naming `nonroot` (and the program's other
/// files), run as that user, the executable its entrypoint. Every byte is
/// fixed by the files': the same binary gives the same digest.
pub fn write_program_layout(dir: &Path, program: &Program) -> io::Result<Image> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let layout = Layout { dir };
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let passwd = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
    let group = b"root:x:0:\nnonroot:x:65532:\n";
    let mut entries: Vec<(&str, &[u8], u32)> =
        vec![(&program.path, &program.binary, 0o755), ("etc/passwd", passwd, 0o644), ("etc/group", group, 0o644)];
    entries.extend(program.files.iter().map(|(path, bytes)| (path.as_str(), bytes.as_slice(), 0o644)));
    let tar = tar_with_modes(&entries)?;
    let layer = layout.blob(TAR_GZIP_LAYER, &gzip(&tar)?, None)?;
    let ports: serde_json::Map<String, Value> = program.ports.iter().map(|p| (format!("{p}/tcp"), json!({}))).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": NONROOT,
            "Entrypoint": [format!("/{}", program.path)],
            "ExposedPorts": ports,
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [digest(&tar)] },
    });
    let config = layout.json_blob(IMAGE_CONFIG, &config)?;
    let mut annotations = json!({
        "org.opencontainers.image.title": program.name,
        "org.opencontainers.image.description": program.description,
        "org.opencontainers.image.version": program.version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });
    if let (Some(source), Some(map)) = (&program.source, annotations.as_object_mut()) {
        map.insert("org.opencontainers.image.source".into(), json!(source));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [layer],
        "annotations": annotations,
    });
    let desc = layout.json_blob(MANIFEST, &manifest)?;
    let mut entry = desc.clone();
    if let Some(map) = entry.as_object_mut() {
        map.insert("annotations".into(), json!({ "org.opencontainers.image.ref.name": program.version }));
    }
    let index =
        json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry] });
    fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index).map_err(io::Error::other)?)?;
    let digest = desc.get("digest").and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(Image { tag: program.version.clone(), digest, variant: "image" })
}

/// Where the image keeps its CA bundle (the system roots TLS to Redis, to
/// the xDS server and to an OTLP/gRPC collector falls back on, as in
/// upstream's image).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// The ratelimit engine's image as `make oci` writes it, from the static
/// executable at `binary` and the CA bundle `roots` (PEM; the building
/// machine's, `ca-certificates`).
pub fn engine_program(binary: Vec<u8>, roots: Option<Vec<u8>>, source: Option<String>) -> Program {
    Program {
        name: "ratelimit-engine".into(),
        path: "bin/ratelimit".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        binary,
        description: "ratelimit-engine: a drop-in for envoyproxy/ratelimit's image (/bin/ratelimit, its \
                      environment variables), counting in Redis"
            .into(),
        source,
        ports: vec![8080, 8081, 6070],
        files: roots.map(|r| vec![(CA_BUNDLE.to_string(), r)]).unwrap_or_default(),
    }
}

/// Writes `module`'s two images into the OCI image layout `dir` (replacing
/// what was there); returns them, compat first.
pub fn write_layout(dir: &Path, module: &Module) -> io::Result<Vec<Image>> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let layout = Layout { dir };
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut entries = Vec::new();
    let mut images = Vec::new();
    for (variant, tag, desc) in [
        ("compat", module.version.clone(), compat(&layout, module)?),
        ("oci", format!("{}-oci", module.version), artifact(&layout, module)?),
    ] {
        let mut entry = desc.clone();
        if let Some(map) = entry.as_object_mut() {
            map.insert("annotations".into(), json!({ "org.opencontainers.image.ref.name": tag }));
        }
        entries.push(entry);
        let digest = desc.get("digest").and_then(Value::as_str).unwrap_or_default().to_string();
        images.push(Image { tag, digest, variant });
    }
    let index =
        json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries });
    fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index).map_err(io::Error::other)?)?;
    Ok(images)
}

fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("unsupported digest {digest}"))?;
    let bytes = fs::read(dir.join("blobs/sha256").join(hex)).map_err(|e| format!("blob {digest}: {e}"))?;
    if self::digest(&bytes) != digest {
        return Err(format!("blob {digest} does not match its digest"));
    }
    Ok(bytes)
}

fn layers(manifest: &Value) -> Vec<(String, String)> {
    let list = manifest.get("layers").and_then(Value::as_array).cloned().unwrap_or_default();
    list.iter()
        .map(|l| {
            let field = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            (field("mediaType"), field("digest"))
        })
        .collect()
}

/// The module in the image `digest` of the layout `dir`, extracted as
/// Istio's fetcher (`pkg/wasm/imagefetcher.go`, which Envoy Gateway reuses)
/// does: the compat variant first (the last layer must be a gzipped tar;
/// the first entry named `plugin.wasm`), then the oci variant (exactly two
/// layers, the one of the Wasm content type holding the raw module).
pub fn extract_like_istio(dir: &Path, digest: &str) -> Result<Vec<u8>, String> {
    let manifest: Value =
        serde_json::from_slice(&read_blob(dir, digest)?).map_err(|e| format!("manifest {digest}: {e}"))?;
    let layers = layers(&manifest);
    let compat = match layers.last() {
        Some((media, d)) if media == TAR_GZIP_LAYER => plugin_wasm(&read_blob(dir, d)?),
        Some((media, _)) => Err(format!("invalid media type {media} (expect {TAR_GZIP_LAYER})")),
        None => Err("number of layers must be greater than zero".to_string()),
    };
    let compat_error = match compat {
        Ok(wasm) => return Ok(wasm),
        Err(e) => e,
    };
    if layers.len() != 2 {
        return Err(format!("compat: {compat_error}; oci: number of layers must be 2 but got {}", layers.len()));
    }
    match layers.iter().find(|(media, _)| media == WASM_LAYER) {
        Some((_, d)) => read_blob(dir, d),
        None => Err(format!("compat: {compat_error}; oci: could not find the layer of type {WASM_LAYER}")),
    }
}

fn plugin_wasm(gzipped: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gzipped));
    let entries = archive.entries().map_err(|e| format!("failed to parse layer as tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.file_name().and_then(|n| n.to_str()) == Some("plugin.wasm") {
            let mut out = Vec::new();
            entry.read_to_end(&mut out).map_err(|e| e.to_string())?;
            return Ok(out);
        }
    }
    Err("plugin.wasm not found in the archive".to_string())
}

/// The digest of the image tagged `tag` in the layout `dir`.
pub fn tagged(dir: &Path, tag: &str) -> Result<String, String> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let entries = index.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
    entries
        .iter()
        .find(|m| m.pointer("/annotations/org.opencontainers.image.ref.name").and_then(Value::as_str) == Some(tag))
        .and_then(|m| m.get("digest").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| format!("no image tagged {tag} in {}", dir.display()))
}
