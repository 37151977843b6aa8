package engage.peer;

import java.util.Map;
import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.rocksdb.BlockBasedTableConfig;
import org.rocksdb.Cache;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.WriteBufferManager;

/**
 * Bounds the memory of every RocksDB store of the instance, as the Kafka Streams memory-management
 * docs ("RocksDB", {@code BoundedMemoryRocksDBConfig}) prescribe: one block cache shared by all
 * stores (one per task, so one per input partition), memtables charged to that cache through a
 * {@link WriteBufferManager}, index and filter blocks cached (high priority, top level pinned)
 * rather than held outside the bound. Without it each store gets its own 50 MiB block cache and
 * up to three 16 MiB memtables, unbounded in total.
 *
 * <p>Sized by two Streams properties (pass them with {@code --property}):
 *
 * <ul>
 *   <li>{@value #TOTAL}: the whole off-heap budget, cache and memtables (default 64 MiB). A
 *       customer's state is about 80 bytes with its key, so 1 M customers are about 80 MiB of
 *       data; the benchmark's hot set (50 000 customers, 4 MiB) fits many times over, and the
 *       store's record cache ({@code statestore.cache.max.bytes}, 10 MiB on the heap) absorbs the
 *       repeated writes between commits.
 *   <li>{@value #MEMTABLES}: the part of it memtables may use (default 16 MiB), 4 MiB a memtable.
 * </ul>
 */
public final class BoundedRocksDb implements RocksDBConfigSetter {
  static final String TOTAL = "engage.rocksdb.total.bytes";
  static final String MEMTABLES = "engage.rocksdb.memtable.bytes";

  private static final long DEFAULT_TOTAL = 64L << 20;
  private static final long DEFAULT_MEMTABLES = 16L << 20;
  private static final long MEMTABLE_SIZE = 4L << 20;
  /** Share of the cache reserved for index and filter blocks (the docs' example uses 0.1). */
  private static final double INDEX_FILTER_RATIO = 0.1;

  /** Shared by every store of the process: created with the first store's configuration. */
  private static Cache cache;

  private static WriteBufferManager writeBufferManager;

  private static synchronized void init(Map<String, Object> configs) {
    if (cache == null) {
      long total = bytes(configs, TOTAL, DEFAULT_TOTAL);
      long memtables = bytes(configs, MEMTABLES, DEFAULT_MEMTABLES);
      cache = new LRUCache(total, -1, false, INDEX_FILTER_RATIO);
      writeBufferManager = new WriteBufferManager(memtables, cache);
    }
  }

  private static long bytes(Map<String, Object> configs, String key, long fallback) {
    Object v = configs.get(key);
    return v == null ? fallback : Long.parseLong(v.toString().trim());
  }

  @Override
  public void setConfig(String storeName, Options options, Map<String, Object> configs) {
    init(configs);
    BlockBasedTableConfig table = (BlockBasedTableConfig) options.tableFormatConfig();
    table.setBlockCache(cache);
    table.setCacheIndexAndFilterBlocks(true);
    table.setCacheIndexAndFilterBlocksWithHighPriority(true);
    table.setPinTopLevelIndexAndFilter(true);
    options.setWriteBufferManager(writeBufferManager);
    options.setWriteBufferSize(MEMTABLE_SIZE);
    options.setMaxWriteBufferNumber(2);
    options.setTableFormatConfig(table);
  }

  @Override
  public void close(String storeName, Options options) {
    // The cache and the write buffer manager are shared by every store: never closed here.
  }
}
