//! The fast path for JSON events: a single pass over the record that reads
//! the event's fields in place, for the shape nearly every producer sends —
//! an object whose strings have no escapes and whose numbers are plain
//! integers or decimals. Anything else (an escape, an exponent, a long
//! number, a duplicate field, deep nesting, bad UTF-8, any syntax error)
//! is left to serde_json (`parse_json` in the parent module), which is the
//! reference: the scan either gives up or returns exactly the fields
//! serde_json would, and a property test holds it to that. Numbers are
//! computed as serde_json computes them (significand ÷ 10^digits), so they
//! are equal to the bit.
//!
//! serde_json's derive-driven decode visits every key and value through
//! generic visitors, and decoding is one of the main loop's largest costs
//! (docs/performance.md).

use std::borrow::Cow;

use super::{RawFields, RawNum, RawTs};

/// Nesting deeper than this inside fields engage ignores is left to
/// serde_json (which allows 128 levels).
const MAX_DEPTH: u32 = 16;

/// Longest significand read here; longer ones could overflow `u64`, which
/// serde_json handles on another path.
const MAX_DIGITS: u32 = 18;

/// The powers of ten serde_json divides by (its `POW10` table), exact in f64.
const POW10: [f64; MAX_DIGITS as usize + 1] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18];

/// The event's fields, or `None` when the record is not of the common shape
/// (which says nothing about whether it is valid).
pub(super) fn scan(value: &[u8]) -> Option<RawFields<'_>> {
    // Validated once, so every string read below borrows from it.
    let text = std::str::from_utf8(value).ok()?;
    let mut s = Scanner { text, at: 0 };
    s.ws();
    let raw = s.event()?;
    s.ws();
    (s.at == value.len()).then_some(raw)
}

/// A JSON number as serde_json reads it.
enum Number {
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Negative(i64),
    /// A number with a fraction.
    Float(f64),
}

