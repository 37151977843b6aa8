//! The reference JSON decode (serde_json), for every record the one-pass
//! [`scan`](super::scan) leaves alone, and the classification of JSON errors.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::{DecodeError, RawFields, RawNum, RawTs, Reason, scan};

#[derive(Deserialize)]
struct JsonEvent<'a> {
    #[serde(borrow, default)]
    event_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    customer_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    ts: Option<RawTs<'a>>,
    #[serde(borrow, default)]
    amount: Option<RawNum<'a>>,
    #[serde(default)]
    loyalty_member: Option<bool>,
    #[serde(borrow, default)]
    coupon: Option<Str<'a>>,
    #[serde(borrow, default)]
    properties: Option<JsonProperties<'a>>,
}

#[derive(Deserialize)]
struct JsonProperties<'a> {
    #[serde(borrow, default)]
    rating: Option<RawNum<'a>>,
}

pub(super) fn parse_json(value: &[u8]) -> Result<RawFields<'_>, DecodeError> {
    match scan::scan(value) {
        Some(raw) => Ok(raw),
        None => parse_json_serde(value),
    }
}

/// The reference JSON decode, for every record [`scan`] leaves alone.
pub(super) fn parse_json_serde(value: &[u8]) -> Result<RawFields<'_>, DecodeError> {
    match serde_json::from_slice::<JsonEvent<'_>>(value) {
        Ok(j) => Ok(RawFields {
            event_id: j.event_id.map(|s| s.0),
            customer_id: j.customer_id.map(|s| s.0),
            kind: j.kind.map(|s| s.0),
            ts: j.ts,
            amount: j.amount,
            loyalty_member: j.loyalty_member.unwrap_or(false),
            coupon: j.coupon.map(|s| s.0),
            rating: j.properties.and_then(|p| p.rating),
        }),
        Err(e) => Err(json_error(value, e)),
    }
}

/// Classifies a JSON failure. Only on this cold path do we decode a second
/// time, with path tracking, so the detail can name the field at fault.
#[cold]
pub(super) fn json_error(value: &[u8], e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let mut de = serde_json::Deserializer::from_slice(value);
            let detail = match serde_path_to_error::deserialize::<_, JsonEvent<'_>>(&mut de) {
                Err(pe) if !pe.path().to_string().is_empty() && pe.path().to_string() != "." => {
                    format!("field {}: {}", pe.path(), pe.inner())
                }
                _ => e.to_string(),
            };
            DecodeError::new(Reason::InvalidField, detail)
        }
        _ => DecodeError::new(Reason::Malformed, format!("not valid JSON: {e}")),
    }
}

/// A JSON string that borrows from the record unless it had escapes.
/// (serde's own `Cow` support always copies when wrapped in `Option`.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTs<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawTs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawTs::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map(RawTs::Millis).unwrap_or(RawTs::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawTs::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawTs::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTs::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawNum<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawNum<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawNum::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawNum::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawNum::Num(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawNum::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawNum::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------- protobuf
