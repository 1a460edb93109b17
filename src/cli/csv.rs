//! The operator's CSV files (`user import`, `regcode issue --users`, `key
//! rotate --users`): UTF-8 (a byte-order mark is skipped), comma-separated,
//! `"quoted"` fields with `""` for a quote, `#` comments and blank lines
//! skipped, and a header line skipped when its first field names the user ID.

/// A data line: its number in the file (from 1) and its fields.
pub struct Line {
    /// The line's number.
    pub number: usize,
    /// The fields, or what is wrong with the line.
    pub fields: Result<Vec<String>, String>,
}

/// The data lines of a file.
pub fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields = fields(line);
        let header = std::mem::take(&mut first)
            && fields
                .as_ref()
                .is_ok_and(|f| ["user_id", "id", "本人id", "本人ｉｄ"].contains(&f[0].trim().to_lowercase().as_str()));
        if !header {
            out.push(Line { number: i + 1, fields });
        }
    }
    out
}

/// Splits one line into fields: commas, with `"..."` quoting (`""` is a quote).
pub fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_headers_comments_and_bom() {
        let text = "\u{feff}本人ID,name\n# c\n\n\"a,b\",\"say \"\"hi\"\"\"\r\nx,\"open\n";
        let l = lines(text);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].number, l[0].fields.clone()), (4, Ok(vec!["a,b".to_owned(), "say \"hi\"".to_owned()])));
        assert_eq!(l[1].fields, Err("a quoted field is not closed".to_owned()));
        assert_eq!(lines("100001,x\n")[0].number, 1, "no header");
    }
}
