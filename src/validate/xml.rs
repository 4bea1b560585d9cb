//! XML files of the archive, checked in the order that keeps hostile input cheap: encoding and
//! DTD first on the raw bytes, then one libxml2 pass (network and entity loading off, big line
//! numbers on) that validates against the schema set as it parses and builds the small
//! [`Tree`] the rules read. No libxml2 document is built: building and walking one cost as much
//! as the validation itself.
//!
//! libxml2's schema contexts are not `Send`: each thread keeps its own [`Catalog`](super::schemas::Catalog), compiled
//! once and kept for as long as the schema directory stays the same.
//!
//! The FFI module of the check: libxml2 is driven through its C API here, so `unsafe` is
//! allowed, and every pointer handed to C points at something that outlives the call that uses
//! it (see the SAFETY comments).
#![allow(unsafe_code)]

use std::path::PathBuf;

use libxml::bindings;
use libxml::error::StructuredError;
use libxml::schemas::SchemaValidationContext;

use crate::events::Finding;
use crate::validate::finding::Rule;

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
pub fn check_text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a [u8], Finding> {
    let at = |rule: Rule, line: u32, message: String| {
        let mut r = Finding::new(rule, message).in_file(name);
        r.line = Some(line);
        r
    };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(at(
            Rule::XmlEncoding,
            1,
            "the file is UTF-16; only UTF-8 is accepted".into(),
        ));
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Err(e) = std::str::from_utf8(text) {
        let bad = e.valid_up_to();
        return Err(at(
            Rule::XmlEncoding,
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
            Rule::XmlEncoding,
            1,
            format!("the file declares encoding {encoding}; only UTF-8 is accepted"),
        ));
    }
    for marker in [&b"<!DOCTYPE"[..], b"<!ENTITY"] {
        if let Some(pos) = find(text, marker) {
            return Err(at(
                Rule::XmlDtd,
                line_of(text, pos),
                "a document type declaration is not accepted (no DTDs or entities)".into(),
            ));
        }
    }
    Ok(text)
}

/// The parser options: the network off, no entity substitution, no DTD loading, line numbers
/// beyond 65535 kept, and errors to the structured handler only.
const OPTIONS: bindings::xmlParserOption = bindings::xmlParserOption_XML_PARSE_NONET
    | bindings::xmlParserOption_XML_PARSE_BIG_LINES
    | bindings::xmlParserOption_XML_PARSE_NOERROR
    | bindings::xmlParserOption_XML_PARSE_NOWARNING;

/// Parses `text` into a [`Tree`].
pub fn parse(name: &str, text: &[u8]) -> Result<Tree, Finding> {
    read(name, text, None).map(|(tree, _)| tree)
}

/// Parses `text` into a [`Tree`] and validates it against `schema` in the same pass (libxml2's
/// schema validator plugged into the parser's events: no libxml2 document is built, which halves
/// the cost of a check). Returns the tree and the schema's errors, none when it is valid.
pub fn parse_valid(
    name: &str,
    text: &[u8],
    schema: &mut SchemaValidationContext,
) -> Result<(Tree, Vec<StructuredError>), Finding> {
    read(name, text, Some(schema))
}

