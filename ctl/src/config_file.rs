//! Pod and container configs from files, in crictl's format, so crictl recipes work as
//! they are.
//!
//! crictl reads JSON (or YAML, turned into JSON first) into the Go CRI structs, whose JSON
//! names are the proto field names in snake_case (`log_directory`, `namespace_options`),
//! enums are numbers (`"network": 2`), and any field may be left out. Go matches keys
//! without regard to case; berthctl also takes the camelCase names protobuf's JSON uses.
//!
//! k8s-cri's serde derive wants every non-optional field present, so the file is laid over
//! a full skeleton of the message (every field at its default) before it is deserialized:
//! missing fields get their defaults, and messages the file leaves out stay absent.

use std::path::Path;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::client::CtlError;

/// Reads `path` (JSON, or YAML when it does not parse as JSON) as a `T`.
pub fn load<T: DeserializeOwned + Serialize>(path: &Path) -> Result<T, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::Usage(format!("cannot read config file {}: {e}", path.display())))?;
    parse(&text).map_err(|e| CtlError::Usage(format!("config file {}: {e}", path.display())))
}

/// Parses `text` (JSON or YAML) as a `T`.
pub fn parse<T: DeserializeOwned + Serialize>(text: &str) -> Result<T, String> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(json_error) => match serde_norway::from_str::<Value>(text) {
            Ok(value) => value,
            Err(yaml_error) => {
                return Err(format!("neither JSON ({json_error}) nor YAML ({yaml_error})"));
            }
        },
    };
    if !value.is_object() {
        return Err("expected an object at the top (e.g. {\"metadata\": {...}})".to_string());
    }
    let skeleton = skeleton::<T>()?;
    let merged = overlay(&skeleton, value);
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

/// Every field of `T` at its default, nested messages included (as `Some(default)`).
fn skeleton<T: DeserializeOwned + Serialize>() -> Result<Value, String> {
    let full = T::deserialize(DefaultDeserializer { depth: 0 }).map_err(|e| format!("internal: {e}"))?;
    serde_json::to_value(&full).map_err(|e| format!("internal: {e}"))
}

