//! Parsing of the CPU and memory quantities that `resources` accepts.
//!
//! The functions accept exactly the strings that [`patterns::CPU_QUANTITY`] and
//! [`patterns::MEMORY_QUANTITY`] accept, so a value the API server let through always parses,
//! and a value it would refuse never does. Fractions of a byte round up, as Kubernetes'
//! `Quantity::Value` does.
//!
//! [`patterns::CPU_QUANTITY`]: crate::patterns::CPU_QUANTITY
//! [`patterns::MEMORY_QUANTITY`]: crate::patterns::MEMORY_QUANTITY

use std::fmt;

/// A quantity that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// The string is not of the form the schema accepts.
    Malformed {
        /// `cpu` or `memory`.
        kind: &'static str,
        /// The string as given.
        value: String,
    },
    /// The value does not fit in a signed 64-bit integer of millicores or bytes.
    TooLarge {
        /// `cpu` or `memory`.
        kind: &'static str,
        /// The string as given.
        value: String,
    },
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantityError::Malformed { kind: "cpu", value } => write!(
                f,
                "cpu quantity {value:?} is malformed: use cores (\"2\", \"0.5\") or millicores (\"250m\")"
            ),
            QuantityError::Malformed { kind, value } => write!(
                f,
                "{kind} quantity {value:?} is malformed: use bytes with an optional suffix (\"64Mi\", \"1G\")"
            ),
            QuantityError::TooLarge { kind, value } => {
                write!(f, "{kind} quantity {value:?} is too large")
            }
        }
    }
}

// `crds` carries types and schema only, so this error is written out instead of derived with
// thiserror.
impl std::error::Error for QuantityError {}

/// CPU in millicores: `"2"` → 2000, `"0.5"` → 500, `"250m"` → 250.
pub fn cpu_millis(value: &str) -> Result<i64, QuantityError> {
    let malformed = || QuantityError::Malformed {
        kind: "cpu",
        value: value.to_owned(),
    };
    let too_large = || QuantityError::TooLarge {
        kind: "cpu",
        value: value.to_owned(),
    };

    if let Some(millis) = value.strip_suffix('m') {
        if !is_digits(millis) {
            return Err(malformed());
        }
        return parse_i64(millis).ok_or_else(too_large);
    }

    let (whole, fraction) = split_decimal(value).ok_or_else(malformed)?;
    if fraction.len() > 3 {
        return Err(malformed());
    }
    let whole = parse_i64(whole).ok_or_else(too_large)?;
    // Pad the fraction to three digits: "5" is 500 millicores, "05" is 50.
    let mut millis = 0i64;
    for position in 0..3 {
        let digit = fraction
            .as_bytes()
            .get(position)
            .map_or(0, |b| i64::from(b - b'0'));
        millis = millis * 10 + digit;
    }
    whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(millis))
        .ok_or_else(too_large)
}

/// Memory in bytes: `"64Mi"` → 67108864, `"1G"` → 1000000000, `"1.5Gi"` → 1610612736.
///
/// Decimal suffixes are `k M G T P E` (powers of 1000), binary ones `Ki Mi Gi Ti Pi Ei`
/// (powers of 1024). A fractional byte count rounds up.
pub fn memory_bytes(value: &str) -> Result<i64, QuantityError> {
    let malformed = || QuantityError::Malformed {
        kind: "memory",
        value: value.to_owned(),
    };
    let too_large = || QuantityError::TooLarge {
        kind: "memory",
        value: value.to_owned(),
    };

    let (number, scale) = split_suffix(value);
    let (whole, fraction) = split_decimal(number).ok_or_else(malformed)?;
    let whole = parse_u128(whole).ok_or_else(too_large)?;

    let multiplier: u128 = match scale {
        Scale::Decimal(exp) => 10u128.pow(exp),
        Scale::Binary(exp) => 1u128 << exp,
    };
    let fraction_bytes = match scale {
        Scale::Decimal(exp) => decimal_fraction_bytes(fraction, exp),
        Scale::Binary(exp) => binary_fraction_bytes(fraction, exp),
    };

    let bytes = whole
        .checked_mul(multiplier)
        .and_then(|b| b.checked_add(fraction_bytes))
        .ok_or_else(too_large)?;
    i64::try_from(bytes).map_err(|_| too_large())
}

