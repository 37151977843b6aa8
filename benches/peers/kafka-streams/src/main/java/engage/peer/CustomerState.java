package engage.peer;

import java.nio.ByteBuffer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * A customer's state in the peer's key-value store: what engage's score-change rules need (its
 * {@code engine/state.rs} without the churn, value and deduplication facts). The five decayed
 * dimension sums as of the latest event time, the first and latest event times, the distinct
 * active and purchase days (for the lifecycle stage), and what was last published: score, stage
 * and the message sequence number.
 *
 * <p>The sums and the published score are kept in {@code float} and computed in {@code double},
 * as engage keeps them ({@code f32} between events): the peer then applies the same arithmetic in
 * the same order and publishes the same score changes, which the output gate (tests/peers.rs)
 * holds it to.
 *
 * <p>Persisted big-endian: the five sums (f32), first and latest event time (i64 epoch ms), the
 * published score (f32), seq (i32), stage (i8), then the active and the purchase days ({@link
 * DaySet}): 63 bytes for a customer who never bought, active within one 64-day span.
 */
final class CustomerState {
  final float[] raw = new float[Scoring.N];
  long firstSeen;
  long lastSeen;
  float publishedScore;
  int seq;
  /** {@link Lifecycle} stage at the last evaluation, 1–4 as engage numbers them. */
  byte stage = Lifecycle.INITIATION;

  final DaySet activeDays;
  final DaySet purchaseDays;

  CustomerState() {
    this(new DaySet(), new DaySet());
  }

  private CustomerState(DaySet active, DaySet purchases) {
    this.activeDays = active;
    this.purchaseDays = purchases;
  }

  /** A customer's state after their first applied event. */
  static CustomerState first(Event e, double[] contrib) {
    CustomerState s = new CustomerState();
    s.firstSeen = e.tsMs;
    s.lastSeen = e.tsMs;
    for (int i = 0; i < Scoring.N; i++) {
      s.raw[i] = (float) contrib[i];
    }
    s.countDays(e);
    return s;
  }

  /**
   * Folds one more event in, order-insensitively (docs/model.md "Decay and arrival order"): a newer
   * event decays the sums to its time and adds; a late one is decayed to the latest time instead.
   */
  void absorb(Event e, double[] contrib, Scoring rules) {
    long ts = e.tsMs;
    if (ts >= lastSeen) {
      long dt = ts - lastSeen;
      for (int i = 0; i < Scoring.N; i++) {
        raw[i] = (float) ((double) raw[i] * rules.decay(i, dt) + contrib[i]);
      }
      lastSeen = ts;
    } else {
      long dt = lastSeen - ts;
      for (int i = 0; i < Scoring.N; i++) {
        raw[i] = (float) ((double) raw[i] + contrib[i] * rules.decay(i, dt));
      }
      firstSeen = Math.min(firstSeen, ts);
    }
    countDays(e);
  }

  private void countDays(Event e) {
    int day = (int) Math.floorDiv(e.tsMs, 86_400_000L);
    activeDays.add(day);
    if (e.kind == Event.Kind.PURCHASE) {
      purchaseDays.add(day);
    }
  }

  int bytes() {
    return Scoring.N * 4 + 8 + 8 + 4 + 4 + 1 + activeDays.bytes() + purchaseDays.bytes();
  }

  static final Serde<CustomerState> SERDE =
      Serdes.serdeFrom(
          (Serializer<CustomerState>)
              (topic, s) -> {
                if (s == null) {
                  return null;
                }
                ByteBuffer b = ByteBuffer.allocate(s.bytes());
                for (float v : s.raw) {
                  b.putFloat(v);
                }
                b.putLong(s.firstSeen).putLong(s.lastSeen).putFloat(s.publishedScore).putInt(s.seq);
                b.put(s.stage);
                s.activeDays.write(b);
                s.purchaseDays.write(b);
                return b.array();
              },
          (Deserializer<CustomerState>)
              (topic, bytes) -> {
                if (bytes == null) {
                  return null;
                }
                ByteBuffer b = ByteBuffer.wrap(bytes);
                float[] raw = new float[Scoring.N];
                for (int i = 0; i < Scoring.N; i++) {
                  raw[i] = b.getFloat();
                }
                long firstSeen = b.getLong();
                long lastSeen = b.getLong();
                float published = b.getFloat();
                int seq = b.getInt();
                byte stage = b.get();
                CustomerState s = new CustomerState(DaySet.read(b), DaySet.read(b));
                System.arraycopy(raw, 0, s.raw, 0, Scoring.N);
                s.firstSeen = firstSeen;
                s.lastSeen = lastSeen;
                s.publishedScore = published;
                s.seq = seq;
                s.stage = stage;
                return s;
              });
}
