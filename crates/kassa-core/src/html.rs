//! The one HTML escaper of Kassa's askama templates (the e-mails here, the merchant pages in
//! kassa-api): every value a template shows is escaped on the way out, safe in text and in
//! double- or single-quoted attributes.
//!
//! askama's own escaper writes numeric entities (`&#60;`); this one writes the named entities
//! Kassa's pages and e-mails have always carried (`&lt; &gt; &amp; &quot;`, and `&#39;`, which
//! HTML 4 e-mail clients read where `&apos;` fails): equally safe, and what the tests and mail
//! filters see.

use askama::filters::Escaper;
use std::fmt::{self, Write};

/// HTML escaping with named entities, for templates ending in `.html` (see `askama.toml`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Html;

impl Escaper for Html {
    fn write_escaped_str<W: Write>(&self, mut dest: W, string: &str) -> fmt::Result {
        let mut rest = string;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            dest.write_str(&rest[..at])?;
            dest.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        dest.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_character_becomes_a_named_entity() {
        let mut out = String::new();
        Html.write_escaped_str(&mut out, "<a href=\"x\">Ada's & co</a>é")
            .unwrap();
        assert_eq!(
            out,
            "&lt;a href=&quot;x&quot;&gt;Ada&#39;s &amp; co&lt;/a&gt;é"
        );
    }
}
