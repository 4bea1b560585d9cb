//! XML files of the archive, checked in the order that keeps hostile input cheap: encoding and
//! DTD first on the raw bytes, then a libxml2 parse with the network and entity loading off and
//! big line numbers on, then XSD validation against the schema set.
//!
//! libxml2's schema contexts are not `Send`: each thread keeps its own [`SchemaSet`], parsed
//! once and kept for as long as the schema directory stays the same.

use std::ffi::CString;
use std::path::PathBuf;

use libxml::bindings;
use libxml::error::StructuredError;
use libxml::tree::{Document, Node};

use crate::receipts::Reason;

/// At most this many schema findings are reported per file; the first ones are what a sender
/// needs to correct.
pub(crate) const MAX_FINDINGS_PER_FILE: usize = 20;

/// Why the schema set could not be used: a gateway fault, not the sender's.
#[derive(Debug, thiserror::Error)]
#[error("schema {file}: {detail}")]
pub struct SchemaError {
    pub file: PathBuf,
    pub detail: String,
}

/// Checks the encoding of `bytes` (UTF-8, BOM tolerated) and that no DTD is present. Returns
/// the text without its BOM.
pub fn check_text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a [u8], Reason> {
    let at = |rule: &str, line: u32, message: String| {
        let mut r = Reason::new(rule, message).in_file(name);
        r.line = Some(line);
        r
    };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(at(
            "xml.encoding",
            1,
            "the file is UTF-16; only UTF-8 is accepted".into(),
        ));
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Err(e) = std::str::from_utf8(text) {
        let bad = e.valid_up_to();
        return Err(at(
            "xml.encoding",
            line_of(text, bad),
            format!(
                "byte {} is not valid UTF-8; only UTF-8 is accepted",
                bad + 1
            ),
        ));
    }
    if let Some(encoding) = declared_encoding(text)
        && !encoding.eq_ignore_ascii_case("UTF-8")
    {
        return Err(at(
            "xml.encoding",
            1,
            format!("the file declares encoding {encoding}; only UTF-8 is accepted"),
        ));
    }
    for marker in [&b"<!DOCTYPE"[..], b"<!ENTITY"] {
        if let Some(pos) = find(text, marker) {
            return Err(at(
                "xml.dtd",
                line_of(text, pos),
                "a document type declaration is not accepted (no DTDs or entities)".into(),
            ));
        }
    }
    Ok(text)
}

/// Parses `text` with the network off, no entity substitution, no DTD loading, and line
/// numbers beyond 65535 kept.
pub fn parse(name: &str, text: &[u8]) -> Result<Document, Reason> {
    libxml::init_parser();
    let too_large = || Reason::new("xml.malformed", "the file is too large to parse").in_file(name);
    let len = i32::try_from(text.len()).map_err(|_| too_large())?;
    let url = CString::new(name).map_err(|_| too_large())?;
    let options = bindings::xmlParserOption_XML_PARSE_NONET
        | bindings::xmlParserOption_XML_PARSE_BIG_LINES
        | bindings::xmlParserOption_XML_PARSE_NOERROR
        | bindings::xmlParserOption_XML_PARSE_NOWARNING;
    // SAFETY: the context is created, used and freed here; the buffer outlives the call and
    // its length is passed. The error handler is this thread's, points at `first` only for
    // the duration of the parse, and is removed before `first` is read.
    unsafe {
        let ctxt = bindings::xmlNewParserCtxt();
        if ctxt.is_null() {
            return Err(too_large());
        }
        let mut sink = FirstError { name, first: None };
        let data = &mut sink as *mut FirstError as *mut std::ffi::c_void;
        bindings::xmlSetStructuredErrorFunc(data, Some(keep_first_error));
        let doc = bindings::xmlCtxtReadMemory(
            ctxt,
            text.as_ptr().cast(),
            len,
            url.as_ptr(),
            c"UTF-8".as_ptr(),
            options as i32,
        );
        bindings::xmlSetStructuredErrorFunc(std::ptr::null_mut(), None);
        let well_formed = (*ctxt).wellFormed != 0 && (*ctxt).nsWellFormed != 0;
        bindings::xmlFreeParserCtxt(ctxt);
        if doc.is_null() || !well_formed {
            if !doc.is_null() {
                bindings::xmlFreeDoc(doc);
            }
            return Err(sink.first.unwrap_or_else(|| {
                Reason::new("xml.malformed", "the file is not well-formed XML").in_file(name)
            }));
        }
        Ok(Document::new_ptr(doc))
    }
}

/// Where the parser's error handler keeps the first error: the one a sender must fix; later
/// ones often follow from it.
struct FirstError<'a> {
    name: &'a str,
    first: Option<Reason>,
}

