//! `Email`: a syntactically valid address (email_address rules), at most 254 characters, no
//! control characters, with its normalised form used for uniqueness and at login: NFKC (so
//! full-width `ａｄａ＠ｅｘａｍｐｌｅ．ｃｏｍ` is `ada@example.com`), the local part Unicode case-folded,
//! the domain in its IDNA (UTS #46) ASCII form (so `bücher.de` is `xn--bcher-kva.de`).

use std::str::FromStr;

use email_address::EmailAddress;
use unicase::UniCase;
use unicode_normalization::UnicodeNormalization as _;

use super::FieldViolation;

/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
pub const MAX_EMAIL_CHARS: usize = 254;

/// A valid email address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    /// As given, trimmed.
    display: String,
    /// The identity compared for uniqueness and at login (see the module documentation).
    normalized: String,
}

impl Email {
    /// Parses the `email` field of a request.
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        let violation = |description: &str| Err(FieldViolation::new("email", description));
        if trimmed.is_empty() {
            return violation("is required");
        }
        if trimmed.chars().count() > MAX_EMAIL_CHARS {
            return violation("must be at most 254 characters");
        }
        if trimmed.chars().any(char::is_control) {
            return violation("must not contain control characters");
        }
        if trimmed.chars().any(is_invisible_filler) {
            return violation("must not contain invisible characters");
        }
        // Compatibility forms (full-width letters and @) become the characters they stand for
        // before anything else looks at the address.
        let compatible: String = trimmed.nfkc().collect();
        if EmailAddress::from_str(&compatible).is_err() {
            return violation("is not a valid email address");
        }
        let Some(normalized) = normalize(&compatible) else {
            return violation("has a domain that is not a valid internationalised domain name");
        };
        // An IDN domain grows in its ASCII form: the identity must fit the limit too.
        if normalized.chars().count() > MAX_EMAIL_CHARS {
            return violation("must be at most 254 characters (with its domain in ASCII form)");
        }
        Ok(Self {
            display: trimmed.to_owned(),
            normalized,
        })
    }

    /// The address as the user wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The normalised address: the unique identity of an account.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// `local@domain` (already NFKC) as its identity: the local part case-folded (and NFKC again, as
/// folding can undo it), the domain in IDNA ASCII form; an address literal (`[192.0.2.1]`) only
/// lowercased. `None` when the domain is not a valid IDNA name.
fn normalize(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let local = unquote(local);
    let local: String = UniCase::new(&local).to_folded_case().nfkc().collect();
    let domain = if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        canonical_address_literal(literal)
    } else {
        idna::domain_to_ascii(domain).ok()?
    };
    Some(format!("{local}@{domain}"))
}

/// A quoted local part (`"eve"`, `"u\ma"`) as the characters it quotes, so that it is the same
/// identity as the unquoted form.
fn unquote(local: &str) -> std::borrow::Cow<'_, str> {
    let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.into();
    };
    let mut plain = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        plain.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    plain.into()
}

/// An address literal in canonical form: `[IPv6:2001:db8:0:0:0:0:0:1]` is `[ipv6:2001:db8::1]`.
fn canonical_address_literal(literal: &str) -> String {
    let parsed = match literal.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => literal[5..]
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|v6| format!("ipv6:{v6}")),
        _ => literal
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(|v4| v4.to_string()),
    };
    format!(
        "[{}]",
        parsed.unwrap_or_else(|| literal.to_ascii_lowercase())
    )
}

/// Characters that render as nothing though they are letters (Hangul fillers, the Mongolian
/// vowel separator, the Braille blank): a look-alike of another address.
fn is_invisible_filler(c: char) -> bool {
    matches!(
        c,
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{180E}' | '\u{2800}'
    )
}

impl std::fmt::Debug for Email {
    // Emails are personal data: logs get the domain only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domain = self.normalized.rsplit_once('@').map_or("", |(_, d)| d);
        write!(f, "Email(***@{domain})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_case_folds_for_identity() {
        let email = Email::parse("  Alice.Smith@Example.COM \n").unwrap();
        assert_eq!(email.as_str(), "Alice.Smith@Example.COM");
        assert_eq!(email.normalized(), "alice.smith@example.com");
    }

    #[test]
    fn full_width_forms_and_unicode_domains_have_one_identity() {
        let ascii = Email::parse("ada@example.com").unwrap();
        let full_width = Email::parse("ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ").unwrap();
        assert_eq!(full_width.normalized(), ascii.normalized());
        assert_eq!(
            full_width.as_str(),
            "ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ",
            "shown as given"
        );
        let unicode = Email::parse("user@bücher.de").unwrap();
        let punycode = Email::parse("user@xn--bcher-kva.de").unwrap();
        assert_eq!(unicode.normalized(), "user@xn--bcher-kva.de");
        assert_eq!(unicode.normalized(), punycode.normalized());
        assert_eq!(
            Email::parse("USER@BÜCHER.DE").unwrap().normalized(),
            punycode.normalized()
        );
        // Full case folding: ß and ss are one local part, as are Σ, σ and ς.
        assert_eq!(
            Email::parse("Straße@example.com").unwrap().normalized(),
            Email::parse("STRASSE@example.com").unwrap().normalized()
        );
    }

