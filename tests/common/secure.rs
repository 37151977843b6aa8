//! A secured Apache Kafka for tests, set up the way platform teams run it:
//! SASL_SSL with SCRAM-SHA-512, an SSL listener that requires a client
//! certificate (mTLS, the certificate's CN is the principal), the
//! StandardAuthorizer with no ACL meaning no access, and OAUTHBEARER
//! validated against the JWKS endpoint of a minimal OIDC provider this
//! harness serves (client credentials grant). A PLAINTEXT listener whose principal
//! (`User:ANONYMOUS`) is a super user is the harness's own admin path.
//!
//! Certificates are made at start into the broker's temporary directory with
//! the `openssl` CLI (EC P-256 keys: fast to generate); the broker reads PEM
//! key and trust stores, so no `keytool` (a JVM start) is needed.
//!
//! SCRAM users and ACLs are created through librdkafka's admin API on the
//! PLAINTEXT listener (`rdkafka::bindings`: rust-rdkafka wraps neither), a
//! round trip of milliseconds instead of a JVM per call for Kafka's tools
//! (whose `AclCommand` is not even on the pinned broker classpath: it lives
//! in `kafka-tools`). Every change waits until the broker's own authorizer
//! (or credential cache) shows it, so a test never races the metadata log.
//! `tests/kafka/SECURITY-FACTS.md` has what was measured and what librdkafka
//! reports for each failure.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use super::{Broker, free_port, node_properties, rand_u64, repo_root};

/// How long a grant, revoke or new user may take to show on the broker
/// before the harness gives up (measured: tens of milliseconds).
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(15);

/// One private Apache Kafka node with secured listeners. The broker process
/// ends when this is dropped, or, for [`SecureBroker::shared`], when the
/// test process exits (a watchdog shell holds the other end of a pipe).
pub struct SecureBroker {
    /// The admin path (PLAINTEXT, `User:ANONYMOUS`, a super user): topics,
    /// reading outputs back, checking offsets, without any ACL.
    pub broker: Broker,
    /// `host:port` of the PLAINTEXT listener (the same as `broker.bootstrap`).
    pub plaintext: String,
    /// `host:port` of the SASL_SSL listener: SCRAM-SHA-512 and OAUTHBEARER.
    pub sasl_ssl: String,
    /// `host:port` of the SSL listener that requires a client certificate.
    pub ssl: String,
    /// The token and JWKS endpoints whose tokens the broker accepts.
    pub oidc: Oidc,
    /// How long the start took: keys and certificates, the JVM, until the
    /// broker answers.
    pub started_in: Duration,
    dir: PathBuf,
    watchdog: Mutex<Option<Child>>,
    admin: AdminClient<DefaultClientContext>,
}

static SHARED: OnceLock<SecureBroker> = OnceLock::new();

impl SecureBroker {
    /// A secured broker of the test's own (2 to 2.5 s to start on the
    /// 2-core test machine with the AppCDS archive, see `started_in`);
    /// prefer [`SecureBroker::shared`] unless the test harms the broker.
    pub fn start() -> SecureBroker {
        let start = Instant::now();
        let mut broker = SecureBroker::launch();
        broker.started_in = start.elapsed();
        broker
    }

