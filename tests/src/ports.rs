//! Loopback ports for the servers a test starts: [`kalla_runner::ports`] reservations, held until
//! the test process exits.

use std::sync::Mutex;

use kalla_runner::ports::{self, PortReservation};

/// Reservations held for the life of this process.
static RESERVED: Mutex<Vec<PortReservation>> = Mutex::new(Vec::new());

/// A port nobody listens on, reserved for this process.
pub fn free_port() -> u16 {
    let reservation = ports::reserve().unwrap_or_else(|error| panic!("{error}"));
    let port = reservation.port();
    RESERVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reservation);
    port
}
