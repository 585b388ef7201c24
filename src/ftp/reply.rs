//! Control-connection replies, single- and multi-line, formatted as RFC 959 section 4.2 says.

/// One reply: a code and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply: `code-first`, the middle lines as given (each should start with a space
    /// so no line can be mistaken for the end), then `code last`.
    pub fn multi(
        code: u16,
        first: impl Into<String>,
        middle: Vec<String>,
        last: impl Into<String>,
    ) -> Self {
        let mut lines = vec![first.into()];
        lines.extend(middle);
        lines.push(last.into());
        Reply { code, lines }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (index, line) in self.lines.iter().enumerate() {
            // A CR or LF inside a line would let a file name forge a reply.
            let line = line.replace(['\r', '\n'], " ");
            if index == 0 && index != last {
                out.push_str(&format!("{}-{}\r\n", self.code, line));
            } else if index == last {
                out.push_str(&format!("{} {}\r\n", self.code, line));
            } else {
                out.push_str(&line);
                out.push_str("\r\n");
            }
        }
        out.into_bytes()
    }
}

/// `"path"` with embedded quotes doubled, as RFC 959 wants in `257` replies.
pub fn quote_path(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        assert_eq!(Reply::new(200, "OK").to_bytes(), b"200 OK\r\n");
    }

    #[test]
    fn multi_line() {
        let reply = Reply::multi(
            211,
            "Features:",
            vec![" EPSV".into(), " UTF8".into()],
            "End",
        );
        assert_eq!(
            reply.to_bytes(),
            b"211-Features:\r\n EPSV\r\n UTF8\r\n211 End\r\n"
        );
    }

    #[test]
    fn line_breaks_cannot_forge_replies() {
        assert_eq!(
            Reply::new(550, "a\r\n226 x").to_bytes(),
            b"550 a  226 x\r\n"
        );
    }

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote_path("/a\"b"), "\"/a\"\"b\"");
    }
}
