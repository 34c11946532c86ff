//! A sample Envoy config for the native build, made from the Wasm one: each
//! `envoy.filters.http.wasm` filter becomes an
//! `envoy.filters.http.dynamic_modules` filter of `libresilience.so` with
//! the same policy (`filter_name`, the `.wasm` file's stem) and exactly the
//! same JSON configuration. Everything else (listeners, routes, clusters,
//! stats tags) is kept, so that a test or a demo runs one sample against
//! both builds. `make run CONFIG=<sample>-native` and the tests' `Build`
//! use it.

/// Where `make build` puts the native module.
pub const NATIVE_MODULE: &str = "target/native/libresilience.so";

/// `yaml` with every Wasm filter replaced by its native twin; an error
/// names a Wasm filter it could not read.
pub fn to_native(yaml: &str) -> Result<String, String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = String::with_capacity(yaml.len());
    let mut i = 0;
    let mut converted = 0;
    while let Some(line) = lines.get(i) {
        if line.trim() != "- name: envoy.filters.http.wasm" {
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        // The filter's lines: until one as indented or less that is not a
        // continuation of it.
        let mut end = i + 1;
        while let Some(l) = lines.get(end) {
            let own = l.len() - l.trim_start().len();
            if !l.trim().is_empty() && own <= indent {
                break;
            }
            end += 1;
        }
        let block = lines.get(i..end).unwrap_or_default();
        out.push_str(&native_filter(block, indent).map_err(|e| format!("the Wasm filter at line {}: {e}", i + 1))?);
        converted += 1;
        i = end;
    }
    if converted == 0 {
        return Err("no envoy.filters.http.wasm filter".into());
    }
    Ok(out)
}

fn native_filter(block: &[&str], indent: usize) -> Result<String, String> {
    let stem = block
        .iter()
        .find_map(|l| l.split("filename: target/wasm/").nth(1))
        .and_then(|rest| rest.split(".wasm").next())
        .ok_or("no `filename: target/wasm/<module>.wasm`")?;
    let value_at = block.iter().position(|l| l.trim() == "value: |").ok_or("no `value: |` configuration")?;
    let value_indent = block.get(value_at).map_or(0, |l| l.len() - l.trim_start().len());
    let json: Vec<&str> = block
        .iter()
        .skip(value_at + 1)
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > value_indent)
        .copied()
        .collect();
    let pad = " ".repeat(indent);
    let mut out = format!(
        "{pad}- name: envoy.filters.http.dynamic_modules\n\
         {pad}  typed_config:\n\
         {pad}    \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter\n\
         {pad}    dynamic_module_config:\n\
         {pad}      name: resilience\n\
         {pad}      module:\n\
         {pad}        local: {{ filename: {NATIVE_MODULE} }}\n\
         {pad}    filter_name: {stem}\n\
         {pad}    filter_config:\n\
         {pad}      \"@type\": type.googleapis.com/google.protobuf.StringValue\n\
         {pad}      value: |\n"
    );
    let json_indent = json.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min();
    for l in &json {
        let text = l.get(json_indent.unwrap_or(0)..).unwrap_or("").trim_end();
        out.push_str(&format!("{pad}        {text}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_a_native_twin_with_the_same_configuration() {
        let dir = crate::root().join("envoy");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.contains("envoy.filters.http.wasm") {
                continue;
            }
            let native = to_native(&text).unwrap();
            assert!(!native.contains("envoy.filters.http.wasm"), "{}", path.display());
            assert!(native.contains(NATIVE_MODULE));
            // The plugin configuration is the Wasm sample's, byte for byte
            // once indentation is set aside.
            let squash = |s: &str| s.split_whitespace().collect::<String>();
            let json = |s: &str| -> String {
                let start = s.find("value: |").unwrap() + "value: |".len();
                squash(&s[start..start + s[start..].find("- name: envoy.filters.http.router").unwrap()])
            };
            let (wasm_json, native_json) = (json(&text), json(&native));
            assert!(wasm_json.starts_with(&native_json[..native_json.len().min(40)]), "{}", path.display());
            n += 1;
        }
        assert!(n >= 8, "{n} samples");
    }

    #[test]
    fn the_policy_is_the_wasm_files_stem() {
        let yaml = "x:\n  - name: envoy.filters.http.wasm\n    typed_config:\n      config:\n        vm_config:\n          code:\n            local: { filename: target/wasm/retry.wasm }\n        configuration:\n          value: |\n            {\"policies\": []}\n  - name: envoy.filters.http.router\n";
        let native = to_native(yaml).unwrap();
        assert!(native.contains("filter_name: retry\n"), "{native}");
        assert!(native.contains("          {\"policies\": []}\n"), "{native}");
        assert!(native.ends_with("  - name: envoy.filters.http.router\n"), "{native}");
        assert!(to_native("a: 1\n").is_err());
    }
}
