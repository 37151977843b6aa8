package engage.peer;

import java.io.File;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueBytesStoreSupplier;
import org.apache.kafka.streams.state.Stores;

/**
 * engage's scoring job as a Kafka Streams application, deployed as someone who knows Kafka
 * Streams would deploy it next to engage: both input topics (JSON keyed by customer_id) in one
 * source ordered by event time, per-customer state in a key-value store (RocksDB, bounded, or in
 * memory) with its changelog, and a JSON score change to the output topic whenever engage would
 * publish one. Every setting that differs from the Streams default is set in {@link #properties}
 * and says why.
 *
 * <pre>
 * java -cp 'target/engage-peer.jar:target/lib/*' engage.peer.EngagePeer \
 *   --config engage.toml --bootstrap localhost:9092 --application-id engage-peer \
 *   [--clickstream clickstream] [--purchases purchases] [--scores engagement.scores] \
 *   [--guarantee at_least_once|exactly_once_v2] [--store rocksdb|in_memory] [--state-dir DIR] \
 *   [--property key=value]...
 * </pre>
 *
 * {@code --config} is the engage config file engage runs with: the peer takes its scoring and
 * lifecycle rules, input limits and commit cadence from it. {@code --property} sets any Streams,
 * consumer or producer property (repeatable, applied last, so it overrides the peer's own
 * settings), e.g. {@code num.stream.threads=2} or {@code producer.linger.ms=20}.
 *
 * <p>Prints "engage-peer: RUNNING" once running, and on SIGTERM a summary line and the producer's
 * batching (average batch bytes and records per request).
 */
public final class EngagePeer {
  /** The key-value store; its changelog is {@code <application.id>-customer-scores-changelog}. */
  static final String STORE = "customer-scores";

  private EngagePeer() {}

  static Topology topology(Scoring rules, String store, String clickstream, String purchases, String scores) {
    StreamsBuilder builder = new StreamsBuilder();
    KeyValueBytesStoreSupplier supplier =
        switch (store) {
          case "rocksdb" -> Stores.persistentKeyValueStore(STORE);
          // The closest to engage's design: all state in memory, durable through the changelog,
          // restored from it on start.
          case "in_memory" -> Stores.inMemoryKeyValueStore(STORE);
          default -> throw new IllegalArgumentException("--store is rocksdb or in_memory, not " + store);
        };
    // A store built with Stores is uncached unless asked: caching is enabled as the DSL does and as
    // the Streams docs ("Record caches in the Processor API") recommend when only the latest value
    // per key matters, so a customer updated many times between commits writes one changelog
    // record per commit, not one per event (engage writes changed customers once per flush too).
    builder.addStateStore(
        Stores.keyValueStoreBuilder(supplier, Serdes.String(), CustomerState.SERDE).withCachingEnabled());
    builder.stream(
            List.of(clickstream, purchases),
            Consumed.with(Serdes.String(), Event.serde(rules, purchases))
                .withTimestampExtractor(new Event.EventTime(rules)))
        .process(() -> new ScoreProcessor(rules, STORE), STORE)
        .to(scores, Produced.with(Serdes.String(), Serdes.ByteArray()));
    return builder.build();
  }

