package engage.peer;

import java.nio.ByteBuffer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * A customer's state in the peer's key-value store: what the score needs, the five decayed
 * dimension sums as of their reference time (the latest event time), and the last published score
 * for the {@code min_delta} rule.
 *
 * <p>Stored (and in the changelog) as 56 bytes, big-endian: the five sums (f64), the reference
 * time (i64 epoch ms), the last published score (f64).
 */
final class CustomerScore {
  static final int BYTES = Scoring.N * 8 + 8 + 8;

  final double[] raw = new double[Scoring.N];
  long lastSeen;
  double lastPublished;

  /** Folds one event in, order-insensitively (docs/model.md "Decay and arrival order"). */
  void absorb(long ts, double[] contrib, Scoring rules) {
    if (ts >= lastSeen) {
      for (int i = 0; i < Scoring.N; i++) {
        raw[i] = raw[i] * rules.decay(i, ts - lastSeen) + contrib[i];
      }
      lastSeen = ts;
    } else {
      // A late event is decayed to the reference time instead.
      for (int i = 0; i < Scoring.N; i++) {
        raw[i] += contrib[i] * rules.decay(i, lastSeen - ts);
      }
    }
  }

  static final Serde<CustomerScore> SERDE =
      Serdes.serdeFrom(
          (Serializer<CustomerScore>)
              (topic, s) -> {
                if (s == null) {
                  return null;
                }
                ByteBuffer b = ByteBuffer.allocate(BYTES);
                for (double v : s.raw) {
                  b.putDouble(v);
                }
                return b.putLong(s.lastSeen).putDouble(s.lastPublished).array();
              },
          (Deserializer<CustomerScore>)
              (topic, bytes) -> {
                if (bytes == null) {
                  return null;
                }
                ByteBuffer b = ByteBuffer.wrap(bytes);
                CustomerScore s = new CustomerScore();
                for (int i = 0; i < Scoring.N; i++) {
                  s.raw[i] = b.getDouble();
                }
                s.lastSeen = b.getLong();
                s.lastPublished = b.getDouble();
                return s;
              });
}