fn read(
    name: &str,
    text: &[u8],
    mut schema: Option<&mut SchemaValidationContext>,
) -> Result<(Tree, Vec<StructuredError>), Finding> {
    libxml::init_parser();
    let too_large =
        || Finding::new(Rule::XmlMalformed, "the file is too large to parse").in_file(name);
    let len = i32::try_from(text.len()).map_err(|_| too_large())?;
    let mut builder = Builder {
        tree: Tree::default(),
        open: Vec::new(),
        last_child: Vec::new(),
        parser: std::ptr::null_mut(),
    };
    let mut sink = FirstError { name, first: None };
    // SAFETY: the parser context is created, used and freed here, and the schema plug is
    // removed before it is freed. The SAX callbacks receive `builder` (through the plug when
    // one is in place), which outlives the parse. The buffer outlives the parse and its length
    // is passed. The error handler is this thread's, points at `sink` only for the duration of
    // the parse, and is removed before `sink` is read. The locator reads the parser context,
    // which lives until after the locator is removed.
    let (well_formed, errors) = unsafe {
        let mut handler: bindings::xmlSAXHandler = std::mem::zeroed();
        handler.initialized = bindings::XML_SAX2_MAGIC;
        handler.startElementNs = Some(start_element);
        handler.endElementNs = Some(end_element);
        let ctxt = bindings::xmlCreateMemoryParserCtxt(text.as_ptr().cast(), len);
        if ctxt.is_null() {
            return Err(Finding::new(Rule::XmlMalformed, "the file is empty").in_file(name));
        }
        // The parse reports to `handler`; the context's own handler is put back before the
        // context frees it.
        let own_handler = (*ctxt).sax;
        (*ctxt).sax = &mut handler;
        (*ctxt).userData = (&mut builder as *mut Builder).cast();
        builder.parser = ctxt;
        bindings::xmlCtxtUseOptions(ctxt, OPTIONS as i32);
        let plug = match schema.as_deref_mut() {
            Some(schema) => {
                bindings::xmlSchemaValidateSetLocator(schema.as_ptr(), Some(locate), ctxt.cast());
                bindings::xmlSchemaSAXPlug(schema.as_ptr(), &mut (*ctxt).sax, &mut (*ctxt).userData)
            }
            None => std::ptr::null_mut(),
        };
        let data = &mut sink as *mut FirstError as *mut std::ffi::c_void;
        bindings::xmlSetStructuredErrorFunc(data, Some(keep_first_error));
        bindings::xmlParseDocument(ctxt);
        bindings::xmlSetStructuredErrorFunc(std::ptr::null_mut(), None);
        let well_formed = (*ctxt).wellFormed != 0 && (*ctxt).nsWellFormed != 0;
        let errors = match schema {
            Some(schema) => {
                if !plug.is_null() {
                    bindings::xmlSchemaSAXUnplug(plug);
                }
                bindings::xmlSchemaValidateSetLocator(schema.as_ptr(), None, std::ptr::null_mut());
                let mut errors = schema.drain_errors();
                let valid = !plug.is_null() && bindings::xmlSchemaIsValid(schema.as_ptr()) == 1;
                if !valid && errors.is_empty() {
                    errors.push(StructuredError {
                        message: Some("the schema validator failed without a diagnostic".into()),
                        level: libxml::error::XmlErrorLevel::Error,
                        filename: None,
                        line: None,
                        col: None,
                        domain: bindings::xmlErrorDomain_XML_FROM_SCHEMASV as i32,
                        code: bindings::xmlParserErrors_XML_SCHEMAV_INTERNAL as i32,
                    });
                }
                errors
            }
            None => Vec::new(),
        };
        (*ctxt).sax = own_handler;
        (*ctxt).userData = ctxt.cast();
        bindings::xmlFreeParserCtxt(ctxt);
        (well_formed, errors)
    };
    if !well_formed || builder.tree.root().is_none() {
        return Err(sink.first.unwrap_or_else(|| {
            Finding::new(Rule::XmlMalformed, "the file is not well-formed XML").in_file(name)
        }));
    }
    Ok((builder.tree, errors))
}

/// The schema validator's idea of where it is: the parser's current line.
///
/// # Safety
/// Called by libxml2 only, with `ctx` null or the live parser context `read` installed, and
/// `file` and `line` null or writable.
unsafe extern "C" fn locate(
    ctx: *mut std::ffi::c_void,
    file: *mut *const std::ffi::c_char,
    line: *mut std::ffi::c_ulong,
) -> std::ffi::c_int {
    if ctx.is_null() {
        return -1;
    }
    // SAFETY: `ctx` is the parser context `read` installed, alive while the locator is set;
    // `file` and `line` are the validator's out-parameters.
    unsafe {
        let input = (*(ctx as bindings::xmlParserCtxtPtr)).input;
        if !file.is_null() {
            *file = std::ptr::null();
        }
        if !line.is_null() {
            *line = if input.is_null() {
                0
            } else {
                std::ffi::c_ulong::try_from((*input).line).unwrap_or(0)
            };
        }
    }
    0
}

