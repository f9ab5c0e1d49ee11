//! Stream replies as the engine reads them (`XREAD`, `XREADGROUP`, `XAUTOCLAIM`, `XRANGE`),
//! RESP2 or RESP3, in one place for the worker's queue and the progress events. Parsing is
//! lenient about entries (one malformed entry never hides the others) and strict about the
//! reply's shape.

use redis::Value;

/// One stream entry: its id and its field/value pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

/// The value of field `name` among an entry's fields.
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A reply item as text, when it is text (or a number).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Key/value pairs of a RESP2 flat array or a RESP3 map (pairs that are not text skipped).
pub(crate) fn pairs(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Array(flat) => flat
            .chunks_exact(2)
            .filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
            .collect(),
        Value::Map(map) => map
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The entries of an `XREAD` / `XREADGROUP` reply, every stream's in order: RESP2
/// `[[stream, entries], ...]`, RESP3 `{stream: entries}`, or nil when the block ran out.
pub(crate) fn read_reply(v: &Value) -> Result<Vec<Entry>, String> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => Ok(streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(parts) => parts.get(1).map(entries),
                _ => None,
            })
            .flatten()
            .collect()),
        Value::Map(streams) => Ok(streams.iter().flat_map(|(_, e)| entries(e)).collect()),
        other => Err(format!("unexpected stream read reply {other:?}")),
    }
}

/// Stream entries `[[id, fields], ...]` (an `XRANGE` reply, `XAUTOCLAIM`'s second item). An
/// entry without a readable id is skipped; one with unreadable fields is kept without them,
/// so its id can still be acknowledged.
pub(crate) fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let Value::Array(parts) = e else { return None };
            Some(Entry {
                id: text(parts.first()?)?,
                fields: parts.get(1).map(pairs).unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_parse_from_resp2_and_resp3_and_tolerate_garbage() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("r"), bulk("run"), bulk("s"), bulk("3")]),
            ]),
            Value::Array(vec![
                bulk("2-0"),
                Value::Map(vec![(bulk("r"), bulk("other"))]),
            ]),
            // Unreadable fields: kept, so the entry can be acknowledged.
            Value::Array(vec![bulk("3-0"), Value::Nil]),
            Value::Int(7),
            Value::Array(vec![Value::Nil]),
        ]);
        let want = vec![
            Entry {
                id: "1-0".into(),
                fields: vec![("r".into(), "run".into()), ("s".into(), "3".into())],
            },
            Entry {
                id: "2-0".into(),
                fields: vec![("r".into(), "other".into())],
            },
            Entry {
                id: "3-0".into(),
                fields: vec![],
            },
        ];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("q"), entries.clone()])]);
        assert_eq!(read_reply(&resp2), Ok(want.clone()));
        let resp3 = Value::Map(vec![(bulk("q"), entries)]);
        assert_eq!(read_reply(&resp3), Ok(want.clone()));
        assert_eq!(read_reply(&Value::Nil), Ok(vec![]));
        assert!(read_reply(&Value::Int(1)).is_err());
        assert_eq!(field(&want[0].fields, "s"), Some("3"));
        assert_eq!(field(&want[0].fields, "t"), None);
    }
}
