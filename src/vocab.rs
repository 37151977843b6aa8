//! The names engage's configuration, inputs, engine and outputs share: which
//! inputs there are and what each carries, the event types, the engagement
//! dimensions, the signals an event contributes, and the wire formats.
//!
//! Plain enums with no behaviour beyond their names, at the bottom of the
//! crate, so that [`crate::config`] can validate against them without
//! depending on the engine, and the engine can use them without depending on
//! the configuration's file format.

use serde::Serialize;

/// A topic's wire format (config `input.*_format` and `output.*_format`; on
/// input, a record's `content-type` header overrides it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// UTF-8 JSON object per record.
    #[default]
    Json,
    /// `engage.v1.ClickEvent` / `engage.v1.PurchaseEvent`, plain or in the
    /// Confluent Schema Registry framing (detected by its leading zero byte,
    /// which a plain message of these types never starts with).
    Protobuf,
}

impl Format {
    /// The format a `content-type` header names, if engage reads it.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let mime = value.split(';').next().unwrap_or("").trim();
        match mime.to_ascii_lowercase().as_str() {
            "application/json" | "text/json" => Some(Format::Json),
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf"
            | "application/vnd.confluent.protobuf" => Some(Format::Protobuf),
            _ => None,
        }
    }
}

/// Which input a record came from, by what it carries. The input topics are
/// co-partitioned, so a customer's records from all of them land in the same
/// partition number.
///
/// The inputs engage reads are data ([`crate::config::TopicsConfig::inputs`]):
/// the pipeline handles every event input alike (aligned on event time,
/// offsets committed and recorded per customer) and every control input by
/// its [`Role`]. Adding an event input is a variant here, in
/// [`InputKind::EVENTS`], its topic and format keys in the config, and its
/// decoding: nothing in the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputKind {
    /// Clicks, views, social, loyalty and support interactions.
    Clickstream,
    /// Purchases and refunds.
    Purchases,
    /// Erasure requests (optional, `topics.erasures`): not events, applied
    /// as they arrive (see [`crate::engine::erasure`]).
    Erasures,
}

/// What an input is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Events: applied to customer states in event-time order across the
    /// event inputs, each customer's applied offset kept per input.
    Events,
    /// Erasure requests: applied as they arrive.
    Erasures,
}

/// How many event inputs there are: the length of every per-event-input
/// array (a customer's applied offsets, a partition's stream clocks).
pub const EVENT_INPUTS: usize = InputKind::EVENTS.len();

impl InputKind {
    /// The event inputs, in [`InputKind::event_index`] order.
    pub const EVENTS: [InputKind; 2] = [InputKind::Clickstream, InputKind::Purchases];

    /// Every input, in [`InputKind::index`] order: the event inputs first.
    pub const ALL: [InputKind; 3] = [InputKind::Clickstream, InputKind::Purchases, InputKind::Erasures];

    /// The position in [`InputKind::ALL`]: the index of per-input arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// What the input is for.
    pub fn role(self) -> Role {
        match self {
            InputKind::Clickstream | InputKind::Purchases => Role::Events,
            InputKind::Erasures => Role::Erasures,
        }
    }

    /// The position in [`InputKind::EVENTS`], for an event input.
    pub fn event_index(self) -> Option<usize> {
        (self.role() == Role::Events).then_some(self.index())
    }

    /// Stable lower-case name, used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Clickstream => "clickstream",
            InputKind::Purchases => "purchases",
            InputKind::Erasures => "erasures",
        }
    }
}

/// Clickstream event types (docs/model.md, "Events"). `Unknown` keeps engage forward
/// compatible: producers may add types before engage learns to score them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ClickKind {
    /// `page_view`: a page was viewed.
    PageView,
    /// `product_view`: a product page was viewed.
    ProductView,
    /// `search`: the customer searched.
    Search,
    /// `app_open`: the app was opened.
    AppOpen,
    /// `add_to_cart`: purchase intent.
    AddToCart,
    /// `wishlist_add`: purchase intent.
    WishlistAdd,
    /// `ad_click`: a response to advertising.
    AdClick,
    /// `email_click`: a response to an email.
    EmailClick,
    /// `share`: advocacy.
    Share,
    /// `review`: content creation.
    Review,
    /// `referral`: advocacy.
    Referral,
    /// `social_follow`: advocacy.
    SocialFollow,
    /// `loyalty_signup`: joined the loyalty programme.
    LoyaltySignup,
    /// `coupon_claim`: loyalty programme participation.
    CouponClaim,
    /// `support_contact`: an interaction with the company.
    SupportContact,
    /// `feedback`: a rating (`properties.rating` 1–5).
    Feedback,
    /// Any other type: accepted, counted, contributes nothing.
    Unknown,
}