  static Properties properties(Map<String, String> args, List<String> overrides, Scoring rules) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("application-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
    // at_least_once by default, exactly_once_v2 as the second mode (engage's
    // run.processing_guarantee at_least_once / exactly_once).
    String guarantee = args.getOrDefault("guarantee", "at_least_once");
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
    // Commit (offsets, and the store cache flushed to the changelog) at engage's cadence: how often
    // its committed offsets move (Scoring.commitIntervalMs*). The Streams default is 30 s at least
    // once and 100 ms exactly once.
    p.put(
        StreamsConfig.COMMIT_INTERVAL_MS_CONFIG,
        guarantee.equals("at_least_once") ? rules.commitIntervalMsAtLeastOnce : rules.commitIntervalMsExactlyOnce);
    // The producer batches as engage's does (its PRODUCER_DEFAULTS on librdkafka's defaults):
    // linger 5 ms (the Streams default is 100 ms) and batches up to librdkafka's batch.size,
    // 1 000 000 bytes (the Java default is 16 384). acks=all and idempotence are already the
    // defaults, as in engage; set anyway so the two cannot drift apart.
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
    p.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), 1_000_000);
    p.put(StreamsConfig.producerPrefix(ProducerConfig.ACKS_CONFIG), "all");
    p.put(StreamsConfig.producerPrefix(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG), true);
    // The consumer waits for data as engage's does (src/kafka/client.rs): a fetch is held at most
    // 10 ms (the Java default is 500 ms). With max.task.idle.ms 0 a task whose other input has
    // nothing buffered waits for a fetch to say that input has no lag, so the fetch wait is on the
    // peer's latency path as it is on engage's.
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG), 10);
    // RocksDB within a fixed off-heap budget shared by all stores (BoundedRocksDb).
    p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedRocksDb.class);
    // Kafka Streams 4.4 warns that this will be the default in 5.0 and recommends enabling it now.
    p.put(StreamsConfig.PROCESSING_EXCEPTION_HANDLER_GLOBAL_ENABLED_CONFIG, true);
    if (args.containsKey("state-dir")) {
      // Where RocksDB lives; the default (java.io.tmpdir/kafka-streams) is shared by every app.
      p.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
    }
    // Left at their defaults, on purpose:
    // - num.stream.threads (1): the benchmark runs 1 and 2 (--property) and reports the better.
    // - replication.factor (-1: the broker's default) and num.standby.replicas (0): the docs
    //   recommend 3 and 1 for resilience in a cluster; the benchmark broker is one node, where
    //   neither applies, as it does not for engage's changelog.
    // - statestore.cache.max.bytes (10 MiB): holds the benchmark's hot customers many times over.
    // - max.task.idle.ms (0): waits for data already on the broker, so records present are
    //   processed in event-time order across the two inputs, as engage's alignment does.
    // - default.deserialization.exception.handler: the value serde never throws; bad input is
    //   dropped by the timestamp extractor (Event.EventTime).
    for (String kv : overrides) {
      int eq = kv.indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException("--property takes key=value, not " + kv);
      }
      p.put(kv.substring(0, eq).trim(), kv.substring(eq + 1).trim());
    }
    return p;
  }

  /** The producer's batching so far: average batch bytes and records per request. */
  static String producerBatching(KafkaStreams streams) {
    double size = 0;
    double records = 0;
    int producers = 0;
    for (Map.Entry<MetricName, ? extends Metric> m : streams.metrics().entrySet()) {
      MetricName n = m.getKey();
      if (!n.group().equals("producer-metrics")) {
        continue;
      }
      Object v = m.getValue().metricValue();
      if (!(v instanceof Double d) || d.isNaN()) {
        continue;
      }
      if (n.name().equals("batch-size-avg")) {
        size += d;
        producers++;
      } else if (n.name().equals("records-per-request-avg")) {
        records += d;
      }
    }
    return producers == 0
        ? "no producer metrics"
        : String.format("batch-size-avg %.0f bytes, records-per-request-avg %.1f", size / producers, records / producers);
  }

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = new HashMap<>();
    List<String> overrides = new ArrayList<>();
    for (int i = 0; i < argv.length; i += 2) {
      if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
        System.err.println("engage-peer: expected --name value, got " + argv[i]);
        System.exit(2);
      }
      String name = argv[i].substring(2);
      if (name.equals("property")) {
        overrides.add(argv[i + 1]);
      } else {
        args.put(name, argv[i + 1]);
      }
    }
    for (String required : List.of("config", "bootstrap", "application-id")) {
      if (!args.containsKey(required)) {
        System.err.println("engage-peer: --" + required + " is required");
        System.exit(2);
      }
    }
    Scoring rules = Scoring.load(new File(args.get("config")));
    Topology topology =
        topology(
            rules,
            args.getOrDefault("store", "rocksdb"),
            args.getOrDefault("clickstream", "clickstream"),
            args.getOrDefault("purchases", "purchases"),
            args.getOrDefault("scores", "engagement.scores"));
    KafkaStreams streams = new KafkaStreams(topology, properties(args, overrides, rules));
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setStateListener(
        (now, before) -> {
          System.err.println("engage-peer: " + now);
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
            stopped.countDown();
          }
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  String batching = producerBatching(streams);
                  streams.close(Duration.ofSeconds(30));
                  System.err.printf(
                      "engage-peer: stopped; %d applied, %d skipped as bad input, %d score changes; producer %s%n",
                      ScoreProcessor.APPLIED.sum(),
                      Event.SKIPPED.sum(),
                      ScoreProcessor.PUBLISHED.sum(),
                      batching);
                }));
    streams.start();
    stopped.await();
    System.exit(streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
  }
}