    #[test]
    fn normalising_an_identity_again_changes_nothing() {
        for raw in [
            "İstanbul@example.com",
            "ß@bücher.de",
            "x@ＥＸＡＭＰＬＥ.com",
            "ΣΊΣΥΦΟΣ@παράδειγμα.δοκιμή",
            "ﬃ@example.com",
        ] {
            let email = Email::parse(raw).unwrap_or_else(|v| panic!("{raw}: {v}"));
            let identity = email.normalized();
            assert_eq!(normalize(identity).as_deref(), Some(identity), "{raw}");
            let domain = identity.rsplit_once('@').unwrap().1;
            assert!(domain.is_ascii(), "{raw}: {identity}");
        }
    }

    #[test]
    fn address_literals_are_in_canonical_form() {
        let literal = Email::parse("root@[192.0.2.1]").unwrap();
        assert_eq!(literal.normalized(), "root@[192.0.2.1]");
        assert_eq!(
            Email::parse("x@[IPv6:2001:db8:0:0:0:0:0:1]")
                .unwrap()
                .normalized(),
            Email::parse("x@[ipv6:2001:DB8::1]").unwrap().normalized()
        );
    }

    #[test]
    fn quoted_local_parts_are_the_address_they_quote() {
        for (quoted, plain) in [
            ("\"eve\"@example.com", "eve@example.com"),
            ("\"u\\ma\"@example.com", "uma@example.com"),
        ] {
            let (quoted, plain) = (Email::parse(quoted).unwrap(), Email::parse(plain).unwrap());
            assert_eq!(quoted.normalized(), plain.normalized());
        }
    }

    #[test]
    fn invisible_fillers_are_refused() {
        for raw in [
            "al\u{3164}@example.com",
            "al\u{FFA0}@example.com",
            "\u{115F}al@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn refuses_malformed_addresses() {
        for raw in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@@b.com",
        ] {
            let violation = Email::parse(raw).unwrap_err();
            assert_eq!(violation.field, "email", "{raw:?}");
        }
    }

    #[test]
    fn refuses_control_characters() {
        assert!(Email::parse("a\u{0}b@example.com").is_err());
        assert!(Email::parse("ab@exa\u{7}mple.com").is_err());
    }

    #[test]
    fn refuses_more_than_254_characters() {
        let local = "a".repeat(64);
        let domain = format!("{}.com", vec!["b".repeat(60); 4].join("."));
        let long = format!("{local}@{domain}");
        assert!(long.len() > MAX_EMAIL_CHARS);
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn debug_does_not_print_the_local_part() {
        let email = Email::parse("secret.person@example.com").unwrap();
        assert!(!format!("{email:?}").contains("secret.person"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn accepted_emails_are_bounded_printable_and_normalised(raw in "\\PC{0,300}") {
                if let Ok(email) = Email::parse(&raw) {
                    prop_assert!(email.as_str().chars().count() <= MAX_EMAIL_CHARS);
                    prop_assert!(!email.as_str().chars().any(char::is_control));
                    prop_assert_eq!(email.as_str(), raw.trim());
                    // The identity is NFKC, case-folded, with an ASCII domain, and stable.
                    let identity = email.normalized();
                    let again = normalize(identity);
                    prop_assert_eq!(again.as_deref(), Some(identity));
                    prop_assert!(identity.rsplit_once('@').is_some_and(|(_, d)| d.is_ascii()));
                    prop_assert!(identity.chars().count() <= MAX_EMAIL_CHARS);
                }
            }

            #[test]
            fn parsing_is_idempotent_and_case_insensitive(
                local in "[a-zA-Z0-9._%+-]{1,40}",
                domain in "[a-zA-Z0-9-]{1,30}\\.[a-zA-Z]{2,10}",
            ) {
                let raw = format!("{local}@{domain}");
                if let Ok(email) = Email::parse(&raw) {
                    let again = Email::parse(email.as_str()).unwrap();
                    prop_assert_eq!(&again, &email);
                    let shouted = Email::parse(&raw.to_uppercase()).unwrap();
                    prop_assert_eq!(shouted.normalized(), email.normalized());
                }
            }

            #[test]
            fn any_control_character_is_refused(
                prefix in "[a-z]{1,10}",
                control in prop::char::range('\u{0}', '\u{1f}'),
            ) {
                let raw = format!("{prefix}{control}x@example.com");
                prop_assert!(Email::parse(&raw).is_err());
            }
        }
    }
}