    /// One secured broker for every test of this test binary (they keep
    /// apart by their own users, topics and groups): one JVM start instead
    /// of one per test. It lives until the test process exits.
    pub fn shared() -> &'static SecureBroker {
        SHARED.get_or_init(SecureBroker::start)
    }

    fn launch() -> SecureBroker {
        let out = Command::new(repo_root().join("scripts/install-kafka")).output().expect("run scripts/install-kafka");
        assert!(out.status.success(), "install-kafka: {}", String::from_utf8_lossy(&out.stderr));
        // Kept (not removed on drop): the watchdog removes it once the
        // broker is dead, which for the shared broker is after this process.
        let dir = tempfile::Builder::new().prefix("engage-kafka-secure-").tempdir().unwrap().keep();
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        make_ca_and_broker_certs(&certs);
        let oidc = Oidc::start(&dir.join("oidc"));

        let (port, controller_port, sasl_port, ssl_port) = (free_port(), free_port(), free_port(), free_port());
        let quorum = format!("controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}");
        let data = dir.join("data");
        let mut props = node_properties(1, port, controller_port, &quorum, &data, 1);
        let overlay = std::fs::read_to_string(repo_root().join("tests/kafka/secure.properties.in")).unwrap();
        props += "\n";
        props += &overlay
            .replace("@PORT@", &port.to_string())
            .replace("@CONTROLLER_PORT@", &controller_port.to_string())
            .replace("@SASL_SSL_PORT@", &sasl_port.to_string())
            .replace("@SSL_PORT@", &ssl_port.to_string())
            .replace("@CERTS@", &certs.display().to_string())
            .replace("@OAUTH@", &oidc.broker_properties());
        let props_path = dir.join("server.properties");
        std::fs::write(&props_path, props).unwrap();

        // The JVM flags are scripts/kafka-broker's defaults, plus the system
        // property Kafka 4 needs before it fetches a JWKS from any URL.
        let jvm = format!(
            "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Djava.awt.headless=true \
             -Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={}",
            oidc.jwks_url()
        );
        // The watchdog: runs the broker in the background and kills it (and
        // removes the directory) once its stdin closes, which happens when
        // this handle is dropped or this process exits, however it exits.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$1" > "$2/broker.log" 2>&1 & pid=$!; echo $pid > "$2/broker.pid"; read -r _; kill -9 $pid; wait $pid; rm -rf "$2""#)
            .arg(repo_root().join("scripts/kafka-broker"))
            .arg(&props_path)
            .arg(&dir)
            .env("KAFKA_CLUSTER_ID", super::base64url_16(u128::from(rand_u64()) << 64 | u128::from(rand_u64())))
            .env("KAFKA_JVM_OPTS", jvm)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/kafka-broker");
        let plaintext = format!("127.0.0.1:{port}");
        let broker = Broker {
            bootstrap: plaintext.clone(),
            nodes: Vec::new(),
            cluster_id: String::new(),
            replication: 1,
            _dir: None,
        };
        let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
        let secure = SecureBroker {
            broker,
            plaintext,
            sasl_ssl: format!("127.0.0.1:{sasl_port}"),
            ssl: format!("127.0.0.1:{ssl_port}"),
            oidc,
            started_in: Duration::ZERO,
            dir,
            watchdog: Mutex::new(Some(watchdog)),
            admin,
        };
        secure.wait_ready(Duration::from_secs(120));
        secure
    }

    /// Waits until the PLAINTEXT listener answers a metadata request (the
    /// broker opens every listener together); fails at once if the broker
    /// process died.
    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let probe: rdkafka::consumer::BaseConsumer = self.broker.client_config().create().unwrap();
            if rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(2)).is_ok() {
                return;
            }
            let pid = std::fs::read_to_string(self.dir.join("broker.pid")).unwrap_or_default();
            if !pid.trim().is_empty() && !alive(pid.trim()) {
                panic!("secured Kafka exited:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("secured Kafka not ready within {timeout:?}:\n{}", self.logs());
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("broker.pid")).ok()?.trim().parse().ok()
    }

    /// The test CA's certificate (PEM): librdkafka's `ssl.ca.location`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("certs/ca.pem")
    }

    /// The broker's log directory: `<topic>-<partition>/` segments, to
    /// check how records are stored (their compression, say).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The last lines of the broker's log, for a failure message.
    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().map(|l| format!("{l}\n")).collect()
    }

    /// The broker's whole log so far (e.g. to look for an authentication
    /// failure the broker logged).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// Creates (or changes the password of) SCRAM-SHA-512 user `name`, and
    /// waits until the broker lists the credential.
    pub fn create_scram_user(&self, name: &str, password: &str) {
        let user = CString::new(name).unwrap();
        let rk = self.rk();
        let ev = call(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
            "AlterUserScramCredentials",
            |o, q| unsafe {
                // 4096: Kafka's minimum for SCRAM-SHA-512. A NULL salt makes
                // librdkafka draw a random one.
                let mut alteration = [rd::rd_kafka_UserScramCredentialUpsertion_new(
                    user.as_ptr(),
                    rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
                    4096,
                    password.as_ptr(),
                    password.len(),
                    std::ptr::null(),
                    0,
                )];
                rd::rd_kafka_AlterUserScramCredentials(rk, alteration.as_mut_ptr(), 1, o, q);
                rd::rd_kafka_UserScramCredentialAlteration_destroy_array(alteration.as_mut_ptr(), 1);
            },
        );
        unsafe {
            let res = rd::rd_kafka_event_AlterUserScramCredentials_result(ev.ptr);
            let mut n = 0;
            let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(res, &mut n);
            for i in 0..n {
                let e = rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses.add(i));
                assert!(e.is_null() || error_code(e) == 0, "creating SCRAM user {name}: {}", error_text(e));
            }
        }
        let deadline = Instant::now() + PROPAGATION_TIMEOUT;
        while !self.scram_user_listed(name) {
            assert!(Instant::now() < deadline, "SCRAM user {name} not listed after {PROPAGATION_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn scram_user_listed(&self, name: &str) -> bool {
        let user = CString::new(name).unwrap();
        let rk = self.rk();
        let ev = call(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
            "DescribeUserScramCredentials",
            |o, q| unsafe {
                let mut users = [user.as_ptr()];
                rd::rd_kafka_DescribeUserScramCredentials(rk, users.as_mut_ptr(), 1, o, q);
            },
        );
        unsafe {
            let res = rd::rd_kafka_event_DescribeUserScramCredentials_result(ev.ptr);
            let mut n = 0;
            let descriptions = rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(res, &mut n);
            (0..n).any(|i| {
                let d = *descriptions.add(i);
                let e = rd::rd_kafka_UserScramCredentialsDescription_error(d);
                (e.is_null() || error_code(e) == 0)
                    && rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(d) > 0
            })
        }
    }

    /// A client certificate for `cn` (principal `User:<cn>` on the SSL
    /// listener), signed by the test CA: a PEM certificate with a
    /// password-encrypted PEM key, and the same as a PKCS12 key store.
    pub fn client_cert(&self, cn: &str) -> ClientCert {
        make_client_cert(&self.dir.join("certs"), "ca", cn)
    }

    /// A client certificate for `cn` signed by a CA of its own, which the
    /// broker does not trust.
    pub fn untrusted_client_cert(&self, cn: &str) -> ClientCert {
        let dir = self.dir.join("certs");
        let ca = format!("untrusted-ca-{cn}");
        #[rustfmt::skip]
        openssl(&dir, &[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem"), "-days", "2", "-subj", "/CN=untrusted-ca",
        ]);
        make_client_cert(&dir, &ca, cn)
    }

    /// A client of the SASL_SSL listener as SCRAM-SHA-512 user `user`.
    pub fn scram_config(&self, user: &str, password: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.sasl_ssl)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", password)
            .set("ssl.ca.location", self.ca_pem().display().to_string());
        c
    }

    /// A client of the SSL listener with `cert`'s PEM files (the key
    /// encrypted, its password in `ssl.key.password`).
    pub fn mtls_pem_config(&self, cert: &ClientCert) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.ssl)
            .set("security.protocol", "SSL")
            .set("ssl.ca.location", self.ca_pem().display().to_string())
            .set("ssl.certificate.location", cert.cert_pem.display().to_string())
            .set("ssl.key.location", cert.key_pem.display().to_string())
            .set("ssl.key.password", &cert.key_password);
        c
    }

    /// A client of the SSL listener with `cert`'s PKCS12 key store.
    pub fn mtls_p12_config(&self, cert: &ClientCert) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.ssl)
            .set("security.protocol", "SSL")
            .set("ssl.ca.location", self.ca_pem().display().to_string())
            .set("ssl.keystore.location", cert.p12.display().to_string())
            .set("ssl.keystore.password", &cert.p12_password);
        c
    }

    /// Creates `acls` (ALLOW, any host) in one request and waits until the
    /// broker's authorizer lists every one of them.
    pub fn grant(&self, acls: &[Acl]) {
        if acls.is_empty() {
            return;
        }
        let rk = self.rk();
        let ev = call(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS, "CreateAcls", |o, q| unsafe {
            let mut bindings: Vec<*mut rd::rd_kafka_AclBinding_t> = acls.iter().map(|a| a.binding(false)).collect();
            rd::rd_kafka_CreateAcls(rk, bindings.as_mut_ptr(), bindings.len(), o, q);
            rd::rd_kafka_AclBinding_destroy_array(bindings.as_mut_ptr(), bindings.len());
        });
        unsafe {
            let res = rd::rd_kafka_event_CreateAcls_result(ev.ptr);
            let mut n = 0;
            let results = rd::rd_kafka_CreateAcls_result_acls(res, &mut n);
            for (i, acl) in acls.iter().enumerate().take(n) {
                let e = rd::rd_kafka_acl_result_error(*results.add(i));
                assert!(e.is_null() || error_code(e) == 0, "granting {acl}: {}", error_text(e));
            }
        }
        self.wait_for_acls(acls, true);
    }

    /// Deletes `acls` in one request and waits until the broker's
    /// authorizer no longer lists any of them.
    pub fn revoke(&self, acls: &[Acl]) {
        if acls.is_empty() {
            return;
        }
        let rk = self.rk();
        let ev = call(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS, "DeleteAcls", |o, q| unsafe {
            let mut filters: Vec<*mut rd::rd_kafka_AclBindingFilter_t> = acls.iter().map(|a| a.binding(true)).collect();
            rd::rd_kafka_DeleteAcls(rk, filters.as_mut_ptr(), filters.len(), o, q);
            rd::rd_kafka_AclBinding_destroy_array(filters.as_mut_ptr(), filters.len());
        });
        unsafe {
            let res = rd::rd_kafka_event_DeleteAcls_result(ev.ptr);
            let mut n = 0;
            let responses = rd::rd_kafka_DeleteAcls_result_responses(res, &mut n);
            for (i, acl) in acls.iter().enumerate().take(n) {
                let e = rd::rd_kafka_DeleteAcls_result_response_error(*responses.add(i));
                assert!(e.is_null() || error_code(e) == 0, "revoking {acl}: {}", error_text(e));
            }
        }
        self.wait_for_acls(acls, false);
    }

    fn wait_for_acls(&self, acls: &[Acl], present: bool) {
        let deadline = Instant::now() + PROPAGATION_TIMEOUT;
        let mut principals: Vec<&str> = acls.iter().map(|a| a.principal.as_str()).collect();
        principals.sort_unstable();
        principals.dedup();
        loop {
            let listed: Vec<Acl> = principals.iter().flat_map(|p| self.acls(p)).collect();
            if acls.iter().all(|a| listed.contains(a) == present) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ACLs still {} after {PROPAGATION_TIMEOUT:?}: {acls:?}; listed: {listed:?}",
                if present { "missing" } else { "present" }
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The ALLOW ACLs of `principal` (e.g. `User:alice`) the broker's
    /// authorizer holds, sorted.
    pub fn acls(&self, principal: &str) -> Vec<Acl> {
        let p = CString::new(principal).unwrap();
        let rk = self.rk();
        let ev = call(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS, "DescribeAcls", |o, q| unsafe {
            let mut errstr = [0 as c_char; 512];
            let filter = rd::rd_kafka_AclBindingFilter_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
                std::ptr::null(),
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
                p.as_ptr(),
                std::ptr::null(),
                rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            assert!(!filter.is_null(), "ACL filter: {}", CStr::from_ptr(errstr.as_ptr()).to_string_lossy());
            rd::rd_kafka_DescribeAcls(rk, filter, o, q);
            rd::rd_kafka_AclBinding_destroy(filter);
        });
        let mut out = Vec::new();
        unsafe {
            let res = rd::rd_kafka_event_DescribeAcls_result(ev.ptr);
            let mut n = 0;
            let bindings = rd::rd_kafka_DescribeAcls_result_acls(res, &mut n);
            for i in 0..n {
                if let Some(acl) = Acl::from_binding(*bindings.add(i)) {
                    out.push(acl);
                }
            }
        }
        out.sort();
        out
    }

    fn rk(&self) -> *mut rd::rd_kafka_t {
        self.admin.inner().native_ptr()
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.lock().unwrap().take() {
            drop(w.stdin.take());
            let _ = w.wait();
        }
    }
}

/// `config`'s properties as lines of engage's `[kafka]` table (sorted
/// `"key" = "value"` TOML lines), so an engage test on the secured broker
/// runs with exactly the client settings `tests/secure_broker.rs` proves.
pub fn kafka_toml(config: &ClientConfig) -> String {
    let mut lines: Vec<String> = config
        .config_map()
        .iter()
        .map(|(k, v)| format!("{} = {}\n", serde_json::Value::from(k.as_str()), serde_json::Value::from(v.as_str())))
        .collect();
    lines.sort();
    lines.concat()
}

/// A client certificate for the SSL listener, in the two forms librdkafka
/// reads: PEM files (`ssl.certificate.location`, `ssl.key.location` with
/// `ssl.key.password`) and a PKCS12 key store (`ssl.keystore.location`,
/// `ssl.keystore.password`).
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// The certificate, PEM.
    pub cert_pem: PathBuf,
    /// The private key, PEM, encrypted (PKCS#8, AES-256-CBC) with `key_password`.
    pub key_pem: PathBuf,
    /// The password of `key_pem`.
    pub key_password: String,
    /// Certificate and key as a PKCS12 key store, protected by `p12_password`.
    pub p12: PathBuf,
    /// The password of `p12`.
    pub p12_password: String,
}