#[derive(Clone, Copy)]
enum Scale {
    /// Multiply by 10^n.
    Decimal(u32),
    /// Multiply by 2^n.
    Binary(u32),
}

fn split_suffix(value: &str) -> (&str, Scale) {
    const SUFFIXES: &[(&str, Scale)] = &[
        ("Ki", Scale::Binary(10)),
        ("Mi", Scale::Binary(20)),
        ("Gi", Scale::Binary(30)),
        ("Ti", Scale::Binary(40)),
        ("Pi", Scale::Binary(50)),
        ("Ei", Scale::Binary(60)),
        ("k", Scale::Decimal(3)),
        ("M", Scale::Decimal(6)),
        ("G", Scale::Decimal(9)),
        ("T", Scale::Decimal(12)),
        ("P", Scale::Decimal(15)),
        ("E", Scale::Decimal(18)),
    ];
    for (suffix, scale) in SUFFIXES {
        if let Some(number) = value.strip_suffix(suffix) {
            return (number, *scale);
        }
    }
    (value, Scale::Decimal(0))
}

/// Splits `12.34` into `("12", "34")` and `12` into `("12", "")`; both parts must be digits,
/// the whole part non-empty, and a `.` must be followed by at least one digit.
fn split_decimal(number: &str) -> Option<(&str, &str)> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (number, ""),
    };
    (is_digits(whole) && (fraction.is_empty() || is_digits(fraction))).then_some((whole, fraction))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_i64(digits: &str) -> Option<i64> {
    digits.parse().ok()
}

fn parse_u128(digits: &str) -> Option<u128> {
    digits.parse().ok()
}

/// `ceil(0.<fraction> * 10^exp)`, exactly, for any number of fraction digits.
fn decimal_fraction_bytes(fraction: &str, exp: u32) -> u128 {
    let exp = exp as usize;
    let (shifted, rest) = fraction.split_at(fraction.len().min(exp));
    let mut bytes = 0u128;
    for position in 0..exp {
        let digit = shifted.as_bytes().get(position).map_or(0, |b| b - b'0');
        bytes = bytes * 10 + u128::from(digit);
    }
    bytes + u128::from(rest.bytes().any(|b| b != b'0'))
}

