//! Checks the declarations against include/loratune.h (function names, parameter names and
//! order; struct names and field order, parsed from the header's text) and the struct sizes
//! against the loaded library's lt_struct_size.
use loratune_sys::*;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::PathBuf;

fn header() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../include/loratune.h");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    strip_comments(&text)
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            i += s[i..].find("*/").map(|j| j + 2).unwrap_or(s.len() - i);
            out.push(' ');
        } else if b[i..].starts_with(b"//") {
            i += s[i..].find('\n').unwrap_or(s.len() - i);
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn last_ident(decl: &str) -> String {
    let decl = match decl.find('[') {
        Some(j) => &decl[..j],
        None => decl,
    };
    decl.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).last().unwrap_or("").to_string()
}

/// name -> parameter names, for every `LT_API ... lt_x(...);`
fn header_functions(h: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for chunk in h.split("LT_API").skip(1) {
        let end = match chunk.find(';') {
            Some(e) => e,
            None => continue,
        };
        let decl = &chunk[..end];
        if !decl.contains('(') || decl.contains('#') {
            continue; // the LT_API macro's own definition lines
        }
        let open = decl.find('(').unwrap();
        let name = last_ident(&decl[..open]);
        let params = &decl[open + 1..decl.rfind(')').unwrap()];
        let names: Vec<String> = params.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "void")
            .map(last_ident).collect();
        out.insert(name, names);
    }
    out
}

/// struct name -> field names, for every `typedef struct lt_x { ... } lt_x;`
fn header_structs(h: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut rest = h;
    while let Some(i) = rest.find("typedef struct ") {
        rest = &rest[i + "typedef struct ".len()..];
        let brace = match rest.find('{') {
            Some(b) if b < rest.find(';').unwrap_or(usize::MAX) => b,
            _ => continue, // an opaque handle's typedef
        };
        let name = rest[..brace].trim().to_string();
        let close = rest.find('}').unwrap();
        let mut fields = Vec::new();
        for decl in rest[brace + 1..close].split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let decl: String = {
                let mut d = String::new();
                let mut depth = 0;
                for c in decl.chars() {
                    match c {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        _ if depth == 0 => d.push(c),
                        _ => {}
                    }
                }
                d
            };
            let mut parts = decl.split(',');
            fields.push(last_ident(parts.next().unwrap()));
            for p in parts {
                fields.push(last_ident(p));
            }
        }
        out.insert(name, fields);
        rest = &rest[close..];
    }
    out
}

#[test]
fn functions_match_the_header() {
    let theirs = header_functions(&header());
    let ours: BTreeMap<String, Vec<String>> = FUNCTIONS.iter()
        .map(|(n, ps)| (n.to_string(), ps.iter().map(|p| p.trim_end_matches('_').to_string()).collect()))
        .collect();
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not declared here: {missing:?}; not in the header: {extra:?}");
    assert!(theirs.len() > 60, "parsed only {} functions from the header", theirs.len());
    for (name, params) in &theirs {
        assert_eq!(&ours[name], params, "{name}: parameters differ from include/loratune.h");
    }
}

#[test]
fn structs_match_the_header() {
    let theirs = header_structs(&header());
    let ours: BTreeMap<String, Vec<String>> = STRUCTS.iter()
        .map(|(n, _, fs)| (n.to_string(), fs.iter().map(|f| f.to_string()).collect()))
        .collect();
    assert_eq!(theirs.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>(), "struct lists differ");
    for (name, fields) in &theirs {
        assert_eq!(&ours[name], fields, "{name}: fields differ from include/loratune.h");
    }
}

#[test]
fn sizes_match_the_library() {
    for (name, size, _) in STRUCTS {
        let c = CString::new(*name).unwrap();
        let theirs = unsafe { lt_struct_size(c.as_ptr()) };
        assert_eq!(theirs, *size, "{name}: {theirs} bytes in the library, {size} here");
    }
    let major = unsafe { lt_version_number() } / 10000;
    assert_eq!(major, LT_VERSION_MAJOR);
    let v = unsafe { CStr::from_ptr(lt_version()) }.to_str().unwrap();
    assert_eq!(v, format!("{LT_VERSION_MAJOR}.{LT_VERSION_MINOR}.{LT_VERSION_PATCH}"));
}
