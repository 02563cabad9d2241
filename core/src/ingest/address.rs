//! Checks and normalisation of email addresses and phone numbers.

use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;

use phonenumber::country::Id as Region;
use phonenumber::{Mode, PhoneNumber};

/// Maximum length of the part before `@`, in bytes (RFC 5321, section 4.5.3.1.1).
const MAX_LOCAL_PART_BYTES: usize = 64;
/// Maximum length of an address, in bytes: RFC 5321 limits a path to 256 bytes including the
/// angle brackets.
const MAX_ADDRESS_BYTES: usize = 254;
/// Maximum length of one domain label, in bytes (RFC 1035).
const MAX_LABEL_BYTES: usize = 63;
/// Longer input is no phone number, and is not handed to the phone parser.
const MAX_PHONE_CHARS: usize = 64;

/// Checks an email address and returns it with its domain lowercased. The local part keeps its
/// case, because the receiving server may treat it as significant.
///
/// Accepts dot-atom local parts (RFC 5322) and domain names. Non-ASCII letters are allowed in
/// both, as in internationalised addresses (RFC 6531). Quoted local parts and address literals
/// are rejected, because contact lists rarely contain them and many providers reject them.
pub(crate) fn normalize_email(address: &str) -> Result<String, &'static str> {
    if address.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("missing \"@\"");
    };
    if local.is_empty() {
        return Err("missing the part before \"@\"");
    }
    if domain.is_empty() {
        return Err("missing domain");
    }
    if local.contains('@') {
        return Err("contains more than one \"@\"");
    }
    if local.len() > MAX_LOCAL_PART_BYTES {
        return Err("the part before \"@\" is longer than 64 bytes");
    }
    if address.len() > MAX_ADDRESS_BYTES {
        return Err("longer than 254 bytes");
    }
    check_local_part(local)?;
    check_domain(domain)?;
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

fn check_local_part(local: &str) -> Result<(), &'static str> {
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    let allowed = |c: char| c.is_ascii_alphanumeric() || SPECIALS.contains(c) || !c.is_ascii();
    if !local.chars().all(allowed) {
        return Err("the part before \"@\" contains a character that addresses cannot have");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before \"@\" starts or ends with a dot, or has two dots in a row");
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.starts_with('[') {
        return Err("address literals such as [192.0.2.1] are not accepted; use a domain name");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain has no dot");
    }
    for label in &labels {
        if label.is_empty() {
            return Err("the domain has an empty label (two dots in a row, or a dot at an end)");
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err("a domain label is longer than 63 bytes");
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("the domain contains a character other than letters, digits, - and .");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a domain label starts or ends with a hyphen");
        }
    }
    let top_level = labels.last().copied().unwrap_or_default();
    if top_level.chars().all(|c| c.is_ascii_digit()) {
        return Err("the top-level domain is numeric");
    }
    Ok(())
}

/// Reads an ISO 3166-1 alpha-2 region code, in any case.
pub(crate) fn parse_region(code: &str) -> Option<Region> {
    let code = code.trim().to_ascii_uppercase();
    if code.len() != 2 {
        return None;
    }
    Region::from_str(&code).ok()
}

/// Reason for rejecting a phone number.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PhoneProblem {
    TooLong,
    NotANumber,
    /// Parsed, but no number of its country has this length or prefix.
    Invalid,
}

/// Parses a phone number, reading national formats as numbers of `region`, and returns it in
/// E.164.
///
/// NOTE: E.164 has no room for an extension, so "+1 202 555 0143 x123" becomes
/// "+12025550143"; SMS and calls go to the main number.
pub(crate) fn normalize_phone(
    number: &str,
    region: Option<Region>,
) -> Result<String, PhoneProblem> {
    if number.chars().count() > MAX_PHONE_CHARS {
        return Err(PhoneProblem::TooLong);
    }

    // phonenumber has panicked on malformed input in past releases, and one row must never
    // take the upload down. This only helps where panics unwind, which is the default.
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| parse_valid(number, region)));
    let phone = parsed.unwrap_or(Err(PhoneProblem::NotANumber))?;
    Ok(phone.format().mode(Mode::E164).to_string())
}

fn parse_valid(number: &str, region: Option<Region>) -> Result<PhoneNumber, PhoneProblem> {
    let phone = phonenumber::parse(region, number).map_err(|_| PhoneProblem::NotANumber)?;
    if !phone.is_valid() {
        return Err(PhoneProblem::Invalid);
    }
    Ok(phone)
}
