package engage.peer;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * engage's four lifecycle stages (docs/model.md "Lifecycle stages", its {@code
 * engine/lifecycle.rs}), read from the {@code [lifecycle]} section of an engage TOML config. A
 * change of stage publishes a score change, so the peer must derive it as engage does.
 */
final class Lifecycle {
  static final byte INITIATION = 1;
  static final byte INTEGRATION = 2;
  static final byte INTELLIGENCE = 3;
  static final byte VALUE_CREATION = 4;

  private static final String[] NAMES = {"", "initiation", "integration", "intelligence", "value_creation"};

  private final long newCustomerMs;
  private final int formingActiveDays;
  private final int establishedPurchaseDays;
  private final int establishedActiveDays;
  private final long establishedSpanMs;
  private final double advocateSocial;
  private final double advocateScore;

  Lifecycle(JsonNode lifecycle) {
    newCustomerMs = Scoring.durationMs(lifecycle.path("new_customer").asText("14days"));
    formingActiveDays = lifecycle.path("forming_active_days").asInt(3);
    establishedPurchaseDays = lifecycle.path("established_purchase_days").asInt(3);
    establishedActiveDays = lifecycle.path("established_active_days").asInt(10);
    establishedSpanMs = Scoring.durationMs(lifecycle.path("established_span").asText("90days"));
    advocateSocial = lifecycle.path("advocate_social").asDouble(40.0);
    advocateScore = lifecycle.path("advocate_score").asDouble(60.0);
  }

  static String name(byte stage) {
    return NAMES[stage];
  }

  /**
   * The stage of a customer evaluated at their latest event time (so their age is their active
   * span), with their social dimension score and composite score.
   */
  byte stage(CustomerState s, double social, double score) {
    long span = s.lastSeen - s.firstSeen;
    int purchaseDays = s.purchaseDays.count();
    int activeDays = s.activeDays.count();
    boolean established =
        purchaseDays >= establishedPurchaseDays
            || (activeDays >= establishedActiveDays && span >= establishedSpanMs);
    if (established) {
      return social >= advocateSocial && score >= advocateScore ? VALUE_CREATION : INTELLIGENCE;
    } else if (span < newCustomerMs && purchaseDays < 2) {
      return INITIATION;
    } else if (purchaseDays >= 1 || activeDays >= formingActiveDays) {
      return INTEGRATION;
    }
    return INITIATION;
  }
}
