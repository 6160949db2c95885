//! Name constraints (RFC 5280 §4.2.1.10; processing §6.1.3 (b)–(c) and §6.1.4 (g)).
//!
//! A CA (or a trust anchor) that carries nameConstraints limits the names of every
//! certificate below it on the path: each name of a certificate (its subject DN, the
//! emailAddress attributes of that DN, and every subjectAltName) must lie within the
//! permitted subtrees of its type, when a CA above permits any of that type, and within none
//! of the excluded subtrees. Instead of intersecting the permitted sets as §6.1 describes, a
//! name is checked against each constraining CA in turn, which accepts exactly the same
//! names. Self-issued intermediates are not checked (§6.1.3 (b)); the end entity always is.
//!
//! Name forms: rfc822Name, dNSName, directoryName, uniformResourceIdentifier (its host) and
//! iPAddress. A constraint on any other form (otherName, x400Address, ediPartyName,
//! registeredID) cannot be checked: a certificate that has a name of that form below it is
//! refused, as RFC 5280 requires for a critical extension. `minimum` other than 0 and any
//! `maximum` are not allowed by the profile and make the extension unusable.

use crate::path::{rdns_match, CertEntry};
use der::asn1::Ia5String;
use der::{Decode, Encode};
use x509_cert::ext::pkix::constraints::name::GeneralSubtree;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{NameConstraints, SubjectAltName};
use x509_cert::name::Name;

/// The outcome of [`check_path`] when some certificate of the path carries name
/// constraints (`None` from it means none does).
#[derive(Debug)]
pub struct Outcome {
    /// the constraining certificates' subjects
    pub constrained_by: Vec<String>,
    /// one line per name outside the constraints (empty: all names within them)
    pub problems: Vec<String>,
}

/// A name of a certificate, in the forms the constraints speak of.
#[derive(Debug)]
enum CertName {
    Email(String),
    Dns(String),
    Dir(Name),
    Uri(String),
    Ip(Vec<u8>),
    /// otherName, x400Address, ediPartyName, registeredID: the GeneralName tag number
    Other(u8),
}

impl CertName {
    fn form(&self) -> u8 {
        match self {
            CertName::Email(_) => 1,
            CertName::Dns(_) => 2,
            CertName::Dir(_) => 4,
            CertName::Uri(_) => 6,
            CertName::Ip(_) => 7,
            CertName::Other(t) => *t,
        }
    }

    fn show(&self) -> String {
        match self {
            CertName::Email(s) => format!("e-mail {s}"),
            CertName::Dns(s) => format!("DNS name {s}"),
            CertName::Dir(n) => format!("directory name '{n}'"),
            CertName::Uri(s) => format!("URI {s}"),
            CertName::Ip(b) => format!("IP address {}", show_ip(b)),
            CertName::Other(t) => format!("a name of form [{t}]"),
        }
    }
}

fn show_ip(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn form_of(g: &GeneralName) -> u8 {
    match g {
        GeneralName::OtherName(_) => 0,
        GeneralName::Rfc822Name(_) => 1,
        GeneralName::DnsName(_) => 2,
        GeneralName::DirectoryName(_) => 4,
        GeneralName::EdiPartyName(_) => 5,
        GeneralName::UniformResourceIdentifier(_) => 6,
        GeneralName::IpAddress(_) => 7,
        GeneralName::RegisteredId(_) => 8,
    }
}

fn form_name(form: u8) -> &'static str {
    match form {
        0 => "otherName",
        1 => "rfc822Name",
        2 => "dNSName",
        3 => "x400Address",
        4 => "directoryName",
        5 => "ediPartyName",
        6 => "uniformResourceIdentifier",
        7 => "iPAddress",
        _ => "registeredID",
    }
}

/// The names of `c` that constraints apply to.
fn names_of(c: &CertEntry) -> Result<Vec<CertName>, String> {
    let tbs = c.cert.tbs_certificate();
    let mut out = Vec::new();
    let subject = tbs.subject();
    if !subject.is_empty() {
        out.push(CertName::Dir(subject.clone()));
    }
    for atv in subject.iter() {
        if atv.oid == crate::alg::oid::EMAIL_ADDRESS {
            let s = atv
                .value
                .to_der()
                .ok()
                .and_then(|d| Ia5String::from_der(&d).ok().map(|s| s.to_string()))
                .or_else(|| {
                    std::str::from_utf8(atv.value.value())
                        .ok()
                        .map(str::to_string)
                })
                .ok_or("an emailAddress attribute that is not text")?;
            out.push(CertName::Email(s));
        }
    }
    match tbs.get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => {
            for g in san.0 {
                out.push(match g {
                    GeneralName::Rfc822Name(s) => CertName::Email(s.to_string()),
                    GeneralName::DnsName(s) => CertName::Dns(s.to_string()),
                    GeneralName::DirectoryName(n) => CertName::Dir(n),
                    GeneralName::UniformResourceIdentifier(s) => CertName::Uri(s.to_string()),
                    GeneralName::IpAddress(o) => CertName::Ip(o.as_bytes().to_vec()),
                    other => CertName::Other(form_of(&other)),
                });
            }
        }
        Ok(None) => {}
        Err(e) => return Err(format!("unreadable subjectAltName ({e})")),
    }
    Ok(out)
}