/// The kind of resource an ACL is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A producer's `transactional.id`.
    TransactionalId,
    /// The cluster itself (name `kafka-cluster`).
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// The name exactly.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// The operation an ACL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Every operation.
    All,
    /// Consume (implies Describe).
    Read,
    /// Produce (implies Describe).
    Write,
    /// Create topics.
    Create,
    /// Delete topics or records.
    Delete,
    /// Alter (e.g. partitions).
    Alter,
    /// Metadata, offsets, group descriptions.
    Describe,
    /// Inter-broker actions.
    ClusterAction,
    /// Read configurations.
    DescribeConfigs,
    /// Change configurations.
    AlterConfigs,
    /// Idempotent produce (implied by Write on any topic since Kafka 3.0).
    IdempotentWrite,
}

/// One ALLOW ACL, for any host: what a principal may do on which resources.
/// Its `Display` form reads like a row of the README's ACL table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Acl {
    /// `User:<name>`: a SCRAM user, a certificate's CN, a JWT's `sub`.
    pub principal: String,
    /// The resource type.
    pub resource: Resource,
    /// The resource name (`kafka-cluster` for [`Resource::Cluster`]).
    pub name: String,
    /// Literal or prefixed name.
    pub pattern: Pattern,
    /// The operation allowed.
    pub operation: Operation,
}

