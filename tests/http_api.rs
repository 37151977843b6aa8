//! The customer API of `engage run` (`[api]`), on real Apache Kafka with
//! real instances: any instance answers for any customer (three instances
//! in one group), a killed instance costs 503s and never a wrong 404,
//! lists are merged across owners, bearer tokens (and their rotation
//! without a restart), TLS between clients and instances and between
//! instances, bad input and load; and the ops port, which shows no
//! customer data.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics};
use engage::cmd::loadgen::synth::Record;
use engage::config::UpstreamPartitioner;
use engage::vocab::InputKind;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
const TOKEN: &str = "test-token-0123456789abcdef";
const ROTATED: &str = "rotated-token-fedcba9876543210";

fn record(topic: InputKind, value: Value) -> Record {
    let key = value["customer_id"].as_str().unwrap().as_bytes().to_vec();
    Record { topic, key, value: value.to_string().into_bytes(), ts_ms: 0 }
}

fn purchase(id: &str, customer: &str, ts: i64) -> Record {
    let v =
        json!({"event_id": id, "customer_id": customer, "type": "purchase", "ts": ts, "order_id": id, "amount": 20.0});
    record(InputKind::Purchases, v)
}

fn page_view(id: &str, customer: &str, ts: i64) -> Record {
    record(InputKind::Clickstream, json!({"event_id": id, "customer_id": customer, "type": "page_view", "ts": ts}))
}

/// Produces `records` keyed by customer id and placed by murmur2, the
/// Java client's partitioner and engage's default
/// `topics.upstream_partitioner`, as upstream producers would.
fn feed_murmur2(broker: &Broker, topics: &Topics, records: &[Record]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("linger.ms", "20").set("partitioner", "murmur2_random").create().unwrap();
    for r in records {
        let topic = if r.topic == InputKind::Purchases { &topics.purchases } else { &topics.clickstream };
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&r.value[..]);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// A config for `topics` with `api` as the `[api]` section's body. Both
/// listeners take a port the system picks ([`Engage::http_addr`] and
/// [`Engage::api_addr`] read them back).
fn config(broker: &Broker, topics: &Topics, api: &str) -> String {
    format!("{}\n[api]\n{api}", topics.config(broker, ""))
}

/// The API section of an instance serving without tokens.
const OPEN_API: &str = "listen = \"127.0.0.1:0\"\nallow_unauthenticated = true\n";

/// One HTTP/1.1 answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

fn parse(text: &str) -> Option<Reply> {
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some(Reply { status, head: head.to_string(), body: body.to_string() })
}

/// `GET path` with `token` as a bearer token (if any) and `extra` header
/// lines; `None` when there is no answer.
fn get(addr: &str, path: &str, token: Option<&str>, extra: &str) -> Option<Reply> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}Connection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    parse(&text)
}

/// One raw exchange: writes `request`, reads until the server closes.
fn exchange(addr: &str, request: &[u8]) -> Option<Reply> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.write_all(request).ok()?;
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    parse(&String::from_utf8_lossy(&bytes))
}

/// Polls until `check` holds or `timeout` passes; fails with `what`.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["customers"].as_array().unwrap().iter().map(|c| c["customer_id"].as_str().unwrap().to_string()).collect()
}

