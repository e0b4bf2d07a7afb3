//! An explicit column mapping (`columns=` of `POST /imports` and `POST /imports/preview`):
//! which header cell each of the five columns is read from. It replaces the detection of
//! the header's names (docs/import-semantics.md): the columns it does not name are not
//! imported, and it must name the email.
//!
//! Two spellings are accepted (docs/api.md, Upload options):
//! - `email:E-mail Address,phone:Mobile Number`: comma-separated `column:header` pairs, the
//!   header everything after the first `:` (so it may hold `:`, but not `,`);
//! - a JSON object, `{"email":"E-mail Address","phone":"Mobile Number"}`, for any header.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The five columns, in their standard order.
pub const COLUMN_NAMES: [&str; 5] = ["email", "first_name", "last_name", "phone", "city"];
/// Longest header name accepted in a mapping, in characters.
const MAX_HEADER_CHARS: usize = 255;

/// For each of the five columns, the header cell it is read from (`None`: not imported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap {
    headers: [Option<String>; 5],
}

impl ColumnMap {
    /// The header named for column `i` (0 = email … 4 = city).
    pub fn header(&self, i: usize) -> Option<&str> {
        self.headers.get(i).and_then(|h| h.as_deref())
    }

    /// `(column, header)` of every mapped column, in the standard order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        COLUMN_NAMES
            .iter()
            .zip(&self.headers)
            .filter_map(|(c, h)| h.as_deref().map(|h| (*c, h)))
    }

    /// The canonical text (the JSON object, in the standard order): what the job row stores
    /// and the idempotency fingerprint includes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a mapping serialises")
    }

    /// Builds a mapping from `(column, header)` pairs, checking every rule.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ColumnMap, String> {
        let mut map = ColumnMap::default();
        for (column, header) in pairs {
            let column = column.trim();
            let Some(i) = COLUMN_NAMES.iter().position(|c| *c == column) else {
                return Err(format!(
                    "unknown column {column:?}: the columns are email, first_name, last_name, phone, city"
                ));
            };
            let header = header.trim();
            if header.is_empty() {
                return Err(format!("column {column} is mapped to an empty header"));
            }
            if header.chars().count() > MAX_HEADER_CHARS {
                return Err(format!(
                    "the header of column {column} is longer than {MAX_HEADER_CHARS} characters"
                ));
            }
            if map.headers[i].is_some() {
                return Err(format!("column {column} is mapped twice"));
            }
            if let Some((other, _)) = map.pairs().find(|(_, h)| *h == header) {
                return Err(format!(
                    "header {header:?} is mapped twice (to {other} and {column})"
                ));
            }
            map.headers[i] = Some(header.to_string());
        }
        if map.headers[0].is_none() {
            return Err("the mapping has no email column (email:<header>)".into());
        }
        Ok(map)
    }
}

/// Parses a `columns=` value: `column:header` pairs separated by commas, or a JSON object.
pub fn parse_columns(s: &str) -> Result<ColumnMap, String> {
    let s = s.trim();
    if s.starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(s)
            .map_err(|e| format!("columns is not a JSON object of strings: {e}"))?;
        let mut pairs = Vec::with_capacity(object.len());
        for (column, header) in &object {
            let header = header
                .as_str()
                .ok_or_else(|| format!("the header of column {column} is not a string"))?;
            pairs.push((column.as_str(), header));
        }
        return ColumnMap::from_pairs(pairs);
    }
    let mut pairs = vec![];
    for pair in s.split(',') {
        let (column, header) = pair
            .split_once(':')
            .ok_or_else(|| format!("{pair:?} is not column:header (e.g. email:E-mail Address)"))?;
        pairs.push((column, header));
    }
    ColumnMap::from_pairs(pairs)
}

impl Serialize for ColumnMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (column, header) in self.pairs() {
            map.serialize_entry(column, header)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ColumnMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        ColumnMap::from_pairs(object.iter().map(|(c, h)| (c.as_str(), h.as_str())))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_give_one_mapping() {
        let a = parse_columns("email:E-mail Address, phone:Mobile Number").unwrap();
        let b = parse_columns(r#"{"phone":"Mobile Number","email":"E-mail Address"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.header(0), Some("E-mail Address"));
        assert_eq!(a.header(3), Some("Mobile Number"));
        assert_eq!(a.header(1), None);
        assert_eq!(
            a.to_json(),
            r#"{"email":"E-mail Address","phone":"Mobile Number"}"#
        );
        let back: ColumnMap = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(back, a);
        // The header is everything after the first colon.
        let c = parse_columns("email:Mail: work").unwrap();
        assert_eq!(c.header(0), Some("Mail: work"));
    }

    #[test]
    fn bad_mappings_are_refused_with_a_reason() {
        let err = |s: &str| parse_columns(s).unwrap_err();
        assert!(err("mail:E-mail").contains("unknown column"));
        assert!(err("email:A,email:B").contains("mapped twice"));
        assert!(err("email:A,phone:A").contains("header \"A\" is mapped twice"));
        assert!(err("phone:Mobile").contains("no email"));
        assert!(err("email").contains("not column:header"));
        assert!(err("email:").contains("empty header"));
        assert!(err(r#"{"email":1}"#).contains("not a string"));
        assert!(err("{").contains("JSON"));
    }
}