/// Field bits, to refuse a known field given twice (serde_json's derive
/// rejects it).
mod bit {
    pub const EVENT_ID: u16 = 1;
    pub const CUSTOMER_ID: u16 = 1 << 1;
    pub const TYPE: u16 = 1 << 2;
    pub const TS: u16 = 1 << 3;
    pub const AMOUNT: u16 = 1 << 4;
    pub const LOYALTY_MEMBER: u16 = 1 << 5;
    pub const COUPON: u16 = 1 << 6;
    pub const PROPERTIES: u16 = 1 << 7;
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    #[inline]
    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let hit = self.bytes()[self.at..].starts_with(word);
        if hit {
            self.at += word.len();
        }
        hit
    }

    /// `{ "key": value, … }`, with `field` reading each value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.ws();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            if self.eat(b',') {
                self.ws();
                continue;
            }
            return self.expect(b'}');
        }
    }

    fn event(&mut self) -> Option<RawFields<'a>> {
        let mut raw = RawFields::default();
        let mut seen = 0u16;
        self.object(|s, key| {
            let known = match key {
                "event_id" => bit::EVENT_ID,
                "customer_id" => bit::CUSTOMER_ID,
                "type" => bit::TYPE,
                "ts" => bit::TS,
                "amount" => bit::AMOUNT,
                "loyalty_member" => bit::LOYALTY_MEMBER,
                "coupon" => bit::COUPON,
                "properties" => bit::PROPERTIES,
                _ => return s.skip(1),
            };
            if seen & known != 0 {
                return None;
            }
            seen |= known;
            match known {
                bit::EVENT_ID => raw.event_id = s.optional(Self::string)?.map(Cow::Borrowed),
                bit::CUSTOMER_ID => raw.customer_id = s.optional(Self::string)?.map(Cow::Borrowed),
                bit::TYPE => raw.kind = s.optional(Self::string)?.map(Cow::Borrowed),
                bit::COUPON => raw.coupon = s.optional(Self::string)?.map(Cow::Borrowed),
                bit::TS => raw.ts = s.optional(Self::ts)?,
                bit::AMOUNT => raw.amount = s.optional(Self::num)?,
                bit::LOYALTY_MEMBER => raw.loyalty_member = s.optional(Self::bool)?.unwrap_or(false),
                _ => raw.rating = s.optional(Self::properties)?.flatten(),
            }
            Some(())
        })?;
        Some(raw)
    }

    /// `null` (absent, as serde reads an `Option`) or what `read` reads.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal(b"null") { Some(None) } else { read(self).map(Some) }
    }

    /// `properties`: an object whose `rating` is the only field read.
    fn properties(&mut self) -> Option<Option<RawNum<'a>>> {
        let mut rating = None;
        let mut seen = false;
        self.object(|s, key| {
            if key != "rating" {
                return s.skip(2);
            }
            if std::mem::replace(&mut seen, true) {
                return None;
            }
            rating = s.optional(Self::num)?;
            Some(())
        })?;
        Some(rating)
    }

    /// A string without escapes or control characters, borrowed.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            match *self.bytes().get(self.at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        // Both ends are at an ASCII quote, so on character boundaries.
        let s = &self.text[start..self.at];
        self.at += 1;
        Some(s)
    }

    fn bool(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    fn ts(&mut self) -> Option<RawTs<'a>> {
        if self.peek() == Some(b'"') {
            return self.string().map(|s| RawTs::Text(Cow::Borrowed(s)));
        }
        Some(match self.number()? {
            // At most 18 digits: always within i64.
            Number::Unsigned(v) => RawTs::Millis(v as i64),
            Number::Negative(v) => RawTs::Millis(v),
            Number::Float(v) => RawTs::Float(v),
        })
    }

    fn num(&mut self) -> Option<RawNum<'a>> {
        if self.peek() == Some(b'"') {
            return self.string().map(|s| RawNum::Text(Cow::Borrowed(s)));
        }
        Some(RawNum::Num(match self.number()? {
            Number::Unsigned(v) => v as f64,
            Number::Negative(v) => v as f64,
            Number::Float(v) => v,
        }))
    }

    /// An integer or decimal of at most [`MAX_DIGITS`] digits, no exponent.
    fn number(&mut self) -> Option<Number> {
        let negative = self.eat(b'-');
        let mut significand = 0u64;
        let mut digits = 0u32;
        match self.peek()? {
            b'0' => {
                self.at += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return None;
                }
            }
            b'1'..=b'9' => digits = self.digits(&mut significand, MAX_DIGITS)?,
            _ => return None,
        }
        let mut fraction = 0;
        if self.eat(b'.') {
            fraction = self.digits(&mut significand, MAX_DIGITS - digits)?;
            if fraction == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some(match (fraction, negative) {
            (0, false) => Number::Unsigned(significand),
            // serde_json reads "-0" as the float -0.0.
            (0, true) if significand == 0 => return None,
            (0, true) => Number::Negative(-(significand as i64)),
            _ => {
                let v = significand as f64 / POW10[fraction as usize];
                Number::Float(if negative { -v } else { v })
            }
        })
    }

    /// Appends a run of digits to `significand`; how many, or `None` past
    /// `most`.
    #[inline]
    fn digits(&mut self, significand: &mut u64, most: u32) -> Option<u32> {
        let mut n = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            n += 1;
            if n > most {
                return None;
            }
            *significand = *significand * 10 + u64::from(c - b'0');
            self.at += 1;
        }
        Some(n)
    }

    /// Skips a value engage does not read, checking its syntax as
    /// serde_json does.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip(depth + 1)),
            b'[' => {
                self.at += 1;
                self.ws();
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.ws();
                    if self.eat(b',') {
                        self.ws();
                        continue;
                    }
                    return self.expect(b']');
                }
            }
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.literal(b"null").then_some(()),
            _ => self.skip_number(),
        }
    }

    /// Any JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Option<()> {
        let run = |s: &mut Self| {
            let start = s.at;
            while let Some(b'0'..=b'9') = s.peek() {
                s.at += 1;
            }
            s.at - start
        };
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                run(self);
            }
            _ => return None,
        }
        if self.eat(b'.') && run(self) == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if run(self) == 0 {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::parse_json_serde;
    use super::*;
    use crate::vocab::Format;
    use proptest::prelude::*;

    /// The scan either gives up or agrees with serde_json exactly (to the
    /// sign of zero: compared through `Debug` as well).
    fn agrees(doc: &[u8]) -> Result<bool, TestCaseError> {
        let Some(fast) = scan(doc) else { return Ok(false) };
        let text = String::from_utf8_lossy(doc);
        let slow = parse_json_serde(doc)
            .map_err(|e| TestCaseError::fail(format!("scan accepted what serde_json rejects ({e:?}): {text}")))?;
        prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{}", text);
        prop_assert_eq!(fast, slow);
        Ok(true)
    }

    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            30 => "[a-z0-9 _:-]{0,8}",
            1 => Just("é€😀".to_string()),
            1 => Just(r"\n".to_string()),
            1 => Just(r#"\""#.to_string()),
            1 => Just(r"\u00e9".to_string()),
            1 => Just(r"\ud800".to_string()),
            1 => Just("\u{1}".to_string()),
            1 => Just("\t".to_string()),
        ];
        prop::collection::vec(piece, 0..3).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,5})?",
            2 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{0,20})?([eE][+-]?[0-9]{0,4})?",
            1 => prop::sample::select(vec!["01", "-", "1.", ".5", "+1", "-0", "-0.0", "00", "1e400", "-01"]).prop_map(String::from),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            3 => string(),
            3 => number(),
            1 => prop::sample::select(vec!["true", "false", "null", "true", "false", "null", "nul", "True"]).prop_map(String::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                    let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        let names = vec![
            "event_id",
            "customer_id",
            "type",
            "ts",
            "amount",
            "loyalty_member",
            "coupon",
            "properties",
            "rating",
            "page",
            "x",
            "",
            "a",
            "b",
            "c",
            "d",
            "e",
            "f",
            "g",
            r"event\u005fid",
        ];
        prop::sample::select(names).prop_map(|k| format!("\"{k}\""))
    }

    /// A known field with a value of the type engage expects, mostly.
    fn typed_field() -> impl Strategy<Value = (String, String)> {
        let null = || Just("null".to_string());
        let text = || prop_oneof![4 => string(), 1 => null()];
        let num = || prop_oneof![4 => number(), 2 => string(), 1 => null()];
        let rating = (num(), value()).prop_map(|(r, v)| format!(r#"{{"page":{v},"rating":{r}}}"#));
        prop_oneof![
            text().prop_map(|v| ("\"event_id\"".to_string(), v)),
            text().prop_map(|v| ("\"customer_id\"".to_string(), v)),
            text().prop_map(|v| ("\"type\"".to_string(), v)),
            text().prop_map(|v| ("\"coupon\"".to_string(), v)),
            num().prop_map(|v| ("\"ts\"".to_string(), v)),
            num().prop_map(|v| ("\"amount\"".to_string(), v)),
            prop::sample::select(vec!["true", "false", "null"])
                .prop_map(|v| ("\"loyalty_member\"".to_string(), v.to_string())),
            prop_oneof![3 => rating, 1 => null()].prop_map(|v| ("\"properties\"".to_string(), v)),
        ]
    }

    fn ws() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "", "", "", "", "", " ", "\n  ", "\t", "\r\n", "\u{a0}"]).prop_map(String::from)
    }

    /// An event-like object: known and unknown fields with values of every
    /// kind, in any order, with whitespace; now and then outside JSON.
    fn document() -> impl Strategy<Value = String> {
        let field = (ws(), prop_oneof![3 => typed_field(), 1 => (key(), value())], ws(), ws(), ws());
        (
            prop::collection::vec(field, 0..8),
            ws(),
            prop::sample::select(vec!["", "", "", "", "", "", "", "}", ",", "x"]),
        )
            .prop_map(|(fields, end, junk)| {
                let fields: Vec<String> =
                    fields.into_iter().map(|(a, (k, v), b, c, d)| format!("{a}{k}{b}:{c}{v}{d}")).collect();
                format!("{{{}}}{end}{junk}", fields.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn scan_agrees_with_serde_json_or_gives_up(doc in document()) {
            agrees(doc.as_bytes())?;
        }

        #[test]
        fn scan_agrees_with_serde_json_on_damaged_records(
            doc in document(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let mut bytes = doc.into_bytes();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => {}
                }
            }
            agrees(&bytes)?;
        }
    }

    #[test]
    fn the_property_tests_exercise_the_fast_path() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let documents = document();
        let fast =
            (0..1000).filter(|_| scan(documents.new_tree(&mut runner).unwrap().current().as_bytes()).is_some()).count();
        // About 16 %; the rest checks that the scan gives up.
        assert!(fast >= 100, "only {fast} of 1000 generated documents took the fast path");
    }

    #[test]
    fn generated_traffic_takes_the_fast_path() {
        // If this fails the scan still agrees, but the hot path got slow.
        for r in crate::cmd::loadgen::synth::records(7, 5_000, 500, 1_767_225_600_000, 500, Format::Json) {
            assert!(agrees(&r.value).unwrap(), "{}", String::from_utf8_lossy(&r.value));
        }
    }

    #[test]
    fn common_variations_take_the_fast_path_and_the_rest_is_left_to_serde_json() {
        let fast = [
            r#" { "event_id" : "e1", "customer_id":"c1","type":"purchase","ts":-5,"amount":0.07,
                  "coupon":null,"loyalty_member":null,"items":[{"sku":"a","qty":2},[],{}],"x":-1.5e-3 } "#,
            r#"{"event_id":"é","customer_id":"c1","type":"feedback","ts":"2026-01-01T00:00:00Z",
                "properties":{"rating":"4","page":"/p"}}"#,
            r#"{"amount":"12.50","properties":null,"loyalty_member":true,"ts":1767225600000.0}"#,
            "{}",
        ];
        for doc in fast {
            assert!(agrees(doc.as_bytes()).unwrap(), "{doc}");
        }
        let left = [
            r#"{"event_id":"e\"1"}"#,
            r#"{"amount":1e2}"#,
            r#"{"ts":-0}"#,
            r#"{"ts":1234567890123456789}"#,
            r#"{"type":"a","type":"b"}"#,
            r#"{"properties":{"rating":1,"rating":2}}"#,
            r#"{"properties":[5]}"#,
            r#"["e1","c1"]"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{} x"#,
        ];
        for doc in left {
            assert!(!agrees(doc.as_bytes()).unwrap(), "{doc}");
        }
    }
}
