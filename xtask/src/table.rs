//! Plain-text tables for terminal and CI logs: the first column left-aligned
//! (names), the rest right-aligned (numbers), a rule under the header and
//! above a totals row.

/// A table being built row by row.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    footer: Option<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), ..Table::default() }
    }

    /// Appends a body row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Sets the totals row, drawn below a rule.
    pub fn footer(&mut self, cells: Vec<String>) {
        self.footer = Some(cells);
    }

    /// The table as lines of text, without trailing spaces.
    pub fn render(&self) -> String {
        let all_rows = || std::iter::once(&self.header).chain(&self.rows).chain(&self.footer);
        let columns = all_rows().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                all_rows().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let text: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, &w)| {
                    let cell = cells.get(c).map_or("", String::as_str);
                    if c == 0 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            text.join("  ").trim_end().to_owned()
        };
        let rule = "-".repeat(widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1));
        let mut out = vec![line(&self.header), rule.clone()];
        out.extend(self.rows.iter().map(|r| line(r)));
        if let Some(footer) = &self.footer {
            out.push(rule);
            out.push(line(footer));
        }
        out.join("\n")
    }
}

/// `1234567` as `1,234,567`: event counts get long.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `numerator / seconds` rounded to a whole number with separators, or `-`
/// when no measurable time passed (a rate from nothing is noise).
pub fn rate(numerator: f64, seconds: f64) -> String {
    if seconds > 1e-9 {
        // Rates are non-negative and far below u64::MAX here; `as` saturates anyway.
        thousands((numerator / seconds).round() as u64)
    } else {
        "-".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_names_left_and_numbers_right() {
        let mut t = Table::new(["scenario", "runs", "failed"]);
        t.row(vec!["smoke".into(), "200".into(), "0".into()]);
        t.row(vec!["hostile_destinations".into(), "7".into(), "12".into()]);
        t.footer(vec!["total".into(), "207".into(), "12".into()]);
        let expected = "\
scenario              runs  failed
----------------------------------
smoke                  200       0
hostile_destinations     7      12
----------------------------------
total                  207      12";
        assert_eq!(t.render(), expected);
    }

    #[test]
    fn short_rows_are_padded_and_nothing_trails() {
        let mut t = Table::new(["a", "b"]);
        t.row(vec!["x".into()]);
        assert_eq!(t.render(), "a  b\n----\nx");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn a_rate_over_no_time_is_a_dash() {
        assert_eq!(rate(10.0, 0.0), "-");
        assert_eq!(rate(3000.0, 2.0), "1,500");
    }
}