/// Where a parse builds its [`Tree`].
struct Builder {
    tree: Tree,
    /// The elements whose end tag has not come yet.
    open: Vec<u32>,
    /// The last child seen of each open element, to append the next one in constant time.
    last_child: Vec<Option<u32>>,
    parser: bindings::xmlParserCtxtPtr,
}

/// A NUL-terminated string from libxml2, or "" for none or invalid UTF-8 (the text was checked
/// as UTF-8 before parsing).
///
/// # Safety
/// `p` is null or points at a NUL-terminated string.
unsafe fn c_str<'a>(p: *const bindings::xmlChar) -> &'a str {
    if p.is_null() {
        return "";
    }
    // SAFETY: as the function's contract says.
    let bytes = unsafe { std::ffi::CStr::from_ptr(p.cast()) }.to_bytes();
    std::str::from_utf8(bytes).unwrap_or("")
}

/// The parser's start tag event: appends the element to the tree.
///
/// # Safety
/// Called by libxml2 only, during a parse by `read`: `ctx` is null or that parse's `Builder`,
/// and the strings and attribute array are valid for the duration of the call.
unsafe extern "C" fn start_element(
    ctx: *mut std::ffi::c_void,
    localname: *const bindings::xmlChar,
    _prefix: *const bindings::xmlChar,
    uri: *const bindings::xmlChar,
    _nb_namespaces: std::ffi::c_int,
    _namespaces: *mut *const bindings::xmlChar,
    nb_attributes: std::ffi::c_int,
    _nb_defaulted: std::ffi::c_int,
    attributes: *mut *const bindings::xmlChar,
) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `Builder` that `read` passed as user data; the strings and the
    // attribute array (five pointers per attribute: local name, prefix, URI, value, value end)
    // are valid for the duration of the call.
    unsafe {
        let b = &mut *(ctx as *mut Builder);
        let input = (*b.parser).input;
        let line = if input.is_null() {
            0
        } else {
            u32::try_from((*input).line).unwrap_or(0)
        };
        let namespace = (!uri.is_null()).then(|| c_str(uri));
        let index = b.tree.push(c_str(localname), namespace, line);
        if !attributes.is_null() {
            for i in 0..usize::try_from(nb_attributes).unwrap_or(0) {
                let a = attributes.add(i * 5);
                let (value, end) = (*a.add(3), *a.add(4));
                let len = usize::try_from(end.offset_from(value)).unwrap_or(0);
                let raw = std::slice::from_raw_parts(value, len);
                b.tree
                    .push_attribute(c_str(*a), std::str::from_utf8(raw).unwrap_or(""));
            }
        }
        // No indexing that could panic: a panic must not unwind back into C.
        if let (Some(&parent), Some(slot)) = (b.open.last(), b.last_child.last_mut()) {
            let elements = &mut b.tree.elements;
            match *slot {
                Some(prev) => {
                    if let Some(e) = elements.get_mut(prev as usize) {
                        e.next_sibling = index;
                    }
                }
                None => {
                    if let Some(e) = elements.get_mut(parent as usize) {
                        e.first_child = index;
                    }
                }
            }
            *slot = Some(index);
        }
        b.open.push(index);
        b.last_child.push(None);
    }
}

/// The parser's end tag event: closes the innermost open element.
///
/// # Safety
/// Called by libxml2 only, during a parse by `read`: `ctx` is null or that parse's `Builder`.
unsafe extern "C" fn end_element(
    ctx: *mut std::ffi::c_void,
    _localname: *const bindings::xmlChar,
    _prefix: *const bindings::xmlChar,
    _uri: *const bindings::xmlChar,
) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `Builder` that `read` passed as user data.
    let b = unsafe { &mut *(ctx as *mut Builder) };
    b.open.pop();
    b.last_child.pop();
}