/// Does the subtree `base` contain `name` (of the same form)? `Err` when the constraint
/// itself is malformed.
fn within(base: &GeneralName, name: &CertName) -> Result<bool, String> {
    Ok(match (base, name) {
        (GeneralName::Rfc822Name(c), CertName::Email(n)) => email_within(c.as_str(), n),
        (GeneralName::DnsName(c), CertName::Dns(n)) => dns_within(c.as_str(), n),
        (GeneralName::DirectoryName(c), CertName::Dir(n)) => dir_within(c, n),
        (GeneralName::UniformResourceIdentifier(c), CertName::Uri(n)) => {
            match uri_host(n) {
                Some(host) => host_within(c.as_str(), &host),
                // a URI without a host cannot be within a host constraint
                None => false,
            }
        }
        (GeneralName::IpAddress(c), CertName::Ip(n)) => ip_within(c.as_bytes(), n)?,
        _ => false,
    })
}

/// rfc822Name constraints: a whole mailbox (`a@host`), one host (`host`: addresses at that
/// host only), or a domain (`.example.com`: addresses at any host below it). The local part
/// is compared exactly, host names without case.
fn email_within(c: &str, name: &str) -> bool {
    let Some((nl, nd)) = name.rsplit_once('@') else {
        return false;
    };
    if let Some((cl, cd)) = c.rsplit_once('@') {
        return cl == nl && cd.eq_ignore_ascii_case(nd);
    }
    host_within(c, nd)
}

/// A host constraint as for rfc822Name and URIs: `.example.com` is every host below
/// example.com (not example.com itself), `example.com` that host alone.
fn host_within(c: &str, host: &str) -> bool {
    if c.starts_with('.') {
        host.len() > c.len() && host[host.len() - c.len()..].eq_ignore_ascii_case(c)
    } else {
        host.eq_ignore_ascii_case(c)
    }
}

/// dNSName constraints: `example.com` is example.com and every name below it (adding
/// labels on the left); `.example.com` only the names below it; an empty constraint every
/// name.
fn dns_within(c: &str, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if c.is_empty() {
        return true;
    }
    if c.starts_with('.') {
        return host_within(c, name);
    }
    name.eq_ignore_ascii_case(c)
        || (name.len() > c.len()
            && name.as_bytes()[name.len() - c.len() - 1] == b'.'
            && name[name.len() - c.len()..].eq_ignore_ascii_case(c))
}

/// directoryName constraints: the name begins with the constraint's RDNs (each RDN compared
/// as RFC 5280 §7.1 says).
fn dir_within(c: &Name, name: &Name) -> bool {
    c.len() <= name.len()
        && c.iter_rdn()
            .zip(name.iter_rdn())
            .all(|(a, b)| rdns_match(a, b))
}

/// The host of a URI (`scheme://[user@]host[:port]/...`), lower case; `None` when it has
/// none (such as `mailto:` or `urn:`), or names an IP literal.
fn uri_host(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.starts_with('[') {
        return None;
    }
    let host = hostport.split(':').next()?;
    if host.is_empty() || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// iPAddress constraints: address and mask (8 octets for IPv4, 32 for IPv6).
fn ip_within(c: &[u8], name: &[u8]) -> Result<bool, String> {
    if c.len() != 8 && c.len() != 32 {
        return Err(format!(
            "an iPAddress constraint of {} octets (8 or 32 expected)",
            c.len()
        ));
    }
    let (addr, mask) = c.split_at(c.len() / 2);
    if name.len() != addr.len() {
        return Ok(false);
    }
    Ok(name
        .iter()
        .zip(addr)
        .zip(mask)
        .all(|((n, a), m)| n & m == a & m))
}

/// The constraints of one CA, ready to apply.
struct Constraints<'a> {
    by: &'a CertEntry,
    permitted: Vec<GeneralSubtree>,
    excluded: Vec<GeneralSubtree>,
}

