//! Which hosts Kalla may connect to: an allow-list of names and networks, and the internal
//! addresses (loopback, link-local, cloud metadata, unspecified) refused unless a network of the
//! list names them. Checked against the address a connection will really use, after resolving.

use std::net::IpAddr;
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
    #[error("invalid allowed host {0:?}: give a host name, *.domain, an address or a CIDR network")]
    InvalidRule(String),
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
}

impl FromStr for Rule {
    type Err = HostError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
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

    /// `allowed` (names, `*.domains`, addresses, CIDR networks); internal addresses refused
    /// unless `allowed` has a network holding them, when `refuse_internal`.
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
            rules,
            refuse_internal,
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
        let named = self.rules.iter().any(|rule| match rule {
            Rule::Name(name) => *name == host,
            Rule::Domain(suffix) => host.ends_with(suffix.as_str()),
            Rule::Network(_) => false,
        });
        if self.rules.is_empty() || named || in_network {
            return Ok(());
        }
        Err(HostError::NotAllowed {
            host,
            allowed: self.shown.clone(),
        })
    }
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
