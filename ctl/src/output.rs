//! Printing: aligned tables as crictl prints them, and CRI responses as JSON or YAML.
//!
//! JSON and YAML follow crictl's shape so that scripts written for `crictl inspect | jq`
//! keep working: camelCase keys (protobuf's JSON names), pod and container states by name,
//! and `info` values that hold JSON embedded as JSON rather than as strings.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::{DocFormat, OutputFormat};

/// Ids in tables are cut to this many characters unless `--no-trunc` (as crictl).
pub const TRUNCATED_ID_LEN: usize = 13;

/// Columns separated by at least this many spaces.
const COLUMN_GAP: usize = 3;

/// A table whose columns are padded to their widest cell.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - cell.chars().count() + COLUMN_GAP;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print_str(&self.render());
    }
}

/// Writes to stdout; a closed pipe (`berthctl ps | head -1`) ends quietly.
pub fn print_str(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()).is_err() {
        std::process::exit(0);
    }
}

/// `id` cut to [`TRUNCATED_ID_LEN`] unless `no_trunc`; image ids lose `sha256:` first.
pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        return id.to_string();
    }
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(TRUNCATED_ID_LEN).collect()
}

/// Bytes as crictl prints image sizes: `4.26MB`, `512B` (decimal units, three
/// significant digits as Go's units.HumanSize).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    format!("{text}{}", UNITS[unit])
}

/// How long ago `nanos` (Unix time in nanoseconds) was: `5 seconds ago`, `About a minute ago`.
pub fn age(nanos: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let then = Duration::from_nanos(nanos.max(0) as u64);
    format!("{} ago", human_duration(now.saturating_sub(then)))
}

/// A duration as Docker's units.HumanDuration words it.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// Prints `value` as a JSON or YAML document in crictl's shape.
pub fn print_doc<T: Serialize>(value: &T, format: DocFormat) -> anyhow::Result<()> {
    let value = crictl_shape(serde_json::to_value(value)?);
    let text = match format {
        DocFormat::Json => serde_json::to_string_pretty(&value)? + "\n",
        DocFormat::Yaml => serde_norway::to_string(&value)?,
    };
    print_str(&text);
    Ok(())
}

/// crictl's document for a status answer: `{"status": <status>, <info key>: <info value>}`,
/// each info value parsed as JSON where it is JSON (so `.info.pid` and `.config` work as
/// with crictl), and `extra` fields (e.g. `runtimeHandlers`) beside them.
pub fn status_doc<S: Serialize>(
    status: &S,
    info: &std::collections::HashMap<String, String>,
    extra: &[(&str, Value)],
) -> anyhow::Result<Value> {
    let mut doc = Map::new();
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    for key in keys {
        let value = Value::String(info[key].clone());
        doc.insert(key.clone(), parse_embedded_json(value));
    }
    for (key, value) in extra {
        doc.insert(camel_case(key), crictl_shape(value.clone()));
    }
    doc.insert("status".to_string(), crictl_shape(serde_json::to_value(status)?));
    Ok(Value::Object(doc))
}

/// Prints documents made by [`status_doc`]: one as itself, several as a list.
pub fn print_status_docs(docs: Vec<Value>, format: DocFormat) -> anyhow::Result<()> {
    let value = match docs.len() {
        0 => return Ok(()),
        1 => docs.into_iter().next().unwrap_or_default(),
        _ => Value::Array(docs),
    };
    let text = match format {
        DocFormat::Json => serde_json::to_string_pretty(&value)? + "\n",
        DocFormat::Yaml => serde_norway::to_string(&value)?,
    };
    print_str(&text);
    Ok(())
}

/// [`print_doc`] for list commands, whose `-o` also offers `table`; returns false for
/// `table` (the caller prints its table).
pub fn print_list_doc<T: Serialize>(value: &T, format: OutputFormat) -> anyhow::Result<bool> {
    match format {
        OutputFormat::Table => Ok(false),
        OutputFormat::Json => print_doc(value, DocFormat::Json).map(|_| true),
        OutputFormat::Yaml => print_doc(value, DocFormat::Yaml).map(|_| true),
    }
}

