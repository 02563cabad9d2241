//! Step delays as people write them: a number of seconds, or digits followed by `s`, `m`, `h`
//! or `d`. The API reads sequences with it and the load harness dates follow-ups with it, so
//! that both read `"15m"` the same way.

/// The longest delay a step may have: a year, leap day included.
pub const MAX_DELAY_SECONDS: u64 = 366 * 86_400;

/// Reads a delay such as `"90"`, `"15m"` or `"2d"` into seconds. The error names the text
/// and what is wrong with it.
pub fn parse_delay_text(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("invalid delay {text:?}: expected digits then s, m, h or d"))?;
    let unit_seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => {
            return Err(format!("invalid delay unit {other:?} in {text:?}: use s, m, h or d"));
        }
    };
    amount
        .checked_mul(unit_seconds)
        .filter(|&seconds| seconds <= MAX_DELAY_SECONDS)
        .ok_or_else(|| format!("delay {text:?} is longer than a year"))
}

/// Checks a delay given as a number of seconds.
pub fn check_delay_seconds(seconds: u64) -> Result<u64, String> {
    (seconds <= MAX_DELAY_SECONDS)
        .then_some(seconds)
        .ok_or_else(|| format!("delay of {seconds} seconds is longer than a year"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_seconds() {
        assert_eq!(parse_delay_text("0s"), Ok(0));
        assert_eq!(parse_delay_text("90"), Ok(90));
        assert_eq!(parse_delay_text(" 15m "), Ok(900));
        assert_eq!(parse_delay_text("2h"), Ok(7_200));
        assert_eq!(parse_delay_text("2d"), Ok(172_800));
    }

    #[test]
    fn bad_text_names_the_problem() {
        assert!(parse_delay_text("soon").expect_err("not a delay").contains("\"soon\""));
        assert!(parse_delay_text("5w").expect_err("weeks are no unit").contains("unit \"w\""));
        assert!(parse_delay_text("400d").expect_err("over a year").contains("longer than a year"));
        assert!(check_delay_seconds(MAX_DELAY_SECONDS + 1).is_err());
        assert_eq!(check_delay_seconds(60), Ok(60));
    }
}