impl Acl {
    /// `principal` may do `operation` on `resource` `name` (`pattern`).
    pub fn new(principal: &str, resource: Resource, name: &str, pattern: Pattern, operation: Operation) -> Acl {
        Acl { principal: principal.to_string(), resource, name: name.to_string(), pattern, operation }
    }

    /// On topic `name` exactly.
    pub fn topic(principal: &str, name: &str, operation: Operation) -> Acl {
        Acl::new(principal, Resource::Topic, name, Pattern::Literal, operation)
    }

    /// On group `name` exactly.
    pub fn group(principal: &str, name: &str, operation: Operation) -> Acl {
        Acl::new(principal, Resource::Group, name, Pattern::Literal, operation)
    }

    /// On transactional id `name` exactly.
    pub fn transactional_id(principal: &str, name: &str, operation: Operation) -> Acl {
        Acl::new(principal, Resource::TransactionalId, name, Pattern::Literal, operation)
    }

    /// On the cluster.
    pub fn cluster(principal: &str, operation: Operation) -> Acl {
        Acl::new(principal, Resource::Cluster, "kafka-cluster", Pattern::Literal, operation)
    }

    /// The same ACL with a prefixed name.
    pub fn prefixed(self) -> Acl {
        Acl { pattern: Pattern::Prefixed, ..self }
    }

