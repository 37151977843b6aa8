//! The customer API's requests: who may ask (bearer tokens), what a valid
//! request is, and where its answer comes from (this instance, or one
//! forward to the partition's owner). Every refusal is a clear status with
//! a JSON body saying why; every "try again" is 503 with `Retry-After`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use super::auth::{Auth, Refusal};
use super::peers::{FORWARDED, PeerAnswer, Peers};
use super::routing::{Owner, Routing};
use super::view::{Local, Lookup};
use crate::clock::wall_clock_ms;
use crate::decode::MAX_ID_BYTES;
use crate::engine::churn::Health;
use crate::telemetry::events::PartitionerMismatch;
use crate::telemetry::{API_DURATION, API_FORWARDS, API_REQUESTS};

/// The header on a 503 that says "I do not hold that partition": the
/// forwarding instance reads the group's assignment again.
pub const NOT_OWNER: &str = "engage-not-owner";

/// Seconds a client is asked to wait before trying again: partitions move
/// and restore in seconds.
const RETRY_AFTER: &str = "1";

/// The longest request target (path and query) taken: a customer id is at
/// most 256 bytes, 768 percent-encoded.
pub const MAX_TARGET_BYTES: usize = 2048;

/// Customers in a list when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// The most customers in one list; a larger `limit` is taken as this.
pub const MAX_LIMIT: usize = 10_000;

/// Characters percent-encoded in a forwarded customer id: all but the
/// unreserved ones, so the owner decodes exactly the id asked for.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Everything a request needs.
pub struct Service {
    /// Who may ask.
    pub auth: Auth,
    /// This instance's customers.
    pub local: Local,
    /// Who owns what.
    pub routing: Arc<Routing>,
    /// Connections to the other instances.
    pub peers: Peers,
    /// Lists served at once (`api.max_concurrent_lists`).
    pub lists: Semaphore,
    /// Forwarded parts of other instances' lists served at once (as many
    /// again). Apart from `lists`, so that two instances whose lists ask
    /// each other never wait on each other's permits.
    pub forwarded_lists: Semaphore,
    /// `api.request_timeout`.
    pub request_timeout: std::time::Duration,
}

type Answer = Response<Full<Bytes>>;

/// The API's routes.
enum Route<'a> {
    Customer(&'a str),
    List,
    Other,
}

impl Route<'_> {
    fn of(path: &str) -> Route<'_> {
        if path == "/v1/customers" {
            return Route::List;
        }
        match path.strip_prefix("/v1/customers/") {
            Some(raw) if !raw.contains('/') => Route::Customer(raw),
            _ => Route::Other,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Route::Customer(_) => "customer",
            Route::List => "list",
            Route::Other => "other",
        }
    }
}

/// Answers one request, within `api.request_timeout`, and counts it.
pub async fn handle(svc: Arc<Service>, request: Request<Incoming>) -> Answer {
    let started = Instant::now();
    let route = Route::of(request.uri().path());
    let label = route.label();
    let answer = match tokio::time::timeout(svc.request_timeout, respond(&svc, &request, route)).await {
        Ok(answer) => answer,
        Err(_) => unavailable("the request took longer than api.request_timeout", false),
    };
    metrics::counter!(API_REQUESTS, "route" => label, "code" => answer.status().as_u16().to_string()).increment(1);
    metrics::histogram!(API_DURATION, "route" => label).record(started.elapsed().as_secs_f64());
    answer
}

