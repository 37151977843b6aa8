//! CSV rows of event history (warehouse exports) as JSON events: a header
//! row names the event fields, one event per row, with the names of the
//! JSON events (`event_id`, `customer_id`, `type`, `ts`, `amount`,
//! `loyalty_member`, `coupon`, …; a dotted name such as `properties.rating`
//! is a nested field). Purchases and clickstream rows are told apart by
//! `type`, as JSONL lines are. Each row becomes the JSON object the
//! decoder reads, so a row is held to exactly the rules of a JSON event
//! and a bad row gets the same reason codes.
//!
//! Cells are strings, except: an empty cell is an absent field; `ts` is a
//! number when it is an integer (epoch ms), else text (RFC 3339);
//! `loyalty_member` is a boolean when it is `true` or `false`.

use serde_json::{Map, Value};

use super::{DecodeError, Reason};

/// The fields every event needs: a header without them is not an event file.
const REQUIRED: [&str; 2] = ["customer_id", "type"];

/// A CSV file's header row: the field path of each column.
#[derive(Clone, Debug)]
pub struct CsvHeader {
    /// Each column's field path (`properties.rating`: two names).
    columns: Vec<Vec<String>>,
    /// Each column's name as written, for typing and messages.
    names: Vec<String>,
}

impl CsvHeader {
    /// Reads the header row. Fails (with what is wrong) when a name is empty
    /// or repeated, or `customer_id` or `type` is missing.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<CsvHeader, String> {
        let (mut columns, mut names_seen): (Vec<Vec<String>>, Vec<String>) = (Vec::new(), Vec::new());
        for (i, name) in names.into_iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(format!("column {} has no field name", i + 1));
            }
            let path: Vec<String> = name.split('.').map(str::to_string).collect();
            if columns.contains(&path) {
                return Err(format!("field {name:?} is named twice"));
            }
            columns.push(path);
            names_seen.push(name.to_string());
        }
        for field in REQUIRED {
            if !columns.iter().any(|c| c.len() == 1 && c[0] == field) {
                return Err(format!("no {field:?} column: the header row must name the event fields"));
            }
        }
        Ok(CsvHeader { columns, names: names_seen })
    }

    /// The row's cells as a JSON event. A row with a different number of
    /// cells than the header, or cells that are not UTF-8, is `malformed`.
    pub fn to_json(&self, cells: &csv::ByteRecord) -> Result<Vec<u8>, DecodeError> {
        if cells.len() != self.columns.len() {
            return Err(DecodeError::new(
                Reason::Malformed,
                format!("row has {} cells; the header names {} fields", cells.len(), self.columns.len()),
            ));
        }
        let mut object = Map::new();
        for ((path, name), cell) in self.columns.iter().zip(&self.names).zip(cells.iter()) {
            let text = std::str::from_utf8(cell)
                .map_err(|e| DecodeError::new(Reason::Malformed, format!("field {name:?} is not UTF-8: {e}")))?;
            if text.is_empty() {
                continue;
            }
            let value = match name.as_str() {
                "ts" => text.parse::<i64>().map_or_else(|_| Value::String(text.to_string()), Value::from),
                "loyalty_member" if text == "true" || text == "false" => Value::Bool(text == "true"),
                _ => Value::String(text.to_string()),
            };
            insert(&mut object, path, value).map_err(|field| {
                DecodeError::new(Reason::Malformed, format!("field {field:?} is both a value and an object"))
            })?;
        }
        serde_json::to_vec(&Value::Object(object))
            .map_err(|e| DecodeError::new(Reason::Malformed, format!("row not representable as JSON: {e}")))
    }
}

/// Sets `path` in `object` to `value`, creating nested objects. Fails with
/// the field name when a prefix of `path` already holds a value.
fn insert(object: &mut Map<String, Value>, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("a header path has a name");
    let mut at = object;
    for p in parents {
        let entry = at.entry(p.clone()).or_insert_with(|| Value::Object(Map::new()));
        at = entry.as_object_mut().ok_or_else(|| p.clone())?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> csv::ByteRecord {
        csv::ByteRecord::from(cells.to_vec())
    }

    #[test]
    fn a_row_becomes_the_json_event_with_typed_and_nested_fields() {
        let h =
            CsvHeader::new(["event_id", "customer_id", "type", "ts", "amount", "loyalty_member", "properties.rating"])
                .unwrap();
        let json = h.to_json(&row(&["p1", "042", "purchase", "1767607200000", "59.90", "true", ""])).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event_id":"p1","customer_id":"042","type":"purchase","ts":1767607200000i64,
                               "amount":"59.90","loyalty_member":true})
        );
        let json = h.to_json(&row(&["e1", "c", "feedback", "2026-01-05T10:00:00Z", "", "", "4"])).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["properties"]["rating"], "4");
        assert_eq!(v["ts"], "2026-01-05T10:00:00Z");
    }

    #[test]
    fn bad_headers_and_rows_say_what_is_wrong() {
        assert!(CsvHeader::new(["event_id", "type"]).unwrap_err().contains("customer_id"));
        assert!(CsvHeader::new(["customer_id", "type", "type"]).unwrap_err().contains("twice"));
        assert!(CsvHeader::new(["customer_id", "type", ""]).unwrap_err().contains("column 3"));
        let h = CsvHeader::new(["customer_id", "type", "p", "p.x"]).unwrap();
        let e = h.to_json(&row(&["c", "search"])).unwrap_err();
        assert_eq!(e.reason, Reason::Malformed);
        assert!(e.detail.contains("2 cells"), "{}", e.detail);
        assert_eq!(h.to_json(&row(&["c", "search", "1", "2"])).unwrap_err().reason, Reason::Malformed);
        let bad_utf8 = csv::ByteRecord::from(vec![&b"c"[..], b"\xff", b"", b""]);
        assert_eq!(h.to_json(&bad_utf8).unwrap_err().reason, Reason::Malformed);
    }
}
