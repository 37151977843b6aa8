package engage.peer;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.util.ByteArrayBuilder;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Applies each event to its customer's state in the store and forwards a score change (JSON, with
 * engage's headers) when engage would publish one (its {@code engine/mod.rs} {@code evaluate}):
 * the customer is new, the score moved by at least {@code min_delta} since the last one published,
 * or the lifecycle stage changed. (engage also publishes on a health change; on an event, health
 * only changes for a customer its wall-clock sweeps had marked at risk, which the peer does not
 * implement: see README.md.)
 */
final class ScoreProcessor implements Processor<String, Event, String, byte[]> {
  static final LongAdder APPLIED = new LongAdder();
  static final LongAdder PUBLISHED = new LongAdder();

  private static final JsonFactory JSON = new JsonFactory();
  private static final byte[] CONTENT_TYPE = bytes("application/json");
  private static final byte[] SCHEMA_VERSION = bytes("1");
  private static final byte[] MESSAGE_TYPE = bytes("engage.v1.ScoreChanged");

  private final Scoring rules;
  private final String storeName;
  private ProcessorContext<String, byte[]> context;
  private KeyValueStore<String, CustomerState> store;
  private final ByteArrayBuilder buffer = new ByteArrayBuilder(512);

  ScoreProcessor(Scoring rules, String storeName) {
    this.rules = rules;
    this.storeName = storeName;
  }

  private static byte[] bytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  @Override
  public void init(ProcessorContext<String, byte[]> context) {
    this.context = context;
    this.store = context.getStateStore(storeName);
  }

  @Override
  public void process(Record<String, Event> record) {
    Event e = record.value();
    if (e.kind == Event.Kind.UNKNOWN) {
      return;
    }
    APPLIED.increment();
    double[] contrib = rules.contributions(e);
    CustomerState s = store.get(record.key());
    boolean isNew = s == null;
    if (isNew) {
      s = CustomerState.first(e, contrib);
    } else {
      s.absorb(e, contrib, rules);
    }
    double[] raw = new double[Scoring.N];
    for (int i = 0; i < Scoring.N; i++) {
      raw[i] = s.raw[i];
    }
    double[] dims = rules.dimensionScores(raw);
    double score = rules.composite(dims);
    byte stage = rules.lifecycle.stage(s, dims[Scoring.SOCIAL], score);
    boolean moved = Math.abs(score - (double) s.publishedScore) >= rules.minDelta;
    boolean publish = isNew || moved || stage != s.stage;
    s.stage = stage;
    Double previous = isNew ? null : (double) s.publishedScore;
    if (publish) {
      s.seq++;
      s.publishedScore = (float) score;
    }
    store.put(record.key(), s);
    if (publish) {
      PUBLISHED.increment();
      Headers headers = new RecordHeaders();
      headers.add("content-type", CONTENT_TYPE);
      headers.add("engage.schema.version", SCHEMA_VERSION);
      headers.add("engage.message.type", MESSAGE_TYPE);
      long now = System.currentTimeMillis();
      // Stamped with the wall clock as engage's producer stamps its outputs; the input's event
      // time could be weeks old and fall outside the topic's retention.
      context.forward(
          new Record<>(record.key(), scoreChanged(record.key(), s, score, previous, dims, now), now, headers));
    }
  }

  /** The score change, with engage's field names and order (the fields it computes). */
  private byte[] scoreChanged(
      String id, CustomerState s, double score, Double previous, double[] dims, long now) {
    buffer.reset();
    try (JsonGenerator g = JSON.createGenerator(buffer, JsonEncoding.UTF8)) {
      g.writeStartObject();
      g.writeStringField("customer_id", id);
      g.writeNumberField("seq", s.seq);
      g.writeNumberField("score", score);
      g.writeFieldName("previous_score");
      if (previous != null) {
        g.writeNumber(previous);
      } else {
        g.writeNull();
      }
      g.writeObjectFieldStart("dimensions");
      for (int i = 0; i < Scoring.N; i++) {
        g.writeNumberField(Scoring.DIMENSIONS[i], dims[i]);
      }
      g.writeEndObject();
      g.writeStringField("stage", Lifecycle.name(s.stage));
      g.writeStringField("health", "active");
      // engage evaluates at the customer's latest event time, a late event's too.
      g.writeNumberField("event_time", s.lastSeen);
      g.writeNumberField("processed_at", now);
      g.writeEndObject();
    } catch (IOException ex) {
      throw new UncheckedIOException(ex);
    }
    return buffer.toByteArray();
  }
}
