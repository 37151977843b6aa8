//! The protobuf wire reader and the Confluent Schema Registry framing.

use std::borrow::Cow;

use super::{DecodeError, RawFields, RawNum, RawTs, Reason};
use crate::vocab::InputKind;

/// Field numbers of `ClickEvent` and `PurchaseEvent`
/// (proto/engage/v1/events.proto). Fields 1–4 are shared.
mod field {
    pub const EVENT_ID: u32 = 1;
    pub const CUSTOMER_ID: u32 = 2;
    pub const TYPE: u32 = 3;
    pub const TS: u32 = 4;
    pub const CLICK_PROPERTIES: u32 = 7;
    pub const PURCHASE_AMOUNT: u32 = 6;
    pub const PURCHASE_LOYALTY_MEMBER: u32 = 9;
    pub const PURCHASE_COUPON: u32 = 10;
}

/// Reads the protobuf wire format in place, so strings borrow from the record
/// instead of being copied into owned messages as generated code would.
/// `topic` says which message type the bytes are (`ClickEvent` or
/// `PurchaseEvent`); the generated types are the reference, and the tests
/// decode what they encode.
pub(super) fn parse_protobuf(value: &[u8], topic: InputKind) -> Result<RawFields<'_>, DecodeError> {
    let body = strip_confluent_framing(value)?;
    let purchase = topic == InputKind::Purchases;
    let mut raw = RawFields::default();
    let mut wire = Wire { buf: body };
    while let Some((number, wire_type)) = wire.key()? {
        match (number, wire_type) {
            (field::EVENT_ID, WireType::Len) => raw.event_id = Some(Cow::Borrowed(wire.string("event_id")?)),
            (field::CUSTOMER_ID, WireType::Len) => raw.customer_id = Some(Cow::Borrowed(wire.string("customer_id")?)),
            (field::TYPE, WireType::Len) => raw.kind = Some(Cow::Borrowed(wire.string("type")?)),
            (field::TS, WireType::Varint) => raw.ts = Some(RawTs::Millis(wire.varint()? as i64)),
            (field::PURCHASE_AMOUNT, WireType::Fixed64) if purchase => {
                raw.amount = Some(RawNum::Num(f64::from_le_bytes(wire.fixed::<8>()?)))
            }
            (field::PURCHASE_LOYALTY_MEMBER, WireType::Varint) if purchase => raw.loyalty_member = wire.varint()? != 0,
            (field::PURCHASE_COUPON, WireType::Len) if purchase => {
                raw.coupon = Some(Cow::Borrowed(wire.string("coupon")?))
            }
            (field::CLICK_PROPERTIES, WireType::Len) if !purchase => {
                // Only "rating" is read, so only its value is UTF-8 checked.
                let mut entry = Wire { buf: wire.bytes()? };
                let (mut key, mut val): (&[u8], &[u8]) = (b"", b"");
                while let Some((n, t)) = entry.key()? {
                    match (n, t) {
                        (1, WireType::Len) => key = entry.bytes()?,
                        (2, WireType::Len) => val = entry.bytes()?,
                        (_, t) => entry.skip(t)?,
                    }
                }
                if key == b"rating" {
                    let val = std::str::from_utf8(val).map_err(|_| {
                        DecodeError::new(Reason::Malformed, "not valid protobuf: properties value is not UTF-8")
                    })?;
                    raw.rating = Some(RawNum::Text(Cow::Borrowed(val)));
                }
            }
            (field::EVENT_ID | field::CUSTOMER_ID | field::TYPE | field::TS, t) => {
                return Err(DecodeError::new(
                    Reason::InvalidField,
                    format!("field number {number} has wire type {t:?}, which does not match the schema"),
                ));
            }
            (_, t) => wire.skip(t)?,
        }
    }
    Ok(raw)
}

/// Strips the Confluent Schema Registry framing (magic byte 0, 4-byte schema
/// id, message-index list) when present. A plain message of our types never
/// starts with 0: that would be field number 0, which protobuf forbids.
pub(super) fn strip_confluent_framing(value: &[u8]) -> Result<&[u8], DecodeError> {
    if value.first() != Some(&0) {
        return Ok(value);
    }
    let bad = |d: &str| DecodeError::new(Reason::Malformed, format!("Confluent framing: {d}"));
    if value.len() < 6 {
        return Err(bad("shorter than magic byte, schema id and message indexes"));
    }
    let mut wire = Wire { buf: &value[5..] };
    // Message indexes: a zig-zag varint count, then that many indexes; a
    // single 0 byte is the common shorthand for [0].
    let count = zigzag(wire.varint().map_err(|_| bad("truncated message-index count"))?);
    if !(0..=64).contains(&count) {
        return Err(bad("message-index count out of range"));
    }
    for _ in 0..count {
        wire.varint().map_err(|_| bad("truncated message index"))?;
    }
    Ok(wire.buf)
}

pub(super) fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    fn truncated() -> DecodeError {
        DecodeError::new(Reason::Malformed, "not valid protobuf: truncated message")
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Fast path: most varints here (keys, lengths) are one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.buf.len() < 10 {
            Self::truncated()
        } else {
            DecodeError::new(Reason::Malformed, "not valid protobuf: varint longer than 10 bytes")
        })
    }

    #[inline]
    fn key(&mut self) -> Result<Option<(u32, WireType)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = (key >> 3) as u32;
        if number == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::new(Reason::Malformed, "not valid protobuf: invalid field number"));
        }
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            t => {
                return Err(DecodeError::new(
                    Reason::Malformed,
                    format!("not valid protobuf: wire type {t} is not supported"),
                ));
            }
        };
        Ok(Some((number, wire_type)))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| Self::truncated())?;
        if len > self.buf.len() {
            return Err(Self::truncated());
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    #[inline]
    fn string(&mut self, field: &str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| DecodeError::new(Reason::Malformed, format!("not valid protobuf: {field} is not UTF-8")))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self.buf.split_first_chunk::<N>().ok_or_else(Self::truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    fn skip(&mut self, wire_type: WireType) -> Result<(), DecodeError> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.fixed::<8>().map(drop),
            WireType::Len => self.bytes().map(drop),
            WireType::Fixed32 => self.fixed::<4>().map(drop),
        }
    }
}
