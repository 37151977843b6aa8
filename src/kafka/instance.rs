//! Which instance of the group this process is, in a way that survives its
//! restarts: the default `transactional.id` under `exactly_once`.
//!
//! A restarted instance must reuse its predecessor's transactional id: only
//! then does `init_transactions` fence the dead producer and abort the
//! transaction it left open, so `read_committed` consumers move on at once
//! instead of waiting out `transaction.timeout.ms`. Two live instances must
//! never share one (the second would fence the first).
//!
//! "The same instance" is: the same host (in Kubernetes, the same pod: its
//! name is the host name, and a restarted container keeps it), and on that
//! host the lowest free *slot*. A slot is held by binding an abstract Unix
//! socket named after the group and the slot number; the kernel releases it
//! when the process dies, however it dies, so a restarted instance takes
//! the slot its predecessor held, and a second instance on the same host
//! takes the next. Abstract sockets need no file system (the container's
//! root may be read-only) and are private to the network namespace (each
//! pod has its own). A pod replaced by a new one (a new name) gets a new id;
//! the old one's open transaction is then aborted by the broker after
//! `transaction.timeout.ms`.

/// This process's claim on an instance identity; the slot is held until it
/// is dropped (or the process exits).
#[derive(Debug)]
pub struct Instance {
    /// `<group_id>-<host>-<slot>`.
    pub id: String,
    #[cfg(target_os = "linux")]
    _slot: Option<std::os::unix::net::UnixListener>,
}

/// How many instances of one group may share a host before they share a
/// slot (and so fence each other).
const MAX_SLOTS: u32 = 64;

/// Claims the lowest free slot of `group_id` on this host.
pub fn claim(group_id: &str) -> Instance {
    let host = host_name();
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};
        // Abstract names are at most 107 bytes; a long group id is hashed.
        let group = if group_id.len() <= 64 {
            group_id.to_string()
        } else {
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(group_id.as_bytes()))
        };
        for slot in 0..MAX_SLOTS {
            let name = format!("engage/{group}/{slot}");
            let Ok(addr) = SocketAddr::from_abstract_name(name.as_bytes()) else { break };
            if let Ok(listener) = UnixListener::bind_addr(&addr) {
                return Instance { id: format!("{group_id}-{host}-{slot}"), _slot: Some(listener) };
            }
        }
        Instance { id: format!("{group_id}-{host}-{MAX_SLOTS}"), _slot: None }
    }
    #[cfg(not(target_os = "linux"))]
    Instance { id: format!("{group_id}-{host}-0") }
}

/// The host name: the pod's name in Kubernetes. Only characters a
/// transactional id reads well with are kept.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String =
        name.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect();
    if name.is_empty() { "localhost".to_string() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_instance_keeps_its_slot_and_a_restart_takes_it_back() {
        let group = format!("test-{}", std::process::id());
        let first = claim(&group);
        let second = claim(&group);
        assert!(first.id.starts_with(&format!("{group}-")) && first.id.ends_with("-0"), "{}", first.id);
        assert!(second.id.ends_with("-1"), "a second live instance gets its own id: {}", second.id);
        let id = first.id.clone();
        drop(first);
        assert_eq!(claim(&group).id, id, "the freed slot is taken again");
    }
}
