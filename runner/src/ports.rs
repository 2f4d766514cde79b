//! Loopback ports for the servers Kalla starts locally (the local cluster's executors, the
//! end-to-end tests' services), reserved across processes.
//!
//! A port from `bind(0)` comes from the kernel's ephemeral range, where the next outgoing
//! connection may take it before our server binds it, and Ballista's executor must be told its
//! ports before it binds them (it registers the ports it was given). So ports are drawn from below
//! that range, and each is reserved with an exclusive lock on a file named after it in
//! [`reservation_dir`], holding the reserving process's pid, until the reservation is dropped or
//! the process exits. A reservation keeps out only other reservers: a process that binds without
//! reserving can still take the port.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::Rng;

/// Below Linux's default ephemeral range (32768–60999) and above well-known services.
pub const PORTS: Range<u16> = 20_000..32_000;

/// Draws before giving up: enough to find one of the range's few free ports on a busy machine.
const DRAWS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot use the port reservation dir {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("no free loopback port in {PORTS:?} after {DRAWS} tries")]
    Exhausted,
}

/// Where reservations are: shared by every process of this machine's user that reserves ports.
pub fn reservation_dir() -> PathBuf {
    std::env::temp_dir().join("kalla-ports")
}

/// A loopback port nobody listened on when it was reserved; other reservers skip it until this
/// is dropped.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    lock: File,
}

impl PortReservation {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortReservation {
    /// A released reservation names no process (the lock goes with the file handle).
    fn drop(&mut self) {
        let _ = self.lock.set_len(0);
    }
}

/// Reserves a free loopback port from [`PORTS`].
pub fn reserve() -> Result<PortReservation, PortError> {
    let dir = reservation_dir();
    std::fs::create_dir_all(&dir).map_err(|source| PortError::Dir {
        dir: dir.clone(),
        source,
    })?;
    for _ in 0..DRAWS {
        let port = rand::thread_rng().gen_range(PORTS);
        if let Some(lock) = lock(&dir.join(port.to_string()))
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(PortReservation { port, lock });
        }
    }
    Err(PortError::Exhausted)
}

/// The ports whose reservation names `pid` (a killed process's reservations still name it).
pub fn reserved_by(pid: u32) -> Vec<u16> {
    let holder = pid_line(pid);
    let Ok(entries) = std::fs::read_dir(reservation_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| std::fs::read_to_string(entry.path()).is_ok_and(|text| text == holder))
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// The reservation file's content: a reader seeing the newline has read a whole pid.
fn pid_line(pid: u32) -> String {
    format!("{pid}\n")
}

/// The file at `path`, locked and naming this process, unless another reserver holds it.
fn lock(path: &Path) -> Option<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    file.try_lock().ok()?;
    file.set_len(0).ok()?;
    file.write_all(pid_line(std::process::id()).as_bytes()).ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let reservations: Vec<PortReservation> = (0..20).map(|_| reserve().unwrap()).collect();
        let mut ports: Vec<u16> = reservations.iter().map(PortReservation::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), reservations.len());
        for port in ports {
            assert!(PORTS.contains(&port));
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }

    #[test]
    fn a_reservation_names_its_process_and_excludes_other_reservers_until_dropped() {
        let reservation = reserve().unwrap();
        let port = reservation.port();
        let path = reservation_dir().join(port.to_string());
        assert!(reserved_by(std::process::id()).contains(&port));
        assert!(
            lock(&path).is_none(),
            "a held reservation must not be taken again"
        );

        drop(reservation);
        assert!(!reserved_by(std::process::id()).contains(&port));
        let retaken = lock(&path).expect("a dropped reservation frees the port");
        drop(PortReservation { port, lock: retaken });
    }
}