    /// A librdkafka binding (or, with `filter`, an exact-match filter) the
    /// caller destroys.
    unsafe fn binding(&self, filter: bool) -> *mut rd::rd_kafka_AclBinding_t {
        use rd::rd_kafka_AclOperation_t as Op;
        use rd::rd_kafka_ResourceType_t as Rt;
        let restype = match self.resource {
            Resource::Topic => Rt::RD_KAFKA_RESOURCE_TOPIC,
            Resource::Group => Rt::RD_KAFKA_RESOURCE_GROUP,
            Resource::TransactionalId => Rt::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
            Resource::Cluster => Rt::RD_KAFKA_RESOURCE_BROKER,
        };
        let pattern = match self.pattern {
            Pattern::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
            Pattern::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
        };
        let op = match self.operation {
            Operation::All => Op::RD_KAFKA_ACL_OPERATION_ALL,
            Operation::Read => Op::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => Op::RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Create => Op::RD_KAFKA_ACL_OPERATION_CREATE,
            Operation::Delete => Op::RD_KAFKA_ACL_OPERATION_DELETE,
            Operation::Alter => Op::RD_KAFKA_ACL_OPERATION_ALTER,
            Operation::Describe => Op::RD_KAFKA_ACL_OPERATION_DESCRIBE,
            Operation::ClusterAction => Op::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION,
            Operation::DescribeConfigs => Op::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
            Operation::AlterConfigs => Op::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
            Operation::IdempotentWrite => Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
        };
        let name = CString::new(self.name.as_str()).unwrap();
        let principal = CString::new(self.principal.as_str()).unwrap();
        let host = c"*";
        let allow = rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW;
        let mut errstr = [0 as c_char; 512];
        // SAFETY: the strings live across the call, which copies them.
        let b = unsafe {
            if filter {
                rd::rd_kafka_AclBindingFilter_new(
                    restype,
                    name.as_ptr(),
                    pattern,
                    principal.as_ptr(),
                    host.as_ptr(),
                    op,
                    allow,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            } else {
                rd::rd_kafka_AclBinding_new(
                    restype,
                    name.as_ptr(),
                    pattern,
                    principal.as_ptr(),
                    host.as_ptr(),
                    op,
                    allow,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            }
        };
        assert!(!b.is_null(), "ACL {self}: {}", unsafe { CStr::from_ptr(errstr.as_ptr()) }.to_string_lossy());
        b
    }

    /// An ALLOW binding the broker listed, in this harness's terms (`None`
    /// for kinds the harness never creates).
    unsafe fn from_binding(b: *const rd::rd_kafka_AclBinding_t) -> Option<Acl> {
        use rd::rd_kafka_AclOperation_t as Op;
        use rd::rd_kafka_ResourceType_t as Rt;
        // SAFETY: `b` is a binding of a live result event.
        unsafe {
            let resource = match rd::rd_kafka_AclBinding_restype(b) {
                Rt::RD_KAFKA_RESOURCE_TOPIC => Resource::Topic,
                Rt::RD_KAFKA_RESOURCE_GROUP => Resource::Group,
                Rt::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => Resource::TransactionalId,
                Rt::RD_KAFKA_RESOURCE_BROKER => Resource::Cluster,
                _ => return None,
            };
            let pattern = match rd::rd_kafka_AclBinding_resource_pattern_type(b) {
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL => Pattern::Literal,
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => Pattern::Prefixed,
                _ => return None,
            };
            let operation = match rd::rd_kafka_AclBinding_operation(b) {
                Op::RD_KAFKA_ACL_OPERATION_ALL => Operation::All,
                Op::RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
                Op::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
                Op::RD_KAFKA_ACL_OPERATION_CREATE => Operation::Create,
                Op::RD_KAFKA_ACL_OPERATION_DELETE => Operation::Delete,
                Op::RD_KAFKA_ACL_OPERATION_ALTER => Operation::Alter,
                Op::RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
                Op::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION => Operation::ClusterAction,
                Op::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Operation::DescribeConfigs,
                Op::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS => Operation::AlterConfigs,
                Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Operation::IdempotentWrite,
                _ => return None,
            };
            if rd::rd_kafka_AclBinding_permission_type(b)
                != rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW
                || cstr(rd::rd_kafka_AclBinding_host(b)) != "*"
            {
                return None;
            }
            Some(Acl {
                principal: cstr(rd::rd_kafka_AclBinding_principal(b)),
                resource,
                name: cstr(rd::rd_kafka_AclBinding_name(b)),
                pattern,
                operation,
            })
        }
    }
}

impl std::fmt::Display for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {} ({:?}) {:?}", self.principal, self.resource, self.name, self.pattern, self.operation)
    }
}

