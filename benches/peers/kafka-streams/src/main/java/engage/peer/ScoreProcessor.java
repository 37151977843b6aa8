package engage.peer;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.util.ByteArrayBuilder;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Applies each input record to its customer's state in the store and forwards a score change
 * (JSON) when the customer is new or the score moved by at least {@code min_delta} since the last
 * one published.
 */
final class ScoreProcessor implements Processor<String, byte[], String, byte[]> {
  static final LongAdder APPLIED = new LongAdder();
  static final LongAdder SKIPPED = new LongAdder();
  static final LongAdder PUBLISHED = new LongAdder();

  private static final JsonFactory JSON = new JsonFactory();

  private final Scoring rules;
  private final String purchasesTopic;
  private final String storeName;
  private ProcessorContext<String, byte[]> context;
  private KeyValueStore<String, CustomerScore> store;
  private final ByteArrayBuilder buffer = new ByteArrayBuilder(512);

  ScoreProcessor(Scoring rules, String purchasesTopic, String storeName) {
    this.rules = rules;
    this.purchasesTopic = purchasesTopic;
    this.storeName = storeName;
  }

  @Override
  public void init(ProcessorContext<String, byte[]> context) {
    this.context = context;
    this.store = context.getStateStore(storeName);
  }

  @Override
  public void process(Record<String, byte[]> record) {
    boolean purchases =
        context.recordMetadata().map(m -> m.topic().equals(purchasesTopic)).orElse(false);
    Event e =
        Event.decode(
            record.key(),
            record.value(),
            record.timestamp(),
            purchases,
            rules,
            System.currentTimeMillis());
    if (e == null) {
      SKIPPED.increment();
      return;
    }
    if (e.isUnknownType()) {
      return;
    }
    APPLIED.increment();
    double[] contrib = rules.contributions(e);
    CustomerScore s = store.get(record.key());
    boolean isNew = s == null;
    Double previous = null;
    if (isNew) {
      s = new CustomerScore();
      s.lastSeen = e.tsMs;
    } else {
      previous = s.lastPublished;
    }
    s.absorb(e.tsMs, contrib, rules);
    double[] dims = rules.dimensionScores(s.raw);
    double score = rules.composite(dims);
    boolean publish = isNew || Math.abs(score - s.lastPublished) >= rules.minDelta;
    if (publish) {
      s.lastPublished = score;
    }
    store.put(record.key(), s);
    if (publish) {
      PUBLISHED.increment();
      context.forward(record.withValue(scoreChanged(record.key(), score, previous, dims, e.tsMs)));
    }
  }

  /** The score change, with the same field names as engage's ScoreChanged. */
  private byte[] scoreChanged(String id, double score, Double previous, double[] dims, long eventTime) {
    buffer.reset();
    try (JsonGenerator g = JSON.createGenerator(buffer, JsonEncoding.UTF8)) {
      g.writeStartObject();
      g.writeStringField("customer_id", id);
      g.writeNumberField("score", score);
      if (previous != null) {
        g.writeNumberField("previous_score", previous);
      }
      g.writeObjectFieldStart("dimensions");
      for (int i = 0; i < Scoring.N; i++) {
        g.writeNumberField(Scoring.DIMENSIONS[i], dims[i]);
      }
      g.writeEndObject();
      g.writeNumberField("event_time", eventTime);
      g.writeNumberField("processed_at", System.currentTimeMillis());
      g.writeEndObject();
    } catch (IOException ex) {
      throw new UncheckedIOException(ex);
    }
    return buffer.toByteArray();
  }
}
