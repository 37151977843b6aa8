package engage.peer;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.time.OffsetDateTime;

/**
 * One valid input event, decoded from JSON with engage's validation rules (README "Bad input"): a
 * record engage would dead-letter decodes to {@code null} here and is skipped (the peer counts it
 * but publishes no dead letters).
 */
final class Event {
  enum Kind {
    CLICK,
    PURCHASE,
    REFUND
  }

  /** engage's limit on id lengths. */
  private static final int MAX_ID_BYTES = 256;
  /** Years 1 to 9999, as engage accepts. */
  private static final long MAX_TS_MS = 253_402_300_799_999L;

  Kind kind;
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

  /**
   * Decodes a record of {@code purchases} (or the clickstream) keyed {@code key}, with its record
   * timestamp; {@code null} when engage would not apply it: bad input, or a clickstream type engage
   * does not know.
   */
  static Event decode(
      String key, byte[] value, long recordTs, boolean purchases, Scoring rules, long nowMs) {
    if (value == null || key == null || value.length > rules.maxRecordBytes) {
      return null;
    }
    Raw raw;
    try {
      raw = READER.readValue(value);
    } catch (Exception e) {
      return null;
    }
    if (!validId(raw.customerId) || !validId(raw.eventId) || !key.equals(raw.customerId)) {
      return null;
    }
    if (raw.type == null || raw.type.isBlank()) {
      return null;
    }
    Event e = new Event();
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
      e.kind = Kind.CLICK;
      e.type = raw.type;
      boolean known = Scoring.CLICK_TYPES.contains(raw.type);
      if (known && raw.type.equals("feedback") && raw.properties != null && raw.properties.rating != null
          && !raw.properties.rating.isNull()) {
        double r = number(raw.properties.rating);
        if (!(r >= 1 && r <= 5)) {
          return null;
        }
        e.rating = r;
      }
      if (!known) {
        // Accepted and ignored, like engage; validated first so bad input is still bad.
        return timestamp(raw.ts, recordTs) == Long.MIN_VALUE ? null : unknownType();
      }
    }
    long ts = timestamp(raw.ts, recordTs);
    if (ts == Long.MIN_VALUE || ts > nowMs + rules.maxFutureSkewMs) {
      return null;
    }
    e.tsMs = ts;
    return e;
  }

  private static final Event UNKNOWN = new Event();

  /** The marker of a valid event of an unknown clickstream type (no effect). */
  static Event unknownType() {
    return UNKNOWN;
  }

  boolean isUnknownType() {
    return this == UNKNOWN;
  }

  private static boolean validId(String id) {
    return id != null && !id.isBlank() && id.length() <= MAX_ID_BYTES;
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

  /** Epoch ms from {@code ts} (epoch ms or RFC 3339), else the record's; MIN_VALUE if invalid. */
  private static long timestamp(JsonNode ts, long recordTs) {
    long ms;
    if (ts == null || ts.isNull()) {
      if (recordTs < 0) {
        return Long.MIN_VALUE;
      }
      ms = recordTs;
    } else if (ts.isIntegralNumber() && ts.canConvertToLong()) {
      ms = ts.longValue();
    } else if (ts.isNumber()) {
      double f = ts.doubleValue();
      if (!Double.isFinite(f) || f != Math.rint(f) || Math.abs(f) > MAX_TS_MS) {
        return Long.MIN_VALUE;
      }
      ms = (long) f;
    } else if (ts.isTextual()) {
      try {
        ms = OffsetDateTime.parse(ts.asText()).toInstant().toEpochMilli();
      } catch (Exception e) {
        return Long.MIN_VALUE;
      }
    } else {
      return Long.MIN_VALUE;
    }
    return ms >= -MAX_TS_MS && ms <= MAX_TS_MS ? ms : Long.MIN_VALUE;
  }
}
