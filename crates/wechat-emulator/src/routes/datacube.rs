//! Dates as the datacube APIs take them (`yyyy-MM-dd`) and the spans they allow.

use std::fmt;

/// The most days `getusersummary` covers in one call (both ends included).
pub(crate) const USER_SUMMARY_MAX_DAYS: usize = 7;

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date {
    year: u32,
    month: u32,
    day: u32,
}

impl Date {
    /// `yyyy-MM-dd` exactly, with a day that exists in its month.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        // Digits only: `parse` alone would take a sign.
        let digits = |range: std::ops::Range<usize>| {
            let part = text.get(range)?;
            if part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse::<u32>().ok()
            } else {
                None
            }
        };
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let date = Self {
            year: digits(0..4)?,
            month: digits(5..7)?,
            day: digits(8..10)?,
        };
        ((1..=12).contains(&date.month) && (1..=date.days_in_month()).contains(&date.day))
            .then_some(date)
    }

    /// Every day from `begin` to `end` inclusive, or `None` if `end` comes first or the
    /// span has more than `max_days`.
    pub fn span(begin: Self, end: Self, max_days: usize) -> Option<Vec<Self>> {
        if end < begin {
            return None;
        }
        let mut days = vec![begin];
        while let Some(&last) = days.last()
            && last < end
        {
            if days.len() == max_days {
                return None;
            }
            days.push(last.next());
        }
        Some(days)
    }

    fn days_in_month(self) -> u32 {
        match self.month {
            2 if self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    fn next(self) -> Self {
        if self.day < self.days_in_month() {
            Self {
                day: self.day + 1,
                ..self
            }
        } else if self.month < 12 {
            Self {
                month: self.month + 1,
                day: 1,
                ..self
            }
        } else {
            Self {
                year: self.year + 1,
                month: 1,
                day: 1,
            }
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).expect(text)
    }

    #[test]
    fn only_real_dates_in_wechats_format_parse() {
        assert_eq!(date("2024-02-29").to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "20240101",
            "2024/01/01",
            "2024-01-+1",
            "",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans_cross_months_and_years_up_to_the_limit() {
        let days = Date::span(date("2025-12-29"), date("2026-01-04"), 7).expect("7 days");
        let days: Vec<String> = days.iter().map(Date::to_string).collect();
        assert_eq!(days.first().map(String::as_str), Some("2025-12-29"));
        assert_eq!(days.get(3).map(String::as_str), Some("2026-01-01"));
        assert_eq!(days.len(), 7);
        assert_eq!(Date::span(date("2025-12-29"), date("2026-01-05"), 7), None);
        assert_eq!(Date::span(date("2026-01-02"), date("2026-01-01"), 7), None);
        assert_eq!(
            Date::span(date("2026-01-01"), date("2026-01-01"), 7).map(|d| d.len()),
            Some(1)
        );
    }
}
