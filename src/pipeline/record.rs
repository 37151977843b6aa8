//! An input record as the main loop takes it up: decoded once, held by the
//! aligner if it must wait, then applied or dead-lettered by the worker.

use std::time::Instant;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers, OwnedMessage};

use crate::clock::wall_clock_ms;
use crate::codec::output::CONTENT_TYPE;
use crate::config::Input;
use crate::decode::{DecodeError, Envelope, Limits, decode};
use crate::engine::event::Event;
use crate::vocab::InputKind;

/// The clocks read once per batch of records rather than per record (clock
/// reads are a visible cost of the hot path): a batch is handled within a few
/// milliseconds, so its records share the time they were taken up, and
/// their processing latency counts from the batch's start.
#[derive(Clone, Copy)]
pub(super) struct BatchClock {
    /// When the batch was taken up.
    pub(super) consumed: Instant,
    /// Wall-clock time then (epoch ms), for the future-skew check.
    pub(super) wall_ms: i64,
}

impl BatchClock {
    pub(super) fn now() -> BatchClock {
        BatchClock { consumed: Instant::now(), wall_ms: wall_clock_ms() }
    }
}

/// One event-input record taken from the consumer and decoded: what the
/// worker applies, at once or after the [`super::align::Aligner`] held it.
pub(super) struct Record<'a> {
    pub(super) topic: InputKind,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// The record timestamp, for the end-to-end latency.
    pub(super) produced_ms: Option<i64>,
    /// When it was taken from the consumer: processing latency counts
    /// from here, time held included.
    pub(super) consumed: Instant,
    /// The event, or why the record cannot be used.
    pub(super) body: Result<Event<'a>, Rejected<'a>>,
}

/// A record that goes to the dead-letter topic, with the reason.
pub(super) struct Rejected<'a> {
    pub(super) error: DecodeError,
    pub(super) record: RecordRef<'a>,
}

/// The consumer's record, or a copy once it must outlive the poll.
pub(super) enum RecordRef<'a> {
    Borrowed(&'a BorrowedMessage<'a>),
    Owned(Box<OwnedMessage>),
}

impl<'a> Record<'a> {
    /// Decodes `message` of event input `input`.
    pub(super) fn decode(
        message: &'a BorrowedMessage<'a>,
        input: &Input,
        limits: &Limits,
        clock: BatchClock,
    ) -> Record<'a> {
        // Each accessor is a call into librdkafka: the timestamp is read once.
        let envelope = envelope(message);
        let produced_ms = envelope.timestamp_ms;
        let value = message.payload().unwrap_or(&[]);
        let body = decode(Some(input.kind), input.format, &envelope, value, limits, clock.wall_ms)
            .map_err(|error| Rejected { error, record: RecordRef::Borrowed(message) });
        Record {
            topic: input.kind,
            partition: message.partition(),
            offset: message.offset(),
            produced_ms,
            consumed: clock.consumed,
            body,
        }
    }

    /// The event time the inputs are aligned on; a record that cannot be
    /// decoded changes no state and goes first.
    pub(super) fn event_time(&self) -> i64 {
        self.body.as_ref().map_or(i64::MIN, |e| e.ts_ms)
    }

    /// Detaches the record from the consumer's buffer, to be held.
    pub(super) fn into_owned(self) -> Record<'static> {
        let body = match self.body {
            Ok(event) => Ok(event.into_owned()),
            Err(Rejected { error, record }) => Err(Rejected {
                error,
                record: RecordRef::Owned(match record {
                    RecordRef::Borrowed(m) => Box::new(m.detach()),
                    RecordRef::Owned(m) => m,
                }),
            }),
        };
        Record { body, ..self }
    }
}

/// What the decoders check a Kafka record's value against.
pub(super) fn envelope<'a>(message: &'a BorrowedMessage<'_>) -> Envelope<'a> {
    Envelope {
        key: message.key(),
        require_key: true,
        timestamp_ms: message.timestamp().to_millis(),
        content_type: content_type(message),
    }
}

fn content_type<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE)).and_then(|h| h.value)
}