/// The result event of one admin request, with the queue it came on.
struct Event {
    ptr: *mut rd::rd_kafka_event_t,
    queue: *mut rd::rd_kafka_queue_t,
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: both were created by `call` and are destroyed once.
        unsafe {
            rd::rd_kafka_event_destroy(self.ptr);
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// Runs one admin request on client `rk`: `submit` gets the options and a
/// fresh result queue, and must call the request function with them. Waits
/// for the result event and fails the test on a request-level error.
fn call(
    rk: *mut rd::rd_kafka_t,
    op: rd::rd_kafka_admin_op_t,
    what: &str,
    submit: impl FnOnce(*const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
) -> Event {
    // SAFETY: `rk` is a live client (the broker's admin client); options
    // and queue are created and destroyed here, the event by `Event`.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, 30_000, errstr.as_mut_ptr(), errstr.len());
        submit(options, queue);
        let ptr = rd::rd_kafka_queue_poll(queue, 60_000);
        rd::rd_kafka_AdminOptions_destroy(options);
        if ptr.is_null() {
            rd::rd_kafka_queue_destroy(queue);
            panic!("{what}: no answer within 60 s");
        }
        let ev = Event { ptr, queue };
        let err = rd::rd_kafka_event_error(ev.ptr);
        assert!(
            err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            "{what}: {}",
            cstr(rd::rd_kafka_event_error_string(ev.ptr))
        );
        ev
    }
}

fn error_code(e: *const rd::rd_kafka_error_t) -> i32 {
    // SAFETY: a non-null error of a live result event.
    unsafe { rd::rd_kafka_error_code(e) as i32 }
}

fn error_text(e: *const rd::rd_kafka_error_t) -> String {
    if e.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    unsafe { cstr(rd::rd_kafka_error_string(e)) }
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka hands out NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A client certificate for `cn` in `dir`, signed by CA `<ca>.pem` /
/// `<ca>.key` there.
fn make_client_cert(dir: &Path, ca: &str, cn: &str) -> ClientCert {
    let cert = ClientCert {
        cert_pem: dir.join(format!("{cn}.pem")),
        key_pem: dir.join(format!("{cn}.key")),
        key_password: format!("key-{:x}", rand_u64()),
        p12: dir.join(format!("{cn}.p12")),
        p12_password: format!("p12-{:x}", rand_u64()),
    };
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-keyout", &format!("{cn}.key"), "-passout", &format!("pass:{}", cert.key_password),
        "-out", &format!("{cn}.pem"), "-days", "2", "-subj", &format!("/CN={cn}"),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=clientAuth",
        "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"),
    ]);
    #[rustfmt::skip]
    openssl(dir, &[
        "pkcs12", "-export", "-in", &format!("{cn}.pem"), "-inkey", &format!("{cn}.key"),
        "-passin", &format!("pass:{}", cert.key_password),
        "-out", &format!("{cn}.p12"), "-passout", &format!("pass:{}", cert.p12_password), "-name", cn,
    ]);
    cert
}

