package engage.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import java.io.File;
import java.io.IOException;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * engage's scoring rules (docs/model.md "Dimensions and the score"), read from an engage TOML config
 * (engage.example.toml lists every default), so the peer and engage score with the same numbers.
 *
 * <p>Five dimensions, each an exponentially decayed sum of event weights; a dimension's score is
 * {@code 100·(1−e^(−max(v,0)/s))} ({@code 50+50·tanh(v/s)} for satisfaction); the score is their
 * weighted mean.
 */
final class Scoring {
  static final String[] DIMENSIONS = {"attention", "transaction", "social", "loyalty", "satisfaction"};
  static final int N = DIMENSIONS.length;
  static final int SOCIAL = 2;
  /** ln 2 as Rust's {@code std::f64::consts::LN_2}, so both decay by the same rate. */
  private static final double LN_2 = 0.6931471805599453;
  private static final int SATISFACTION = 4;

  /** The clickstream types engage knows; any other type is accepted and ignored. */
  static final Set<String> CLICK_TYPES =
      Set.of(
          "page_view", "product_view", "search", "app_open", "add_to_cart", "wishlist_add",
          "ad_click", "email_click", "share", "review", "referral", "social_follow",
          "loyalty_signup", "coupon_claim", "support_contact", "feedback");

  /** ln 2 / half-life, per millisecond. */
  final double[] decayPerMs = new double[N];
  final double[] saturation = new double[N];
  /** Composite weights, normalised to sum to 1. */
  final double[] weight = new double[N];
  /** Event (signal) name → weight per dimension. */
  final Map<String, double[]> table = new HashMap<>();
  final double minDelta;
  /**
   * How often engage's committed offsets move, in milliseconds: the peer commits (and flushes its
   * store's cache to the changelog) this often. engage writes changed customers to its changelog
   * every {@code state.flush_interval}; at least once, an offset becomes committable once the
   * flush after it is acknowledged and librdkafka's auto-commit writes it every {@code
   * auto.commit.interval.ms} ({@code [kafka]}, 1 000 ms by default), so offsets move at the
   * slower of the two; exactly once, every flush is a transaction that commits them.
   */
  final long commitIntervalMsAtLeastOnce;

  final long commitIntervalMsExactlyOnce;
  final Lifecycle lifecycle;
  final long maxFutureSkewMs;
  final double maxAmount;
  final int maxRecordBytes;

  private Scoring(JsonNode config) {
    JsonNode scoring = config.path("scoring");
    minDelta = scoring.path("min_delta").asDouble(Double.NaN);
    double total = 0;
    for (int i = 0; i < N; i++) {
      JsonNode d = scoring.path(DIMENSIONS[i]);
      if (d.isMissingNode()) {
        throw new IllegalArgumentException("scoring." + DIMENSIONS[i] + " is missing");
      }
      decayPerMs[i] = LN_2 / durationMs(d.path("half_life").asText());
      saturation[i] = d.path("saturation").asDouble();
      weight[i] = d.path("weight").asDouble();
      total += weight[i];
      Iterator<Map.Entry<String, JsonNode>> events = d.path("events").fields();
      while (events.hasNext()) {
        Map.Entry<String, JsonNode> e = events.next();
        table.computeIfAbsent(e.getKey(), k -> new double[N])[i] = e.getValue().asDouble();
      }
    }
    for (int i = 0; i < N; i++) {
      weight[i] /= total;
    }
    if (!(minDelta >= 0)) {
      throw new IllegalArgumentException("scoring.min_delta is missing or negative");
    }
    long flushIntervalMs = durationMs(config.path("state").path("flush_interval").asText("500ms"));
    long autoCommitMs = config.path("kafka").path("auto.commit.interval.ms").asLong(1000);
    commitIntervalMsAtLeastOnce = Math.max(flushIntervalMs, autoCommitMs);
    commitIntervalMsExactlyOnce = flushIntervalMs;
    lifecycle = new Lifecycle(config.path("lifecycle"));
    // Health changes on an event only once the customer is overdue, which needs idle time; at the
    // latest event time there is none, so with a positive gate events never change health (only
    // engage's wall-clock sweeps do, which the peer does not implement).
    if (!(config.path("churn").path("overdue_gate").asDouble(1.0) > 0)) {
      throw new IllegalArgumentException("churn.overdue_gate must be positive for the peer");
    }
    JsonNode input = config.path("input");
    maxFutureSkewMs = durationMs(input.path("max_future_skew").asText("5m"));
    maxAmount = input.path("max_amount").asDouble(1_000_000.0);
    maxRecordBytes = input.path("max_record_bytes").asInt(1 << 20);
  }