/// A parsed XML file as the rules read it: elements with their local names, namespaces,
/// attributes and lines, without text. Built by the parse that validates the file, and small:
/// one allocation per table, not one per node.
#[derive(Debug, Default)]
pub struct Tree {
    elements: Vec<ElementData>,
    attributes: Vec<(Span, Span)>,
    namespaces: Vec<String>,
    strings: String,
}

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct ElementData {
    name: Span,
    namespace: Option<u16>,
    line: u32,
    attributes: (u32, u32),
    first_child: u32,
    next_sibling: u32,
}

#[derive(Debug, Clone, Copy)]
struct Span(u32, u32);

impl Tree {
    /// The root element.
    pub fn root(&self) -> Option<Element<'_>> {
        (!self.elements.is_empty()).then_some(Element {
            tree: self,
            index: 0,
        })
    }

    fn text(&self, span: Span) -> &str {
        self.strings
            .get(span.0 as usize..span.1 as usize)
            .unwrap_or("")
    }

    fn keep(&mut self, s: &str) -> Span {
        let start = self.strings.len();
        self.strings.push_str(s);
        let end = self.strings.len();
        Span(
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(end).unwrap_or(u32::MAX),
        )
    }

    /// Adds an element; its attributes follow with [`Tree::push_attribute`].
    fn push(&mut self, name: &str, namespace: Option<&str>, line: u32) -> u32 {
        let name = self.keep(name);
        let namespace = namespace.map(|ns| match self.namespaces.iter().position(|n| n == ns) {
            Some(i) => i,
            None => {
                self.namespaces.push(ns.to_owned());
                self.namespaces.len() - 1
            }
        });
        let first = u32::try_from(self.attributes.len()).unwrap_or(u32::MAX);
        let index = u32::try_from(self.elements.len()).unwrap_or(NONE);
        self.elements.push(ElementData {
            name,
            namespace: namespace.and_then(|i| u16::try_from(i).ok()),
            line,
            attributes: (first, first),
            first_child: NONE,
            next_sibling: NONE,
        });
        index
    }

    /// Adds an attribute to the element added last.
    fn push_attribute(&mut self, name: &str, value: &str) {
        let name = self.keep(name);
        // With entities left unsubstituted, libxml2 hands over an `&` as `&#38;`; every other
        // reference arrives decoded.
        let value = if value.contains('&') {
            self.keep(&value.replace("&#38;", "&"))
        } else {
            self.keep(value)
        };
        self.attributes.push((name, value));
        let end = u32::try_from(self.attributes.len()).unwrap_or(u32::MAX);
        if let Some(element) = self.elements.last_mut() {
            element.attributes.1 = end;
        }
    }
}

/// An element of a [`Tree`].
#[derive(Debug, Clone, Copy)]
pub struct Element<'t> {
    tree: &'t Tree,
    index: u32,
}

impl<'t> Element<'t> {
    fn data(&self) -> &'t ElementData {
        &self.tree.elements[self.index as usize]
    }

    /// The local name.
    pub fn name(&self) -> &'t str {
        self.tree.text(self.data().name)
    }

    /// The namespace URI, if the element is in one.
    pub fn namespace(&self) -> Option<&'t str> {
        let i = self.data().namespace?;
        self.tree.namespaces.get(usize::from(i)).map(String::as_str)
    }

    /// The value of the attribute with local name `name`.
    pub fn attribute(&self, name: &str) -> Option<&'t str> {
        let (first, end) = self.data().attributes;
        self.tree.attributes[first as usize..end as usize]
            .iter()
            .find(|(n, _)| self.tree.text(*n) == name)
            .map(|(_, v)| self.tree.text(*v))
    }

    /// The line of the element's start tag, beyond 65535 too.
    pub fn line(&self) -> Option<u32> {
        Some(self.data().line).filter(|&l| l > 0)
    }

    /// The child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = Element<'t>> + use<'t> {
        let tree = self.tree;
        let mut next = self.data().first_child;
        std::iter::from_fn(move || {
            let index = next;
            let data = tree.elements.get(index as usize)?;
            next = data.next_sibling;
            Some(Element { tree, index })
        })
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<Element<'t>> {
        self.children().find(|c| c.name() == name)
    }

    /// The element reached through child elements named `path`.
    pub fn descend(&self, path: &[&str]) -> Option<Element<'t>> {
        path.iter().try_fold(*self, |here, name| here.child(name))
    }
}