impl ClickKind {
    /// Every known click kind, in declaration order (`Unknown` excluded).
    pub const KNOWN: [ClickKind; 16] = [
        ClickKind::PageView,
        ClickKind::ProductView,
        ClickKind::Search,
        ClickKind::AppOpen,
        ClickKind::AddToCart,
        ClickKind::WishlistAdd,
        ClickKind::AdClick,
        ClickKind::EmailClick,
        ClickKind::Share,
        ClickKind::Review,
        ClickKind::Referral,
        ClickKind::SocialFollow,
        ClickKind::LoyaltySignup,
        ClickKind::CouponClaim,
        ClickKind::SupportContact,
        ClickKind::Feedback,
    ];

    /// The wire name of the type (`"page_view"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ClickKind::PageView => "page_view",
            ClickKind::ProductView => "product_view",
            ClickKind::Search => "search",
            ClickKind::AppOpen => "app_open",
            ClickKind::AddToCart => "add_to_cart",
            ClickKind::WishlistAdd => "wishlist_add",
            ClickKind::AdClick => "ad_click",
            ClickKind::EmailClick => "email_click",
            ClickKind::Share => "share",
            ClickKind::Review => "review",
            ClickKind::Referral => "referral",
            ClickKind::SocialFollow => "social_follow",
            ClickKind::LoyaltySignup => "loyalty_signup",
            ClickKind::CouponClaim => "coupon_claim",
            ClickKind::SupportContact => "support_contact",
            ClickKind::Feedback => "feedback",
            ClickKind::Unknown => "unknown",
        }
    }

    /// Parses a wire name; anything unrecognised is `Unknown`.
    pub fn parse(s: &str) -> ClickKind {
        match s {
            "page_view" => ClickKind::PageView,
            "product_view" => ClickKind::ProductView,
            "search" => ClickKind::Search,
            "app_open" => ClickKind::AppOpen,
            "add_to_cart" => ClickKind::AddToCart,
            "wishlist_add" => ClickKind::WishlistAdd,
            "ad_click" => ClickKind::AdClick,
            "email_click" => ClickKind::EmailClick,
            "share" => ClickKind::Share,
            "review" => ClickKind::Review,
            "referral" => ClickKind::Referral,
            "social_follow" => ClickKind::SocialFollow,
            "loyalty_signup" => ClickKind::LoyaltySignup,
            "coupon_claim" => ClickKind::CouponClaim,
            "support_contact" => ClickKind::SupportContact,
            "feedback" => ClickKind::Feedback,
            _ => ClickKind::Unknown,
        }
    }
}

/// Defines [`Dimension`] and everything that lists its variants from one
/// list, so the names, [`Dimension::ALL`] and [`DIMENSIONS`] cannot drift
/// apart. Adding a dimension here makes every array indexed by dimension
/// one longer; the places that must name it (its `[scoring.*]` table, its
/// field of the protobuf `Dimensions` message) then fail to compile, and
/// the 128-byte state check (`engine::state`) fails if it no longer fits.
macro_rules! dimensions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// The engagement dimensions, in the fixed order used by every
        /// array indexed by dimension.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Dimension {
            $($(#[$doc])* $variant,)+
        }

        impl Dimension {
            /// All dimensions in index order.
            pub const ALL: [Dimension; [$(Dimension::$variant),+].len()] = [$(Dimension::$variant),+];

            /// The config and message name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Dimension::$variant => $name,)+
                }
            }
        }
    };
}