/// `file` laid over `skeleton`: keys of the file matched to the skeleton's field names
/// (exactly, then ignoring case and underscores); fields the file leaves out get their
/// default, except nested messages, which stay absent (`null`), as in the proto.
fn overlay(skeleton: &Value, file: Value) -> Value {
    let Value::Object(fields) = skeleton else {
        // YAML reads `command: [sleep, 3600]` as a number where CRI wants a string.
        return match (skeleton, file) {
            (Value::String(_), scalar @ (Value::Number(_) | Value::Bool(_))) => Value::String(scalar.to_string()),
            (_, file) => file,
        };
    };
    let given = match file {
        Value::Object(given) => given,
        other => return other,
    };
    // An empty skeleton object is a map (labels, annotations): user keys, kept as given;
    // every CRI map holds strings, so `replicas: 3` becomes "3" as in a kubelet manifest.
    if fields.is_empty() {
        let strings = given.into_iter().map(|(key, value)| match value {
            scalar @ (Value::Number(_) | Value::Bool(_)) => (key, Value::String(scalar.to_string())),
            other => (key, other),
        });
        return Value::Object(strings.collect());
    }
    let mut given: Vec<(String, Value)> = given.into_iter().collect();
    let mut out = Map::new();
    for (name, default) in fields {
        let found = given
            .iter()
            .position(|(k, _)| k == name)
            .or_else(|| given.iter().position(|(k, _)| loose(k) == loose(name)));
        let value = match found {
            Some(i) => {
                let (_, value) = given.swap_remove(i);
                match (default, value) {
                    (_, Value::Null) => default_when_absent(default),
                    (Value::Object(_), value @ Value::Object(_)) => overlay(default, value),
                    (Value::Array(items), Value::Array(values)) => match items.first() {
                        // The skeleton holds no list items; a list of messages is read
                        // item by item against the item's skeleton where one is known.
                        Some(item) => Value::Array(values.into_iter().map(|v| overlay(item, v)).collect()),
                        None => Value::Array(values),
                    },
                    (_, value) => value,
                }
            }
            None => default_when_absent(default),
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

fn default_when_absent(default: &Value) -> Value {
    match default {
        // A nested message the file does not give stays unset, as in crictl.
        Value::Object(fields) if !fields.is_empty() => Value::Null,
        Value::Array(_) => Value::Array(Vec::new()),
        other => other.clone(),
    }
}

/// `logDirectory`, `log_directory` and `LogDirectory` all become `logdirectory`.
fn loose(key: &str) -> String {
    key.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// A deserializer that answers every request with the type's default: "" for strings, 0,
/// false, empty lists and maps, `Some(default)` for options (so nested messages appear
/// with all their fields), one default item for lists (so list items have a skeleton).
struct DefaultDeserializer {
    depth: usize,
}

/// CRI messages nest a few levels; this only guards against a recursive message type.
const MAX_DEPTH: usize = 16;

#[derive(Debug)]
struct DefaultError(String);

impl std::fmt::Display for DefaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DefaultError {}

impl de::Error for DefaultError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        DefaultError(msg.to_string())
    }
}

macro_rules! default_number {
    ($($method:ident => $visit:ident ($value:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
            visitor.$visit($value)
        })*
    };
}

impl<'de> de::Deserializer<'de> for DefaultDeserializer {
    type Error = DefaultError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
        visitor.visit_unit()
    }

    default_number! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('\0'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_string(String::new()),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_byte_buf(Vec::new()),
        deserialize_identifier => visit_str(""),
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
        if self.depth >= MAX_DEPTH {
            return visitor.visit_none();
        }
        visitor.visit_some(DefaultDeserializer { depth: self.depth + 1 })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, DefaultError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DefaultError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
        // One item, so that lists of messages (mounts, port mappings) have a skeleton.
        let items = if self.depth >= MAX_DEPTH { 0 } else { 1 };
        visitor.visit_seq(DefaultSeq { remaining: items, depth: self.depth + 1 })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DefaultError> {
        visitor.visit_seq(DefaultSeq { remaining: 0, depth: self.depth + 1 })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DefaultError> {
        visitor.visit_seq(DefaultSeq { remaining: 0, depth: self.depth + 1 })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DefaultError> {
        visitor.visit_map(DefaultStruct { fields: &[], next: 0, depth: self.depth + 1 })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DefaultError> {
        visitor.visit_map(DefaultStruct { fields, next: 0, depth: self.depth + 1 })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, DefaultError> {
        // CRI v1 configs have no oneof; refuse rather than guess a variant.
        Err(DefaultError("enums (oneof) have no default here".to_string()))
    }
}

struct DefaultSeq {
    remaining: usize,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for DefaultSeq {
    type Error = DefaultError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, DefaultError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(DefaultDeserializer { depth: self.depth }).map(Some)
    }
}

struct DefaultStruct {
    fields: &'static [&'static str],
    next: usize,
    depth: usize,
}

impl<'de> MapAccess<'de> for DefaultStruct {
    type Error = DefaultError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DefaultError> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        seed.deserialize((*field).into_deserializer()).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DefaultError> {
        seed.deserialize(DefaultDeserializer { depth: self.depth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

    #[test]
    fn crictl_pod_recipe() {
        let config: PodSandboxConfig = parse(
            r#"{
              "metadata": {"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "hdishd83djaidwnduwk28bcsb"},
              "log_directory": "/tmp",
              "labels": {"app_name": "web"},
              "port_mappings": [{"protocol": 0, "container_port": 80, "host_port": 8080}],
              "linux": {"security_context": {"namespace_options": {"network": 2, "pid": 1}}}
            }"#,
        )
        .unwrap();
        let metadata = config.metadata.as_ref().unwrap();
        assert_eq!(metadata.name, "nginx-sandbox");
        assert_eq!(metadata.attempt, 1);
        assert_eq!(config.log_directory, "/tmp");
        assert_eq!(config.labels["app_name"], "web");
        assert_eq!(config.port_mappings[0].host_port, 8080);
        let options = config.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!((options.network, options.pid), (2, 1));
        assert!(config.dns_config.is_none(), "messages the file leaves out stay unset");
    }

    #[test]
    fn crictl_container_recipe_in_yaml_and_camel_case() {
        let config: ContainerConfig = parse(
            "metadata:\n  name: busybox\nimage:\n  image: busybox\ncommand: [top]\nlogPath: busybox.log\n\
             envs:\n  - key: A\n    value: b\nmounts:\n  - container_path: /data\n    host_path: /tmp\n    readonly: true\nlinux: {}\n",
        )
        .unwrap();
        assert_eq!(config.metadata.unwrap().name, "busybox");
        assert_eq!(config.image.unwrap().image, "busybox");
        assert_eq!(config.command, vec!["top"]);
        assert_eq!(config.log_path, "busybox.log");
        assert_eq!(config.envs[0].key, "A");
        assert!(config.mounts[0].readonly);
        assert!(config.linux.is_some());
    }

    #[test]
    fn yaml_numbers_where_strings_belong() {
        let config: ContainerConfig =
            parse("metadata: {name: n}\ncommand: [sleep, 3600]\nlabels: {replicas: 3, debug: true}\n").unwrap();
        assert_eq!(config.command, vec!["sleep", "3600"]);
        assert_eq!(config.labels["replicas"], "3");
        assert_eq!(config.labels["debug"], "true");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(parse::<PodSandboxConfig>("[1, 2]").unwrap_err().contains("object"));
        assert!(parse::<PodSandboxConfig>("{\"metadata\": {\"name\": 5}}").is_err());
        assert!(parse::<PodSandboxConfig>("{ not: [json").is_err());
    }
}
