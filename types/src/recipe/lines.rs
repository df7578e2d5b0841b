//! A recipe's text as logical lines: `#` comment lines and blank lines
//! dropped, a line ending in `\` joined with the next (comment lines inside
//! a continuation are skipped, as Docker does), and every byte of a logical
//! line traceable to its line and column in the file.

/// One logical line: an instruction and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub text: String,
    /// Where each joined piece of `text` starts: (offset in `text`, line
    /// number, column of that byte), both 1-based.
    pieces: Vec<(usize, usize, usize)>,
}

impl Line {
    /// The (line, column) of byte `offset` of `text` (1-based; the column
    /// counts characters).
    pub fn pos(&self, offset: usize) -> (usize, usize) {
        let &(start, line, col) = self
            .pieces
            .iter()
            .rev()
            .find(|(start, ..)| *start <= offset)
            .unwrap_or(&(0, 1, 1));
        let chars = self.text[start..offset.min(self.text.len())]
            .chars()
            .count();
        (line, col + chars)
    }

    /// Where the instruction starts.
    pub fn start(&self) -> (usize, usize) {
        self.pos(0)
    }
}

/// Splits `text` into logical lines. `Err`: the (line, column) of a
/// continuation that never ends.
pub(crate) fn logical_lines(text: &str) -> Result<Vec<Line>, (usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<Line> = None;
    let mut last = (1, 1);
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed_start = raw.len() - raw.trim_start().len();
        let body = raw.trim();
        let comment = body.starts_with('#');
        if current.is_some() && (body.is_empty() || comment) {
            // Inside a continuation: Docker skips comment and empty lines.
            continue;
        }
        if body.is_empty() || comment {
            continue;
        }
        let (piece, continues) = match body.strip_suffix('\\') {
            Some(p) => (p, true),
            None => (body, false),
        };
        let col = raw[..trimmed_start].chars().count() + 1;
        let line = current.get_or_insert_with(|| Line {
            text: String::new(),
            pieces: Vec::new(),
        });
        if !line.text.is_empty() {
            line.text.push(' ');
        }
        line.pieces.push((line.text.len(), number, col));
        line.text.push_str(piece.trim_end());
        last = (number, col + body.chars().count() - 1);
        if !continues {
            out.extend(current.take());
        }
    }
    if current.is_some() {
        return Err(last);
    }
    Ok(out)
}
