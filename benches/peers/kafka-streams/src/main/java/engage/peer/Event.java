package engage.peer;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.nio.charset.StandardCharsets;
import java.time.OffsetDateTime;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * One input event, decoded from JSON with engage's validation rules (README "Bad input") as the
 * records are read, so that Kafka Streams orders both inputs by event time: {@link #SERDE} decodes
 * the value, {@link EventTime} hands its time to Streams, and the processor gets events that are
 * already decoded. A record engage would dead-letter is dropped before processing (the peer counts
 * it but publishes no dead letters).
 */
final class Event {
  enum Kind {
    CLICK,
    PURCHASE,
    REFUND,
    /** A valid clickstream event of a type engage does not know: accepted and ignored. */
    UNKNOWN
  }

  /** engage's limit on id lengths. */
  private static final int MAX_ID_BYTES = 256;
  /** Years 1 to 9999, as engage accepts. */
  private static final long MAX_TS_MS = 253_402_300_799_999L;
  /** {@link #tsMs} until {@link EventTime} takes the record's timestamp (no {@code ts} field). */
  private static final long FROM_RECORD = Long.MIN_VALUE;

  Kind kind;
  String customerId;
  /** The clickstream type (for CLICK). */
  String type;
  long tsMs;
  double amount;
  /** properties.rating of a feedback event, NaN when absent. */
  double rating = Double.NaN;
  boolean loyaltyMember;
  boolean couponUsed;

  /** The JSON fields engage reads; the rest are ignored. */
  @JsonIgnoreProperties(ignoreUnknown = true)
  static final class Raw {
    @JsonProperty("event_id")
    public String eventId;

    @JsonProperty("customer_id")
    public String customerId;

    @JsonProperty("type")
    public String type;

    @JsonProperty("ts")
    public JsonNode ts;

    @JsonProperty("amount")
    public JsonNode amount;

    @JsonProperty("loyalty_member")
    public Boolean loyaltyMember;

    @JsonProperty("coupon")
    public String coupon;

    @JsonProperty("properties")
    public Properties properties;
  }

  /** {@code properties}: only the rating matters. */
  @JsonIgnoreProperties(ignoreUnknown = true)
  static final class Properties {
    @JsonProperty("rating")
    public JsonNode rating;
  }

  private static final ObjectReader READER =
      new ObjectMapper()
          .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
          .readerFor(Raw.class);

  /** Input records skipped as bad input. */
  static final LongAdder SKIPPED = new LongAdder();

  /**
   * Decodes a record's value, of the purchases topic if {@code purchases}; {@code null} when engage
   * would dead-letter it. The record key and timestamp are checked by {@link EventTime}.
   */
  static Event decode(byte[] value, boolean purchases, Scoring rules) {
    if (value == null || value.length > rules.maxRecordBytes) {
      return null;
    }
    Raw raw;
    try {
      raw = READER.readValue(value);
    } catch (Exception e) {
      return null;
    }
    if (!validId(raw.customerId) || !validId(raw.eventId)) {
      return null;
    }
    if (raw.type == null || raw.type.isBlank()) {
      return null;
    }
    Event e = new Event();
    e.customerId = raw.customerId;
    if (purchases) {
      double amount = number(raw.amount);
      if (!(amount >= 0 && amount <= rules.maxAmount)) {
        return null;
      }
      e.amount = amount;
      switch (raw.type) {
        case "purchase" -> {
          e.kind = Kind.PURCHASE;
          e.loyaltyMember = Boolean.TRUE.equals(raw.loyaltyMember);
          e.couponUsed = raw.coupon != null && !raw.coupon.isBlank();
        }
        case "refund" -> e.kind = Kind.REFUND;
        default -> {
          return null;
        }
      }
    } else {
      e.type = raw.type;
      e.kind = Scoring.CLICK_TYPES.contains(raw.type) ? Kind.CLICK : Kind.UNKNOWN;
      if (raw.type.equals("feedback") && raw.properties != null && raw.properties.rating != null
          && !raw.properties.rating.isNull()) {
        double r = number(raw.properties.rating);
        if (!(r >= 1 && r <= 5)) {
          return null;
        }
        e.rating = r;
      }
    }
    e.tsMs = timestamp(raw.ts);
    if (e.tsMs == Long.MIN_VALUE + 1) {
      return null;
    }
    return e;
  }

  /**
   * The event's time once its record is known, or -1 if engage would dead-letter the record: a key
   * other than the customer id, no usable time, or a time more than {@code input.max_future_skew}
   * ahead of the wall clock. Streams drops a record whose extracted time is negative before it
   * reaches the processor; engage orders a bad record before everything (event time i64::MIN), so
   * both apply the same good events in the same order. (Streams cannot take event times before
   * 1970, which engage accepts: the benchmarks have none.)
   */
  long settle(Object key, long recordTs, Scoring rules) {
    if (!customerId.equals(key)) {
      return -1;
    }
    if (tsMs == FROM_RECORD) {
      if (recordTs < 0) {
        return -1;
      }
      tsMs = recordTs;
    }
    if (tsMs < -MAX_TS_MS || tsMs > MAX_TS_MS || tsMs > System.currentTimeMillis() + rules.maxFutureSkewMs) {
      return -1;
    }
    return tsMs;
  }

  private static boolean validId(String id) {
    // UTF-8 takes at most 3 bytes per UTF-16 unit: only long ids need encoding to count bytes.
    return id != null
        && !id.isBlank()
        && (id.length() <= MAX_ID_BYTES / 3
            || (id.length() <= MAX_ID_BYTES && id.getBytes(StandardCharsets.UTF_8).length <= MAX_ID_BYTES));
  }

  /** A JSON number, or a string holding one; NaN otherwise. */
  private static double number(JsonNode n) {
    if (n == null) {
      return Double.NaN;
    }
    if (n.isNumber()) {
      return n.doubleValue();
    }
    if (n.isTextual()) {
      try {
        return Double.parseDouble(n.asText().trim());
      } catch (NumberFormatException e) {
        return Double.NaN;
      }
    }
    return Double.NaN;
  }

  /**
   * Epoch ms from {@code ts} (epoch ms or RFC 3339); {@link #FROM_RECORD} when absent; MIN_VALUE + 1
   * if invalid.
   */
  private static long timestamp(JsonNode ts) {
    long invalid = Long.MIN_VALUE + 1;
    if (ts == null || ts.isNull()) {
      return FROM_RECORD;
    } else if (ts.isIntegralNumber() && ts.canConvertToLong()) {
      return ts.longValue();
    } else if (ts.isNumber()) {
      double f = ts.doubleValue();
      if (!Double.isFinite(f) || f != Math.rint(f) || Math.abs(f) > MAX_TS_MS) {
        return invalid;
      }
      return (long) f;
    } else if (ts.isTextual()) {
      try {
        return OffsetDateTime.parse(ts.asText()).toInstant().toEpochMilli();
      } catch (Exception e) {
        return invalid;
      }
    }
    return invalid;
  }

  /**
   * The value serde of both inputs: decodes each record as it is read ({@code null} for bad
   * input). Streams builds one deserializer per source, so it is told which topic holds purchases.
   */
  static Serde<Event> serde(Scoring rules, String purchasesTopic) {
    Deserializer<Event> decode = (topic, bytes) -> decode(bytes, topic.equals(purchasesTopic), rules);
    Serializer<Event> none =
        (topic, e) -> {
          throw new UnsupportedOperationException("events are only read");
        };
    return Serdes.serdeFrom(none, decode);
  }

  /**
   * Event time for Kafka Streams, so a task merges its clickstream and purchases partitions in
   * event-time order as engage does (its {@code pipeline/align.rs}); a backlog loaded in bulk
   * carries the load's record timestamps, which would order nothing.
   */
  static final class EventTime implements TimestampExtractor {
    private final Scoring rules;

    EventTime(Scoring rules) {
      this.rules = rules;
    }

    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      long ts = record.value() instanceof Event e ? e.settle(record.key(), record.timestamp(), rules) : -1;
      if (ts < 0) {
        SKIPPED.increment();
      }
      return ts;
    }
  }
}