/// `ceil(0.<fraction> * 2^exp)`, exactly, by doubling the decimal fraction `exp` times and
/// carrying into the whole part.
fn binary_fraction_bytes(fraction: &str, exp: u32) -> u128 {
    let mut digits: Vec<u8> = fraction.bytes().map(|b| b - b'0').collect();
    let mut whole = 0u128;
    for _ in 0..exp {
        let mut carry = 0;
        for digit in digits.iter_mut().rev() {
            let doubled = *digit * 2 + carry;
            *digit = doubled % 10;
            carry = doubled / 10;
        }
        whole = whole * 2 + u128::from(carry);
    }
    whole + u128::from(digits.iter().any(|&d| d != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::{CPU_QUANTITY, MEMORY_QUANTITY};
    use regex::Regex;

    #[test]
    fn cpu_examples() {
        for (input, millis) in [
            ("2", 2000),
            ("0.5", 500),
            ("250m", 250),
            ("2.125", 2125),
            ("0.05", 50),
            ("1.10", 1100),
            ("0", 0),
            ("0m", 0),
            ("007", 7000),
        ] {
            assert_eq!(cpu_millis(input), Ok(millis), "{input}");
        }
    }

    #[test]
    fn cpu_refuses_what_the_schema_refuses() {
        for bad in [
            "", "1.5m", "-1", "1 core", "0.0001", "m", ".5", "1.", "1e3", "0x10", "+1",
        ] {
            assert!(
                matches!(cpu_millis(bad), Err(QuantityError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cpu_too_large_is_an_error_not_a_wrap() {
        assert!(matches!(
            cpu_millis("9223372036854775807"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert_eq!(
            cpu_millis("9223372036854775807m"),
            Ok(9_223_372_036_854_775_807)
        );
        assert!(matches!(
            cpu_millis("99999999999999999999m"),
            Err(QuantityError::TooLarge { .. })
        ));
    }

    #[test]
    fn memory_examples() {
        for (input, bytes) in [
            ("64Mi", 64 << 20),
            ("1G", 1_000_000_000),
            ("1.5Gi", 1_610_612_736),
            ("1048576", 1_048_576),
            ("128Mi", 134_217_728),
            ("1k", 1000),
            ("1Ki", 1024),
            ("0.5Ki", 512),
            ("0.1Ki", 103), // 102.4 rounds up
            ("0.5", 1),     // half a byte rounds up
            ("1.000", 1),
            ("1.5M", 1_500_000),
            ("1.0000001M", 1_000_001), // 1000000.1 rounds up
            ("7Ei", 7 << 60),
            ("9E", 9_000_000_000_000_000_000),
            ("0", 0),
        ] {
            assert_eq!(memory_bytes(input), Ok(bytes), "{input}");
        }
    }

    #[test]
    fn memory_refuses_what_the_schema_refuses() {
        for bad in [
            "", "12XB", "Mi", "-1Gi", "1 Gi", "1.Gi", ".5Gi", "1m", "1K", "1KiB", "1e3", "1ki",
        ] {
            assert!(
                matches!(memory_bytes(bad), Err(QuantityError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn memory_too_large_is_an_error_not_a_wrap() {
        for big in [
            "8Ei",
            "10E",
            "9223372036854775808",
            "99999999999999999999999999999999999999999Ki",
        ] {
            assert!(
                matches!(memory_bytes(big), Err(QuantityError::TooLarge { .. })),
                "{big}"
            );
        }
        assert_eq!(memory_bytes("9223372036854775807"), Ok(i64::MAX));
    }

    #[test]
    fn long_fractions_are_exact() {
        // 0.3333333333333333333333333 Ei = 384307168202282325.33... bytes → rounds up.
        assert_eq!(
            memory_bytes("0.3333333333333333333333333Ei"),
            Ok(384_307_168_202_282_326)
        );
        // Trailing zeros past the scale do not round up.
        assert_eq!(memory_bytes("1.500000000000000000000000Ki"), Ok(1536));
        assert_eq!(memory_bytes("1.2340000000000000000000k"), Ok(1234));
        assert_eq!(memory_bytes("1.2340000000000000000001k"), Ok(1235));
    }

    /// Every string the schema pattern accepts parses, and every string it refuses does not.
    #[test]
    fn parsers_agree_with_the_schema_patterns() {
        let cpu = Regex::new(CPU_QUANTITY).unwrap();
        let memory = Regex::new(MEMORY_QUANTITY).unwrap();
        let alphabet = [
            '0', '1', '5', '9', '.', 'm', 'k', 'K', 'M', 'i', 'G', 'E', '-', ' ',
        ];
        // Every string of up to four characters over an alphabet that covers both patterns.
        let mut inputs = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            inputs.extend(level.iter().cloned());
        }
        for input in &inputs {
            assert_eq!(
                cpu.is_match(input),
                !matches!(cpu_millis(input), Err(QuantityError::Malformed { .. })),
                "cpu {input:?}"
            );
            assert_eq!(
                memory.is_match(input),
                !matches!(memory_bytes(input), Err(QuantityError::Malformed { .. })),
                "memory {input:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_value() {
        let err = memory_bytes("12XB").unwrap_err().to_string();
        assert!(
            err.contains("\"12XB\"") && err.starts_with("memory"),
            "{err}"
        );
        let err = cpu_millis("1.5m").unwrap_err().to_string();
        assert!(
            err.contains("\"1.5m\"") && err.contains("millicores"),
            "{err}"
        );
    }

    mod properties {
        use super::super::*;
        use crate::patterns::{CPU_QUANTITY, MEMORY_QUANTITY};
        use crate::template::MAX_QUANTITY_LENGTH;
        use proptest::prelude::*;

        const SUFFIXES: [(&str, u32, u32); 13] = [
            ("", 10, 0),
            ("k", 10, 3),
            ("M", 10, 6),
            ("G", 10, 9),
            ("T", 10, 12),
            ("P", 10, 15),
            ("E", 10, 18),
            ("Ki", 2, 10),
            ("Mi", 2, 20),
            ("Gi", 2, 30),
            ("Ti", 2, 40),
            ("Pi", 2, 50),
            ("Ei", 2, 60),
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Fuzz-style: any string, however hostile, gives a value or an error, never a
            /// panic, and a value only for what the schema pattern accepts.
            #[test]
            fn arbitrary_strings_never_panic(input in "\\PC{0,80}") {
                let memory = memory_bytes(&input);
                let cpu = cpu_millis(&input);
                if let Ok(bytes) = memory {
                    prop_assert!(bytes >= 0);
                    prop_assert!(regex::Regex::new(MEMORY_QUANTITY).unwrap().is_match(&input), "{}", input);
                }
                if let Ok(millis) = cpu {
                    prop_assert!(millis >= 0);
                    prop_assert!(regex::Regex::new(CPU_QUANTITY).unwrap().is_match(&input), "{}", input);
                }
            }

            /// Strings shaped like quantities, at the extremes: long digit runs, long fractions,
            /// every suffix. Never a panic, never a negative or wrapped value.
            #[test]
            fn quantity_shaped_strings_never_wrap(
                whole in "[0-9]{1,40}",
                fraction in proptest::option::of("[0-9]{1,40}"),
                suffix in proptest::sample::select(SUFFIXES.to_vec()),
            ) {
                let input = match &fraction {
                    Some(f) => format!("{whole}.{f}{}", suffix.0),
                    None => format!("{whole}{}", suffix.0),
                };
                let whole_value: u128 = whole.parse().unwrap_or(u128::MAX);
                let scale = u128::from(suffix.1).checked_pow(suffix.2).unwrap();
                let exact_floor = whole_value.checked_mul(scale);
                match memory_bytes(&input) {
                    Ok(bytes) => {
                        let floor = exact_floor.expect("a value that parses has a finite floor");
                        prop_assert!(bytes >= 0);
                        prop_assert!(u128::try_from(bytes).unwrap() >= floor, "{input}: {bytes} < {floor}");
                    }
                    Err(QuantityError::TooLarge { .. }) => {
                        // Too large means the value really is past i64::MAX bytes.
                        if let Some(floor) = exact_floor.filter(|_| fraction.is_none()) {
                            prop_assert!(floor > i64::MAX as u128, "{input}");
                        }
                    }
                    Err(e) => prop_assert!(false, "{input}: {e}"),
                }
            }

            /// Every whole number of bytes within bounds round-trips through each suffix it
            /// divides evenly.
            #[test]
            fn whole_bytes_round_trip(bytes in 0i64..=i64::MAX) {
                prop_assert_eq!(memory_bytes(&bytes.to_string()), Ok(bytes));
                for (suffix, base, exp) in SUFFIXES {
                    let scale = i64::from(base).pow(exp);
                    if bytes % scale == 0 {
                        let text = format!("{}{suffix}", bytes / scale);
                        prop_assert_eq!(memory_bytes(&text), Ok(bytes), "{}", text);
                    }
                    let units = bytes / scale;
                    prop_assert_eq!(memory_bytes(&format!("{units}{suffix}")), Ok(units * scale));
                }
            }

            /// Millicores round-trip both as `<n>m` and as cores with three decimals.
            #[test]
            fn millicores_round_trip(millis in 0i64..=i64::MAX) {
                prop_assert_eq!(cpu_millis(&format!("{millis}m")), Ok(millis));
                let cores = format!("{}.{:03}", millis / 1000, millis % 1000);
                prop_assert_eq!(cpu_millis(&cores), Ok(millis));
            }

            /// One past the largest value is an error, however it is spelled.
            #[test]
            fn one_past_the_top_is_too_large(extra in 1u128..=u128::from(u64::MAX)) {
                let past = (i64::MAX as u128) + extra;
                let memory = memory_bytes(&past.to_string());
                prop_assert!(matches!(memory, Err(QuantityError::TooLarge { .. })), "{:?}", memory);
                let cpu = cpu_millis(&format!("{past}m"));
                prop_assert!(matches!(cpu, Err(QuantityError::TooLarge { .. })), "{:?}", cpu);
            }
        }

        /// The longest string the schema lets through is still parsed quickly and exactly.
        #[test]
        fn the_longest_allowed_quantity_parses() {
            let len = MAX_QUANTITY_LENGTH as usize;
            let fraction = "9".repeat(len - 4);
            let input = format!("0.{fraction}Ei");
            assert_eq!(input.len(), len);
            assert_eq!(memory_bytes(&input), Ok(1 << 60));
            let digits = "9".repeat(len);
            assert!(matches!(
                memory_bytes(&digits),
                Err(QuantityError::TooLarge { .. })
            ));
            assert!(matches!(
                cpu_millis(&format!("{}m", &digits[1..])),
                Err(QuantityError::TooLarge { .. })
            ));
        }
    }
}