unsafe extern "C" fn keep_first_error(data: *mut std::ffi::c_void, error: bindings::xmlErrorPtr) {
    if data.is_null() || error.is_null() {
        return;
    }
    // SAFETY: `data` is the `FirstError` that `parse` installed and outlives the parse;
    // `error` is valid for the duration of the call.
    unsafe {
        let sink = &mut *(data as *mut FirstError);
        if sink.first.is_none() && (*error).level >= bindings::xmlErrorLevel_XML_ERR_ERROR {
            let e = StructuredError::from_raw(error);
            sink.first = Some(finding("xml.malformed", sink.name, &e));
        }
    }
}

/// The line of `node` in its file, beyond 65535 too.
pub fn line(node: &Node) -> Option<u32> {
    // SAFETY: the node belongs to a live document.
    let line = unsafe { bindings::xmlGetLineNo(node.node_ptr()) };
    u32::try_from(line).ok().filter(|&l| l > 0)
}

pub(crate) fn finding(rule: &str, name: &str, e: &StructuredError) -> Reason {
    let message = e.message.as_deref().unwrap_or("invalid").trim().to_owned();
    let mut r = Reason::new(rule, message).in_file(name);
    r.line = e
        .line
        .and_then(|l| u32::try_from(l).ok())
        .filter(|&l| l > 0);
    r.column = e.col.and_then(|c| u32::try_from(c).ok()).filter(|&c| c > 0);
    r
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &[u8], pos: usize) -> u32 {
    let newlines = text[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

/// The `encoding` pseudo-attribute of the XML declaration, if there is one. Only `"` and `'`
/// quote a value; anything else is no declared encoding here, and the parser refuses the
/// malformed declaration. Reads by characters, never by byte index: the text is the sender's.
fn declared_encoding(text: &[u8]) -> Option<String> {
    let decl = text.strip_prefix(b"<?xml")?;
    let end = find(decl, b"?>")?;
    let decl = std::str::from_utf8(&decl[..end]).ok()?;
    let (_, rest) = decl.split_once("encoding")?;
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let mut chars = rest.chars();
    let quote = chars.next().filter(|q| matches!(q, '"' | '\''))?;
    let value = chars.as_str().split(quote).next()?;
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_read_from_the_declaration() {
        assert_eq!(
            declared_encoding(b"<?xml version=\"1.0\" encoding='Shift_JIS'?><a/>").as_deref(),
            Some("Shift_JIS")
        );
        assert_eq!(declared_encoding(b"<?xml version=\"1.0\"?><a/>"), None);
        assert_eq!(declared_encoding(b"<a/>"), None);
    }

    #[test]
    fn a_declaration_quoted_with_other_characters_has_no_encoding_and_does_not_panic() {
        for decl in [
            "<?xml version=\"1.0\" encoding=éUTF-8é?><a/>",
            "<?xml version=\"1.0\" encoding=「UTF-8」?><a/>",
            "<?xml version=\"1.0\" encoding=UTF-8?><a/>",
            "<?xml version=\"1.0\" encoding=?><a/>",
            "<?xml version=\"1.0\" encoding= \u{3000}'x'?><a/>",
            "<?xml encoding=\"é?><a/>",
        ] {
            let _ = declared_encoding(decl.as_bytes());
        }
        assert_eq!(
            declared_encoding("<?xml version=\"1.0\" encoding=éUTF-8é?><a/>".as_bytes()),
            None
        );
        assert_eq!(
            declared_encoding("<?xml encoding=\"é\"?><a/>".as_bytes()).as_deref(),
            Some("é")
        );
    }

    #[test]
    fn text_checks_name_the_line() {
        let r = check_text("f.xml", b"<?xml version=\"1.0\"?>\n<a>\n\xff</a>").unwrap_err();
        assert_eq!((r.rule.as_str(), r.line), ("xml.encoding", Some(3)));
        let r = check_text("f.xml", b"<?xml version=\"1.0\"?>\n<!DOCTYPE a [\n]><a/>").unwrap_err();
        assert_eq!((r.rule.as_str(), r.line), ("xml.dtd", Some(2)));
        assert!(check_text("f.xml", b"\xEF\xBB\xBF<a/>").is_ok());
    }

    #[test]
    fn malformed_xml_names_line_and_column() {
        let Err(r) = parse("f.xml", b"<a>\n  <b>\n</a>") else {
            panic!("malformed XML parsed");
        };
        assert_eq!(r.rule, "xml.malformed");
        assert_eq!(r.file.as_deref(), Some("f.xml"));
        assert_eq!(r.line, Some(3));
    }

    #[test]
    fn entities_are_neither_loaded_nor_expanded() {
        // Behind the DTD refusal of `check_text`, the parser itself loads nothing.
        let xml = b"<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/hostname\">]><a>&x;</a>";
        if let Ok(doc) = parse("f.xml", xml) {
            let root = doc.get_root_element().expect("root");
            assert_eq!(root.get_content(), "");
        }
    }
}