async fn respond(svc: &Arc<Service>, request: &Request<Incoming>, route: Route<'_>) -> Answer {
    let authorization = request.headers().get(header::AUTHORIZATION);
    if let Err(refusal) = svc.auth.check(authorization) {
        return unauthorized(refusal);
    }
    if request.method() != Method::GET {
        let mut a = error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        a.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return a;
    }
    let target = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_TARGET_BYTES {
        return error(StatusCode::URI_TOO_LONG, &format!("the request target is over {MAX_TARGET_BYTES} bytes"));
    }
    let forwarded = request.headers().contains_key(FORWARDED);
    let query = request.uri().query().filter(|q| !q.is_empty());
    match route {
        Route::Customer(_) if query.is_some() => {
            error(StatusCode::BAD_REQUEST, "GET /v1/customers/{id} takes no query parameters")
        }
        Route::Customer(raw) => match customer_id(raw) {
            Ok(id) => customer(svc, &id, authorization, forwarded).await,
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        Route::List => match ListQuery::parse(query.unwrap_or(""), forwarded) {
            Ok(q) => list(svc, q, authorization, forwarded).await,
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        Route::Other => error(
            StatusCode::NOT_FOUND,
            "no such endpoint: GET /v1/customers/{id} or GET /v1/customers?health=…&limit=…",
        ),
    }
}

/// The customer id of a path segment: percent-decoded, UTF-8, 1 to 256 bytes.
fn customer_id(raw: &str) -> Result<String, String> {
    if raw.len() > 3 * MAX_ID_BYTES {
        return Err(format!("the customer id is longer than {MAX_ID_BYTES} bytes"));
    }
    let id = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "the customer id is not UTF-8 once percent-decoded".to_string())?;
    if id.is_empty() {
        return Err("the customer id is empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!("the customer id is {} bytes; ids are at most {MAX_ID_BYTES}", id.len()));
    }
    Ok(id.into_owned())
}

async fn customer(svc: &Arc<Service>, id: &str, authorization: Option<&HeaderValue>, forwarded: bool) -> Answer {
    let Some(p) = svc.routing.partition_of(id) else {
        return unavailable("the input partition count is not known yet", false);
    };
    match svc.routing.owner(p) {
        Owner::Here { .. } => match svc.local.lookup(p, id, wall_clock_ms()) {
            Lookup::Found(view) => json(StatusCode::OK, &*view),
            Lookup::Absent { .. } if let Some((held_in, view)) = svc.local.find_elsewhere(p, id, wall_clock_ms()) => {
                PartitionerMismatch { expected: p, found: held_in }.emit();
                json(StatusCode::OK, &*view)
            }
            Lookup::Absent { assigned } if svc.routing.caught_up(p, assigned) => {
                error(StatusCode::NOT_FOUND, &format!("no customer {id:?} (partition {p})"))
            }
            Lookup::Absent { .. } => unavailable(
                &format!(
                    "partition {p} was taken over by this instance and is still applying its latest records; \
                     customer {id:?} is not there yet"
                ),
                false,
            ),
            Lookup::NotServed => unavailable(&format!("partition {p} is moving"), forwarded),
        },
        Owner::Restoring => unavailable(&format!("partition {p} is being restored"), false),
        Owner::Peer(_) | Owner::Unknown(_) if forwarded => {
            unavailable(&format!("partition {p} is not held by this instance"), true)
        }
        Owner::Peer(url) => {
            let path = format!("/v1/customers/{}", utf8_percent_encode(id, SEGMENT));
            match svc.peers.get(&url, &path, authorization).await {
                Ok(answer) => relay(svc, answer, p),
                Err(e) => {
                    metrics::counter!(API_FORWARDS, "outcome" => e.outcome()).increment(1);
                    svc.routing.refresh_soon();
                    unavailable(&format!("the owner of partition {p} did not answer ({e})"), false)
                }
            }
        }
        Owner::Unknown(why) => {
            svc.routing.refresh_soon();
            unavailable(&format!("partition {p}: {why}"), false)
        }
    }
}

/// An owner's answer to a forwarded lookup, as this instance's.
fn relay(svc: &Service, answer: PeerAnswer, p: i32) -> Answer {
    let outcome = match answer.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "token_refused",
        _ => "answered",
    };
    metrics::counter!(API_FORWARDS, "outcome" => outcome).increment(1);
    match answer.status {
        StatusCode::OK | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
            let mut a = Response::new(Full::new(answer.body));
            *a.status_mut() = answer.status;
            json_headers(&mut a);
            a
        }
        // During a rotation the token files of the instances differ for a
        // moment: this one took the token, the owner not yet.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => unavailable(
            &format!(
                "the owner of partition {p} does not accept this token yet (token files differ between instances)"
            ),
            false,
        ),
        status => {
            if answer.headers.contains_key(NOT_OWNER) {
                svc.routing.refresh_soon();
            }
            let mut a = Response::new(Full::new(answer.body));
            *a.status_mut() =
                if status == StatusCode::SERVICE_UNAVAILABLE { status } else { StatusCode::SERVICE_UNAVAILABLE };
            json_headers(&mut a);
            a.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
            a
        }
    }
}

/// `GET /v1/customers`' parameters.
#[derive(Debug)]
struct ListQuery {
    health: Health,
    limit: usize,
    /// Only on forwarded requests: the partitions the forwarder wants
    /// from this owner.
    partitions: Option<Vec<i32>>,
}

impl ListQuery {
    fn parse(query: &str, forwarded: bool) -> Result<ListQuery, String> {
        let mut seen = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| "the query is not UTF-8".to_string())
            };
            let (k, v) = (decode(k)?, decode(v)?);
            match k.as_str() {
                "health" | "limit" => {}
                "partitions" if forwarded => {}
                _ => return Err(format!("unknown parameter {k:?}: GET /v1/customers takes health and limit")),
            }
            if seen.insert(k.clone(), v).is_some() {
                return Err(format!("parameter {k:?} is given twice"));
            }
        }
        let health = match seen.get("health").map(String::as_str) {
            None | Some("at_risk") => Health::AtRisk,
            Some("dormant") => Health::Dormant,
            Some("active") => Health::Active,
            Some(other) => return Err(format!("health={other:?}; use active, at_risk or dormant")),
        };
        let limit = match seen.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<u64>() {
                Ok(n) => usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
                Err(_) => {
                    return Err(format!(
                        "limit={v:?}: a whole number from 0 (at most {MAX_LIMIT} customers are listed)"
                    ));
                }
            },
        };
        let partitions = match seen.get("partitions") {
            None => None,
            Some(v) => Some(
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<i32>().ok().filter(|p| *p >= 0))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("partitions={v:?}: partition numbers, comma-separated"))?,
            ),
        };
        Ok(ListQuery { health, limit, partitions })
    }
}

