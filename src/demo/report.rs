//! The demo's output: plain text, coloured only when stdout is a terminal (and `NO_COLOR` is
//! unset), and aligned tables.

use std::io::IsTerminal;

/// An ANSI style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style(&'static str);

pub const BOLD: Style = Style("1");
pub const DIM: Style = Style("2");
pub const RED: Style = Style("1;31");
pub const GREEN: Style = Style("32");
pub const YELLOW: Style = Style("33");
pub const CYAN: Style = Style("36");

/// Where the demo writes: stdout, with or without colour.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub colour: bool,
}

impl Out {
    pub fn detect() -> Out {
        Out {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn paint(&self, style: Style, text: impl AsRef<str>) -> String {
        let text = text.as_ref();
        if self.colour && !text.is_empty() {
            format!("\x1b[{}m{text}\x1b[0m", style.0)
        } else {
            text.to_string()
        }
    }

    pub fn line(&self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
    }

    pub fn blank(&self) {
        println!();
    }

    /// A scenario's one-line announcement.
    pub fn title(&self, number: usize, of: usize, text: &str) {
        println!();
        println!(
            "{} {}",
            self.paint(CYAN, format!("[{number}/{of}]")),
            self.paint(BOLD, text)
        );
    }

    /// One thing that happened, indented under the title.
    pub fn step(&self, text: impl AsRef<str>) {
        println!("  {} {}", self.paint(DIM, "-"), text.as_ref());
    }

    pub fn verdict(&self, ok: bool, text: impl AsRef<str>) {
        if ok {
            println!("  {} {}", self.paint(GREEN, "ok:"), text.as_ref());
        } else {
            println!("  {} {}", self.paint(RED, "FAILED:"), text.as_ref());
        }
    }

    pub fn table(&self, table: &Table) {
        print!("{}", table.render(self));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One cell: text and an optional style (which does not count towards the width).
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub style: Option<Style>,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            style: None,
        }
    }

    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell {
            text: text.into(),
            style: Some(style),
        }
    }

    pub fn style_if(mut self, cond: bool, style: Style) -> Cell {
        if cond {
            self.style = Some(style);
        }
        self
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::new(s)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::new(s)
    }
}

/// A table with a header, optional column groups above it (label, number of columns) and
/// rows, indented by two spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    groups: Vec<(String, usize)>,
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<Cell>>,
}

const GAP: &str = "  ";

impl Table {
    pub fn new(header: &[&str], align: &[Align]) -> Table {
        Table {
            groups: Vec::new(),
            header: header.iter().map(|s| s.to_string()).collect(),
            align: align.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Labels over consecutive columns (an empty label leaves them blank).
    pub fn groups(mut self, groups: &[(&str, usize)]) -> Table {
        self.groups = groups.iter().map(|(l, n)| (l.to_string(), *n)).collect();
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.text.chars().count());
                }
            }
        }
        // A group label must fit over its columns: widen the last one if needed.
        let mut col = 0;
        for (label, span) in &self.groups {
            let span = (*span).min(w.len().saturating_sub(col));
            if span == 0 {
                break;
            }
            let have: usize = w[col..col + span].iter().sum::<usize>() + GAP.len() * (span - 1);
            let need = label.chars().count() + 4;
            if !label.is_empty() && need > have {
                w[col + span - 1] += need - have;
            }
            col += span;
        }
        w
    }

    fn pad(text: &str, width: usize, align: Align) -> String {
        let n = text.chars().count();
        let fill = " ".repeat(width.saturating_sub(n));
        match align {
            Align::Left => format!("{text}{fill}"),
            Align::Right => format!("{fill}{text}"),
        }
    }

    pub fn render(&self, out: &Out) -> String {
        let w = self.widths();
        let align = |i: usize| self.align.get(i).copied().unwrap_or(Align::Left);
        let mut s = String::new();
        if !self.groups.is_empty() {
            let mut line = String::from("  ");
            let mut col = 0;
            for (label, span) in &self.groups {
                let span = (*span).min(w.len().saturating_sub(col));
                if span == 0 {
                    break;
                }
                let width: usize =
                    w[col..col + span].iter().sum::<usize>() + GAP.len() * (span - 1);
                let text = if label.is_empty() {
                    " ".repeat(width)
                } else {
                    let label = format!(" {label} ");
                    let left = (width - label.chars().count()) / 2;
                    let right = width - label.chars().count() - left;
                    out.paint(
                        BOLD,
                        format!("{}{label}{}", "-".repeat(left), "-".repeat(right)),
                    )
                };
                if col > 0 {
                    line.push_str(GAP);
                }
                line.push_str(&text);
                col += span;
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        let header: Vec<String> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| Self::pad(h, w[i], align(i)))
            .collect();
        s.push_str(&format!(
            "  {}\n",
            out.paint(BOLD, header.join(GAP).trim_end())
        ));
        for row in &self.rows {
            let cells: Vec<String> = (0..w.len())
                .map(|i| {
                    let cell = row.get(i).cloned().unwrap_or_else(|| Cell::new(""));
                    let padded = Self::pad(&cell.text, w[i], align(i));
                    match cell.style {
                        // Style only the text, keep the padding plain.
                        Some(st) if !cell.text.is_empty() => {
                            let painted = out.paint(st, &cell.text);
                            padded.replacen(&cell.text, &painted, 1)
                        }
                        _ => padded,
                    }
                })
                .collect();
            s.push_str(&format!("  {}\n", cells.join(GAP).trim_end()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tables_align() {
        let mut t =
            Table::new(&["key", "n"], &[Align::Left, Align::Right]).groups(&[("", 1), ("SQL", 1)]);
        t.row(vec!["book".into(), Cell::styled("10", RED)]);
        t.row(vec!["a".into(), "9".into()]);
        let s = t.render(&Out { colour: false });
        assert_eq!(
            s,
            "        - SQL -\n  key         n\n  book       10\n  a           9\n"
        );
        assert!(!s.contains('\x1b'));
        let c = t.render(&Out { colour: true });
        assert!(c.contains("\x1b[1;31m10\x1b[0m"));
    }
}