dimensions! {
    /// Visiting, browsing, responding to marketing.
    Attention => "attention",
    /// Purchases and refunds.
    Transaction => "transaction",
    /// Advocacy and content creation.
    Social => "social",
    /// Loyalty-programme participation.
    Loyalty => "loyalty",
    /// Service interactions and ratings (centred on 50).
    Satisfaction => "satisfaction",
}

/// Number of dimensions: the length of every array indexed by dimension
/// (config tables, state, outputs).
pub const DIMENSIONS: usize = Dimension::ALL.len();

impl Dimension {
    /// The index of arrays indexed by dimension.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Something an event contributes, which the config weighs per dimension: one
/// per clickstream type, plus the parts of a purchase. Keeping these as data
/// (a signal × dimension table) rather than code means any event can feed any
/// dimension by configuration alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(u8);

const CLICK_SIGNALS: u8 = ClickKind::KNOWN.len() as u8;

impl Signal {
    /// Per purchase.
    pub const PURCHASE: Signal = Signal(CLICK_SIGNALS);
    /// Per purchase, times ln(1 + amount).
    pub const PURCHASE_PER_LN_AMOUNT: Signal = Signal(CLICK_SIGNALS + 1);
    /// Per refund.
    pub const REFUND: Signal = Signal(CLICK_SIGNALS + 2);
    /// Per purchase by a loyalty member.
    pub const PURCHASE_LOYALTY_MEMBER: Signal = Signal(CLICK_SIGNALS + 3);
    /// Per purchase that redeemed a coupon.
    pub const PURCHASE_WITH_COUPON: Signal = Signal(CLICK_SIGNALS + 4);
    /// Per feedback, times (rating − 3).
    pub const FEEDBACK_PER_RATING_POINT: Signal = Signal(CLICK_SIGNALS + 5);
    /// How many signals there are.
    pub const COUNT: usize = CLICK_SIGNALS as usize + 6;
    /// Every signal, in index order.
    pub const ALL: [Signal; Signal::COUNT] = {
        let mut all = [Signal(0); Signal::COUNT];
        let mut i = 0;
        while i < Signal::COUNT {
            all[i] = Signal(i as u8);
            i += 1;
        }
        all
    };

    /// The position in [`Signal::ALL`]: the row of the signal × dimension
    /// weight table.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The signal of a known click type.
    pub fn click(kind: ClickKind) -> Signal {
        Signal(kind as u8)
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            s if s.0 < CLICK_SIGNALS => ClickKind::KNOWN[s.0 as usize].as_str(),
            Signal::PURCHASE => "purchase",
            Signal::PURCHASE_PER_LN_AMOUNT => "purchase_per_ln_amount",
            Signal::REFUND => "refund",
            Signal::PURCHASE_LOYALTY_MEMBER => "purchase_loyalty_member",
            Signal::PURCHASE_WITH_COUPON => "purchase_with_coupon",
            _ => "feedback_per_rating_point",
        }
    }

    /// Parses a config name.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The horizons a learned purchase probability may be trained for
/// (`churn.horizon`), each with the output field that carries it:
/// `p_purchase_90d` is P(purchase within 90 days). The field is named after
/// the horizon so a consumer never mistakes one horizon's probability for
/// another's, and a fixed set keeps the protobuf schema (one field each) and
/// the JSON names identical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Horizon {
    /// 30 days.
    Days30,
    /// 60 days.
    Days60,
    /// 90 days (the default: a quarter, as retention teams plan).
    Days90,
    /// 180 days.
    Days180,
    /// 365 days.
    Days365,
}

impl Horizon {
    /// Every horizon, shortest first.
    pub const ALL: [Horizon; 5] =
        [Horizon::Days30, Horizon::Days60, Horizon::Days90, Horizon::Days180, Horizon::Days365];

    /// Its length in days.
    pub fn days(self) -> u32 {
        match self {
            Horizon::Days30 => 30,
            Horizon::Days60 => 60,
            Horizon::Days90 => 90,
            Horizon::Days180 => 180,
            Horizon::Days365 => 365,
        }
    }

    /// The horizon of exactly `days` days, if it is one.
    pub fn from_days(days: u64) -> Option<Horizon> {
        Horizon::ALL.into_iter().find(|h| u64::from(h.days()) == days)
    }