/// A list's answer.
#[derive(Serialize)]
struct ListAnswer<'a> {
    customers: Vec<&'a RawValue>,
    /// Input partitions whose customers are not in the list: their owner
    /// did not answer, or they are moving or restoring.
    missing_partitions: Vec<i32>,
}

/// What a list entry is ordered by.
#[derive(Deserialize)]
struct Key {
    p_alive: f64,
    customer_id: String,
}

/// What another instance's list answer holds.
#[derive(Deserialize)]
struct PeerList {
    customers: Vec<Box<RawValue>>,
    missing_partitions: Vec<i32>,
}

async fn list(svc: &Arc<Service>, q: ListQuery, authorization: Option<&HeaderValue>, forwarded: bool) -> Answer {
    let Some(n) = svc.routing.partitions() else {
        return unavailable("the input partition count is not known yet", false);
    };
    let wanted: Vec<i32> = match q.partitions {
        Some(ps) if ps.iter().any(|p| *p >= n) => {
            return error(StatusCode::BAD_REQUEST, &format!("partitions: the inputs have {n}"));
        }
        Some(ps) => ps,
        None => (0..n).collect(),
    };
    // Bounds the memory of lists at once; waiting counts against
    // api.request_timeout.
    let permits = if forwarded { &svc.forwarded_lists } else { &svc.lists };
    let Ok(_permit) = permits.acquire().await else {
        return unavailable("the API is stopping", false);
    };
    let now = wall_clock_ms();
    let (mut here, mut missing, mut remote) = (Vec::new(), Vec::new(), BTreeMap::<Arc<str>, Vec<i32>>::new());
    for p in wanted.iter().copied() {
        match svc.routing.owner(p) {
            Owner::Here { .. } => here.push(p),
            Owner::Peer(url) if !forwarded => remote.entry(url).or_default().push(p),
            Owner::Restoring | Owner::Peer(_) => missing.push(p),
            Owner::Unknown(_) => {
                svc.routing.refresh_soon();
                missing.push(p);
            }
        }
    }
    // Ask the other owners while this one reads its own.
    let health = health_name(q.health);
    let mut asks = tokio::task::JoinSet::new();
    for (url, parts) in remote {
        let svc = svc.clone();
        let auth = authorization.cloned();
        let ps: Vec<String> = parts.iter().map(i32::to_string).collect();
        let path = format!("/v1/customers?health={health}&limit={}&partitions={}", q.limit, ps.join(","));
        asks.spawn(async move {
            let answer = svc.peers.get(&url, &path, auth.as_ref()).await;
            (parts, answer)
        });
    }
    let (ranked, gone) = svc.local.list(&here, q.health, q.limit, now);
    missing.extend(gone);
    let mut entries: Vec<(Key, Box<RawValue>)> = Vec::with_capacity(ranked.len());
    for r in &ranked {
        let Ok(raw) = serde_json::value::to_raw_value(&svc.local.view_of(r, now)) else { continue };
        entries.push((Key { p_alive: r.p_alive, customer_id: r.customer_id.to_string() }, raw));
    }
    drop(ranked);
    while let Some(done) = asks.join_next().await {
        let Ok((parts, answer)) = done else { continue };
        let list = match answer {
            Ok(a) if a.status == StatusCode::OK => {
                metrics::counter!(API_FORWARDS, "outcome" => "answered").increment(1);
                serde_json::from_slice::<PeerList>(&a.body).ok()
            }
            Ok(a) => {
                let outcome = if a.status == StatusCode::UNAUTHORIZED { "token_refused" } else { "answered" };
                metrics::counter!(API_FORWARDS, "outcome" => outcome).increment(1);
                None
            }
            Err(e) => {
                metrics::counter!(API_FORWARDS, "outcome" => e.outcome()).increment(1);
                svc.routing.refresh_soon();
                None
            }
        };
        let Some(list) = list else {
            missing.extend(parts);
            continue;
        };
        missing.extend(list.missing_partitions);
        for raw in list.customers {
            if let Ok(key) = serde_json::from_str::<Key>(raw.get()) {
                entries.push((key, raw));
            }
        }
    }
    // Lowest P(alive) first: the customers most likely lost.
    entries.sort_by(|(a, _), (b, _)| a.p_alive.total_cmp(&b.p_alive).then_with(|| a.customer_id.cmp(&b.customer_id)));
    entries.truncate(q.limit);
    missing.sort_unstable();
    missing.dedup();
    let all_missing = !wanted.is_empty() && missing.len() == wanted.len();
    let body = ListAnswer { customers: entries.iter().map(|(_, raw)| &**raw).collect(), missing_partitions: missing };
    if all_missing && !forwarded {
        let mut a = json(StatusCode::SERVICE_UNAVAILABLE, &body);
        a.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        return a;
    }
    json(StatusCode::OK, &body)
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Active => "active",
        Health::AtRisk => "at_risk",
        Health::Dormant => "dormant",
    }
}

