//! "Did you mean …?" for an unknown method. The peer's `not_found` status goes on the wire
//! exactly as bunite-core 0.10 words it (`method "x" on cap "y"`; conformance suites
//! compare those bytes), so the suggestion is made here, in the CLI, from what it knows:
//! the definitions of the caps it serves itself (interop, demo) and, for any other cap,
//! the camelCase spelling that `#[cap]` gives wire names.

use std::sync::Arc;

use bunite_rpc::CapDef;

use crate::interop_caps::{
    InteropChildCap, InteropCounterCap, InteropEphemeralCap, InteropPeerCap, InteropSecretCap,
    InteropVersionedCap,
};

/// The caps whose definitions the CLI knows.
fn known() -> Vec<Arc<CapDef>> {
    vec![
        InteropCounterCap::definition(),
        InteropChildCap::definition(),
        InteropVersionedCap::definition(),
        InteropEphemeralCap::definition(),
        InteropSecretCap::definition(),
        InteropPeerCap::definition(),
    ]
}

/// A suggestion for `method`, unknown on `cap`: the closest method of a known definition,
/// or the camelCase spelling of a snake_case or kebab-case name.
pub fn method(cap: &str, method: &str) -> Option<String> {
    if let Some(def) = known().into_iter().find(|d| d.name() == cap) {
        let names = def.methods().iter().map(|m| m.name().to_owned());
        return closest(method, names);
    }
    let camel = camel_case(method);
    (camel != method).then_some(camel)
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' || c == '-' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The candidate equal to `name` but for case and separators, else the one within two
/// edits.
fn closest(name: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let wanted = normalize(name);
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let d = distance(&wanted, &normalize(&c));
        if d <= 2 && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance (names are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_caps_get_their_closest_method_and_others_the_camel_case_spelling() {
        assert_eq!(
            method("interop.counter", "make_child").as_deref(),
            Some("makeChild")
        );
        assert_eq!(
            method("interop.counter", "incremnt").as_deref(),
            Some("increment")
        );
        assert_eq!(method("interop.counter", "zzzzzz"), None);
        assert_eq!(
            method("files.Folder", "open_all").as_deref(),
            Some("openAll")
        );
        assert_eq!(method("files.Folder", "openAll"), None);
    }
}
