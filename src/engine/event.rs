//! Input events as the engine sees them: compact, borrowed from the record
//! bytes where possible, already validated by [`crate::decode`].

use std::borrow::Cow;

/// Milliseconds in one UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day number (days since 1970-01-01) of an epoch-millisecond time.
/// Day boundaries are what "distinct active days" and BG/NBD purchase days
/// count, so every part of engage uses this one definition.
pub fn day_of(ts_ms: i64) -> i32 {
    // Cannot overflow: i64 ms / 86.4e6 fits in i32 for ±5.8 million years,
    // and decode rejects timestamps outside ±10 000 years.
    ts_ms.div_euclid(DAY_MS) as i32
}

/// Which input topic a record came from. The input topics are
/// co-partitioned, so a customer's records from all of them land in the same
/// partition number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputTopic {
    /// Clicks, views, social, loyalty and support interactions.
    Clickstream,
    /// Purchases and refunds.
    Purchases,
    /// Erasure requests (optional, `topics.erasures`): not events, applied
    /// as they arrive (see [`crate::engine::erasure`]).
    Erasures,
}

impl InputTopic {
    /// The two event inputs, in [`InputTopic::index`] order: what is
    /// aligned on event time and counted in a customer's applied offsets.
    pub const EVENTS: [InputTopic; 2] = [InputTopic::Clickstream, InputTopic::Purchases];

    /// Every input, in [`InputTopic::index`] order.
    pub const ALL: [InputTopic; 3] = [InputTopic::Clickstream, InputTopic::Purchases, InputTopic::Erasures];

    /// 0 for clickstream, 1 for purchases, 2 for erasures: the index of
    /// per-topic arrays (arrays over [`InputTopic::EVENTS`] stop at 1).
    pub fn index(self) -> usize {
        match self {
            InputTopic::Clickstream => 0,
            InputTopic::Purchases => 1,
            InputTopic::Erasures => 2,
        }
    }

    /// Stable lower-case name, used in metrics labels and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            InputTopic::Clickstream => "clickstream",
            InputTopic::Purchases => "purchases",
            InputTopic::Erasures => "erasures",
        }
    }
}

/// Clickstream event types (docs/model.md, "Inputs"). `Unknown` keeps engage forward
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

/// What happened, with the payload each kind needs for scoring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventKind {
    /// A clickstream interaction. `rating` is `properties.rating` (1–5) for
    /// feedback, when present.
    Click {
        /// The event type.
        kind: ClickKind,
        /// The rating, for feedback.
        rating: Option<f64>,
    },
    /// A purchase of `amount` currency units.
    Purchase {
        /// Amount in currency units.
        amount: f64,
        /// Whether the buyer is a loyalty member (a loyalty bonus).
        loyalty_member: bool,
        /// Whether a coupon was used (a loyalty bonus).
        coupon_used: bool,
    },
    /// A refund of `amount` currency units.
    Refund {
        /// Amount in currency units.
        amount: f64,
    },
}

impl EventKind {
    /// False only for unknown clickstream types, which change no state.
    pub fn is_known(&self) -> bool {
        !matches!(self, EventKind::Click { kind: ClickKind::Unknown, .. })
    }

    /// The wire type name, for logs and the replay dead-letter file.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Click { kind, .. } => kind.as_str(),
            EventKind::Purchase { .. } => "purchase",
            EventKind::Refund { .. } => "refund",
        }
    }
}

/// A decoded, validated input event. Strings borrow from the record bytes
/// unless the JSON had escapes in them.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Unique per event: duplicates with the same id are applied once.
    pub event_id: Cow<'a, str>,
    /// The customer the event belongs to; also the record key.
    pub customer_id: Cow<'a, str>,
    /// Event time, epoch milliseconds (UTC).
    pub ts_ms: i64,
    /// The type and its scoring payload.
    pub kind: EventKind,
}

impl Event<'_> {
    /// Detaches the event from the record buffer (replay sorts events before
    /// applying them, so they must outlive the line they came from).
    pub fn into_owned(self) -> Event<'static> {
        Event {
            event_id: Cow::Owned(self.event_id.into_owned()),
            customer_id: Cow::Owned(self.customer_id.into_owned()),
            ts_ms: self.ts_ms,
            kind: self.kind,
        }
    }
}

/// Where an input record sits in Kafka: the per-topic offset lets the engine
/// skip records already reflected in a restored state (docs/model.md "Guarantees").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The topic the record came from.
    pub topic: InputTopic,
    /// The record's offset in its partition.
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_uses_utc_day_boundaries_and_floors_before_1970() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn click_kind_names_round_trip_and_unknown_is_tolerated() {
        for k in ClickKind::KNOWN {
            assert_eq!(ClickKind::parse(k.as_str()), k);
        }
        assert_eq!(ClickKind::parse("video_watch"), ClickKind::Unknown);
    }
}
