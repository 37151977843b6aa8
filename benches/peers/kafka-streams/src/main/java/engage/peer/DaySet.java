package engage.peer;

import java.nio.ByteBuffer;

/**
 * A set of distinct UTC day numbers (epoch ms / 86 400 000, floored), as a bitmap of 64-day words
 * from a base day: engage's distinct active days and purchase days (its {@code state/days.rs}),
 * which the lifecycle stage counts. Exact in any arrival order, so a late event's day is counted
 * once; engage is exact too within {@code state.retention} (400 days) of the newest day, further
 * than any benchmark reaches.
 *
 * <p>Persisted as one byte (the number of words) and, when there are any, the base day (i32) and
 * the words (i64 each): 13 bytes for a customer active within one 64-day span.
 */
final class DaySet {
  /** The day of bit 0 of {@code words[0]}: a multiple of 64. */
  private int base;

  private long[] words = EMPTY;
  private int count;

  private static final long[] EMPTY = new long[0];

  /** Distinct days in the set. */
  int count() {
    return count;
  }

  /** Adds {@code day}; returns whether it was new. */
  boolean add(int day) {
    int wordBase = Math.floorDiv(day, 64) * 64;
    if (words.length == 0) {
      base = wordBase;
      words = new long[1];
    } else if (wordBase < base) {
      int grow = (base - wordBase) / 64;
      long[] w = new long[words.length + grow];
      System.arraycopy(words, 0, w, grow, words.length);
      words = w;
      base = wordBase;
    } else if ((wordBase - base) / 64 >= words.length) {
      long[] w = new long[(wordBase - base) / 64 + 1];
      System.arraycopy(words, 0, w, 0, words.length);
      words = w;
    }
    int i = day - base;
    long bit = 1L << (i & 63);
    if ((words[i >>> 6] & bit) != 0) {
      return false;
    }
    words[i >>> 6] |= bit;
    count++;
    return true;
  }

  int bytes() {
    return words.length == 0 ? 1 : 1 + 4 + 8 * words.length;
  }

  void write(ByteBuffer b) {
    if (words.length > 255) {
      throw new IllegalStateException("days span more than 255 64-day words");
    }
    b.put((byte) words.length);
    if (words.length > 0) {
      b.putInt(base);
      for (long w : words) {
        b.putLong(w);
      }
    }
  }

  static DaySet read(ByteBuffer b) {
    DaySet s = new DaySet();
    int n = Byte.toUnsignedInt(b.get());
    if (n > 0) {
      s.base = b.getInt();
      s.words = new long[n];
      for (int i = 0; i < n; i++) {
        s.words[i] = b.getLong();
        s.count += Long.bitCount(s.words[i]);
      }
    }
    return s;
  }
}