/// Keys whose values are maps of user data: their keys are kept as they are.
const USER_MAPS: [&str; 5] = ["labels", "annotations", "info", "label_selector", "extra"];

/// Turns serde's snake_case rendering of a CRI message into crictl's JSON: camelCase
/// keys, state enums by name, JSON strings under `info` parsed.
pub fn crictl_shape(value: Value) -> Value {
    shape(value, None)
}

fn shape(value: Value, key: Option<&str>) -> Value {
    match value {
        Value::Object(map) => {
            let keep_keys = key.is_some_and(|k| USER_MAPS.contains(&k));
            let state_names = state_names_of(&map);
            let mut out = Map::new();
            for (k, v) in map {
                let v = if keep_keys {
                    if key == Some("info") {
                        parse_embedded_json(v)
                    } else {
                        v
                    }
                } else if k == "state" {
                    match (v.as_i64(), state_names) {
                        (Some(n), Some(names)) => {
                            Value::String(names.get(n as usize).copied().unwrap_or("UNKNOWN").to_string())
                        }
                        _ => shape(v, Some(&k)),
                    }
                } else {
                    shape(v, Some(&k))
                };
                let name = if keep_keys { k } else { camel_case(&k) };
                out.insert(name, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| shape(v, key)).collect()),
        other => other,
    }
}

/// The names of the numbers under `state` in this object: containers (which name an
/// image) or pods (which name a runtime handler); none for other messages.
fn state_names_of(map: &Map<String, Value>) -> Option<&'static [&'static str]> {
    const CONTAINER: &[&str] = &["CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED", "CONTAINER_UNKNOWN"];
    const POD: &[&str] = &["SANDBOX_READY", "SANDBOX_NOTREADY"];
    if map.contains_key("image") {
        Some(CONTAINER)
    } else if map.contains_key("runtime_handler") {
        Some(POD)
    } else {
        None
    }
}

/// `info` values are often JSON documents (berthd's config, a container's spec).
fn parse_embedded_json(value: Value) -> Value {
    match &value {
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => serde_json::from_str(s).unwrap_or(value),
        _ => value,
    }
}

/// `snake_case` → `camelCase`.
pub fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Pod state names as crictl's tables show them.
pub fn pod_state(state: i32) -> &'static str {
    match state {
        0 => "Ready",
        1 => "NotReady",
        _ => "Unknown",
    }
}

/// Container state names as crictl's tables show them.
pub fn container_state(state: i32) -> &'static str {
    match state {
        0 => "Created",
        1 => "Running",
        2 => "Exited",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["ID", "NAME", "STATE"]);
        table.row(vec!["abc".into(), "a-long-name".into(), "Ready".into()]);
        table.row(vec!["abcdef".into(), "x".into(), "NotReady".into()]);
        assert_eq!(
            table.render(),
            "ID       NAME          STATE\nabc      a-long-name   Ready\nabcdef   x             NotReady\n"
        );
    }

    #[test]
    fn sizes_and_ids() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(short_id("sha256:0123456789abcdef0123", false), "0123456789abc");
        assert_eq!(short_id("sha256:0123", true), "sha256:0123");
    }

    #[test]
    fn crictl_shape_names_states_and_keeps_user_keys() {
        let value = serde_json::json!({
            "status": {"id": "x", "state": 1, "created_at": 5, "runtime_handler": "",
                       "labels": {"my_label": "v"}},
            "info": {"info": "{\"pid\": 7}"},
            "containers": [{"id": "c", "image": {"image": "busybox"}, "state": 2}]
        });
        let shaped = crictl_shape(value);
        assert_eq!(shaped["status"]["state"], "SANDBOX_NOTREADY");
        assert_eq!(shaped["status"]["createdAt"], 5);
        assert_eq!(shaped["status"]["labels"]["my_label"], "v");
        assert_eq!(shaped["info"]["info"]["pid"], 7);
        assert_eq!(shaped["containers"][0]["state"], "CONTAINER_EXITED");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(70)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }
}
