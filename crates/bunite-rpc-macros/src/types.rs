//! Syntactic helpers over `syn::Type`.
//!
//! A proc macro sees tokens, not types, so these recognise the shapes the typed API gives a
//! meaning to by the last path segment: `Result<T, E>`, `Exported<C>`, `Emitter<T>`,
//! `CallContext`, `impl Future<Output = R>`. Aliases of them are not recognised; the
//! model's error messages say which spelling to use.

use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{GenericArgument, PathArguments, PathSegment, Type, TypeParamBound};

/// The last segment of a plain path type (no `<T as Trait>::` qualifier), looking through
/// parentheses and invisible groups.
pub(crate) fn last_segment(ty: &Type) -> Option<&PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Paren(p) => last_segment(&p.elem),
        Type::Group(g) => last_segment(&g.elem),
        _ => None,
    }
}

/// The type arguments of a path segment (`Vec<T>` → `[T]`), lifetimes and bindings skipped.
pub(crate) fn type_args(seg: &PathSegment) -> Vec<&Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `ty` is a path type whose last segment is `name`; returns its type arguments.
pub(crate) fn named<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let seg = last_segment(ty)?;
    (seg.ident == name).then(|| type_args(seg))
}

/// `Result<T, E>` → `(T, E)`.
pub(crate) fn result_parts(ty: &Type) -> Option<(&Type, &Type)> {
    match named(ty, "Result")?.as_slice() {
        [ok, err] => Some((ok, err)),
        _ => None,
    }
}

/// `Exported<C>` → `C`.
pub(crate) fn exported_cap(ty: &Type) -> Option<&Type> {
    match named(ty, "Exported")?.as_slice() {
        [cap] => Some(cap),
        _ => None,
    }
}

/// Whether `ty` is `CallContext` (any path ending so).
pub(crate) fn is_context(ty: &Type) -> bool {
    named(ty, "CallContext").is_some_and(|args| args.is_empty())
}

/// The first `Result<T, E>` met walking `ty` outside-in, left to right: the item of a
/// stream type (`impl Stream<Item = Result<T, E>>`, `BoxStream<'static, Result<T, E>>`).
pub(crate) fn find_result(ty: &Type) -> Option<(Type, Type)> {
    struct Finder(Option<(Type, Type)>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type(&mut self, ty: &'ast Type) {
            if self.0.is_some() {
                return;
            }
            if let Some((ok, err)) = result_parts(ty) {
                self.0 = Some((ok.clone(), err.clone()));
                return;
            }
            syn::visit::visit_type(self, ty);
        }
    }
    let mut f = Finder(None);
    f.visit_type(ty);
    f.0
}

/// The first path segment named `name` anywhere inside `ty`, for error spans.
pub(crate) fn find_named<'a>(ty: &'a Type, name: &str) -> Option<&'a PathSegment> {
    struct Finder<'a, 'n>(&'n str, Option<&'a PathSegment>);
    impl<'a> Visit<'a> for Finder<'a, '_> {
        fn visit_path_segment(&mut self, seg: &'a PathSegment) {
            if self.1.is_none() && seg.ident == self.0 {
                self.1 = Some(seg);
            }
            syn::visit::visit_path_segment(self, seg);
        }
    }
    let mut f = Finder(name, None);
    f.visit_type(ty);
    f.1
}

/// Whether `ty` may be an alias of `Result` (`type R<T> = Result<T, Status>`): a plain path
/// that is none of the std types that certainly are not.
pub(crate) fn maybe_result_alias(ty: &Type) -> bool {
    const NOT_RESULTS: &[&str] = &[
        "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64", "String", "Vec", "Option", "Box", "Arc", "HashMap",
        "BTreeMap", "Value", "Exported", "Self",
    ];
    last_segment(ty).is_some_and(|s| !NOT_RESULTS.contains(&s.ident.to_string().as_str()))
}

/// The `R` of the first `Item = R` binding inside `ty` (`impl Stream<Item = R>`).
pub(crate) fn item_binding(ty: &Type) -> Option<&Type> {
    struct Finder<'a>(Option<&'a Type>);
    impl<'a> Visit<'a> for Finder<'a> {
        fn visit_assoc_type(&mut self, at: &'a syn::AssocType) {
            if self.0.is_none() && at.ident == "Item" {
                self.0 = Some(&at.ty);
            }
        }
    }
    let mut f = Finder(None);
    f.visit_type(ty);
    f.0
}

/// `impl Future<Output = R> + …` → `R`.
pub(crate) fn future_output(ty: &Type) -> Option<&Type> {
    let Type::ImplTrait(it) = ty else { return None };
    it.bounds.iter().find_map(|b| {
        let TypeParamBound::Trait(t) = b else {
            return None;
        };
        let seg = t.path.segments.last()?;
        if seg.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(a) = &seg.arguments else {
            return None;
        };
        a.args.iter().find_map(|g| match g {
            GenericArgument::AssocType(at) if at.ident == "Output" => Some(&at.ty),
            _ => None,
        })
    })
}

/// Whether an `impl Trait` type has a bound `Send` / `'static` already.
pub(crate) fn impl_has_send_static(ty: &Type) -> (bool, bool) {
    let Type::ImplTrait(it) = ty else {
        return (true, true);
    };
    let send = it.bounds.iter().any(|b| match b {
        TypeParamBound::Trait(t) => t.path.segments.last().is_some_and(|s| s.ident == "Send"),
        _ => false,
    });
    let stat = it.bounds.iter().any(|b| match b {
        TypeParamBound::Lifetime(l) => l.ident == "static",
        _ => false,
    });
    (send, stat)
}

/// `ty` with every `Exported<C>` replaced by `replace(C)` (the client's view of a cap
/// return: `Vec<Exported<C>>` → `Vec<<C as Cap>::Client>`).
pub(crate) fn replace_exported(ty: &Type, replace: &dyn Fn(&Type) -> Type) -> Type {
    struct Replacer<'r>(&'r dyn Fn(&Type) -> Type);
    impl VisitMut for Replacer<'_> {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Some(cap) = exported_cap(ty) {
                *ty = (self.0)(cap);
                return;
            }
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }
    let mut ty = ty.clone();
    Replacer(replace).visit_type_mut(&mut ty);
    ty
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn recognises_the_shapes_by_their_last_segment() {
        let t: Type = parse_quote!(std::result::Result<u32, bunite_rpc::Status>);
        assert!(result_parts(&t).is_some());
        let t: Type = parse_quote!(Exported<ChildCap>);
        assert!(exported_cap(&t).is_some());
        let t: Type = parse_quote!(bunite_rpc::CallContext);
        assert!(is_context(&t));
        let t: Type = parse_quote!(impl Stream<Item = Result<Tick, Status>> + Send);
        let (ok, _) = find_result(&t).unwrap();
        assert_eq!(quote::quote!(#ok).to_string(), "Tick");
        assert_eq!(impl_has_send_static(&t), (true, false));
        let t: Type = parse_quote!(impl Future<Output = Result<(), Status>>);
        assert!(future_output(&t).is_some());
    }

    #[test]
    fn replaces_exported_inside_containers() {
        let t: Type = parse_quote!(BTreeMap<String, Exported<ChildCap>>);
        let r = replace_exported(&t, &|c| parse_quote!(<#c as Cap>::Client));
        assert_eq!(
            quote::quote!(#r).to_string(),
            quote::quote!(BTreeMap<String, <ChildCap as Cap>::Client>).to_string()
        );
    }
}
