//! Loopback ports for the servers a test starts, reserved across parallel test processes.
//!
//! A port from `bind(0)` comes from the kernel's ephemeral range, where the next outgoing connection
//! or a parallel test may take it before our server binds it. So ports are drawn from below that
//! range, and each is reserved with an exclusive lock on a file that this process holds until it
//! exits.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;

/// Below Linux's default ephemeral range (32768–60999) and above well-known services.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Locks held for the life of this process.
static RESERVED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A port nobody listens on, reserved for this process.
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("kalla-test-ports");
    std::fs::create_dir_all(&dir).expect("port reservation dir");
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(PORTS);
        if let Some(lock) = reserve(dir.join(port.to_string()))
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            RESERVED.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?} after 1000 tries");
}

fn reserve(path: PathBuf) -> Option<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            assert!(PORTS.contains(&port));
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
