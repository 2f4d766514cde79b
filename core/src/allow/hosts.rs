//! Which hosts Kalla may connect to: an allow-list of names and networks, and the internal
//! addresses (loopback, link-local, cloud metadata, unspecified) refused unless a network of the
//! list names them. Checked against the address a connection will really use, after resolving.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostError {
    #[error("{host} is not in the allowed hosts ({allowed})")]
    NotAllowed { host: String, allowed: String },
    #[error("{host} resolves to {address}, {what}, which is refused unless --allowed-hosts names it")]
    Internal {
        host: String,
        address: IpAddr,
        what: &'static str,
    },
    #[error(
        "the Unix socket directory {0} is refused: connections go over TCP unless --allowed-hosts \
         lists that directory"
    )]
    Socket(PathBuf),
    #[error(
        "hostaddr={0} is refused: name the host instead, or list a network holding the address in \
         --allowed-hosts"
    )]
    HostAddr(IpAddr),
    #[error("cannot resolve {host}: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error(
        "invalid allowed host {0:?}: give a host name, *.domain, * (any name), an address, a CIDR \
         network or a socket directory (/path)"
    )]
    InvalidRule(String),
}

impl HostError {
    /// Whether the host is refused by the rules (rather than merely not found).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Unresolvable { .. })
    }
}

/// One entry of `--allowed-hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// A host name, exactly (case-insensitive).
    Name(String),
    /// `*.example.com`: any host under the domain.
    Domain(String),
    /// An address or a CIDR network, matched against the resolved address.
    Network(IpNet),
    /// `/var/run/postgresql`: a directory of Unix sockets.
    SocketDir(PathBuf),
    /// `*`: any host that is not internal (internal ones still need a network rule).
    AnyName,
}

impl FromStr for Rule {
    type Err = HostError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.starts_with('/') {
            return Ok(Self::SocketDir(normal_dir(Path::new(text))));
        }
        if text == "*" {
            return Ok(Self::AnyName);
        }
        let text = text.to_ascii_lowercase();
        if let Ok(network) = text.parse::<IpNet>() {
            return Ok(Self::Network(network));
        }
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(Self::Network(IpNet::from(address)));
        }
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        match text.strip_prefix("*.") {
            Some(domain) if valid_name(domain) => Ok(Self::Domain(format!(".{domain}"))),
            None if valid_name(&text) => Ok(Self::Name(text)),
            _ => Err(HostError::InvalidRule(text)),
        }
    }
}

/// Where connections may go. Empty, it allows any host but, with `refuse_internal`, not the
/// internal addresses; with rules, only hosts a rule names (an internal address only if a
/// network rule contains it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    rules: Vec<Rule>,
    refuse_internal: bool,
    shown: String,
}

impl HostPolicy {
    /// Any host at all: the embedded cluster on a laptop.
    pub fn any() -> Self {
        Self::default()
    }

    /// `allowed` (names, `*.domains`, `*`, addresses, CIDR networks, socket directories); internal
    /// addresses refused unless `allowed` has a network holding them, when `refuse_internal` or
    /// when `allowed` lists anything (a list says what is allowed, loopback included).
    pub fn new(allowed: &[String], refuse_internal: bool) -> Result<Self, HostError> {
        let rules = allowed
            .iter()
            .filter(|rule| !rule.trim().is_empty())
            .map(|rule| rule.parse())
            .collect::<Result<Vec<Rule>, _>>()?;
        Ok(Self {
            shown: if allowed.is_empty() {
                "any".into()
            } else {
                allowed.join(", ")
            },
            refuse_internal: refuse_internal || !rules.is_empty(),
            rules,
        })
    }