impl Constraints<'_> {
    /// Problems of `name` of certificate `c` against these constraints.
    fn check(&self, c: &CertEntry, name: &CertName, out: &mut Vec<String>) {
        let form = name.form();
        let whose = || format!("'{}': its {}", c.subject(), name.show());
        let by = self.by.subject();
        let unsupported = matches!(name, CertName::Other(_));
        let refuse_unsupported = |out: &mut Vec<String>| {
            out.push(format!(
                "{} cannot be checked against the {} constraints of '{by}' (not supported): refused",
                whose(),
                form_name(form)
            ))
        };
        for s in self.excluded.iter().filter(|s| form_of(&s.base) == form) {
            if unsupported {
                refuse_unsupported(out);
                return;
            }
            match within(&s.base, name) {
                Ok(true) => {
                    out.push(format!(
                        "{} is excluded by the name constraints of '{by}'",
                        whose()
                    ));
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    out.push(format!("'{by}' has {e}"));
                    return;
                }
            }
        }
        let permitted: Vec<&GeneralSubtree> = self
            .permitted
            .iter()
            .filter(|s| form_of(&s.base) == form)
            .collect();
        if permitted.is_empty() {
            return;
        }
        if unsupported {
            refuse_unsupported(out);
            return;
        }
        let mut any = false;
        for s in permitted {
            match within(&s.base, name) {
                Ok(true) => any = true,
                Ok(false) => {}
                Err(e) => {
                    out.push(format!("'{by}' has {e}"));
                    return;
                }
            }
        }
        if !any {
            out.push(format!(
                "{} is outside the names permitted by '{by}'",
                whose()
            ));
        }
    }
}

/// Checks the names of `chain` (`[end entity, intermediates..., anchor]`, a path already
/// built) against the name constraints of the certificates above them, the anchor's
/// included. `None` when no certificate of the path carries name constraints.
pub fn check_path(chain: &[&CertEntry]) -> Option<Outcome> {
    let mut active: Vec<Constraints<'_>> = Vec::new();
    let mut problems = Vec::new();
    for (i, c) in chain.iter().enumerate().rev() {
        let is_anchor = i == chain.len() - 1;
        // §6.1.3 (b)-(c): every certificate below a constraint, except self-issued
        // intermediates; the end entity always
        if !is_anchor && !active.is_empty() && (i == 0 || !c.is_self_issued()) {
            match names_of(c) {
                Ok(names) => {
                    for n in &names {
                        for k in &active {
                            k.check(c, n, &mut problems);
                        }
                    }
                }
                Err(e) => problems.push(format!("'{}': {e}", c.subject())),
            }
        }
        if i == 0 {
            break;
        }
        match c.cert.tbs_certificate().get_extension::<NameConstraints>() {
            Ok(Some((_, nc))) => {
                let permitted = nc.permitted_subtrees.unwrap_or_default();
                let excluded = nc.excluded_subtrees.unwrap_or_default();
                if permitted
                    .iter()
                    .chain(&excluded)
                    .any(|s| s.minimum != 0 || s.maximum.is_some())
                {
                    problems.push(format!(
                        "'{}' has name constraints with a minimum or maximum distance (RFC 5280 §4.2.1.10 forbids them)",
                        c.subject()
                    ));
                }
                active.push(Constraints {
                    by: c,
                    permitted,
                    excluded,
                });
            }
            Ok(None) => {}
            Err(e) => problems.push(format!(
                "'{}' has an unreadable nameConstraints extension ({e})",
                c.subject()
            )),
        }
    }
    if active.is_empty() && problems.is_empty() {
        return None;
    }
    Some(Outcome {
        constrained_by: active.iter().map(|k| k.by.subject()).collect(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_forms() {
        assert!(email_within("alice@example.com", "alice@EXAMPLE.com"));
        assert!(!email_within("alice@example.com", "Alice@example.com"));
        assert!(email_within("example.com", "bob@example.com"));
        assert!(!email_within("example.com", "bob@mail.example.com"));
        assert!(email_within(".example.com", "bob@mail.example.com"));
        assert!(!email_within(".example.com", "bob@example.com"));
        assert!(!email_within(".example.com", "bob@badexample.com"));
        assert!(!email_within("example.com", "bob@evil.com@example.org"));
        assert!(!email_within("example.com", "no-at-sign"));
    }

    #[test]
    fn dns_forms() {
        assert!(dns_within("example.com", "example.com"));
        assert!(dns_within("example.com", "www.Example.com"));
        assert!(dns_within("example.com", "www.example.com."));
        assert!(!dns_within("example.com", "badexample.com"));
        assert!(!dns_within(".example.com", "example.com"));
        assert!(dns_within(".example.com", "a.example.com"));
        assert!(dns_within("", "anything.org"));
    }

    #[test]
    fn uri_hosts() {
        assert_eq!(
            uri_host("http://user@Host.Example.com:8080/x?y").as_deref(),
            Some("host.example.com")
        );
        assert_eq!(uri_host("mailto:a@example.com"), None);
        assert_eq!(uri_host("http://[::1]/"), None);
        assert_eq!(uri_host("http://10.0.0.1/"), None);
        assert!(host_within(".example.com", "host.example.com"));
        assert!(!host_within("example.com", "host.example.com"));
    }

    #[test]
    fn ip_masks() {
        let c = [192, 168, 0, 0, 255, 255, 0, 0];
        assert_eq!(ip_within(&c, &[192, 168, 7, 9]), Ok(true));
        assert_eq!(ip_within(&c, &[192, 169, 7, 9]), Ok(false));
        assert_eq!(ip_within(&c, &[0u8; 16]), Ok(false));
        assert!(ip_within(&[1, 2, 3], &[1, 2, 3, 4]).is_err());
    }
}