  /** Reads the rules from an engage TOML config file. */
  static Scoring load(File toml) throws IOException {
    return new Scoring(new TomlMapper().readTree(toml));
  }

  private static final Pattern DURATION = Pattern.compile("\\s*(\\d+(?:\\.\\d+)?)\\s*([a-z]+)\\s*");

  /** A humantime duration as engage writes them ("500ms", "5m", "7days"), in milliseconds. */
  static long durationMs(String text) {
    long total = 0;
    Matcher m = DURATION.matcher(text);
    int end = 0;
    while (m.find() && m.start() == end) {
      end = m.end();
      double n = Double.parseDouble(m.group(1));
      double unit =
          switch (m.group(2)) {
            case "ms", "msec", "millis" -> 1;
            case "s", "sec", "secs", "second", "seconds" -> 1_000;
            case "m", "min", "mins", "minute", "minutes" -> 60_000;
            case "h", "hr", "hrs", "hour", "hours" -> 3_600_000;
            case "d", "day", "days" -> 86_400_000;
            case "w", "week", "weeks" -> 7 * 86_400_000L;
            default -> throw new IllegalArgumentException("unknown duration unit in " + text);
          };
      total += Math.round(n * unit);
    }
    if (end != text.length() || end == 0) {
      throw new IllegalArgumentException("not a duration: " + text);
    }
    return total;
  }

  /** Adds {@code times} × the weights of {@code signal} to {@code c}. */
  private void add(double[] c, String signal, double times) {
    double[] w = table.get(signal);
    if (w != null) {
      for (int i = 0; i < N; i++) {
        c[i] += w[i] * times;
      }
    }
  }

  /** What one valid event adds to each dimension at its event time. */
  double[] contributions(Event e) {
    double[] c = new double[N];
    switch (e.kind) {
      case CLICK -> {
        add(c, e.type, 1.0);
        if (!Double.isNaN(e.rating)) {
          add(c, "feedback_per_rating_point", e.rating - 3.0);
        }
      }
      case PURCHASE -> {
        add(c, "purchase", 1.0);
        add(c, "purchase_per_ln_amount", Math.log1p(e.amount));
        if (e.loyaltyMember) {
          add(c, "purchase_loyalty_member", 1.0);
        }
        if (e.couponUsed) {
          add(c, "purchase_with_coupon", 1.0);
        }
      }
      case REFUND -> add(c, "refund", 1.0);
    }
    return c;
  }

  /** What a value is worth {@code dtMs} later, per dimension. */
  double decay(int i, long dtMs) {
    return dtMs <= 0 ? 1.0 : Math.exp(-decayPerMs[i] * dtMs);
  }

  /** Raw values → 0–100 dimension scores. */
  double[] dimensionScores(double[] raw) {
    double[] s = new double[N];
    for (int i = 0; i < N; i++) {
      s[i] =
          i == SATISFACTION
              ? 50.0 + 50.0 * Math.tanh(raw[i] / saturation[i])
              : 100.0 * (1.0 - Math.exp(-Math.max(raw[i], 0.0) / saturation[i]));
    }
    return s;
  }

  /** The composite score of dimension scores. */
  double composite(double[] scores) {
    double total = 0;
    for (int i = 0; i < N; i++) {
      total += weight[i] * scores[i];
    }
    return Math.min(100.0, Math.max(0.0, total));
  }
}
