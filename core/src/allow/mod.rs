//! What Kalla may reach on behalf of its users: the hosts (and socket directories) connections go
//! to, and the directories and buckets file sources are read from. Each is checked where the
//! connection or file is opened, against the address or path that will really be used.

mod files;
mod hosts;

pub use files::{Buckets, FileAccess, FileError, FileRoots, canonical_within};
pub use hosts::{HostError, HostPolicy};
