//! A module's configuration schema with each field's meaning and default,
//! read from the configuration tables of the filter's README: the schema's
//! shape comes from the parser's types ([`filters_core::schema`]), its words
//! from the same rows users read, so neither can drift from the other.
//!
//! A table counts when its first header cell is `Field`, `` `x` field ``
//! (rows are fields of `x`), `Traefik field` (fields of `traefik`) or
//! `Section` (the bundle's). A row names one or more fields in backquotes
//! (`limits[].name`; `ipv4_prefix`, `ipv6_prefix`); the description is the
//! row's other cells. Every row must name a field the parser has, and every
//! field must be described by its own row or within its parent's.

use serde_json::{json, Map, Value};

/// One documented field: where it is (`limits[].name`) and what the README says.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The field's path from the configuration's root.
    pub path: String,
    /// The row's description, one line of Markdown.
    pub text: String,
}

/// The configuration rows of a README.
pub fn rows(readme: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut table: Option<(String, Vec<String>)> = None;
    for line in readme.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            table = None;
            continue;
        }
        let cells = split_cells(line);
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
            continue;
        }
        let Some((prefix, headers)) = &table else {
            table = cells.first().and_then(|first| table_prefix(first)).map(|p| (p, cells.clone()));
            continue;
        };
        let Some(first) = cells.first() else { continue };
        let text = describe(headers, &cells);
        for name in backquoted(first) {
            out.push(Row { path: format!("{prefix}{name}"), text: text.clone() });
        }
    }
    out
}