/// Where the parser's error handler keeps the first error: the one a sender must fix; later
/// ones often follow from it.
struct FirstError<'a> {
    name: &'a str,
    first: Option<Finding>,
}

/// The structured error handler `read` installs for the duration of a parse.
///
/// # Safety
/// Called by libxml2 only: `data` is null or the `FirstError` of the parse under way, and
/// `error` null or valid for the duration of the call.
unsafe extern "C" fn keep_first_error(data: *mut std::ffi::c_void, error: bindings::xmlErrorPtr) {
    if data.is_null() || error.is_null() {
        return;
    }
    // SAFETY: `data` is the `FirstError` that `read` installed and outlives the parse;
    // `error` is valid for the duration of the call.
    unsafe {
        let sink = &mut *(data as *mut FirstError);
        if sink.first.is_none() && (*error).level >= bindings::xmlErrorLevel_XML_ERR_ERROR {
            let e = StructuredError::from_raw(error);
            sink.first = Some(finding(Rule::XmlMalformed, sink.name, &e));
        }
    }
}

pub(crate) fn finding(rule: Rule, name: &str, e: &StructuredError) -> Finding {
    let message = e.message.as_deref().unwrap_or("invalid").trim().to_owned();
    let mut r = Finding::new(rule, message).in_file(name);
    r.line = e
        .line
        .and_then(|l| u32::try_from(l).ok())
        .filter(|&l| l > 0);
    r.column = e.col.and_then(|c| u32::try_from(c).ok()).filter(|&c| c > 0);
    r
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
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
        // Behind the DTD refusal of `check_text`, the parser itself loads and expands nothing.
        let xml =
            b"<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/hostname\"><!ENTITY y \"expanded\">]>\
                    <a b=\"&y;\">&x;</a>";
        if let Ok(tree) = parse("f.xml", xml) {
            let root = tree.root().expect("root");
            assert_ne!(root.attribute("b"), Some("expanded"));
        }
    }

    #[test]
    fn the_tree_keeps_names_namespaces_attributes_and_lines() {
        let xml = "<?xml version=\"1.0\"?>\n<r xmlns=\"urn:x\" xmlns:p=\"urn:p\">\n  <a v=\"1 &amp; 2\"/>\n  \
                   <p:b w='&#x3042;'><c/></p:b>\n  <a v=\"3\"/>\n</r>";
        let tree = parse("f.xml", xml.as_bytes()).expect("well-formed");
        let root = tree.root().expect("root");
        assert_eq!(
            (root.name(), root.namespace(), root.line()),
            ("r", Some("urn:x"), Some(2))
        );
        let names: Vec<_> = root
            .children()
            .map(|c| (c.name(), c.namespace(), c.line()))
            .collect();
        assert_eq!(
            names,
            [
                ("a", Some("urn:x"), Some(3)),
                ("b", Some("urn:p"), Some(4)),
                ("a", Some("urn:x"), Some(5))
            ]
        );
        assert_eq!(
            root.child("a").and_then(|a| a.attribute("v")),
            Some("1 & 2")
        );
        assert_eq!(root.descend(&["b", "c"]).map(|c| c.name()), Some("c"));
        assert_eq!(root.child("b").and_then(|b| b.attribute("w")), Some("あ"));
        assert_eq!(root.child("b").and_then(|b| b.attribute("x")), None);
        assert!(root.descend(&["b", "d"]).is_none());
    }
}