/// Any instance answers for any customer; the list merges every owner's;
/// tokens are required, passed on, and rotated without a restart; and a
/// killed instance costs 503s while its partitions move, never a 404 for
/// a customer that exists.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_answer_for_every_customer_and_a_killed_one_costs_503_never_a_wrong_404() {
    let started = Instant::now();
    let broker = Broker::start();
    let topics = Topics::create(&broker, 6).await;
    let now = engage::clock::wall_clock_ms();
    let customers: Vec<String> = (0..300).map(|i| format!("c{i:03}")).collect();
    let records: Vec<Record> =
        customers.iter().enumerate().map(|(i, c)| page_view(&format!("e{i}"), c, now - DAY - i as i64)).collect();
    feed_murmur2(&broker, &topics, &records);

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# the test's clients\n{TOKEN}\n")).unwrap();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let section = format!("listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", tokens.display());
        let engage = Engage::start(dir.path(), &config(&broker, &topics, &section));
        let (ops, api) = (engage.http_addr(), engage.api_addr());
        instances.push((engage, ops, api));
    }
    let apis: Vec<String> = instances.iter().map(|i| i.2.clone()).collect();
    let lookup = |api: &str, id: &str, token: &str| get(api, &format!("/v1/customers/{id}"), Some(token), "");

    // Every customer, through every instance: two thirds of them are
    // forwarded to their owner.
    eventually("every customer answered by every instance", Duration::from_secs(120), || {
        apis.iter().all(|api| customers.iter().all(|c| lookup(api, c, TOKEN).is_some_and(|r| r.status == 200)))
    });
    for api in &apis {
        for c in &customers {
            let r = lookup(api, c, TOKEN).unwrap();
            let v = r.json();
            assert_eq!(
                (r.status, v["customer_id"].as_str(), v["active_days"].as_i64()),
                (200, Some(c.as_str()), Some(1))
            );
            let p = UpstreamPartitioner::Murmur2.partition(c.as_bytes(), 6);
            assert_eq!(v["partition"], p, "{c} is in partition {p}: {v}");
        }
        // A customer nobody has: 404 from its owner, through any instance.
        eventually("404 for an unknown customer", Duration::from_secs(30), || {
            lookup(api, "nobody-at-all", TOKEN).is_some_and(|r| r.status == 404)
        });
    }

    // The list through any instance is the union of the owners' own lists
    // (each owner asked directly for its partitions), in the same order.
    let mut union = Vec::new();
    let mut owned = BTreeSet::new();
    for api in &apis {
        let own = get(
            api,
            "/v1/customers?health=active&limit=10000&partitions=0,1,2,3,4,5",
            Some(TOKEN),
            "engage-forwarded: 1\r\n",
        )
        .unwrap();
        assert_eq!(own.status, 200, "{own:?}");
        let own = own.json();
        let missing: BTreeSet<i64> =
            own["missing_partitions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
        let held: BTreeSet<i64> = (0..6).filter(|p| !missing.contains(p)).collect();
        assert!(!held.is_empty() && held.iter().all(|p| owned.insert(*p)), "each partition one owner: {held:?}");
        union.extend(ids(&own));
    }
    assert_eq!(owned.len(), 6, "every partition owned");
    union.sort();
    assert_eq!(union, customers, "the owners hold every customer once");
    for api in &apis {
        let merged = get(api, "/v1/customers?health=active&limit=10000", Some(TOKEN), "").unwrap();
        assert_eq!(merged.status, 200, "{merged:?}");
        let merged = merged.json();
        // All alike (P(alive) 1 without purchases): ordered by id.
        assert_eq!(ids(&merged), union, "{api}");
        assert_eq!(merged["missing_partitions"], json!([]));
        let first = get(api, "/v1/customers?health=active&limit=7", Some(TOKEN), "").unwrap().json();
        assert_eq!(ids(&first), union[..7]);
    }

    // No token or a wrong one: 401 with a challenge, on every instance,
    // for a forwarded request as well.
    for api in &apis {
        let none = get(api, "/v1/customers/c001", None, "").unwrap();
        assert_eq!((none.status, none.header("www-authenticate")), (401, Some(r#"Bearer realm="engage""#)), "{none:?}");
        let wrong = lookup(api, "c001", "not-the-token-at-all-000").unwrap();
        assert_eq!(wrong.status, 401);
        assert!(wrong.header("www-authenticate").unwrap().contains("invalid_token"), "{wrong:?}");
        assert!(!wrong.body.contains("c001") && !wrong.body.contains(TOKEN), "{wrong:?}");
        let sneaky = get(api, "/v1/customers/c001", None, "engage-forwarded: 1\r\n").unwrap();
        assert_eq!(sneaky.status, 401, "the owner checks the token too");
    }
    for (engage, _, _) in &instances {
        assert!(!engage.log().contains(TOKEN), "a token in the log");
    }

    // Rotation: a new file, no restart. The old token stops working and
    // the new one works everywhere, forwarded lookups included.
    std::fs::write(&tokens, format!("{ROTATED}\n")).unwrap();
    eventually("the rotated token taken by every instance", Duration::from_secs(15), || {
        apis.iter().all(|api| {
            customers[..12].iter().all(|c| lookup(api, c, ROTATED).is_some_and(|r| r.status == 200))
                && lookup(api, "c000", TOKEN).is_some_and(|r| r.status == 401)
        })
    });

    // kill -9 one instance. Until its partitions are restored elsewhere,
    // their customers get 503 with Retry-After; no customer is ever 404.
    let (mut killed, _, killed_api) = instances.pop().unwrap();
    killed.kill9();
    let survivors: Vec<&String> = apis.iter().filter(|a| **a != killed_api).collect();
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut partial_lists = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut all_ok = true;
        for api in &survivors {
            for c in &customers {
                let status = match lookup(api, c, ROTATED) {
                    Some(r) if r.status == 503 => {
                        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
                        503
                    }
                    Some(r) => r.status,
                    None => 0,
                };
                assert_ne!(status, 404, "{c} through {api}: a wrong 404");
                assert!(status == 200 || status == 503, "{c} through {api}: {status}");
                *seen.entry(status).or_default() += 1;
                all_ok &= status == 200;
            }
            let list = get(api, "/v1/customers?health=active&limit=10000", Some(ROTATED), "").unwrap();
            let body = list.json();
            let missing = body["missing_partitions"].as_array().unwrap().len();
            if missing > 0 {
                partial_lists += 1;
                assert!(ids(&body).len() < customers.len(), "{body}");
            } else {
                assert_eq!(ids(&body), union, "a complete list is the whole population");
            }
            all_ok &= missing == 0;
        }
        if all_ok {
            break;
        }
        assert!(Instant::now() < deadline, "every customer answered again within 120 s: {seen:?}");
    }
    assert!(seen.get(&503).is_some_and(|n| *n > 0), "the move was seen as 503s: {seen:?}");
    assert!(partial_lists > 0, "a list while partitions moved marked them missing");
    println!(
        "kill -9: {seen:?} answers while partitions moved; {partial_lists} partial lists; test took {:?}",
        started.elapsed()
    );
}

/// A pair of certificates for `127.0.0.1` signed by a CA, made by openssl.
struct Certs {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn make_certs(dir: &Path) -> Certs {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=engage test CA"],
        ]
        .concat(),
    );
    server_cert(dir, "1");
    Certs { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
}

/// A server certificate with serial `serial`, into server.pem/server.key.
fn server_cert(dir: &Path, serial: &str) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[&["req"][..], &ec, &["-keyout", "next.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "next.pem",
        ],
    );
    // Key first, then certificate: a reader never sees a certificate
    // without its key for long (engage keeps the old pair until both fit).
    std::fs::rename(dir.join("next.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("next.pem"), dir.join("server.pem")).unwrap();
}

/// `GET path` over TLS trusting `ca`; the answer and the serial number
/// (hex) of the certificate the server presented.
fn get_tls(addr: &str, ca: &Path, path: &str, token: &str) -> Result<(Reply, String), String> {
    get_tls_with(addr, ca, path, token, "")
}

/// [`get_tls`] with extra header lines.
fn get_tls_with(addr: &str, ca: &Path, path: &str, token: &str, extra: &str) -> Result<(Reply, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    match tls.read_to_end(&mut bytes) {
        Ok(_) => {}
        // The server closes without close_notify at times: what came is whole.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let der = tls.conn.peer_certificates().and_then(|c| c.first()).ok_or("no certificate")?.to_vec();
    let reply = parse(&String::from_utf8_lossy(&bytes)).ok_or("no HTTP answer")?;
    Ok((reply, serial_of(&der)))
}

/// The serial number of a DER certificate, hex (TBSCertificate: an
/// optional [0] version, then the serial INTEGER).
fn serial_of(der: &[u8]) -> String {
    // Skip the outer SEQUENCE and the TBSCertificate SEQUENCE headers.
    fn header(b: &[u8]) -> usize {
        if b[1] & 0x80 == 0 { 2 } else { 2 + (b[1] & 0x7f) as usize }
    }
    let tbs = &der[header(der)..];
    let mut rest = &tbs[header(tbs)..];
    if rest[0] == 0xa0 {
        rest = &rest[2 + rest[1] as usize..];
    }
    let len = rest[1] as usize;
    rest[2..2 + len].iter().map(|b| format!("{b:02x}")).collect()
}

/// TLS on the API: reachable with the CA, forwarding between instances
/// over TLS (each checks the other's certificate against api.tls_ca), a
/// plain-HTTP request or an untrusting client gets nowhere, and a renewed
/// certificate is served without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_tls_api_is_reachable_with_the_ca_forwards_over_tls_and_takes_a_renewed_certificate() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let now = engage::clock::wall_clock_ms();
    let customers: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    let records: Vec<Record> =
        customers.iter().enumerate().map(|(i, c)| page_view(&format!("e{i}"), c, now - DAY)).collect();
    feed_murmur2(&broker, &topics, &records);
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    std::fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let section = format!(
            "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
            dir.path().join("tokens").display(),
            certs.cert.display(),
            certs.key.display(),
            certs.ca.display()
        );
        let engage = Engage::start(dir.path(), &config(&broker, &topics, &section));
        let api = engage.api_addr();
        instances.push((engage, api));
    }
    let api = instances[0].1.clone();
    // Both instances hold a partition (each answers for its own, asked
    // directly with the forwarded mark) and every list is whole.
    eventually("both instances serving, lists whole", Duration::from_secs(120), || {
        instances.iter().all(|(_, api)| {
            let own = get_tls_with(
                api,
                &certs.ca,
                "/v1/customers?health=active&limit=100&partitions=0,1",
                TOKEN,
                "engage-forwarded: 1\r\n",
            );
            let all = get_tls(api, &certs.ca, "/v1/customers?health=active&limit=100", TOKEN);
            own.is_ok_and(|(r, _)| r.status == 200 && !ids(&r.json()).is_empty())
                && all.is_ok_and(|(r, _)| r.status == 200 && ids(&r.json()).len() == customers.len())
        })
    });
    // Every customer through the first instance: those of the second's
    // partition forwarded over TLS.
    eventually("every customer over TLS", Duration::from_secs(60), || {
        customers
            .iter()
            .all(|c| get_tls(&api, &certs.ca, &format!("/v1/customers/{c}"), TOKEN).is_ok_and(|(r, _)| r.status == 200))
    });
    for api in instances.iter().map(|i| &i.1) {
        let (r, serial) = get_tls(api, &certs.ca, "/v1/customers?health=active&limit=100", TOKEN).unwrap();
        assert_eq!((r.status, ids(&r.json()).len(), serial.as_str()), (200, customers.len(), "01"), "{r:?}");
    }
    // Plain HTTP to the TLS port: no answer. A client without the CA: no
    // connection.
    assert!(get(&api, "/v1/customers/t01", Some(TOKEN), "").is_none_or(|r| r.status != 200));
    let stranger = dir.path().join("other-ca");
    std::fs::create_dir(&stranger).unwrap();
    let other = make_certs(&stranger);
    assert!(get_tls(&api, &other.ca, "/v1/customers/t01", TOKEN).is_err(), "trusted without the CA");

    // A renewed certificate (same CA, serial 2): served to new connections
    // without a restart.
    server_cert(dir.path(), "2");
    eventually("the renewed certificate served", Duration::from_secs(15), || {
        get_tls(&api, &certs.ca, "/v1/customers/t01", TOKEN).is_ok_and(|(r, serial)| r.status == 200 && serial == "02")
    });
    assert!(customers.iter().all(|c| {
        get_tls(&api, &certs.ca, &format!("/v1/customers/{c}"), TOKEN).is_ok_and(|(r, _)| r.status == 200)
    }));
}

/// Bad requests get a clear 4xx; a slow client is dropped; thousands of
/// connections at once each get an answer (200, or 503 over
/// api.max_connections) and the instance serves on afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_and_load_get_clear_answers() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let now = engage::clock::wall_clock_ms();
    common::feed(&broker, &topics, &[page_view("k1", "kim", now - DAY)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let section = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nmax_connections = 64\n",
        dir.path().join("tokens").display()
    );
    let engage = Engage::start(dir.path(), &config(&broker, &topics, &section));
    let (ops, api) = (engage.http_addr(), engage.api_addr());
    eventually("kim", Duration::from_secs(60), || {
        get(&api, "/v1/customers/kim", Some(TOKEN), "").is_some_and(|r| r.status == 200)
    });

    let long_id = "x".repeat(257);
    let long_target = format!("/v1/customers/{}", "y".repeat(3000));
    for (path, status, says) in [
        (long_id.as_str(), 400, "at most 256"),
        ("%FF%FE", 400, "UTF-8"),
        ("", 400, "empty"),
        ("kim?x=1", 400, "no query"),
    ] {
        let r = get(&api, &format!("/v1/customers/{path}"), Some(TOKEN), "").unwrap();
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert!(r.json()["error"].as_str().unwrap().contains(says), "{path}: {r:?}");
    }
    assert_eq!(get(&api, &long_target, Some(TOKEN), "").unwrap().status, 414);
    for (query, says) in [
        ("limit=-1", "limit="),
        ("limit=1e30", "limit="),
        ("limit=99999999999999999999999", "limit="),
        ("health=happy", "use active"),
        ("health=active&health=dormant", "twice"),
        ("healthy=active", "unknown parameter"),
        ("partitions=0", "unknown parameter"),
        ("health=%zz", "use active"),
        ("limit=%FF", "UTF-8"),
    ] {
        let r = get(&api, &format!("/v1/customers?{query}"), Some(TOKEN), "").unwrap();
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert!(r.json()["error"].as_str().unwrap().contains(says), "{query}: {r:?}");
    }
    // Above the cap is the cap, as before.
    assert_eq!(get(&api, "/v1/customers?health=active&limit=20000", Some(TOKEN), "").unwrap().status, 200);
    // Oversized headers: 431, whether one huge or very many.
    let huge = format!("X-Filler: {}\r\n", "z".repeat(20_000));
    assert_eq!(get(&api, "/v1/customers/kim", Some(TOKEN), &huge).map(|r| r.status), Some(431));
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(get(&api, "/v1/customers/kim", Some(TOKEN), &many).map(|r| r.status), Some(431));
    // Methods other than GET, and not a request at all.
    let post = format!(
        "POST /v1/customers/kim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let r = exchange(&api, post.as_bytes()).unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(exchange(&api, b"\x16\x03\x01garbage\r\n\r\n").map(|r| r.status), Some(400));

    // A client that sends half its headers and stops is dropped.
    let mut slow = std::net::TcpStream::connect(&api).unwrap();
    slow.write_all(b"GET /v1/customers/kim HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(20), "dropped after {waited:?}");

    // 2 000 connections at once, each with a request: each is answered,
    // 200 or (over api.max_connections) 503.
    let request = format!(
        "GET /v1/customers/kim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let mut streams = Vec::new();
    for _ in 0..2000 {
        let mut s = std::net::TcpStream::connect(&api).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        streams.push(s);
    }
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    for mut s in streams {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut bytes = Vec::new();
        let _ = s.read_to_end(&mut bytes);
        let status = parse(&String::from_utf8_lossy(&bytes)).map_or(0, |r| r.status);
        *answers.entry(status).or_default() += 1;
    }
    assert!(answers.keys().all(|s| *s == 200 || *s == 503), "{answers:?}");
    assert!(answers.get(&200).is_some_and(|n| *n >= 64), "{answers:?}");
    let metrics = common::http_get(&ops, "/metrics").unwrap().1;
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("engage_api_refused_connections_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(refused as usize, answers.get(&503).copied().unwrap_or(0), "{answers:?}");
    assert!(metrics.contains("engage_api_requests_total{route=\"customer\",code=\"200\"}"), "{metrics}");
    // And it serves on.
    assert_eq!(get(&api, "/v1/customers/kim", Some(TOKEN), "").unwrap().status, 200);
    println!("2000 connections at once: {answers:?}");
    drop(engage);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_list_puts_lowest_p_alive_first_and_honours_limit_up_to_its_cap() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let now = engage::clock::wall_clock_ms();
    let mut records = Vec::new();
    // r0..r4: two purchase days a day apart (cadence 1 day), then silent
    // for 7, 10, 13, 16 and 19 days: at risk (idle ≥ 3× cadence, under
    // churn.dormant_min_idle), the longer silent the lower P(alive).
    for k in 0..5 {
        let c = format!("r{k}");
        let idle = (7 + 3 * k) * DAY;
        records.push(purchase(&format!("{c}-1"), &c, now - idle - DAY));
        records.push(purchase(&format!("{c}-2"), &c, now - idle));
    }
    // d0: the same, 99 days ago: dormant.
    records.push(purchase("d0-1", "d0", now - 100 * DAY));
    records.push(purchase("d0-2", "d0", now - 99 * DAY));
    // More active customers than the list's cap of 10 000.
    let active = 10_050;
    for i in 0..active {
        records.push(page_view(&format!("a{i}"), &format!("a{i:05}"), now - 3_600_000));
    }
    feed_murmur2(&broker, &topics, &records);
    let dir = tempfile::tempdir().unwrap();
    let c =
        config(&broker, &topics, OPEN_API).replace("[run]\n", "[run]\nsweep_interval = \"1s\"\nidle_grace = \"2s\"\n");
    let engage = Engage::start(dir.path(), &c);
    let api = engage.api_addr();
    let list = |query: &str| {
        let r = get(&api, &format!("/v1/customers{query}"), None, "").unwrap_or_else(|| panic!("{query}: no answer"));
        assert_eq!(r.status, 200, "{query}: {r:?}");
        r.json()
    };
    // Health changes on the sweeps once everything is applied.
    eventually("5 at risk and 1 dormant", Duration::from_secs(90), || {
        get(&api, "/v1/customers?health=at_risk", None, "")
            .is_some_and(|r| r.status == 200 && ids(&r.json()).len() == 5)
            && get(&api, "/v1/customers?health=dormant", None, "")
                .is_some_and(|r| r.status == 200 && r.body.contains("\"d0\""))
    });

    // health=at_risk is the default; lowest P(alive) first, across both
    // partitions.
    let at_risk = list("");
    assert_eq!(ids(&at_risk), ids(&list("?health=at_risk")));
    let p_alive: Vec<f64> =
        at_risk["customers"].as_array().unwrap().iter().map(|c| c["p_alive"].as_f64().unwrap()).collect();
    assert!(p_alive.windows(2).all(|w| w[0] < w[1]), "strictly increasing P(alive): {p_alive:?}\n{at_risk:#}");
    assert_eq!(ids(&at_risk), ["r4", "r3", "r2", "r1", "r0"], "the longest silent first: {p_alive:?}");
    let partitions: BTreeSet<i64> =
        at_risk["customers"].as_array().unwrap().iter().map(|c| c["partition"].as_i64().unwrap()).collect();
    assert_eq!(partitions.len(), 2, "customers of both partitions in one list: {at_risk:#}");
    assert!(at_risk["customers"].as_array().unwrap().iter().all(|c| c["health"] == "at_risk"));
    assert_eq!(at_risk["missing_partitions"], json!([]));

    // limit takes the first N of that order.
    assert_eq!(ids(&list("?limit=2")), ["r4", "r3"]);
    assert_eq!(ids(&list("?health=at_risk&limit=1")), ["r4"]);
    assert_eq!(list("?limit=0"), json!({"customers": [], "missing_partitions": []}));
    assert_eq!(ids(&list("?health=dormant")), ["d0"]);

    // Without a limit: 100. Asked for more than 10 000: 10 000.
    assert_eq!(ids(&list("?health=active")).len(), 100);
    assert_eq!(ids(&list("?health=active&limit=20000")).len(), 10_000, "the cap on limit");
    let exact = list(&format!("?health=active&limit={active}"));
    assert_eq!(ids(&exact).len(), 10_000, "the cap, with {active} active customers held");
    drop(engage);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ops_port_serves_no_customer_data_and_with_the_api_off_nothing_does() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let now = engage::clock::wall_clock_ms();
    common::feed(&broker, &topics, &[page_view("k1", "kim", now - DAY)]);
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, ""));
    let ops = engage.http_addr();
    // kim is held (her score change is out) but not readable over HTTP.
    assert_eq!(common::read_topic(&broker, &topics.scores, 1, Duration::from_secs(60)).len(), 1);
    for path in ["/v1/customers/kim", "/v1/customers", "/v1/customers?health=active"] {
        let (status, body) = common::http_get(&ops, path).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("api.listen") && !body.contains("kim"), "{path}: {body}");
    }
    assert_eq!(common::http_get(&ops, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(common::http_get(&ops, "/readyz").map(|r| r.0), Some(200));
    let (status, metrics) = common::http_get(&ops, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("engage_records_in_total"), "{metrics}");
    drop(engage);

    // An API without a token file refuses to start, naming the key.
    let c = config(&broker, &topics, "listen = \"127.0.0.1:0\"\n");
    let mut refused = Engage::start(dir.path(), &c);
    assert!(!refused.wait_exit(Duration::from_secs(30)).success());
    assert!(refused.log().contains("api.token_file"), "{}", refused.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_that_need_url_encoding_are_found_and_only_get_is_served() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let now = engage::clock::wall_clock_ms();
    let odd = "a b/ü?#%";
    common::feed(&broker, &topics, &[page_view("o1", odd, now - DAY), page_view("p1", "plain", now - DAY)]);
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &config(&broker, &topics, OPEN_API));
    let api = engage.api_addr();
    assert_eq!(common::read_topic(&broker, &topics.scores, 2, Duration::from_secs(60)).len(), 2);
    let found = |path: &str| {
        let mut answer = None;
        eventually(path, Duration::from_secs(30), || {
            answer = get(&api, path, None, "").filter(|r| r.status != 503);
            answer.is_some()
        });
        answer.unwrap()
    };

    let r = found("/v1/customers/a%20b%2F%C3%BC%3F%23%25");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.json()["customer_id"].as_str(), r.json()["active_days"].as_i64()), (Some(odd), Some(1)));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // The list carries the id as it is, in JSON.
    assert!(ids(&found("/v1/customers?health=active").json()).contains(&odd.to_string()));
    // The same id half-encoded is another path (the '/' splits it): not found.
    assert_eq!(found("/v1/customers/a%20b/%C3%BC%3F%23%25").status, 404);

    // Only GET is served: any other method is 405, body or not.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let request = format!(
            "{method} /v1/customers/plain HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let r = exchange(&api, request.as_bytes()).unwrap();
        assert_eq!(r.status, 405, "{method}: {r:?}");
    }
    let request =
        format!("POST /v1/customers HTTP/1.1\r\nHost: {api}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    assert_eq!(exchange(&api, request.as_bytes()).unwrap().status, 405);
    let request = format!(
        "GET /v1/customers/plain HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Content-Length: 16\r\nConnection: close\r\n\r\n{{\"seq\": 999999}}"
    );
    let r = exchange(&api, request.as_bytes()).unwrap();
    // A body on a GET is not read: the answer is the customer as held.
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["seq"], 1, "{r:?}");
    drop(engage);
}

/// A partition's customers are restored from the changelog before its
/// first record is processed; meanwhile `/readyz` is 503 and the API
/// answers 503 with `Retry-After` (never 404: the customer may be on its
/// way); once the restore is done `/readyz` is 200 and every restored
/// customer is served. The changelog is large enough (300 000 customers)
/// that the restore takes a moment to watch.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_and_the_api_are_503_while_a_partition_restores_and_the_restored_state_is_served_after() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let changelog = format!("{}.engage-state", topics.group);
    broker.create_topic(&changelog, 1).await;
    let now = engage::clock::wall_clock_ms();
    let customers = 300_000;
    {
        let producer: ThreadedProducer<DefaultProducerContext> = broker
            .client_config()
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        let mut state = engage::engine::state::CustomerState::default();
        state.first_seen = now - 10 * DAY;
        state.last_seen = now - DAY;
        state.active_days = 3;
        for i in 0..customers {
            let id = format!("c{i:06}");
            let value = prost::Message::encode_to_vec(&engage::codec::state::state_to_proto(&state, &id));
            let mut r = BaseRecord::<str, [u8]>::to(&changelog).key(&id).payload(&value);
            while let Err((_, back)) = producer.send(r) {
                r = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &config(&broker, &topics, OPEN_API));
    let (ops, api) = (engage.http_addr(), engage.api_addr());
    let last = format!("/v1/customers/c{:06}", customers - 1);
    // /readyz until it is 200: never before the restore is logged done.
    let restored = |log: &str| log.contains("state restored");
    let (mut not_ready, mut api_while_restoring) = (Vec::new(), BTreeMap::<u16, usize>::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "not ready within 120 s: {not_ready:?}\n{}", engage.log());
        let before = restored(&engage.log());
        match common::http_get(&ops, "/readyz") {
            Some((200, body)) => {
                assert!(restored(&engage.log()), "200 ({body}) before the restore finished:\n{}", engage.log());
                break;
            }
            // (Just after the log line the joined flag may not be set yet.)
            Some((status, body)) if !before => not_ready.push((status, body)),
            _ => {}
        }
        if !before && let Some(r) = get(&api, &last, None, "") {
            assert_ne!(r.status, 404, "404 while restoring: {r:?}");
            if r.status == 503 {
                assert_eq!(r.header("retry-after"), Some("1"));
            }
            *api_while_restoring.entry(r.status).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!not_ready.is_empty() && not_ready.iter().all(|a| a.0 == 503), "{not_ready:?}");
    assert!(not_ready.iter().any(|a| a.1.contains("restoring 1 partition")), "{not_ready:?}");
    assert!(api_while_restoring.get(&503).is_some_and(|n| *n > 0), "{api_while_restoring:?}");
    // Ready means restored: every customer is there.
    let log = strip_ansi(&engage.log());
    assert!(log.contains(&format!("records={customers} customers={customers} unreadable=0")), "{log}");
    let r = get(&api, &last, None, "").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.json()["active_days"].as_i64(), r.json()["last_seen"].as_i64()), (Some(3), Some(now - DAY)));
    drop(engage);
}

/// The log without its colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