/// Whether process `pid` runs (exists and is not a zombie).
fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// Runs `openssl args…` in `dir`, failing the test on an error.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The test CA and the broker's certificate (CN=localhost, SAN
/// IP:127.0.0.1 and DNS:localhost, so librdkafka's default hostname check
/// passes), and the broker's PEM key store: its unencrypted PKCS#8 key,
/// then the certificate chain.
fn make_ca_and_broker_certs(dir: &Path) {
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=engage-test-ca",
    ]);
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "broker.key", "-out", "broker.pem", "-days", "2", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth,clientAuth",
        "-CA", "ca.pem", "-CAkey", "ca.key",
    ]);
    let mut keystore = std::fs::read(dir.join("broker.key")).unwrap();
    keystore.extend(std::fs::read(dir.join("broker.pem")).unwrap());
    keystore.extend(std::fs::read(dir.join("ca.pem")).unwrap());
    std::fs::write(dir.join("broker-keystore.pem"), keystore).unwrap();
}

/// A minimal OpenID Connect provider for the broker's OAUTHBEARER
/// validation, served on loopback by a thread of the test: `GET /jwks`
/// (the public RS256 key) and `POST /token` (client credentials grant:
/// HTTP Basic `client_id:client_secret`, as librdkafka's OIDC sends them,
/// or `client_id`/`client_secret` form fields). Tokens are RS256 JWTs
/// signed with the `openssl` CLI, `sub` = the client id (principal
/// `User:<client id>`), `iss` = this server, `aud` = [`Oidc::AUDIENCE`].
pub struct Oidc {
    /// `http://127.0.0.1:<port>`, also the tokens' issuer.
    pub base: String,
    clients: Arc<Mutex<HashMap<String, String>>>,
    issued: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    key: PathBuf,
}

impl Oidc {
    /// The audience every token carries and the broker expects.
    pub const AUDIENCE: &'static str = "engage-test-kafka";
    /// The key id of the signing key in the JWKS and the tokens' header.
    const KID: &'static str = "engage-test-key-1";
    /// A token's lifetime.
    const LIFETIME_S: u64 = 3600;