    /// The name of the probability's output field (and alert reason).
    pub fn field(self) -> &'static str {
        match self {
            Horizon::Days30 => "p_purchase_30d",
            Horizon::Days60 => "p_purchase_60d",
            Horizon::Days90 => "p_purchase_90d",
            Horizon::Days180 => "p_purchase_180d",
            Horizon::Days365 => "p_purchase_365d",
        }
    }
}

/// The features of the learned purchase probability, in the order of a
/// `[churn.model]`'s coefficients: what the engine already knows of a
/// customer at any moment, each named with the transform applied
/// (`log1p_x` is ln(1 + x); dimensions, score and P(alive) are on 0–1).
/// A model whose `features` differ from this list was trained by another
/// version and is refused at start (docs/model.md "The learned purchase
/// probability" describes each).
pub const PURCHASE_FEATURES: [&str; 20] = [
    "log1p_idle_days",
    "log1p_idle_ratio",
    "log1p_cadence_days",
    "log1p_active_days",
    "log1p_age_days",
    "has_purchased",
    "log1p_repeat_purchases",
    "log1p_days_since_purchase",
    "log1p_purchase_age_days",
    "attention",
    "transaction",
    "social",
    "loyalty",
    "satisfaction",
    "score",
    "p_alive",
    "log_expected_purchases_90d",
    "stage_integration",
    "stage_intelligence",
    "stage_value_creation",
];

/// How many features the learned purchase probability has.
pub const PURCHASE_FEATURE_COUNT: usize = PURCHASE_FEATURES.len();

/// Where the dimensions sit in [`PURCHASE_FEATURES`]: one feature each, in
/// [`Dimension`] order.
pub const PURCHASE_FEATURE_DIMENSIONS: usize = 9;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_inputs_come_first_and_index_their_arrays() {
        for (i, kind) in InputKind::EVENTS.into_iter().enumerate() {
            assert_eq!((kind.index(), kind.event_index(), kind.role()), (i, Some(i), Role::Events));
        }
        for kind in InputKind::ALL.into_iter().skip(EVENT_INPUTS) {
            assert_eq!(kind.event_index(), None, "{kind:?}");
        }
        assert!(InputKind::ALL.iter().enumerate().all(|(i, k)| k.index() == i));
    }

    #[test]
    fn click_kind_names_round_trip_and_unknown_is_tolerated() {
        for k in ClickKind::KNOWN {
            assert_eq!(ClickKind::parse(k.as_str()), k);
        }
        assert_eq!(ClickKind::parse("video_watch"), ClickKind::Unknown);
    }

    #[test]
    fn dimensions_index_their_arrays_in_order() {
        assert!(Dimension::ALL.iter().enumerate().all(|(i, d)| d.index() == i));
        let names: std::collections::BTreeSet<_> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names.len(), DIMENSIONS, "distinct names");
    }

    #[test]
    fn every_dimension_is_a_purchase_feature_and_horizons_name_their_field() {
        for d in Dimension::ALL {
            assert_eq!(PURCHASE_FEATURES[PURCHASE_FEATURE_DIMENSIONS + d.index()], d.as_str());
        }
        for h in Horizon::ALL {
            assert_eq!(Horizon::from_days(u64::from(h.days())), Some(h));
            assert_eq!(h.field(), format!("p_purchase_{}d", h.days()));
        }
        assert_eq!(Horizon::from_days(91), None);
    }

    #[test]
    fn signal_names_round_trip() {
        for s in Signal::ALL {
            assert_eq!(Signal::parse(s.as_str()), Some(s));
        }
    }
}

/// A customer's churn health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Health {
    /// Behaving as usual.
    #[default]
    Active = 1,
    /// Slipping: one of the churn signals fired.
    AtRisk = 2,
    /// Probably gone.
    Dormant = 3,
}

impl Health {
    /// The message name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Active => "active",
            Health::AtRisk => "at_risk",
            Health::Dormant => "dormant",
        }
    }

    /// From the persisted numeric form; unknown values read as active.
    pub fn from_u8(v: u8) -> Health {
        match v {
            2 => Health::AtRisk,
            3 => Health::Dormant,
            _ => Health::Active,
        }
    }
}