    /// Whether `host` (as written in the URI), resolved to `address`, may be connected to.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), HostError> {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        let in_network = self
            .rules
            .iter()
            .any(|rule| matches!(rule, Rule::Network(network) if network.contains(&address)));
        if let Some(what) = internal(address)
            && self.refuse_internal
            && !in_network
        {
            return Err(HostError::Internal { host, address, what });
        }
        if self.rules.is_empty() || self.names(&host) || in_network {
            return Ok(());
        }
        Err(self.not_allowed(host))
    }

    /// Whether a rule admits `host` (lower case) by its name.
    fn names(&self, host: &str) -> bool {
        self.rules.iter().any(|rule| match rule {
            Rule::Name(name) => name == host,
            Rule::Domain(suffix) => host.ends_with(suffix.as_str()),
            Rule::AnyName => true,
            Rule::Network(_) | Rule::SocketDir(_) => false,
        })
    }

    fn not_allowed(&self, host: String) -> HostError {
        HostError::NotAllowed {
            host,
            allowed: self.shown.clone(),
        }
    }

    /// Resolves `host` and checks every address it resolves to (a connection may use any).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, HostError> {
        let bare = host.trim_matches(['[', ']']);
        let lower = bare.to_ascii_lowercase();
        let named = self.rules.is_empty() || self.names(&lower);
        // A host no rule names is admitted only by its addresses: with no network rule to hold
        // them, or unresolved, it is not.
        let has_networks = self.rules.iter().any(|rule| matches!(rule, Rule::Network(_)));
        if !named && !has_networks {
            return Err(self.not_allowed(lower));
        }
        let unresolvable = |reason: String| match named {
            true => HostError::Unresolvable {
                host: host.to_string(),
                reason,
            },
            false => self.not_allowed(lower.clone()),
        };
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| unresolvable(e.to_string()))?
            .collect();
        if addresses.is_empty() {
            return Err(unresolvable("it resolves to no address".into()));
        }
        for address in &addresses {
            self.check(host, address.ip())?;
        }
        Ok(addresses)
    }

    /// Whether connections may go through the Unix sockets in `dir`: only when a rule lists it.
    pub fn check_socket_dir(&self, dir: &Path) -> Result<(), HostError> {
        let dir = normal_dir(dir);
        let listed = self
            .rules
            .iter()
            .any(|rule| matches!(rule, Rule::SocketDir(allowed) if *allowed == dir));
        if listed {
            Ok(())
        } else {
            Err(HostError::Socket(dir))
        }
    }

    /// Whether a connection may go straight to `address` (`hostaddr`), naming no host: only
    /// when a network rule holds it.
    pub fn check_host_address(&self, address: IpAddr) -> Result<(), HostError> {
        let listed = self
            .rules
            .iter()
            .any(|rule| matches!(rule, Rule::Network(network) if network.contains(&address)));
        if listed {
            Ok(())
        } else {
            Err(HostError::HostAddr(address))
        }
    }

    /// Whether every host and address is allowed, so nothing needs resolving to be checked.
    pub fn allows_any_host(&self) -> bool {
        self.rules.is_empty() && !self.refuse_internal
    }
}

/// `dir` without a trailing `/` (`/run/pg/` and `/run/pg` are one directory).
fn normal_dir(dir: &Path) -> PathBuf {
    dir.components().collect()
}

/// What kind of internal address `address` is, if it is one.
fn internal(address: IpAddr) -> Option<&'static str> {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        v4 => v4,
    };
    match address {
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address (cloud metadata lives there)"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("a link-local address"),
        // AWS's IPv6 instance metadata service.
        IpAddr::V6(v6) if v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => {
            Some("a cloud metadata address")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn any_host_means_any_host() {
        let policy = HostPolicy::any();
        for (host, address) in [("localhost", "127.0.0.1"), ("metadata", "169.254.169.254")] {
            assert!(policy.check(host, ip(address)).is_ok());
        }
    }

    #[test]
    fn internal_addresses_are_refused_whatever_the_name_says() {
        let policy = HostPolicy::new(&[], true).unwrap();
        assert!(policy.check("db.example.com", ip("10.0.0.5")).is_ok());
        for address in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
        ] {
            let error = policy.check("innocent.example.com", ip(address)).unwrap_err();
            assert!(matches!(error, HostError::Internal { .. }), "{address}: {error}");
        }
        let message = policy
            .check("evil.example.com", ip("169.254.169.254"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("evil.example.com resolves to 169.254.169.254, a link-local"),
            "{message}"
        );
    }

    #[test]
    fn rules_name_hosts_domains_and_networks() {
        let any_name = HostPolicy::new(&["*".into(), "127.0.0.0/8".into()], true).unwrap();
        assert!(any_name.check("db.example.com", ip("203.0.113.9")).is_ok());
        assert!(any_name.check("localhost", ip("127.0.0.1")).is_ok());
        assert!(any_name.check("metadata", ip("169.254.169.254")).is_err());
        let allowed = ["db.example.com", "*.corp.example", "10.1.0.0/16", "127.0.0.1"].map(String::from);
        let policy = HostPolicy::new(&allowed, true).unwrap();
        assert!(policy.check("DB.example.com", ip("203.0.113.9")).is_ok());
        assert!(policy.check("pg.eu.corp.example", ip("203.0.113.9")).is_ok());
        assert!(policy.check("anything", ip("10.1.2.3")).is_ok());
        assert!(
            policy.check("localhost", ip("127.0.0.1")).is_ok(),
            "a network rule admits an internal address"
        );
        assert!(matches!(
            policy.check("corp.example", ip("203.0.113.9")),
            Err(HostError::NotAllowed { .. })
        ));
        assert!(matches!(
            policy.check("db.example.com", ip("169.254.169.254")),
            Err(HostError::Internal { .. })
        ));
        assert!(matches!(
            HostPolicy::new(&["bad host!".into()], true),
            Err(HostError::InvalidRule(_))
        ));
    }
}