    /// Makes the signing key in `dir` and starts serving.
    fn start(dir: &Path) -> Oidc {
        std::fs::create_dir_all(dir).unwrap();
        #[rustfmt::skip]
        openssl(dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "signing.key"]);
        let modulus = String::from_utf8(openssl(dir, &["rsa", "-in", "signing.key", "-noout", "-modulus"])).unwrap();
        let hex = modulus.trim().strip_prefix("Modulus=").expect("openssl rsa -modulus output");
        let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let jwks = serde_json::json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": Oidc::KID,
            "n": base64url(&n), "e": base64url(&[1, 0, 1]),
        }]})
        .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let oidc = Oidc {
            base: base.clone(),
            clients: Arc::default(),
            issued: Arc::default(),
            stop: Arc::default(),
            key: dir.join("signing.key"),
        };
        let (clients, issued, stop) = (oidc.clients.clone(), oidc.issued.clone(), oidc.stop.clone());
        let key = oidc.key.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (jwks, key, clients, issued, base) =
                    (jwks.clone(), key.clone(), clients.clone(), issued.clone(), base.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &jwks, &key, &clients, &issued, &base);
                });
            }
        });
        oidc
    }

    /// The JWKS endpoint (`sasl.oauthbearer.jwks.endpoint.url`).
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// The token endpoint (`sasl.oauthbearer.token.endpoint.url`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    /// Registers a client the token endpoint issues tokens to.
    pub fn add_client(&self, id: &str, secret: &str) {
        self.clients.lock().unwrap().insert(id.to_string(), secret.to_string());
    }

    /// How many tokens the endpoint has issued.
    pub fn tokens_issued(&self) -> u32 {
        *self.issued.lock().unwrap()
    }

    /// A signed token for `sub` valid for `lifetime_s` seconds from now (a
    /// past expiry with a negative value).
    pub fn token(&self, sub: &str, lifetime_s: i64) -> String {
        sign_jwt(&self.key, &self.base, sub, lifetime_s)
    }

    /// The broker's OAUTHBEARER lines for the SASL_SSL listener.
    fn broker_properties(&self) -> String {
        format!(
            "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n\
             listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler\n\
             sasl.oauthbearer.jwks.endpoint.url={jwks}\n\
             sasl.oauthbearer.expected.audience={aud}\n\
             sasl.oauthbearer.expected.issuer={iss}\n",
            jwks = self.jwks_url(),
            aud = Oidc::AUDIENCE,
            iss = self.base,
        )
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

/// Answers one HTTP/1.1 request of the [`Oidc`] provider.
fn serve(
    conn: TcpStream,
    jwks: &str,
    key: &Path,
    clients: &Mutex<HashMap<String, String>>,
    issued: &Mutex<u32>,
    base: &str,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, content) = if path == "/jwks" {
        ("200 OK", jwks.to_string())
    } else if path == "/token" {
        let form: HashMap<&str, &str> = body.split('&').filter_map(|kv| kv.split_once('=')).collect();
        let basic = headers.get("authorization").and_then(|a| a.strip_prefix("Basic ")).map(str::to_string);
        let client = clients.lock().unwrap().iter().find_map(|(id, secret)| {
            let by_header = basic.as_deref() == Some(base64(format!("{id}:{secret}").as_bytes()).as_str());
            let by_form =
                form.get("client_id") == Some(&id.as_str()) && form.get("client_secret") == Some(&secret.as_str());
            (by_header || by_form).then(|| id.clone())
        });
        match (form.get("grant_type"), client) {
            (Some(&"client_credentials"), Some(id)) => {
                *issued.lock().unwrap() += 1;
                let token = sign_jwt(key, base, &id, Oidc::LIFETIME_S as i64);
                let json =
                    serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": Oidc::LIFETIME_S});
                ("200 OK", json.to_string())
            }
            _ => ("401 Unauthorized", r#"{"error":"invalid_client"}"#.to_string()),
        }
    } else {
        ("404 Not Found", "{}".to_string())
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}",
        content.len()
    )?;
    conn.flush()
}

/// An RS256 JWT for `sub` from issuer `iss`, signed with `key` by the
/// `openssl` CLI.
fn sign_jwt(key: &Path, iss: &str, sub: &str, lifetime_s: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": Oidc::KID});
    let claims = serde_json::json!({
        "iss": iss, "sub": sub, "aud": Oidc::AUDIENCE,
        "iat": now, "nbf": now - 5, "exp": now + lifetime_s, "scope": "kafka",
    });
    let signing_input =
        format!("{}.{}", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst: {}", String::from_utf8_lossy(&out.stderr));
    format!("{signing_input}.{}", base64url(&out.stdout))
}

fn base64_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
        if pad {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

/// Base64url without padding (JWT, JWK).
pub fn base64url(bytes: &[u8]) -> String {
    base64_with(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", false)
}

/// Standard base64 with padding (HTTP Basic).
pub fn base64(bytes: &[u8]) -> String {
    base64_with(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true)
}

/// A client context that keeps what librdkafka reports out of band, its
/// log lines and its error callbacks, so a test can assert on them (or
/// print them): the channels a "no silent stall" check has besides the
/// results of poll, send and the delivery reports.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Recorder {
    /// Everything recorded so far, each line `LOG <level> <facility>
    /// <message>` or `ERROR <KafkaError> | <reason>`, with its time.
    pub fn events(&self) -> Vec<(Instant, String)> {
        self.events.lock().unwrap().clone()
    }

    /// The first recorded line containing `text`, with its time.
    pub fn find(&self, text: &str) -> Option<(Instant, String)> {
        self.events.lock().unwrap().iter().find(|(_, l)| l.contains(text)).cloned()
    }
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.events.lock().unwrap().push((Instant::now(), format!("LOG {level:?} {fac} {message}")));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.events.lock().unwrap().push((Instant::now(), format!("ERROR {error:?} | {reason}")));
    }
}

impl ConsumerContext for Recorder {}