fn json_headers(a: &mut Answer) {
    let h = a.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Customer data: never kept by a cache on the way.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut a = Response::new(Full::new(Bytes::from(body)));
            *a.status_mut() = status;
            json_headers(&mut a);
            a
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the answer could not be encoded"),
    }
}

fn error(status: StatusCode, message: &str) -> Answer {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut a = Response::new(Full::new(Bytes::from(body)));
    *a.status_mut() = status;
    json_headers(&mut a);
    a
}

/// 503 with `Retry-After`; `not_owner` adds [`NOT_OWNER`] for a forwarder.
fn unavailable(message: &str, not_owner: bool) -> Answer {
    let mut a = error(StatusCode::SERVICE_UNAVAILABLE, message);
    a.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    if not_owner {
        a.headers_mut().insert(NOT_OWNER, HeaderValue::from_static("1"));
    }
    a
}

fn unauthorized(refusal: Refusal) -> Answer {
    let (message, challenge) = match refusal {
        Refusal::Missing => ("a bearer token is required: Authorization: Bearer <token>", r#"Bearer realm="engage""#),
        Refusal::Invalid => ("the bearer token is not valid", r#"Bearer realm="engage", error="invalid_token""#),
    };
    let mut a = error(StatusCode::UNAUTHORIZED, message);
    a.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_checked_and_named() {
        let q = ListQuery::parse("", false).unwrap();
        assert_eq!((q.health, q.limit, q.partitions), (Health::AtRisk, DEFAULT_LIMIT, None));
        let q = ListQuery::parse("health=dormant&limit=20000", false).unwrap();
        assert_eq!((q.health, q.limit), (Health::Dormant, MAX_LIMIT));
        assert_eq!(ListQuery::parse("limit=0&health=active", false).unwrap().limit, 0);
        for bad in ["limit=-1", "limit=2.5", "limit=abc", "limit=99999999999999999999999", "limit="] {
            assert!(ListQuery::parse(bad, false).unwrap_err().contains("limit="), "{bad}");
        }
        assert!(ListQuery::parse("health=sad", false).unwrap_err().contains("active, at_risk or dormant"));
        assert!(ListQuery::parse("limit=1&limit=2", false).unwrap_err().contains("twice"));
        assert!(ListQuery::parse("helth=active", false).unwrap_err().contains("unknown parameter \"helth\""));
        assert!(ListQuery::parse("health=%FF", false).unwrap_err().contains("UTF-8"));
        assert!(ListQuery::parse("partitions=1,2", false).is_err(), "only between instances");
        assert_eq!(ListQuery::parse("partitions=1,2", true).unwrap().partitions, Some(vec![1, 2]));
        assert!(ListQuery::parse("partitions=1,-2", true).is_err());
    }

    #[test]
    fn customer_ids_are_percent_decoded_and_bounded() {
        assert_eq!(customer_id("a%20b%2F%C3%BC%3F%23%25").unwrap(), "a b/ü?#%");
        assert!(customer_id("").unwrap_err().contains("empty"));
        assert!(customer_id("%FF").unwrap_err().contains("UTF-8"));
        assert!(customer_id(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(customer_id(&"x".repeat(MAX_ID_BYTES + 1)).unwrap_err().contains("at most 256"));
        assert!(customer_id(&"%41".repeat(MAX_ID_BYTES + 1)).is_err());
        // What is forwarded decodes to the same id.
        let odd = "a b/ü?#%+&=";
        let sent = utf8_percent_encode(odd, SEGMENT).to_string();
        assert!(!sent.contains('/'));
        assert_eq!(customer_id(&sent).unwrap(), odd);
    }

    #[test]
    fn routes() {
        assert!(matches!(Route::of("/v1/customers"), Route::List));
        assert!(matches!(Route::of("/v1/customers/u1"), Route::Customer("u1")));
        assert!(matches!(Route::of("/v1/customers/a/b"), Route::Other));
        assert!(matches!(Route::of("/metrics"), Route::Other));
    }
}
