//! The sender of a message: the one mailbox of its one From field (RFC 5322 §3.6.2, §3.4).
//!
//! A signature is checked against the address a mail client shows as the sender, so the
//! rule is strict: exactly one `From` field holding exactly one mailbox. Comments are not
//! addresses (`alice@example.org (<bob@example.net>)` is alice) and count as white space
//! (`ali(x)ce@example.org` is no address at all), quoted strings and
//! encoded words are display names (`"Doe, John" <john@example.org>` is one mailbox), and
//! anything else — two From fields, two mailboxes, a group, no address — is not a sender;
//! the reason says which.

use crate::mime::HeaderField;

/// Most characters of a From field looked at (a field is at most a few hundred).
const MAX_FROM: usize = 4096;

/// The sender's address; `Ok(None)` when the message has no From field, `Err` with the
/// reason when its From is not exactly one mailbox.
pub fn sender_address(fields: &[HeaderField]) -> Result<Option<String>, String> {
    let froms: Vec<&HeaderField> = fields.iter().filter(|f| f.is("From")).collect();
    let from = match froms.as_slice() {
        [] => return Ok(None),
        [one] => one.value(),
        many => return Err(format!("the message has {} From fields", many.len())),
    };
    if from.len() > MAX_FROM {
        return Err("the From field is too long".into());
    }
    let mailboxes = split_mailboxes(&from)?;
    match mailboxes.as_slice() {
        [] => Err("the From field holds no address".into()),
        [one] => mailbox_address(one).map(Some),
        many => Err(format!(
            "the From field lists {} mailboxes; a signed message has one sender",
            many.len()
        )),
    }
}

/// The field's mailboxes, with comments removed, split at the commas that separate them.
fn split_mailboxes(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    let mut angle = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                cur.push('"');
                quoted(&mut chars, &mut cur)?;
            }
            // a comment is white space (RFC 5322 CFWS): it separates, it never joins the
            // text around it into one address (`ali(x)ce@example.org` is not alice@)
            '(' => {
                comment(&mut chars)?;
                cur.push(' ');
            }
            '<' if !angle => {
                angle = true;
                cur.push(c);
            }
            '>' if angle => {
                angle = false;
                cur.push(c);
            }
            ',' if !angle => out.push(std::mem::take(&mut cur)),
            ':' if !angle => {
                return Err("the From field holds a group, not a mailbox".into());
            }
            _ => cur.push(c),
        }
    }
    if angle {
        return Err("the From field has an unclosed '<'".into());
    }
    out.push(cur);
    Ok(out
        .into_iter()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect())
}

/// The addresses of an address-list field (`To`, `Cc`, `Bcc`; RFC 5322 §3.4): mailboxes and
/// the members of groups (`team: a@x, b@y;`; an empty group names nobody), comments and
/// display names removed. `Err` names what is malformed.
pub fn address_list(value: &str) -> Result<Vec<String>, String> {
    if value.len() > 64 * 1024 {
        return Err("the address field is too long".into());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    let mut angle = false;
    let flush = |cur: &mut String, out: &mut Vec<String>| -> Result<(), String> {
        let m = std::mem::take(cur);
        if !m.trim().is_empty() {
            out.push(mailbox_address(m.trim()).map_err(|e| e.replace("the From", "the"))?);
        }
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                cur.push('"');
                quoted(&mut chars, &mut cur)?;
            }
            '(' => {
                comment(&mut chars)?;
                cur.push(' ');
            }
            '<' if !angle => {
                angle = true;
                cur.push(c);
            }
            '>' if angle => {
                angle = false;
                cur.push(c);
            }
            // a group's display name ends at ':'; its members follow up to ';'
            ':' if !angle => cur.clear(),
            ',' | ';' if !angle => flush(&mut cur, &mut out)?,
            _ => cur.push(c),
        }
    }
    if angle {
        return Err("an address field has an unclosed '<'".into());
    }
    flush(&mut cur, &mut out)?;
    Ok(out)
}

/// The rest of a quoted string (after its opening quote), copied with its closing quote.
fn quoted(chars: &mut std::str::Chars<'_>, out: &mut String) -> Result<(), String> {
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            '"' => return Ok(()),
            _ => {}
        }
    }
    Err("the From field has an unclosed quoted string".into())
}

/// Skips the rest of a comment (after its '('), nested comments included.
fn comment(chars: &mut std::str::Chars<'_>) -> Result<(), String> {
    let mut depth = 1usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Err("the From field has an unclosed comment".into())
}

/// The address of one mailbox: `display name <addr-spec>` or a bare `addr-spec`.
fn mailbox_address(mailbox: &str) -> Result<String, String> {
    let addr = match (outside_quotes(mailbox, '<'), outside_quotes(mailbox, '>')) {
        (Some(a), Some(b)) if a < b => {
            if !mailbox[b + 1..].trim().is_empty() {
                return Err("the From field has text after the address".into());
            }
            mailbox[a + 1..b].trim()
        }
        (None, None) => mailbox.trim(),
        _ => return Err("the From field has a malformed '<…>' address".into()),
    };
    // an obsolete source route (<@relay:user@host>) names relays, not the sender
    let addr = match addr.strip_prefix('@') {
        Some(route) => route.split_once(':').map(|(_, a)| a.trim()).unwrap_or(""),
        None => addr,
    };
    check_addr_spec(addr)?;
    Ok(addr.to_string())
}

