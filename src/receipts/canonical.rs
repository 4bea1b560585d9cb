//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant white space, so
//! that the bytes a signature covers are unambiguous and anyone can reproduce them
//! (`json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in Python).

use serde_json::Value;

/// The `previous` hash of the first link of a chain, the receipts' and the audit log's alike.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_recursively_without_spaces() {
        let v: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [1, {"z": 0, "y": "ü"}], "c": null}}"#)
                .unwrap();
        assert_eq!(
            to_string(&v),
            r#"{"a":{"c":null,"d":[1,{"y":"ü","z":0}]},"b":1}"#
        );
    }
}
