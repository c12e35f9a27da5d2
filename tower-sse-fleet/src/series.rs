//! Reconnects per 100 ms bucket as CSV: a header `t_s,<name>,…`, one row per bucket, the
//! bucket's start in seconds and a count per column.

use std::fmt::Write as _;
use std::path::Path;

/// Columns of counts over the same 100 ms buckets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// The column names, in order.
    pub names: Vec<String>,
    /// One vector of counts per column (they may differ in length; missing counts are 0).
    pub columns: Vec<Vec<u32>>,
}

/// A peak: the largest bucket of a column at or after a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// The start of the bucket, in seconds.
    pub at_s: f64,
    /// Its count (per 100 ms).
    pub count: u32,
}

impl Peak {
    /// The count as a rate per second.
    #[must_use]
    pub fn per_second(&self) -> u64 {
        u64::from(self.count) * 10
    }
}

/// The largest bucket of `counts` at or after `from_s` seconds (the earliest of equals).
#[must_use]
pub fn peak(counts: &[u32], from_s: f64) -> Peak {
    let mut best = Peak {
        at_s: 0.0,
        count: 0,
    };
    for (index, &count) in counts.iter().enumerate() {
        let at_s = bucket_start(index);
        if at_s + 1e-9 >= from_s && count > best.count {
            best = Peak { at_s, count };
        }
    }
    best
}

#[expect(
    clippy::cast_precision_loss,
    reason = "bucket indexes are far below 2^53"
)]
fn bucket_start(index: usize) -> f64 {
    index as f64 / 10.0
}

impl Table {
    /// Adds a column.
    pub fn push(&mut self, name: impl Into<String>, counts: Vec<u32>) {
        self.names.push(name.into());
        self.columns.push(counts);
    }

    /// The column called `name`.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<&[u32]> {
        let index = self.names.iter().position(|n| n == name)?;
        self.columns.get(index).map(Vec::as_slice)
    }

    /// The table as CSV text.
    #[must_use]
    pub fn to_csv(&self) -> String {
        let rows = self.columns.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = String::from("t_s");
        for name in &self.names {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for row in 0..rows {
            let _ = write!(out, "{:.1}", bucket_start(row));
            for column in &self.columns {
                let _ = write!(out, ",{}", column.get(row).copied().unwrap_or(0));
            }
            out.push('\n');
        }
        out
    }

    /// Parses CSV text written by [`to_csv`](Self::to_csv).
    ///
    /// # Errors
    ///
    /// The line and column of the first malformed field.
    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err("line 1: empty file, expected a header `t_s,…`".into());
        };
        let mut fields = header.split(',');
        if fields.next().map(str::trim) != Some("t_s") {
            return Err("line 1: the header must start with `t_s`".into());
        }
        let names: Vec<String> = fields.map(|f| f.trim().to_owned()).collect();
        let mut columns = vec![Vec::new(); names.len()];
        for (number, line) in lines {
            let mut fields = line.split(',').skip(1);
            for (column, name) in columns.iter_mut().zip(&names) {
                let field = fields.next().unwrap_or("").trim();
                let count = field.parse::<u32>().map_err(|_| {
                    format!(
                        "line {}: column `{name}`: `{field}` is not a count",
                        number + 1
                    )
                })?;
                column.push(count);
            }
        }
        Ok(Self { names, columns })
    }

    /// Writes the table to `path`, creating its folder.
    ///
    /// # Errors
    ///
    /// The path and the I/O error.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(path, self.to_csv()).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads a table from `path`.
    ///
    /// # Errors
    ///
    /// The path, and the I/O or format error.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_csv(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_survives_csv() {
        let mut table = Table::default();
        table.push("without", vec![0, 5, 1]);
        table.push("with", vec![1, 2]);
        let text = table.to_csv();
        assert_eq!(text, "t_s,without,with\n0.0,0,1\n0.1,5,2\n0.2,1,0\n");
        let back = Table::from_csv(&text).unwrap();
        assert_eq!(back.column("without"), Some(&[0, 5, 1][..]));
        assert_eq!(back.column("with"), Some(&[1, 2, 0][..]));
    }

    #[test]
    fn a_bad_count_names_line_and_column() {
        let err = Table::from_csv("t_s,a\n0.0,1\n0.1,x\n").unwrap_err();
        assert_eq!(err, "line 3: column `a`: `x` is not a count");
        assert!(Table::from_csv("").is_err());
        assert!(Table::from_csv("time,a\n").is_err());
    }

    #[test]
    fn the_peak_is_the_first_largest_bucket_after_the_moment() {
        let counts = [9, 1, 4, 4, 2];
        let p = peak(&counts, 0.1);
        assert_eq!((p.count, p.per_second()), (4, 40));
        assert!((p.at_s - 0.2).abs() < 1e-9);
        assert_eq!(peak(&counts, 0.0).count, 9);
        assert_eq!(peak(&[], 0.0).count, 0);
    }
}