/// The byte offset of `c` outside quoted strings.
fn outside_quotes(s: &str, c: char) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            _ if ch == c && !in_quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// `local-part@domain`: one '@' outside a quoted local part, a domain of letters, digits,
/// hyphens and dots (or a `[literal]` of printable ASCII: RFC 5322 dtext), no spaces, and no
/// control characters anywhere.
fn check_addr_spec(addr: &str) -> Result<(), String> {
    let bad = || format!("the From address {addr:?} is not an address");
    if addr.chars().any(char::is_control) {
        return Err(bad());
    }
    let at = addr.rfind('@').ok_or_else(bad)?;
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    if local.is_empty() || domain.is_empty() {
        return Err(bad());
    }
    let local_ok = if local.starts_with('"') {
        local.len() >= 2 && local.ends_with('"')
    } else {
        !local.contains(['@', ' ', '\t', '<', '>', '"', ',', ';'])
    };
    let domain_ok = if let Some(literal) = domain.strip_prefix('[') {
        literal.strip_suffix(']').is_some_and(|l| {
            l.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b'\\'))
        })
    } else {
        domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    };
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_with_groups_comments_and_display_names() {
        assert_eq!(
            address_list(r#""Doe, John" <john@example.org>, bob@example.net (Bob), team: a@x.org, b@y.org;, undisclosed-recipients:;"#)
                .expect("list"),
            vec!["john@example.org", "bob@example.net", "a@x.org", "b@y.org"]
        );
        assert!(address_list("not an address").is_err());
        assert_eq!(address_list("  ").expect("empty"), Vec::<String>::new());
    }

    fn from(values: &[&str]) -> Result<Option<String>, String> {
        let fields: Vec<HeaderField> = values
            .iter()
            .map(|v| HeaderField {
                name: "From".into(),
                raw: format!("From: {v}").into_bytes(),
            })
            .collect();
        sender_address(&fields)
    }

    #[test]
    fn one_mailbox_in_its_usual_forms() {
        for (v, want) in [
            ("alice@example.org", "alice@example.org"),
            ("Alice <alice@example.org>", "alice@example.org"),
            ("\"Doe, John\" <john@example.org>", "john@example.org"),
            ("=?utf-8?q?J=C3=BCrgen?= <j@example.org>", "j@example.org"),
            ("alice@example.org (Alice Liddell)", "alice@example.org"),
            ("\"a <b@c>\" <real@example.org>", "real@example.org"),
            ("<@relay.example:alice@example.org>", "alice@example.org"),
            ("alice@[192.0.2.1]", "alice@[192.0.2.1]"),
            (
                "\"quoted local\"@example.org",
                "\"quoted local\"@example.org",
            ),
        ] {
            assert_eq!(from(&[v]), Ok(Some(want.to_string())), "{v}");
        }
        assert_eq!(from(&[]), Ok(None));
    }

    #[test]
    fn spoofs_are_not_a_sender() {
        // a comment is not an address: the sender is alice, whatever the comment says
        assert_eq!(
            from(&["alice@example.org (<bob@example.net>)"]),
            Ok(Some("alice@example.org".into()))
        );
        for (v, why) in [
            (
                vec!["\"A\" <alice@example.org>, <bob@example.net>"],
                "2 mailboxes",
            ),
            (
                vec!["alice@example.org", "bob@example.net"],
                "2 From fields",
            ),
            (
                vec!["friends: alice@example.org, bob@example.net;"],
                "group",
            ),
            (vec!["Alice"], "not an address"),
            (vec![""], "no address"),
            (vec!["Alice <alice@example.org"], "unclosed"),
            (vec!["<alice@example.org> bob@example.net"], "text after"),
            (vec!["\"Alice <alice@example.org>"], "unclosed quoted"),
            (vec!["alice@example.org (unclosed"], "unclosed comment"),
            // found by fuzzing (docs/reliability.md): a domain literal is printable ASCII,
            // and no address holds a control character
            (vec!["alice@[192.0.2.\u{4} \u{15}1]"], "not an address"),
            (vec!["alice@[192.0.2.1 ]"], "not an address"),
            (vec!["alice@[a]b]"], "not an address"),
            (vec!["ali\u{1}ce@example.org"], "not an address"),
            (vec!["\"ali\u{7f}ce\"@example.org"], "not an address"),
            // found by fuzzing: a comment inside an address is a separator, not nothing
            (vec!["ali(x)ce@example.org"], "not an address"),
            (
                vec!["alice@exa(<bob@example.net>)mple.org"],
                "not an address",
            ),
            (vec!["alice(c)@example.org"], "not an address"),
        ] {
            let e = from(&v).expect_err(why);
            assert!(e.contains(why), "{v:?}: {e}");
        }
    }
}