fn split_cells(line: &str) -> Vec<String> {
    let inner = line.trim_matches('|');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    for ch in inner.chars() {
        match ch {
            '`' => {
                in_code = !in_code;
                cell.push(ch);
            }
            '|' if !in_code => cells.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(ch),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

/// The path prefix of a configuration table's rows, from its first header cell.
fn table_prefix(first: &str) -> Option<String> {
    match first {
        "Field" | "Section" => Some(String::new()),
        "Traefik field" => Some("traefik.".into()),
        _ => {
            let name = first.strip_suffix(" field")?.trim_matches('`');
            (!name.contains(' ')).then(|| format!("{name}."))
        }
    }
}

fn backquoted(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// A row as one line: the `Meaning` cell first, the others as `Header: cell.`;
/// links keep their text only (their targets are relative to the README).
fn describe(headers: &[String], cells: &[String]) -> String {
    let mut meaning = String::new();
    let mut rest = Vec::new();
    for (header, cell) in headers.iter().zip(cells).skip(1) {
        if header == "Meaning" {
            meaning = cell.clone();
        } else {
            rest.push(format!("{header}: {}.", cell.trim_end_matches('.')));
        }
    }
    let mut text = meaning;
    for part in rest {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&part);
    }
    strip_links(&text)
}

fn strip_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let link = after.find("](").and_then(|mid| after.get(mid..)?.find(')').map(|end| (mid, mid + end)));
        match link {
            Some((mid, end)) => {
                out.push_str(after.get(1..mid).unwrap_or_default());
                rest = after.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push('[');
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Follows `$ref`s and the object branch of an `anyOf` (an `Option`) to the
/// JSON pointer of the schema that has `properties` or `items`.
fn resolve(root: &Value, mut pointer: String) -> String {
    for _ in 0..16 {
        let Some(node) = root.pointer(&pointer) else { return pointer };
        if let Some(target) = node.get("$ref").and_then(Value::as_str) {
            pointer = target.trim_start_matches('#').to_string();
            continue;
        }
        let branch = node.get("anyOf").and_then(Value::as_array).and_then(|branches| {
            branches.iter().position(|b| b.get("$ref").is_some() || b.get("properties").is_some())
        });
        match branch {
            Some(i) if node.get("properties").is_none() => pointer = format!("{pointer}/anyOf/{i}"),
            _ => return pointer,
        }
    }
    pointer
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The pointer of the property schema a row's path names, if the schema has
/// it; `a[].b` is the field `b` of the items of the list `a`.
fn property_pointer(root: &Value, path: &str) -> Option<String> {
    let mut within = String::new();
    let mut property = None;
    for segment in path.split('.') {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        let here = format!("{}/properties/{}", resolve(root, within), escape(name));
        root.pointer(&here)?;
        within = if items {
            let list_items = format!("{}/items", resolve(root, here.clone()));
            root.pointer(&list_items)?;
            list_items
        } else {
            here.clone()
        };
        property = Some(here);
    }
    property
}

/// Adds the rows' descriptions to `schema`; the errors name rows without a
/// field and fields without a row.
pub fn document(schema: &mut Value, rows: &[Row]) -> Vec<String> {
    let mut errors = Vec::new();
    for row in rows {
        match property_pointer(schema, &row.path) {
            Some(pointer) => {
                if let Some(Value::Object(node)) = schema.pointer_mut(&pointer) {
                    node.insert("description".into(), Value::String(row.text.clone()));
                }
            }
            None => errors.push(format!("README row `{}` names no field of the configuration", row.path)),
        }
    }
    undocumented(schema, "", String::new(), false, 0, &mut errors);
    errors
}

fn undocumented(root: &Value, path: &str, pointer: String, described: bool, depth: u32, errors: &mut Vec<String>) {
    if depth > 12 {
        return;
    }
    let object = resolve(root, pointer);
    if let Some(items) = root.pointer(&format!("{object}/items")) {
        if items.is_object() {
            undocumented(root, &format!("{path}[]"), format!("{object}/items"), described, depth + 1, errors);
        }
        return;
    }
    let Some(Value::Object(properties)) = root.pointer(&format!("{object}/properties")) else { return };
    for (name, property) in properties {
        let here = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let has = property.get("description").is_some();
        if !has && !described {
            errors.push(format!("field `{here}` has no README row (nor does any field it is part of)"));
        }
        let child = format!("{object}/properties/{}", escape(name));
        undocumented(root, &here, child, has || described, depth + 1, errors);
    }
}

/// The published schema of `module`: the parser's shape, the README's words.
/// `readmes` gives the README text of a module by name (the bundle reads its
/// own and the four filters').
pub fn module_schema(module: &str, readme: &dyn Fn(&str) -> Option<String>) -> Result<Value, Vec<String>> {
    let m = filters_core::modules::module(module).ok_or_else(|| vec![format!("unknown module \"{module}\"")])?;
    let mut schema = (m.schema)().to_value();
    let mut all_rows = rows(&readme(module).ok_or_else(|| vec![format!("no README for {module}")])?);
    if module == "bundle" {
        for m in filters_core::modules::MODULES.iter() {
            let (Some(section), filter) = (m.section, m.name) else { continue };
            let text = readme(filter).ok_or_else(|| vec![format!("no README for {filter}")])?;
            // `trace` and `metrics_path` are the bundle's own, at its top level.
            let bundle_level = |r: &Row| r.path == "trace" || r.path == "metrics_path";
            all_rows.extend(
                rows(&text)
                    .into_iter()
                    .filter(|r| !bundle_level(r))
                    .map(|r| Row { path: format!("{section}.{}", r.path), ..r }),
            );
        }
    }
    let errors = document(&mut schema, &all_rows);
    if !errors.is_empty() {
        return Err(errors.into_iter().map(|e| format!("{module}: {e}")).collect());
    }
    if let Value::Object(map) = &mut schema {
        decorate(map, module);
    }
    Ok(schema)
}

fn decorate(map: &mut Map<String, Value>, module: &str) {
    map.insert("$id".into(), json!(format!("{module}.schema.json")));
    map.insert("title".into(), json!(format!("{module} filter configuration")));
    map.insert(
        "description".into(),
        json!(format!(
            "The plugin configuration of the {module} Proxy-Wasm filter (filters/{module}/README.md). \
             Generated from the types that parse it; the filter still refuses at load what a schema \
             cannot express (unique names, combinations of fields), with one log line."
        )),
    );
}
